"""Replaying a stored answer on a stream's overlay: the same messages a worker sends, from the database."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from . import events
from .models import Answer, AnswerChunk


class NothingToReplay(Exception):
    """The answer has no stored audio."""


def replay_messages(answer: Answer, chunks: list[AnswerChunk]) -> list[dict[str, Any]]:
    """started, then each heard chunk's caption and audio in seq order, then done; all with the
    original answer_id, so an overlay treats it like the first time (it is marked `replay`)."""
    heard = sorted((c for c in chunks if c.audio and not c.error), key=lambda c: c.seq)
    if not heard:
        raise NothingToReplay(f"answer {answer.pk} has no stored audio")
    ids = {"answer_id": answer.pk, "question_id": answer.question_id}
    messages = [
        events.message(events.REPLAY, **ids),
        events.message(events.STARTED, worker="", replay=True, **ids),
    ]
    for chunk in heard:
        messages.append(events.message(events.CHUNK, answer_id=answer.pk, seq=chunk.seq, text=chunk.caption))
        messages += events.audio_messages(
            answer.pk, chunk.seq, bytes(chunk.audio), chunk.audio_format, chunk.sample_rate, True
        )
    messages.append(events.message(events.DONE, text=answer.text, timings=answer.timings, replay=True, **ids))
    return messages


def load_replay(answer_id: int) -> tuple[str, list[dict[str, Any]]]:
    """The overlay group to send to and the messages to send (synchronous: it reads the database)."""
    answer = Answer.objects.select_related("question__stream").get(pk=answer_id)
    return answer.question.stream.overlay_group, replay_messages(answer, list(answer.chunks.all()))


async def asend(group: str, messages: list[dict[str, Any]]) -> None:
    layer = get_channel_layer()
    for message in messages:
        await layer.group_send(group, message)


def replay(answer_id: int) -> int:
    """Send a stored answer to its stream's overlays from synchronous code (the admin). Returns how
    many messages were sent."""
    group, messages = load_replay(answer_id)
    async_to_sync(asend)(group, messages)
    return len(messages)
