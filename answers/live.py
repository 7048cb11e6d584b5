"""The stream's live sockets: the streamer's overlay (stream key) and the moderators' dashboard (login)."""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.db import DatabaseError

from . import dispatch, events, fanout, moderation, replay, services
from .auth import key_from_scope
from .models import Question, Stream
from .signals import user_group

logger = logging.getLogger(__name__)


class OverlayConsumer(AsyncWebsocketConsumer):
    """`/ws/overlay/<slug>/?key=…`: hears every answer spoken on the stream (protocol-2 events, each
    chunk's audio whole) through this process's hub of the stream's overlays (answers.fanout)."""

    async def connect(self) -> None:
        self.stream: Stream | None = None
        key, subprotocol = key_from_scope(self.scope)
        slug = self.scope["url_route"]["kwargs"]["slug"]
        try:
            self.stream = await database_sync_to_async(services.stream_for_key)(key, slug)
        except DatabaseError:
            logger.exception("database unavailable while authenticating an overlay")
        if self.stream is None:
            await self.close()  # before accept: the handshake is refused with 403
            return
        await self.accept(subprotocol)
        await fanout.join(self.channel_layer, self.stream.overlay_group, self)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "stream", None) is not None:
            await fanout.leave(self.stream.overlay_group, self)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data and '"ping"' in text_data:
            await self.send(text_data='{"type": "pong"}')


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/dashboard/<slug>/`: a moderator's live view of the queue, and their actions on it."""

    async def connect(self) -> None:
        self.stream: Stream | None = None
        self.groups_joined: list[str] = []
        self.workers: dict[int, str] = {}  # question id → the channel of the worker answering it
        user = self.scope.get("user")
        slug = self.scope["url_route"]["kwargs"]["slug"]
        try:
            self.stream = await database_sync_to_async(_moderated_stream)(slug, user)
        except DatabaseError:
            logger.exception("database unavailable while authenticating a dashboard")
        if self.stream is None:
            await self.close()  # before accept: 403
            return
        for group in (self.stream.dashboard_group, user_group(user.pk)):
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await self.accept()
        await self.send_json({"type": "snapshot", **await self.db(moderation.snapshot)})

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def db(self, function: Any, *args: Any) -> Any:
        return await database_sync_to_async(function)(self.stream, *args)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("action"), str):
            await self.send_error("invalid_message", 'Send {"action": …}.')
            return
        handler = self.actions.get(content["action"])
        if handler is None:
            await self.send_error("unknown_action", f"Unknown action {content['action']!r}.")
            return
        try:
            await handler(self, content)
        except moderation.ModerationError as exc:
            await self.send_error(exc.code, exc.message, content)
        except (replay.NothingToReplay, KeyError) as exc:
            await self.send_error("invalid_request", str(exc), content)

    async def send_error(self, code: str, message: str, request: dict[str, Any] | None = None) -> None:
        await self.send_json(
            {"type": "error", "code": code, "message": message, "action": (request or {}).get("action")}
        )

    async def broadcast(self, question: Question) -> None:
        """Every dashboard of the stream, this one included, shows the change at once."""
        row = await database_sync_to_async(moderation.question_row)(question)
        await self.channel_layer.group_send(
            self.stream.dashboard_group, events.message(events.QUESTION_UPDATED, question=row)
        )

    # Actions ------------------------------------------------------------------------------------
    async def do_approve(self, content: dict[str, Any]) -> None:
        question = await self.db(moderation.approve, content.get("id"))
        await self.broadcast(question)
        await dispatch.kick_stream(self.stream.pk)

    async def do_reject(self, content: dict[str, Any]) -> None:
        await self.broadcast(await self.db(moderation.reject, content.get("id")))

    async def do_edit(self, content: dict[str, Any]) -> None:
        await self.broadcast(await self.db(moderation.edit_text, content.get("id"), content.get("text")))

    async def do_priority(self, content: dict[str, Any]) -> None:
        await self.broadcast(await self.db(moderation.set_priority, content.get("id"), content.get("priority")))

    async def do_move(self, content: dict[str, Any]) -> None:
        await self.broadcast(await self.db(moderation.move, content.get("id"), content.get("before")))

    async def do_prompt(self, content: dict[str, Any]) -> None:
        await self.broadcast(await self.db(moderation.set_prompt, content.get("id"), content.get("prompt_id")))

    async def do_voice(self, content: dict[str, Any]) -> None:
        await self.broadcast(await self.db(moderation.set_voice, content.get("id"), content.get("voice_id")))

    async def do_skip(self, content: dict[str, Any]) -> None:
        """A queued question is withdrawn (a held answer discarded); the one being spoken is stopped by its
        worker, which then reports answer.failed (reason "cancelled") and marks the question skipped."""
        question_id = content.get("id")
        status = await self.db(_status, question_id)
        if status != Question.Status.ANSWERING:
            await self.broadcast(await self.db(moderation.skip, question_id))
            if status == Question.Status.HELD:
                await dispatch.kick_stream(self.stream.pk)
            return
        worker = self.workers.get(int(question_id)) or await self.db(moderation.current_worker, question_id)
        if not worker:
            raise moderation.ModerationError("no_worker", "No worker is known for that answer yet; try again.")
        await self.channel_layer.send(worker, events.message(events.CANCEL, question_id=int(question_id)))

    async def do_again(self, content: dict[str, Any]) -> None:
        question = await self.db(_answer_again, content.get("id"))
        await self.broadcast(question)
        await dispatch.kick_stream(self.stream.pk)

    async def do_replay(self, content: dict[str, Any]) -> None:
        answer = await self.db(moderation.stream_answer, content.get("answer_id"))
        group, messages = await database_sync_to_async(replay.load_replay)(answer.pk)
        await replay.asend(group, messages)
        await self.channel_layer.group_send(
            self.stream.dashboard_group,
            events.message(events.REPLAY, answer_id=answer.pk, question_id=answer.question_id),
        )

    async def do_speak(self, content: dict[str, Any]) -> None:
        """Speak a held answer: its text as written, or as the moderator edited it (`text`)."""
        answer = await self.db(moderation.review, content.get("answer_id"), content.get("text"))
        await self.broadcast(await self.db(moderation.stream_question, answer.question_id))
        await dispatch.to_workers(events.message(events.SPEAK, answer_id=answer.pk))

    async def do_discard(self, content: dict[str, Any]) -> None:
        await self.broadcast(await self.db(moderation.discard, content.get("answer_id")))
        await dispatch.kick_stream(self.stream.pk)

    async def do_search(self, content: dict[str, Any]) -> None:
        query = content.get("query")
        if not isinstance(query, str):
            raise moderation.ModerationError("invalid_query", "`query` must be a string.")
        results = await self.db(moderation.search, query[:200])
        await self.send_json({"type": "search.results", "query": query, "results": results})

    actions = {
        "approve": do_approve,
        "reject": do_reject,
        "edit": do_edit,
        "priority": do_priority,
        "move": do_move,
        "prompt": do_prompt,
        "voice": do_voice,
        "skip": do_skip,
        "again": do_again,
        "replay": do_replay,
        "speak": do_speak,
        "discard": do_discard,
        "search": do_search,
    }

    # Group messages -----------------------------------------------------------------------------
    async def forward(self, message: dict[str, Any]) -> None:
        await self.send_json(events.client_event(message))

    async def question_updated(self, message: dict[str, Any]) -> None:
        await self.forward(message)

    async def answer_started(self, message: dict[str, Any]) -> None:
        if message.get("worker"):
            self.workers = {message["question_id"]: message["worker"]}
        await self.forward(message)
        await self.refresh(message.get("question_id"))

    answer_chunk = answer_chunk_failed = answer_replay = forward

    async def answer_audio(self, message: dict[str, Any]) -> None:
        pass  # dashboards show captions; audio is the overlay's

    async def answer_done(self, message: dict[str, Any]) -> None:
        await self.forward(message)
        if not message.get("replay"):
            self.workers.pop(message.get("question_id"), None)
            await self.refresh(message.get("question_id"))

    answer_failed = answer_held = answer_done

    async def refresh(self, question_id: Any) -> None:
        """Send this dashboard the question's new state (each dashboard hears the worker itself)."""
        if question_id is None:
            return
        try:
            row = await self.db(moderation.row, question_id)
        except moderation.ModerationError:
            return
        await self.send_json(events.message(events.QUESTION_UPDATED, question=row))

    async def session_closed(self, message: dict[str, Any]) -> None:
        await self.close(code=4401)


def _moderated_stream(slug: str, user: Any) -> Stream | None:
    stream = Stream.objects.filter(slug=slug).first()
    if stream is None or user is None or not stream.is_moderator(user):
        return None
    return stream


def _status(stream: Stream, question_id: Any) -> str:
    return moderation.stream_question(stream, question_id).status


def _answer_again(stream: Stream, question_id: Any) -> Question:
    return moderation.answer_again(moderation.stream_question(stream, question_id))
