"""The whole product on the embedded default: SmolLM2 and Piper answer through `/live/answer`."""

from __future__ import annotations

import json
import statistics
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from answers import dispatch, providers
from answers.models import Answer
from answers.pipeline.audio import audio_duration
from liveqa.asgi import application
from tests.channels_helpers import make_stream

pytestmark = [pytest.mark.offline, pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def offline(settings, monkeypatch):
    settings.LIVEQA_LLM_BACKEND = settings.LIVEQA_TTS_BACKEND = "local"
    settings.LIVEQA_TTS_VOICE = providers.PACKAGED_PIPER_VOICE
    settings.LIVEQA_MAX_TOKENS = 60
    built = providers.pipeline.__wrapped__()  # the real factory, uncached: these settings only
    monkeypatch.setattr(providers, "pipeline", lambda: built)
    yield built
    await dispatch.stop_embedded_worker()
    await built.llm.aclose()
    await built.speech.aclose()


async def test_smollm2_and_piper_answer_a_question_with_real_audio(offline):
    _, key = await database_sync_to_async(make_stream)()
    listener = WebsocketCommunicator(application, f"/live/answer?key={key}")
    assert (await listener.connect(10))[0]
    try:
        await listener.send_to(text_data=json.dumps({"type": "hello", "protocol": 2}))
        await listener.receive_from(10)
        await listener.send_to(text_data=json.dumps({"type": "question", "question": "Why is the sky blue?"}))
        pings: list[float] = []
        frames = []
        sent_at = None
        while True:
            message = await listener.receive_output(60)
            if message.get("bytes") is not None:
                frames.append(message["bytes"])
                if sent_at is None:  # audio is flowing: Piper is busy with the next chunks; how fast are we?
                    sent_at = time.monotonic()
                    await listener.send_to(text_data='{"type": "ping"}')
                continue
            event = json.loads(message["text"])
            if event["type"] == "pong":
                pings.append(time.monotonic() - sent_at)
                sent_at = None
            if event["type"] in ("answer.done", "answer.failed"):
                break
        assert event["type"] == "answer.done", event
        assert frames and all(frame[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"ID") for frame in frames[:1])
        answer = await Answer.objects.aget()
        assert answer.model == "SmolLM2-135M-Instruct" and len(answer.text.split()) >= 3
        chunks = [c async for c in answer.chunks.all()]
        durations = [audio_duration(bytes(c.audio), c.audio_format, c.sample_rate) for c in chunks]
        # Plausible speech: Piper reads roughly 2 to 4 words per second.
        words = sum(len(c.speech.split()) for c in chunks)
        assert 0.15 * words <= sum(d for d in durations if d) <= 1.5 * words + 1
        if pings:  # the loop stays free while Piper and SmolLM2 work in their threads
            assert statistics.median(pings) < 0.05, pings
    finally:
        await listener.disconnect()
