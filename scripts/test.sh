#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages, a virtualenv with the project and its test and
# offline extras), makes sure Redis is reachable, then runs the suite on SQLite and the
# database-dependent tests again on PostgreSQL. Extra arguments go to the SQLite pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores); pip caches the wheel.
.venv/bin/pip install -q -e '.[offline,test]'

export REDIS_URL_TEST=${REDIS_URL_TEST:-redis://127.0.0.1:6379/0}
if ! redis-cli -u "$REDIS_URL_TEST" ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do redis-cli -u "$REDIS_URL_TEST" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

mkdir -p artifacts
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"

PG_URL=${DATABASE_URL_PG:-postgres://postgres@127.0.0.1:5432/test}
if .venv/bin/python - "$PG_URL" <<'PY'
import sys, psycopg
try:
    psycopg.connect(sys.argv[1].replace("postgres://", "postgresql://", 1), connect_timeout=3).close()
except Exception as exc:
    print(f"PostgreSQL not reachable ({exc}); database tests ran on SQLite only", file=sys.stderr)
    sys.exit(1)
PY
then
  DATABASE_URL=$PG_URL .venv/bin/python -m pytest -m "db_matters and not load" -q
fi
