"""The test suite's paced fake OpenAI server, plus what the benchmark needs: audio whose length follows
the text (so playback can be simulated) and a log of when each token and audio piece was written.

    python -m bench.fake --script '{...}'    prints `PORT <n>`; GET /log returns the recorded times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import FakeOpenAI, Script, _delta, _sse, fake_audio

PCM_BYTES_PER_SECOND = 24000 * 2  # what a client assumes for format pcm: 24 kHz, 16-bit mono


@dataclass
class BenchScript(Script):
    # Each chunk's audio is padded to at least len(text) × this many bytes; 2880 = 60 ms of 24 kHz pcm.
    tts_audio_bytes_per_char: int = 0


class RecordingFake(FakeOpenAI):
    """Times are `time.monotonic()`, the same clock as the benchmark's client on this machine."""

    script: BenchScript

    def __init__(self, script: BenchScript):
        super().__init__(script)
        self.log: dict[str, list[dict[str, Any]]] = {"chat": [], "speech": []}

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/log", self.get_log)
        app.router.add_post("/log/clear", self.clear_log)
        return app

    async def set_script(self, request: web.Request) -> web.Response:
        self.script = BenchScript(**(await request.json()))
        return web.json_response({"ok": True})

    async def get_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.log)

    async def clear_log(self, request: web.Request) -> web.Response:
        self.log = {"chat": [], "speech": []}
        return web.json_response({"ok": True})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        record: dict[str, Any] = {"start": time.monotonic(), "tokens": []}
        self.log["chat"].append(record)
        body = await request.json()
        script = self.script
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(script.first_token_delay)
        for i, token in enumerate(script.tokens):
            if i:
                await asyncio.sleep(script.token_delay)
            await response.write(_sse(_delta(body, token)))
            record["tokens"].append(time.monotonic())
        await response.write(_sse(_delta(body, None)) + b"data: [DONE]\n\n")
        await response.write_eof()
        record["end"] = time.monotonic()
        return response

    async def speech(self, request: web.Request) -> web.StreamResponse:
        record: dict[str, Any] = {"start": time.monotonic(), "pieces": [], "end": None}
        self.log["speech"].append(record)
        body = await request.json()
        text = body.get("input", "")
        record["text"] = text
        script = self.script
        await asyncio.sleep(script.tts_first_byte)
        audio = fake_audio(text)
        size = max(script.tts_audio_bytes, len(text) * script.tts_audio_bytes_per_char)
        audio += b"\0" * max(0, size - len(audio))
        record["bytes"] = len(audio)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        pieces = max(1, script.tts_pieces)
        step = -(-len(audio) // pieces)
        pause = script.tts_per_char * len(text) / pieces
        for start in range(0, len(audio), step):
            if start:
                await asyncio.sleep(pause)
            await response.write(audio[start : start + step])
            record["pieces"].append(time.monotonic())
        await response.write_eof()
        record["end"] = time.monotonic()
        return response


def synthesis_seconds(script: dict[str, Any], text: str) -> float:
    """How long the fake takes to speak `text`, first byte to last (pieces after the first are paced)."""
    pieces = max(1, script.get("tts_pieces", 1))
    return script.get("tts_first_byte", 0.0) + script.get("tts_per_char", 0.0) * len(text) * (pieces - 1) / pieces


async def _serve(script: BenchScript) -> None:
    server = await RecordingFake(script).start(0)
    print(f"PORT {server.port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--script", default="{}", help="JSON object of BenchScript fields")
    args = parser.parse_args()
    asyncio.run(_serve(BenchScript(**json.loads(args.script))))


if __name__ == "__main__":
    main()
