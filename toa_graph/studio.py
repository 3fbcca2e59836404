"""Graphs for LangGraph Studio / ``langgraph dev`` and other servers.

The config comes from ``$TOA_GRAPH_CONFIG`` (default: the embedded config). Agents that
point at ``embedded://`` endpoints are resolved against the embedded servers kept running
by ``python -m toa_graph.embedded start``; nothing is started, connected or loaded at
import: clients and the reward model are built on first use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from toa_graph.config import ProjectConfig, load_config
from toa_graph.registry import compile_method
from toa_graph.rewards import LazyReward

logger = logging.getLogger(__name__)


def studio_config(path: str | None = None) -> ProjectConfig:
    """Load the serving config and point embedded agents at running kept servers."""
    from toa_graph import embedded

    cfg = load_config(path or os.environ.get("TOA_GRAPH_CONFIG") or embedded.default_config_path())
    try:
        running = {s.model: s for s in embedded.status()}
    except Exception as exc:  # no cache dir yet, lock trouble: leave URLs unresolved
        logger.warning("could not read the embedded servers' state: %s", exc)
        running = {}
    agents = []
    for a in cfg.agents:
        key = embedded.embedded_key(a)
        if key in running and a.model in running[key].aliases:
            a = a.model_copy(update={"base_url": running[key].base_url})
        agents.append(a)
    return cfg.model_copy(update={"agents": agents})


def studio_graph(method: str, config_path: str | None = None, **options: Any) -> Any:
    """A compiled graph of ``method`` (no checkpointer: the server brings its own), with the
    config's ``method.options`` when the config's method is this one, then ``options``."""
    cfg = studio_config(config_path)
    configured = cfg.method.options if cfg.method.name == method else {}
    return compile_method(
        method,
        agents=cfg.agents,
        reward=LazyReward(cfg.reward, agents=cfg.agents),
        options={**configured, **options},
    )


# ---------------------------------------------------------------- generated Studio files

GENERATED_NOTE = "Generated from the method registry by `python -m toa_graph.studio --write`."


def studio_files() -> dict[str, str]:
    """Path (relative to the project root) -> text of ``langgraph.json`` and one
    ``graphs/<module>.py`` per method the registry shows in Studio."""
    import json
    import textwrap

    from toa_graph.registry import studio_methods

    files: dict[str, str] = {}
    graphs: dict[str, str] = {}
    for spec in studio_methods():
        path = f"graphs/{spec.studio_module}.py"
        doc = textwrap.fill(
            f"{spec.name}: {spec.description} For LangGraph Studio. {GENERATED_NOTE}",
            width=92,
        )
        files[path] = (
            f'"""{doc}\n"""\n\nfrom toa_graph.studio import studio_graph\n\n'
            f'graph = studio_graph("{spec.name}")\n'
        )
        graphs[spec.name] = f"./{path}:graph"
    manifest = {
        "$schema": "https://langgra.ph/schema.json",
        "python_version": "3.11",
        "dependencies": ["."],
        "graphs": graphs,
    }
    files["langgraph.json"] = json.dumps(manifest, indent=2) + "\n"
    return files


def stale_files(root: Path) -> list[str]:
    """The generated files under ``root`` that differ from the registry (missing, changed,
    or a ``graphs/*.py`` module no method needs any more)."""
    expected = studio_files()
    stale = [p for p, text in expected.items() if _read(root / p) != text]
    for module in sorted((root / "graphs").glob("*.py")):
        rel = f"graphs/{module.name}"
        if module.name != "__init__.py" and rel not in expected:
            stale.append(rel)
    return stale


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def write_studio_files(root: Path) -> list[str]:
    """Write the generated files under ``root`` and delete ``graphs/`` modules no method
    needs; the paths changed."""
    changed = stale_files(root)
    expected = studio_files()
    for rel in changed:
        path = root / rel
        if rel in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected[rel])
        else:
            path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m toa_graph.studio [--write] [--root DIR]``: check (default) or rewrite
    ``graphs/`` and ``langgraph.json`` from the registry."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m toa_graph.studio", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the stale files")
    parser.add_argument("--root", default=".", help="the project root (default: .)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.write:
        for rel in write_studio_files(root):
            print(f"wrote {rel}")
        return 0
    stale = stale_files(root)
    for rel in stale:
        print(f"stale: {rel} (run: python -m toa_graph.studio --write)")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
