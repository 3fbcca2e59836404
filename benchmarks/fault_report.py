"""Run the fault-injection suite and print the reliability table of docs/faults.md.

    .venv/bin/python benchmarks/fault_report.py [--markdown OUT.md]

Runs ``pytest tests/test_faults.py`` with ``TOA_FAULT_REPORT`` set: each scenario appends
what it injected, what happened, records lost and duplicates (computed by the test from
the output files). The table is printed only from a run in which every test passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_suite(report: Path) -> tuple[int, str, float]:
    env = {**os.environ, "TOA_FAULT_REPORT": str(report), "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_faults.py", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    return res.returncode, res.stdout + res.stderr, time.monotonic() - t0


def table(rows: list[dict[str, object]]) -> str:
    out = [
        "| Category | Injected | Outcome | Records lost | Duplicates |",
        "|---|---|---|---:|---:|",
    ]
    for r in rows:
        lost = "–" if r["lost"] is None else r["lost"]
        dup = "–" if r["duplicates"] is None else r["duplicates"]
        out.append(f"| {r['category']} | {r['case']} | {r['outcome']} | {lost} | {dup} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.jsonl"
        rc, output, wall = run_suite(report)
        rows = [json.loads(x) for x in report.read_text().splitlines()] if report.exists() else []
    tail = output.strip().splitlines()[-1] if output.strip() else ""
    if rc != 0:
        print(output[-6000:], file=sys.stderr)
        print(f"the fault suite failed (exit {rc}); no table", file=sys.stderr)
        return 1
    counts = Counter(str(r["category"]) for r in rows)
    lost = sum(int(r["lost"] or 0) for r in rows)
    dup = sum(int(r["duplicates"] or 0) for r in rows)
    counted = sum(r["lost"] is not None for r in rows)
    passed = re.search(r"(\d+) passed", tail)
    text = "\n".join(
        [
            table(rows),
            "",
            f"Scenarios: {counts['agent endpoint']} agent-endpoint faults, "
            f"{counts['all agents down']} all-agents-down cases, {counts['reward']} reward "
            f"faults, {counts['SIGKILL']} randomized SIGKILL run, {counts['bad input']} bad "
            f"inputs, {counts['secrets'] + counts['safe defaults']} secrets/defaults checks. "
            f"Records lost: {lost}. Duplicates: {dup} (over the {counted} scenarios that "
            "write records; – where none are written).",
            f"`pytest tests/test_faults.py`: {passed.group(1) if passed else '?'} passed, "
            f"{wall:.0f} s wall (python {sys.version.split()[0]}, {os.cpu_count()} CPUs).",
        ]
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    return 0 if lost == 0 and dup == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
