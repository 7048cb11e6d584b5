"""Builds the pipeline's LLM and TTS engines from settings, once per process."""

from __future__ import annotations

import functools

from django.conf import settings

from .pipeline.answer import AnswerPipeline
from .pipeline.llm import LLM, LLMTimeouts, OpenAIChatLLM
from .pipeline.openai_client import async_openai
from .pipeline.tts import OpenAISpeech, SpeechRouter, Voice

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
)  # fmt: skip
PACKAGED_PIPER_VOICE = "en_US-joe-medium"


def build_llm() -> LLM:
    if settings.LIVEQA_LLM_BACKEND == "local":
        from .pipeline.local_llm import LocalLLM

        return LocalLLM(
            settings.LIVEQA_LOCAL_LLM_PATH or None,
            n_threads=settings.LIVEQA_LOCAL_LLM_THREADS,
            max_tokens=settings.LIVEQA_MAX_TOKENS,
            temperature=settings.LIVEQA_TEMPERATURE,
            first_token_timeout=settings.LIVEQA_LLM_FIRST_TOKEN_TIMEOUT,
            idle_timeout=settings.LIVEQA_LLM_IDLE_TIMEOUT,
        )
    return OpenAIChatLLM(
        model=settings.LIVEQA_LLM_MODEL,
        api_key=settings.OPENAI_API_KEY,
        base_url=settings.OPENAI_BASE_URL,
        timeouts=LLMTimeouts(
            connect=settings.LIVEQA_LLM_CONNECT_TIMEOUT,
            first_token=settings.LIVEQA_LLM_FIRST_TOKEN_TIMEOUT,
            idle=settings.LIVEQA_LLM_IDLE_TIMEOUT,
        ),
        retries=settings.LIVEQA_LLM_RETRIES,
        max_tokens=settings.LIVEQA_MAX_TOKENS,
        temperature=settings.LIVEQA_TEMPERATURE,
    )


def build_speech() -> SpeechRouter:
    engines = {}
    fallback = None
    if settings.LIVEQA_TTS_BACKEND == "local":
        from .pipeline.local_tts import EspeakSpeech, PiperSpeech

        engines["piper"] = PiperSpeech()
        engines["espeak"] = EspeakSpeech()
        fallback = "espeak"
    else:
        client = async_openai(
            api_key=settings.OPENAI_API_KEY or "unused",
            base_url=settings.OPENAI_BASE_URL,
            max_retries=0,
            timeout=settings.LIVEQA_TTS_TIMEOUT,
        )
        engines["openai"] = OpenAISpeech(client, settings.LIVEQA_TTS_MODEL)
    return SpeechRouter(engines, fallback=fallback)


def default_voice() -> Voice:
    engine = "piper" if settings.LIVEQA_TTS_BACKEND == "local" else "openai"
    return Voice(engine=engine, name=settings.LIVEQA_TTS_VOICE, format=settings.LIVEQA_AUDIO_FORMAT)


def known_voices() -> set[str]:
    """Voice names a question may ask for, besides voice presets."""
    configured = {settings.LIVEQA_TTS_VOICE}
    if settings.LIVEQA_TTS_BACKEND == "local":
        return configured | {PACKAGED_PIPER_VOICE}
    return configured | set(OPENAI_VOICES)


@functools.cache
def pipeline() -> AnswerPipeline:
    """The process's pipeline: models and clients are loaded once per worker process."""
    return AnswerPipeline(
        build_llm(),
        build_speech(),
        concurrency=settings.LIVEQA_TTS_CONCURRENCY,
        answer_timeout=settings.LIVEQA_ANSWER_TIMEOUT,
        tts_timeout=settings.LIVEQA_TTS_TIMEOUT,
    )
