"""Size limits that keep toa_graph/ readable: no module over 500 lines, no function over
100 lines of its own (a function nested inside another counts apart, as a graph factory's
node functions do)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "toa_graph"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _span(node: ast.AST) -> int:
    return int(node.end_lineno or node.lineno) - int(node.lineno) + 1  # type: ignore[attr-defined]


def own_lines(fn: Function) -> int:
    """A function's lines less those of the functions defined directly inside it."""
    nested = 0
    stack: list[ast.AST] = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        if isinstance(node, Function):
            nested += _span(node)  # its own nested ones are inside this span
        else:
            stack.extend(ast.iter_child_nodes(node))
    return _span(fn) - nested


def test_own_lines_counts_nested_functions_apart() -> None:
    src = "def outer():\n    x = 1\n    def inner():\n        a = 1\n        b = 2\n    return x\n"
    fn = ast.parse(src).body[0]
    assert isinstance(fn, Function)
    assert own_lines(fn) == 3  # def, x = 1, return


def test_no_module_over_500_lines() -> None:
    too_long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_no_function_over_100_lines_of_its_own() -> None:
    too_long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, Function) and (n := own_lines(node)) > MAX_FUNCTION_LINES:
                too_long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = n
    assert too_long == {}
