"""The embedded offline engines, for real: SmolLM2 through llama-cpp, the packaged Piper voice, espeak-ng."""

from __future__ import annotations

import array
import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from answers.pipeline.audio import audio_duration, wav_to_pcm
from answers.pipeline.llm import LLMRequest
from answers.pipeline.local_llm import LocalLLM
from answers.pipeline.local_tts import EspeakSpeech, PiperSpeech
from answers.pipeline.tts import SpeechRouter, TTSError, Voice

pytestmark = pytest.mark.offline

SENTENCE = (  # 21 words
    "Thanks for the question: the stream starts every Friday at eight, and the replay stays online for two whole weeks."
)
CHINESE = "谢谢你的提问，直播每周五晚上八点开始。"
SILENCE_RMS = 300  # of 16-bit samples; speech at Piper's normalized level is in the thousands


def rms(pcm: bytes) -> float:
    samples = array.array("h", pcm)
    return math.sqrt(sum(sample * sample for sample in samples) / max(len(samples), 1))


async def collect(audio: AsyncIterator[bytes], within: float = 20) -> bytes:
    async with asyncio.timeout(within):
        return b"".join([piece async for piece in audio])


@pytest.fixture(scope="module")
def llm() -> Iterator[LocalLLM]:
    engine = LocalLLM(max_tokens=60)
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def piper() -> Iterator[PiperSpeech]:
    engine = PiperSpeech()
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def espeak() -> EspeakSpeech:
    return EspeakSpeech()


# --- SmolLM2 ----------------------------------------------------------------------------------------


async def test_smollm2_streams_an_answer_token_by_token(llm: LocalLLM) -> None:
    request = LLMRequest("What is the capital of France?", "Answer in one short sentence.")
    async with asyncio.timeout(30):
        tokens = [token async for token in llm.stream(request)]
    assert len(tokens) >= 3
    assert "".join(tokens).strip()
    assert llm.model == "SmolLM2-135M-Instruct"


async def test_cancelling_an_answer_after_its_first_token_stops_generation_promptly(llm: LocalLLM) -> None:
    request = LLMRequest("Tell me a very long story about a dragon.", "", max_tokens=200)
    first_token = asyncio.Event()
    tokens: list[str] = []

    async def listen() -> None:
        async for token in llm.stream(request):
            tokens.append(token)
            first_token.set()

    listener = asyncio.create_task(listen())
    try:
        async with asyncio.timeout(30):
            await first_token.wait()
        started = time.perf_counter()
        listener.cancel()
        async with asyncio.timeout(2):
            with pytest.raises(asyncio.CancelledError):
                await listener
        assert time.perf_counter() - started < 1
    finally:
        listener.cancel()
    assert not llm.busy, "the generation thread is still running"
    assert len(tokens) < 100  # 200 tokens would take well over a second


# --- Piper ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp3", "wav", "pcm"])
async def test_piper_reads_a_sentence_aloud_in_each_format(piper: PiperSpeech, fmt: str) -> None:
    voice = Voice("piper", "en_US-joe-medium", format=fmt)
    sample_rate = piper.audio_format(voice).sample_rate
    audio = await collect(piper.synthesize(SENTENCE, voice))
    duration = audio_duration(audio, fmt, sample_rate)
    assert duration is not None and 3 < duration < 15
    if fmt == "mp3":
        assert audio[0] == 0xFF and audio[1] & 0xE0 == 0xE0  # an MPEG frame sync, no tag
        assert 0.5 < len(audio) * 8 / 64_000 / duration < 1.5  # ~64 kbit/s
    else:
        pcm = wav_to_pcm(audio)[0] if fmt == "wav" else audio
        assert rms(pcm) > SILENCE_RMS


async def test_piper_speaks_faster_at_a_higher_speed(piper: PiperSpeech) -> None:
    normal, fast = Voice("piper", "", format="pcm"), Voice("piper", "", speed=2.0, format="pcm")
    normal_seconds = audio_duration(await collect(piper.synthesize(SENTENCE, normal)), "pcm", 22050)
    fast_seconds = audio_duration(await collect(piper.synthesize(SENTENCE, fast)), "pcm", 22050)
    assert normal_seconds and fast_seconds
    assert fast_seconds < 0.7 * normal_seconds


async def test_piper_leaves_the_event_loop_responsive_while_it_synthesizes(piper: PiperSpeech) -> None:
    voice = Voice("piper", "", format="mp3")
    async with asyncio.timeout(20):
        await piper.warm_up(voice)
    gaps: list[float] = []
    ticking = asyncio.Event()
    synthesizing = True

    async def tick() -> None:
        last = time.perf_counter()
        while synthesizing:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            ticking.set()

    ticker = asyncio.create_task(tick())
    try:
        async with asyncio.timeout(1):
            await ticking.wait()
        await collect(piper.synthesize(" ".join([SENTENCE] * 3), voice))
    finally:
        synthesizing = False
        async with asyncio.timeout(1):
            await ticker
    assert max(gaps) < 0.05, f"the event loop stalled for {max(gaps) * 1000:.0f} ms"
    assert len(gaps) > 10, "synthesis was too quick to tell"


def test_piper_speaks_only_its_own_language(piper: PiperSpeech) -> None:
    voice = Voice("piper", "en_US-joe-medium")
    assert piper.speaks(voice, "en")
    assert piper.speaks(voice, "en-US")
    assert not piper.speaks(voice, "zh")


async def test_opus_is_refused_offline(piper: PiperSpeech) -> None:
    with pytest.raises(TTSError, match="opus"):
        await collect(piper.synthesize(SENTENCE, Voice("piper", "", format="opus")))


# --- espeak-ng and routing --------------------------------------------------------------------------


async def test_espeak_reads_chinese_aloud(espeak: EspeakSpeech) -> None:
    voice = Voice("espeak", "zh", format="wav", language="zh")
    assert espeak.speaks(voice, "zh")
    assert espeak.espeak_voice(voice) == "cmn"
    pcm, sample_rate = wav_to_pcm(await collect(espeak.synthesize(CHINESE, voice)))
    assert 1 < len(pcm) / 2 / sample_rate < 15
    assert rms(pcm) > SILENCE_RMS


async def test_router_sends_chinese_to_espeak_and_english_to_piper(piper: PiperSpeech, espeak: EspeakSpeech) -> None:
    router = SpeechRouter({"piper": piper, "espeak": espeak}, fallback="espeak")
    voice = Voice("piper", "en_US-joe-medium", format="pcm")

    engine, routed = router.route(voice, "zh")
    assert engine is espeak
    assert (routed.engine, routed.language) == ("espeak", "zh")
    assert rms(await collect(engine.synthesize(CHINESE, routed))) > SILENCE_RMS

    engine, routed = router.route(voice, "en")
    assert engine is piper
    assert routed == voice
