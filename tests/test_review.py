"""Answers held for review: on streams that ask for it, a moderator reads each answer's text, then has it
spoken (as written or edited) or discards it; the stream's queue waits meanwhile."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from answers import events, services
from answers.models import Answer, Question
from answers.pipeline.llm import FixedTextLLM, LLMRequest
from liveqa.asgi import application
from tests.channels_helpers import TIMEOUT, make_stream, receive_until_end, settled
from tests.fakes.openai_server import DEFAULT_ANSWER, fake_audio
from tests.moderation_helpers import make_stream_with_token, make_user, session_cookie
from tests.test_dashboard import open_dashboard, receive_type
from tests.test_overlay import frames_until

pytestmark = pytest.mark.django_db(transaction=True)

EDITED = "Pi is about three point one four. That is all."


async def open_stream(hold: bool) -> dict[str, Any]:
    """A stream with its overlay and a moderator's dashboard open."""
    stream, key, _ = await database_sync_to_async(make_stream_with_token)(hold_answers_for_review=hold)
    overlay = WebsocketCommunicator(application, f"/ws/overlay/{stream.slug}/?key={key}")
    assert (await overlay.connect(TIMEOUT))[0]
    staff = await database_sync_to_async(lambda: session_cookie(make_user("boss", staff=True))[1])()
    dashboard, _ = await open_dashboard(stream.slug, staff)
    return {"stream": stream, "overlay": overlay, "dashboard": dashboard}


@pytest.fixture
async def review(embedded_worker, fake_openai):
    """A stream that holds answers for review."""
    opened = await open_stream(hold=True)
    yield opened
    await opened["dashboard"].disconnect()
    await opened["overlay"].disconnect()


@pytest.fixture
async def no_review(embedded_worker, fake_openai):
    opened = await open_stream(hold=False)
    yield opened
    await opened["dashboard"].disconnect()
    await opened["overlay"].disconnect()


async def ask(stream, text: str = "What is pi?") -> Question:
    return await Question.objects.acreate(stream=stream, text=text, viewer_name="ann", source="ask")


async def approve_until_held(dashboard: WebsocketCommunicator, question: Question) -> dict[str, Any]:
    await dashboard.send_json_to({"action": "approve", "id": question.pk})
    return await receive_type(dashboard, events.HELD)


async def row_of(dashboard: WebsocketCommunicator, question_id: int, status: str) -> dict[str, Any]:
    """The question's row once the dashboard shows it with `status` (within the receive timeout)."""
    while True:
        row = (await receive_type(dashboard, events.QUESTION_UPDATED))["question"]
        if (row["id"], row["status"]) == (question_id, status):
            return row


async def test_a_held_answer_is_written_but_not_spoken(review, fake_openai):
    dashboard, overlay = review["dashboard"], review["overlay"]
    question = await ask(review["stream"])
    held = await approve_until_held(dashboard, question)

    assert (held["question_id"], held["text"]) == (question.pk, DEFAULT_ANSWER)
    assert len(fake_openai.chat_requests) == 1 and fake_openai.speech_requests == []
    assert await overlay.receive_nothing(0.2)  # the overlay hears nothing of an unspoken answer
    row = await row_of(dashboard, question.pk, "held")
    assert (row["answer"]["id"], row["answer"]["status"]) == (held["answer_id"], "held")
    answer = await Answer.objects.aget(pk=held["answer_id"])
    assert (answer.status, answer.text, answer.model) == (Answer.Status.HELD, DEFAULT_ANSWER, "fake-model")
    assert answer.timings["generation"]["first_token"] is not None


async def test_an_edited_answer_is_spoken_as_edited_and_only_so(review, fake_openai):
    dashboard, overlay = review["dashboard"], review["overlay"]
    question = await ask(review["stream"])
    held = await approve_until_held(dashboard, question)
    await dashboard.send_json_to({"action": "speak", "answer_id": held["answer_id"], "text": f"  {EDITED} "})

    frames = await frames_until(overlay, events.DONE, events.FAILED)
    assert frames[0]["type"] == events.STARTED and frames[-1]["type"] == events.DONE
    chunks = [f["text"] for f in frames if isinstance(f, dict) and f["type"] == events.CHUNK]
    assert " ".join(chunks).split() == EDITED.split()
    assert [f for f in frames if isinstance(f, bytes)] == [fake_audio(text) for text in chunks]
    assert [r["body"]["input"] for r in fake_openai.speech_requests] == chunks  # nothing of the original
    assert len(fake_openai.chat_requests) == 1  # the text was not written again

    await settled()
    answer = await Answer.objects.aget(pk=held["answer_id"])
    assert (answer.status, answer.text) == (Answer.Status.DONE, EDITED)
    assert answer.timings["first_audio"] is not None and "generation" in answer.timings
    assert (await Question.objects.aget(pk=question.pk)).status == Question.Status.ANSWERED


async def test_speaking_unedited_uses_the_text_as_written(review, fake_openai):
    dashboard, overlay = review["dashboard"], review["overlay"]
    held = await approve_until_held(dashboard, await ask(review["stream"]))
    await dashboard.send_json_to({"action": "speak", "answer_id": held["answer_id"]})
    frames = await frames_until(overlay, events.DONE, events.FAILED)
    assert frames[-1]["type"] == events.DONE
    chunks = [f["text"] for f in frames if isinstance(f, dict) and f["type"] == events.CHUNK]
    assert " ".join(chunks).split() == DEFAULT_ANSWER.split()


async def test_the_queue_waits_for_the_review_and_a_discard_moves_it_on(review, fake_openai):
    dashboard, stream = review["dashboard"], review["stream"]
    first = await ask(stream, "First?")
    second = await ask(stream, "Second?")
    # The second is approved first, so it is held first; the first then waits behind it.
    held = await approve_until_held(dashboard, second)
    assert held["question_id"] == second.pk
    await dashboard.send_json_to({"action": "approve", "id": first.pk})
    await row_of(dashboard, first.pk, "approved")
    assert (await Question.objects.aget(pk=first.pk)).status == Question.Status.APPROVED

    await dashboard.send_json_to({"action": "discard", "answer_id": held["answer_id"]})
    nxt = await receive_type(dashboard, events.HELD)
    assert nxt["question_id"] == first.pk
    assert fake_openai.speech_requests == []
    discarded = await Answer.objects.select_related("question").aget(pk=held["answer_id"])
    assert (discarded.status, discarded.error) == (Answer.Status.FAILED, "discarded")
    assert discarded.question.status == Question.Status.SKIPPED


async def test_a_discarded_answer_cannot_be_spoken(review, fake_openai):
    dashboard = review["dashboard"]
    held = await approve_until_held(dashboard, await ask(review["stream"]))
    await dashboard.send_json_to({"action": "discard", "answer_id": held["answer_id"]})
    await row_of(dashboard, held["question_id"], "skipped")
    await dashboard.send_json_to({"action": "speak", "answer_id": held["answer_id"], "text": "Too late."})
    assert (await receive_type(dashboard, "error"))["code"] == "conflict"
    await dashboard.send_json_to({"action": "speak", "answer_id": held["answer_id"] + 1000})
    assert (await receive_type(dashboard, "error"))["code"] == "not_found"
    assert fake_openai.speech_requests == []


async def test_without_review_the_answer_is_spoken_at_once(no_review, fake_openai):
    dashboard, overlay = no_review["dashboard"], no_review["overlay"]
    await dashboard.send_json_to({"action": "approve", "id": (await ask(no_review["stream"])).pk})
    frames = await frames_until(overlay, events.DONE, events.FAILED)
    assert frames[-1]["type"] == events.DONE and fake_openai.speech_requests
    seen = []
    while not seen or seen[-1]["type"] != events.DONE:
        seen.append(await receive_type(dashboard, events.HELD, events.DONE))
    assert [e["type"] for e in seen] == [events.DONE]


async def test_live_answer_questions_are_never_held(embedded_worker, fake_openai):
    _, key = await database_sync_to_async(make_stream)(hold_answers_for_review=True)
    listener = WebsocketCommunicator(application, f"/live/answer?key={key}")
    assert (await listener.connect(TIMEOUT))[0]
    try:
        await listener.send_to(text_data=json.dumps({"type": "question", "question": "What is pi?"}))
        frames = await receive_until_end(listener)
    finally:
        await listener.disconnect()
    assert [f for f in frames if isinstance(f, bytes)] and fake_openai.speech_requests


def test_the_reaper_leaves_held_answers_alone(db):
    stream, _ = make_stream(hold_answers_for_review=True)
    question = Question.objects.create(stream=stream, text="Q?", source="ask", status=Question.Status.HELD)
    answer = Answer.objects.create(question=question, status=Answer.Status.HELD, text="A.")
    assert services.reap_stale_answers(0) == []
    question.refresh_from_db()
    answer.refresh_from_db()
    assert (question.status, answer.status) == (Question.Status.HELD, Answer.Status.HELD)


async def test_fixed_text_is_streamed_in_words_that_join_back_exactly():
    text = "  Pi is\nabout 3.14.  That's all "
    pieces = [piece async for piece in FixedTextLLM(text).stream(LLMRequest("ignored", ""))]
    assert "".join(pieces) == text and len(pieces) == 7
