"""A chunk's audio goes to listeners piece by piece while they have little in hand, whole once they have
plenty, and held pieces go when the audio in hand runs low even if the chunk is not complete."""

from __future__ import annotations

import asyncio
import time

from answers import workers
from answers.pipeline.answer import AudioFrame
from answers.workers import _AudioPacer, _PacedAudio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def piece(seq: int, data: bytes, last: bool = False) -> AudioFrame:
    return AudioFrame(seq, data, "mp3", 24000, last)


def test_the_first_chunk_streams_and_a_later_one_goes_whole_while_the_listener_has_plenty():
    clock = Clock()
    pacer = _AudioPacer(clock)
    assert pacer.add(piece(0, b"a1"), None) == piece(0, b"a1")  # nothing in hand yet: at once
    clock.now += 0.2
    assert pacer.add(piece(0, b"a2"), None) == piece(0, b"a2")
    assert pacer.add(piece(0, b"", last=True), 4.0) == piece(0, b"", last=True)  # 4 s of audio sent

    clock.now += 0.5  # 3.3 s still to play: the next chunk's pieces wait for its end
    assert pacer.add(piece(1, b"b1"), None) is None
    assert pacer.add(piece(1, b"b2"), None) is None
    assert pacer.due() == 100.0 + 4.0 - workers.HOLD_WHEN_AHEAD
    assert pacer.add(piece(1, b"", last=True), 2.0) == piece(1, b"b1b2", last=True)
    assert pacer.due() is None


def test_pieces_stream_again_once_the_audio_in_hand_runs_low():
    clock = Clock()
    pacer = _AudioPacer(clock)
    pacer.add(piece(0, b"a", last=True), 2.0)
    assert pacer.add(piece(1, b"b1"), None) is None  # 2 s in hand
    clock.now += 1.0  # 1 s in hand: no more than HOLD_WHEN_AHEAD
    assert pacer.add(piece(1, b"b2"), None) == piece(1, b"b1b2")


def test_audio_of_unknown_duration_always_streams():
    clock = Clock()
    pacer = _AudioPacer(clock)
    pacer.add(piece(0, b"a", last=True), None)  # opus, say: how long it plays is not known
    assert pacer.add(piece(1, b"b1"), None) == piece(1, b"b1")


async def test_held_pieces_go_when_due_before_the_chunk_is_complete(monkeypatch):
    monkeypatch.setattr(workers, "HOLD_WHEN_AHEAD", 0.05)
    sent: list[tuple[float, AudioFrame]] = []

    async def send(frame: AudioFrame) -> None:
        sent.append((time.monotonic(), frame))

    audio = _PacedAudio(send)
    start = time.monotonic()
    await audio.add(piece(0, b"a", last=True), 0.3)  # 0.3 s to play: pieces held until 0.25 s from now
    await audio.add(piece(1, b"b1"), None)
    await audio.add(piece(1, b"b2"), None)
    assert [frame for _, frame in sent] == [piece(0, b"a", last=True)]
    await asyncio.sleep(0.6)
    assert [frame for _, frame in sent] == [piece(0, b"a", last=True), piece(1, b"b1b2")]
    assert 0.2 <= sent[1][0] - start < 0.5  # due at 0.25 s: not at once, and not when the chunk ends
    await audio.add(piece(1, b"", last=True), 0.2)  # and the rest of the chunk follows as it comes
    assert sent[-1][1] == piece(1, b"", last=True)
    await audio.aclose()


async def test_an_answer_that_stops_drops_what_is_held_and_sends_nothing_later(monkeypatch):
    monkeypatch.setattr(workers, "HOLD_WHEN_AHEAD", 0.05)
    sent: list[AudioFrame] = []

    async def send(frame: AudioFrame) -> None:
        sent.append(frame)

    audio = _PacedAudio(send)
    await audio.add(piece(0, b"a", last=True), 0.2)
    await audio.add(piece(1, b"b1"), None)
    await audio.aclose()
    await asyncio.sleep(0.3)
    assert sent == [piece(0, b"a", last=True)]
