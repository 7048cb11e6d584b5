"""The deployment files say what the README says they do."""

import re
import tomllib

import yaml

from tests.conftest import ROOT


def test_compose_runs_redis_postgres_web_and_worker_from_one_image():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "web", "worker"} <= set(services)
    assert services["web"]["build"] == services["worker"]["build"] == "."
    assert "liveqa.serve" in str(services["web"]["command"]) and "answerworker" in services["worker"]["command"]
    for name in ("web", "worker"):
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://redis")
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgres://")


def test_the_pins_that_matter():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [re.sub(r"\[.*?\]", "", d.replace(" ", "")) for d in deps]  # without extras: openai[aiohttp]
    assert any(p.startswith("daphne>=4.2.2") for p in pins)
    assert any(p.startswith("openai>=2,<3") for p in pins)


def test_ci_runs_the_readme_test_command():
    command = "bash scripts/test.sh"
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text()
