"""Test settings: the project's settings with a test key and the in-memory channel layer by default;
tests that need Redis or the offline engines ask for them through fixtures."""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key")
os.environ["REDIS_URL"] = ""
os.environ.setdefault("LIVEQA_LLM_BACKEND", "openai")
os.environ.setdefault("LIVEQA_TTS_BACKEND", "openai")
os.environ.setdefault("OPENAI_API_KEY", "test-key")
os.environ.setdefault("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: tests pass their own

from liveqa.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
REDIS_URL_TEST = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/0")
