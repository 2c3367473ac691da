#!/usr/bin/env bash
# Sets up a fresh virtual environment and runs every check: lint, types, layer contracts, tests.
# A CPU build of torch is enough for the tests (the local engine runs tiny models on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "torch==2.13.0"
"$VENV/bin/pip" install --quiet -e ".[local,dev]"

# The Compose tests validate docker-compose.yml with Debian's docker-compose, which needs no Docker engine.
command -v docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose; } \
  || echo "docker-compose could not be installed: the Compose tests will skip" >&2

"$VENV/bin/ruff" check bot engine storage tests benchmarks
"$VENV/bin/ruff" format --check bot engine storage tests benchmarks
"$VENV/bin/mypy"
"$VENV/bin/lint-imports"
"$VENV/bin/pytest" "$@"
