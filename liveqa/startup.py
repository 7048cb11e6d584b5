"""What a long-running LiveQA process does once it has started up."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Keep what start-up allocated (Django, the ORM's models, openai's types, channel layers: some
    200,000 objects that live as long as the process) out of the garbage collector's full collections.

    Otherwise every full collection walks all of it while answers are being spoken: the benchmark saw
    one stop an answer worker's event loop for 150–280 ms in a burst of 50 questions. Objects made
    later are collected as usual."""
    gc.collect()
    gc.freeze()
