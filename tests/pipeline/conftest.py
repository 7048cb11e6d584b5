"""Pipeline fixtures: a fake OpenAI-compatible server on loopback and the real engines pointed at it."""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from answers.pipeline.answer import AnswerEvent, AnswerPipeline, AnswerRequest, AudioFrame
from answers.pipeline.llm import LLMRequest, LLMTimeouts, OpenAIChatLLM
from answers.pipeline.openai_client import async_openai
from answers.pipeline.tts import OpenAISpeech, SpeechRouter, Voice
from tests.fakes.openai_server import FakeOpenAI

# Generous next to the tens of milliseconds the scripts use; only a hang reaches them.
STEP = 5.0
FAST = LLMTimeouts(connect=1.0, first_token=1.0, idle=1.0)
VOICE = Voice(engine="openai", name="alloy")
PIPELINE_DIR = str(Path(__file__).resolve().parents[2] / "answers" / "pipeline")


def answer_request(question: str = "What is pi?", system_prompt: str = "Answer briefly.") -> AnswerRequest:
    return AnswerRequest(LLMRequest(question=question, system_prompt=system_prompt), VOICE)


@dataclass(frozen=True)
class Received:
    at: float  # seconds since the consumer asked for the first event
    event: AnswerEvent


async def collect(pipeline: AnswerPipeline, request: AnswerRequest, *, within: float = STEP) -> list[Received]:
    """Every event of one answer, with the moment the consumer got it."""
    received: list[Received] = []
    start = time.monotonic()
    async with asyncio.timeout(within), aclosing(pipeline.run(request)) as events:
        async for event in events:
            received.append(Received(time.monotonic() - start, event))
    return received


def events_of(received: Iterable[Received]) -> list[AnswerEvent]:
    return [r.event for r in received]


def spoken(events: Iterable[AnswerEvent]) -> dict[int, str]:
    """The text each completely spoken chunk's audio says, by seq (the fake speaks `AUDIO[<text>]`)."""
    audio: dict[int, bytes] = defaultdict(bytes)
    complete = []
    for event in events:
        if isinstance(event, AudioFrame):
            audio[event.seq] += event.data
            if event.last:
                complete.append(event.seq)
    texts = {}
    for seq in complete:
        data = audio[seq]
        match = re.fullmatch(rb"AUDIO\[(.*)\]", data, re.DOTALL)
        assert match, f"chunk {seq} audio is not one whole fake utterance: {data!r}"
        texts[seq] = match.group(1).decode()
    return texts


async def eventually(predicate: Callable[[], bool], *, within: float) -> float:
    """Wait until `predicate()` holds (checked every millisecond); return how long it took.

    The fake server only exposes counters, so this is the one place that checks rather than awaits."""
    start = time.monotonic()
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.001)
    return time.monotonic() - start


async def leftover_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks started since `before` that are still running, besides the fake server's connection handlers.

    Abandoned async generators count: the loop finalizes them in a task of their own, created one loop
    iteration after the garbage collector finds them."""
    gc.collect()
    await asyncio.sleep(0)
    left = []
    for task in asyncio.all_tasks() - before:
        if task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and "aiohttp" in code.co_filename:
            continue  # the server side of keep-alive connections
        left.append(task)
    return left


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    """A started fake OpenAI server; tests set `server.script`."""
    async with asyncio.timeout(STEP):
        fake = await FakeOpenAI().start()
    try:
        yield fake
    finally:
        async with asyncio.timeout(STEP):
            await fake.stop()


@pytest.fixture
async def make_llm(server: FakeOpenAI) -> AsyncIterator[Callable[..., OpenAIChatLLM]]:
    """OpenAIChatLLM (the real `openai` client) pointed at the fake server, closed after the test."""
    built: list[OpenAIChatLLM] = []

    def build(*, timeouts: LLMTimeouts = FAST, retries: int = 1, **options: Any) -> OpenAIChatLLM:
        options.setdefault("retry_backoff", 0.01)
        llm = OpenAIChatLLM(
            model="fake-model", api_key="k", base_url=server.base_url, timeouts=timeouts, retries=retries,
            **options,
        )  # fmt: skip
        built.append(llm)
        return llm

    yield build
    for llm in built:
        await llm.aclose()


@pytest.fixture
async def build_pipeline(
    server: FakeOpenAI, make_llm: Callable[..., OpenAIChatLLM]
) -> AsyncIterator[Callable[..., AnswerPipeline]]:
    """AnswerPipeline on the real OpenAIChatLLM and OpenAISpeech, both talking to the fake server through
    the clients production builds.

    Keyword arguments go to AnswerPipeline, except `timeouts` and `retries` (to the LLM)."""
    routers: list[SpeechRouter] = []

    def build(*, timeouts: LLMTimeouts = FAST, retries: int = 1, **options: Any) -> AnswerPipeline:
        client = async_openai(api_key="k", base_url=server.base_url, max_retries=0)
        speech = SpeechRouter({"openai": OpenAISpeech(client, "fake-tts")})
        routers.append(speech)
        options.setdefault("answer_timeout", STEP)
        options.setdefault("tts_timeout", 2.0)
        return AnswerPipeline(make_llm(timeouts=timeouts, retries=retries), speech, **options)

    yield build
    for speech in routers:
        await speech.aclose()
