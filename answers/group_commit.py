"""Group commit: writes that arrive while the database thread (or the channel layer) is busy are written
together, in one trip to it and one transaction (or one message), when it is free. A lone write goes at
once; a burst of them does not queue one commit behind another."""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Waiting(Generic[Item, Result]):
    items: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    busy: bool = False  # a write is in flight
    drain: asyncio.Task[None] | None = None  # held here while it runs: the loop keeps only a weak reference


class GroupCommit(Generic[Item, Result]):
    """`await writer.submit(item)` stores `item` through `write_many` (one transaction, or one message,
    for the list it is given; one result per item, in order) and returns its result. A synchronous
    `write_many` runs on the database thread; a coroutine function is awaited.

    When nothing is being written, the caller writes its item at once, itself. What is submitted while
    a write is in flight is written by the commit's own drain task, everything queued in one batch, and
    the next batch as soon as that one is written: under load a batch waits for the write before it and
    for nothing else (no lock to hand over, no task per batch, each a turn of the event loop). A caller
    that is cancelled gets no result, but an item already taken is written all the same; one not yet
    taken is dropped. If a batch fails, each of its items is written on its own, so one bad item fails
    alone."""

    def __init__(
        self,
        write_many: Callable[[list[Item]], list[Result]] | Callable[[list[Item]], Awaitable[list[Result]]],
    ):
        self.write_many: Callable[[list[Item]], Awaitable[list[Result]]] = (
            write_many if inspect.iscoroutinefunction(write_many) else database_sync_to_async(write_many)
        )
        # One queue per event loop: futures and tasks belong to the loop they are made on.
        self._waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiting[Item, Result]] = (
            weakref.WeakKeyDictionary()
        )

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        waiting = self._waiting.setdefault(loop, _Waiting())
        if not waiting.busy:
            waiting.busy = True
            try:
                (result,) = await self.write_many([item])
                return result
            finally:
                self._written(waiting)
        future: asyncio.Future[Result] = loop.create_future()
        entry = (item, future)
        waiting.items.append(entry)
        try:
            return await future
        finally:
            if entry in waiting.items:  # cancelled before its batch was taken: nobody will want it
                waiting.items.remove(entry)
            future.cancel()  # nothing once it is settled; otherwise a late result has no one to read it

    def _written(self, waiting: _Waiting[Item, Result]) -> None:
        """A write ended: hand what queued meanwhile to the drain, or go idle."""
        if waiting.items:
            waiting.drain = asyncio.get_running_loop().create_task(self._drain(waiting), name="group-commit")
        else:
            waiting.busy = False

    async def _drain(self, waiting: _Waiting[Item, Result]) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while True:
                if not waiting.items:
                    # One turn of the loop for the callers just answered: one that sends again at once
                    # (the next message of a stream) joins the next batch rather than going alone.
                    await asyncio.sleep(0)
                    if not waiting.items:
                        break
                batch, waiting.items = waiting.items, []
                await self._write(batch)
        except BaseException:  # the drain itself was cancelled (shutdown): nobody will write these
            for _, future in batch + waiting.items:
                future.cancel()
            waiting.items = []
            raise
        finally:
            waiting.drain, waiting.busy = None, False

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self.write_many([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exception=exc)
                return
            logger.warning("a batch of %d writes failed (%s); writing each on its own", len(batch), exc)
            for entry in batch:
                await self._write([entry])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[Result], *, result: Result | None = None, exception: Exception | None = None
) -> None:
    if future.done():  # its submitter was cancelled meanwhile
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)  # type: ignore[arg-type]
