"""A stream's overlays in this process share one subscription to its overlay group: each answer message
crosses the channel layer once, becomes its frames once, and is written to every overlay socket here,
a few milliseconds at a time so that the process's other sockets (a ping) are served in between."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from typing import Any, Protocol

from channels.layers import BaseChannelLayer

from . import events

logger = logging.getLogger(__name__)

# Writing to the overlays yields to the event loop after this much time: a ping that arrives during a
# fan-out waits for a few slices, not for every overlay.
SLICE_SECONDS = 0.002
RETRY_SECONDS = 0.5

Frame = str | bytes


class Overlay(Protocol):
    """What the hub needs of an overlay connection (answers.live.OverlayConsumer)."""

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None: ...

    async def close(self, code: int | bool | None = None) -> None: ...


OVERLAY_EVENTS = frozenset(
    {events.REPLAY, events.STARTED, events.CHUNK, events.CHUNK_FAILED, events.DONE, events.FAILED}
)


def overlay_frames(message: dict[str, Any], chunks: events.WholeChunks) -> list[Frame]:
    """What an overlay is sent for one answer message: protocol-2 events, and each chunk's audio whole
    (overlay.js decodes a chunk only once all of it is there), as its `answer.audio` event and one frame."""
    kind = message["type"]
    if kind == events.AUDIO:
        whole = chunks.add(message)
        if whole is None:
            return []
        event = json.dumps(events.client_event({**message, "data": whole}))
        return [event, whole] if whole else [event]
    if kind in OVERLAY_EVENTS:
        return [json.dumps(events.client_event(message))]
    return []  # moderation traffic (question.updated, answer.held) is the dashboards'


class OverlayHub:
    """This process's overlays of one stream: one member of the overlay group on their behalf."""

    def __init__(self, layer: BaseChannelLayer, group: str):
        self.layer = layer
        self.group = group
        self.members: dict[Overlay, None] = {}  # in the order they joined
        self.channel: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.in_order = events.InOrder()
        self.chunks = events.WholeChunks()

    async def start(self) -> None:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        self.task = asyncio.create_task(self.run(), name=f"overlay-hub-{self.group}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.channel is not None:
            await self.layer.group_discard(self.group, self.channel)

    async def run(self) -> None:
        assert self.channel is not None
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except Exception as exc:  # the layer's connection dropped (Redis restarting): keep listening
                logger.warning("overlay hub of %s could not receive (%s); retrying", self.group, exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            try:
                for ready in self.in_order.push(message):
                    await self.broadcast(overlay_frames(ready, self.chunks))
            except Exception:
                logger.exception("could not deliver %s to the overlays", message.get("type"))

    async def broadcast(self, frames: list[Frame]) -> None:
        if not frames:
            return
        slice_started = time.perf_counter()
        for member in list(self.members):
            try:
                for frame in frames:
                    if isinstance(frame, bytes):
                        await member.send(bytes_data=frame)
                    else:
                        await member.send(text_data=frame)
            except Exception:
                logger.exception("could not write to an overlay; closing it, so that it reconnects")
                self.members.pop(member, None)
                with contextlib.suppress(Exception):
                    await member.close()
            if time.perf_counter() - slice_started > SLICE_SECONDS:
                await asyncio.sleep(0)
                slice_started = time.perf_counter()


_hubs: dict[tuple[asyncio.AbstractEventLoop, str], OverlayHub] = {}
_hubs_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    if loop not in _hubs_locks:
        _hubs_locks[loop] = asyncio.Lock()
    return _hubs_locks[loop]


async def join(layer: BaseChannelLayer, group: str, overlay: Overlay) -> None:
    """`overlay` hears every answer sent to `group` from now on."""
    loop = asyncio.get_running_loop()
    async with _lock():
        hub = _hubs.get((loop, group))
        if hub is None:
            hub = OverlayHub(layer, group)
            await hub.start()
            _hubs[(loop, group)] = hub
        hub.members[overlay] = None


async def leave(group: str, overlay: Overlay) -> None:
    """`overlay` hears no more; the last overlay of a group takes the hub down with it."""
    loop = asyncio.get_running_loop()
    async with _lock():
        hub = _hubs.get((loop, group))
        if hub is None:
            return
        hub.members.pop(overlay, None)
        if not hub.members:
            del _hubs[(loop, group)]
            await hub.stop()
