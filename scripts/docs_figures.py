"""Produce the README's pictures and example output; each result is a file under docs/.

    .venv/bin/python scripts/docs_figures.py

- docs/compare.png, docs/compare_tokens.png, docs/compare_cost.png, docs/compare.csv:
  `toa-graph compare --simulate --methods all` (five simulated agents with hidden skills and
  made-up prices, a noisy simulated reward; no models, no servers; deterministic): reward
  against generations, tokens and cost.
- docs/toa_tree.png: one TOA search (budget 16) over the same simulated agents, drawn by
  toa_graph.viz.draw_tree.
- docs/example/: the README's "Your own models" path against the fake OpenAI-compatible
  server of the test suite (tests/fake_openai_server.py, two agents, chrF reward against the
  prompts' references): `synthesize` -> records.jsonl (first record: record.json), its
  printed summary (summary.txt) and `export dpo` (dpo.jsonl + its dataset card).

Takes about a minute on 2 CPU cores. Nothing here needs a GPU, a key or the network.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CLI = [sys.executable, "-m", "toa_graph.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}


def cli(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [*CLI, *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True
    )
    return done.stdout


def compare_plot(work: Path) -> None:
    out = work / "compare"
    # every method; exit status 1 = some cells failed: debate's budget 8 is below one
    # round of 5 agents (n/a in the table, by debate's own rule)
    subprocess.run(
        [*CLI, "compare", "--simulate", "--methods", "all", "--budgets", "8,16,32,64",
         "--limit", "40", "--output", str(out), "--no-progress"],
        cwd=ROOT, env=ENV, check=False, capture_output=True, text=True,
    )  # fmt: skip
    for name in ("compare.png", "compare_tokens.png", "compare_cost.png", "compare.csv"):
        shutil.copyfile(out / name, DOCS / name)


def tree_plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toa_graph import METHODS
    from toa_graph.simulate import SimReward, SimWorld, sim_agents, sim_prompts
    from toa_graph.viz import draw_tree

    world = SimWorld(seed=0)
    graph = METHODS["toa"](agents=sim_agents(world), reward=SimReward(world)).compile()
    out = asyncio.run(
        graph.ainvoke({"prompt": sim_prompts(1)[0]["prompt"]}, context={"budget": 16, "seed": 0})
    )
    fig, ax = plt.subplots(figsize=(11, 5.5))
    draw_tree(out["tree"], ax=ax, title="TOA, 16 plays over 5 simulated agents")
    fig.tight_layout()
    fig.savefig(DOCS / "toa_tree.png", dpi=110)


PROMPTS = [
    {"id": "capital-fr", "prompt": "What is the capital of France?",
     "reference": "The capital of France is Paris."},
    {"id": "bees", "prompt": "What do bees make?", "reference": "Bees make honey and beeswax."},
    {"id": "water", "prompt": "At what temperature does water boil at sea level?",
     "reference": "Water boils at 100 degrees Celsius at sea level."},
]  # fmt: skip


def example_run(work: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai_server", "--delay", "0.01", "--deterministic"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = json.loads(server.stdout.readline())["port"]
        url = f"http://127.0.0.1:{port}/v1"
        config = {
            "agents": [
                {"name": "model-a", "model": "model-a", "base_url": url, "temperature": 0.7},
                {"name": "model-b", "model": "model-b", "base_url": url, "temperature": 0.7},
            ],
            "reward": {"kind": "reference", "metric": "chrf"},
        }
        (work / "my-models.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (work / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
        summary = cli("synthesize", "--config", "my-models.yaml", "--input", "prompts.jsonl",
                      "--output", "runs/mine", "--budget", "8", "--no-progress", cwd=work)  # fmt: skip
        cli("export", "dpo", "--input", "runs/mine", "--output", "dpo.jsonl",
            "--reward", "chrF against the reference (sacrebleu)", cwd=work)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    ex = DOCS / "example"
    ex.mkdir(exist_ok=True)
    first = (work / "runs/mine/records.jsonl").read_text().splitlines()[0]
    (ex / "record.json").write_text(json.dumps(json.loads(first), indent=2) + "\n")
    (ex / "summary.txt").write_text(summary.replace(str(work), "."))
    shutil.copyfile(work / "dpo.jsonl", ex / "dpo.jsonl")
    for card in work.glob("dpo*.md"):
        shutil.copyfile(card, ex / card.name)


def main() -> int:
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        example_run(work)
        print("wrote docs/example/", flush=True)
        tree_plot()
        print("wrote docs/toa_tree.png", flush=True)
        compare_plot(work)
        print("wrote docs/compare.png, docs/compare_tokens.png, docs/compare.csv", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
