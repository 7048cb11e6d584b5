"""The scenarios: what each starts, asks and measures, the physical limit it is compared with, and the
targets it is held to. Every scenario starts fresh processes and stops them, also on error."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import websockets

from liveqa.startup import run_event_loop
from tests.fakes.openai_server import split_tokens, synthesis_seconds

from .client import MP3_BYTES_PER_SECOND, AnswerTrace, Overlay, ask, percentile
from .system import BenchLiveQA, NaiveServer, ProcessMeter

ANSWER = (
    "Redis keeps the whole channel layer in memory, so a message crosses it in well under a millisecond. "
    "Each worker takes a question only when it has a free slot, which spreads the load evenly. "
    "The answer is cut into short chunks as the tokens arrive, and every chunk is synthesized while the "
    "next one is still being written. Audio is sent in order, piece by piece, as soon as it exists. "
    "That is why the first words are heard long before the answer is finished. Nothing waits for the whole text."
)
SECONDS_PER_CHAR = 0.06  # the fake's speech rate: about 15 characters, 3 words, a second

# A hosted LLM at ~50 tokens/s after 300 ms, and a streaming TTS answering in 150 ms at ~12× real time.
STANDARD_SCRIPT: dict[str, Any] = {
    "tokens": split_tokens(ANSWER),
    "first_token_delay": 0.3,
    "token_delay": 0.02,
    "tts_first_byte": 0.15,
    "tts_per_char": 0.005,
    "tts_pieces": 4,
    "tts_audio_bytes_per_char": round(SECONDS_PER_CHAR * MP3_BYTES_PER_SECOND),
    "tts_mp3_frames": True,  # audio whose duration can be read, as a real provider's MP3
}
# Synthesis barely faster than speech: first byte to last ≈ 0.9 × the audio's duration.
SLOW_PIECES = 8
SLOW_TTS_SCRIPT = {
    **STANDARD_SCRIPT,
    "tts_first_byte": 0.05,
    "tts_pieces": SLOW_PIECES,
    "tts_per_char": round(0.9 * SECONDS_PER_CHAR * SLOW_PIECES / (SLOW_PIECES - 1), 5),
}
# A remote server: each new connection costs 60 ms (a TCP and a TLS 1.3 handshake at a 30 ms round
# trip) before its first request is served. Questions come after quiet spells longer than the clients'
# keep-alive (5 s, the openai client's): every answer's requests would find their connections closed,
# unless kept open.
REMOTE_SCRIPT = {**STANDARD_SCRIPT, "new_connection_delay": 0.06}
QUIET_SPELL = 6.0
SETTINGS = {
    "LIVEQA_AUDIO_FORMAT": "mp3",
    "LIVEQA_TTS_BACKEND": "openai",
    "LIVEQA_LLM_BACKEND": "openai",
    # Pings every 50 ms would trip the per-connection limit (30 messages in 10 s) within 1.5 s.
    "LIVEQA_RATE_LIMIT_MESSAGES": "100000",
}
PING_EVERY = 0.05
FIRST_AUDIO_SLACK_ONE, FIRST_AUDIO_SLACK_P95, TOTAL_SLACK = 0.025, 0.060, 0.050
PING_P95_BOUND, FANOUT_ADDED_BOUND, AUDIBLE_STALL = 0.020, 0.050, 0.020


METRICS = ("first_audio", "total", "max_gap", "stall_total", "stall_max", "audio_seconds", "tail")


@dataclass(frozen=True)
class Options:
    quick: bool = False
    rounds: int | None = None  # of the concurrent scenario (3, or 1 when quick)


# --- Summaries ------------------------------------------------------------------------------------


def summarize(traces: list[AnswerTrace], meter: dict[str, Any] | None) -> dict[str, Any]:
    good = [t for t in traces if t.ok]
    metrics = [t.metrics() for t in good]

    def stat(key: str) -> dict[str, float]:
        values = [m[key] for m in metrics]
        if not values:
            return {}
        return {"median": statistics.median(values), "p95": percentile(values, 95), "max": max(values)}

    pings = [p for t in good for p in t.pings]
    return {
        "answers": len(traces),
        "failed": len(traces) - len(good),
        "failures": sorted({t.end_event.get("reason", "no audio") for t in traces if not t.ok}),
        **{key: stat(key) for key in METRICS},
        "ping": {"n": len(pings), "median": statistics.median(pings), "p95": percentile(pings, 95)} if pings else {},
        "processes": meter or {},
    }


def tokens_to_write(tokens: list[str], captions: list[str]) -> list[int]:
    """For each chunk, how many tokens the LLM must write before its caption is complete."""
    counts, text, count = [], "", 0
    wanted = 0
    for caption in captions:
        wanted += len("".join(caption.split()))
        while len("".join(text.split())) < wanted and count < len(tokens):
            text += tokens[count]
            count += 1
        counts.append(count)
    return counts


def limits(script: dict[str, Any], trace: AnswerTrace, tts_first_byte: float | None = None) -> dict[str, Any]:
    """The physical limit of the first audio (LLM first token + the first chunk's tokens + TTS first byte)
    and of the total: every chunk's audio ends at the earliest when its last token is written plus its
    synthesis. For the last chunk that is the target's "LLM end + the last chunk's TTS"; an earlier, longer
    chunk released near the end can finish later, and then it is the limit."""
    tokens = script["tokens"]
    captions = [text for _, _, text in sorted(trace.chunks, key=lambda c: c[1])]
    counts = tokens_to_write(tokens, captions)
    first_byte = script["tts_first_byte"] if tts_first_byte is None else tts_first_byte
    llm_end = script["first_token_delay"] + (len(tokens) - 1) * script["token_delay"]
    ends = [
        script["first_token_delay"] + (count - 1) * script["token_delay"] + synthesis_seconds(script, caption)
        for count, caption in zip(counts, captions, strict=True)
    ]
    ends[-1] = llm_end + synthesis_seconds(script, captions[-1])
    latest = max(range(len(ends)), key=ends.__getitem__)
    return {
        "first_chunk": captions[0],
        "first_chunk_tokens": counts[0],
        "first_audio": script["first_token_delay"] + (counts[0] - 1) * script["token_delay"] + first_byte,
        "llm_end": llm_end,
        "last_chunk_synthesis": synthesis_seconds(script, captions[-1]),
        "llm_end_plus_last_tts": ends[-1],
        "latest_chunk": captions[latest],
        "total": ends[latest],
    }


def target(name: str, value: float | None, bound: float) -> dict[str, Any]:
    return {"name": name, "value": value, "bound": bound, "pass": value is not None and value <= bound}


def first_audio_target(result: dict[str, Any], limit: dict[str, Any], why: str = "") -> dict[str, Any]:
    """One answer at a time: its first audio, median, within 25 ms of the limit (`why`: what it holds)."""
    name = "first audio, median ≤ limit + 25 ms" + (f" ({why})" if why else "")
    return target(name, result["first_audio"].get("median"), limit["first_audio"] + FIRST_AUDIO_SLACK_ONE)


def without_total_bounds(limit: dict[str, Any]) -> dict[str, Any]:
    """`limit` with no bound on the total, for a scenario whose later syntheses are not scripted."""
    return {**limit, "total": None, "last_chunk_synthesis": None, "llm_end_plus_last_tts": None, "latest_chunk": None}


def listening_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """What a listener of one answer at a time is promised: quick pings and no audible stall."""
    return [
        target("ping during an answer, p95 ≤ 20 ms", result["ping"].get("p95"), PING_P95_BOUND),
        target("no audible stall: worst answer's total stall ≤ 20 ms", result["stall_total"].get("max"), AUDIBLE_STALL),
    ]


# --- Running ------------------------------------------------------------------------------------


async def fetch_json(url: str, method: str = "GET") -> Any:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return await response.json()


async def post_script(fake_url: str, script: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{fake_url}/script", json=script) as response:
        response.raise_for_status()


async def measured(
    pids: dict[str, int], run: Callable[[], Awaitable[list[AnswerTrace]]]
) -> tuple[list[AnswerTrace], dict[str, Any]]:
    meter = ProcessMeter(pids).start()
    traces = await run()
    return traces, meter.stop()


async def ask_many(url: str, count: int, label: str, *, pinging: int) -> list[AnswerTrace]:
    """`count` questions at once, each on its own connection, sent when all of them are open; the first
    `pinging` of them ping."""
    together = asyncio.Barrier(count)
    return list(
        await asyncio.gather(
            *(
                ask(url, f"{label} question {i}?", ping_every=PING_EVERY if i < pinging else None, together=together)
                for i in range(count)
            )
        )
    )


async def ask_in_turn(url: str, count: int, label: str) -> list[AnswerTrace]:
    return [await ask(url, f"{label} question {i}?", ping_every=PING_EVERY) for i in range(count)]


async def with_naive(
    fake_url: str, log_dir: Any, run: Callable[[str], Awaitable[list[AnswerTrace]]], *, warm_up: bool = True
) -> dict[str, Any]:
    naive = NaiveServer(fake_url, log_dir).start()
    try:
        if warm_up:
            await run(naive.answer_url)
        traces, meter = await measured(naive.server_pids(), lambda: run(naive.answer_url))
    finally:
        naive.stop()
    return summarize(traces, meter)


async def scenario_one(options: Options) -> dict[str, Any]:
    """One question at a time, asked over /live/answer while pinging every 50 ms."""
    reps = 2 if options.quick else 10
    with BenchLiveQA(workers=2, script=STANDARD_SCRIPT, settings=SETTINGS) as liveqa:
        await ask_many(liveqa.answer_url, 2, "warm-up", pinging=0)
        traces, meter = await measured(liveqa.server_pids(), lambda: ask_in_turn(liveqa.answer_url, reps, "one"))
        # One more answer, alone in the fake's log, for the timeline.
        await fetch_json(f"{liveqa.fake_url}/log/clear", "POST")
        shown = await ask(liveqa.answer_url, "Timeline question?", ping_every=PING_EVERY)
        fake_log = await fetch_json(f"{liveqa.fake_url}/log")
        naive = await with_naive(
            liveqa.fake_url,
            liveqa.log_dir,
            lambda url: ask_in_turn(url, 1 if options.quick else 5, "naive"),
            warm_up=not options.quick,
        )
    result = summarize(traces, meter)
    limit = limits(STANDARD_SCRIPT, traces[0])
    return {
        "liveqa": result,
        "naive": naive,
        "limit": limit,
        "targets": [
            first_audio_target(result, limit),
            target(
                "total, median ≤ LLM end + last chunk's TTS + 50 ms",
                result["total"].get("median"),
                limit["llm_end_plus_last_tts"] + TOTAL_SLACK,
            ),
            target(
                "total, median ≤ latest chunk's last token + its TTS + 50 ms",
                result["total"].get("median"),
                limit["total"] + TOTAL_SLACK,
            ),
            *listening_targets(result),
        ],
        "timeline": timeline_data(shown, fake_log),
    }


async def scenario_concurrent(options: Options) -> dict[str, Any]:
    """50 listeners ask at the same moment; 10 of them ping every 50 ms. Three rounds."""
    count, rounds = (10, 1) if options.quick else (50, 3)
    rounds = options.rounds or rounds
    settings = {**SETTINGS, "LIVEQA_WORKER_CONCURRENCY": "32"}  # 2 × 32 slots: all 50 answered at once
    with BenchLiveQA(workers=2, script=STANDARD_SCRIPT, settings=settings) as liveqa:
        await ask_many(liveqa.answer_url, 8, "warm-up", pinging=0)

        async def run() -> list[AnswerTrace]:
            traces = []
            for r in range(rounds):
                traces += await ask_many(liveqa.answer_url, count, f"round {r}", pinging=10)
            return traces

        await fetch_json(f"{liveqa.fake_url}/log/clear", "POST")
        neighbours = ProcessMeter(liveqa.neighbour_pids()).start()
        traces, meter = await measured(liveqa.server_pids(), run)
        outside = {name: figures["cpu_seconds"] for name, figures in neighbours.stop().items()}
        fake_log = await fetch_json(f"{liveqa.fake_url}/log")
        naive = await with_naive(liveqa.fake_url, liveqa.log_dir, lambda url: ask_many(url, count, "naive", pinging=10))
    result = summarize(traces, meter)
    result["cpu_outside"] = outside
    rounds_of = [traces[i : i + count] for i in range(0, len(traces), count)]
    by_round = [[t.metrics()["first_audio"] for t in answers if t.ok] for answers in rounds_of]
    result["first_audio_p95_by_round"] = [percentile(times, 95) if times else None for times in by_round]
    # When each LLM request reached the fake, after the first question of its round was sent.
    round_starts = sorted(min(t.sent for t in traces[i : i + count]) for i in range(0, len(traces), count))
    delays = [
        chat["start"] - max(s for s in round_starts if s <= chat["start"])
        for chat in fake_log["chat"]
        if any(s <= chat["start"] for s in round_starts)
    ]
    result["llm_request_delay"] = {"median": statistics.median(delays), "p95": percentile(delays, 95)}
    limit = limits(STANDARD_SCRIPT, next(t for t in traces if t.ok))
    result["fake_lateness"] = fake_lateness(fake_log, STANDARD_SCRIPT, limit["first_chunk_tokens"])
    return {
        "liveqa": result,
        "naive": naive,
        "limit": limit,
        "config": {"questions": count, "rounds": rounds, "workers": 2, "worker_concurrency": 32},
        "targets": [
            target(
                f"first audio, p95 of {count} concurrent ≤ limit + 60 ms",
                result["first_audio"].get("p95"),
                limit["first_audio"] + FIRST_AUDIO_SLACK_P95,
            ),
            target("ping during answers, p95 ≤ 20 ms", result["ping"].get("p95"), PING_P95_BOUND),
        ],
    }


def fake_lateness(fake_log: dict[str, Any], script: dict[str, Any], first_chunk_tokens: int) -> dict[str, Any]:
    """How late the fake itself wrote, against its script, on a machine it shares with what it serves:
    the first chunk's last token (from the request's arrival) and each speech's first byte."""

    def stats(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "p95": percentile(values, 95)} if values else {}

    due = script["first_token_delay"] + (first_chunk_tokens - 1) * script["token_delay"]
    tokens = [c["tokens"][first_chunk_tokens - 1] - c["start"] - due for c in fake_log["chat"]
              if len(c["tokens"]) >= first_chunk_tokens]  # fmt: skip
    speech = [s["pieces"][0] - s["start"] - script["tts_first_byte"] for s in fake_log["speech"] if s["pieces"]]
    return {"first_chunk_token": stats(tokens), "speech_first_byte": stats(speech)}


async def scenario_fanout(options: Options) -> dict[str, Any]:
    """One answer to a stream's overlay group, heard by 1 and then by 200 overlay sockets; a separate
    /live/answer socket pings every 50 ms meanwhile."""
    overlays_count, reps = (20, 2) if options.quick else (200, 5)
    with BenchLiveQA(workers=2, script=STANDARD_SCRIPT, settings=SETTINGS) as liveqa:
        stream = liveqa.add_auto_approving_stream()
        base = f"127.0.0.1:{liveqa.web_port}"
        overlay_url = f"ws://{base}/ws/overlay/{stream['slug']}/?key={stream['key']}"
        api_url = f"http://{base}/api/streams/{stream['slug']}/questions"
        missing = await fanout_missing(api_url, overlay_url)
        if missing:
            return {"available": False, "note": missing}
        counter = iter(range(10_000))

        async def post_question() -> float:
            sent = time.monotonic()
            n = next(counter)  # a viewer per question: the bridge API limits each viewer's rate
            body = {"question": f"Fan-out question {n}?", "viewer": f"bench viewer {n}"}
            headers = {"Authorization": f"Bearer {stream['bridge_token']}"}
            async with aiohttp.ClientSession() as session, session.post(api_url, json=body, headers=headers) as r:
                if r.status not in (200, 201):
                    raise RuntimeError(f"bridge API answered {r.status}: {await r.text()}")
            return sent

        async def answer_to(overlays: list[Overlay]) -> list[AnswerTrace]:
            sent: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            listening = [asyncio.ensure_future(o.listen(sent)) for o in overlays]
            try:
                sent.set_result(await post_question())
                return list(await asyncio.gather(*listening))
            finally:
                for task in listening:
                    task.cancel()

        async def rounds(overlays: list[Overlay], count: int) -> list[AnswerTrace]:
            return [trace for _ in range(count) for trace in await answer_to(overlays)]

        overlays = [Overlay(overlay_url) for _ in range(overlays_count)]
        try:
            # The others join after the single-overlay answers, so they hold no unread earlier answers.
            await overlays[0].connect()
            await rounds(overlays[:1], 2)  # warm-up
            single = await rounds(overlays[:1], reps)
            for batch in range(1, overlays_count, 50):
                await asyncio.gather(*(o.connect() for o in overlays[batch : batch + 50]))
            async with ping_probe(liveqa.answer_url) as pings:
                fanned, meter = await measured(liveqa.server_pids(), lambda: rounds(overlays, reps))
        finally:
            await asyncio.gather(*(o.close() for o in overlays))
    one, many = summarize(single, None), summarize(fanned, meter)
    many["ping"] = {"n": len(pings), "median": statistics.median(pings), "p95": percentile(pings, 95)} if pings else {}
    added = many["first_audio"].get("p95", float("inf")) - one["first_audio"].get("median", 0.0)
    limit = limits(STANDARD_SCRIPT, next(t for t in single if t.ok))
    # The overlay decodes a chunk once all of it is here, so its first audio can be heard at the
    # earliest when the first chunk's synthesis ends, not at its first byte.
    limit["first_audio"] += synthesis_seconds(STANDARD_SCRIPT, limit["first_chunk"]) - STANDARD_SCRIPT["tts_first_byte"]
    limit["whole_first_chunk"] = True
    return {
        "available": True,
        "liveqa_single_overlay": one,
        "liveqa": many,
        "limit": limit,
        "fanout_added_p95": added,
        "config": {"overlays": overlays_count, "answers": reps},
        "targets": [
            target(
                f"first audio to {overlays_count} overlays, p95 − median with 1 overlay ≤ 50 ms",
                added,
                FANOUT_ADDED_BOUND,
            ),
            target("ping during the fan-out, p95 ≤ 20 ms", many["ping"].get("p95"), PING_P95_BOUND),
        ],
    }


async def fanout_missing(api_url: str, overlay_url: str) -> str:
    """Why the fan-out cannot be measured on this checkout, or "" when it can."""
    async with aiohttp.ClientSession() as session, session.post(api_url, json={}) as response:
        if response.status == 404 and "No such stream" not in await response.text():
            return f"not available: POST {api_url.split('/', 3)[-1]} answers 404 (no bridge API in this checkout)"
    try:
        async with websockets.connect(overlay_url, open_timeout=10):
            pass
    except (websockets.InvalidStatus, websockets.InvalidHandshake) as exc:
        return f"not available: the overlay socket was refused ({exc})"
    return ""


class ping_probe:
    """A /live/answer connection that pings every 50 ms while the block runs; the round trips land in
    the list it yields. It runs in a process of its own: in the benchmark's, its pongs would wait
    behind the 200 overlay clients' frames, and the round trip would be the clients' as much as LiveQA's."""

    def __init__(self, url: str):
        self.url = url
        self.pings: list[float] = []

    async def __aenter__(self) -> list[float]:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_probe, args=(self.url, child), daemon=True)
        self.process.start()
        if not await asyncio.to_thread(self.connection.poll, 30):
            raise RuntimeError("the ping probe did not connect")
        self.connection.recv()  # connected
        return self.pings

    async def __aexit__(self, *exc: object) -> None:
        self.connection.send("stop")
        if await asyncio.to_thread(self.connection.poll, 30):
            self.pings += self.connection.recv()
        await asyncio.to_thread(self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()


def _probe(url: str, connection: Any) -> None:
    """The probe process: ping until told to stop, then send back the round trips."""

    async def run() -> list[float]:
        pings: list[float] = []
        async with websockets.connect(url) as socket:
            await socket.send(json.dumps({"type": "hello", "protocol": 2}))
            await socket.recv()
            connection.send("connected")
            while not connection.poll():
                await asyncio.sleep(PING_EVERY)
                sent = time.monotonic()
                await socket.send('{"type": "ping"}')
                await socket.recv()
                pings.append(time.monotonic() - sent)
        return pings

    connection.send(run_event_loop(run()))


async def scenario_slow_tts(options: Options) -> dict[str, Any]:
    """One question at a time; synthesis takes ≈ 0.9 × the duration of the audio it makes."""
    reps = 1 if options.quick else 3
    with BenchLiveQA(workers=2, script=SLOW_TTS_SCRIPT, settings=SETTINGS) as liveqa:
        await ask_many(liveqa.answer_url, 2, "warm-up", pinging=0)
        await fetch_json(f"{liveqa.fake_url}/log/clear", "POST")
        traces, meter = await measured(liveqa.server_pids(), lambda: ask_in_turn(liveqa.answer_url, reps, "slow"))
        fake_log = await fetch_json(f"{liveqa.fake_url}/log")
        naive = await with_naive(liveqa.fake_url, liveqa.log_dir, lambda url: ask_in_turn(url, 1, "naive"))
    ratios = [
        (s["end"] - s["start"]) / (s["bytes"] / MP3_BYTES_PER_SECOND) for s in fake_log["speech"] if s.get("complete")
    ]
    result = summarize(traces, meter)
    return {
        "liveqa": result,
        "naive": naive,
        "limit": limits(SLOW_TTS_SCRIPT, traces[0]),
        "synthesis_to_audio": {"median": statistics.median(ratios), "max": max(ratios)} if ratios else {},
        "targets": [],
    }


async def scenario_offline(options: Options) -> dict[str, Any]:
    """The offline default's speech: Piper on the CPU (LIVEQA_TTS_BACKEND=local), the fake LLM, one
    worker (as on one machine), one question at a time."""
    samples = 2 if options.quick else 5
    try:
        alone = await piper_first_byte_times(STANDARD_SCRIPT, samples)
    except Exception as exc:  # ImportError, a missing voice package, onnxruntime failing to load...
        note = f"not available: Piper could not run here ({exc.__class__.__name__}: {exc})"
        return {"available": False, "note": note}
    reps = 2 if options.quick else 5
    settings = {**SETTINGS, "LIVEQA_TTS_BACKEND": "local", "LIVEQA_TTS_VOICE": "en_US-joe-medium"}
    with BenchLiveQA(workers=1, script=STANDARD_SCRIPT, settings=settings) as liveqa:
        await ask_many(liveqa.answer_url, 1, "warm-up", pinging=0)
        traces, meter = await measured(liveqa.server_pids(), lambda: ask_in_turn(liveqa.answer_url, reps, "offline"))
    # Piper alone is timed before the answers and again after them: a single few-sample median moved by
    # 40 ms from one run to the next, and the limit with it.
    alone += await piper_first_byte_times(STANDARD_SCRIPT, samples)
    first_byte = statistics.median(alone)
    result = summarize(traces, meter)
    # Piper's pace is not scripted: no bound on the total.
    limit = without_total_bounds(limits(STANDARD_SCRIPT, next(t for t in traces if t.ok), tts_first_byte=first_byte))
    limit["piper_first_chunk_seconds"] = first_byte
    limit["piper_first_chunk_samples"] = alone
    return {
        "available": True,
        "liveqa": result,
        "limit": limit,
        "targets": [
            first_audio_target(result, limit, "limit with Piper's own time for the first chunk"),
            *listening_targets(result),
        ],
    }


async def scenario_remote(options: Options) -> dict[str, Any]:
    """One question at a time, each after a quiet spell longer than the clients' keep-alive, on a server
    whose new connections take a handshake (TCP and TLS to a remote server) before their first request."""
    reps = 1 if options.quick else 6
    with BenchLiveQA(workers=2, script=REMOTE_SCRIPT, settings=SETTINGS) as liveqa:
        await ask_many(liveqa.answer_url, 2, "warm-up", pinging=0)
        await fetch_json(f"{liveqa.fake_url}/log/clear", "POST")

        async def after_quiet_spells() -> list[AnswerTrace]:
            traces = []
            for i in range(reps):
                await asyncio.sleep(QUIET_SPELL)
                traces.append(await ask(liveqa.answer_url, f"remote question {i}?", ping_every=PING_EVERY))
            return traces

        traces, meter = await measured(liveqa.server_pids(), after_quiet_spells)
        fake_log = await fetch_json(f"{liveqa.fake_url}/log")
    result = summarize(traces, meter)
    # Which requests found a connection open when their question was sent (none would, after the quiet,
    # unless kept open): every LLM request, and each answer's first speech request.
    sent = sorted(t.sent for t in traces)
    firsts = [
        first
        for at in sent
        if (first := min((s for s in fake_log["speech"] if s["start"] >= at), key=lambda s: s["start"], default=None))
    ]
    result["opened_before_the_question"] = {
        kind: sum(r["connected"] < max(at for at in sent if at <= r["start"]) for r in requests)
        for kind, requests in (("llm", fake_log["chat"]), ("first_speech", firsts))
    }
    # Later chunks' connections are not scripted into a bound.
    limit = without_total_bounds(limits(REMOTE_SCRIPT, next(t for t in traces if t.ok)))
    limit["handshake_seconds"] = REMOTE_SCRIPT["new_connection_delay"]
    limit["quiet_seconds"] = QUIET_SPELL
    return {
        "liveqa": result,
        "limit": limit,
        "targets": [first_audio_target(result, limit), *listening_targets(result)],
    }


async def piper_first_byte_times(script: dict[str, Any], samples: int = 5) -> list[float]:
    """Piper's times to the first MP3 bytes of the script's first chunk, warm and alone, `samples` of them
    after one that is not counted."""
    from answers.pipeline.chunker import SpeechChunker
    from answers.pipeline.local_tts import PiperSpeech
    from answers.pipeline.tts import Voice

    chunker = SpeechChunker()
    chunks = [c for token in script["tokens"] for c in chunker.feed(token)] + chunker.flush()
    engine = PiperSpeech()
    voice = Voice(engine="piper", name="en_US-joe-medium", format="mp3")
    try:
        await engine.warm_up(voice)
        times = []
        for _ in range(samples + 1):
            started = time.monotonic()
            synthesis = engine.synthesize(chunks[0].speech, voice)
            await anext(synthesis)
            times.append(time.monotonic() - started)
            await synthesis.aclose()
        return times[1:]
    finally:
        await engine.aclose()


def timeline_data(trace: AnswerTrace, fake_log: dict[str, Any]) -> dict[str, Any]:
    """One answer's moments, in seconds since its question was sent."""
    t0 = trace.sent

    def rel(t: float) -> float:
        return round(t - t0, 4)

    return {
        "llm_requests": [rel(chat["start"]) for chat in fake_log["chat"]],
        "tokens": [rel(t) for chat in fake_log["chat"] for t in chat["tokens"]],
        "chunks": [{"at": rel(at), "seq": seq, "text": text} for at, seq, text in trace.chunks],
        "tts": [
            {"start": rel(s["start"]), "pieces": [rel(p) for p in s["pieces"]], "end": rel(s["end"]), "text": s["text"]}
            for s in fake_log["speech"]
            if s["pieces"]
        ],
        "frames": [{"at": rel(f.at), "seq": f.seq, "seconds": f.seconds} for f in trace.frames],
        "end": rel(trace.end or t0),
    }


SCENARIOS: dict[str, tuple[str, Callable[[Options], Awaitable[dict[str, Any]]]]] = {
    "one": ("One question", scenario_one),
    "concurrent": ("50 concurrent questions", scenario_concurrent),
    "fanout": ("One answer to 200 overlays", scenario_fanout),
    "offline": ("Offline speech (Piper on the CPU)", scenario_offline),
    "slow-tts": ("Slow TTS (synthesis ≈ 0.9 × speech)", scenario_slow_tts),
    "remote": ("A remote server after quiet spells (60 ms handshakes)", scenario_remote),
}
