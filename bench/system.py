"""The system under test: LiveQA's processes (tests.processes.LiveQA) on the recording fake, the naive
baseline server, and the CPU time and peak memory of each of their processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.processes import PYTHON, ROOT, LiveQA, base_env


class BenchLiveQA(LiveQA):
    """LiveQA's processes on the test suite's fake OpenAI server, with what the benchmark adds."""

    def add_auto_approving_stream(self) -> dict[str, str]:
        """A second stream whose bridge questions are approved at once (answered to its overlays)."""
        return json.loads(
            self.manage(
                "createstream", "Bench overlay stream", "--slug", "bench-overlay", "--auto-approve", "--json",
                "--base-url", f"http://127.0.0.1:{self.web_port}",
            )
        )  # fmt: skip

    def server_pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items() if name != "fake"}

    def neighbour_pids(self) -> dict[str, int]:
        """The processes that share LiveQA's cores in the benchmark but are not LiveQA's own: Redis (if this
        user can see it), the fake OpenAI server, and the clients (this process)."""
        pids = {"fake": self.processes["fake"].pid, "clients": os.getpid()}
        redis = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "redis-server"]
        if len(redis) == 1:
            with contextlib.suppress(psutil.Error):
                redis[0].cpu_times()  # readable by this user
                pids["redis"] = redis[0].pid
        return pids


@dataclass
class NaiveServer:
    """bench.naive as a subprocess, pointed at the fake."""

    fake_url: str
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> NaiveServer:
        command = [PYTHON, "-m", "bench.naive", "--base-url", f"{self.fake_url}/v1"]
        self.port = _start_printing_port(self, "naive", command)
        return self

    @property
    def answer_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def server_pids(self) -> dict[str, int]:
        return {"naive": self.processes["naive"].pid}

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _start_printing_port(owner: Any, name: str, command: list[str]) -> int:
    """Start a server that prints `PORT <n>` on its first line; stderr goes to `<log_dir>/<name>.log`."""
    log = open(owner.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(command, cwd=ROOT, env=base_env(), stdout=subprocess.PIPE, stderr=log)
    owner.processes[name] = process
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("PORT "):
        raise RuntimeError(f"{name} did not start: {line!r} (see {owner.log_dir / (name + '.log')})")
    return int(line.split()[1])


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (VmHWM), since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class ProcessMeter:
    """CPU seconds used by each process between `start()` and `stop()`, and its peak RSS.

    Peak RSS is the kernel's high-water mark (VmHWM), so it covers start-up too; the benchmark starts
    fresh processes for every scenario."""

    def __init__(self, pids: dict[str, int]):
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.cpu_start: dict[str, float] = {}
        self.result: dict[str, dict[str, float]] = {}

    def _cpu(self, process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def start(self) -> ProcessMeter:
        self.cpu_start = {name: self._cpu(p) for name, p in self.processes.items()}
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        for name, process in self.processes.items():
            try:
                self.result[name] = {
                    "cpu_seconds": round(self._cpu(process) - self.cpu_start[name], 3),
                    "peak_rss_mb": round(peak_rss(process.pid) / 2**20, 1),
                }
            except psutil.Error:
                self.result[name] = {"cpu_seconds": float("nan"), "peak_rss_mb": float("nan")}
        return self.result
