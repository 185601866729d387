#!/usr/bin/env bash
# Install agent-api with its test extras into ./.venv, then run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast tests only.
# Test files run on AGENT_API_TEST_WORKERS processes (default 2; 0 runs everything in this one), each file on one
# worker, so a module's shared server and offline model stay shared.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
pip install -q -e '.[test]'
workers="${AGENT_API_TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
  exec pytest "$@"
fi
exec pytest -n "$workers" --dist loadfile "$@"
