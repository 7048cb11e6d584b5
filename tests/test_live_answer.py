"""`/live/answer`: the original protocol, the extended one, and a connection's life around answers."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from answers.models import Answer, Question
from liveqa.asgi import application
from tests.channels_helpers import TIMEOUT, make_stream, receive_events_until, receive_until_end, settled
from tests.fakes.openai_server import fake_audio, split_tokens

pytestmark = pytest.mark.django_db(transaction=True)

ANSWER = "Pi is about 3.14. It never ends. Mathematicians love it"


@pytest.fixture
async def listener(embedded_worker, fake_openai):
    fake_openai.script.tokens = split_tokens(ANSWER)
    _, key = await database_sync_to_async(make_stream)()
    communicator = WebsocketCommunicator(application, f"/live/answer?key={key}")
    connected, _ = await communicator.connect(TIMEOUT)
    assert connected
    yield communicator
    await communicator.disconnect()


def spoken(frames: list) -> list[bytes]:
    return [frame for frame in frames if isinstance(frame, bytes)]


async def test_ping_is_answered_with_pong(listener):
    await listener.send_to(text_data=json.dumps({"type": "ping"}))
    assert await listener.receive_from(TIMEOUT) == "pong"


async def test_question_is_answered_with_ordered_audio_frames_then_end(listener, fake_openai):
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "What is pi?"}))
    frames = await receive_until_end(listener)
    texts = [request["body"]["input"] for request in fake_openai.speech_requests]
    assert spoken(frames) == [fake_audio(text) for text in texts]  # one whole frame per chunk, in order
    assert " ".join(texts).split() == ANSWER.split()  # every word, also the unpunctuated last one
    assert frames[-1] == "##END##"

    await settled()
    question = await Question.objects.aget()
    assert (question.source, question.status) == (Question.Source.LIVE, Question.Status.ANSWERED)
    answer = await Answer.objects.aget(question=question)
    assert answer.text == ANSWER and answer.status == Answer.Status.DONE
    assert answer.timings["first_audio"] is not None
    assert await answer.chunks.acount() == len(texts)
    async for chunk in answer.chunks.all():  # each chunk's moments, as the pipeline measured them
        assert 0 <= chunk.timings["ready"] <= chunk.timings["first_audio"] <= chunk.timings["done"]


async def test_ping_is_answered_while_an_answer_is_being_spoken(listener, fake_openai):
    fake_openai.script.token_delay = 0.03
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "What is pi?"}))
    first = await listener.receive_output(TIMEOUT)
    assert first.get("bytes")  # the answer is under way
    await listener.send_to(text_data=json.dumps({"type": "ping"}))
    frames = await receive_until_end(listener)
    assert "pong" in frames
    assert frames.index("pong") < len(frames) - 1  # before the answer ended


async def test_prompt_voice_and_speed_apply_to_that_question_only(listener, fake_openai):
    await listener.send_to(
        text_data=json.dumps(
            {"type": "question", "question": "One?", "prompt": "Be a pirate.", "voice": "nova", "speed": 1.5}
        )
    )
    await receive_until_end(listener)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Two?"}))
    await receive_until_end(listener)

    first, second = fake_openai.chat_requests
    assert first["messages"][0] == {"role": "system", "content": "Be a pirate."}
    assert second["messages"][0]["content"] != "Be a pirate."
    voices = {(r["body"]["voice"], r["body"]["speed"]) for r in fake_openai.speech_requests}
    assert ("nova", 1.5) in voices and ("alloy", 1.0) in voices


async def test_a_second_question_waits_for_the_first_answer(listener, fake_openai):
    fake_openai.script.token_delay = 0.01
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "First?"}))
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Second?"}))
    first = await receive_until_end(listener)
    second = await receive_until_end(listener)
    assert spoken(first) and spoken(second)
    asked = [request["messages"][-1]["content"] for request in fake_openai.chat_requests]
    assert asked == ["First?", "Second?"]
    await settled()
    statuses = [q.status async for q in Question.objects.order_by("created_at")]
    assert statuses == [Question.Status.ANSWERED, Question.Status.ANSWERED]


async def test_cancel_stops_the_answer_and_ends_it(listener, fake_openai):
    fake_openai.script.token_delay = 0.2
    await listener.send_to(text_data=json.dumps({"type": "hello", "protocol": 2}))
    assert json.loads(await listener.receive_from(TIMEOUT)) == {"type": "hello", "protocol": 2}
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Long one?"}))
    await receive_events_until(listener, "answer.started")
    await listener.send_to(text_data=json.dumps({"type": "cancel"}))
    frames = await receive_events_until(listener, "answer.failed", "answer.done")
    assert frames[-1]["type"] == "answer.failed" and frames[-1]["reason"] == "cancelled"
    await settled()
    question = await Question.objects.aget()
    assert question.status == Question.Status.SKIPPED
    # The connection stays usable.
    await listener.send_to(text_data=json.dumps({"type": "ping"}))
    assert json.loads(await listener.receive_from(TIMEOUT)) == {"type": "pong"}


async def test_extended_protocol_reports_every_step(listener, fake_openai):
    await listener.send_to(text_data=json.dumps({"type": "hello", "protocol": 2}))
    await listener.receive_from(TIMEOUT)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "What is pi?"}))
    frames = await receive_events_until(listener, "answer.done", "answer.failed")
    events = [f for f in frames if isinstance(f, dict)]
    started, done = events[0], events[-1]
    assert started["type"] == "answer.started" and done["type"] == "answer.done"
    assert done["answer_id"] == started["answer_id"]
    assert set(done["timings"]) >= {"first_token", "first_chunk", "first_audio", "total"}
    chunks = [e for e in events if e["type"] == "answer.chunk"]
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    # Each binary frame follows the answer.audio event that describes it.
    for i, frame in enumerate(frames):
        if isinstance(frame, bytes):
            header = frames[i - 1]
            assert header["type"] == "answer.audio" and header["size"] == len(frame)
            assert header["format"] == "mp3" and header["sample_rate"] == 24000
            assert frame == fake_audio(chunks[header["seq"]]["text"])


async def test_disconnect_mid_answer_cancels_generation(listener, fake_openai):
    fake_openai.script.token_delay = 0.2
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Long one?"}))
    while not fake_openai.chat_requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert fake_openai.open_streams >= 1
    await listener.disconnect()
    async with asyncio.timeout(2):
        while fake_openai.open_streams:
            await asyncio.sleep(0.01)
        while (await Question.objects.aget()).status == Question.Status.ANSWERING:
            await asyncio.sleep(0.02)
    assert (await Question.objects.aget()).status == Question.Status.SKIPPED


async def test_a_wrong_or_missing_key_is_refused_before_accepting(embedded_worker):
    await database_sync_to_async(make_stream)()
    for path in ("/live/answer", "/live/answer?key=wrong"):
        communicator = WebsocketCommunicator(application, path)
        connected, _ = await communicator.connect(TIMEOUT)
        assert not connected
        await communicator.disconnect()


async def test_later_chunks_arrive_whole_once_the_listener_has_plenty_of_audio(listener, fake_openai):
    from tests.fakes.openai_server import fake_audio, mp3_frames

    script = fake_openai.script
    script.tokens = split_tokens(
        "One two three four five six seven. Eight nine ten eleven twelve thirteen. Fourteen fifteen sixteen seventeen."
    )
    script.tts_pieces, script.tts_mp3_frames, script.tts_audio_bytes_per_char = 4, True, 480  # 60 ms a letter
    await listener.send_to(text_data=json.dumps({"type": "hello", "protocol": 2}))
    await listener.receive_from(TIMEOUT)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Count?"}))
    frames = await receive_events_until(listener, "answer.done", "answer.failed")

    audio: dict[int, list[bytes]] = {}
    for i, frame in enumerate(frames):
        if isinstance(frame, dict) and frame["type"] == "answer.audio":
            audio.setdefault(frame["seq"], []).append(frames[i + 1] if frame["size"] else b"")
    texts = [request["body"]["input"] for request in fake_openai.speech_requests]
    for seq, text in enumerate(texts):  # every byte of every chunk, in order
        assert b"".join(audio[seq]) == fake_audio(text) + mp3_frames(len(text) * 480 - len(fake_audio(text)))
    assert len(texts) == 3
    assert len(audio[0]) == 5  # the first chunk as it was synthesized: 4 pieces and the end
    assert len(audio[1]) == len(audio[2]) == 1  # then, with seconds of audio still to play, whole chunks
