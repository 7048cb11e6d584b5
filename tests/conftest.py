"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.netguard_rules import install as forbid_network

forbid_network()

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for processes the tests start: the same network guard, test settings."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "netguard"), str(ROOT)])
    env["DJANGO_SETTINGS_MODULE"] = "liveqa.settings"
    env.setdefault("SECRET_KEY", "tests-only-secret-key")
    env["PYTHONUNBUFFERED"] = "1"
    return env
