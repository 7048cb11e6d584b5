"""A long-running process keeps what start-up allocated out of the collector's full collections."""

from __future__ import annotations

import subprocess

from tests.processes import PYTHON, ROOT, base_env


def test_the_asgi_application_freezes_its_start_up_heap():
    """daphne imports liveqa.asgi once: by then Django, the app and the channel layers are loaded."""
    code = "import gc, liveqa.asgi; print(gc.get_freeze_count())"
    result = subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert int(result.stdout.strip()) > 50_000


def test_web_and_worker_processes_run_on_uvloop():
    """`python -m liveqa.serve` is daphne with uvloop's policy set before daphne makes its loop; the
    answer worker runs its coroutine through run_event_loop."""
    code = (
        "import asyncio, liveqa.serve, daphne.server\n"
        "from liveqa.startup import run_event_loop\n"
        "async def loop_type(): return type(asyncio.get_running_loop()).__module__\n"
        "print(type(daphne.server.twisted_loop).__module__, run_event_loop(loop_type()))"
    )
    result = subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["uvloop", "uvloop"]
