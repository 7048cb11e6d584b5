"""A stream's overlays in one process share one subscription (answers.fanout): every overlay hears each
answer message once, in order, with each chunk's audio whole, and writing to many overlays leaves the
event loop free for other sockets between slices."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from answers import events, fanout


class RecordingOverlay:
    """An overlay connection that keeps what it is sent; `cost` seconds of CPU per frame."""

    def __init__(self, cost: float = 0.0, broken: bool = False):
        self.frames: list[Any] = []
        self.cost, self.broken = cost, broken
        self.closed = False

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.broken:
            raise ConnectionError("gone")
        deadline = time.perf_counter() + self.cost
        while time.perf_counter() < deadline:
            pass
        self.frames.append(json.loads(text_data) if text_data is not None else bytes_data)

    async def close(self, code: int | bool | None = None) -> None:
        self.closed = True


def audio(answer_id: int, seq: int, data: bytes, last: bool, n: int) -> dict[str, Any]:
    (message,) = events.audio_messages(answer_id, seq, data, "mp3", 24000, last)
    return {**message, "n": n}


def answer_messages(answer_id: int = 7) -> list[dict[str, Any]]:
    """An answer whose second chunk's speech breaks after its first piece."""
    messages = [
        events.message(events.STARTED, answer_id=answer_id, question_id=1, worker="w"),
        events.message(events.CHUNK, answer_id=answer_id, seq=0, text="One."),
        audio(answer_id, 0, b"O", False, 0),
        audio(answer_id, 0, b"NE", True, 0),
        events.message(events.CHUNK, answer_id=answer_id, seq=1, text="Two."),
        audio(answer_id, 1, b"T", False, 0),
        events.message(events.CHUNK_FAILED, answer_id=answer_id, seq=1, text="Two.", error="broken"),
        events.message(events.CHUNK, answer_id=answer_id, seq=2, text="Three."),
        audio(answer_id, 2, b"THREE", True, 0),
        events.message(events.HELD, answer_id=answer_id, question_id=1, text="", timings={}),
        events.message(events.DONE, answer_id=answer_id, question_id=1, timings={}),
    ]
    return [{**m, "n": n} for n, m in enumerate(messages)]


def shape(frames: list[Any]) -> list[Any]:
    return [f if isinstance(f, bytes) else (f["type"], f.get("seq"), f.get("size")) for f in frames]


EXPECTED = [
    (events.STARTED, None, None),
    (events.CHUNK, 0, None), (events.AUDIO, 0, 3), b"ONE",
    (events.CHUNK, 1, None), (events.CHUNK_FAILED, 1, None),
    (events.CHUNK, 2, None), (events.AUDIO, 2, 5), b"THREE",
    (events.DONE, None, None),
]  # fmt: skip


async def test_every_overlay_hears_the_answer_once_in_order_with_whole_chunks():
    layer = InMemoryChannelLayer()
    overlays = [RecordingOverlay() for _ in range(3)]
    for overlay in overlays:
        await fanout.join(layer, "overlays-a", overlay)
    assert len(layer.groups["overlays-a"]) == 1  # one subscription for all of them
    messages = answer_messages()
    for message in [*messages[2:5], *messages[:2], *messages[5:]]:  # reordered by the layer: put back in order
        await layer.group_send("overlays-a", message)
    async with asyncio.timeout(5):
        while len(overlays[-1].frames) < len(EXPECTED):
            await asyncio.sleep(0.01)
    for overlay in overlays:
        assert shape(overlay.frames) == EXPECTED
    for overlay in overlays:
        await fanout.leave("overlays-a", overlay)
    assert not layer.groups.get("overlays-a")


async def test_an_overlay_that_cannot_be_written_to_is_closed_and_the_others_still_hear():
    layer = InMemoryChannelLayer()
    broken, fine = RecordingOverlay(broken=True), RecordingOverlay()
    await fanout.join(layer, "overlays-b", broken)
    await fanout.join(layer, "overlays-b", fine)
    for message in answer_messages():
        await layer.group_send("overlays-b", message)
    async with asyncio.timeout(5):
        while len(fine.frames) < len(EXPECTED):
            await asyncio.sleep(0.01)
    assert shape(fine.frames) == EXPECTED
    assert broken.closed and not fine.closed  # closed, overlay.js reconnects
    await fanout.leave("overlays-b", fine)
    assert not layer.groups.get("overlays-b")  # the hub went with its last overlay


async def test_writing_to_many_overlays_lets_other_tasks_run_between_slices():
    """200 overlays at 0.1 ms a frame take ~20 ms; a ping meanwhile waits for a few slices, not for all."""
    hub = fanout.OverlayHub(InMemoryChannelLayer(), "overlays-c")
    overlays = [RecordingOverlay(cost=0.0001) for _ in range(200)]
    hub.members = dict.fromkeys(overlays)
    ran_at: list[int] = []

    async def ping() -> None:
        await asyncio.sleep(0)
        ran_at.append(sum(1 for o in overlays if o.frames))  # how many overlays were written before it ran

    pinging = asyncio.create_task(ping())
    started = time.perf_counter()
    await hub.broadcast([json.dumps({"type": events.CHUNK, "seq": 0, "text": "One."})])
    took = time.perf_counter() - started
    await pinging
    assert all(len(o.frames) == 1 for o in overlays)
    assert took > 5 * fanout.SLICE_SECONDS  # enough work for several slices...
    assert ran_at and ran_at[0] < 100  # ...and the other task ran within the first ones


@pytest.mark.parametrize("kind", [events.HELD, events.QUESTION_UPDATED])
def test_moderation_traffic_is_not_sent_to_overlays(kind):
    assert fanout.overlay_frames(events.message(kind, question={}), events.WholeChunks()) == []


async def test_the_hub_keeps_listening_when_the_layer_fails_to_receive(monkeypatch):
    """A layer that loses its connection for a moment (Redis restarting) does not silence the overlays."""
    monkeypatch.setattr(fanout, "RETRY_SECONDS", 0.01)
    layer = InMemoryChannelLayer()
    overlay = RecordingOverlay()
    await fanout.join(layer, "overlays-d", overlay)
    receive, failures = layer.receive, [ConnectionError("gone")] * 2

    async def flaky_receive(channel: str) -> dict[str, Any]:
        if failures:
            raise failures.pop()
        return await receive(channel)

    monkeypatch.setattr(layer, "receive", flaky_receive)
    for message in answer_messages():
        await layer.group_send("overlays-d", message)
    async with asyncio.timeout(5):
        while len(overlay.frames) < len(EXPECTED):
            await asyncio.sleep(0.01)
    assert shape(overlay.frames) == EXPECTED and not failures
    await fanout.leave("overlays-d", overlay)
