"""Handing work to answer workers over the channel layer.

With Redis (`REDIS_URL`), workers are separate `answerworker` processes. Without it (the embedded
default), the channel layer lives in memory, so the first dispatch starts a worker inside this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from . import events
from .group_commit import GroupCommit
from .layers import WorkQueueChannelLayer

logger = logging.getLogger(__name__)

_embedded: asyncio.Task[None] | None = None


def embedded_worker_enabled() -> bool:
    return not settings.REDIS_URL


async def ensure_embedded_worker() -> None:
    """Start this process's own worker on the running loop, once (embedded default only)."""
    global _embedded
    if not embedded_worker_enabled():
        return
    loop = asyncio.get_running_loop()
    if _embedded is not None and not _embedded.done() and _embedded.get_loop() is loop:
        return
    from .providers import pipeline
    from .workers import AnswerWorker

    worker = AnswerWorker(pipeline())
    # The worker lives as long as the process: it is owned by this module, not by any connection. It
    # starts from an empty context: a copy of the caller's would tie its database calls to the
    # thread of whoever dispatched first (a sync view going through async_to_sync), which then ends.
    _embedded = loop.create_task(worker.run(), name="embedded-answer-worker", context=contextvars.Context())
    _embedded.add_done_callback(_report_exit)
    await worker.ready.wait()


async def stop_embedded_worker() -> None:
    """Cancel and await this process's worker (tests, and shutdown)."""
    global _embedded
    task, _embedded = _embedded, None
    if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _report_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("embedded answer worker stopped", exc_info=task.exception())


async def to_workers(*messages: dict[str, Any]) -> None:
    """Put messages on the workers' channel, to be read in this order: with Redis, in one write."""
    await ensure_embedded_worker()
    layer = get_channel_layer(settings.LIVEQA_WORKERS_LAYER)
    if isinstance(layer, WorkQueueChannelLayer):
        await layer.send_many(settings.LIVEQA_WORKER_CHANNEL, list(messages))
    else:
        for message in messages:
            await layer.send(settings.LIVEQA_WORKER_CHANNEL, message)


async def _hand_over(questions: list[dict[str, Any]]) -> list[None]:
    """Questions asked together (a burst stored by one group commit) cross the layer a few to a message,
    the messages in one write: a worker reads one message at a time, and several messages spread the
    burst over the workers."""
    await to_workers(
        *(events.questions(questions[i : i + HAND_OVER_BATCH]) for i in range(0, len(questions), HAND_OVER_BATCH))
    )
    return [None] * len(questions)


HAND_OVER_BATCH = 8
# A write that fails is handed over again question by question; if it did reach Redis (its reply was
# lost), its questions are delivered twice: a worker answers a question once (AnswerWorker._first_delivery
# and its claim).
_hand_overs = GroupCommit(_hand_over)


async def ask(ref: int | str, reply_channel: str | None, prepared: dict[str, Any] | None = None) -> None:
    """Hand a question to a worker (events.question: its id, or its ticket while it is not stored yet)."""
    await _hand_overs.submit(events.question(ref, reply_channel, prepared))


async def kick_stream(stream_id: int) -> None:
    """Let a worker answer the stream's next approved question, if the stream is idle."""
    await to_workers(events.message(events.STREAM_NEXT, stream_id=stream_id))
