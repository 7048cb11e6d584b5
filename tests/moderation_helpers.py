"""Helpers for the moderation, intake, overlay and dashboard tests."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client

from answers.models import Answer, AnswerChunk, Question, Stream
from tests.channels_helpers import make_stream

__all__ = ["make_stream"]


def make_stream_with_token(**fields: Any) -> tuple[Stream, str, str]:
    stream = Stream(name=fields.pop("name", "Test stream"), **fields)
    key, token = stream.rotate_key(), stream.rotate_bridge_token()
    stream.save()
    return stream, key, token


def make_user(username: str, *, staff: bool = False, moderates: Stream | None = None) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=staff, is_superuser=staff)
    if moderates is not None:
        group, _ = Group.objects.get_or_create(name=f"mods-{moderates.slug}")
        group.user_set.add(user)
        moderates.moderators.add(group)
    return user


def session_cookie(user: User) -> tuple[Client, str]:
    client = Client()
    client.force_login(user)
    return client, client.cookies["sessionid"].value


def make_answer(stream: Stream, chunks: list[tuple[str, bytes, float | None, str]], text: str = "") -> Answer:
    """An answered question with stored chunks: (caption, audio, duration, error) each."""
    question = Question.objects.create(
        stream=stream, text="What is pi?", viewer_name="ann", source=Question.Source.ASK_PAGE,
        status=Question.Status.ANSWERED,
    )  # fmt: skip
    answer = Answer.objects.create(
        question=question, status=Answer.Status.DONE, text=text or " ".join(c[0] for c in chunks),
        timings={"total": 1.0},
    )  # fmt: skip
    for seq, (caption, audio, duration, error) in enumerate(chunks):
        AnswerChunk.objects.create(
            answer=answer, seq=seq, caption=caption, audio=audio, audio_format="wav" if audio else "",
            sample_rate=24000 if audio else 0, duration=duration, error=error,
        )  # fmt: skip
    return answer


class WorkerInbox:
    """Stands in for separate `answerworker` processes: what is sent to the worker channel stays there
    to be read, instead of an embedded worker answering it."""

    def __init__(self, channel: str):
        self.channel = channel
        self.layer = get_channel_layer(settings.LIVEQA_WORKERS_LAYER)

    async def areceive(self, wait: float = 5) -> dict[str, Any]:
        import asyncio

        async with asyncio.timeout(wait):
            return await self.layer.receive(self.channel)

    def receive(self) -> dict[str, Any]:
        return async_to_sync(self.areceive)()


async def group_listener(group: str) -> str:
    """A fresh channel in `group`, to read what the group hears."""
    layer = get_channel_layer()
    channel = await layer.new_channel("test.")
    await layer.group_add(group, channel)
    return channel


async def receive_on(channel: str, wait: float = 5) -> dict[str, Any]:
    import asyncio

    async with asyncio.timeout(wait):
        return await get_channel_layer().receive(channel)


@pytest.fixture
def worker_inbox(settings) -> WorkerInbox:
    """Dispatch goes to the worker channel without starting the embedded worker (as with Redis)."""
    settings.REDIS_URL = "redis://answer-workers.invalid:6379/0"
    async_to_sync(get_channel_layer(settings.LIVEQA_WORKERS_LAYER).flush)()
    return WorkerInbox(settings.LIVEQA_WORKER_CHANNEL)
