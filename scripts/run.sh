#!/usr/bin/env bash
# Sets up a virtual environment on first use and starts the bot (SQLite in ./data unless configured).
# Settings come from LIKENESS_* environment variables or a .env file; see README.md.
# Set LIKENESS_EXTRAS=local to install the local GPU engine as well.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if [ -n "${LIKENESS_EXTRAS:-}" ]; then
  "$VENV/bin/pip" install --quiet -e ".[${LIKENESS_EXTRAS}]"
else
  "$VENV/bin/pip" install --quiet -e .
fi
exec "$VENV/bin/likeness" run "$@"
