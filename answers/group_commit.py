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
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    items: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)


class GroupCommit(Generic[Item, Result]):
    """`await writer.submit(item)` stores `item` through `write_many` (one transaction, or one message,
    for the list it is given; one result per item, in order) and returns its result. A synchronous
    `write_many` runs on the database thread; a coroutine function is awaited.

    Whoever holds the lock writes everything submitted so far, its own item included; those who queued
    meanwhile find theirs written when the lock comes to them. No task outlives its writer: the
    caller that writes a batch awaits it (shielded, so a cancelled caller does not drop the others'
    items). If a batch fails, each of its items is written on its own, so one bad item fails alone."""

    def __init__(
        self,
        write_many: Callable[[list[Item]], list[Result]] | Callable[[list[Item]], Awaitable[list[Result]]],
    ):
        self.write_many: Callable[[list[Item]], Awaitable[list[Result]]] = (
            write_many if inspect.iscoroutinefunction(write_many) else database_sync_to_async(write_many)
        )
        # One queue per event loop: a lock belongs to the loop it is first used on.
        self._waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiting[Item, Result]] = (
            weakref.WeakKeyDictionary()
        )

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        waiting = self._waiting.setdefault(loop, _Waiting())
        future: asyncio.Future[Result] = loop.create_future()
        entry = (item, future)
        waiting.items.append(entry)
        try:
            async with waiting.lock:
                if entry in waiting.items:  # nobody has taken it yet: write it, and all queued with it
                    batch, waiting.items = waiting.items, []
                    await asyncio.shield(self._write(batch))
            # Written, or in the batch of a writer that was cancelled and whose write goes on.
            return await future
        finally:
            if entry in waiting.items:  # cancelled before anyone took it: nobody else would write it
                waiting.items.remove(entry)
            future.cancel()  # nothing once it is settled; otherwise a late result has no one to read it

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
