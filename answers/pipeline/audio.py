"""Encoding of the 16-bit mono PCM that the local engines produce (mp3, wav, raw pcm), and duration
estimates of encoded audio, used to time captions."""

from __future__ import annotations

import io
import struct
import wave

from .tts import TTSError

SAMPLE_WIDTH = 2  # bytes: 16-bit little-endian mono throughout
MP3_BITRATE = 64  # kbit/s: plenty for one voice
MP3_QUALITY = 5  # LAME: 2 = best, 7 = fastest; 5 encodes 5 s of speech in ~6 ms on one core (7: ~5, 2: ~12)


def pcm_duration(pcm: bytes, sample_rate: int) -> float:
    return len(pcm) / (SAMPLE_WIDTH * sample_rate)


def pcm_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def wav_to_pcm(data: bytes) -> tuple[bytes, int]:
    """The samples and sample rate of a 16-bit mono WAV. Tolerates the placeholder sizes that streaming
    writers (espeak-ng --stdout) put in the header: the data chunk runs to the end of the bytes."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TTSError("not a WAV file")
    position, sample_rate = 12, 0
    while position + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, position)
        body = position + 8
        if chunk_id == b"fmt ":
            _, channels, sample_rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if channels != 1 or bits != 16:
                raise TTSError(f"expected 16-bit mono WAV, got {channels} channels of {bits} bits")
        elif chunk_id == b"data":
            if not sample_rate:
                raise TTSError("WAV data before its format")
            pcm = data[body : body + size]
            return pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH], sample_rate
        position = body + size + size % 2
    raise TTSError("WAV without data")


class Encoder:
    """Encodes one utterance piece by piece: `encode` what has been synthesized, then `flush` once.
    WAV needs the total length in its header, so it comes out whole at `flush`."""

    def __init__(self, fmt: str, sample_rate: int):
        if fmt == "opus":
            raise TTSError("opus is not available offline")
        if fmt not in ("mp3", "wav", "pcm"):
            raise TTSError(f"unknown audio format {fmt!r}")
        self.format = fmt
        self.sample_rate = sample_rate
        self._pending: list[bytes] = []
        self._lame = None
        if fmt == "mp3":
            import lameenc  # optional dependency: the "offline" extra

            self._lame = lameenc.Encoder()
            self._lame.set_bit_rate(MP3_BITRATE)
            self._lame.set_in_sample_rate(sample_rate)
            self._lame.set_channels(1)
            self._lame.set_quality(MP3_QUALITY)

    def encode(self, pcm: bytes) -> bytes:
        if self._lame is not None:
            return bytes(self._lame.encode(pcm))
        if self.format == "wav":
            self._pending.append(pcm)
            return b""
        return pcm

    def flush(self) -> bytes:
        if self._lame is not None:
            return bytes(self._lame.flush())
        if self.format == "wav" and self._pending:
            return pcm_to_wav(b"".join(self._pending), self.sample_rate)
        return b""


def encode(pcm: bytes, sample_rate: int, fmt: str) -> bytes:
    encoder = Encoder(fmt, sample_rate)
    return encoder.encode(pcm) + encoder.flush()


def pcm_to_mp3(pcm: bytes, sample_rate: int) -> bytes:
    return encode(pcm, sample_rate, "mp3")


# MPEG audio layer III frame headers: bitrates (kbit/s) and sample rates by version.
_MP3_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


_HEADER = struct.Struct(">I")
# What each frame header seen so far means: (frame length in bytes, seconds). A stream uses a handful.
_FRAMES: dict[int, tuple[int, float]] = {}


def _frame(header: int) -> tuple[int, float] | None:
    """The length and duration of the layer III frame `header` starts, or None if it starts none."""
    known = _FRAMES.get(header)
    if known is not None:
        return known
    version_bits = (header >> 19) & 3
    bitrate_index = (header >> 12) & 15
    rate_index = (header >> 10) & 3
    if (
        header >> 21 != 0x7FF  # frame sync
        or version_bits == 1  # reserved
        or (header >> 17) & 3 != 1  # layer III only
        or bitrate_index in (0, 15)
        or rate_index == 3
    ):
        return None
    version = 1 if version_bits == 3 else 2
    sample_rate = _MP3_SAMPLE_RATES[version_bits][rate_index]
    samples = 1152 if version == 1 else 576
    padding = (header >> 9) & 1
    length = samples // 8 * _MP3_BITRATES[version][bitrate_index] * 1000 // sample_rate + padding
    if len(_FRAMES) < 4096:
        _FRAMES[header] = (length, samples / sample_rate)
    return length, samples / sample_rate


def _mp3_duration(data: bytes) -> float | None:
    """Sum of the frames' durations, skipping an ID3v2 tag and LAME's Xing/Info frame."""
    position = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        position = 10 + size
    seconds, frames = 0.0, 0
    unpack = _HEADER.unpack_from
    while position + 4 <= len(data):
        frame = _frame(unpack(data, position)[0])
        if frame is None:
            if frames:
                break  # trailing tag or garbage
            # Still looking for the first frame: jump to the next possible sync byte.
            position = data.find(b"\xff", position + 1)
            if position < 0:
                break
            continue
        if frames or not _info_frame(data, position):  # only a first frame can be one
            seconds += frame[1]
        frames += 1
        position += frame[0]
    return seconds if frames else None


def _info_frame(data: bytes, position: int) -> bool:
    """Whether the frame at `position` is LAME's Xing/Info frame, which holds no audio."""
    return data.find(b"Xing", position, position + 40) >= 0 or data.find(b"Info", position, position + 40) >= 0


def audio_duration(data: bytes, fmt: str, sample_rate: int) -> float | None:
    """Seconds of audio in `data`: exact for wav and pcm, from frame headers for mp3, None if unknown."""
    if fmt == "pcm":
        return pcm_duration(data, sample_rate)
    if fmt == "wav":
        try:
            pcm, rate = wav_to_pcm(data)
        except (TTSError, struct.error):
            return None
        return pcm_duration(pcm, rate)
    if fmt == "mp3":
        return _mp3_duration(data)
    return None
