"""Execute the notebooks top to bottom and store them WITH their outputs (what the repo keeps).

    .venv/bin/python scripts/run_notebooks.py                 # all three
    .venv/bin/python scripts/run_notebooks.py quickstart      # one

They run against $TOA_GRAPH_CONFIG when set, else they start the embedded default (kept
running between notebooks; `toa-graph embedded stop` ends it). The working directory is the
repo root, so the distill notebook's files land under runs/ (ignored by git). A failing cell
raises and leaves the stored notebook unchanged. CI executes them again, fresh
(tests/integration/test_notebooks.py), and never writes them back.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["quickstart", "scaling", "distill"]


def run(name: str, timeout: int) -> float:
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    elapsed = time.perf_counter() - t0
    nbformat.write(nb, path)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"notebooks to run (default: {' '.join(NAMES)})")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown notebook(s) {unknown}; choose from {NAMES}")
    for name in args.names or NAMES:
        print(f"{name}.ipynb: executed and stored in {run(name, args.timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
