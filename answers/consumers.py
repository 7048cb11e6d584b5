"""WebSocket consumers. Thin: parse, validate, persist, hand off to workers; ping, cancel and
disconnect are handled at once because no answer work ever runs here."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import time
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError

from . import dispatch, events, protocol, services
from .auth import key_from_scope
from .group_commit import GroupCommit
from .models import Question, Stream
from .providers import default_voice, known_voices

logger = logging.getLogger(__name__)

# Questions asked at the same moment on this process's connections are stored in one transaction.
live_questions = GroupCommit(lambda asks: services.create_live_questions(asks, default_voice()))

END = "##END##"
PONG = "pong"
CLOSE_TOO_BIG = 1009
CLOSE_RATE_LIMITED = 4429
MAX_WAITING_QUESTIONS = 5
# A question asked on an idle connection is stored once it is handed to a worker, or after this long.
HAND_OVER_LEAD = 0.05  # seconds


class RateLimit:
    """At most `limit` messages in any `window` seconds."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.times: collections.deque[float] = collections.deque()

    def allow(self) -> bool:
        now = time.monotonic()
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        self.times.append(now)
        return len(self.times) <= self.limit


class ListenerConsumer(AsyncWebsocketConsumer):
    """Receives an answer's layer messages and writes them to the socket, in either protocol.

    Protocol 1 (the original endpoint's): one binary frame of audio per chunk, then `##END##`.
    Protocol 2: a JSON event for everything, each audio frame preceded by its `answer.audio` event.
    """

    protocol_version = 1

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Answer messages are numbered by their worker: deliver them in that order."""
        for ready in self.in_order.push(message):
            await self.handle(ready)

    async def handle(self, message: dict[str, Any]) -> None:
        # Channels' own dispatch first closes stale database connections on the shared database thread,
        # so a ping would wait behind any slow query. Every ORM call here goes through
        # database_sync_to_async, which does that cleanup itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload))

    async def send_error(self, code: str, message: str) -> None:
        if self.protocol_version >= 2:
            await self.send_json({"type": "error", "code": code, "message": message})
        else:
            await self.send(text_data=f"ERROR {code}: {message}")

    def answer_event(self, message: dict[str, Any]) -> bool:
        """Whether `message` belongs to what this connection is listening to."""
        return True

    async def forward(self, message: dict[str, Any]) -> None:
        if self.answer_event(message) and self.protocol_version >= 2:
            await self.send_json(events.client_event(message))

    answer_started = forward
    answer_chunk = forward
    answer_chunk_failed = forward

    async def answer_audio(self, message: dict[str, Any]) -> None:
        if not self.answer_event(message):
            return
        if self.protocol_version >= 2:
            await self.send_json(events.client_event(message))
            if message["data"]:
                await self.send(bytes_data=message["data"])
            return
        # Protocol 1: whole chunks, as its clients decode each binary frame on its own.
        whole = self.whole_chunks.add(message)
        if whole:
            await self.send(bytes_data=whole)

    async def answer_done(self, message: dict[str, Any]) -> None:
        if self.answer_event(message):
            await self.end_answer(message)

    async def answer_failed(self, message: dict[str, Any]) -> None:
        if self.answer_event(message):
            await self.end_answer(message)

    async def end_answer(self, message: dict[str, Any]) -> None:
        if self.protocol_version >= 2:
            await self.send_json(events.client_event(message))
        else:
            if message["type"] == events.FAILED and message.get("reason") != "cancelled":
                await self.send_error(message.get("reason", "failed"), "The answer could not be completed.")
            await self.send(text_data=END)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.whole_chunks = events.WholeChunks()
        self.in_order = events.InOrder()


class LiveAnswerConsumer(ListenerConsumer):
    """`/live/answer?key=…`: a client asks, and hears its own answers."""

    async def connect(self) -> None:
        self.stream: Stream | None = None
        self.current: int | None = None  # the question being answered
        self.answer_id: int | None = None
        self.worker: str | None = None  # the worker channel answering it
        self.cancel_requested = False
        # Stored questions not yet handed over: (id, what a worker needs to start answering it).
        self.waiting: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self.rate = RateLimit(settings.LIVEQA_RATE_LIMIT_MESSAGES, settings.LIVEQA_RATE_LIMIT_WINDOW)
        self.watchdog: asyncio.Task[None] | None = None
        self.last_heard = time.monotonic()
        # Questions are stored and handed over by their own task, in order, so that a slow database
        # never delays a ping or a cancel on this connection.
        self.asks: asyncio.Queue[protocol.Ask | None] = asyncio.Queue()
        self.intake: asyncio.Task[None] | None = None
        # Clear while the current question is handed over and not yet stored (its id is not known).
        self.stored = asyncio.Event()
        self.stored.set()
        self.closing = False
        key, subprotocol = key_from_scope(self.scope)
        try:
            self.stream = await database_sync_to_async(services.stream_for_key)(key)
        except DatabaseError:
            logger.exception("database unavailable while authenticating a listener")
        if self.stream is None:
            await self.close()  # before accept: the handshake is refused with 403
            return
        self.defaults = await database_sync_to_async(_live_defaults)(self.stream.pk)
        self.limits = protocol.Limits(
            max_question_chars=min(settings.LIVEQA_MAX_QUESTION_CHARS, self.stream.max_question_chars),
            max_prompt_chars=settings.LIVEQA_MAX_PROMPT_CHARS,
            voices=frozenset(known_voices()) | frozenset(self.defaults.presets),
        )
        await self.accept(subprotocol)
        self.intake = asyncio.create_task(self.take_questions(), name="live-answer-intake")

    async def disconnect(self, code: int) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        if getattr(self, "stream", None) is None:
            return
        self.closing = True
        if self.intake is not None:
            # Questions already sent are still stored (as skipped): every question is in the database.
            self.asks.put_nowait(None)
            try:
                await asyncio.wait_for(self.intake, settings.LIVEQA_ANSWER_STALE_AFTER)
            except TimeoutError:
                logger.warning("gave up storing this listener's last questions")
        await self.cancel_current()
        waiting, self.waiting = [question_id for question_id, _ in self.waiting], collections.deque()
        if waiting:
            await database_sync_to_async(_skip_questions)(waiting)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.LIVEQA_MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        if not self.rate.allow():
            await self.send_error("rate_limited", "Too many messages; slow down.")
            await self.close(code=CLOSE_RATE_LIMITED)
            return
        if text_data is None:
            await self.send_error("invalid_json", "Send JSON text frames, not binary ones.")
            return
        try:
            request = protocol.parse(text_data, self.limits)
        except protocol.ProtocolError as exc:
            await self.send_error(exc.code, exc.message)
            return
        if isinstance(request, protocol.Ping):
            await (self.send_json({"type": "pong"}) if self.protocol_version >= 2 else self.send(text_data=PONG))
        elif isinstance(request, protocol.Hello):
            self.protocol_version = request.protocol
            await self.send_json({"type": "hello", "protocol": request.protocol})
        elif isinstance(request, protocol.Cancel):
            await self.cancel_current()
        elif len(self.waiting) + self.asks.qsize() >= MAX_WAITING_QUESTIONS:
            await self.send_error("busy", "Too many questions waiting; ask again after this answer.")
        else:
            self.asks.put_nowait(request)

    async def take_questions(self) -> None:
        while (request := await self.asks.get()) is not None:
            await self.ask(request)

    async def ask(self, request: protocol.Ask) -> None:
        assert self.stream is not None
        asked = services.LiveAsk(self.stream, request.question, request.prompt, request.voice_override)
        if self.current is None and not self.waiting and not self.closing:
            await self.ask_now(asked)
            return
        try:
            question, chosen = await live_questions.submit(asked)
        except DatabaseError:
            logger.exception("could not store a question")
            if not self.closing:
                await self.send_error("unavailable", "LiveQA cannot store questions right now; try again.")
            return
        if self.closing:
            await database_sync_to_async(_skip_questions)([question.pk])
            return
        self.waiting.append((question.pk, _prepared(question.text, chosen)))
        if self.current is None:
            await self.next_question()

    async def ask_now(self, asked: services.LiveAsk) -> None:
        """Nothing is being answered here: the question is handed to a worker, then stored, with the
        prompt and voice this connection resolves (the worker claims it by its ticket once it is stored,
        and starts again if the database resolves them differently)."""
        ticket = uuid.uuid4()
        expected = self.defaults.settings(asked.prompt_override, asked.voice_override)
        self.worker, self.cancel_requested = None, False
        self.stored.clear()
        handing = asyncio.create_task(dispatch.ask(ticket.hex, self.channel_name, _prepared(asked.text, expected)))
        # Stored once it is handed over (a millisecond or two), not meanwhile: storing runs the ORM's Python
        # on the database thread, which keeps the interpreter for up to a switch interval (5 ms) at a time,
        # and the hand-over's round trips to Redis waited for it, 5-7 ms twice on an idle server. A channel
        # layer that hangs does not keep the question from being stored.
        await asyncio.wait({handing}, timeout=HAND_OVER_LEAD)
        question: Question | None = None
        try:
            question, chosen = await live_questions.submit(dataclasses.replace(asked, ticket=ticket))
        except DatabaseError:
            logger.exception("could not store a question")  # its worker finds nothing to claim, and stops
        finally:
            self.current = question.pk if question is not None else None
            self.stored.set()
            if question is None:
                await asyncio.wait({handing})
        if question is None:
            if not self.closing:
                await self.send_error("unavailable", "LiveQA cannot store questions right now; try again.")
            return
        self.last_heard = time.monotonic()
        try:
            await handing
        except Exception:
            await self.not_handed_over(question.pk)
            return
        if chosen != expected:  # a stream default or a preset changed since this connection loaded them
            self.defaults = await database_sync_to_async(_live_defaults)(self.stream.pk)
        if self.cancel_requested:  # while it was being stored
            await self.cancel_current()
        self.watch()

    async def next_question(self) -> None:
        while self.waiting and self.current is None:
            question_id, prepared = self.waiting.popleft()
            self.current, self.worker, self.cancel_requested = question_id, None, False
            try:
                await dispatch.ask(question_id, self.channel_name, prepared)
            except Exception:
                await self.not_handed_over(question_id)
                continue
            self.last_heard = time.monotonic()
            self.watch()

    async def not_handed_over(self, question_id: int) -> None:
        logger.exception("could not hand question %s to a worker", question_id)
        await database_sync_to_async(_fail_unsent)(question_id)
        self.current = None
        await self.send_error("unavailable", "No answer worker is reachable; try again.")
        if self.protocol_version == 1:
            await self.send(text_data=END)

    def watch(self) -> None:
        if self.watchdog is None or self.watchdog.done():
            self.watchdog = asyncio.create_task(self.watch_worker())

    async def cancel_current(self) -> None:
        if not self.stored.is_set():  # handed over, not yet stored: cancelled once it is (ask_now)
            self.cancel_requested = True
            return
        if self.current is None:
            return
        self.cancel_requested = True
        if self.worker:
            await self.tell_worker_to_cancel()
        elif await database_sync_to_async(_skip_questions)([self.current]):
            # Withdrawn before any worker claimed it: nobody else will end it.
            await self.end_answer(
                events.message(
                    events.FAILED, question_id=self.current, answer_id=None, reason="cancelled", text="", timings={}
                )
            )
        # Otherwise a worker has just claimed it; answer_started passes the cancellation on.

    async def tell_worker_to_cancel(self) -> None:
        try:
            await self.channel_layer.send(self.worker, events.message(events.CANCEL, question_id=self.current))
        except Exception as exc:
            logger.warning("could not reach worker to cancel: %s", exc)

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message["type"].startswith("answer.") and not self.stored.is_set():
            # A worker claims a question handed over early as soon as it is stored: its events can only
            # come from there, and this connection knows the question's id a moment later.
            await self.stored.wait()
        await super().dispatch(message)

    def answer_event(self, message: dict[str, Any]) -> bool:
        if "question_id" in message:
            return message["question_id"] == self.current
        return message.get("answer_id") == self.answer_id and self.answer_id is not None

    async def answer_started(self, message: dict[str, Any]) -> None:
        if message["question_id"] != self.current:
            return
        self.last_heard = time.monotonic()
        self.worker = message["worker"]
        self.answer_id = message["answer_id"]
        if self.cancel_requested:
            await self.tell_worker_to_cancel()
        await self.forward(message)

    async def forward(self, message: dict[str, Any]) -> None:
        self.last_heard = time.monotonic()
        await super().forward(message)

    answer_chunk = forward
    answer_chunk_failed = forward

    async def answer_audio(self, message: dict[str, Any]) -> None:
        self.last_heard = time.monotonic()
        await super().answer_audio(message)

    async def end_answer(self, message: dict[str, Any]) -> None:
        if message.get("question_id") != self.current:
            return
        await super().end_answer(message)
        self.current = self.worker = self.answer_id = None
        await self.next_question()

    async def watch_worker(self) -> None:
        """End an answer whose worker went silent, so the listener is never left waiting."""
        stale_after = settings.LIVEQA_ANSWER_STALE_AFTER
        while self.current is not None:
            silence = time.monotonic() - self.last_heard
            if silence < stale_after:
                await asyncio.sleep(stale_after - silence)
                continue
            logger.warning("worker went silent on question %s", self.current)
            if self.worker is None:
                # No worker ever started it (its hand-over was lost with a worker): it failed, for the
                # record too. A worker that claims it later finds it no longer approved.
                await database_sync_to_async(_fail_unsent)(self.current)
            await self.end_answer(
                events.message(
                    events.FAILED,
                    question_id=self.current,
                    answer_id=None,
                    reason="worker_timeout",
                    text="",
                    timings={},
                )
            )


def _live_defaults(stream_id: int) -> services.LiveDefaults:
    return services.live_defaults(stream_id, default_voice())


def _prepared(text: str, chosen: services.AnswerSettings) -> dict[str, Any]:
    """What a worker needs to start answering (answers.workers._StartedAnswer.start)."""
    return {"question": text, "prompt": chosen.prompt_text, "voice": dataclasses.asdict(chosen.voice)}


def _skip_questions(question_ids: list[int]) -> int:
    return Question.objects.filter(pk__in=question_ids, status=Question.Status.APPROVED).update(
        status=Question.Status.SKIPPED
    )


def _fail_unsent(question_id: int) -> None:
    Question.objects.filter(pk=question_id, status=Question.Status.APPROVED).update(status=Question.Status.FAILED)
