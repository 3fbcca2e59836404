"""Where the shipped configs are: ``toa_graph/model_configs`` (inside an installed wheel;
in a checkout a link to the repository's ``model_configs/``), read through
:mod:`importlib.resources`."""

from __future__ import annotations

from pathlib import Path

__all__ = ["configs_dir", "shipped_path"]


def configs_dir() -> Path:
    """The shipped ``model_configs/`` directory, read through :mod:`importlib.resources`:
    ``toa_graph/model_configs`` inside an installed wheel; in a checkout that path is a link
    to the repository's ``model_configs/``."""
    from importlib.resources import files

    return Path(str(files("toa_graph") / "model_configs"))  # a folder on disk, not a zip


def shipped_path(path: Path) -> Path:
    """``path`` itself when it exists; else, for ``model_configs/NAME`` (the paths the docs
    use), the shipped copy of ``NAME`` (so they work from an installed wheel too)."""
    parts = path.parts
    if path.exists() or path.is_absolute() or len(parts) < 2 or parts[0] != "model_configs":
        return path
    shipped = configs_dir().joinpath(*parts[1:])
    return shipped if shipped.is_file() else path
