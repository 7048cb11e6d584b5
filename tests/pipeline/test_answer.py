"""AnswerPipeline end to end on the real OpenAI engines and a fake server: order, concurrency,
latency, cancellation, failures and the shape of the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from contextlib import aclosing

import pytest

from answers.pipeline.answer import (
    AnswerDone,
    AnswerEvent,
    AnswerFailed,
    AnswerPipeline,
    AnswerStarted,
    AudioFrame,
    ChunkFailed,
    ChunkReady,
)
from answers.pipeline.chunker import Chunk, SpeechChunker
from answers.pipeline.llm import LLMTimeouts
from answers.pipeline.openai_client import async_openai
from answers.pipeline.tts import OpenAISpeech, SpeechRouter
from tests.fakes.openai_server import Script, split_tokens

from .conftest import STEP, answer_request, collect, events_of, eventually, leftover_tasks, spoken

# Four sentences, each long enough to be a chunk of its own.
FOUR = (
    "The first sentence is slow to speak. The second sentence comes out quickly. "
    "The third sentence is quick as well. The fourth sentence closes the answer."
)
EIGHT = " ".join(
    f"Sentence number {n} is here to be spoken."
    for n in ("one", "two", "three", "four", "five", "six", "seven", "eight")
)
UNPUNCTUATED_END = (
    "Pi is about three point one four. It never ends and never repeats. "
    "Mathematicians have studied it for centuries and the last words have no full stop"
)


def terminal(events: list[AnswerEvent]) -> AnswerDone | AnswerFailed:
    end = events[-1]
    assert isinstance(end, AnswerDone | AnswerFailed), end
    return end


def assert_well_formed(events: list[AnswerEvent]) -> None:
    """AnswerStarted first; chunks in seq order, each announced by ChunkReady, then its audio frames
    ending with a `last` frame or a ChunkFailed; exactly one terminal event, last."""
    assert isinstance(events[0], AnswerStarted)
    assert sum(isinstance(e, AnswerDone | AnswerFailed) for e in events) == 1
    terminal(events)
    expected_seq = 0
    open_seq: int | None = None  # the chunk whose audio is being delivered
    for event in events[1:-1]:
        assert not isinstance(event, AnswerStarted)
        if isinstance(event, ChunkReady):
            assert open_seq is None, f"chunk {open_seq} not finished before chunk {event.seq}"
            assert event.seq == expected_seq
            open_seq, expected_seq = event.seq, expected_seq + 1
        elif isinstance(event, AudioFrame):
            assert event.seq == open_seq
            assert (event.format, event.sample_rate) == ("mp3", 24000)
            if event.last:
                open_seq = None
        elif isinstance(event, ChunkFailed):
            assert event.seq == open_seq
            open_seq = None
    # Only an answer cut short (deadline) may leave its current chunk unfinished.
    assert open_seq is None or isinstance(events[-1], AnswerFailed)


def ready(events: list[AnswerEvent]) -> dict[int, str]:
    return {e.seq: e.speech for e in events if isinstance(e, ChunkReady)}


# --- Order, concurrency, latency ------------------------------------------------------------------


async def test_audio_stays_in_chunk_order_when_later_chunks_finish_synthesis_first(server, build_pipeline):
    server.script = Script(tokens=split_tokens(FOUR), tts_delays={"slow": 0.2}, tts_pieces=3)
    events = events_of(await collect(build_pipeline(concurrency=4), answer_request()))

    first, *later = server.speech_requests
    assert "slow" in first["body"]["input"]
    assert all(request["end"] < first["end"] for request in later)  # the premise: chunk 0 finished last
    assert_well_formed(events)
    frames = [e.seq for e in events if isinstance(e, AudioFrame)]
    assert frames == sorted(frames)
    assert spoken(events) == ready(events) == dict(enumerate(r["body"]["input"] for r in server.speech_requests))
    assert isinstance(terminal(events), AnswerDone)


@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_speech_requests_in_flight_reach_but_never_exceed_the_concurrency(server, build_pipeline, concurrency):
    server.script = Script(tokens=split_tokens(EIGHT), tts_first_byte=0.03)
    events = events_of(await collect(build_pipeline(concurrency=concurrency), answer_request()))
    assert len(server.speech_requests) == 8
    assert server.max_speech_in_flight == concurrency
    assert len(spoken(events)) == 8


async def test_first_audio_is_delivered_before_the_llm_has_finished(server, build_pipeline):
    server.script = Script(tokens=split_tokens(FOUR), token_delay=0.02)
    received = await collect(build_pipeline(), answer_request())
    first_audio = next(r.at for r in received if isinstance(r.event, AudioFrame))
    timings = terminal(events_of(received)).timings
    assert timings.llm_done is not None
    # `at` counts from before the pipeline's own start, so this holds only if audio truly came first.
    assert first_audio < timings.llm_done


async def test_first_chunk_is_synthesized_before_the_token_that_confirms_where_it_ends(server, build_pipeline):
    # The comma ends the first chunk only if a space follows; that token comes 0.4 s later.
    first = "Redis keeps the whole channel layer in memory,"
    server.script = Script(tokens=[first, " so a message crosses it fast."], token_delay=0.4)
    start = time.monotonic()
    events = events_of(await collect(build_pipeline(), answer_request()))

    assert [r["body"]["input"] for r in server.speech_requests] == [first, "so a message crosses it fast."]
    assert server.speech_requests[0]["start"] - start < 0.2
    assert server.closed_early == []  # what was started early was kept, not asked again
    assert spoken(events) == {0: first, 1: "so a message crosses it fast."}
    assert_well_formed(events)


async def test_a_later_chunk_is_synthesized_before_the_token_that_confirms_where_it_ends(server, build_pipeline):
    # "…the second one." ends a chunk only if the next token starts a new sentence; it comes 0.4 s later.
    tokens = ["This is the first sentence of it.", " And this is the second one.", " Then a third."]
    server.script = Script(tokens=tokens, token_delay=0.4)
    events = events_of(await collect(build_pipeline(), answer_request()))

    chat = server.log["chat"][0]
    second = server.speech_requests[1]
    assert second["body"]["input"] == "And this is the second one."
    assert second["start"] - chat["tokens"][1] < 0.2  # not at the third token, 0.4 s later
    assert server.closed_early == []
    assert spoken(events) == {0: tokens[0], 1: tokens[1].strip(), 2: tokens[2].strip()}
    assert_well_formed(events)


async def test_on_an_engine_that_cannot_stop_part_way_only_the_first_chunk_is_started_early(server, build_pipeline):
    # Piper on the CPU finishes a sentence it has begun: a wrong guess would cost the chunks after it.
    tokens = ["This is the first sentence of it", ".", " And this is the second one.", " Then a third."]
    server.script = Script(tokens=tokens, token_delay=0.4)
    pipeline = build_pipeline()
    pipeline.speech.engines["openai"].cancels_cleanly = False
    events = events_of(await collect(pipeline, answer_request()))

    written = server.log["chat"][0]["tokens"]
    first, second, _ = server.speech_requests
    assert first["start"] < written[2]  # guessed at ".", before " And" confirmed it
    assert second["body"]["input"] == "And this is the second one."
    assert second["start"] >= written[3]  # confirmed by " Then", not guessed
    assert len(spoken(events)) == 3


async def test_the_first_chunk_is_spoken_on_a_connection_opened_while_the_llm_was_thinking(server, build_pipeline):
    # Each of three answers started together holds a connection of its own, not one between them.
    server.script = Script(tokens=split_tokens(FOUR), first_token_delay=0.2, token_delay=0.01)
    pipeline = build_pipeline()
    answers = await asyncio.gather(*(collect(pipeline, answer_request(f"Question {i}?")) for i in range(3)))

    first_token = min(chat["tokens"][0] for chat in server.log["chat"])
    firsts = [speech for speech in server.log["speech"] if speech["text"] == "The first sentence is slow to speak."]
    assert len(firsts) == 3
    assert all(speech["connected"] < first_token for speech in firsts)
    assert len({speech["connected"] for speech in firsts}) == 3  # three connections
    assert all(len(spoken(events_of(received))) == 4 for received in answers)


async def test_the_connection_held_for_an_answer_that_speaks_nothing_goes_back_to_the_pool(server, build_pipeline):
    pipeline = build_pipeline()
    server.script = Script(tokens=split_tokens(FOUR), fail_status=500, fail_first=100)
    before = asyncio.all_tasks()
    assert isinstance(terminal(events_of(await collect(pipeline, answer_request()))), AnswerFailed)
    assert await leftover_tasks(before) == []

    server.script = Script(tokens=split_tokens(FOUR))
    started = time.monotonic()
    events = events_of(await collect(pipeline, answer_request()))
    assert len(spoken(events)) == 4
    # The failed answer's connection, opened before this answer started, took its first speech.
    assert server.log["speech"][0]["connected"] < started


async def test_a_speech_server_that_never_accepts_does_not_hold_up_the_end_of_an_answer_with_nothing_to_say(
    server, make_llm
):
    # A listening socket whose accept queue is full drops new connections' SYNs: they hang.
    with socket.socket() as blackhole, contextlib.ExitStack() as queued:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        for _ in range(3):
            waiting = queued.enter_context(socket.socket())
            waiting.setblocking(False)
            waiting.connect_ex(blackhole.getsockname())
        client = async_openai(api_key="k", base_url=f"http://127.0.0.1:{blackhole.getsockname()[1]}/v1")
        speech = SpeechRouter({"openai": OpenAISpeech(client, "fake-tts")})
        server.script = Script(tokens=split_tokens(FOUR), fail_status=500, fail_first=100)
        pipeline = AnswerPipeline(make_llm(), speech)
        try:
            # Well before the speech client's 5 s connect timeout.
            events = events_of(await collect(pipeline, answer_request(), within=1.0))
        finally:
            await speech.aclose()
    assert isinstance(terminal(events), AnswerFailed)


async def test_connections_kept_warm_take_the_next_answers_llm_request_and_first_speech(server, build_pipeline):
    server.script = Script(tokens=split_tokens(FOUR))
    pipeline = build_pipeline()
    keeping = asyncio.create_task(pipeline.keep_warm(every=0.05))
    try:
        await eventually(lambda: len(server.connected) == 2, within=STEP)  # the LLM's and the speech's
        started = time.monotonic()
        events = events_of(await collect(pipeline, answer_request()))
    finally:
        keeping.cancel()
        await asyncio.wait({keeping})
    assert len(spoken(events)) == 4
    assert server.log["chat"][0]["connected"] < started
    assert server.log["speech"][0]["connected"] < started


async def test_a_first_chunk_started_early_that_the_next_token_disproves_is_cancelled(server, build_pipeline):
    server.script = Script(
        tokens=["The price is 1,", "299 dollars in total.", " Thank you for asking."], token_delay=0.2,
        tts_first_byte=0.5,
    )  # fmt: skip
    events = events_of(await collect(build_pipeline(), answer_request()))

    inputs = [r["body"]["input"] for r in server.speech_requests]
    assert inputs == ["The price is 1,", "The price is 1,299 dollars in total.", "Thank you for asking."]
    assert server.closed_early == ["speech"]
    assert spoken(events) == dict(enumerate(inputs[1:]))
    assert_well_formed(events)


# --- Words and timings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens",
    [split_tokens(UNPUNCTUATED_END), [UNPUNCTUATED_END[i : i + 3] for i in range(0, len(UNPUNCTUATED_END), 3)]],
    ids=["word tokens", "three-character tokens"],
)
async def test_every_word_is_spoken_including_a_last_sentence_without_punctuation(server, build_pipeline, tokens):
    server.script = Script(tokens=tokens)
    events = events_of(await collect(build_pipeline(), answer_request()))
    assert_well_formed(events)
    said = spoken(events)
    assert " ".join(said[seq] for seq in sorted(said)).split() == UNPUNCTUATED_END.split()
    assert terminal(events).text == UNPUNCTUATED_END


async def test_timings_are_recorded_in_the_order_things_happen(server, build_pipeline):
    server.script = Script(tokens=split_tokens(FOUR), first_token_delay=0.02, token_delay=0.005, tts_first_byte=0.02)
    events = events_of(await collect(build_pipeline(), answer_request()))
    done = terminal(events)
    assert isinstance(done, AnswerDone)
    t = done.timings
    assert None not in (t.first_token, t.first_chunk, t.first_audio, t.llm_done, t.total)
    assert 0.02 <= t.first_token <= t.first_chunk <= t.first_audio <= t.total
    assert t.first_token <= t.llm_done <= t.total
    # The speech endpoint's latency (synthesis may start before the chunker confirms the first chunk).
    assert t.first_audio - t.first_token >= 0.02
    assert t.characters == len(FOUR)
    assert t.chunks == len(ready(events)) == 4
    assert [chunk.seq for chunk, _ in done.chunks] == [0, 1, 2, 3]
    for _, chunk in done.chunks:
        assert chunk.ready <= chunk.first_audio <= chunk.done <= t.total


# --- Prompts --------------------------------------------------------------------------------------


async def test_each_request_sends_its_own_system_prompt_even_when_answers_run_concurrently(server, build_pipeline):
    server.script = Script(tokens=split_tokens(FOUR), token_delay=0.01)
    pipeline = build_pipeline()
    pirate = answer_request("Who are you?", "Talk like a pirate.")
    poet = answer_request("What is the sea?", "Answer as a poet.")
    async with asyncio.TaskGroup() as group:
        answers = [group.create_task(collect(pipeline, request)) for request in (pirate, poet)]

    sent = {(r["messages"][0]["content"], r["messages"][1]["content"]) for r in server.chat_requests}
    assert sent == {("Talk like a pirate.", "Who are you?"), ("Answer as a poet.", "What is the sea?")}
    assert all(r["messages"][0]["role"] == "system" for r in server.chat_requests)
    for answer in answers:
        events = events_of(answer.result())
        assert_well_formed(events)
        assert terminal(events) == AnswerDone(FOUR, terminal(events).timings, terminal(events).chunks)


# --- Cancellation ---------------------------------------------------------------------------------


async def test_cancelling_the_consumer_mid_answer_closes_every_stream_within_100ms_and_leaves_nothing(
    server, build_pipeline, caplog
):
    # Slow tokens and slowly streamed speech: when the first audio arrives, both are mid-response.
    server.script = Script(tokens=split_tokens(EIGHT), token_delay=0.02, tts_pieces=5, tts_per_char=0.01)
    pipeline = build_pipeline()
    before = asyncio.all_tasks()
    first_audio = asyncio.Event()

    async def listen() -> None:
        async for event in pipeline.run(answer_request()):
            if isinstance(event, AudioFrame):
                first_audio.set()

    listener = asyncio.create_task(listen())
    async with asyncio.timeout(STEP):
        await first_audio.wait()
    assert server.open_streams >= 2  # the chat completion and at least one speech response

    stopped = time.monotonic()
    listener.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(STEP):
            await listener
    await eventually(lambda: server.open_streams == 0, within=0.1 - (time.monotonic() - stopped))

    assert "chat" in server.closed_early and "speech" in server.closed_early
    assert await leftover_tasks(before) == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_closing_the_events_mid_answer_closes_every_stream_within_100ms_and_leaves_nothing(
    server, build_pipeline, caplog
):
    server.script = Script(tokens=split_tokens(EIGHT), token_delay=0.02, tts_pieces=5, tts_per_char=0.01)
    before = asyncio.all_tasks()
    async with asyncio.timeout(STEP), aclosing(build_pipeline().run(answer_request())) as events:
        async for event in events:
            if isinstance(event, AudioFrame):
                break
        assert server.open_streams >= 2
        stopped = time.monotonic()
    await eventually(lambda: server.open_streams == 0, within=0.1 - (time.monotonic() - stopped))
    assert "chat" in server.closed_early and "speech" in server.closed_early
    assert await leftover_tasks(before) == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_answer_over_its_deadline_fails_as_answer_timeout_and_closes_every_stream(server, build_pipeline):
    server.script = Script(tokens=split_tokens(EIGHT), token_delay=0.02, tts_pieces=5, tts_per_char=0.01)
    received = await collect(build_pipeline(answer_timeout=0.3), answer_request())
    events = events_of(received)
    assert_well_formed(events)
    failed = terminal(events)
    assert isinstance(failed, AnswerFailed)
    assert failed.reason == "answer_timeout"
    assert 0 < len(failed.text) < len(EIGHT)
    assert 0.3 <= received[-1].at < 0.5
    await eventually(lambda: server.open_streams == 0, within=0.1)


# --- LLM failures ---------------------------------------------------------------------------------


async def test_llm_rate_limit_is_retried_and_the_answer_completes(server, build_pipeline):
    server.script = Script(tokens=split_tokens(FOUR), fail_status=429, fail_first=1)
    events = events_of(await collect(build_pipeline(retries=1), answer_request()))
    assert len(server.chat_requests) == 2
    assert_well_formed(events)
    assert terminal(events) == AnswerDone(FOUR, terminal(events).timings, terminal(events).chunks)
    assert len(spoken(events)) == 4


@pytest.mark.parametrize(("status", "reason"), [(429, "rate_limited"), (500, "server_error")])
async def test_llm_failing_every_attempt_fails_the_answer_with_its_reason(server, build_pipeline, status, reason):
    server.script = Script(tokens=split_tokens(FOUR), fail_status=status, fail_first=100)
    events = events_of(await collect(build_pipeline(retries=2), answer_request()))
    assert len(server.chat_requests) == 3
    assert_well_formed(events)
    failed = terminal(events)
    assert isinstance(failed, AnswerFailed)
    assert (failed.reason, failed.text, failed.timings.first_token) == (reason, "", None)
    assert events[1:-1] == []
    assert server.speech_requests == []


async def test_no_first_token_in_time_fails_the_answer_as_first_token_timeout(server, build_pipeline, caplog):
    server.script = Script(tokens=split_tokens(FOUR), first_token_delay=2.0)
    timeouts = LLMTimeouts(connect=1, first_token=0.1, idle=1)
    received = await collect(build_pipeline(timeouts=timeouts, retries=0), answer_request())
    failed = terminal(events_of(received))
    assert isinstance(failed, AnswerFailed)
    assert failed.reason == "first_token_timeout"
    assert received[-1].at < 1.0
    await eventually(lambda: server.open_streams == 0, within=0.1)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    ("script", "reason"),
    [({"stall_after": 16}, "idle_timeout"), ({"break_after": 16}, "stream_broken")],
    ids=["stall", "broken stream"],
)
async def test_llm_failing_mid_answer_keeps_the_partial_text_and_speaks_what_was_generated(
    server, build_pipeline, script, reason
):
    tokens = split_tokens(FOUR)
    server.script = Script(tokens=tokens, token_delay=0.005, **script)
    timeouts = LLMTimeouts(connect=1, first_token=1, idle=0.15)
    events = events_of(await collect(build_pipeline(timeouts=timeouts, retries=2), answer_request()))

    assert_well_formed(events)
    failed = terminal(events)
    assert isinstance(failed, AnswerFailed)
    partial = "".join(tokens[:16])
    assert (failed.reason, failed.text) == (reason, partial)
    assert len(server.chat_requests) == 1  # no retry once text has been spoken
    said = " ".join(spoken(events)[seq] for seq in sorted(spoken(events)))
    assert said.startswith("The first sentence is slow to speak. The second sentence comes out quickly.")
    assert partial.split()[: len(said.split())] == said.split()
    assert [chunk.speech for chunk, _ in failed.chunks][:2] == [
        "The first sentence is slow to speak.",
        "The second sentence comes out quickly.",
    ]


async def test_empty_llm_answer_ends_done_with_nothing_spoken(server, build_pipeline):
    server.script = Script(tokens=[])
    events = events_of(await collect(build_pipeline(), answer_request()))
    assert [type(e) for e in events] == [AnswerStarted, AnswerDone]
    assert (terminal(events).text, terminal(events).timings.chunks) == ("", 0)
    assert server.speech_requests == []


async def test_a_crash_while_chunking_fails_the_answer_as_internal_error_and_closes_the_llm_stream(
    server, build_pipeline, caplog
):
    class CrashingChunker(SpeechChunker):
        def feed(self, text: str) -> list[Chunk]:
            if "third" in text:
                raise RuntimeError("chunker bug")
            return super().feed(text)

    server.script = Script(tokens=split_tokens(FOUR), token_delay=0.02)
    received = await collect(build_pipeline(chunker_factory=CrashingChunker), answer_request())
    ended = time.monotonic()
    failed = terminal(events_of(received))
    assert isinstance(failed, AnswerFailed)
    assert failed.reason == "internal_error"
    await eventually(lambda: server.open_streams == 0, within=0.1 - (time.monotonic() - ended))
    assert server.closed_early == ["chat"]
    # No task check: closed between two tokens, the openai client's nested SSE generators are left to
    # the event loop to finalize (their response is already closed).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == ["answer pipeline crashed"]


# --- TTS failures ---------------------------------------------------------------------------------


async def test_a_speech_request_whose_connection_breaks_before_an_answer_is_sent_once_more(server, build_pipeline):
    server.script = Script(tokens=split_tokens(FOUR), tts_drop_first=1)
    events = events_of(await collect(build_pipeline(concurrency=1), answer_request()))
    assert_well_formed(events)
    assert len(spoken(events)) == 4 and not [e for e in events if isinstance(e, ChunkFailed)]
    first, again = server.speech_requests[:2]
    assert first["body"] == again["body"] and len(server.speech_requests) == 5


async def test_a_speech_request_whose_connection_breaks_twice_fails_its_chunk(server, build_pipeline):
    server.script = Script(tokens=split_tokens(FOUR), tts_drop_first=2)
    events = events_of(await collect(build_pipeline(concurrency=1), answer_request()))
    assert_well_formed(events)
    [failed] = [e for e in events if isinstance(e, ChunkFailed)]
    assert (failed.seq, failed.error) == (0, "speech request failed: ServerDisconnectedError")
    assert sorted(spoken(events)) == [1, 2, 3]


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ({"tts_fail_on": ["second"]}, "500"),
        ({"tts_delays": {"second": 2.0}}, "longer than"),
        ({"tts_break_on": ["second"], "tts_pieces": 3}, "broken"),
    ],
    ids=["speech endpoint error", "speech timeout", "speech stream cut"],
)
async def test_a_chunk_whose_speech_fails_is_reported_without_a_traceback_and_the_others_are_spoken(
    server, build_pipeline, caplog, script, error
):
    server.script = Script(tokens=split_tokens(FOUR), **script)
    received = await collect(build_pipeline(tts_timeout=0.15), answer_request())
    events = events_of(received)

    assert_well_formed(events)
    [failed] = [e for e in events if isinstance(e, ChunkFailed)]
    assert (failed.seq, failed.text) == (1, "The second sentence comes out quickly.")
    assert error in failed.error
    assert sorted(spoken(events)) == [0, 2, 3]
    done = terminal(events)
    assert isinstance(done, AnswerDone)
    assert [chunk.seq for chunk, _ in done.chunks] == [0, 2, 3]
    assert received[-1].at < 1.0
    await eventually(lambda: server.open_streams == 0, within=0.1)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
