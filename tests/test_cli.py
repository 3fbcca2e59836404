"""The CLI turns toa_graph's errors into a message and an exit code, in one place."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from toa_graph import cli
from toa_graph.errors import RunError, ToaGraphError, UserError

COMMANDS_DIR = Path(cli.__file__).parent / "commands"


def test_error_tree() -> None:
    from toa_graph.config import ConfigError
    from toa_graph.distributed import DistributedError
    from toa_graph.embedded import EmbeddedError
    from toa_graph.launch import LaunchError
    from toa_graph.rewards.base import RewardError
    from toa_graph.server.serving import ServingError
    from toa_graph.synthesis import InputError, OutputBusyError

    for user in (ConfigError, InputError, OutputBusyError):
        assert issubclass(user, UserError) and issubclass(user, ValueError)
    for run in (RewardError, LaunchError, EmbeddedError, DistributedError):
        assert issubclass(run, RunError) and issubclass(run, RuntimeError)
    assert issubclass(ServingError, ToaGraphError)
    assert issubclass(OutputBusyError, RuntimeError)  # as before the tree
    assert (UserError("x").exit_code, RunError("x").exit_code) == (2, 1)


@pytest.mark.parametrize(("exc", "code"), [(UserError("bad flag --x"), 2), (RunError("died"), 1)])
def test_main_prints_the_message_and_returns_the_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: Exception, code: int
) -> None:
    real = cli.build_parser

    def parser_with_failing_command() -> argparse.ArgumentParser:
        parser = real()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.add_parser("boom")

        def fail(args: Any) -> int:
            raise exc

        p.set_defaults(func=fail)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_with_failing_command)
    assert cli.main(["boom"]) == code
    assert capsys.readouterr().err.strip() == str(exc)


def test_a_user_error_of_a_real_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.jsonl"
    argv = ["export", "sft", "--input", str(missing), "--output", str(tmp_path / "o.jsonl")]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == f"input not found: {missing}"


def test_commands_raise_instead_of_printing_and_returning_2() -> None:
    """No command module has ``return 2`` (a user error is raised, cli.main reports it)."""
    offenders = []
    for path in sorted(COMMANDS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Return)
                and isinstance(node.value, ast.Constant)
                and node.value.value == 2
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_embedded_command_in_both_spellings(tmp_path: Path) -> None:
    env = {"TOA_GRAPH_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    root = str(Path(cli.__file__).resolve().parents[1])
    for argv in (
        ["-m", "toa_graph.embedded", "status"],
        ["-m", "toa_graph.cli", "embedded", "status"],
    ):
        res = subprocess.run(
            [sys.executable, *argv],
            env={**env, "PYTHONPATH": root},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "no kept servers running"
