"""The streamer's overlay: its page and socket open with the stream key only, and it hears every
answer spoken on the stream (and replays) as protocol-2 events with binary audio."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from answers import events
from answers.models import Question
from liveqa.asgi import application
from tests.channels_helpers import TIMEOUT
from tests.fakes.openai_server import fake_audio, split_tokens
from tests.moderation_helpers import make_answer, make_stream_with_token, make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_page_needs_the_streams_key(client):
    stream, key, _ = make_stream_with_token()
    _, other_key, _ = make_stream_with_token(name="Other")
    assert client.get(f"/overlay/{stream.slug}/").status_code == 403
    assert client.get(f"/overlay/{stream.slug}/", {"key": "wrong"}).status_code == 403
    assert client.get(f"/overlay/{stream.slug}/", {"key": other_key}).status_code == 403
    page = client.get(f"/overlay/{stream.slug}/", {"key": key})
    assert page.status_code == 200 and b"answers/overlay.js" in page.content
    assert page["Referrer-Policy"] == "no-referrer"


async def frames_until(communicator: WebsocketCommunicator, *types: str) -> list[Any]:
    frames: list[Any] = []
    while True:
        output = await communicator.receive_output(TIMEOUT)
        assert output["type"] == "websocket.send", output
        if output.get("bytes") is not None:
            frames.append(output["bytes"])
            continue

        frames.append(json.loads(output["text"]))
        if frames[-1]["type"] in types:
            return frames


async def test_the_socket_refuses_a_missing_wrong_or_other_streams_key():
    stream, _, _ = await database_sync_to_async(make_stream_with_token)()
    _, other_key, _ = await database_sync_to_async(make_stream_with_token)(name="Other")
    for query in ("", "?key=wrong", f"?key={other_key}"):
        communicator = WebsocketCommunicator(application, f"/ws/overlay/{stream.slug}/{query}")
        connected, _ = await communicator.connect(TIMEOUT)
        assert not connected
        await communicator.disconnect()


async def overlay_and_staff_dashboard(stream, key):
    """A connected overlay of `stream`, and a staff member's dashboard of it."""
    overlay = WebsocketCommunicator(application, f"/ws/overlay/{stream.slug}/?key={key}")
    assert (await overlay.connect(TIMEOUT))[0]
    staff = await database_sync_to_async(lambda: session_cookie(make_user("boss", staff=True))[1])()
    dashboard = WebsocketCommunicator(
        application, f"/ws/dashboard/{stream.slug}/",
        headers=[(b"origin", b"http://localhost"), (b"cookie", f"sessionid={staff}".encode())],
    )  # fmt: skip
    assert (await dashboard.connect(TIMEOUT))[0]
    return overlay, dashboard


async def approved_answer_on_the_overlay() -> list[Any]:
    """What a stream's overlay receives for a question a moderator approves, up to the answer's end."""
    stream, key, _ = await database_sync_to_async(make_stream_with_token)()
    overlay, dashboard = await overlay_and_staff_dashboard(stream, key)
    question = await Question.objects.acreate(stream=stream, text="What is pi?", source="ask")
    await dashboard.send_json_to({"action": "approve", "id": question.pk})
    try:
        return await frames_until(overlay, events.DONE, events.FAILED)
    finally:
        await dashboard.disconnect()
        await overlay.disconnect()


async def test_the_overlay_hears_an_approved_answer_with_its_audio_in_order(embedded_worker, fake_openai):
    frames = await approved_answer_on_the_overlay()
    assert frames[0]["type"] == events.STARTED and frames[-1]["type"] == events.DONE
    chunks = [f for f in frames if isinstance(f, dict) and f["type"] == events.CHUNK]
    audio = [f for f in frames if isinstance(f, bytes)]
    assert audio == [fake_audio(c["text"]) for c in chunks]  # each chunk's audio, in seq order
    for i, frame in enumerate(frames):
        if isinstance(frame, bytes):
            assert frames[i - 1]["type"] == events.AUDIO and frames[i - 1]["size"] == len(frame)


async def test_a_replayed_answer_reaches_the_overlay_with_its_original_id(db):
    stream, key, _ = await database_sync_to_async(make_stream_with_token)()
    answer = await database_sync_to_async(make_answer)(stream, [("One.", b"A1", 1.0, ""), ("Two.", b"A2", 1.0, "")])
    overlay, dashboard = await overlay_and_staff_dashboard(stream, key)
    await dashboard.send_json_to({"action": "replay", "answer_id": answer.pk})
    frames = await frames_until(overlay, events.DONE)
    await dashboard.disconnect()
    await overlay.disconnect()
    assert [f["type"] if isinstance(f, dict) else f for f in frames] == [
        events.REPLAY, events.STARTED, events.CHUNK, events.AUDIO, b"A1", events.CHUNK, events.AUDIO, b"A2",
        events.DONE,
    ]  # fmt: skip
    assert {f["answer_id"] for f in frames if isinstance(f, dict)} == {answer.pk}


async def test_the_overlay_answers_ping_and_leaves_its_group_on_disconnect(db):
    stream, key, _ = await database_sync_to_async(make_stream_with_token)()
    overlay = WebsocketCommunicator(application, f"/ws/overlay/{stream.slug}/?key={key}")
    assert (await overlay.connect(TIMEOUT))[0]
    await overlay.send_json_to({"type": "ping"})
    assert await overlay.receive_json_from(TIMEOUT) == {"type": "pong"}
    layer = get_channel_layer()
    assert layer.groups.get(stream.overlay_group)
    await overlay.disconnect()
    assert not layer.groups.get(stream.overlay_group)


async def test_streamed_audio_reaches_the_overlay_whole_one_frame_per_chunk(embedded_worker, fake_openai):
    """The overlay decodes a chunk once all of it is here: the pieces a speech server streams are sent
    as one frame, and an unfinished chunk's pieces are never glued to the next chunk."""
    fake_openai.script.tokens = split_tokens("The first sentence is here. The second is broken. The third plays.")
    fake_openai.script.tts_pieces = 3
    fake_openai.script.tts_break_on = ["broken"]  # that chunk's speech breaks after its first piece
    frames = await approved_answer_on_the_overlay()
    chunks = {f["seq"]: f["text"] for f in frames if isinstance(f, dict) and f["type"] == events.CHUNK}
    failed = {f["seq"] for f in frames if isinstance(f, dict) and f["type"] == events.CHUNK_FAILED}
    assert failed == {seq for seq, text in chunks.items() if "broken" in text} and len(chunks) > len(failed) > 0
    spoken = [seq for seq in sorted(chunks) if seq not in failed]
    audio = [(frames[i - 1], f) for i, f in enumerate(frames) if isinstance(f, bytes)]
    assert [(event["seq"], event["last"], event["size"]) for event, _ in audio] == [
        (seq, True, len(fake_audio(chunks[seq]))) for seq in spoken
    ]
    assert [data for _, data in audio] == [fake_audio(chunks[seq]) for seq in spoken]
