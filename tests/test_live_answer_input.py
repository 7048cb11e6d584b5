"""Bad input on `/live/answer`: a clear error, the connection stays usable, nothing is written."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from answers.models import Question
from liveqa.asgi import application
from tests.channels_helpers import TIMEOUT, make_stream, receive_events_until

pytestmark = pytest.mark.django_db(transaction=True)

BAD = [
    ("{not json", "invalid_json"),
    ("[1, 2]", "not_an_object"),
    ('"question"', "not_an_object"),
    ('{"type": "shout"}', "unknown_type"),
    ('{"question": "no type"}', "unknown_type"),
    ('{"type": "question"}', "missing_question"),
    ('{"type": "question", "question": "   "}', "empty_question"),
    (json.dumps({"type": "question", "question": "x" * 501}), "question_too_long"),
    ('{"type": "question", "question": 42}', "invalid_field"),
    ('{"type": "question", "question": "ok?", "speed": "fast"}', "invalid_field"),
    ('{"type": "question", "question": "ok?", "speed": true}', "invalid_field"),
    ('{"type": "question", "question": "ok?", "speed": 0.1}', "invalid_speed"),
    ('{"type": "question", "question": "ok?", "speed": 4.5}', "invalid_speed"),
    ('{"type": "question", "question": "ok?", "voice": "nobody"}', "unknown_voice"),
    ('{"type": "question", "question": "ok?", "voice": 3}', "invalid_field"),
    ('{"type": "question", "question": "ok?", "prompt": ["x"]}', "invalid_field"),
    (json.dumps({"type": "question", "question": "ok?", "prompt": "p" * 4001}), "prompt_too_long"),
    ('{"type": "hello", "protocol": 9}', "unsupported_protocol"),
]


@pytest.fixture
async def connect(embedded_worker):
    _, key = await database_sync_to_async(make_stream)()
    opened = []

    async def open_socket():
        communicator = WebsocketCommunicator(application, f"/live/answer?key={key}")
        connected, _ = await communicator.connect(TIMEOUT)
        assert connected
        opened.append(communicator)
        return communicator

    yield open_socket
    for communicator in opened:
        await communicator.disconnect()


@pytest.mark.parametrize(("frame", "code"), BAD, ids=[code + str(i) for i, (_, code) in enumerate(BAD)])
async def test_bad_input_gets_a_stable_error_code_and_writes_nothing(connect, frame, code):
    listener = await connect()
    await listener.send_to(text_data=frame)
    assert (await listener.receive_from(TIMEOUT)).startswith(f"ERROR {code}:")

    await listener.send_to(text_data=json.dumps({"type": "hello", "protocol": 2}))
    await listener.receive_from(TIMEOUT)
    await listener.send_to(text_data=frame)
    error = json.loads(await listener.receive_from(TIMEOUT))
    assert error["type"] == "error" and error["code"] == code and error["message"]

    assert await Question.objects.acount() == 0
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Still there?"}))
    frames = await receive_events_until(listener, "answer.done", "answer.failed")
    assert frames[-1]["type"] == "answer.done"
    assert await Question.objects.acount() == 1


async def test_a_frame_over_the_size_limit_closes_with_1009(connect):
    listener = await connect()
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "x" * 70_000}))
    assert await listener.receive_output(TIMEOUT) == {"type": "websocket.close", "code": 1009}
    assert await Question.objects.acount() == 0


async def test_too_many_messages_get_an_error_then_close_4429(connect, settings):
    settings.LIVEQA_RATE_LIMIT_MESSAGES = 5
    listener = await connect()
    for _ in range(5):
        await listener.send_to(text_data='{"type": "ping"}')
        assert await listener.receive_from(TIMEOUT) == "pong"
    await listener.send_to(text_data='{"type": "ping"}')
    assert (await listener.receive_from(TIMEOUT)).startswith("ERROR rate_limited")
    assert await listener.receive_output(TIMEOUT) == {"type": "websocket.close", "code": 4429}


async def test_binary_frames_from_clients_are_refused_politely(connect):
    listener = await connect()
    await listener.send_to(bytes_data=b"\x00\x01")
    assert (await listener.receive_from(TIMEOUT)).startswith("ERROR invalid_json")
    await listener.send_to(text_data='{"type": "ping"}')
    assert await listener.receive_from(TIMEOUT) == "pong"


frames = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=12,
    ).map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["question", "ping", "cancel", "hello", "x"])},
        optional={
            "question": st.one_of(st.text(max_size=20), st.integers(), st.none()),
            "speed": st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=3)),
            "voice": st.one_of(st.text(max_size=8), st.integers()),
            "protocol": st.one_of(st.integers(-2, 4), st.text(max_size=2)),
        },
    ).map(json.dumps),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(frames, min_size=1, max_size=6))
def test_random_frames_never_break_the_consumer(batch, fuzz_socket):
    """Nothing escapes as an exception and nothing hangs: after any frames, ping still answers."""
    fuzz_socket(batch)


@pytest.fixture
def fuzz_socket(transactional_db, embedded_worker_sync):
    from asgiref.sync import async_to_sync

    _, stream_key = make_stream(name="Fuzz")

    async def run(batch):
        communicator = WebsocketCommunicator(application, f"/live/answer?key={stream_key}")
        connected, _ = await communicator.connect(TIMEOUT)
        assert connected
        try:
            await communicator.send_to(text_data='{"type": "cancel"}')
            for frame in batch:
                key = "bytes" if isinstance(frame, bytes) else "text"
                await communicator.send_input({"type": "websocket.receive", key: frame})
            await communicator.send_to(text_data='{"type": "hello", "protocol": 1}')
            await communicator.send_to(text_data='{"type": "ping"}')
            while True:  # whatever the frames caused, the pong comes, and no close or crash before it
                output = await communicator.receive_output(TIMEOUT)
                assert output["type"] == "websocket.send", output
                if output.get("text") == "pong":
                    break
        finally:
            await communicator.disconnect()
            await communicator.wait(TIMEOUT)

    return lambda batch: async_to_sync(run)(batch)


@pytest.fixture
def embedded_worker_sync(make_pipeline, monkeypatch, settings):
    """For the sync fuzz test: answers come from the fake server; questions are rarely valid anyway."""
    from answers import providers

    settings.LIVEQA_RATE_LIMIT_MESSAGES = 1000
    built = make_pipeline()
    monkeypatch.setattr(providers, "pipeline", lambda: built)
    return built
