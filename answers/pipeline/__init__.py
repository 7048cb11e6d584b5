"""The answer pipeline: plain async Python, no Django, so it can be tested and benchmarked alone."""
