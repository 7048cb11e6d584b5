"""The benchmark's WebSocket clients: a listener that asks over /live/answer (protocol 2) and pings while
it is answered, an overlay that only listens, and what a listener would hear from what they received."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import websockets

MP3_BYTES_PER_SECOND = 64000 // 8  # LiveQA's MP3s are 64 kbit/s CBR; the fake's audio is sized the same


def audio_seconds(size: int, fmt: str, sample_rate: int) -> float:
    if fmt == "pcm":
        return size / (2 * sample_rate)
    if fmt == "mp3":
        return size / MP3_BYTES_PER_SECOND
    raise ValueError(f"cannot tell the duration of {fmt} from its size")


@dataclass
class Frame:
    at: float  # arrival, time.monotonic()
    seq: int
    seconds: float  # of audio


@dataclass
class AnswerTrace:
    """What one listener received for one answer, with arrival times (time.monotonic())."""

    sent: float = 0.0
    chunks: list[tuple[float, int, str]] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    end: float | None = None
    end_event: dict[str, Any] = field(default_factory=dict)
    pings: list[float] = field(default_factory=list)  # round trips, seconds

    @property
    def ok(self) -> bool:
        return self.end_event.get("type") == "answer.done" and bool(self.frames)

    def metrics(self) -> dict[str, float]:
        """First audio and total from `sent`; the largest gap between audio frames; and the stalls a
        listener hears when each frame plays at max(its arrival, the end of the previous one)."""
        assert self.frames and self.end is not None
        arrivals = [f.at for f in self.frames]
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        playing_until = arrivals[0]
        stalls = []
        for frame in self.frames:
            stalls.append(max(0.0, frame.at - playing_until))
            playing_until = max(frame.at, playing_until) + frame.seconds
        return {
            "first_audio": arrivals[0] - self.sent,
            "total": self.end - self.sent,
            "max_gap": max(gaps, default=0.0),
            "stall_total": sum(stalls),
            "stall_max": max(stalls),
            "audio_seconds": sum(f.seconds for f in self.frames),
            "tail": self.end - arrivals[-1],  # from the last audio to answer.done
        }


class _Reader:
    """Reads protocol-2 events into a trace; the binary frame after an `answer.audio` event is its audio."""

    def __init__(self, trace: AnswerTrace):
        self.trace = trace
        self.pending: dict[str, Any] | None = None

    def read(self, message: str | bytes, at: float) -> dict[str, Any] | None:
        if isinstance(message, bytes):
            header, self.pending = self.pending or {}, None
            seconds = audio_seconds(len(message), header.get("format", "mp3"), header.get("sample_rate", 0))
            self.trace.frames.append(Frame(at, header.get("seq", -1), seconds))
            return None
        event = json.loads(message)
        kind = event.get("type")
        if kind == "answer.chunk":
            self.trace.chunks.append((at, event["seq"], event["text"]))
        elif kind == "answer.audio" and event.get("size"):
            self.pending = event
        elif kind in ("answer.done", "answer.failed"):
            self.trace.end, self.trace.end_event = at, event
        return event


async def hello(socket: websockets.ClientConnection) -> None:
    await socket.send(json.dumps({"type": "hello", "protocol": 2}))
    reply = json.loads(await socket.recv())
    if reply != {"type": "hello", "protocol": 2}:
        raise RuntimeError(f"server did not switch to protocol 2: {reply}")


async def ask(
    url: str,
    question: str,
    *,
    ping_every: float | None = 0.05,
    limit: float = 60.0,
    together: asyncio.Barrier | None = None,
) -> AnswerTrace:
    """Ask one question on a fresh connection; ping every `ping_every` seconds until the answer ends.
    Pongs still owed then are waited for (a server that answers pings only after the answer, like the
    naive baseline, gets those long round trips counted). With `together`, the question is sent once
    every connection of the barrier is open, so that the questions, not the handshakes, are concurrent."""
    trace = AnswerTrace()
    reader = _Reader(trace)
    pings_sent: collections.deque[float] = collections.deque()

    async def ping(socket: websockets.ClientConnection) -> None:
        assert ping_every is not None
        while True:
            await asyncio.sleep(ping_every)
            pings_sent.append(time.monotonic())
            await socket.send('{"type": "ping"}')

    async with asyncio.timeout(limit), websockets.connect(url, max_size=None, max_queue=None) as socket:
        await hello(socket)
        if together is not None:
            await together.wait()
        trace.sent = time.monotonic()
        await socket.send(json.dumps({"type": "question", "question": question}))
        async with asyncio.TaskGroup() as tasks:
            pinger = tasks.create_task(ping(socket)) if ping_every else None
            try:
                while trace.end is None:
                    message = await socket.recv()
                    at = time.monotonic()
                    if message == '{"type": "pong"}' and pings_sent:
                        trace.pings.append(at - pings_sent.popleft())
                        continue
                    reader.read(message, at)
            finally:
                if pinger is not None:
                    pinger.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while pings_sent:
                    if await socket.recv() == '{"type": "pong"}':
                        trace.pings.append(time.monotonic() - pings_sent.popleft())
    return trace


class Overlay:
    """One overlay socket (`/ws/overlay/<slug>/?key=…`), kept open across answers."""

    def __init__(self, url: str):
        self.url = url
        self.socket: websockets.ClientConnection | None = None

    async def connect(self) -> None:
        self.socket = await websockets.connect(self.url, max_size=None, open_timeout=30)

    async def listen(self, sent: asyncio.Future[float], limit: float = 60.0) -> AnswerTrace:
        """Receive the next answer to its end; `sent` resolves to when its question was posted."""
        assert self.socket is not None
        trace = AnswerTrace()
        reader = _Reader(trace)
        async with asyncio.timeout(limit):
            while trace.end is None:
                message = await self.socket.recv()
                reader.read(message, time.monotonic())
            trace.sent = await sent
        return trace

    async def close(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated; the value itself for a single sample."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]
