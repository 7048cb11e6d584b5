"""Answer workers: take questions from the channel layer, run the pipeline, send events and audio back.

Each worker has `concurrency` slots and reads the shared worker channel only while one is free, so a busy
worker leaves new questions to idle ones; of questions handed over together, it starts those it has free
slots for and sends the others back. Cancellations reach the worker on its own channel, named in the
`answer.started` message. On streams that hold answers for review, a stream question's text is written
and held; a moderator's `answer.speak` has it spoken later, by any worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

from . import events, services
from .group_commit import GroupCommit
from .models import Answer, Question
from .pipeline.answer import (
    AnswerDone,
    AnswerFailed,
    Answering,
    AnswerPipeline,
    AnswerRequest,
    AudioFrame,
    ChunkFailed,
    ChunkReady,
    ChunkTimings,
)
from .pipeline.audio import audio_duration
from .pipeline.chunker import Chunk
from .pipeline.llm import FixedTextLLM, LLMRequest
from .pipeline.tts import Voice

logger = logging.getLogger(__name__)

# A question delivered twice is claimed by the copy that arrived first; the other copy claims it only if
# it is still unclaimed this much later (the first worker died in between).
CLAIM_GRACE = 2.0
# A question handed over before it is stored is claimed once it is: tried every STORE_POLL seconds, for
# up to STORE_WAIT.
STORE_POLL = 0.02
STORE_WAIT = 5.0
# Once the chunks sent to a listener will play for longer than this, a later chunk's audio goes whole.
HOLD_WHEN_AHEAD = 1.5  # seconds


class AnswerWorker:
    def __init__(
        self,
        pipeline: AnswerPipeline,
        *,
        channel_layer: BaseChannelLayer | None = None,
        work_layer: BaseChannelLayer | None = None,
        concurrency: int | None = None,
        channel: str | None = None,
        default_voice: Any = None,
    ):
        from .providers import default_voice as configured_voice

        self.pipeline = pipeline
        self.layer = channel_layer or get_channel_layer()  # replies, groups and this worker's own channel
        self.work_layer = work_layer or get_channel_layer(settings.LIVEQA_WORKERS_LAYER)  # questions
        self.concurrency = concurrency or settings.LIVEQA_WORKER_CONCURRENCY
        self.channel = channel or settings.LIVEQA_WORKER_CHANNEL
        self.default_voice = default_voice or configured_voice()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.own_channel = ""
        self.answering: dict[int, asyncio.Task[None]] = {}
        self.busy = 0  # slots in use
        self.tasks: asyncio.TaskGroup  # every task this worker starts, set by run()
        self.slot_freed = asyncio.Event()
        self._deliveries = GroupCommit(self._mark_delivered)
        # Questions that start together are claimed together: one transaction, not one each, on the
        # database thread whose Python competes with the event loop for the interpreter.
        self._claims = GroupCommit(self._begin_answers)
        self._records = GroupCommit(_record_answers)
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Serve until cancelled; every task started here is owned and awaited here."""
        # The default prefix matters: channels-redis reads all of a process's own channels through one
        # list, named after the prefix of the first of them.
        self.own_channel = await self.layer.new_channel()
        self.name = f"{self.name}:{self.own_channel}"
        logger.info("answer worker %s: %d slots on %r", self.name, self.concurrency, self.channel)
        async with asyncio.TaskGroup() as tasks:
            self.tasks = tasks
            tasks.create_task(self._take_work(), name="answer-intake")
            tasks.create_task(self._serve_control(), name="answer-control")
            tasks.create_task(self._keep_alive(), name="answer-heartbeat")
            tasks.create_task(self.pipeline.keep_warm(), name="answer-keep-warm")
            self.ready.set()

    async def _receive(self, layer: BaseChannelLayer, channel: str) -> dict[str, Any]:
        """Receive, riding out a channel layer outage (Redis restarting) instead of crashing."""
        delay = 0.2
        while True:
            try:
                return await layer.receive(channel)
            except (OSError, TimeoutError) as exc:
                logger.warning("channel layer unavailable (%s); retrying in %.1fs", exc, delay)
            except Exception as exc:
                if not exc.__class__.__module__.startswith("redis"):
                    raise
                logger.warning("channel layer unavailable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _take_work(self) -> None:
        """Read the shared worker channel while a slot is free; each piece of work gets a slot, as a
        task of the worker's. Questions that came together beyond the free slots go back to the channel."""
        while True:
            while self.busy >= self.concurrency:
                self.slot_freed.clear()
                await self.slot_freed.wait()
            work = events.work_items(await self._receive(self.work_layer, self.channel))
            free = max(self.concurrency - self.busy, 0)  # a re-claim may have started over the limit
            for message in work[:free]:
                self._start(message)
            if work[free:] and not await self._send(self.channel, events.questions(work[free:]), self.work_layer):
                for message in work[free:]:  # answered here, over the limit, rather than dropped
                    self._start(message)

    def _start(self, message: dict[str, Any]) -> None:
        self.busy += 1
        self.tasks.create_task(self._in_slot(message), name=f"answer-slot-{message.get('type')}")

    async def _in_slot(self, message: dict[str, Any]) -> None:
        try:
            await self._handle(message)
        finally:
            self.busy -= 1
            self.slot_freed.set()

    async def _handle(self, message: dict[str, Any]) -> None:
        try:
            if message.get("type") == events.QUESTION:
                await self._answer_question(
                    events.question_ref(message), message.get("reply_channel") or None, message.get("prepared")
                )
            elif message.get("type") == events.STREAM_NEXT:
                await self._answer_stream_queue(int(message["stream_id"]))
            elif message.get("type") == events.SPEAK:
                await self._speak_held_answer(int(message["answer_id"]))
            else:
                logger.warning("worker ignored a message of type %r", message.get("type"))
        except Exception:
            logger.exception("worker failed to handle %s", message.get("type"))

    async def _answer_question(
        self, ref: int | str, reply_channel: str | None, prepared: dict[str, Any] | None = None
    ) -> None:
        # Handed what the LLM needs, the answer starts now, and the checks and the claim run meanwhile:
        # neither Redis nor the database is on the way to the first word. Nothing is sent to anyone
        # before the claim succeeds.
        early = _StartedAnswer.start(self.pipeline, prepared) if prepared else None
        try:
            if early is not None and not await self._first_delivery(ref):
                # The copy that arrived first is being claimed, its answer already started. Claiming this
                # one too would race that claim, and winning it would answer without the early start.
                self.tasks.create_task(self._claim_if_abandoned(ref, reply_channel), name=f"answer-recheck-{ref}")
                return
            try:
                begun = await self._claim(ref)
            except Exception:
                logger.exception("could not start answering question %s", ref)
                if reply_channel and isinstance(ref, int):  # (a ticket's listener has its watchdog)
                    failed = events.message(events.FAILED, answer_id=None, question_id=ref,
                                            reason="unavailable", text="", timings={})  # fmt: skip
                    await self._send(reply_channel, failed)
                return
            if begun is None:
                logger.info("question %s was already taken or withdrawn", ref)
                return
            answer, chosen = begun
            if answer.status == Answer.Status.HELD or early is None or early.chosen != chosen:
                # Not spoken now; or its prompt or voice changed since the asker's process resolved them:
                # started again with those the database has, the early start closed first.
                if early is not None:
                    stale, early = early, None
                    await stale.events.aclose()
                await self._answer(answer, chosen, reply_channel)
            else:
                taken, early = early, None
                await self._answer(answer, chosen, reply_channel, running=taken)
        finally:
            if early is not None:
                await early.events.aclose()

    async def _claim(self, ref: int | str) -> services.Begun | None:
        """Claim a question. One handed over by ticket may not be stored yet: its claim is tried again
        until it is, for up to STORE_WAIT (after that its asker has been told it could not be stored)."""
        deadline = time.monotonic() + STORE_WAIT
        while (begun := await self._claims.submit(ref)) is services.NOT_STORED:
            if time.monotonic() >= deadline:
                logger.warning("question %s was handed over but never stored", ref)
                return None
            await asyncio.sleep(STORE_POLL)
        return begun

    def _begin_answers(self, refs: list[int | str]) -> list[services.Begun | services.NotStored | None]:
        return services.begin_answers(refs, self.name, self.default_voice, self.pipeline.llm.model)

    async def _claim_if_abandoned(self, ref: int | str, reply_channel: str | None) -> None:
        """A second copy of a question: claim it after CLAIM_GRACE, which fails unless the worker that
        had the first copy died before claiming it. Nothing is lost, and no slot is held meanwhile."""
        await asyncio.sleep(CLAIM_GRACE)
        self._start(events.question(ref, reply_channel))

    async def _first_delivery(self, ref: int | str) -> bool:
        """False if this question was handed to a worker before. A hand-over that fails part-way is sent
        again question by question (answers.dispatch), so a question can reach two workers. The copy
        that finds the question here first starts and claims it; the other waits (_claim_if_abandoned)."""
        if getattr(self.work_layer, "connection", None) is None:  # the in-memory layer delivers once
            return True
        try:
            return await self._deliveries.submit(ref)
        except Exception as exc:
            logger.warning("could not check whether question %s was delivered before: %s", ref, exc)
            return True

    async def _mark_delivered(self, refs: list[int | str]) -> list[bool]:
        """Mark questions delivered, each only if it was not: one round trip for the questions of a
        batch that start together, on one connection (a burst would otherwise open one per question)."""
        async with self.work_layer.connection(0).pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.set(f"{self.work_layer.prefix}delivered:{self.channel}:{ref}", 1, nx=True, ex=3600)
            return [bool(done) for done in await pipe.execute()]

    async def _answer_stream_queue(self, stream_id: int) -> None:
        model = self.pipeline.llm.model
        while begun := await database_sync_to_async(services.begin_next_answer)(
            stream_id, self.name, self.default_voice, model
        ):
            await self._answer(*begun, None)

    async def _speak_held_answer(self, answer_id: int) -> None:
        begun = await database_sync_to_async(services.begin_held_answer)(answer_id, self.name)
        if begun is None:
            logger.info("answer %s is no longer held", answer_id)
            return
        answer, chosen = begun
        await self._answer(answer, chosen, None, self.pipeline.with_llm(FixedTextLLM(answer.text, answer.model)))

    async def _serve_control(self) -> None:
        while True:
            message = await self._receive(self.layer, self.own_channel)
            if message.get("type") == events.CANCEL:
                task = self.answering.get(int(message["question_id"]))
                if task is not None:
                    task.cancel()

    async def _keep_alive(self) -> None:
        """Beat for the questions being answered; fail or re-queue those whose worker died."""
        interval = max(settings.LIVEQA_ANSWER_STALE_AFTER / 3, 0.5)
        while True:
            try:
                await database_sync_to_async(services.heartbeat)(list(self.answering))
                for stream_id in await database_sync_to_async(services.reap_stale_answers)(
                    settings.LIVEQA_ANSWER_STALE_AFTER
                ):
                    await self._kick(stream_id)
            except Exception:
                logger.exception("heartbeat failed; will retry")
            await asyncio.sleep(interval)

    async def _answer(
        self,
        answer: Answer,
        chosen: services.AnswerSettings,
        reply_channel: str | None,
        pipeline: AnswerPipeline | None = None,
        running: _StartedAnswer | None = None,
    ) -> None:
        question = answer.question
        if answer.status == Answer.Status.HELD:
            work = self._write_for_review(answer, chosen)
        else:
            work = self._run_answer(answer, chosen, reply_channel, pipeline or self.pipeline, running)
        task = asyncio.create_task(work, name=f"answer-{question.pk}")
        self.answering[question.pk] = task
        try:
            # asyncio.wait, not `await task`: a cancelled answer must not look like a cancelled slot.
            await asyncio.wait({task})
        finally:
            if not task.done():  # the slot itself is being stopped
                task.cancel()
                await asyncio.wait({task})
            self.answering.pop(question.pk, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("answer to question %s crashed", question.pk, exc_info=task.exception())
        if question.source != Question.Source.LIVE:
            await self._kick(question.stream_id)

    async def _run_answer(
        self,
        answer: Answer,
        chosen: services.AnswerSettings,
        reply_channel: str | None,
        pipeline: AnswerPipeline,
        running: _StartedAnswer | None = None,
    ) -> None:
        question = answer.question
        stream = question.stream
        live = question.source == Question.Source.LIVE
        listeners = _Listeners(self.layer, reply_channel, None if live else stream.overlay_group)
        dashboard = stream.dashboard_group
        ids = {"answer_id": answer.pk, "question_id": question.pk}
        await listeners.send(events.message(events.STARTED, worker=self.own_channel, **ids), dashboard)

        if running is None:
            request = AnswerRequest(LLMRequest(question=question.text, system_prompt=chosen.prompt_text), chosen.voice)
            running = _StartedAnswer(pipeline.start(request), chosen)
        record = _AnswerRecord()
        audio = _PacedAudio(lambda frame: self._send_audio(listeners, answer.pk, frame))
        final: dict[str, Any] | None = None
        started = running.started
        try:
            async with aclosing(running.events) as answer_events:
                async for event in answer_events:
                    if isinstance(event, ChunkReady):
                        record.chunk(event)
                        at = round(time.monotonic() - started, 3)  # seconds into the answer
                        chunk = events.message(
                            events.CHUNK, answer_id=answer.pk, seq=event.seq, text=event.caption, at=at
                        )
                        await listeners.send(chunk, dashboard)
                    elif isinstance(event, AudioFrame):
                        record.audio(event)
                        await audio.add(event, record.duration(event.seq) if event.last else None)
                    elif isinstance(event, ChunkFailed):
                        record.failed(event)
                        await audio.flush()  # what the chunk had before its speech broke off
                        await listeners.send(
                            events.message(
                                events.CHUNK_FAILED,
                                answer_id=answer.pk,
                                seq=event.seq,
                                text=event.text,
                                error=event.error,
                            ),
                            dashboard,
                        )
                    elif isinstance(event, AnswerDone | AnswerFailed):
                        record.timed(event.chunks)
                        await audio.flush()
                        final = self._finish_event(event, ids)
        except asyncio.CancelledError:
            final = events.message(events.FAILED, reason="cancelled", text=record.text(), timings={}, **ids)
            raise
        finally:
            await audio.aclose()
            final = final or events.message(events.FAILED, reason="internal_error", text="", timings={}, **ids)
            status = Question.Status.SKIPPED if final.get("reason") == "cancelled" else None
            # Recording and telling the listeners must happen even while this task is being cancelled.
            await asyncio.shield(self._settle(answer.pk, final, record, status, listeners, dashboard))

    @staticmethod
    async def _send_audio(listeners: _Listeners, answer_id: int, frame: AudioFrame) -> None:
        audio = (frame.data, frame.format, frame.sample_rate, frame.last)
        for piece in events.audio_messages(answer_id, frame.seq, *audio):
            await listeners.send(piece)

    async def _write_for_review(self, answer: Answer, chosen: services.AnswerSettings) -> None:
        """Write the answer's text and hold it for the stream's moderators; nothing is spoken yet, so
        only the dashboards hear of it."""
        question = answer.question
        dashboard = question.stream.dashboard_group
        listeners = _Listeners(self.layer, None, None)
        ids = {"answer_id": answer.pk, "question_id": question.pk}
        await listeners.send(events.message(events.STARTED, worker=self.own_channel, review=True, **ids), dashboard)

        final: dict[str, Any] | None = None
        try:
            written = await self.pipeline.write(LLMRequest(question=question.text, system_prompt=chosen.prompt_text))
            if isinstance(written, AnswerDone) and written.text.strip():
                final = events.message(events.HELD, text=written.text, timings=written.timings.as_dict(), **ids)
            elif isinstance(written, AnswerDone):
                final = events.message(events.FAILED, reason="empty_answer", text="",
                                       timings=written.timings.as_dict(), **ids)  # fmt: skip
            else:
                final = self._finish_event(written, ids)
        except asyncio.CancelledError:
            final = events.message(events.FAILED, reason="cancelled", text="", timings={}, **ids)
            raise
        finally:
            final = final or events.message(events.FAILED, reason="internal_error", text="", timings={}, **ids)
            await asyncio.shield(self._settle_review(answer.pk, final, listeners, dashboard))

    async def _settle_review(
        self, answer_id: int, final: dict[str, Any], listeners: _Listeners, dashboard: str
    ) -> None:
        if final["type"] != events.HELD:
            status = Question.Status.SKIPPED if final.get("reason") == "cancelled" else None
            await self._settle(answer_id, final, _AnswerRecord(), status, listeners, dashboard)
            return
        # Recorded first: a moderator may act on the event at once, and the action needs the held row.
        try:
            held = await database_sync_to_async(services.hold_answer)(
                answer_id, text=final["text"], timings=final["timings"]
            )
        except Exception:
            logger.exception("could not hold answer %s", answer_id)
            held = False
        if held:
            await listeners.send(final, dashboard)

    @staticmethod
    def _finish_event(event: AnswerDone | AnswerFailed, ids: dict[str, int]) -> dict[str, Any]:
        if isinstance(event, AnswerDone):
            return events.message(events.DONE, text=event.text, timings=event.timings.as_dict(), **ids)
        return events.message(
            events.FAILED, reason=event.reason, text=event.text, timings=event.timings.as_dict(), **ids
        )

    async def _settle(
        self,
        answer_id: int,
        final: dict[str, Any],
        record: _AnswerRecord,
        status: str | None,
        listeners: _Listeners,
        dashboard: str,
    ) -> None:
        # Listeners hear the end first; recording it must not delay them.
        await listeners.send(final, dashboard)
        try:
            await self._records.submit((answer_id, final, record, status))
        except Exception:
            logger.exception("could not record answer %s", answer_id)

    async def _send(self, channel: str, message: dict[str, Any], layer: BaseChannelLayer | None = None) -> bool:
        try:
            await (layer or self.layer).send(channel, message)
        except Exception as exc:
            logger.warning("could not send %s to %s: %s", message.get("type"), channel, exc)
            return False
        return True

    async def _kick(self, stream_id: int) -> None:
        """Let a worker (this one or another) answer the stream's next question."""
        await self._send(self.channel, events.message(events.STREAM_NEXT, stream_id=stream_id), self.work_layer)


class _StartedAnswer:
    """An answer's pipeline, running: its events wait in it until they are read."""

    def __init__(self, answering: Answering, chosen: services.AnswerSettings):
        self.events = answering
        self.chosen = chosen
        self.started = time.monotonic()

    @classmethod
    def start(cls, pipeline: AnswerPipeline, prepared: dict[str, Any]) -> _StartedAnswer:
        chosen = services.AnswerSettings(prepared["prompt"], Voice(**prepared["voice"]))
        llm = LLMRequest(question=prepared["question"], system_prompt=chosen.prompt_text)
        return cls(pipeline.start(AnswerRequest(llm, chosen.voice)), chosen)


def _record_answers(ended: list[tuple[int, dict[str, Any], _AnswerRecord, str | None]]) -> list[None]:
    services.finish_answers(
        [
            services.AnswerEnd(
                answer_id,
                text=final.get("text", ""),
                timings=final.get("timings", {}),
                error=final.get("reason", ""),
                chunks=record.rows(),  # here, off the event loop: it copies (and measures) the audio
                question_status=status,
            )
            for answer_id, final, record, status in ended
        ]
    )
    return [None] * len(ended)


class _Listeners:
    """Where an answer's messages go: the asking connection, the stream's overlays, its dashboards."""

    def __init__(self, layer: BaseChannelLayer, reply_channel: str | None, overlay_group: str | None):
        self.layer = layer
        self.reply_channel = reply_channel
        self.overlay_group = overlay_group
        self.sent = 0

    async def send(self, message: dict[str, Any], *extra_groups: str) -> None:
        # Numbered so that listeners can restore the order (events.Sequencer).
        message = {**message, "n": self.sent}
        self.sent += 1
        try:
            if self.reply_channel:
                await self.layer.send(self.reply_channel, message)
            if self.overlay_group:
                await self.layer.group_send(self.overlay_group, message)
            for group in extra_groups:
                if message.get("type") != events.AUDIO:
                    await self.layer.group_send(group, message)
        except Exception as exc:
            # A listener that went away (or a full channel) must not stop the answer for the others.
            logger.warning("could not deliver %s: %s", message.get("type"), exc)


class _AudioPacer:
    """Whether an answer's audio goes to its listeners piece by piece, as it is synthesized, or a chunk
    at a time.

    Pieces go at once while a listener has little audio in hand: the first chunk, or speech synthesized
    barely faster than it plays. Once the chunks already sent will play for more than HOLD_WHEN_AHEAD
    seconds, a later chunk's pieces are held and go as one when the chunk is complete, or when the audio
    in hand has fallen to HOLD_WHEN_AHEAD (`due`). Every piece costs a layer message, and a WebSocket
    event and frame, at every hop; a chunk that will not play for seconds is heard no sooner in pieces.
    The bytes, their order and the chunk's end are the same either way. Once a chunk's duration cannot
    be read (opus, say), the rest of the answer goes piece by piece."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.playing_from: float | None = None  # when the first audio went out
        self.sent_seconds = 0.0  # the complete chunks' audio sent so far
        self.durations_known = True
        self.held: list[AudioFrame] = []

    def add(self, frame: AudioFrame, chunk_seconds: float | None) -> AudioFrame | None:
        """`frame` has arrived (`chunk_seconds`: its chunk's duration, when `frame` is the chunk's last):
        what goes now, the pieces held before it included, or None while it is held."""
        now = self.clock()
        if self.playing_from is None:
            self.playing_from = now
        self.held.append(frame)
        if not frame.last and self.durations_known and now < self._hold_until():
            return None
        if frame.last:
            if chunk_seconds is None:
                self.durations_known = False
            else:
                self.sent_seconds += chunk_seconds
        return self.take()

    def due(self) -> float | None:
        """When the held pieces must go (on `clock`), or None if none are held."""
        return self._hold_until() if self.held and self.playing_from is not None else None

    def _hold_until(self) -> float:
        """The moment the audio sent will have HOLD_WHEN_AHEAD seconds left to play."""
        assert self.playing_from is not None
        return self.playing_from + self.sent_seconds - HOLD_WHEN_AHEAD

    def take(self) -> AudioFrame | None:
        """The held pieces as one frame, or None if none are held."""
        if not self.held:
            return None
        held, self.held = self.held, []
        return held[0] if len(held) == 1 else dataclasses.replace(held[-1], data=b"".join(f.data for f in held))


class _PacedAudio:
    """Sends an answer's audio as its _AudioPacer says, and held pieces when they are due even if no
    more audio arrives by then. Sends never overlap, so the messages go in the order of the audio."""

    def __init__(self, send: Callable[[AudioFrame], Awaitable[None]]):
        self.send = send
        self.pacer = _AudioPacer()
        self.lock = asyncio.Lock()
        self.timer: asyncio.TimerHandle | None = None
        self.flushing: asyncio.Task[None] | None = None

    async def add(self, frame: AudioFrame, chunk_seconds: float | None) -> None:
        async with self.lock:
            ready = self.pacer.add(frame, chunk_seconds)
            if ready is not None:
                self._stop_timer()
                await self.send(ready)
            elif self.timer is None and (due := self.pacer.due()) is not None:
                delay = max(0.0, due - self.pacer.clock())
                self.timer = asyncio.get_running_loop().call_later(delay, self._due)

    async def flush(self) -> None:
        """Send what is held, now."""
        async with self.lock:
            self._stop_timer()
            if (ready := self.pacer.take()) is not None:
                await self.send(ready)

    def _due(self) -> None:
        self.timer = None
        self.flushing = asyncio.create_task(self.flush(), name="answer-audio-due")

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def aclose(self) -> None:
        """Stop: what is still held is dropped (an answer that ends has flushed; a cancelled one is
        silenced), and a due send under way is cancelled and awaited."""
        self._stop_timer()
        if self.flushing is not None and not self.flushing.done():
            self.flushing.cancel()
            await asyncio.wait({self.flushing})


class _AnswerRecord:
    """What was spoken, kept for the database: each chunk's text, audio, timings or failure."""

    def __init__(self) -> None:
        self.chunks: dict[int, dict[str, Any]] = {}

    def chunk(self, event: ChunkReady) -> None:
        self.chunks[event.seq] = {
            "seq": event.seq, "caption": event.caption, "speech": event.speech,
            "error": "", "audio": bytearray(), "audio_format": "", "sample_rate": 0, "timings": {},
        }  # fmt: skip

    def audio(self, event: AudioFrame) -> None:
        row = self.chunks[event.seq]
        row["audio"] += event.data
        row["audio_format"], row["sample_rate"] = event.format, event.sample_rate

    def duration(self, seq: int) -> float | None:
        """Seconds of audio complete chunk `seq` has, if its format tells (measured once, kept for rows)."""
        row = self.chunks[seq]
        if "duration" not in row:
            audio = bytes(row["audio"])
            row["duration"] = audio_duration(audio, row["audio_format"], row["sample_rate"]) if audio else None
        return row["duration"]

    def failed(self, event: ChunkFailed) -> None:
        self.chunks[event.seq]["error"] = event.error[:500]

    def timed(self, spoken: list[tuple[Chunk, ChunkTimings]]) -> None:
        """Each spoken chunk's moments (seconds since the answer started), as the pipeline measured them."""
        for chunk, timings in spoken:
            self.chunks[chunk.seq]["timings"] = timings.as_dict()

    def text(self) -> str:
        """What has been said so far."""
        return " ".join(row["caption"] for row in self.chunks.values())

    def rows(self) -> list[dict[str, Any]]:
        return [
            {**row, "audio": bytes(row["audio"]), "duration": self.duration(seq)} for seq, row in self.chunks.items()
        ]
