"""Helpers for driving the WebSocket consumers in tests."""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator

from answers.models import Stream

TIMEOUT = 5


def make_stream(**fields: Any) -> tuple[Stream, str]:
    stream = Stream(name=fields.pop("name", "Test stream"), **fields)
    key = stream.rotate_key()
    stream.save()
    return stream, key


async def receive_until_end(communicator: WebsocketCommunicator, end: str = "##END##") -> list[Any]:
    """Every frame up to and including the text frame `end` (bytes stay bytes, text stays text)."""
    frames: list[Any] = []
    while True:
        message = await communicator.receive_output(TIMEOUT)
        assert message["type"] == "websocket.send", message
        frame = message.get("bytes") if message.get("bytes") is not None else message.get("text")
        frames.append(frame)
        if frame == end:
            return frames


async def receive_events_until(communicator: WebsocketCommunicator, *types: str) -> list[Any]:
    """Protocol 2: JSON events (dicts) and binary frames (bytes) until an event of one of `types`."""
    frames: list[Any] = []
    while True:
        message = await communicator.receive_output(TIMEOUT)
        assert message["type"] == "websocket.send", message
        if message.get("bytes") is not None:
            frames.append(message["bytes"])
            continue
        event = json.loads(message["text"])
        frames.append(event)
        if event.get("type") in types:
            return frames


async def settled(limit: float = TIMEOUT) -> None:
    """Wait until every answer has been recorded: listeners hear the end before the database does."""
    import asyncio

    from answers.models import Answer, Question

    async with asyncio.timeout(limit):
        while (
            await Question.objects.filter(status=Question.Status.ANSWERING).aexists()
            or await Answer.objects.filter(status=Answer.Status.SPEAKING).aexists()
        ):
            await asyncio.sleep(0.01)
