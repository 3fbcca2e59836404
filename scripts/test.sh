#!/usr/bin/env bash
# Set up (idempotent, cached) and run the whole test suite: the wheel check, lint, types, unit and
# integration tests (the integration tests start real vLLM CPU servers on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/wheel_check.sh  # the built wheel installs and runs (configs inside, no `graphs`)
.venv/bin/ruff check toa_graph graphs tests benchmarks
.venv/bin/ruff format --check toa_graph graphs tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout 900 "$@"
