"""The TTS seam: one interface, one class per engine, and a router that picks an engine per chunk."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import httpx
import openai

from .openai_client import connection_ahead

logger = logging.getLogger(__name__)

FORMATS = ("mp3", "wav", "pcm", "opus")
MIN_SPEED, MAX_SPEED = 0.25, 4.0


class TTSError(Exception):
    """Synthesis of one chunk failed; the answer goes on without it."""


@dataclass(frozen=True)
class Voice:
    """What a chunk should sound like. `name` is engine-specific (an OpenAI voice, a Piper model...)."""

    engine: str
    name: str
    speed: float = 1.0
    format: str = "mp3"
    language: str = "en"

    def __post_init__(self) -> None:
        if not MIN_SPEED <= self.speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")

    def replace(self, **changes: object) -> Voice:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class AudioFormat:
    format: str  # mp3 | wav | pcm | opus
    sample_rate: int  # Hz; pcm is 16-bit little-endian mono


class TTSEngine(abc.ABC):
    """Turns one chunk of text into audio bytes, streamed as they are produced."""

    name: str = ""
    # Whether a synthesis cancelled part-way costs next to nothing: a request closed, not CPU already
    # spent. Only then are chunks after the first synthesized before their end is confirmed.
    cancels_cleanly: bool = False

    @abc.abstractmethod
    def synthesize(self, text: str, voice: Voice) -> AsyncIterator[bytes]:
        """Yield the audio of `text`. Raise TTSError on failure; close everything on cancellation."""

    @abc.abstractmethod
    def audio_format(self, voice: Voice) -> AudioFormat: ...

    def speaks(self, voice: Voice, language: str) -> bool:
        """Whether this engine, with this voice, can read text in `language` (an ISO 639-1 code)."""
        return True

    def ready_ahead(self) -> AbstractAsyncContextManager[None]:
        """While the block runs, keep ready what the next synthesis will need (an open connection), so
        that it starts at once. Nothing, for an engine that has nothing to prepare."""
        return contextlib.nullcontext()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients and models."""


class SpeechRouter:
    """Chooses the engine for each chunk: the voice's own engine when it speaks the chunk's language,
    otherwise the fallback engine (so a Chinese chunk is never read by an English-only voice)."""

    def __init__(self, engines: dict[str, TTSEngine], fallback: str | None = None):
        self.engines = engines
        self.fallback = fallback

    def route(self, voice: Voice, language: str) -> tuple[TTSEngine, Voice]:
        engine = self.engines.get(voice.engine)
        if engine is not None and engine.speaks(voice, language):
            return engine, voice
        if self.fallback is not None:
            fallback = self.engines[self.fallback]
            routed = voice.replace(engine=self.fallback, name=language, language=language)
            if fallback.speaks(routed, language):
                return fallback, routed
        if engine is None:
            raise TTSError(f"no TTS engine named {voice.engine!r}")
        return engine, voice

    async def aclose(self) -> None:
        for engine in self.engines.values():
            await engine.aclose()


def _innermost(exc: BaseException) -> BaseException:
    """The error at the bottom of `exc`'s causes: openai and httpx-aiohttp rename what aiohttp raised (a
    server that closed the connection becomes a "timeout")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


class OpenAISpeech(TTSEngine):
    """`/v1/audio/speech` of any OpenAI-compatible server, read as a stream so the first bytes can be
    forwarded before the whole chunk is synthesized."""

    name = "openai"
    cancels_cleanly = True  # the response stream is closed
    SAMPLE_RATE = 24000  # what OpenAI's voices produce for every format

    def __init__(self, client: openai.AsyncOpenAI, model: str):
        self.client = client
        self.model = model

    def audio_format(self, voice: Voice) -> AudioFormat:
        return AudioFormat(voice.format, self.SAMPLE_RATE)

    def ready_ahead(self) -> AbstractAsyncContextManager[None]:
        return connection_ahead(self.client)

    async def synthesize(self, text: str, voice: Voice) -> AsyncIterator[bytes]:
        # Posted as a plain body and read as the raw response, like the LLM's stream: the client still
        # sends, authenticates and raises its errors, but skips `audio.speech.create`'s typed transform
        # of the parameters and its response wrappers, about a third of the request's CPU (seven requests
        # an answer in the benchmark, 25 answers a worker in a burst).
        body = {
            "model": self.model,
            "voice": voice.name,
            "input": text,
            "speed": voice.speed,
            "response_format": voice.format,
        }
        try:
            try:
                response = await self._post(body)
            except openai.APIConnectionError as exc:
                # Before any answer: most likely a pooled connection the server closed as the request
                # went out (servers close idle connections after a few seconds, as the pool does).
                broke = _innermost(exc).__class__.__name__
                logger.info("speech request's connection broke before an answer (%s); sending it again", broke)
                response = await self._post(body)
            try:
                async for data in response.aiter_bytes():
                    if data:
                        yield data
            finally:
                await response.aclose()
        except openai.APIStatusError as exc:
            raise TTSError(f"speech endpoint answered {exc.status_code}") from exc
        except openai.APIError as exc:
            raise TTSError(f"speech request failed: {_innermost(exc).__class__.__name__}") from exc
        except httpx.HTTPError as exc:
            # The client wraps errors of the request, not of the streamed body read after it.
            raise TTSError(f"speech stream broken: {exc.__class__.__name__}") from exc

    async def _post(self, body: dict[str, object]) -> httpx.Response:
        return await self.client.post(
            "/audio/speech",
            body=body,
            cast_to=httpx.Response,
            stream=True,
            options={"headers": {"Accept": "application/octet-stream"}},
        )

    async def aclose(self) -> None:
        await self.client.close()
