"""Group commit: writes that arrive together share one trip to the database thread; a failure stays
with the item that caused it; /live/answer stores the questions of many connections in one batch."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from answers import consumers, services
from answers.group_commit import GroupCommit
from answers.models import Question
from answers.providers import default_voice
from liveqa.asgi import application
from tests.channels_helpers import TIMEOUT, make_stream, receive_until_end

# The writes run through database_sync_to_async, which checks the thread's database connection.
pytestmark = pytest.mark.django_db(transaction=True)


class Recorder:
    """A write_many that records its batches; the first batch waits until `release` is set."""

    def __init__(self, fail_on: object = None):
        self.batches: list[list[object]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[object]) -> list[str]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(TIMEOUT)
        if self.fail_on in items:
            raise ValueError(f"cannot write {self.fail_on}")
        return [f"stored {item}" for item in items]


async def wait_for_thread(event: threading.Event) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not event.is_set():
            await asyncio.sleep(0.005)


async def test_a_lone_write_goes_at_once_in_a_batch_of_its_own():
    recorder = Recorder()
    recorder.release.set()
    assert await asyncio.wait_for(GroupCommit(recorder).submit("a"), TIMEOUT) == "stored a"
    assert recorder.batches == [["a"]]


async def test_writes_submitted_during_a_write_are_written_together_each_getting_its_own_result():
    recorder = Recorder()
    writer = GroupCommit(recorder)
    first = asyncio.create_task(writer.submit("first"))
    await wait_for_thread(recorder.entered)
    rest = [asyncio.create_task(writer.submit(f"q{i}")) for i in range(10)]
    await asyncio.sleep(0.05)  # all ten queued behind the write in flight
    recorder.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, *rest), TIMEOUT)
    assert results == ["stored first", *(f"stored q{i}" for i in range(10))]
    assert recorder.batches == [["first"], [f"q{i}" for i in range(10)]]


async def test_one_failing_write_in_a_batch_fails_alone():
    recorder = Recorder(fail_on="bad")
    writer = GroupCommit(recorder)
    first = asyncio.create_task(writer.submit("first"))
    await wait_for_thread(recorder.entered)
    queued = [asyncio.create_task(writer.submit(item)) for item in ("ok1", "bad", "ok2")]
    await asyncio.sleep(0.05)
    recorder.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, *queued, return_exceptions=True), TIMEOUT)
    assert results[:2] == ["stored first", "stored ok1"]
    assert isinstance(results[2], ValueError) and "bad" in str(results[2])
    assert results[3] == "stored ok2"
    # The batch failed as a whole, then each item was written on its own.
    assert recorder.batches[1] == ["ok1", "bad", "ok2"]
    assert recorder.batches[2:] == [["ok1"], ["bad"], ["ok2"]]


async def test_a_writer_cancelled_mid_write_still_hands_the_others_their_results():
    recorder = Recorder()
    writer = GroupCommit(recorder)
    first = asyncio.create_task(writer.submit("first"))
    await wait_for_thread(recorder.entered)
    first.cancel()
    second = asyncio.create_task(writer.submit("second"))
    await asyncio.sleep(0.05)
    recorder.release.set()
    assert await asyncio.wait_for(second, TIMEOUT) == "stored second"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert recorder.batches == [["first"], ["second"]]  # the cancelled caller's item was written anyway


async def test_a_coroutine_write_many_is_awaited_with_what_queued_meanwhile():
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def send_many(items: list[int]) -> list[int]:
        batches.append(items)
        await gate.wait()
        return [item * 10 for item in items]

    writer = GroupCommit(send_many)
    tasks = [asyncio.create_task(writer.submit(i)) for i in range(8)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT) == [i * 10 for i in range(8)]
    assert batches == [[0], list(range(1, 8))]


@pytest.mark.db_matters
async def test_questions_stored_together_each_get_their_own_prompt_and_voice():
    stream, _ = await database_sync_to_async(make_stream)()
    asks = [
        services.LiveAsk(stream, "Plain?"),
        services.LiveAsk(stream, "With a prompt?", prompt_override="Answer in one word."),
        services.LiveAsk(stream, "With a voice?", voice_override={"voice": "nova", "speed": 1.5}),
    ]
    stored = await database_sync_to_async(services.create_live_questions)(asks, default_voice())
    questions = [question for question, _ in stored]
    assert [q.text for q in questions] == ["Plain?", "With a prompt?", "With a voice?"]
    assert {q.status for q in questions} == {Question.Status.APPROVED}
    assert {q.source for q in questions} == {Question.Source.LIVE}
    assert await database_sync_to_async(Question.objects.filter(pk__in=[q.pk for q in questions]).count)() == 3
    plain, prompted, voiced = (chosen for _, chosen in stored)
    assert prompted.prompt_text == "Answer in one word." != plain.prompt_text
    assert (voiced.voice.name, voiced.voice.speed) == ("nova", 1.5)
    assert (plain.voice.name, plain.voice.speed) == (default_voice().name, default_voice().speed)


@pytest.mark.db_matters
async def test_questions_sent_at_once_on_many_connections_are_stored_in_few_transactions(
    embedded_worker, fake_openai, monkeypatch
):
    batches: list[int] = []
    write_many = consumers.live_questions.write_many

    def counting(asks):
        batches.append(len(asks))
        return write_many(asks)

    monkeypatch.setattr(consumers.live_questions, "write_many", counting)
    fake_openai.script.tokens = ["Yes."]
    _, key = await database_sync_to_async(make_stream)()
    listeners = [WebsocketCommunicator(application, f"/live/answer?key={key}") for _ in range(8)]
    try:
        for listener in listeners:
            assert (await listener.connect(TIMEOUT))[0]
        for i, listener in enumerate(listeners):
            await listener.send_to(text_data=json.dumps({"type": "question", "question": f"Question {i}?"}))
        for listener in listeners:
            assert (await receive_until_end(listener))[-1] == consumers.END
    finally:
        for listener in listeners:
            await listener.disconnect()
    assert sum(batches) == 8
    assert len(batches) < 8  # at least some of them shared a transaction
    texts = await database_sync_to_async(lambda: sorted(Question.objects.values_list("text", flat=True)))()
    assert texts == sorted(f"Question {i}?" for i in range(8))


async def test_questions_handed_over_together_cross_the_layer_a_few_to_a_message(monkeypatch):
    from answers import dispatch, events

    sent: list[dict[str, object]] = []
    gate = asyncio.Event()

    async def to_workers(*messages: dict[str, object]) -> None:
        sent.extend(messages)
        await gate.wait()

    monkeypatch.setattr(dispatch, "to_workers", to_workers)
    asks = [asyncio.create_task(dispatch.ask(i, f"reply-{i}")) for i in range(20)]
    await asyncio.sleep(0.05)  # the first is on its way; the 19 others queue behind it
    gate.set()
    await asyncio.wait_for(asyncio.gather(*asks), TIMEOUT)
    handed = [events.work_items(message) for message in sent]
    assert [len(items) for items in handed] == [1, 8, 8, 3]
    assert [item["question_id"] for items in handed for item in items] == list(range(20))
    assert all(item["type"] == events.QUESTION for items in handed for item in items)
