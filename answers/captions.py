"""Caption export: an answer's spoken chunks as WebVTT or SRT cues, timed by their stored audio."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class SpokenChunk(Protocol):
    seq: int
    caption: str
    audio: bytes
    duration: float | None
    error: str


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def cues(chunks: Iterable[SpokenChunk]) -> list[Cue]:
    """One cue per chunk that was actually heard, back to back in seq order. A chunk without audio
    (its speech failed) was never heard, so it has no cue and takes no time; nor does audio of
    unknown length, which is better left uncaptioned than mistimed."""
    result: list[Cue] = []
    clock = 0.0
    for chunk in sorted(chunks, key=lambda c: c.seq):
        if chunk.error or not chunk.audio or not chunk.duration or chunk.duration <= 0:
            continue
        text = " ".join(chunk.caption.split())
        if text:
            result.append(Cue(clock, clock + chunk.duration, text))
        clock += chunk.duration
    return result


def _timestamp(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_vtt(chunks: Iterable[SpokenChunk]) -> str:
    blocks = ["WEBVTT\n"]
    for n, cue in enumerate(cues(chunks), 1):
        # A cue's text may not contain "-->", and & and < start entities and tags.
        text = cue.text.replace("&", "&amp;").replace("<", "&lt;").replace("-->", "→")
        blocks.append(f"{n}\n{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n{text}\n")
    return "\n".join(blocks)


def to_srt(chunks: Iterable[SpokenChunk]) -> str:
    blocks = [
        f"{n}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n{cue.text.replace('-->', '→')}\n"
        for n, cue in enumerate(cues(chunks), 1)
    ]
    return "\n".join(blocks)
