"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.netguard_rules import install as forbid_network

forbid_network()

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for processes the tests start: the same network guard, test settings."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "netguard"), str(ROOT)])
    env["DJANGO_SETTINGS_MODULE"] = "liveqa.settings"
    env.setdefault("SECRET_KEY", "tests-only-secret-key")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
async def fake_openai():
    from tests.fakes.openai_server import FakeOpenAI

    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def make_pipeline(fake_openai):
    """Build an AnswerPipeline on the real OpenAI-compatible engines, pointed at the fake server."""
    import openai

    from answers.pipeline.answer import AnswerPipeline
    from answers.pipeline.llm import LLMTimeouts, OpenAIChatLLM
    from answers.pipeline.tts import OpenAISpeech, SpeechRouter

    def build(**options):
        timeouts = options.pop("timeouts", LLMTimeouts(connect=2, first_token=3, idle=2))
        llm = OpenAIChatLLM(
            model="fake-model", api_key="k", base_url=fake_openai.base_url, timeouts=timeouts,
            retries=options.pop("retries", 1), retry_backoff=0.01,
        )  # fmt: skip
        client = openai.AsyncOpenAI(api_key="k", base_url=fake_openai.base_url, max_retries=0)
        speech = SpeechRouter({"openai": OpenAISpeech(client, "fake-tts")})
        options.setdefault("answer_timeout", 10)
        options.setdefault("tts_timeout", 5)
        built.append(AnswerPipeline(llm, speech, **options))
        return built[-1]

    built: list[AnswerPipeline] = []
    yield build
    for pipeline in built:  # closed on this test's loop, not garbage-collected on a later one
        await pipeline.llm.aclose()
        await pipeline.speech.aclose()


@pytest.fixture
async def embedded_worker(make_pipeline, monkeypatch):
    """The in-process worker (in-memory channel layer) answering with the fake server."""
    from answers import dispatch, providers

    built = make_pipeline()
    monkeypatch.setattr(providers, "pipeline", lambda: built)
    yield built
    await dispatch.stop_embedded_worker()
    # The worker's queries ran on the shared database thread: close its connection there, or
    # PostgreSQL refuses to drop the test database at the end.
    from channels.db import database_sync_to_async
    from django.db import connections

    await database_sync_to_async(connections.close_all)()
