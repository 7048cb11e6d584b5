"""Faults seen by a listener of `/live/answer`: each ends the answer with an error and `##END##`
within the configured timeouts, keeps what was said, and leaves the connection usable."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import OperationalError

from answers import services
from answers.models import Answer, Question
from answers.pipeline.llm import LLMTimeouts
from liveqa.asgi import application
from tests.channels_helpers import TIMEOUT, make_stream, receive_events_until, receive_until_end, settled
from tests.fakes.openai_server import fake_audio, split_tokens

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "First sentence is here. Second sentence follows it. Third one closes the answer."


@pytest.fixture
async def open_listener(make_pipeline, monkeypatch, fake_openai):
    from answers import dispatch, providers

    fake_openai.script.tokens = split_tokens(TEXT)
    sockets = []

    async def open_socket(**pipeline_options):
        built = make_pipeline(**pipeline_options)
        monkeypatch.setattr(providers, "pipeline", lambda: built)
        _, key = await database_sync_to_async(make_stream)()
        communicator = WebsocketCommunicator(application, f"/live/answer?key={key}")
        assert (await communicator.connect(TIMEOUT))[0]
        sockets.append(communicator)
        return communicator

    yield open_socket
    for communicator in sockets:
        await communicator.disconnect()
    await dispatch.stop_embedded_worker()


FAST = LLMTimeouts(connect=1, first_token=0.3, idle=0.3)


@pytest.mark.parametrize(
    ("script", "reason", "partial"),
    [
        ({"fail_status": 429, "fail_first": 99}, "rate_limited", ""),
        ({"fail_status": 500, "fail_first": 99}, "server_error", ""),
        ({"first_token_delay": 2.0}, "first_token_timeout", ""),
        ({"stall_after": 5}, "idle_timeout", "First sentence is here. Second"),
        ({"break_after": 5}, "stream_broken", "First sentence is here. Second"),
    ],
)
async def test_llm_faults_end_the_answer_with_an_error_and_end(open_listener, fake_openai, script, reason, partial):
    for name, value in script.items():
        setattr(fake_openai.script, name, value)
    listener = await open_listener(timeouts=FAST, retries=1)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Go?"}))
    frames = await receive_until_end(listener)
    errors = [f for f in frames if isinstance(f, str) and f.startswith("ERROR")]
    assert errors == [f"ERROR {reason}: The answer could not be completed."]

    await settled()
    answer = await Answer.objects.select_related("question").aget()
    assert answer.status == Answer.Status.FAILED and answer.error == reason
    assert answer.text == partial  # the partial text is kept
    assert answer.question.status == Question.Status.FAILED
    if partial:  # what had been generated was still spoken
        assert [f for f in frames if isinstance(f, bytes)]

    await listener.send_to(text_data=json.dumps({"type": "ping"}))
    assert await listener.receive_from(TIMEOUT) == "pong"


async def test_one_failed_chunk_is_skipped_and_reported_and_the_rest_plays(open_listener, fake_openai):
    fake_openai.script.tts_fail_on = ["Second sentence"]
    listener = await open_listener()
    await listener.send_to(text_data=json.dumps({"type": "hello", "protocol": 2}))
    await listener.receive_from(TIMEOUT)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Go?"}))
    frames = await receive_events_until(listener, "answer.done", "answer.failed")
    events = [f for f in frames if isinstance(f, dict)]
    failed = [e for e in events if e["type"] == "answer.chunk_failed"]
    assert len(failed) == 1 and "Second sentence" in failed[0]["text"] and failed[0]["error"]
    audio = [f for f in frames if isinstance(f, bytes)]
    assert any(b"First sentence" in a for a in audio) and any(b"Third one" in a for a in audio)
    assert events[-1]["type"] == "answer.done"

    await settled()
    answer = await Answer.objects.aget()
    chunk = await answer.chunks.aget(seq=failed[0]["seq"])
    assert chunk.error and not chunk.audio  # its failure is recorded


async def test_a_chunk_whose_speech_breaks_midway_is_not_glued_to_the_next_in_the_original_protocol(
    open_listener, fake_openai
):
    """Protocol 1 sends one frame per chunk: the broken chunk's first piece is dropped, and every frame
    is exactly one whole chunk's audio."""
    fake_openai.script.tts_pieces = 3
    fake_openai.script.tts_break_on = ["Second sentence"]  # its speech breaks after the first piece
    listener = await open_listener()
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Go?"}))
    frames = await receive_until_end(listener)
    audio = [f for f in frames if isinstance(f, bytes)]
    assert audio == [fake_audio("First sentence is here."), fake_audio("Third one closes the answer.")]
    assert [f for f in frames if isinstance(f, str) and f.startswith("ERROR")] == []

    await settled()
    chunk = await (await Answer.objects.aget()).chunks.aget(seq=1)
    assert chunk.error  # its failure is recorded


async def test_database_unavailable_gives_a_clear_error_and_keeps_the_socket(open_listener, monkeypatch, fake_openai):
    """The question was handed to a worker while it was being stored: that worker finds nothing to claim,
    and closes the LLM request it had started."""
    import asyncio

    from answers import workers

    monkeypatch.setattr(workers, "STORE_WAIT", 0.3)
    fake_openai.script.first_token_delay = 1.0
    listener = await open_listener()

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "create_live_questions", down)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Anyone?"}))
    assert (await listener.receive_from(TIMEOUT)).startswith("ERROR unavailable:")
    await listener.send_to(text_data=json.dumps({"type": "ping"}))
    assert await listener.receive_from(TIMEOUT) == "pong"
    async with asyncio.timeout(TIMEOUT):
        while fake_openai.open_streams or not fake_openai.chat_requests:
            await asyncio.sleep(0.01)
    assert fake_openai.closed_early == ["chat"] and fake_openai.speech_requests == []
    assert await listener.receive_nothing(0.2)


@pytest.fixture
def store_began(monkeypatch) -> list[float]:
    """When each store of questions began (time.monotonic())."""
    import time

    store = services.create_live_questions
    began: list[float] = []

    def create_live_questions(*args, **kwargs):
        began.append(time.monotonic())
        return store(*args, **kwargs)

    monkeypatch.setattr(services, "create_live_questions", create_live_questions)
    return began


async def test_a_question_no_worker_can_be_handed_is_stored_failed_and_the_listener_told(
    open_listener, monkeypatch, fake_openai
):
    from answers import dispatch

    async def layer_down(*messages):
        raise ConnectionError("channel layer unreachable")

    listener = await open_listener()
    monkeypatch.setattr(dispatch, "to_workers", layer_down)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Anybody there?"}))
    assert (await listener.receive_from(TIMEOUT)).startswith("ERROR unavailable: No answer worker")
    assert await listener.receive_from(TIMEOUT) == "##END##"
    question = await Question.objects.aget()
    assert (question.text, question.status) == ("Anybody there?", Question.Status.FAILED)
    assert fake_openai.chat_requests == []


async def test_a_question_is_stored_while_a_hanging_channel_layer_holds_its_hand_over(
    open_listener, monkeypatch, fake_openai, store_began
):
    import asyncio
    import time

    from answers import dispatch

    async def layer_hangs(*messages):
        await asyncio.sleep(1.0)
        raise ConnectionError("channel layer timed out")

    listener = await open_listener()
    monkeypatch.setattr(dispatch, "to_workers", layer_hangs)
    sent = time.monotonic()
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Still there?"}))
    assert (await listener.receive_from(TIMEOUT)).startswith("ERROR unavailable: No answer worker")
    assert store_began[0] - sent < 0.5  # stored without waiting for the hand-over to give up
    assert (await Question.objects.aget()).status == Question.Status.FAILED


async def test_a_question_is_handed_to_a_worker_before_the_database_thread_stores_it(
    open_listener, monkeypatch, fake_openai, store_began
):
    """The store's Python on the database thread would hold up the hand-over's round trips to Redis."""
    import time

    from answers import dispatch

    to_workers = dispatch.to_workers
    handed_over: list[float] = []

    async def hand_over(*messages):
        await to_workers(*messages)
        handed_over.append(time.monotonic())

    listener = await open_listener()
    monkeypatch.setattr(dispatch, "to_workers", hand_over)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "In which order?"}))
    assert (await receive_until_end(listener))[-1] == "##END##"
    assert handed_over[0] <= store_began[0]


async def test_disconnect_mid_answer_leaves_no_task_and_no_traceback(open_listener, fake_openai, caplog):
    import asyncio

    fake_openai.script.token_delay = 0.1
    listener = await open_listener()
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Go?"}))
    await listener.receive_output(TIMEOUT)  # first audio
    with caplog.at_level(logging.WARNING):
        await listener.disconnect()
        async with asyncio.timeout(2):
            while (
                fake_openai.open_streams
                or (await Question.objects.aget()).status == "answering"
                or any(task.get_name().startswith("answer-slot") for task in asyncio.all_tasks())
            ):
                await asyncio.sleep(0.01)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    names = {task.get_name() for task in asyncio.all_tasks()}
    # Only the worker's own long-lived tasks are left: its answer, pipeline and speech tasks have ended.
    assert {n for n in names if n.startswith("answer-")} <= {
        "answer-intake",
        "answer-control",
        "answer-heartbeat",
        "answer-keep-warm",
    }


def test_a_question_is_claimed_by_one_worker_only(db):
    stream, _ = make_stream()
    question = services.create_question(stream, "Once?", source=Question.Source.API, approved=True)
    assert services.claim_question(question.pk, "worker-a") is not None
    assert services.claim_question(question.pk, "worker-b") is None
    question.refresh_from_db()
    assert (question.status, question.worker, question.attempts) == ("answering", "worker-a", 1)


@pytest.mark.db_matters
def test_questions_claimed_together_are_each_claimed_once(db):
    from answers.pipeline.tts import Voice

    stream, _ = make_stream()
    ask = [services.create_question(stream, f"Q{i}?", source=Question.Source.API, approved=True) for i in range(4)]
    pending = services.create_question(stream, "Not yet?", source=Question.Source.API, approved=False)
    assert services.claim_question(ask[3].pk, "worker-b") is not None
    voice = Voice(engine="openai", name="alloy")
    ticket = uuid.uuid4()
    [(live, _)] = services.create_live_questions(
        [services.LiveAsk(stream, "By ticket?", prompt_override="Be brief.", voice_override={"speed": 1.5},
                          ticket=ticket)], voice
    )  # fmt: skip

    begun = services.begin_answers(
        [ask[0].pk, ask[1].pk, ask[0].pk, ask[3].pk, pending.pk, ask[2].pk, ticket.hex, uuid.uuid4().hex],
        "worker-a", voice, "model-x",
    )  # fmt: skip

    assert [b is not None for b in begun] == [True, True, False, False, False, True, True, True]
    assert begun[-1] is services.NOT_STORED  # handed over, not stored yet: claimed again later
    (first, first_chosen), (second, _), _, (by_ticket, ticket_chosen) = begun[0], begun[1], begun[5], begun[6]
    assert first.voice["name"] == "alloy" and second.model == "model-x" and first_chosen.voice == voice
    assert ticket_chosen == services.AnswerSettings("Be brief.", voice.replace(speed=1.5))
    assert by_ticket.question_id == live.pk
    assert by_ticket.prompt_text == "Be brief." and by_ticket.voice["speed"] == 1.5
    answers = {a.question_id: a for a in Answer.objects.all()}
    assert set(answers) == {ask[0].pk, ask[1].pk, ask[2].pk, live.pk}
    assert {b[0].pk for b in begun if isinstance(b, tuple)} == {a.pk for a in answers.values()}
    workers = dict(Question.objects.values_list("pk", "worker"))
    assert [workers[q.pk] for q in ask] == ["worker-a", "worker-a", "worker-a", "worker-b"]
    assert Question.objects.get(pk=pending.pk).status == Question.Status.PENDING
    # Claimed already: another worker's batch gets none of them.
    assert services.begin_answers([q.pk for q in ask], "worker-c", voice, "m") == [None] * 4


@pytest.mark.db_matters
def test_answers_that_end_together_are_recorded_together(db):
    from answers.models import AnswerChunk
    from answers.pipeline.tts import Voice

    stream, _ = make_stream()
    ask = [services.create_question(stream, f"Q{i}?", source=Question.Source.API, approved=True) for i in range(3)]
    voice = Voice(engine="openai", name="alloy")
    (done, _), (failed, _), (skipped, _) = services.begin_answers([q.pk for q in ask], "w", voice, "m")
    Question.objects.filter(pk=ask[2].pk).update(status=Question.Status.SKIPPED)  # a moderator, meanwhile
    chunk = {"seq": 0, "caption": "Hi.", "speech": "Hi.", "audio": b"\xff\xfb", "audio_format": "mp3"}

    second = {**chunk, "seq": 1, "caption": "There."}
    services.finish_answers([
        services.AnswerEnd(done.pk, "Hi. There.", {"total": 1.5}, chunks=[chunk, second]),
        services.AnswerEnd(failed.pk, "Hi.", {}, error="tts_failed", chunks=[chunk]),
        services.AnswerEnd(skipped.pk, "", {}, error="cancelled"),
    ])  # fmt: skip

    answers = Answer.objects.in_bulk([done.pk, failed.pk, skipped.pk])
    assert (answers[done.pk].status, answers[done.pk].text, answers[done.pk].timings) == ("done", "Hi. There.",
                                                                                         {"total": 1.5})  # fmt: skip
    assert (answers[failed.pk].status, answers[failed.pk].error) == ("failed", "tts_failed")
    assert answers[done.pk].finished_at is not None
    chunks = list(AnswerChunk.objects.order_by("answer_id", "seq").values_list("answer_id", "seq", "caption"))
    assert chunks == [(done.pk, 0, "Hi."), (done.pk, 1, "There."), (failed.pk, 0, "Hi.")]
    statuses = dict(Question.objects.values_list("pk", "status"))
    assert [statuses[q.pk] for q in ask] == ["answered", "failed", "skipped"]


def test_a_stale_answer_is_requeued_once_then_failed(db):
    from datetime import timedelta

    from django.utils import timezone

    stream, _ = make_stream()
    question = services.create_question(stream, "Lost?", source=Question.Source.API, approved=True)
    for expected in ("approved", "failed"):
        assert services.claim_next_for_stream(stream.pk, "worker-a") is not None
        Question.objects.filter(pk=question.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
        assert services.reap_stale_answers(stale_after=30) == [stream.pk]
        question.refresh_from_db()
        assert question.status == expected


async def test_a_slow_database_does_not_delay_a_ping(open_listener, monkeypatch):
    import asyncio
    import time

    listener = await open_listener()
    stored = services.create_question

    def slow_create(*args, **kwargs):
        time.sleep(1.0)  # a database busy with other writers
        return stored(*args, **kwargs)

    monkeypatch.setattr(services, "create_question", slow_create)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Slow?"}))
    await listener.send_to(text_data=json.dumps({"type": "ping"}))
    started = time.monotonic()
    assert await listener.receive_from(TIMEOUT) == "pong"
    assert time.monotonic() - started < 0.5  # not after the second the database took
    frames = await receive_until_end(listener)
    assert [f for f in frames if isinstance(f, bytes)]
    await asyncio.sleep(0)


async def test_the_llm_is_asked_while_the_question_is_claimed_and_nothing_is_sent_before_the_claim(
    open_listener, monkeypatch, fake_openai
):
    import time

    fake_openai.script.first_token_delay = 0.2
    listener = await open_listener()
    claim = services.begin_answers
    claimed_at = []

    def slow_claim(*args, **kwargs):
        time.sleep(0.5)  # a database busy with other writers
        begun = claim(*args, **kwargs)
        claimed_at.append(time.monotonic())
        return begun

    monkeypatch.setattr(services, "begin_answers", slow_claim)
    sent = time.monotonic()
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Slow claim?"}))
    first = await listener.receive_output(TIMEOUT)
    first_at = time.monotonic()
    frames = [first.get("bytes") or first.get("text"), *await receive_until_end(listener)]

    [chat] = fake_openai.log["chat"]
    assert chat["start"] - sent < 0.3  # the LLM was asked before the claim's half second was over
    assert first_at >= claimed_at[0]  # ... but the listener heard nothing before the claim succeeded
    assert [f for f in frames if isinstance(f, bytes)] and frames[-1] == "##END##"
    await settled()
    answer = await Answer.objects.select_related("question").aget()
    assert (answer.text, answer.question.status) == (TEXT, Question.Status.ANSWERED)


async def test_a_question_someone_else_claimed_closes_the_llm_request_it_started(
    open_listener, monkeypatch, fake_openai
):
    import asyncio
    import time

    fake_openai.script.first_token_delay = 1.0  # the claim fails while the LLM is still thinking
    listener = await open_listener()
    asked = asyncio.Event()

    def taken(claims, *args, **kwargs):
        time.sleep(0.3)  # long enough for the LLM request to be under way
        asked.set()
        return [None for _ in claims]  # another worker got there first

    monkeypatch.setattr(services, "begin_answers", taken)
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Taken?"}))
    async with asyncio.timeout(TIMEOUT):
        await asked.wait()
        while fake_openai.open_streams or not fake_openai.chat_requests:
            await asyncio.sleep(0.01)
    assert fake_openai.closed_early == ["chat"]
    assert fake_openai.speech_requests == []
    assert await listener.receive_nothing(0.3)


@pytest.fixture
def slow_store(monkeypatch):
    """Questions take `slow_store.seconds` to be stored (a database busy with other writers)."""
    import time

    store = services.create_live_questions

    def slow(*args, **kwargs):
        time.sleep(slow.seconds)
        stored = store(*args, **kwargs)
        slow.stored_at = time.monotonic()
        return stored

    slow.seconds = 0.3
    monkeypatch.setattr(services, "create_live_questions", slow)
    return slow


async def test_a_question_is_handed_over_while_it_is_stored_and_claimed_by_its_ticket_once_it_is(
    open_listener, slow_store, fake_openai
):
    import time

    fake_openai.script.first_token_delay = 0.2
    listener = await open_listener()
    sent = time.monotonic()
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Stored slowly?"}))
    frames = await receive_until_end(listener)

    [chat] = fake_openai.log["chat"]
    assert chat["start"] - sent < 0.25 < slow_store.stored_at - sent  # the LLM was asked before it was stored
    assert [f for f in frames if isinstance(f, bytes)] and frames[-1] == "##END##"
    await settled()
    answer = await Answer.objects.select_related("question").aget()
    assert answer.question.ticket is not None and answer.question.status == Question.Status.ANSWERED
    assert answer.text == TEXT


async def test_a_question_cancelled_before_it_is_stored_is_skipped_and_never_spoken(
    open_listener, slow_store, fake_openai
):
    import asyncio

    fake_openai.script.first_token_delay = 0.5
    listener = await open_listener()
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Never mind?"}))
    await asyncio.sleep(0.1)  # handed over, being stored
    await listener.send_to(text_data=json.dumps({"type": "cancel"}))
    assert await receive_until_end(listener) == ["##END##"]
    async with asyncio.timeout(TIMEOUT):
        while fake_openai.open_streams or not fake_openai.chat_requests:
            await asyncio.sleep(0.01)
    assert fake_openai.closed_early == ["chat"] and fake_openai.speech_requests == []
    assert (await Question.objects.aget()).status == Question.Status.SKIPPED
    # Withdrawn before a worker claimed it, or stopped by the worker that just had (answer_started).
    assert [(a.status, a.error) async for a in Answer.objects.all()] in ([], [(Answer.Status.FAILED, "cancelled")])


async def test_a_stream_default_changed_since_the_listener_connected_is_used_and_learned(open_listener, fake_openai):
    """The connection resolves the prompt with the defaults it loaded; the worker finds them changed when it
    claims the question and starts again with the database's, and the connection loads them anew."""
    from answers.models import Prompt, Stream

    listener = await open_listener()
    stream = await Stream.objects.order_by("pk").alast()
    stream.default_prompt = await Prompt.objects.acreate(name="Changed", text="Answer like a pirate.")
    await stream.asave()

    for question in ("After the change?", "And again?"):
        await listener.send_to(text_data=json.dumps({"type": "question", "question": question}))
        assert (await receive_until_end(listener))[-1] == "##END##"

    def system_prompts(question: str) -> list[str]:
        return [
            next(m["content"] for m in body["messages"] if m["role"] == "system")
            for body in fake_openai.chat_requests
            if body["messages"][-1]["content"] == question
        ]

    assert system_prompts("After the change?")[-1] == "Answer like a pirate."  # started again
    assert system_prompts("And again?") == ["Answer like a pirate."]  # resolved right the first time
    await settled()
    assert {a.prompt_text async for a in Answer.objects.all()} == {"Answer like a pirate."}


async def test_an_answer_that_starts_before_its_connection_learns_the_question_id_is_heard_whole(
    open_listener, monkeypatch, fake_openai
):
    """The question is stored, and a worker claims it and starts answering, before the connection that
    handed it over has its id: the answer's messages wait for that moment instead of being dropped."""
    import asyncio

    from answers import consumers

    submit = consumers.live_questions.submit

    async def slow_to_return(item):
        stored = await submit(item)
        await asyncio.sleep(0.5)  # the connection's task is slow to resume; the worker is not
        return stored

    monkeypatch.setattr(consumers.live_questions, "submit", slow_to_return)
    fake_openai.script.first_token_delay = 0.0
    listener = await open_listener()
    await listener.send_to(text_data=json.dumps({"type": "question", "question": "Quick?"}))
    frames = await receive_until_end(listener)
    texts = [request["body"]["input"] for request in fake_openai.speech_requests]
    assert fake_openai.log["speech"][0]["start"] < fake_openai.log["chat"][0]["start"] + 0.5  # spoken meanwhile
    assert [f for f in frames if isinstance(f, bytes)] == [fake_audio(t) for t in texts]
    assert frames[-1] == "##END##"
