#!/usr/bin/env bash
# Installs LiveQA and what it needs (Debian packages, a virtualenv), migrates, creates an admin user and
# a demo stream, and starts it on the embedded default: no API key, no network. Set OPENAI_API_KEY (and
# OPENAI_BASE_URL) first to use an OpenAI-compatible server instead. HOST and PORT choose the address.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v espeak-ng >/dev/null; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The first install compiles llama-cpp-python (about 5 minutes on 2 cores); later runs reuse the wheel.
.venv/bin/pip install -q -e '.[offline]'

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
mkdir -p .liveqa
if [ -z "${SECRET_KEY:-}" ]; then
  [ -s .liveqa/secret_key ] || (umask 077 && .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(50))" > .liveqa/secret_key)
  SECRET_KEY=$(cat .liveqa/secret_key)
  export SECRET_KEY
fi
export ALLOWED_HOSTS=${ALLOWED_HOSTS:-localhost,127.0.0.1,[::1],$HOST}

.venv/bin/python manage.py migrate --noinput -v 0
.venv/bin/python manage.py collectstatic --noinput -v 0
.venv/bin/python manage.py setupdemo --base-url "http://$HOST:$PORT"
exec .venv/bin/python -m liveqa.serve -b "$HOST" -p "$PORT" liveqa.asgi:application
