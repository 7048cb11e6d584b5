"""OpenAIChatLLM against the fake OpenAI server: streaming, request shape, retries, timeouts, closing."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from contextlib import aclosing
from pathlib import Path

import pytest

from answers.pipeline.llm import LLMError, LLMRequest, LLMTimeouts, OpenAIChatLLM
from tests.fakes.openai_server import Script, split_tokens

from .conftest import STEP, eventually, leftover_tasks

ANSWER = "Pi is about three point one four. It never ends and never repeats. Nobody knows all its digits"
TOKENS = split_tokens(ANSWER)
REQUEST = LLMRequest(question="What is pi?", system_prompt="Answer in three sentences.")


async def tokens_of(llm: OpenAIChatLLM, request: LLMRequest = REQUEST) -> list[str]:
    async with asyncio.timeout(STEP), aclosing(llm.stream(request)) as stream:
        return [token async for token in stream]


async def failure_of(llm: OpenAIChatLLM, received: list[str] | None = None) -> LLMError:
    """The LLMError the stream ends with; tokens seen before it go to `received`."""
    received = [] if received is None else received
    with pytest.raises(LLMError) as failed:
        async with asyncio.timeout(STEP), aclosing(llm.stream(REQUEST)) as stream:
            async for token in stream:
                received.append(token)
    return failed.value


async def test_tokens_arrive_in_order_and_join_to_the_answer(server, make_llm):
    server.script = Script(tokens=TOKENS)
    assert await tokens_of(make_llm()) == TOKENS


async def test_first_token_is_yielded_while_the_server_is_still_generating(server, make_llm):
    server.script = Script(tokens=TOKENS[:6], token_delay=0.04)
    start = time.monotonic()
    arrivals = []
    async with asyncio.timeout(STEP), aclosing(make_llm().stream(REQUEST)) as stream:
        async for _ in stream:
            arrivals.append(time.monotonic() - start)
    assert arrivals[0] < 0.1 < 0.2 <= arrivals[-1]


async def test_request_sends_model_system_prompt_question_and_sampling_options(server, make_llm):
    server.script = Script(tokens=["Hi."])
    llm = make_llm(max_tokens=100, temperature=0.7)
    await tokens_of(llm)
    await tokens_of(llm, LLMRequest("Who are you?", "Be a pirate.", model="other", max_tokens=5, temperature=0))

    default, override = server.chat_requests
    assert default["model"] == "fake-model"
    assert default["stream"] is True
    assert default["messages"] == [
        {"role": "system", "content": "Answer in three sentences."},
        {"role": "user", "content": "What is pi?"},
    ]
    assert (default["max_tokens"], default["temperature"]) == (100, 0.7)
    assert override["model"] == "other"
    assert override["messages"][0] == {"role": "system", "content": "Be a pirate."}
    assert (override["max_tokens"], override["temperature"]) == (5, 0)


async def test_empty_system_prompt_sends_only_the_question(server, make_llm):
    server.script = Script(tokens=["Hi."])
    await tokens_of(make_llm(), LLMRequest("Hello?", ""))
    assert server.chat_requests[0]["messages"] == [{"role": "user", "content": "Hello?"}]


async def test_empty_answer_yields_no_tokens(server, make_llm):
    server.script = Script(tokens=[])
    assert await tokens_of(make_llm()) == []


async def test_rate_limit_before_the_first_token_is_retried(server, make_llm):
    server.script = Script(tokens=TOKENS, fail_status=429, fail_first=1)
    assert await tokens_of(make_llm(retries=1)) == TOKENS
    assert len(server.chat_requests) == 2


async def test_a_connection_that_breaks_before_an_answer_is_tried_again_at_once(server, make_llm):
    server.script = Script(tokens=TOKENS, drop_first=1)
    async with asyncio.timeout(STEP / 2):  # well before the backoff
        assert await tokens_of(make_llm(retries=1, retry_backoff=STEP)) == TOKENS
    assert len(server.chat_requests) == 2


async def test_rate_limit_on_every_attempt_raises_rate_limited_after_all_retries(server, make_llm):
    server.script = Script(tokens=TOKENS, fail_status=429, fail_first=100)
    assert (await failure_of(make_llm(retries=2))).reason == "rate_limited"
    assert len(server.chat_requests) == 3


async def test_server_error_on_every_attempt_raises_server_error(server, make_llm):
    server.script = Script(tokens=TOKENS, fail_status=500, fail_first=100)
    assert (await failure_of(make_llm(retries=1))).reason == "server_error"
    assert len(server.chat_requests) == 2


async def test_client_error_is_rejected_without_retrying(server, make_llm):
    server.script = Script(tokens=TOKENS, fail_status=400, fail_first=100)
    assert (await failure_of(make_llm(retries=2))).reason == "rejected"
    assert len(server.chat_requests) == 1


async def test_unreachable_server_raises_connection_error():
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = OpenAIChatLLM(
        model="m", api_key="k", base_url=f"http://127.0.0.1:{port}/v1", timeouts=LLMTimeouts(1, 1, 1),
        retries=1, retry_backoff=0.01,
    )  # fmt: skip
    try:
        assert (await failure_of(llm)).reason == "connection_error"
    finally:
        await llm.aclose()


async def test_no_first_token_in_time_is_retried_then_raises_first_token_timeout(server, make_llm):
    server.script = Script(tokens=TOKENS, first_token_delay=1.0)
    llm = make_llm(timeouts=LLMTimeouts(connect=1, first_token=0.1, idle=1), retries=1)
    start = time.monotonic()
    assert (await failure_of(llm)).reason == "first_token_timeout"
    assert time.monotonic() - start < 0.5  # two attempts of 0.1 s, not the server's 1 s delay
    assert len(server.chat_requests) == 2
    await eventually(lambda: server.open_streams == 0, within=0.1)


async def test_stall_after_the_first_token_raises_idle_timeout_without_retrying(server, make_llm):
    server.script = Script(tokens=TOKENS, stall_after=5)
    received: list[str] = []
    llm = make_llm(timeouts=LLMTimeouts(connect=1, first_token=1, idle=0.1), retries=2)
    assert (await failure_of(llm, received)).reason == "idle_timeout"
    assert received == TOKENS[:5]
    assert len(server.chat_requests) == 1
    await eventually(lambda: server.open_streams == 0, within=0.1)


async def test_broken_stream_after_the_first_token_raises_stream_broken_without_retrying(server, make_llm):
    server.script = Script(tokens=TOKENS, break_after=5)
    received: list[str] = []
    assert (await failure_of(make_llm(retries=2), received)).reason == "stream_broken"
    assert received == TOKENS[:5]
    assert len(server.chat_requests) == 1


async def test_an_error_event_after_the_first_token_raises_stream_broken_without_retrying(server, make_llm):
    server.script = Script(tokens=TOKENS, error_after=5)
    received: list[str] = []
    failure = await failure_of(make_llm(retries=2), received)
    assert failure.reason == "stream_broken" and "overloaded" in failure.detail
    assert received == TOKENS[:5]
    assert len(server.chat_requests) == 1


async def test_events_without_choices_or_content_are_skipped(server, make_llm):
    server.script = Script(tokens=TOKENS, empty_events=True)
    assert await tokens_of(make_llm()) == TOKENS


async def test_closing_the_stream_mid_answer_closes_the_response_at_once(server, make_llm, caplog):
    server.script = Script(tokens=TOKENS, token_delay=0.02)
    stream = make_llm().stream(REQUEST)
    async with asyncio.timeout(STEP):
        await anext(stream)
        await anext(stream)
    assert server.open_streams == 1
    stopped = time.monotonic()
    async with asyncio.timeout(STEP):
        await stream.aclose()
    await eventually(lambda: server.open_streams == 0, within=0.1 - (time.monotonic() - stopped))
    assert server.closed_early == ["chat"]
    # No task check here: the openai client's nested SSE generators, suspended between tokens, are
    # finalized by the event loop. The pipeline never closes a stream between tokens; it cancels it.
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_cancelling_the_consumer_mid_answer_closes_the_response_and_leaves_no_task(server, make_llm, caplog):
    server.script = Script(tokens=TOKENS, token_delay=0.02)
    llm = make_llm()
    before = asyncio.all_tasks()
    two_tokens = asyncio.Event()

    async def consume() -> None:
        received = 0
        async for _ in llm.stream(REQUEST):
            received += 1
            if received == 2:
                two_tokens.set()

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(STEP):
        await two_tokens.wait()
    assert server.open_streams == 1
    stopped = time.monotonic()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(STEP):
            await consumer
    await eventually(lambda: server.open_streams == 0, within=0.1 - (time.monotonic() - stopped))
    assert server.closed_early == ["chat"]
    assert await leftover_tasks(before) == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_building_a_client_imports_the_api_modules_openai_would_import_on_the_first_answer():
    # In a fresh interpreter: openai imports these lazily, which cost a process's first answer ~300 ms.
    code = (
        "import sys\n"
        "from answers.pipeline.openai_client import async_openai\n"
        "lazy = ('openai.resources.chat.completions.completions', 'openai.resources.audio.speech')\n"
        "assert not any(name in sys.modules for name in lazy)\n"
        "async_openai(api_key='k')\n"
        "assert all(name in sys.modules for name in lazy)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
