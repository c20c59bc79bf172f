#!/usr/bin/env bash
# The test command: sets up if needed (idempotent), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash .ci/setup
exec .venv/bin/python -m pytest -q "$@"
