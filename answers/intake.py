"""Viewers' questions coming in, from the ask page or the bridge API: validated, de-duplicated,
rate-limited, stored, and announced to the dashboards (and to a worker, when approved at once)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import dispatch, events, moderation, services
from .models import Question, Stream

logger = logging.getLogger(__name__)

DUPLICATE_WINDOW = timedelta(minutes=5)
RATE_WINDOW = timedelta(minutes=1)
MAX_VIEWER_NAME = 100
# Ask-page questions per minute from one address, across viewer names.
DEFAULT_QUESTIONS_PER_IP_PER_MINUTE = 10


class IntakeError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class Received:
    question: Question
    created: bool  # False: the same viewer asked the same thing a moment ago


def normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def questions_per_ip_per_minute() -> int:
    return getattr(settings, "LIVEQA_QUESTIONS_PER_IP_PER_MINUTE", DEFAULT_QUESTIONS_PER_IP_PER_MINUTE)


def receive(
    stream: Stream, text: object, viewer: object = "", *, source: str, viewer_ip: str | None = None
) -> Received:
    """Store a viewer's question (pending, or approved on an auto-approving stream) and announce it.

    Rate limits count the stored questions rather than an in-process cache, so they hold across
    processes. The per-address limit applies to the ask page only: a bridge posts every viewer's
    question from one address, and is trusted by its token."""
    if not isinstance(text, str) or not isinstance(viewer, str):
        raise IntakeError("invalid_question", "`question` and `viewer` must be strings.")
    text = text.strip()
    viewer = " ".join(viewer.split())[:MAX_VIEWER_NAME]
    if not text:
        raise IntakeError("empty_question", "Please write a question.")
    if len(text) > stream.max_question_chars:
        raise IntakeError("question_too_long", f"Questions can be at most {stream.max_question_chars} characters long.")
    now = timezone.now()
    with transaction.atomic():
        # One intake at a time per stream, so two quick submissions cannot both pass the counts.
        Stream.objects.select_for_update().filter(pk=stream.pk).first()
        mine = (
            stream.questions.filter(viewer_name=viewer)
            if viewer
            else stream.questions.filter(viewer_name="", viewer_ip=viewer_ip)
        )
        wanted = normalized(text)
        for earlier in mine.filter(created_at__gte=now - DUPLICATE_WINDOW).exclude(source=Question.Source.LIVE):
            if normalized(earlier.text) == wanted:
                return Received(earlier, created=False)
        if mine.filter(created_at__gte=now - RATE_WINDOW).count() >= stream.questions_per_viewer_per_minute:
            raise IntakeError("rate_limited", "You are asking too quickly; wait a minute.", 429)
        if viewer_ip and source == Question.Source.ASK_PAGE:
            recent = stream.questions.filter(viewer_ip=viewer_ip, created_at__gte=now - RATE_WINDOW).count()
            if recent >= questions_per_ip_per_minute():
                raise IntakeError("rate_limited", "Too many questions from your address; wait a minute.", 429)
        question = services.create_question(stream, text, source=source, viewer_name=viewer, viewer_ip=viewer_ip)
    announce(question)
    return Received(question, created=True)


def announce(question: Question) -> None:
    """Tell the stream's dashboards about a new or changed question, and wake a worker for an approved
    one. The question is stored either way: if the layer is down, the next kick or reload shows it."""
    try:
        async_to_sync(_announce)(question.stream, moderation.question_row(question), question.status)
    except Exception:
        logger.exception("could not announce question %s", question.pk)


async def _announce(stream: Stream, row: dict[str, object], status: str) -> None:
    await get_channel_layer().group_send(stream.dashboard_group, events.message(events.QUESTION_UPDATED, question=row))
    if status == Question.Status.APPROVED:
        await dispatch.kick_stream(stream.pk)
