"""One error tree for toa_graph.

Every error the library raises on purpose derives from :class:`ToaGraphError`:

- :class:`UserError` (also a ``ValueError``): the input is at fault (a config file, a flag,
  an input file, a busy output directory). The message says what to change; the CLI prints
  it and exits with code 2.
- :class:`RunError` (also a ``RuntimeError``): something failed while running (a server,
  a reward model, a worker). The CLI prints it and exits with code 1.

``toa_graph.cli.main`` is the one place that turns these into messages and exit codes;
commands validate their arguments and raise instead of printing.
"""

from __future__ import annotations

__all__ = ["PromptSkipped", "RunError", "ToaGraphError", "UserError", "one_line"]


class ToaGraphError(Exception):
    """The root of toa_graph's own errors: an error that stops a command (one line on the
    CLI, exit 2; a 400 from the server) unless a subclass says otherwise."""

    exit_code: int = 2
    """The ``toa-graph`` exit status when this error ends a command."""


class UserError(ToaGraphError, ValueError):
    """Bad input or configuration; the message names the file, flag or field to fix."""

    exit_code = 2


class PromptSkipped(UserError):
    """A method cannot run this prompt (e.g. debate on a prompt it cannot judge), found
    before anything was spent. Alone it is a user error; in a synthesis run the prompt is
    recorded as skipped with this reason and not retried on the next run."""


class RunError(ToaGraphError, RuntimeError):
    """A failure while running: a server, a reward model, a worker, a subprocess."""

    exit_code = 1


def one_line(exc: BaseException) -> str:
    """An error's message on one line (a multi-line message's lines joined with "; ")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__
