"""The same conversation over the real Redis channel layer, with the worker as a separate party."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from answers import events
from answers.workers import AnswerWorker
from liveqa.asgi import application
from liveqa.settings import redis_channel_layers
from tests.channels_helpers import TIMEOUT, make_stream, receive_events_until, receive_until_end, settled
from tests.fakes.openai_server import fake_audio

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_layer(settings):
    settings.REDIS_URL = settings.REDIS_URL_TEST
    settings.LIVEQA_WORKER_CHANNEL = f"liveqa-answers-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = redis_channel_layers(settings.REDIS_URL_TEST, prefix=f"test-{uuid.uuid4().hex[:8]}")
    return get_channel_layer()


@pytest.fixture
async def redis_worker(redis_layer, make_pipeline):
    worker = AnswerWorker(make_pipeline(), channel_layer=redis_layer, concurrency=2)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), TIMEOUT)
    yield worker
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await redis_layer.flush()


async def kinds_until_the_end(layer, reply: str) -> list[str]:
    """The types of the messages an answer sends to `reply`, up to its done or failed."""
    kinds: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while not kinds or kinds[-1] not in (events.DONE, events.FAILED):
            kinds.append((await layer.receive(reply))["type"])
    return kinds


async def test_audio_messages_survive_msgpack_as_bytes_and_split_under_the_limit(redis_layer):
    channel = await redis_layer.new_channel()
    big = bytes(range(256)) * 2000  # 512 KB: more than one layer message
    for message in events.audio_messages(1, 0, big, "mp3", 24000, last=True):
        await redis_layer.send(channel, message)
    received = [await asyncio.wait_for(redis_layer.receive(channel), TIMEOUT) for _ in range(2)]
    assert all(isinstance(m["data"], bytes) and len(m["data"]) <= events.MAX_AUDIO_BYTES for m in received)
    assert b"".join(m["data"] for m in received) == big
    assert [m["last"] for m in received] == [False, True]


async def test_a_burst_of_messages_is_published_in_a_few_round_trips_each_senders_in_order(redis_layer, monkeypatch):
    from redis.asyncio.client import Pipeline

    round_trips = []
    execute = Pipeline.execute

    async def counted(self, *args, **kwargs):
        round_trips.append(len(self.command_stack))
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", counted)
    channel = await redis_layer.new_channel()
    group = f"group-{uuid.uuid4().hex[:8]}"
    member = await redis_layer.new_channel()
    await redis_layer.group_add(group, member)

    async def sender(name: str) -> None:
        for n in range(40):
            await redis_layer.send(channel, {"type": "test", "sender": name, "n": n})

    await asyncio.gather(*(sender(name) for name in "abcde"), redis_layer.group_send(group, {"type": "group"}))

    received = [await asyncio.wait_for(redis_layer.receive(channel), TIMEOUT) for _ in range(200)]
    for name in "abcde":
        assert [m["n"] for m in received if m["sender"] == name] == list(range(40))
    assert await asyncio.wait_for(redis_layer.receive(member), TIMEOUT) == {"type": "group"}
    assert sum(round_trips) == 201 and len(round_trips) <= 45  # 201 messages, the most 5 senders await at once


async def test_two_processes_reading_the_workers_channel_get_each_message_once_in_order(settings, monkeypatch):
    """channels-redis puts a message one process has just taken back on the channel when another starts to
    read it (django/channels_redis#163). The workers' layer reads a shared channel in one BZPOPMIN."""
    from redis.asyncio import Redis

    from answers.layers import WorkQueueChannelLayer
    from liveqa.settings import LIVEQA_WORKERS_LAYER

    config = redis_channel_layers(settings.REDIS_URL_TEST, prefix=f"test-{uuid.uuid4().hex[:8]}")
    readers = [WorkQueueChannelLayer(**config[LIVEQA_WORKERS_LAYER]["CONFIG"]) for _ in range(2)]  # two processes
    commands = []
    execute = Redis.execute_command

    async def counted(self, *args, **kwargs):
        commands.append(args[0])
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(Redis, "execute_command", counted)
    channel = f"work-{uuid.uuid4().hex[:8]}"
    received: list[list[int]] = [[], []]

    async def read(i: int) -> None:
        while True:
            received[i].append((await readers[i].receive(channel))["n"])
            await asyncio.sleep(0)  # the other reader gets its turn

    tasks = [asyncio.create_task(read(i)) for i in range(2)]
    try:
        for n in range(100):
            await readers[n % 2].send(channel, {"type": "work", "n": n})
        async with asyncio.timeout(TIMEOUT):
            while sum(map(len, received)) < 100:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # a copy would arrive by now
        sends = [command for command in commands if command in ("EVALSHA", "SCRIPT LOAD")]
        reads = [command for command in commands if command not in sends]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        for reader in readers:
            await reader.flush()
    assert sorted(received[0] + received[1]) == list(range(100))
    assert all(ns == sorted(ns) for ns in received) and all(received)
    assert set(reads) == {"BZPOPMIN"}  # one round trip a read
    assert sends.count("EVALSHA") - sends.count("SCRIPT LOAD") == 100  # and one a send, once Redis has the script


async def test_messages_sent_together_to_the_workers_channel_are_received_in_order_and_never_past_capacity(settings):
    """The workers' channel takes a burst's messages in one write, all of them or, past its capacity, none."""
    from channels.exceptions import ChannelFull

    from answers.layers import WorkQueueChannelLayer
    from liveqa.settings import LIVEQA_WORKERS_LAYER

    config = redis_channel_layers(settings.REDIS_URL_TEST, prefix=f"test-{uuid.uuid4().hex[:8]}")
    layer = WorkQueueChannelLayer(**{**config[LIVEQA_WORKERS_LAYER]["CONFIG"], "capacity": 5})
    channel = f"work-{uuid.uuid4().hex[:8]}"
    try:
        await layer.send_many(channel, [{"type": "work", "n": n} for n in range(4)])
        with pytest.raises(ChannelFull):
            await layer.send_many(channel, [{"type": "work", "n": n} for n in range(4, 6)])
        await layer.send(channel, {"type": "work", "n": 6})  # a lone one still fits
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"type": "work", "n": 7})
        assert 0 < await layer.connection(0).ttl(layer.prefix + channel) <= layer.expiry
        received = [(await asyncio.wait_for(layer.receive(channel), TIMEOUT))["n"] for _ in range(5)]
        assert received == [0, 1, 2, 3, 6]
    finally:
        await layer.flush()


async def test_question_is_answered_through_redis(redis_worker, fake_openai):
    _, key = await database_sync_to_async(make_stream)()
    listener = WebsocketCommunicator(application, f"/live/answer?key={key}")
    assert (await listener.connect(TIMEOUT))[0]
    try:
        await listener.send_to(text_data=json.dumps({"type": "question", "question": "Hi?"}))
        frames = await receive_until_end(listener)
        texts = [request["body"]["input"] for request in fake_openai.speech_requests]
        assert [f for f in frames if isinstance(f, bytes)] == [fake_audio(t) for t in texts]

        await listener.send_to(text_data=json.dumps({"type": "hello", "protocol": 2}))
        await listener.receive_from(TIMEOUT)
        await listener.send_to(text_data=json.dumps({"type": "question", "question": "Again?"}))
        frames = await receive_events_until(listener, "answer.done", "answer.failed")
        assert frames[-1]["type"] == "answer.done"
    finally:
        await listener.disconnect()


async def test_a_question_no_worker_takes_ends_with_worker_timeout_and_is_recorded_failed(redis_layer, settings):
    """Its hand-over lost (a worker died with it), nobody answers: the listener hears why, and the question
    is failed in the database rather than left approved."""
    from answers.models import Question

    settings.LIVEQA_ANSWER_STALE_AFTER = 0.5
    stream, key = await database_sync_to_async(make_stream)()
    listener = WebsocketCommunicator(application, f"/live/answer?key={key}")
    assert (await listener.connect(TIMEOUT))[0]
    try:
        await listener.send_to(text_data=json.dumps({"type": "question", "question": "Anyone?"}))
        frames = await receive_until_end(listener)
        assert frames == ["ERROR worker_timeout: The answer could not be completed.", "##END##"]
        assert [q.status async for q in Question.objects.filter(stream=stream)] == [Question.Status.FAILED]
    finally:
        await listener.disconnect()
        await get_channel_layer(settings.LIVEQA_WORKERS_LAYER).flush()


async def test_cancel_reaches_the_worker_through_redis(redis_worker, fake_openai):
    fake_openai.script.token_delay = 0.2
    _, key = await database_sync_to_async(make_stream)()
    listener = WebsocketCommunicator(application, f"/live/answer?key={key}")
    assert (await listener.connect(TIMEOUT))[0]
    try:
        await listener.send_to(text_data=json.dumps({"type": "hello", "protocol": 2}))
        await listener.receive_from(TIMEOUT)
        await listener.send_to(text_data=json.dumps({"type": "question", "question": "Long?"}))
        await receive_events_until(listener, "answer.started")
        await listener.send_to(text_data=json.dumps({"type": "cancel"}))
        frames = await receive_events_until(listener, "answer.failed", "answer.done")
        assert frames[-1]["reason"] == "cancelled"
        async with asyncio.timeout(TIMEOUT):
            while redis_worker.answering:  # it records the answer, then lets go of it
                await asyncio.sleep(0.01)
    finally:
        await listener.disconnect()


async def test_a_question_delivered_twice_is_answered_once(redis_worker, fake_openai):
    """Each copy asks the LLM at once (the check for a copy is not on the way to the first word); the
    copy that lost is closed before its first token, and only one answer is spoken and recorded."""
    from dataclasses import asdict

    from answers import dispatch, services
    from answers.models import Answer
    from answers.providers import default_voice

    fake_openai.script.first_token_delay = 0.3
    stream, _ = await database_sync_to_async(make_stream)()
    [(question, chosen)] = await database_sync_to_async(services.create_live_questions)(
        [services.LiveAsk(stream, "Twice?")], default_voice()
    )
    prepared = {"question": question.text, "prompt": chosen.prompt_text, "voice": asdict(chosen.voice)}
    reply = await redis_worker.layer.new_channel()
    for _ in range(2):  # as channels-redis may redeliver a message to a second reader
        await dispatch.ask(question.pk, reply, prepared)
    kinds = await kinds_until_the_end(redis_worker.layer, reply)
    assert kinds[-1] == events.DONE
    assert kinds.count(events.STARTED) == 1
    assert {body["messages"][-1]["content"] for body in fake_openai.chat_requests} == {"Twice?"}
    assert [bool(chat["tokens"]) for chat in fake_openai.log["chat"]].count(True) == 1
    async with asyncio.timeout(TIMEOUT):
        while redis_worker.answering:
            await asyncio.sleep(0.01)
    assert await Answer.objects.filter(question=question).acount() == 1


def test_the_sequencer_restores_the_order_an_answer_was_sent_in():
    sent = [events.message(events.AUDIO, answer_id=1, n=n, seq=n // 2, last=n % 2 == 1) for n in range(6)]
    sent.append(events.message(events.DONE, answer_id=1, n=6))
    sequencer = events.Sequencer()
    delivered = []
    for n in (1, 0, 3, 2, 2, 5, 4, 6):  # swapped pairs and a duplicate
        delivered += sequencer.push(sent[n])
    assert [m["n"] for m in delivered] == list(range(7))


def test_the_sequencer_gives_up_on_a_lost_message_at_the_end_of_the_answer():
    sequencer = events.Sequencer()
    assert sequencer.push(events.message(events.CHUNK, answer_id=1, n=0)) != []
    assert sequencer.push(events.message(events.CHUNK, answer_id=1, n=2)) == []  # n=1 was dropped
    done = sequencer.push(events.message(events.DONE, answer_id=1, n=3))
    assert [m["n"] for m in done] == [2, 3]


def test_answers_whose_end_never_arrives_do_not_pile_up_in_a_long_lived_listener():
    in_order = events.InOrder(keep=3)
    for answer_id in range(10):  # each answer's worker died after its first message
        assert in_order.push(events.message(events.CHUNK, answer_id=answer_id, n=0)) != []
    assert list(in_order.sequencers) == [7, 8, 9]
    ended = in_order.push(events.message(events.DONE, answer_id=9, n=1))
    assert [m["n"] for m in ended] == [1] and list(in_order.sequencers) == [7, 8]


async def test_questions_handed_over_together_beyond_a_workers_free_slots_go_to_another_worker(
    redis_layer, make_pipeline, fake_openai
):
    """One message carries four questions; the worker that reads it has two slots: it answers two and
    sends two back to the shared channel, where the other worker takes them."""
    from answers import services
    from answers.models import Answer
    from answers.providers import default_voice

    fake_openai.script.first_token_delay = 0.3  # the first worker stays busy while the others are read
    stream, _ = await database_sync_to_async(make_stream)()
    asked = await database_sync_to_async(services.create_live_questions)(
        [services.LiveAsk(stream, f"Question {i}?") for i in range(4)], default_voice()
    )
    reply = await redis_layer.new_channel()
    batch = events.questions(
        [events.message(events.QUESTION, question_id=question.pk, reply_channel=reply) for question, _ in asked]
    )
    first = AnswerWorker(make_pipeline(), channel_layer=redis_layer, concurrency=2)
    second = AnswerWorker(make_pipeline(), channel_layer=redis_layer, concurrency=2)
    first_task = asyncio.create_task(first.run())
    second_task = None

    try:
        await asyncio.wait_for(first.ready.wait(), TIMEOUT)
        await first.work_layer.send(first.channel, batch)  # the list-based layer that questions cross
        async with asyncio.timeout(TIMEOUT):
            while first.busy < 2:
                await asyncio.sleep(0.01)
        second_task = asyncio.create_task(second.run())
        ended = 0
        async with asyncio.timeout(TIMEOUT):
            while ended < 4:
                ended += (await redis_layer.receive(reply))["type"] in (events.DONE, events.FAILED)
        await settled()  # listeners hear the end before the answer is recorded
        answers = [
            answer async for answer in Answer.objects.filter(status=Answer.Status.DONE).select_related("question")
        ]
        assert sorted(a.question_id for a in answers) == sorted(question.pk for question, _ in asked)
        workers = [a.question.worker for a in answers]
        assert workers.count(first.name) == 2 and workers.count(second.name) == 2
    finally:
        running = [task for task in (first_task, second_task) if task is not None]
        for task in running:
            task.cancel()
        await asyncio.wait(running, timeout=TIMEOUT)
        await first.work_layer.flush()


async def test_a_second_copy_of_a_question_whose_first_worker_died_is_answered_after_the_grace(
    redis_worker, fake_openai, monkeypatch
):
    """The first copy reached a worker that marked it delivered and died before claiming it: the second
    copy claims it once the grace period is over, and it is answered."""
    from dataclasses import asdict

    from answers import dispatch, services, workers
    from answers.models import Question
    from answers.providers import default_voice

    monkeypatch.setattr(workers, "CLAIM_GRACE", 0.2)
    fake_openai.script.first_token_delay = 0.3
    stream, _ = await database_sync_to_async(make_stream)()
    [(question, chosen)] = await database_sync_to_async(services.create_live_questions)(
        [services.LiveAsk(stream, "Abandoned?")], default_voice()
    )
    connection = redis_worker.work_layer.connection(0)
    await connection.set(f"{redis_worker.work_layer.prefix}delivered:{redis_worker.channel}:{question.pk}", 1)
    prepared = {"question": question.text, "prompt": chosen.prompt_text, "voice": asdict(chosen.voice)}
    reply = await redis_worker.layer.new_channel()
    await dispatch.ask(question.pk, reply, prepared)
    kinds = await kinds_until_the_end(redis_worker.layer, reply)
    assert kinds[0] == events.STARTED and kinds[-1] == events.DONE
    # The copy's own early start was closed (if its request had gone out at all) when it found the
    # question delivered before; the answer came from the claim after the grace.
    assert [bool(chat["tokens"]) for chat in fake_openai.log["chat"]][-1:] == [True]
    assert [bool(chat["tokens"]) for chat in fake_openai.log["chat"]].count(True) == 1
    await settled()
    assert (await Question.objects.aget(pk=question.pk)).status == Question.Status.ANSWERED


async def test_two_copies_of_a_question_in_one_batch_are_answered_once(redis_worker, fake_openai):
    """The copies start together and are marked delivered in one round trip: one of them answers, the
    other's LLM request is closed before its first token."""
    from dataclasses import asdict

    from answers import services
    from answers.models import Answer
    from answers.providers import default_voice

    fake_openai.script.first_token_delay = 0.3
    stream, _ = await database_sync_to_async(make_stream)()
    [(question, chosen)] = await database_sync_to_async(services.create_live_questions)(
        [services.LiveAsk(stream, "Copied?")], default_voice()
    )
    prepared = {"question": question.text, "prompt": chosen.prompt_text, "voice": asdict(chosen.voice)}
    reply = await redis_worker.layer.new_channel()
    copy = events.message(events.QUESTION, question_id=question.pk, reply_channel=reply, prepared=prepared)
    await redis_worker.work_layer.send(redis_worker.channel, events.questions([copy, copy]))
    kinds = await kinds_until_the_end(redis_worker.layer, reply)
    assert kinds[-1] == events.DONE
    assert kinds.count(events.STARTED) == 1
    assert [bool(chat["tokens"]) for chat in fake_openai.log["chat"]].count(True) == 1
    await settled()
    assert await Answer.objects.filter(question=question).acount() == 1
