"""`python -m bench --quick` runs end to end and reports numbers (not that it meets its targets)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from answers.pipeline.openai_client import KEEPALIVE
from bench.scenarios import FIRST_AUDIO_SLACK_ONE, REMOTE_SCRIPT
from tests.processes import ROOT, base_env

pytestmark = pytest.mark.e2e


def run_quick(tmp_path, scenario: str, *extra: str, timeout: float) -> dict:
    """`python -m bench --quick --scenario <scenario>`, its JSON results (the markdown in bench.md)."""
    results_path = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scenario", scenario, "--json", str(results_path),
         "--out", str(tmp_path / "bench.md"), *extra],
        cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(results_path.read_text())["scenarios"][scenario]


def test_quick_benchmark_reports_first_audio_total_ping_and_process_figures(tmp_path):
    one = run_quick(tmp_path, "one", "--png", str(tmp_path / "timeline.png"), timeout=60)
    for system in ("liveqa", "naive"):
        result = one[system]
        assert result["answers"] > 0 and result["failed"] == 0
        for key in ("first_audio", "total", "audio_seconds"):
            assert result[key]["median"] > 0, (system, key)
        assert all(p["peak_rss_mb"] > 0 and p["cpu_seconds"] >= 0 for p in result["processes"].values())
    assert one["liveqa"]["ping"]["p95"] > 0
    assert 0 < one["limit"]["first_audio"] < one["liveqa"]["first_audio"]["median"]
    assert {t["name"] for t in one["targets"]} and all(isinstance(t["pass"], bool) for t in one["targets"])
    assert "| LiveQA |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "timeline.png").read_bytes().startswith(b"\x89PNG")


def test_quick_concurrent_run_reports_the_burst_by_round_and_the_cpu_used_beside_liveqa(tmp_path):
    concurrent = run_quick(tmp_path, "concurrent", timeout=90)
    result = concurrent["liveqa"]
    assert result["answers"] == concurrent["config"]["questions"] * concurrent["config"]["rounds"]
    assert result["failed"] == 0 and all(p95 > 0 for p95 in result["first_audio_p95_by_round"])
    assert result["llm_request_delay"]["p95"] > 0
    assert result["cpu_outside"]["fake"] > 0 and result["cpu_outside"]["clients"] > 0
    assert "outside daphne and the workers: " in (tmp_path / "bench.md").read_text()


def test_quick_fan_out_reports_overlays_first_audio_and_the_separate_pings(tmp_path):
    """The fan-out's ping probe runs in a process of its own and hands its round trips back."""
    fanout = run_quick(tmp_path, "fanout", timeout=90)
    assert fanout["available"], fanout.get("note")
    many = fanout["liveqa"]
    assert many["answers"] == fanout["config"]["overlays"] * fanout["config"]["answers"] and many["failed"] == 0
    assert many["first_audio"]["median"] > 0 and many["ping"]["n"] > 0 and many["ping"]["p95"] > 0


def test_quick_offline_run_times_piper_alone_before_and_after_the_answers_and_bounds_by_the_median(tmp_path):
    offline = run_quick(tmp_path, "offline", timeout=120)
    assert offline["available"], offline.get("note")
    assert offline["liveqa"]["answers"] > 0 and offline["liveqa"]["failed"] == 0
    alone = offline["limit"]["piper_first_chunk_samples"]
    assert len(alone) == 4 and all(seconds > 0 for seconds in alone)
    assert offline["limit"]["piper_first_chunk_seconds"] == statistics.median(alone)
    (first_audio,) = [t for t in offline["targets"] if t["name"].startswith("first audio")]
    assert first_audio["bound"] == pytest.approx(offline["limit"]["first_audio"] + FIRST_AUDIO_SLACK_ONE)
    assert "median of 4, timed before and after the answers" in (tmp_path / "bench.md").read_text()


def test_quick_remote_run_finds_its_connections_open_after_a_quiet_spell_longer_than_the_keep_alive(tmp_path):
    remote = run_quick(tmp_path, "remote", timeout=90)
    assert remote["liveqa"]["answers"] == 1 and remote["liveqa"]["failed"] == 0
    assert remote["limit"]["handshake_seconds"] == REMOTE_SCRIPT["new_connection_delay"] > 0
    assert remote["limit"]["quiet_seconds"] > KEEPALIVE
    # Its LLM request and first speech request went out on connections opened before it was asked.
    assert remote["liveqa"]["opened_before_the_question"] == {"llm": 1, "first_speech": 1}
    (first_audio,) = [t for t in remote["targets"] if t["name"].startswith("first audio")]
    assert first_audio["bound"] == pytest.approx(remote["limit"]["first_audio"] + FIRST_AUDIO_SLACK_ONE)
    assert "kept open through the quiet: 1 of 1 LLM requests" in (tmp_path / "bench.md").read_text()
