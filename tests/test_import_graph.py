"""No import cycle between the modules of toa_graph/.

Every ``import`` of a ``toa_graph`` module counts: at module level, inside a function (a
lazy import still ties the two modules together) and under ``if TYPE_CHECKING:`` (a
type-only import never runs, but the two modules still depend on each other's names, and
mypy, documentation builders or a ``typing.get_type_hints`` call do run it).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "toa_graph"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The toa_graph modules ``module`` imports (a ``from pkg import name`` counts as an
    import of ``pkg.name`` when that is a module, else of ``pkg``)."""
    out: set[str] = set()
    base = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "toa_graph")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                prefix = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            if target.split(".")[0] == "toa_graph":
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.add(sub if sub in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in out if m in known and m != module}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {
        name: _imported(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
        for name, path in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None``. A package importing its own
    submodules (``pkg -> pkg.mod``) is its re-export surface, not a cycle, unless the
    submodule imports the package back."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := dfs(start)):
            return found
    return None


def test_find_cycle_reports_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_lazy_and_type_checking_imports() -> None:
    graph = import_graph()
    # rewards.hf builds the fused decoder lazily, inside HFScorer.__init__
    assert "toa_graph.rewards.fused" in graph["toa_graph.rewards.hf"]
    assert "toa_graph.process" in graph["toa_graph.launch"]
    # agents.providers imports AgentConfig for annotations only (under TYPE_CHECKING)
    assert "toa_graph.config" in graph["toa_graph.agents.providers"]
    # ... so the config must not import the agents package, lazily or not
    assert not any(m.startswith("toa_graph.agents") for m in graph["toa_graph.config"])


def test_no_import_cycle_between_toa_graph_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
