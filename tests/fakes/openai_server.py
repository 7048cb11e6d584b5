"""A paced fake OpenAI-compatible server on loopback: SSE chat tokens and a speech endpoint, with
delays, streaming, out-of-order completion and failures on cue, so the real `openai` client runs.
Everything scripted is paced against deadlines from the request's arrival, so delays do not drift, and
the moment each token and audio piece was written is logged (`time.monotonic()`, GET /log), with when the
connection each request came on was accepted.

Run standalone (for subprocess tests and the benchmark):
    python -m tests.fakes.openai_server --port 0 --script '{"tokens": [...], ...}'
It prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import time
import wave
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_ANSWER = "Hello there. This is a scripted answer, spoken in order. It has three sentences."


def split_tokens(text: str) -> list[str]:
    """Word-sized tokens with their leading space, like a real tokenizer's output."""
    tokens: list[str] = []
    for i, word in enumerate(text.split(" ")):
        tokens.append(word if i == 0 else " " + word)
    return tokens


def fake_audio(text: str) -> bytes:
    """Audio stand-in that names the text it speaks, so tests can check what was spoken, in order."""
    return f"AUDIO[{text}]".encode()


# An MPEG-2 layer III frame header: 64 kbit/s, 24 kHz, mono, no CRC. Each frame is 192 bytes, 24 ms.
MP3_FRAME_HEADER = bytes((0xFF, 0xF3, 0x84, 0xC0))
MP3_FRAME_BYTES = 192


def mp3_frames(size: int) -> bytes:
    """Silent MP3 frames filling at least `size` bytes."""
    frame = MP3_FRAME_HEADER + bytes(MP3_FRAME_BYTES - len(MP3_FRAME_HEADER))
    return frame * -(-size // MP3_FRAME_BYTES)


def wav_audio(seconds: float = 0.3, sample_rate: int = 24000, pitch: float = 440.0) -> bytes:
    """A real, decodable 16-bit mono WAV (a quiet sine), for clients that decode what they receive."""
    frames = bytearray()
    for i in range(int(seconds * sample_rate)):
        frames += int(8000 * math.sin(2 * math.pi * pitch * i / sample_rate)).to_bytes(2, "little", signed=True)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(bytes(frames))
    return buffer.getvalue()


@dataclass
class Script:
    """What the fake server does. Times in seconds."""

    tokens: list[str] = field(default_factory=lambda: split_tokens(DEFAULT_ANSWER))
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    # Failures of the chat endpoint: HTTP status for the first `fail_first` requests.
    fail_status: int = 0
    fail_first: int = 0
    drop_first: int = 0  # cut the connection of the first this many chat requests before answering
    stall_after: int | None = None  # send this many tokens, then go silent
    break_after: int | None = None  # send this many tokens, then cut the connection
    error_after: int | None = None  # send this many tokens, then an `error` event (a server overloaded mid-answer)
    empty_events: bool = False  # every token preceded by an event with no choices (as some servers send)
    # Speech endpoint.
    tts_first_byte: float = 0.0
    tts_per_char: float = 0.0
    tts_pieces: int = 1  # >1: the body is streamed in this many pieces, paced over the synthesis time
    tts_delays: dict[str, float] = field(default_factory=dict)  # extra delay when the text contains key
    tts_fail_on: list[str] = field(default_factory=list)  # 500 when the text contains one of these
    tts_break_on: list[str] = field(default_factory=list)  # cut the connection after the first piece
    # Cut the connection of the first this many speech requests before answering (a server closing an
    # idle connection just as a request goes out on it).
    tts_drop_first: int = 0
    tts_audio_bytes: int = 0  # pad each chunk's audio to at least this many bytes
    tts_audio_bytes_per_char: int = 0  # ... or to len(text) × this (audio as long as the text takes to say)
    tts_real_wav: bool = False  # answer with a real 0.3 s WAV instead of the text-naming stand-in
    # Pad with silent MP3 frames (64 kbit/s, 24 kHz mono) rather than zeros: the padded audio is then a
    # stream of frames whose duration can be read, as a real provider's MP3 can.
    tts_mp3_frames: bool = False
    # A remote server's TCP and TLS handshake: the first request on a new connection is served only this
    # long after the connection was accepted.
    new_connection_delay: float = 0.0


class FakeOpenAI:
    def __init__(self, script: Script | None = None):
        self.script = script or Script()
        self.chat_requests: list[dict[str, Any]] = []
        self.speech_requests: list[dict[str, Any]] = []
        self.speech_in_flight = 0
        self.max_speech_in_flight = 0
        self.open_streams = 0  # chat or speech responses currently being written
        self.closed_early: list[str] = []  # responses whose client went away
        self.log: dict[str, list[dict[str, Any]]] = {"chat": [], "speech": []}  # when things were written
        self.connected: dict[int, float] = {}  # a client's port → when its connection was accepted
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/script", self.set_script)
        app.router.add_get("/log", self.get_log)
        app.router.add_post("/log/clear", self.clear_log)
        return app

    async def start(self, port: int = 0) -> FakeOpenAI:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        self._server = await asyncio.get_running_loop().create_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _accept(self) -> asyncio.Protocol:
        assert self._runner is not None and self._runner.server is not None
        return _Accepted(self._runner.server(), self.connected)

    def _connected(self, request: web.Request) -> float | None:
        """When the connection `request` came on was accepted."""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return self.connected.get(peer[1]) if peer else None

    async def _handshake(self, request: web.Request, record: dict[str, Any]) -> None:
        """Log when the request's connection was accepted, and wait out what is left of its scripted
        handshake; the request's pacing starts after it, as a remote server's would."""
        record["connected"] = self._connected(request)
        if self.script.new_connection_delay and record["connected"] is not None:
            await _sleep_until(record["connected"] + self.script.new_connection_delay)
            record["start"] = max(record["start"], time.monotonic())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def set_script(self, request: web.Request) -> web.Response:
        self.script = Script(**(await request.json()))
        return web.json_response({"ok": True})

    async def get_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.log)

    async def clear_log(self, request: web.Request) -> web.Response:
        self.log = {"chat": [], "speech": []}
        return web.json_response({"ok": True})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        record: dict[str, Any] = {"start": time.monotonic(), "tokens": [], "end": None}
        await self._handshake(request, record)
        self.log["chat"].append(record)
        body = await request.json()
        self.chat_requests.append(body)
        asked = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
        record["question"] = asked[-1] if asked else None
        script = self.script
        if len(self.chat_requests) <= script.drop_first:
            _cut(request)
            return web.Response()
        if script.fail_status and len(self.chat_requests) <= script.fail_first:
            return web.json_response(
                {"error": {"message": "scripted failure", "type": "server_error"}}, status=script.fail_status
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.open_streams += 1
        try:
            for i, token in enumerate(script.tokens):
                await _sleep_until(record["start"] + script.first_token_delay + i * script.token_delay)
                if script.stall_after is not None and i == script.stall_after:
                    await asyncio.sleep(3600)
                if script.break_after is not None and i == script.break_after:
                    _cut(request)
                    return response
                if script.error_after is not None and i == script.error_after:
                    await response.write(_sse({"error": {"message": "overloaded", "type": "server_error"}}))
                    await response.write_eof()
                    return response
                if script.empty_events:
                    await response.write(_sse({**_delta(body, None), "choices": []}))
                await response.write(_sse(_delta(body, token)))
                record["tokens"].append(time.monotonic())
            await response.write(_sse(_delta(body, None)) + b"data: [DONE]\n\n")
            await response.write_eof()
            record["end"] = time.monotonic()
        except (asyncio.CancelledError, ConnectionResetError):
            self.closed_early.append("chat")
            raise
        finally:
            self.open_streams -= 1
        return response

    async def speech(self, request: web.Request) -> web.StreamResponse:
        record: dict[str, Any] = {"start": time.monotonic(), "pieces": [], "end": None}
        await self._handshake(request, record)
        self.speech_requests.append(record)
        self.log["speech"].append(record)
        record["body"] = body = await request.json()
        record["text"] = text = body.get("input", "")
        script = self.script
        self.speech_in_flight += 1
        self.max_speech_in_flight = max(self.max_speech_in_flight, self.speech_in_flight)
        self.open_streams += 1
        try:
            if len(self.speech_requests) <= script.tts_drop_first:
                _cut(request)
                return web.Response()
            extra = sum(delay for key, delay in script.tts_delays.items() if key in text)
            first_byte = record["start"] + script.tts_first_byte + extra
            await _sleep_until(first_byte)
            if any(key in text for key in script.tts_fail_on):
                return web.json_response({"error": {"message": "scripted TTS failure"}}, status=500)
            audio = wav_audio() if script.tts_real_wav else fake_audio(text)
            size = max(script.tts_audio_bytes, len(text) * script.tts_audio_bytes_per_char)
            if script.tts_mp3_frames:
                audio += mp3_frames(max(0, size - len(audio)))
            else:
                audio += b"\0" * max(0, size - len(audio))
            record["bytes"] = len(audio)
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            await response.prepare(request)
            pieces = max(1, script.tts_pieces)
            step = -(-len(audio) // pieces)
            pause = script.tts_per_char * len(text) / pieces
            for n, start in enumerate(range(0, len(audio), step)):
                await _sleep_until(first_byte + n * pause)
                await response.write(audio[start : start + step])
                record["pieces"].append(time.monotonic())
                if any(key in text for key in script.tts_break_on):
                    _cut(request)
                    return response
            if pieces == 1:
                await asyncio.sleep(0)
            await response.write_eof()
            record["complete"] = True
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.closed_early.append("speech")
            raise
        finally:
            record["end"] = time.monotonic()
            self.speech_in_flight -= 1
            self.open_streams -= 1


def synthesis_seconds(script: dict[str, Any], text: str) -> float:
    """How long the fake takes to speak `text`, first byte to last (pieces after the first are paced)."""
    pieces = max(1, script.get("tts_pieces", 1))
    return script.get("tts_first_byte", 0.0) + script.get("tts_per_char", 0.0) * len(text) * (pieces - 1) / pieces


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


def _delta(body: dict[str, Any], token: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "delta": {"content": token} if token is not None else {},
                "finish_reason": None if token is not None else "stop",
            }
        ],
    }


def _cut(request: web.Request) -> None:
    """Close the request's connection at once, answered or not."""
    assert request.transport is not None
    request.transport.abort()


class _Accepted(asyncio.Protocol):
    """aiohttp's handler of a new connection, with the moment the connection was accepted logged."""

    def __init__(self, handler: asyncio.Protocol, connected: dict[int, float]):
        self.handler = handler
        self.connected = connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected[transport.get_extra_info("peername")[1]] = time.monotonic()
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _serve(port: int, script: Script) -> None:
    server = await FakeOpenAI(script).start(port)
    print(f"PORT {server.port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", default="{}", help="JSON object of Script fields")
    args = parser.parse_args()
    from liveqa.startup import freeze_startup_heap, run_event_loop

    freeze_startup_heap()  # a full collection would hold up the pacing, as in the processes it serves
    # On the loop LiveQA's processes use: on the benchmark's shared cores, less CPU for the fake is less
    # taken from what it serves.
    run_event_loop(_serve(args.port, Script(**json.loads(args.script))))


if __name__ == "__main__":
    main()
