"""The LLM seam: stream an answer's tokens from an OpenAI-compatible server (or a local model)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from .openai_client import async_openai, connection_ahead

logger = logging.getLogger(__name__)


class LLMError(Exception):
    """Generation failed. `reason` is a stable code: rate_limited, server_error, connection_error,
    first_token_timeout, idle_timeout, stream_broken, rejected."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class LLMRequest:
    """One question with everything that shapes its answer, passed explicitly (never shared state)."""

    question: str
    system_prompt: str
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    def messages(self) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": self.question}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages


@dataclass(frozen=True)
class LLMTimeouts:
    connect: float = 5.0
    first_token: float = 15.0  # from request to the first token, per attempt
    idle: float = 10.0  # longest silence between two tokens
    # The whole answer's deadline is the pipeline's (it covers speech too).


class LLM(abc.ABC):
    """Streams the text of an answer, token by token."""

    model: str = ""

    @abc.abstractmethod
    def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        """Yield text as it is generated. Raise LLMError on failure; close everything on cancellation."""

    def ready_ahead(self) -> AbstractAsyncContextManager[None]:
        """While the block runs, keep ready what the next request will need (an open connection).
        Nothing, for a model with nothing to prepare."""
        return contextlib.nullcontext()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients and models."""


class FixedTextLLM(LLM):
    """Text already written (an answer a moderator reviewed), streamed in word-sized pieces so that it
    is chunked and spoken exactly like a generated answer."""

    def __init__(self, text: str, model: str = ""):
        self.text = text
        self.model = model

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        for piece in re.findall(r"\S*\s*", self.text):
            if piece:
                yield piece


_RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIConnectionError,
    httpx.TransportError,
    TimeoutError,
)


def _refused(exc: BaseException) -> bool:
    """Whether a connection error (not a timeout) is behind `exc`: httpx-aiohttp maps every aiohttp
    connection error, a refused connection included, to httpx.ConnectTimeout; the cause tells."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return True
        cause = cause.__cause__
    return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.InternalServerError):
        return "server_error"
    if isinstance(exc, openai.APITimeoutError | TimeoutError) and not _refused(exc):
        return "first_token_timeout"
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        return "connection_error"
    if isinstance(exc, openai.APIStatusError):
        return "rejected"
    return "stream_broken"


class OpenAIChatLLM(LLM):
    """Chat completions streamed from any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp).

    Retries happen only before the first token; once text has been spoken, a failure ends the answer.
    """

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str | None = None,
        timeouts: LLMTimeouts | None = None,
        retries: int = 2,
        max_tokens: int | None = None,
        temperature: float | None = None,
        retry_backoff: float = 0.25,
    ):
        self.model = model
        self.timeouts = timeouts or LLMTimeouts()
        self.retries = retries
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.retry_backoff = retry_backoff
        self.client = async_openai(
            api_key=api_key or "unused",
            base_url=base_url,
            max_retries=0,  # retried here, only before the first token
            timeout=httpx.Timeout(
                connect=self.timeouts.connect,
                # A backstop: the first-token and idle timers above it must fire first, or a stall is
                # reported as a broken stream when the two deadlines coincide.
                read=max(self.timeouts.first_token, self.timeouts.idle) + 1.0,
                write=self.timeouts.connect,
                pool=self.timeouts.connect,
            ),
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        attempt = 0
        while True:
            stream = None
            try:
                async with asyncio.timeout(self.timeouts.first_token):
                    stream = await self._open(request)
                    tokens = self._tokens(stream)
                    first = await anext(tokens, None)
            except _RETRYABLE as exc:
                if stream is not None:
                    await stream.close()
                attempt += 1
                if attempt > self.retries:
                    raise LLMError(_reason(exc), str(exc)) from exc
                logger.warning("LLM attempt %d failed before the first token (%s); retrying", attempt, exc)
                # A connection that broke is tried again at once, the first time: most likely a pooled
                # one the server closed as the request went out. A server that is busy is given time.
                if attempt > 1 or not isinstance(exc, openai.APIConnectionError | httpx.TransportError):
                    await asyncio.sleep(self.retry_backoff * attempt)
                continue
            except openai.APIStatusError as exc:
                raise LLMError("rejected", f"{exc.status_code} {exc.message}") from exc
            except openai.APIError as exc:
                if stream is not None:
                    await stream.close()
                raise LLMError("stream_broken", str(exc)) from exc
            except BaseException:
                if stream is not None:
                    await stream.close()
                raise
            break

        try:
            if first is None:
                return
            yield first
            while True:
                try:
                    async with asyncio.timeout(self.timeouts.idle):
                        token = await anext(tokens, None)
                except TimeoutError as exc:
                    raise LLMError("idle_timeout", f"no token for {self.timeouts.idle}s") from exc
                except (openai.APIError, httpx.HTTPError) as exc:
                    raise LLMError("stream_broken", str(exc) or exc.__class__.__name__) from exc
                if token is None:
                    return
                yield token
        finally:
            await stream.close()

    async def _open(self, request: LLMRequest) -> openai.AsyncStream[object]:
        """Open a streamed chat completion whose events arrive as the server's JSON, not as models.

        `chat.completions.create` builds a ChatCompletionChunk for every token, about 0.15 ms of CPU
        each: with 50 answers streaming that was a worker's largest cost after the HTTP client. Posted
        with `cast_to=object`, the client still sends, authenticates, decodes the events and raises
        openai's errors (a server's `error` event too); only that construction is skipped. The stream's
        type argument must be `object` too: the stream converts each event to it, and only `object` is
        passed through untouched (with `Any`, every event went through openai's type construction)."""
        body: dict[str, Any] = {"model": request.model or self.model, "messages": request.messages(), "stream": True}
        max_tokens = request.max_tokens or self.max_tokens
        if max_tokens:
            body["max_tokens"] = max_tokens
        temperature = request.temperature if request.temperature is not None else self.temperature
        if temperature is not None:
            body["temperature"] = temperature
        return await self.client.post(
            "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=openai.AsyncStream[object]
        )

    @staticmethod
    async def _tokens(stream: openai.AsyncStream[object]) -> AsyncIterator[str]:
        async for event in stream:
            choices = event.get("choices") if isinstance(event, dict) else None
            if choices and (text := (choices[0].get("delta") or {}).get("content")):
                yield text

    def ready_ahead(self) -> AbstractAsyncContextManager[None]:
        return connection_ahead(self.client)

    async def aclose(self) -> None:
        await self.client.close()
