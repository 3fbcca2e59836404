"""The CLI turns toa_graph's errors into a message and an exit code, in one place."""

from __future__ import annotations

import argparse
import ast
import io
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
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


def _walk(
    parser: argparse.ArgumentParser, path: str = "toa-graph"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for name, sub in cli.subparsers(parser).items():
        yield from _walk(sub, f"{path} {name}")


def test_every_option_of_every_command_has_help() -> None:
    missing = []
    for path, parser in _walk(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_help_shows_defaults_and_keeps_the_examples_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["synthesize", "--help"])
    text = capsys.readouterr().out
    assert "prompts in flight at once (default: 16)" in " ".join(text.split())
    assert "Ray worker actors, each with --concurrency prompts in flight (default: 2)" in " ".join(
        text.split()
    )
    ray_example = next(line for line in text.splitlines() if "--output runs/uf \\" in line)
    assert "--ray auto" not in ray_example  # the continuation line stays a line of its own
    assert any(line.strip().startswith("--ray auto --ray-workers 8") for line in text.splitlines())


def test_chat_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["chat", "--help"])
    assert "  toa-graph chat --config " in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from toa_graph import __version__

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"toa-graph {__version__}"


@pytest.mark.parametrize(
    ("flags", "level"),
    [([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG)],
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_command(
    tmp_path: Path, flags: list[str], level: int, where: str
) -> None:
    command = ["export", "sft", "--input", str(tmp_path / "none"), "--output", "o.jsonl"]
    argv = flags + command if where == "before" else command + flags
    assert cli.main(argv) == 2
    assert logging.getLogger().level == level
    http = logging.getLogger("httpx").level
    assert http == (logging.DEBUG if level == logging.DEBUG else logging.WARNING)


def test_verbose_counts_add_up_across_both_places(tmp_path: Path) -> None:
    argv = ["-v", "export", "sft", "--input", str(tmp_path / "none"), "--output", "o", "-v"]
    assert cli.main(argv) == 2
    assert logging.getLogger().level == logging.DEBUG


def test_log_lines_go_around_a_progress_bar() -> None:
    from tqdm import tqdm

    buf = io.StringIO()
    handler = cli.TqdmLogHandler(buf)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("test_cli.bar")
    log.addHandler(handler)
    log.propagate = False
    try:
        with tqdm(total=4, file=buf, desc="bar", ascii=True) as bar:
            bar.update(1)
            log.warning("a log line")
            bar.update(1)
    finally:
        log.removeHandler(handler)
    out = buf.getvalue()
    # the bar is cleared before the line, and the line ends before the bar is redrawn
    assert re.search(r"\r\s*\ra log line\n", out), repr(out)
    assert "bar:" in out.split("a log line\n", 1)[1]
