"""The shipped configs are read from inside the package (what the wheel installs), and the
docs' ``model_configs/NAME`` paths work from any directory. scripts/wheel_check.sh checks
the built wheel itself."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import toa_graph
from toa_graph.config import configs_dir, load_config
from toa_graph.embedded import default_config_path

ROOT = Path(__file__).resolve().parents[1]


def test_configs_are_inside_the_package() -> None:
    assert configs_dir() == Path(toa_graph.__file__).parent / "model_configs"
    assert default_config_path().is_file()
    shipped = {p.name for p in configs_dir().glob("*.yaml")}
    assert shipped == {p.name for p in (ROOT / "model_configs").glob("*.yaml")}


def test_the_docs_config_paths_work_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config("model_configs/paper-5x70b.yaml")
    assert len(cfg.agents) == 5
    with pytest.raises(toa_graph.errors.UserError, match="config file not found"):
        load_config("model_configs/nope.yaml")


def test_the_wheel_holds_no_top_level_graphs_package() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = meta["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["toa_graph*"]
    data = setuptools["package-data"]["toa_graph"]
    assert {"model_configs/*.yaml", "model_configs/*/*.yaml"} <= set(data)
