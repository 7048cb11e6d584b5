"""Start LiveQA as it runs in production, on loopback: a fake OpenAI-compatible server, daphne and
answer workers as subprocesses on the real Redis channel layer. Used by end-to-end, fault and load
tests and by the benchmark."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN = os.environ.get("DATABASE_URL_PG", "postgres://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def base_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "netguard"), str(ROOT)]),
        DJANGO_SETTINGS_MODULE="liveqa.settings",
        SECRET_KEY=env.get("SECRET_KEY") or "tests-only-secret-key",
        PYTHONUNBUFFERED="1",
        DEBUG="0",
        LOG_LEVEL=env.get("LOG_LEVEL", "WARNING"),
    )
    env.update(overrides)
    return env


@dataclass
class LiveQA:
    """A running LiveQA: `start()` it, use `answer_url`, `stop()` it (also on error)."""

    workers: int = 2
    script: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    redis_url: str = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/0")
    # "sqlite" (a temporary file) or "postgres" (a temporary database on DATABASE_URL_PG's server).
    database: str = os.environ.get("LIVEQA_TEST_DATABASE", "sqlite")
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> LiveQA:
        self.tmp = Path(tempfile.mkdtemp(prefix="liveqa-"))
        self.log_dir = self.log_dir or self.tmp
        self.fake_port = self._start_fake()
        self.web_port = free_port()
        self.env = base_env(
            DATABASE_URL=self.settings.get("DATABASE_URL") or self._database_url(),
            REDIS_URL=self.redis_url,
            OPENAI_API_KEY="fake-key",
            OPENAI_BASE_URL=f"http://127.0.0.1:{self.fake_port}/v1",
            LIVEQA_WORKER_CHANNEL=f"liveqa-answers-{uuid.uuid4().hex[:8]}",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            **{k: v for k, v in self.settings.items() if k != "DATABASE_URL"},
        )
        self.manage("migrate", "--noinput", "-v", "0")
        self.stream = json.loads(
            self.manage("createstream", "E2E stream", "--json", "--base-url", f"http://127.0.0.1:{self.web_port}")
        )
        web = [PYTHON, "-m", "liveqa.serve", "-b", "127.0.0.1", "-p", str(self.web_port), "liveqa.asgi:application"]
        self.processes["web"] = self._spawn("web", web)
        for i in range(self.workers):
            self.start_worker(i)
        wait_for_port(self.web_port)
        return self

    def _database_url(self) -> str:
        if self.database == "sqlite":
            return f"sqlite:///{self.tmp / 'db.sqlite3'}"
        import psycopg

        self.pg_name = f"liveqa_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.pg_name}"')
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + self.pg_name

    def start_worker(self, index: int) -> subprocess.Popen[bytes]:
        process = self._spawn(f"worker{index}", [PYTHON, "manage.py", "answerworker"])
        self.processes[f"worker{index}"] = process
        return process

    @property
    def answer_url(self) -> str:
        return self.stream["answer_url"]

    @property
    def fake_url(self) -> str:
        return f"http://127.0.0.1:{self.fake_port}"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        if result.returncode:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stderr}")
        return result.stdout

    def _start_fake(self) -> int:
        log = open(self.log_dir / "fake.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [PYTHON, "-m", "tests.fakes.openai_server", "--script", json.dumps(self.script)],
            cwd=ROOT, env=base_env(), stdout=subprocess.PIPE, stderr=log,
        )  # fmt: skip
        self.processes["fake"] = process
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        return int(line.split()[1])

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        assert self.log_dir is not None
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def log(self, name: str) -> str:
        assert self.log_dir is not None
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()
        if getattr(self, "pg_name", None):
            import psycopg

            with psycopg.connect(PG_ADMIN.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            self.pg_name = None

    def __enter__(self) -> LiveQA:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
