"""Caption export: cues timed by the stored audio of the chunks that were actually heard."""

from __future__ import annotations

from answers.captions import cues, to_srt, to_vtt
from answers.models import AnswerChunk


def chunk(seq: int, caption: str, duration: float | None = 1.0, *, audio: bytes = b"RIFF", error: str = ""):
    return AnswerChunk(seq=seq, caption=caption, audio=audio, duration=duration, error=error)


def test_cues_are_back_to_back_from_the_audio_durations():
    found = cues([chunk(0, "Pi is about 3.14.", 1.25), chunk(1, "It never ends.", 0.5), chunk(2, "Bye", 2.0)])
    assert [(c.start, c.end, c.text) for c in found] == [
        (0.0, 1.25, "Pi is about 3.14."),
        (1.25, 1.75, "It never ends."),
        (1.75, 3.75, "Bye"),
    ]


def test_a_failed_chunk_has_no_cue_and_takes_no_time():
    found = cues([chunk(0, "One.", 1.0), chunk(1, "Lost.", None, audio=b"", error="tts 500"), chunk(2, "Two.", 1.0)])
    assert [(c.start, c.end, c.text) for c in found] == [(0.0, 1.0, "One."), (1.0, 2.0, "Two.")]


def test_chunks_are_timed_in_seq_order_whatever_order_they_come_in():
    found = cues([chunk(1, "Second.", 2.0), chunk(0, "First.", 1.0)])
    assert [c.text for c in found] == ["First.", "Second."]
    assert found[1].start == 1.0


def test_webvtt_file():
    text = to_vtt([chunk(0, "Fish & <chips>", 1.5), chunk(1, "Over an hour -->", 3600.0)])
    assert text == (
        "WEBVTT\n\n"
        "1\n00:00:00.000 --> 00:00:01.500\nFish &amp; &lt;chips>\n\n"
        "2\n00:00:01.500 --> 01:00:01.500\nOver an hour →\n"
    )


def test_srt_file():
    text = to_srt([chunk(0, "Hello  there.\nFriend.", 0.3333), chunk(1, "Bye.", 1.0)])
    assert text == (
        "1\n00:00:00,000 --> 00:00:00,333\nHello there. Friend.\n\n2\n00:00:00,333 --> 00:00:01,333\nBye.\n"
    )


def test_an_answer_without_audio_has_an_empty_caption_file():
    assert to_vtt([chunk(0, "Lost.", None, audio=b"", error="x")]) == "WEBVTT\n"
    assert to_srt([]) == ""
