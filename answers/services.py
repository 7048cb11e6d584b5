"""ORM actions (synchronous; async callers wrap them in database_sync_to_async)."""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .models import Answer, AnswerChunk, Prompt, Question, Stream, VoicePreset, hash_secret
from .pipeline.tts import Voice

logger = logging.getLogger(__name__)


def stream_for_key(raw_key: str, slug: str | None = None) -> Stream | None:
    """The stream this key opens (optionally only if it is `slug`'s), or None."""
    if not raw_key:
        return None
    stream = Stream.objects.filter(key_hash=hash_secret(raw_key)).first()
    if stream is None or not stream.check_key(raw_key) or (slug is not None and stream.slug != slug):
        return None
    return stream


def create_question(stream: Stream, text: str, **fields: Any) -> Question:
    """A new question, saved (`fields` as for new_question)."""
    question = new_question(stream, text, **fields)
    question.save()
    return question


def new_question(
    stream: Stream,
    text: str,
    *,
    source: str,
    viewer_name: str = "",
    viewer_ip: str | None = None,
    approved: bool | None = None,
    prompt_override: str = "",
    voice_override: dict[str, Any] | None = None,
    ticket: uuid.UUID | None = None,
) -> Question:
    """A question not yet saved; approved as the stream's auto-approval says unless told."""
    if approved is None:
        approved = stream.auto_approve
    return Question(
        stream=stream,
        text=text,
        source=source,
        viewer_name=viewer_name,
        viewer_ip=viewer_ip,
        status=Question.Status.APPROVED if approved else Question.Status.PENDING,
        prompt_override=prompt_override,
        voice_override=voice_override or {},
        ticket=ticket,
        position=timezone.now().timestamp(),
    )


@dataclass(frozen=True)
class LiveAsk:
    """A question asked over /live/answer, with the asker's own prompt and voice choices."""

    stream: Stream
    text: str
    prompt_override: str = ""
    voice_override: dict[str, Any] | None = None
    ticket: uuid.UUID | None = None  # set when it is handed to a worker before it is stored


def create_live_questions(asks: list[LiveAsk], default_voice: Voice) -> list[tuple[Question, AnswerSettings]]:
    """Store approved /live/answer questions in one transaction and resolve the prompt and voice each
    will be answered with: handed to the worker with a question that waited its turn (the worker starts
    the LLM while it claims the question), and checked against those the connection resolved itself for
    one it handed over before storing it. Questions that arrive together cost one commit (on
    PostgreSQL a commit waits for the disk) and one insert."""
    with transaction.atomic():
        created = Question.objects.bulk_create(
            [
                new_question(
                    ask.stream,
                    ask.text,
                    source=Question.Source.LIVE,
                    approved=True,
                    prompt_override=ask.prompt_override,
                    voice_override=ask.voice_override,
                    ticket=ask.ticket,
                )
                for ask in asks
            ]
        )
        fresh = Question.objects.select_related(
            "stream__default_prompt", "stream__default_voice", "prompt", "voice"
        ).in_bulk([question.pk for question in created])
        return [(question, answer_settings(fresh[question.pk], default_voice)) for question in created]


# What answering a claimed question reads besides it: its stream and the prompts and voices it may use.
_CLAIMED_WITH = ("stream", "prompt", "voice", "stream__default_prompt", "stream__default_voice")


def claim_question(question_id: int, worker: str) -> Question | None:
    """Approved → answering, only if nobody else got there first (a conditional update)."""
    return claim_questions({question_id}, worker).get(question_id)


def claim_questions(question_ids: set[int], worker: str) -> dict[int, Question]:
    """Approved → answering for those of `question_ids` nobody else got to first: one conditional
    UPDATE, then the rows it claimed, told apart from earlier claims by the claim's moment."""
    now = timezone.now()
    Question.objects.filter(pk__in=question_ids, status=Question.Status.APPROVED).update(
        status=Question.Status.ANSWERING,
        worker=worker,
        attempts=F("attempts") + 1,
        started_at=now,
        heartbeat_at=now,
    )
    claimed = Question.objects.select_related(*_CLAIMED_WITH).filter(
        pk__in=question_ids, status=Question.Status.ANSWERING, worker=worker, started_at=now
    )
    return {question.pk: question for question in claimed}


def claim_next_for_stream(stream_id: int, worker: str) -> Question | None:
    """The stream's next approved question, if the stream is not already speaking one (its queue is
    answered one question at a time, highest priority first)."""
    with transaction.atomic():
        Stream.objects.select_for_update().filter(pk=stream_id).first()
        queued = Question.objects.filter(stream_id=stream_id).exclude(source=Question.Source.LIVE)
        # An answer held for review keeps its place: the queue waits for the moderator.
        if queued.filter(status__in=(Question.Status.ANSWERING, Question.Status.HELD)).exists():
            return None
        candidate = (
            queued.filter(status=Question.Status.APPROVED)
            .order_by("-priority", "position", "created_at")
            .values_list("pk", flat=True)
            .first()
        )
        if candidate is None:
            return None
        return claim_question(candidate, worker)


@dataclass(frozen=True)
class AnswerSettings:
    prompt_text: str
    voice: Voice


def answer_settings(question: Question, default_voice: Voice) -> AnswerSettings:
    """The prompt and voice this question is answered with: its own choices, else the stream's,
    else the server's. Overrides are per question and never change shared defaults."""
    return resolve_settings(
        question.stream,
        default_voice,
        lambda name: VoicePreset.objects.filter(name=name).first(),
        prompt=question.prompt,
        voice=question.voice,
        prompt_override=question.prompt_override,
        voice_override=question.voice_override,
    )


def resolve_settings(
    stream: Stream,
    default_voice: Voice,
    preset_named: Callable[[str], VoicePreset | None],
    *,
    prompt: Prompt | None = None,
    voice: VoicePreset | None = None,
    prompt_override: str = "",
    voice_override: dict[str, Any] | None = None,
) -> AnswerSettings:
    if prompt_override:
        prompt_text = prompt_override
    elif prompt is not None:
        prompt_text = prompt.text
    elif stream.default_prompt is not None:
        prompt_text = stream.default_prompt.text
    else:
        prompt_text = settings.LIVEQA_SYSTEM_PROMPT

    preset = voice or stream.default_voice
    chosen = Voice(**preset.snapshot()) if preset is not None else default_voice  # type: ignore[arg-type]
    override = voice_override or {}
    if override.get("voice"):
        named = preset_named(override["voice"])
        chosen = Voice(**named.snapshot()) if named else chosen.replace(name=override["voice"])  # type: ignore[arg-type]
    if override.get("speed") is not None:
        chosen = chosen.replace(speed=float(override["speed"]))
    if override.get("format"):
        chosen = chosen.replace(format=override["format"])
    return AnswerSettings(prompt_text, chosen)


@dataclass(frozen=True)
class LiveDefaults:
    """What a /live/answer connection needs to resolve its questions' prompt and voice without the
    database: the stream's defaults and the voice presets, as they were when loaded. A worker checks
    what it was handed against the database when it claims the question (begin_answers)."""

    stream: Stream
    default_voice: Voice
    presets: dict[str, VoicePreset]

    def settings(self, prompt_override: str = "", voice_override: dict[str, Any] | None = None) -> AnswerSettings:
        return resolve_settings(
            self.stream,
            self.default_voice,
            self.presets.get,
            prompt_override=prompt_override,
            voice_override=voice_override,
        )


def live_defaults(stream_id: int, default_voice: Voice) -> LiveDefaults:
    stream = Stream.objects.select_related("default_prompt", "default_voice").get(pk=stream_id)
    return LiveDefaults(stream, default_voice, {preset.name: preset for preset in VoicePreset.objects.all()})


Begun = tuple[Answer, AnswerSettings]


class NotStored(enum.Enum):
    """What claiming a ticket no stored question has yet gives (begin_answers)."""

    NOT_STORED = "not stored"


NOT_STORED = NotStored.NOT_STORED


def begin_answers(
    refs: list[int | str], worker: str, default_voice: Voice, model: str
) -> list[Begun | NotStored | None]:
    """Claim approved questions and open their answers, in one transaction of a few statements however
    many there are (a worker starts a burst of questions together). A question is named by its id, or by
    the ticket it was handed over with. Each answer is opened with the prompt and voice the database
    resolves now (a worker that started an answer early checks it against them). A question someone
    else claimed first, or one named twice, is None after its first claim; a ticket no question has yet
    is NOT_STORED."""
    tickets = {ref: uuid.UUID(ref) for ref in refs if isinstance(ref, str)}
    found = Question.objects.filter(ticket__in=tickets.values()).values_list("ticket", "pk") if tickets else []
    stored = dict(found)
    ids = [stored.get(tickets[ref], NOT_STORED) if isinstance(ref, str) else ref for ref in refs]
    with transaction.atomic():
        claimed = claim_questions({question_id for question_id in ids if question_id is not NOT_STORED}, worker)
        begun: list[Begun | NotStored | None] = []
        for question_id in ids:
            if question_id is NOT_STORED:
                begun.append(NOT_STORED)
                continue
            question = claimed.pop(question_id, None)
            if question is None:
                begun.append(None)
                continue
            chosen = answer_settings(question, default_voice)
            begun.append((new_answer(question, chosen, model), chosen))
        Answer.objects.bulk_create([item[0] for item in begun if isinstance(item, tuple)])
    return begun


def begin_next_answer(stream_id: int, worker: str, default_voice: Voice, model: str) -> Begun | None:
    """The same for the stream's next approved question, if the stream is idle."""
    with transaction.atomic():
        question = claim_next_for_stream(stream_id, worker)
        return None if question is None else _open_answer(question, default_voice, model)


def _open_answer(question: Question, default_voice: Voice, model: str) -> Begun:
    chosen = answer_settings(question, default_voice)
    answer = new_answer(question, chosen, model)
    answer.save()
    return answer, chosen


def held_for_review(question: Question) -> bool:
    """Whether a moderator reviews this answer's text before it is spoken: the stream asks for it, and
    the question came through the stream's queue (/live/answer answers its asker directly)."""
    return question.stream.hold_answers_for_review and question.source != Question.Source.LIVE


def new_answer(question: Question, chosen: AnswerSettings, model: str) -> Answer:
    """An answer not yet saved, opened with the prompt and voice it is spoken with; held for review if
    its question's stream asks for that."""
    voice = chosen.voice
    return Answer(
        question=question,
        status=Answer.Status.HELD if held_for_review(question) else Answer.Status.SPEAKING,
        prompt_text=chosen.prompt_text,
        voice={
            "engine": voice.engine,
            "name": voice.name,
            "speed": voice.speed,
            "format": voice.format,
            "language": voice.language,
        },
        model=model,
    )


def hold_answer(answer_id: int, *, text: str, timings: dict[str, Any]) -> bool:
    """Keep a written answer for a moderator's review. Its question leaves `answering`, so the reaper
    leaves it alone while nobody works on it. False if the question was taken away meanwhile."""
    with transaction.atomic():
        held = Question.objects.filter(
            answers=answer_id, answers__status=Answer.Status.HELD, status=Question.Status.ANSWERING
        ).update(status=Question.Status.HELD, heartbeat_at=None)
        if held:
            Answer.objects.filter(pk=answer_id).update(text=text, timings={"generation": timings})
        return bool(held)


def begin_held_answer(answer_id: int, worker: str) -> Begun | None:
    """Claim a reviewed answer for speaking, with the text, prompt and voice it was held with. None if
    it is no longer held (already spoken, discarded, or reaped)."""
    with transaction.atomic():
        # Claimed first, so a moderator's later edit (conditional on `held`) cannot slip in unread.
        if not Answer.objects.filter(pk=answer_id, status=Answer.Status.HELD).update(status=Answer.Status.SPEAKING):
            return None
        answer = Answer.objects.select_related("question__stream").get(pk=answer_id)
        claimed = Question.objects.filter(pk=answer.question_id, status=Question.Status.HELD).update(
            status=Question.Status.ANSWERING, worker=worker, heartbeat_at=timezone.now()
        )
        if not claimed:
            transaction.set_rollback(True)
            return None
        answer.question.status = Question.Status.ANSWERING
        return answer, AnswerSettings(answer.prompt_text, Voice(**answer.voice))


@dataclass(frozen=True)
class AnswerEnd:
    """How an answer ended: its text and timings, the failure if any, each chunk with its audio, and the
    question's new status when it is not simply answered or failed (a skipped question stays skipped)."""

    answer_id: int
    text: str
    timings: dict[str, Any]
    error: str = ""
    chunks: list[dict[str, Any]] = field(default_factory=list)
    question_status: str | None = None


def finish_answers(ends: list[AnswerEnd]) -> None:
    """Record how answers ended, with their chunks and audio, and settle their questions: one
    transaction for answers that end together, however many."""
    now = timezone.now()
    ids = [end.answer_id for end in ends]
    with transaction.atomic():
        answers = {
            pk: (question_id, timings)
            for pk, question_id, timings in Answer.objects.select_for_update()
            .filter(pk__in=ids)
            .values_list("pk", "question_id", "timings")
        }
        settled: dict[str, list[int]] = {}
        for end in ends:
            question_id, timings = answers[end.answer_id]
            # One UPDATE each: Django's bulk_update builds a CASE per field and row, costlier than these.
            Answer.objects.filter(pk=end.answer_id).update(
                text=end.text,
                timings={**timings, **end.timings},  # a reviewed answer keeps how it was written
                error=end.error[:500],
                status=Answer.Status.FAILED if end.error else Answer.Status.DONE,
                finished_at=now,
            )
            status = end.question_status or (Question.Status.FAILED if end.error else Question.Status.ANSWERED)
            settled.setdefault(status, []).append(question_id)
        AnswerChunk.objects.filter(answer__in=ids).delete()
        AnswerChunk.objects.bulk_create(
            AnswerChunk(answer_id=end.answer_id, **chunk) for end in ends for chunk in end.chunks
        )
        for status, question_ids in settled.items():
            # A question a moderator skipped meanwhile stays skipped.
            Question.objects.filter(pk__in=question_ids, status=Question.Status.ANSWERING).update(
                status=status, finished_at=now, heartbeat_at=None
            )


def heartbeat(question_ids: list[int]) -> None:
    if question_ids:
        Question.objects.filter(pk__in=question_ids, status=Question.Status.ANSWERING).update(
            heartbeat_at=timezone.now()
        )


def reap_stale_answers(stale_after: float) -> list[int]:
    """Questions whose worker stopped beating: re-queued once (stream questions), else failed.
    Returns the ids of the streams that have work again."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    stale = list(
        Question.objects.filter(status=Question.Status.ANSWERING, heartbeat_at__lt=cutoff).values(
            "pk", "attempts", "source", "stream_id"
        )
    )
    kicked: set[int] = set()
    for row in stale:
        requeue = row["source"] != Question.Source.LIVE and row["attempts"] < 2
        new_status = Question.Status.APPROVED if requeue else Question.Status.FAILED
        with transaction.atomic():
            changed = Question.objects.filter(
                pk=row["pk"], status=Question.Status.ANSWERING, heartbeat_at__lt=cutoff
            ).update(status=new_status, heartbeat_at=None, worker="")
            if changed:
                Answer.objects.filter(
                    question_id=row["pk"], status__in=[Answer.Status.SPEAKING, Answer.Status.HELD]
                ).update(status=Answer.Status.FAILED, error="worker_lost", finished_at=timezone.now())
        if changed:
            logger.warning("question %s lost its worker; now %s", row["pk"], new_status)
            kicked.add(row["stream_id"])
    return sorted(kicked)


def question_dict(question: Question) -> dict[str, Any]:
    return {
        "id": question.pk,
        "text": question.text,
        "viewer_name": question.viewer_name,
        "source": question.source,
        "status": question.status,
        "priority": question.priority,
        "position": question.position,
        "prompt_id": question.prompt_id,
        "voice_id": question.voice_id,
        "created_at": question.created_at.isoformat(),
    }
