"""Load and soak on loopback (marker `load`, not in the default run):

    .venv/bin/python -m pytest -m load tests/test_load.py -s

Results are printed and written to artifacts/load.json; docs/reliability.md records a run."""

from __future__ import annotations

import asyncio
import json
import os
import time

import psutil
import pytest
import websockets

from tests.conftest import ARTIFACTS
from tests.fakes.openai_server import split_tokens
from tests.processes import LiveQA

pytestmark = pytest.mark.load

ANSWER = "Load is fine. Every word arrives in order. Nothing is dropped on the way. The end"
PG = os.environ.get("DATABASE_URL_PG", "postgres://postgres@127.0.0.1:5432/test")
SOAK_SECONDS = float(os.environ.get("LIVEQA_SOAK_SECONDS", "300"))


@pytest.fixture
def postgres_database():
    """Production's database under load: a temporary database on the local PostgreSQL."""
    import psycopg

    try:
        psycopg.connect(PG.replace("postgres://", "postgresql://", 1), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    return "postgres"


def rss_mb(liveqa: LiveQA) -> dict[str, float]:
    return {
        name: round(psutil.Process(p.pid).memory_info().rss / 2**20, 1)
        for name, p in liveqa.processes.items()
        if name != "fake" and p.poll() is None
    }


async def ask(url: str, question: str) -> list[bytes]:
    async with websockets.connect(url, max_size=None) as socket:
        await socket.send(json.dumps({"type": "question", "question": question}))
        frames = []
        while (frame := await socket.recv()) != "##END##":
            assert isinstance(frame, bytes), frame
            frames.append(frame)
        return frames


def spoken_words(frames: list[bytes]) -> list[str]:
    return b" ".join(f.removeprefix(b"AUDIO[").removesuffix(b"]") for f in frames).decode().split()


def record(name: str, result: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "load.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[name] = result
    path.write_text(json.dumps(results, indent=2))
    print(f"\n{name}: {json.dumps(result)}")


async def test_200_connections_and_50_simultaneous_questions(postgres_database):
    script = {"tokens": split_tokens(ANSWER), "token_delay": 0.01, "tts_first_byte": 0.05}
    settings = {"LIVEQA_WORKER_CONCURRENCY": "25"}
    with LiveQA(workers=2, script=script, settings=settings, database=postgres_database) as liveqa:
        idle = [await websockets.connect(liveqa.answer_url) for _ in range(150)]
        try:
            started = time.monotonic()
            async with asyncio.timeout(120):
                answers = await asyncio.gather(*(ask(liveqa.answer_url, f"Question {i}?") for i in range(50)))
            elapsed = time.monotonic() - started
            # The idle listeners are all still there and answer at once.
            async with asyncio.timeout(30):
                for socket in idle:
                    await socket.send('{"type": "ping"}')
                replies = [await socket.recv() for socket in idle]
        finally:
            await asyncio.gather(*(socket.close() for socket in idle))
        assert replies == ["pong"] * 150
        assert all(spoken_words(frames) == ANSWER.split() for frames in answers)  # complete, in order
        logs = "".join(liveqa.log(name) for name in ("web", "worker0", "worker1"))
        assert "Traceback" not in logs
        record("load", {"connections": 200, "questions": 50, "workers": 2, "seconds": round(elapsed, 2),
                        "all_complete_in_order": True, "rss_mb": rss_mb(liveqa)})  # fmt: skip


@pytest.mark.timeout(SOAK_SECONDS + 240)
async def test_five_minute_soak_keeps_memory_stable(postgres_database):
    duration = SOAK_SECONDS
    script = {"tokens": split_tokens(ANSWER), "token_delay": 0.005, "tts_first_byte": 0.02}
    with LiveQA(workers=2, script=script, database=postgres_database) as liveqa:

        async def client(i: int) -> int:
            done = 0
            while time.monotonic() < deadline:
                assert spoken_words(await asyncio.wait_for(ask(liveqa.answer_url, f"Soak {i}?"), 30)) == ANSWER.split()
                done += 1
            return done

        deadline = time.monotonic() + min(20.0, duration / 5)  # warm up: caches, pools, first imports
        await asyncio.gather(*(client(i) for i in range(4)))
        before = rss_mb(liveqa)
        deadline = time.monotonic() + duration
        answered = sum(await asyncio.gather(*(client(i) for i in range(4))))
        after = rss_mb(liveqa)
    record("soak", {"seconds": duration, "answers": answered, "rss_mb_before": before, "rss_mb_after": after})
    for name in before:
        assert after[name] - before[name] < max(25.0, before[name] * 0.15), (name, before, after)
