"""Moderators' actions on a stream's questions (synchronous ORM; the dashboard wraps them in
database_sync_to_async) and the rows the dashboard shows."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import Answer, Prompt, Question, Stream, VoicePreset
from .services import question_dict

QUEUED = (Question.Status.PENDING, Question.Status.APPROVED)
HISTORY = (
    Question.Status.ANSWERED,
    Question.Status.FAILED,
    Question.Status.REJECTED,
    Question.Status.SKIPPED,
)
HISTORY_LENGTH = 30
SEARCH_RESULTS = 50


class ModerationError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def answer_dict(answer: Answer) -> dict[str, Any]:
    return {
        "id": answer.pk,
        "status": answer.status,
        "text": answer.text,
        "error": answer.error,
        "timings": answer.timings,
        "chunks": [
            {"seq": c.seq, "text": c.caption, "duration": c.duration, "error": c.error, "timings": c.timings}
            for c in answer.chunks.all()
        ],
    }


def question_row(question: Question) -> dict[str, Any]:
    """A question as the dashboard shows it: with its latest answer, if any."""
    row = question_dict(question)
    latest = question.answers.order_by("-created_at").first()
    row["answer"] = answer_dict(latest) if latest is not None else None
    row["finished_at"] = question.finished_at.isoformat() if question.finished_at else None
    return row


def row(stream: Stream, question_id: int) -> dict[str, Any]:
    return question_row(stream_question(stream, question_id))


def queue(stream: Stream) -> list[Question]:
    return list(stream.questions.filter(status__in=QUEUED).order_by("-priority", "position", "created_at"))


def snapshot(stream: Stream) -> dict[str, Any]:
    current = stream.questions.filter(status__in=(Question.Status.ANSWERING, Question.Status.HELD)).exclude(
        source=Question.Source.LIVE
    )
    history = stream.questions.filter(status__in=HISTORY).order_by("-finished_at", "-created_at")
    return {
        "stream": {
            "id": stream.pk,
            "slug": stream.slug,
            "name": stream.name,
            "auto_approve": stream.auto_approve,
            "hold_answers_for_review": stream.hold_answers_for_review,
        },
        "queue": [question_row(q) for q in queue(stream)],
        "current": [question_row(q) for q in current],
        "history": [question_row(q) for q in history[:HISTORY_LENGTH]],
        "prompts": [{"id": p.pk, "name": p.name} for p in Prompt.objects.all()],
        "voices": [{"id": v.pk, "name": v.name} for v in VoicePreset.objects.all()],
    }


def search(stream: Stream, text: str) -> list[dict[str, Any]]:
    text = text.strip()
    found = stream.questions.all()
    if text:
        found = found.filter(
            Q(text__icontains=text) | Q(viewer_name__icontains=text) | Q(answers__text__icontains=text)
        ).distinct()
    return [question_row(q) for q in found.order_by("-created_at")[:SEARCH_RESULTS]]


def stream_question(stream: Stream, question_id: Any) -> Question:
    try:
        return Question.objects.get(pk=int(question_id), stream=stream)
    except (TypeError, ValueError, Question.DoesNotExist):
        raise ModerationError("not_found", "No such question on this stream.") from None


def _change_status(stream: Stream, question_id: Any, to: str, allowed_from: tuple[str, ...]) -> Question:
    question = stream_question(stream, question_id)
    changed = Question.objects.filter(pk=question.pk, status__in=allowed_from).update(
        status=to, updated_at=timezone.now()
    )
    if not changed:
        raise ModerationError("conflict", f"A {question.status} question cannot become {to}.")
    question.refresh_from_db()
    return question


def approve(stream: Stream, question_id: Any) -> Question:
    return _change_status(
        stream, question_id, Question.Status.APPROVED, (Question.Status.PENDING, Question.Status.REJECTED)
    )


def reject(stream: Stream, question_id: Any) -> Question:
    return _change_status(stream, question_id, Question.Status.REJECTED, QUEUED)


def skip(stream: Stream, question_id: Any) -> Question:
    """Withdraw a queued question, or discard a held answer (the one being spoken is stopped through its
    worker instead)."""
    question = stream_question(stream, question_id)
    if question.status == Question.Status.HELD:
        held = question.answers.filter(status=Answer.Status.HELD).first()
        if held is not None:
            return discard(stream, held.pk)
    return _change_status(stream, question_id, Question.Status.SKIPPED, QUEUED)


def _held_answer(stream: Stream, answer_id: Any) -> Answer:
    answer = stream_answer(stream, answer_id)
    if answer.status != Answer.Status.HELD:
        raise ModerationError("conflict", f"That answer is {answer.status}, not waiting for review.")
    return answer


def review(stream: Stream, answer_id: Any, text: Any = None) -> Answer:
    """Approve a held answer for speaking, with the moderator's edit of its text if there is one.
    Speaking it is the worker's (answer.speak), which claims it only while it is still held."""
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise ModerationError("empty", "The answer text cannot be empty.")
    answer = _held_answer(stream, answer_id)
    if text is not None and text.strip() != answer.text:
        # Conditional: a worker that already took the answer speaks the text it read.
        if not Answer.objects.filter(pk=answer.pk, status=Answer.Status.HELD).update(text=text.strip()):
            raise ModerationError("conflict", "That answer is already being spoken.")
        answer.text = text.strip()
    return answer


def discard(stream: Stream, answer_id: Any) -> Question:
    """Drop a held answer unspoken; its question counts as skipped and the queue moves on."""
    answer = _held_answer(stream, answer_id)
    now = timezone.now()
    with transaction.atomic():
        if not Answer.objects.filter(pk=answer.pk, status=Answer.Status.HELD).update(
            status=Answer.Status.FAILED, error="discarded", finished_at=now
        ):
            raise ModerationError("conflict", "That answer is already being spoken.")
        Question.objects.filter(pk=answer.question_id, status=Question.Status.HELD).update(
            status=Question.Status.SKIPPED, finished_at=now, updated_at=now
        )
    return Question.objects.get(pk=answer.question_id)


def _queued(stream: Stream, question_id: Any) -> Question:
    question = stream_question(stream, question_id)
    if question.status not in QUEUED:
        raise ModerationError("conflict", f"A {question.status} question can no longer be changed.")
    return question


def edit_text(stream: Stream, question_id: Any, text: Any) -> Question:
    if not isinstance(text, str) or not text.strip():
        raise ModerationError("empty", "The question text cannot be empty.")
    question = _queued(stream, question_id)
    question.text = text.strip()
    question.save(update_fields=["text", "updated_at"])
    return question


def set_priority(stream: Stream, question_id: Any, priority: Any) -> Question:
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 1000:
        raise ModerationError("invalid_priority", "Priority is a whole number between -1000 and 1000.")
    question = _queued(stream, question_id)
    question.priority = priority
    question.save(update_fields=["priority", "updated_at"])
    return question


def move(stream: Stream, question_id: Any, before: Any = None) -> Question:
    """Put a queued question just before another one (or last, when `before` is None). It takes on that
    question's priority, since the queue is ordered by priority first."""
    with transaction.atomic():
        question = _queued(stream, question_id)
        others = [q for q in queue(stream) if q.pk != question.pk]
        if before is None:
            if others:
                last = others[-1]
                question.priority = last.priority
                question.position = last.position + 1.0
        else:
            target = _queued(stream, before)
            index = next(i for i, q in enumerate(others) if q.pk == target.pk)
            previous = others[index - 1] if index > 0 else None
            question.priority = target.priority
            if previous is not None and previous.priority == target.priority:
                question.position = (previous.position + target.position) / 2
            else:
                question.position = target.position - 1.0
        question.save(update_fields=["priority", "position", "updated_at"])
    return question


def set_prompt(stream: Stream, question_id: Any, prompt_id: Any) -> Question:
    question = _queued(stream, question_id)
    if prompt_id in (None, ""):
        question.prompt = None
    else:
        question.prompt = _get(Prompt, prompt_id, "prompt")
    question.save(update_fields=["prompt", "updated_at"])
    return question


def set_voice(stream: Stream, question_id: Any, voice_id: Any) -> Question:
    question = _queued(stream, question_id)
    if voice_id in (None, ""):
        question.voice = None
    else:
        question.voice = _get(VoicePreset, voice_id, "voice")
    question.save(update_fields=["voice", "updated_at"])
    return question


def _get(model: Any, pk: Any, what: str) -> Any:
    try:
        return model.objects.get(pk=int(pk))
    except (TypeError, ValueError, model.DoesNotExist):
        raise ModerationError(f"unknown_{what}", f"No such {what}.") from None


def answer_again(question: Question) -> Question:
    """A fresh approved copy of an answered (or failed, skipped...) question, queued last."""
    return Question.objects.create(
        stream_id=question.stream_id,
        text=question.text,
        viewer_name=question.viewer_name,
        source=Question.Source.DASHBOARD,
        status=Question.Status.APPROVED,
        priority=question.priority,
        prompt_id=question.prompt_id,
        voice_id=question.voice_id,
        prompt_override=question.prompt_override,
        voice_override=question.voice_override,
        position=timezone.now().timestamp(),
    )


def current_worker(stream: Stream, question_id: Any) -> str:
    """The channel of the worker answering this question: workers name themselves
    `<host>:<pid>:<channel>`, and channel names cannot contain a colon."""
    question = stream_question(stream, question_id)
    if question.status != Question.Status.ANSWERING:
        raise ModerationError("conflict", "That question is not being answered.")
    return question.worker.rsplit(":", 1)[-1] if question.worker else ""


def stream_answer(stream: Stream, answer_id: Any) -> Answer:
    try:
        return Answer.objects.get(pk=int(answer_id), question__stream=stream)
    except (TypeError, ValueError, Answer.DoesNotExist):
        raise ModerationError("not_found", "No such answer on this stream.") from None
