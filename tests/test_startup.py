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
