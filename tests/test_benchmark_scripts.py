"""The GPU reward benchmark runs end to end (tiny model, CPU), so a lent GPU's time is
never lost to a broken script; its agreement figures are checked, not its speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]


def test_reward_gpu_benchmark_smoke(tmp_path):
    out = tmp_path / "rg.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "reward_gpu.py"),
            *("--model", "tiny", "--device", "cpu", "--runs", "4", "--budget", "3"),
            *("--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())["results"]
    assert not any(k.endswith("_error") for k in res), res
    for key in ("one_at_a_time", "batched_runs4", "packed_runs4", "fused_runs4"):
        assert res[key]["tokens_per_s"] > 0
    assert res["one_at_a_time"]["items"] == 12  # 4 runs x 3 reward calls
    for label in ("batched", "packed", "fused"):
        assert res[f"offline_{label}_same_pairs"]["max_abs_diff_vs_one_at_a_time"] < 1e-4
    assert res["fused_runs4"]["ratio_vs_same_kernels_one_at_a_time"] > 0
