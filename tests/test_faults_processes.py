"""Faults of whole processes: a worker killed mid-answer, Redis restarting, a database that is down."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import pytest
import websockets

from tests.fakes.openai_server import split_tokens
from tests.processes import PYTHON, ROOT, LiveQA, base_env, free_port, wait_for_port

pytestmark = pytest.mark.e2e

LONG = " ".join(f"Sentence number {i} is spoken now." for i in range(12))


async def ask(url: str, question: str, limit: float = 20) -> list:
    async with asyncio.timeout(limit), websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "question", "question": question}))
        frames = []
        while (frame := await socket.recv()) != "##END##":
            frames.append(frame)
        return frames


def question_statuses(liveqa: LiveQA) -> list[str]:
    code = (
        "import json; from answers.models import Question; "
        "print(json.dumps(list(Question.objects.order_by('pk').values_list('status', flat=True))))"
    )
    return json.loads(liveqa.manage("shell", "--no-imports", "-c", code).strip().splitlines()[-1])


async def test_a_killed_worker_leaves_the_question_failed_not_answering():
    script = {"tokens": split_tokens(LONG), "token_delay": 0.15}
    with LiveQA(workers=1, script=script, settings={"LIVEQA_ANSWER_STALE_AFTER": "2"}) as liveqa:
        async with asyncio.timeout(30), websockets.connect(liveqa.answer_url) as socket:
            await socket.send(json.dumps({"type": "question", "question": "Long answer?"}))
            first = await socket.recv()
            assert isinstance(first, bytes)
            liveqa.kill("worker0")
            liveqa.start_worker(1)
            frames = []
            while (frame := await socket.recv()) != "##END##":
                frames.append(frame)
            assert "ERROR worker_timeout: The answer could not be completed." in frames
        deadline = time.monotonic() + 15
        while question_statuses(liveqa) != ["failed"] and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert question_statuses(liveqa) == ["failed"]
        # The surviving worker answers the next question.
        await liveqa_fast(liveqa)
        assert [f for f in await ask(liveqa.answer_url, "Still there?") if isinstance(f, bytes)]
        assert question_statuses(liveqa) == ["failed", "answered"]


async def liveqa_fast(liveqa: LiveQA) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        await session.post(f"{liveqa.fake_url}/script", json={"tokens": split_tokens("Yes. Still here.")})


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to start a private one")
async def test_liveqa_recovers_by_itself_when_redis_restarts(tmp_path):
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]  # fmt: skip
    redis = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        script = {"tokens": split_tokens(LONG), "token_delay": 0.05}
        with LiveQA(workers=1, script=script, redis_url=f"redis://127.0.0.1:{port}/0") as liveqa:
            assert await ask(liveqa.answer_url, "Before?")
            async with websockets.connect(liveqa.answer_url) as socket:
                await socket.send(json.dumps({"type": "question", "question": "During?"}))
                assert isinstance(await asyncio.wait_for(socket.recv(), 10), bytes)
                redis.kill()
                redis.wait(5)
                redis = subprocess.Popen(command, stdout=subprocess.DEVNULL)
                wait_for_port(port)
            # Clients reconnect; new questions are answered once Redis is back.
            deadline = time.monotonic() + 30
            while True:
                try:
                    frames = await ask(liveqa.answer_url, "After?", limit=15)
                    if any(isinstance(f, bytes) for f in frames):
                        break
                except (OSError, websockets.WebSocketException, TimeoutError):
                    pass
                assert time.monotonic() < deadline, liveqa.log("web") + liveqa.log("worker0")
                await asyncio.sleep(0.5)
            assert liveqa.processes["worker0"].poll() is None  # the worker rode it out
    finally:
        redis.kill()
        redis.wait(5)


def test_a_worker_without_its_database_says_so_and_waits_instead_of_crash_looping():
    env = base_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere",
                   REDIS_URL="redis://127.0.0.1:6379/0", OPENAI_API_KEY="x")  # fmt: skip
    worker = subprocess.Popen(
        [PYTHON, "manage.py", "answerworker"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        time.sleep(4)
        assert worker.poll() is None
    finally:
        worker.terminate()
        output = worker.communicate(timeout=10)[0].decode()
    assert "database unavailable" in output
    assert "Traceback" not in output
