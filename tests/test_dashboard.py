"""The moderators' dashboard: who may open it, its live socket, and actions every moderator sees."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from answers import events
from answers.models import Prompt, Question, VoicePreset
from liveqa.asgi import application
from tests.channels_helpers import TIMEOUT
from tests.moderation_helpers import make_answer, make_stream_with_token, make_user, session_cookie, worker_inbox

__all__ = ["worker_inbox"]
ORIGIN = b"http://localhost"


# The page -------------------------------------------------------------------------------------


@pytest.mark.db_matters
def test_anonymous_visitors_are_sent_to_log_in(client, db):
    stream, _, _ = make_stream_with_token()
    response = client.get(f"/dashboard/{stream.slug}/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/?next=")


@pytest.mark.db_matters
def test_users_who_do_not_moderate_the_stream_get_403(client, db):
    stream, _, _ = make_stream_with_token()
    other, _, _ = make_stream_with_token(name="Other")
    client.force_login(make_user("mod-of-other", moderates=other))
    assert client.get(f"/dashboard/{stream.slug}/").status_code == 403


@pytest.mark.db_matters
@pytest.mark.parametrize("who", ["moderator", "staff"])
def test_moderators_and_staff_see_the_dashboard(client, db, who):
    stream, _, _ = make_stream_with_token()
    user = make_user(who, staff=who == "staff", moderates=stream if who == "moderator" else None)
    client.force_login(user)
    response = client.get(f"/dashboard/{stream.slug}/")
    assert response.status_code == 200
    assert f"/ws/dashboard/{stream.slug}/".encode() in response.content
    assert b"answers/dashboard.js" in response.content


# The socket -----------------------------------------------------------------------------------


def dashboard_socket(slug: str, sessionid: str | None, origin: bytes | None = ORIGIN) -> WebsocketCommunicator:
    headers = []
    if origin is not None:
        headers.append((b"origin", origin))
    if sessionid is not None:
        headers.append((b"cookie", f"sessionid={sessionid}".encode()))
    return WebsocketCommunicator(application, f"/ws/dashboard/{slug}/", headers=headers)


async def open_dashboard(slug: str, sessionid: str) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    communicator = dashboard_socket(slug, sessionid)
    connected, _ = await communicator.connect(TIMEOUT)
    assert connected
    snapshot = await communicator.receive_json_from(TIMEOUT)
    assert snapshot["type"] == "snapshot"
    return communicator, snapshot


async def receive_type(communicator: WebsocketCommunicator, *types: str) -> dict[str, Any]:
    """The next event of one of `types`, skipping others."""
    while True:
        event = await communicator.receive_json_from(TIMEOUT)
        if event["type"] in types:
            return event


@pytest.fixture
async def moderation(db, worker_inbox):
    """A stream, two moderators' open dashboards, and a pending question."""
    stream, key, _ = await database_sync_to_async(make_stream_with_token)()
    question = await Question.objects.acreate(stream=stream, text="What is pi?", viewer_name="ann", source="ask")

    def sessions():
        return [session_cookie(make_user(f"mod{i}", moderates=stream))[1] for i in range(2)]

    one_id, two_id = await database_sync_to_async(sessions)()
    (one, snapshot), (two, _) = await open_dashboard(stream.slug, one_id), await open_dashboard(stream.slug, two_id)
    yield {"stream": stream, "key": key, "question": question, "one": one, "two": two, "snapshot": snapshot}
    await one.disconnect()
    await two.disconnect()


pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_socket_refuses_anonymous_and_non_moderators_before_accepting(db):
    stream, _, _ = await database_sync_to_async(make_stream_with_token)()
    other, _, _ = await database_sync_to_async(make_stream_with_token)(name="Other")

    def outsider():
        return session_cookie(make_user("outsider", moderates=other))[1]

    for sessionid in (None, "not-a-session", await database_sync_to_async(outsider)()):
        communicator = dashboard_socket(stream.slug, sessionid)
        connected, _ = await communicator.connect(TIMEOUT)
        assert not connected
        await communicator.disconnect()


async def test_the_socket_refuses_a_foreign_or_missing_origin(db):
    stream, _, _ = await database_sync_to_async(make_stream_with_token)()
    sessionid = await database_sync_to_async(lambda: session_cookie(make_user("boss", staff=True))[1])()
    for origin in (b"http://evil.example", None):
        communicator = dashboard_socket(stream.slug, sessionid, origin)
        connected, _ = await communicator.connect(TIMEOUT)
        assert not connected
        await communicator.disconnect()


async def test_staff_get_a_snapshot_of_queue_history_and_current(db, worker_inbox):
    stream, _, _ = await database_sync_to_async(make_stream_with_token)()
    await Question.objects.acreate(stream=stream, text="Queued?", source="ask", status="approved")
    await database_sync_to_async(make_answer)(stream, [("Pi is 3.14.", b"RIFF", 1.0, "")])
    sessionid = await database_sync_to_async(lambda: session_cookie(make_user("boss", staff=True))[1])()
    communicator, snapshot = await open_dashboard(stream.slug, sessionid)
    await communicator.disconnect()
    assert [q["text"] for q in snapshot["queue"]] == ["Queued?"]
    assert [q["answer"]["text"] for q in snapshot["history"]] == ["Pi is 3.14."]
    assert snapshot["history"][0]["answer"]["chunks"][0]["duration"] == 1.0
    assert snapshot["current"] == []


async def test_approving_is_seen_by_both_dashboards_and_wakes_a_worker(moderation, worker_inbox):
    one, two, question = moderation["one"], moderation["two"], moderation["question"]
    assert [q["id"] for q in moderation["snapshot"]["queue"]] == [question.pk]
    await one.send_json_to({"action": "approve", "id": question.pk})
    for dashboard in (one, two):
        event = await receive_type(dashboard, events.QUESTION_UPDATED)
        assert (event["question"]["id"], event["question"]["status"]) == (question.pk, "approved")
    assert await worker_inbox.areceive() == {"type": events.STREAM_NEXT, "stream_id": moderation["stream"].pk}


async def test_edit_priority_prompt_voice_and_reject_are_broadcast(moderation):
    one, two, question = moderation["one"], moderation["two"], moderation["question"]
    prompt = await Prompt.objects.acreate(name="Pirate", text="Arr.")
    voice = await VoicePreset.objects.acreate(name="Nova", voice="nova")
    steps = [
        ({"action": "edit", "id": question.pk, "text": "What is pi, roughly?"}, "text", "What is pi, roughly?"),
        ({"action": "priority", "id": question.pk, "priority": 5}, "priority", 5),
        ({"action": "prompt", "id": question.pk, "prompt_id": prompt.pk}, "prompt_id", prompt.pk),
        ({"action": "voice", "id": question.pk, "voice_id": voice.pk}, "voice_id", voice.pk),
        ({"action": "reject", "id": question.pk}, "status", "rejected"),
    ]
    for request, field, value in steps:
        await one.send_json_to(request)
        for dashboard in (one, two):
            assert (await receive_type(dashboard, events.QUESTION_UPDATED))["question"][field] == value
    stored = await Question.objects.aget(pk=question.pk)
    assert (stored.text, stored.priority, stored.prompt_id, stored.voice_id, stored.status) == (
        "What is pi, roughly?", 5, prompt.pk, voice.pk, "rejected",
    )  # fmt: skip


async def test_moving_a_question_reorders_the_queue(moderation):
    one, stream, first = moderation["one"], moderation["stream"], moderation["question"]
    second = await Question.objects.acreate(stream=stream, text="Second?", source="ask", position=first.position + 10)
    third = await Question.objects.acreate(stream=stream, text="Third?", source="ask", position=first.position + 20)
    await one.send_json_to({"action": "move", "id": third.pk, "before": first.pk})
    await receive_type(one, events.QUESTION_UPDATED)
    await one.send_json_to({"action": "move", "id": first.pk, "before": None})
    await receive_type(one, events.QUESTION_UPDATED)
    order = [q.pk async for q in Question.objects.filter(stream=stream).order_by("-priority", "position", "created_at")]
    assert order == [third.pk, second.pk, first.pk]


async def test_bad_requests_get_an_error_and_change_nothing(moderation):
    one, question = moderation["one"], moderation["question"]
    other, _, _ = await database_sync_to_async(make_stream_with_token)(name="Other")
    foreign = await Question.objects.acreate(stream=other, text="Elsewhere?", source="ask")
    cases = [
        ({"action": "explode"}, "unknown_action"),
        ({"nothing": 1}, "invalid_message"),
        ({"action": "approve", "id": foreign.pk}, "not_found"),  # another stream's question
        ({"action": "approve", "id": "x"}, "not_found"),
        ({"action": "edit", "id": question.pk, "text": "  "}, "empty"),
        ({"action": "priority", "id": question.pk, "priority": "high"}, "invalid_priority"),
        ({"action": "prompt", "id": question.pk, "prompt_id": 999}, "unknown_prompt"),
        ({"action": "replay", "answer_id": 999}, "not_found"),
    ]
    for request, code in cases:
        await one.send_json_to(request)
        error = await receive_type(one, "error")
        assert error["code"] == code, request
    assert (await Question.objects.aget(pk=foreign.pk)).status == "pending"
    assert (await Question.objects.aget(pk=question.pk)).text == "What is pi?"


async def test_search_finds_questions_by_text_viewer_or_answer(moderation):
    one, stream = moderation["one"], moderation["stream"]
    await database_sync_to_async(make_answer)(stream, [("Tau is two pi.", b"a", 1.0, "")])
    await one.send_json_to({"action": "search", "query": "TAU"})
    results = await receive_type(one, "search.results")
    assert [r["answer"]["text"] for r in results["results"]] == ["Tau is two pi."]
    await one.send_json_to({"action": "search", "query": "ann"})
    assert len((await receive_type(one, "search.results"))["results"]) == 2


async def test_logging_out_closes_that_users_dashboards(db, worker_inbox):
    stream, _, _ = await database_sync_to_async(make_stream_with_token)()
    client, sessionid = await database_sync_to_async(lambda: session_cookie(make_user("boss", staff=True)))()
    communicator, _ = await open_dashboard(stream.slug, sessionid)
    await database_sync_to_async(client.logout)()
    closed = await communicator.receive_output(TIMEOUT)
    assert closed == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()


async def test_the_answer_is_shown_chunk_by_chunk_and_can_be_stopped(db, embedded_worker, fake_openai):
    fake_openai.script.token_delay = 0.15
    stream, _, _ = await database_sync_to_async(make_stream_with_token)()
    question = await Question.objects.acreate(stream=stream, text="Long one?", source="ask")
    sessionid = await database_sync_to_async(lambda: session_cookie(make_user("boss", staff=True))[1])()
    communicator, _ = await open_dashboard(stream.slug, sessionid)
    await communicator.send_json_to({"action": "approve", "id": question.pk})
    started = await receive_type(communicator, events.STARTED)
    assert started["question_id"] == question.pk
    chunk = await receive_type(communicator, events.CHUNK)
    assert chunk["seq"] == 0 and chunk["answer_id"] == started["answer_id"]
    assert chunk["at"] >= 0  # when, in the answer, the chunk started (shown beside it)
    await communicator.send_json_to({"action": "skip", "id": question.pk})
    ended = await receive_type(communicator, events.DONE, events.FAILED)
    assert (ended["type"], ended["reason"]) == (events.FAILED, "cancelled")
    updated = await receive_type(communicator, events.QUESTION_UPDATED)
    assert updated["question"]["status"] == "skipped"
    await communicator.disconnect()


async def test_a_whole_answer_reaches_the_dashboard_with_timings(db, embedded_worker, fake_openai):
    stream, _, _ = await database_sync_to_async(make_stream_with_token)()
    question = await Question.objects.acreate(stream=stream, text="What is pi?", source="ask")
    sessionid = await database_sync_to_async(lambda: session_cookie(make_user("boss", staff=True))[1])()
    communicator, _ = await open_dashboard(stream.slug, sessionid)
    await communicator.send_json_to({"action": "approve", "id": question.pk})
    seen = []
    while not seen or seen[-1]["type"] != events.DONE:
        seen.append(await receive_type(communicator, events.CHUNK, events.DONE, events.AUDIO))
    chunks = [e for e in seen if e["type"] == events.CHUNK]
    assert [c["seq"] for c in chunks] == list(range(len(chunks))) and chunks
    assert not [e for e in seen if e["type"] == events.AUDIO]  # dashboards get no audio
    assert seen[-1]["timings"]["total"] > 0
    row = (await receive_type(communicator, events.QUESTION_UPDATED))["question"]
    assert row["status"] == "answered" and [c["text"] for c in row["answer"]["chunks"]] == [c["text"] for c in chunks]
    await communicator.disconnect()


async def test_a_queued_question_can_be_skipped(moderation):
    one, two, question = moderation["one"], moderation["two"], moderation["question"]
    await one.send_json_to({"action": "skip", "id": question.pk})
    assert (await receive_type(two, events.QUESTION_UPDATED))["question"]["status"] == "skipped"


async def test_answer_again_from_the_history(moderation, worker_inbox):
    one, stream = moderation["one"], moderation["stream"]
    answer = await database_sync_to_async(make_answer)(stream, [("Pi.", b"a", 1.0, "")])
    await one.send_json_to({"action": "again", "id": answer.question_id})
    copy = (await receive_type(one, events.QUESTION_UPDATED))["question"]
    assert copy["id"] != answer.question_id and copy["status"] == "approved" and copy["source"] == "dashboard"
    assert (await worker_inbox.areceive())["type"] == events.STREAM_NEXT
