"""What a long-running LiveQA process does once it has started up."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

try:
    import uvloop
except ImportError:  # uvloop is not built for Windows
    uvloop = None


def freeze_startup_heap() -> None:
    """Keep what start-up allocated (Django, the ORM's models, openai's types, channel layers: some
    200,000 objects that live as long as the process) out of the garbage collector's full collections.

    Otherwise every full collection walks all of it while answers are being spoken: the benchmark saw
    one stop an answer worker's event loop for 150–280 ms in a burst of 50 questions. Objects made
    later are collected as usual."""
    gc.collect()
    gc.freeze()


def run_event_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run `main` on uvloop's event loop where there is one, else on asyncio's. uvloop (libuv) runs the
    same callbacks and socket reads and writes for less CPU than asyncio's pure-Python loop, and a
    worker spends most of its time there: a few hundred network events per answer."""
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)
