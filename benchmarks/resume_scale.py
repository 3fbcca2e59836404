"""Resume scan at scale (issue 27): make a synthetic records file (default 1 GB of
records shaped like the paper's run: 16 samples of ~2 KB text each, ~35 KB a record),
then resume-scan it in a fresh process and report the time and peak RSS.

    PYTHONPATH=. python benchmarks/resume_scale.py --size-mb 1024 [--dir /tmp]

Targets: under 60 s and under 200 MB peak RSS for 1 GB. The measured process only
imports the records module and runs :func:`~toa_graph.synthesis.records.repair_records`
(the streamed scan a resume does, building the compact done set).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.proc_status import status_mb  # noqa: E402

TARGET_S = 60.0
TARGET_RSS_MB = 200.0


def record_line(
    i: int, samples: int = 16, text_bytes: int = 2048, data_digest: str = "d" * 16
) -> bytes:
    """One synthetic record (a lean record's shape), id ``r{i}``."""
    text = (f"answer {i} " * (text_bytes // 8 + 1))[:text_bytes]
    rec: dict[str, Any] = {
        "id": f"r{i}",
        "prompt": f"prompt {i}",
        "method": "toa",
        "config_digest": "c" * 16,
        "data_digest": data_digest,
        "samples": [
            {
                "id": f"s{k}",
                "agent": f"a{k % 4}",
                "kind": "root",
                "parent": None,
                "text": text,
                "reward": (i * 31 + k) % 97 / 97,
            }
            for k in range(samples)
        ],
        "best": {"id": "s0", "reward": 0.5},
        "errors": [],
        "totals": {"generations": samples, "wall_s": 1.0},
    }
    return (json.dumps(rec, separators=(",", ":")) + "\n").encode()


def make_records(path: Path, size_mb: float, data_digest: str = "d" * 16) -> int:
    """Write records (of ``data_digest``) to ``path`` until it holds ``size_mb`` MB; how
    many records."""
    goal = int(size_mb * 1024 * 1024)
    n = written = 0
    with path.open("wb") as f:
        while written < goal:
            line = record_line(n, data_digest=data_digest)
            f.write(line)
            written += len(line)
            n += 1
    return n


def measure(path: Path) -> dict[str, Any]:
    """Scan ``path`` as a resume does; seconds, records and peak RSS (this process)."""
    from toa_graph.synthesis.records import repair_records

    base = _vm_hwm_mb()
    t0 = time.perf_counter()
    res = repair_records(path)
    dt = time.perf_counter() - t0
    peak = _vm_hwm_mb()
    return {"records": len(res.ids), "seconds": round(dt, 2), "baseline_rss_mb": round(base, 1),
            "peak_rss_mb": round(peak, 1)}  # fmt: skip


def _vm_hwm_mb() -> float:
    """This process's peak RSS (``VmHWM``: reset by exec, unlike ``ru_maxrss``, which a
    child inherits from the process it was forked from)."""
    peak = status_mb("VmHWM")
    return (
        peak if not math.isnan(peak) else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=1024)
    ap.add_argument("--dir", default=None, help="where to write the file (default: a temp dir)")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="resume-scale-") as tmp:
        path = Path(tmp) / "records.jsonl"
        t0 = time.perf_counter()
        n = make_records(path, args.size_mb)
        size = path.stat().st_size / 1024**2
        print(f"made {n} records, {size:.0f} MB in {time.perf_counter() - t0:.1f} s")
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        m = json.loads(out.stdout)
    ok_t, ok_m = m["seconds"] < TARGET_S, m["peak_rss_mb"] < TARGET_RSS_MB
    print(
        f"resume scan of {m['records']} records ({size:.0f} MB): {m['seconds']} s "
        f"(target < {TARGET_S:.0f}: {'PASS' if ok_t else 'FAIL'}), peak RSS {m['peak_rss_mb']} MB "
        f"(baseline after imports {m['baseline_rss_mb']} MB; target < {TARGET_RSS_MB:.0f}: "
        f"{'PASS' if ok_m else 'FAIL'})"
    )
    return 0 if ok_t and ok_m else 1


if __name__ == "__main__":
    raise SystemExit(main())
