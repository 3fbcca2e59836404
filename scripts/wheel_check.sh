#!/usr/bin/env bash
# Build the wheel and check that an install of it (not the checkout) runs: the CLI starts,
# `synthesize --help` prints, the shipped default config resolves and loads, and the wheel
# holds no top-level `graphs` package. A few seconds: the wheel is built from a copy of the
# working tree (no stale build/ output), installed with --no-deps into a fresh venv that
# borrows .venv's already-installed dependencies (no download), and run from outside the
# checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d "${TMPDIR:-/tmp}/toa-graph-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# the files git would commit (tracked + new, not ignored), links kept as links
mkdir -p "$work/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$work/src"
# .venv's own setuptools when it is new enough for pyproject.toml (no download), else pip's
# isolated build (fetches setuptools once; pip caches it)
isolation="--no-build-isolation"
.venv/bin/python -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' \
  2>/dev/null || isolation=""
.venv/bin/pip wheel --quiet --no-deps $isolation -w "$work/dist" "$work/src" >/dev/null
wheel="$(ls "$work"/dist/toa_graph-*.whl)"

# a fresh venv whose only toa_graph is the wheel's; .venv's site-packages come after its
# own (a .pth line: .venv's editable-install hook is not run, so the checkout stays out)
base_py="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
"$base_py" -m venv --without-pip "$work/venv"
site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/zz-toa-graph-deps.pth"
.venv/bin/pip --python "$work/venv/bin/python" install --quiet --no-deps --no-index "$wheel"

cd "$work"  # away from the checkout: nothing may come from it
unset PYTHONPATH
"$work/venv/bin/toa-graph" --version
"$work/venv/bin/toa-graph" synthesize --help >/dev/null
"$work/venv/bin/python" - "$work/venv" <<'EOF'
import importlib.util
import sys

import toa_graph
from toa_graph.config import load_config
from toa_graph.embedded import default_config_path

assert toa_graph.__file__.startswith(sys.argv[1]), f"toa_graph imported from {toa_graph.__file__}"
assert importlib.util.find_spec("graphs") is None, "the wheel installs a top-level 'graphs'"
path = default_config_path()
cfg = load_config(path)
also = load_config("model_configs/paper-5x70b.yaml")  # the docs' paths resolve to shipped files
print(f"wheel ok: default config {path} ({len(cfg.agents)} agents); {len(also.agents)} in paper-5x70b")
EOF
