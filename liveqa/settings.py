"""Django settings, read once from the environment (see README and .env.example)."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string, or DEBUG=1 for development."
        )
    SECRET_KEY = "liveqa-development-only-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "answers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "liveqa.urls"
ASGI_APPLICATION = "liveqa.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # Keep connections: opening one per query (PostgreSQL) put ~10 ms on every step of an answer.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 300),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Worker threads write while the web process reads: wait for the lock instead of failing. IMMEDIATE:
    # a deferred transaction that reads, then writes, fails at once if another writer got in between.
    # WAL: readers never wait for the writer, and a commit appends to the log without an fsync
    # (synchronous=NORMAL; a commit survives a crash of the process, not a power cut before the next
    # checkpoint). With the default rollback journal, three fsyncs per commit serialized 50 questions
    # arriving together behind the disk.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=20,
        transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
LIVEQA_WORKERS_LAYER = "workers"  # the channel layer alias that hands questions to workers


def redis_channel_layers(url: str, **config: object) -> dict[str, dict[str, object]]:
    """Two layers on one Redis.

    "default", for everything that reaches listeners and for each worker's own channel: channels-redis'
    pub/sub layer, where each process holds one subscription and hands messages to its consumers from
    memory, publishing in batches (answers.layers). (The list-based layer lost audio chunks in the soak
    test, with listeners connecting and disconnecting all the time, and delivered a group message once
    per member.)

    "workers", for handing questions to workers: the list-based layer, so that a question waits in
    Redis until a worker is free to take it, even one that is still starting; read in one round trip
    (answers.layers).
    """
    hosts = [{"address": url, "socket_timeout": 30, "socket_connect_timeout": 5}]
    return {
        "default": {"BACKEND": "answers.layers.PipelinedPubSubChannelLayer", "CONFIG": {"hosts": hosts, **config}},
        LIVEQA_WORKERS_LAYER: {
            "BACKEND": "answers.layers.WorkQueueChannelLayer",
            "CONFIG": {"hosts": hosts, "capacity": env_int("LIVEQA_CHANNEL_CAPACITY", 1000), "expiry": 300, **config},
        },
    }


if REDIS_URL:
    CHANNEL_LAYERS = redis_channel_layers(REDIS_URL)
else:
    # Embedded default: web and worker share one process (see answers/dispatch.py).
    CHANNEL_LAYERS = {
        alias: {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 2000, "expiry": 60}}
        for alias in ("default", LIVEQA_WORKERS_LAYER)
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_AUTOREFRESH = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "answers.logging.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "daphne": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# --- LiveQA ---------------------------------------------------------------------------------------
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "") or None

# "openai" (any OpenAI-compatible server) or "local" (embedded SmolLM2 / Piper / espeak-ng).
LIVEQA_LLM_BACKEND = os.environ.get("LIVEQA_LLM_BACKEND", "openai" if OPENAI_API_KEY else "local")
LIVEQA_TTS_BACKEND = os.environ.get("LIVEQA_TTS_BACKEND", "openai" if OPENAI_API_KEY else "local")
LIVEQA_LLM_MODEL = os.environ.get("LIVEQA_LLM_MODEL", "gpt-4o-mini")
LIVEQA_TTS_MODEL = os.environ.get("LIVEQA_TTS_MODEL", "gpt-4o-mini-tts")
LIVEQA_TTS_VOICE = os.environ.get("LIVEQA_TTS_VOICE", "alloy" if LIVEQA_TTS_BACKEND == "openai" else "en_US-joe-medium")
LIVEQA_AUDIO_FORMAT = os.environ.get("LIVEQA_AUDIO_FORMAT", "mp3")
LIVEQA_SYSTEM_PROMPT = os.environ.get(
    "LIVEQA_SYSTEM_PROMPT",
    "You answer questions from a livestream's viewers. Your answer is read aloud: "
    "answer in two to four short, plain sentences, without lists, tables or code.",
)
LIVEQA_MAX_TOKENS = env_int("LIVEQA_MAX_TOKENS", 300)
LIVEQA_TEMPERATURE = env_float("LIVEQA_TEMPERATURE", 0.7)

# Timeouts in seconds.
LIVEQA_LLM_CONNECT_TIMEOUT = env_float("LIVEQA_LLM_CONNECT_TIMEOUT", 5.0)
LIVEQA_LLM_FIRST_TOKEN_TIMEOUT = env_float("LIVEQA_LLM_FIRST_TOKEN_TIMEOUT", 15.0)
LIVEQA_LLM_IDLE_TIMEOUT = env_float("LIVEQA_LLM_IDLE_TIMEOUT", 10.0)
LIVEQA_ANSWER_TIMEOUT = env_float("LIVEQA_ANSWER_TIMEOUT", 120.0)
LIVEQA_LLM_RETRIES = env_int("LIVEQA_LLM_RETRIES", 2)
LIVEQA_TTS_TIMEOUT = env_float("LIVEQA_TTS_TIMEOUT", 20.0)

LIVEQA_TTS_CONCURRENCY = env_int("LIVEQA_TTS_CONCURRENCY", 3)
LIVEQA_WORKER_CONCURRENCY = env_int("LIVEQA_WORKER_CONCURRENCY", 8)
LIVEQA_WORKER_CHANNEL = os.environ.get("LIVEQA_WORKER_CHANNEL", "liveqa-answers")
# A worker that has not touched an answer for this long is presumed dead.
LIVEQA_ANSWER_STALE_AFTER = env_float("LIVEQA_ANSWER_STALE_AFTER", 30.0)

LIVEQA_MAX_QUESTION_CHARS = env_int("LIVEQA_MAX_QUESTION_CHARS", 500)
LIVEQA_MAX_PROMPT_CHARS = env_int("LIVEQA_MAX_PROMPT_CHARS", 4000)
LIVEQA_MAX_FRAME_BYTES = env_int("LIVEQA_MAX_FRAME_BYTES", 65536)
LIVEQA_RATE_LIMIT_MESSAGES = env_int("LIVEQA_RATE_LIMIT_MESSAGES", 30)
LIVEQA_RATE_LIMIT_WINDOW = env_float("LIVEQA_RATE_LIMIT_WINDOW", 10.0)
LIVEQA_QUESTIONS_PER_IP_PER_MINUTE = env_int("LIVEQA_QUESTIONS_PER_IP_PER_MINUTE", 10)  # the public ask page

# Embedded offline default.
LIVEQA_PIPER_VOICE = os.environ.get("LIVEQA_PIPER_VOICE", "")  # path to a .onnx; default: the packaged voice
LIVEQA_LOCAL_LLM_PATH = os.environ.get("LIVEQA_LOCAL_LLM_PATH", "")  # path to a .gguf; default: SmolLM2
LIVEQA_LOCAL_LLM_THREADS = env_int("LIVEQA_LOCAL_LLM_THREADS", 2)
