"""daphne and two worker processes on loopback, driven by a real WebSocket client."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.fakes.openai_server import fake_audio, split_tokens
from tests.processes import LiveQA

pytestmark = pytest.mark.e2e

ANSWER = "Redis carries every word. Two workers share the load. Nothing is lost on the way"


@pytest.fixture(scope="module")
def liveqa():
    with LiveQA(workers=2, script={"tokens": split_tokens(ANSWER), "token_delay": 0.005}) as running:
        yield running


async def test_question_gives_ordered_audio_frames_then_end(liveqa):
    async with asyncio.timeout(20), websockets.connect(liveqa.answer_url) as socket:
        await socket.send(json.dumps({"type": "ping"}))
        assert await socket.recv() == "pong"
        await socket.send(json.dumps({"type": "question", "question": "How does it work?"}))
        frames = []
        while (frame := await socket.recv()) != "##END##":
            frames.append(frame)
    assert all(isinstance(frame, bytes) for frame in frames)
    spoken = b" ".join(frame.removeprefix(b"AUDIO[").removesuffix(b"]") for frame in frames).decode()
    assert spoken.split() == ANSWER.split()


async def test_extended_protocol_end_to_end(liveqa):
    async with asyncio.timeout(20), websockets.connect(liveqa.answer_url) as socket:
        await socket.send(json.dumps({"type": "hello", "protocol": 2}))
        assert json.loads(await socket.recv()) == {"type": "hello", "protocol": 2}
        await socket.send(json.dumps({"type": "question", "question": "Again?"}))
        events, audio = [], []
        while True:
            frame = await socket.recv()
            if isinstance(frame, bytes):
                audio.append((events[-1], frame))
                continue
            events.append(json.loads(frame))
            if events[-1]["type"] in ("answer.done", "answer.failed"):
                break
    assert events[0]["type"] == "answer.started" and events[-1]["type"] == "answer.done"
    chunks = {e["seq"]: e["text"] for e in events if e["type"] == "answer.chunk"}
    assert [header["seq"] for header, _ in audio] == sorted(chunks)
    for header, frame in audio:
        assert header["type"] == "answer.audio" and header["size"] == len(frame)
        assert frame == fake_audio(chunks[header["seq"]])


async def test_several_listeners_are_served_by_both_workers(liveqa):
    async def ask(i: int) -> bytes:
        async with websockets.connect(liveqa.answer_url) as socket:
            await socket.send(json.dumps({"type": "question", "question": f"Question {i}?"}))
            frames = []
            while (frame := await socket.recv()) != "##END##":
                frames.append(frame)
            return b"".join(frames)

    async with asyncio.timeout(30):
        results = await asyncio.gather(*(ask(i) for i in range(6)))
    assert all(result.startswith(b"AUDIO[") for result in results)
    logs = liveqa.log("worker0") + liveqa.log("worker1")
    assert "Traceback" not in logs
