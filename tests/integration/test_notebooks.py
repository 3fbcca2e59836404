"""The notebooks are stored WITH the outputs of a run (readable on GitHub; refreshed by
scripts/run_notebooks.py), and quickstart and scaling run again from scratch here, top to
bottom (nbclient; a failing cell fails the test), against the embedded servers of the
session fixture, passed to the notebooks via $TOA_GRAPH_CONFIG. The stored outputs are
cleared before the fresh run, so only the fresh outputs are checked; the files are never
written back. (distill trains a model for minutes: stored, not re-run here.)"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from toa_graph.config import ProjectConfig
from toa_graph.launch import resolved_config

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="module")
def config_file(embedded_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nb") / "endpoints.yaml"
    path.write_text(yaml.safe_dump(resolved_config(embedded_config, []), sort_keys=False))
    return path


def code_outputs(nb: Any) -> list[dict[str, Any]]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.parametrize("name", ["quickstart", "scaling", "distill"])
def test_notebook_stored_with_outputs(name: str) -> None:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), (
        f"{path}: every code cell must be stored executed (scripts/run_notebooks.py {name})"
    )
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path}: not one top-to-bottom run"
    assert not [o for o in code_outputs(nb) if o.get("output_type") == "error"], path
    assert any("image/png" in o.get("data", {}) for o in code_outputs(nb)), f"{path}: no plot"


@pytest.mark.parametrize("name", ["quickstart", "scaling"])
def test_notebook_runs(
    name: str, config_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # run fresh: only this run's outputs are checked below
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    monkeypatch.setenv("TOA_GRAPH_CONFIG", str(config_file))
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    elapsed = time.perf_counter() - t0
    print(f"{name}.ipynb ran in {elapsed:.0f} s")
    text = "\n".join(o.get("text", "") for o in code_outputs(nb))
    if name == "quickstart":
        for method in ("toa", "moa", "random", "debate"):
            assert f"\n{method} " in f"\n{text}"
        assert "play 8/8" in text and "└─" in text
    else:
        assert "total" in text and "budget  8" in text
    images = [o for o in code_outputs(nb) if "image/png" in o.get("data", {})]
    assert images, "the plot cell drew nothing"
