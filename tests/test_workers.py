"""The answer worker's bookkeeping of answers on their way to their first audio, which recording waits for."""

from __future__ import annotations

import asyncio
import time

from answers.workers import _Starting

TIMEOUT = 5.0


async def test_with_no_answer_starting_recording_does_not_wait():
    started = time.monotonic()
    await asyncio.wait_for(_Starting().none_for(10.0), TIMEOUT)
    assert time.monotonic() - started < 0.1


async def test_recording_waits_until_every_starting_answer_has_ended_its_start():
    starting = _Starting()
    first, second = starting.begin(), starting.begin()
    waiting = asyncio.create_task(starting.none_for(10.0))
    first.end()
    first.end()  # ending twice counts once
    await asyncio.sleep(0.05)
    assert not waiting.done() and starting.count == 1
    second.end()
    await asyncio.wait_for(waiting, TIMEOUT)
    assert starting.count == 0


async def test_recording_waits_no_longer_than_its_limit():
    starting = _Starting()
    starting.begin()  # never ends: a start whose answer hangs
    started = time.monotonic()
    await asyncio.wait_for(starting.none_for(0.2), TIMEOUT)
    assert 0.2 <= time.monotonic() - started < 1.0
