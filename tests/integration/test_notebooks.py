"""Both notebooks run top to bottom (nbclient; a failing cell fails the test) against the
embedded servers of the session fixture, passed to the notebooks via $TOA_GRAPH_CONFIG.
The notebooks are stored without outputs; this never writes them back."""

from __future__ import annotations

import time
from pathlib import Path

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


@pytest.mark.parametrize("name", ["quickstart", "scaling"])
def test_notebook_runs(
    name: str, config_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(
        not c.get("outputs") and not c.get("execution_count")
        for c in nb.cells
        if c.cell_type == "code"
    ), f"{path} must be stored without outputs"
    monkeypatch.setenv("TOA_GRAPH_CONFIG", str(config_file))
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    elapsed = time.perf_counter() - t0
    print(f"{name}.ipynb ran in {elapsed:.0f} s")
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    if name == "quickstart":
        for method in ("toa", "moa", "random", "debate"):
            assert f"\n{method} " in f"\n{text}"
        assert "play 8/8" in text and "└─" in text
    else:
        assert "total" in text and "budget  8" in text
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]  # fmt: skip
    assert images, "the plot cell drew nothing"
