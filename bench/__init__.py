"""LiveQA's benchmark: time to first audio, total time, stalls, ping and fan-out, measured against the
physical limit and a naive baseline. Run `python -m bench --help`."""
