"""Every ``--help`` is complete: each command and sub-command (``embedded prepare`` too)
has a description, each option a help text, and each option with a default shows it."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from toa_graph import cli


def _parsers(
    parser: argparse.ArgumentParser, name: str = "toa-graph"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _parsers(p, f"{name} {sub}")


PARSERS = dict(_parsers(cli.build_parser()))


def test_every_command_is_listed() -> None:
    assert "toa-graph embedded prepare" in PARSERS and "toa-graph embedded stop" in PARSERS
    assert len(PARSERS) > len(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_is_complete_with_defaults(name: str) -> None:
    parser = PARSERS[name]
    assert parser.description, f"{name}: no description"
    text = parser.format_help()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        flag = action.option_strings[-1]
        assert action.help, f"{name} {flag}: no help text"
        default = action.default
        shown = default not in (None, False, "", [], ()) and not isinstance(
            action, argparse._CountAction | argparse._HelpAction | argparse._VersionAction
        )
        if shown:
            help_text = str(parser._get_formatter()._get_help_string(action))
            assert "default" in help_text.lower(), f"{name} {flag}: default {default!r} not shown"
    assert text
