"""Errors of ``train`` and ``evaluate``: user errors (:class:`~toa_graph.errors.UserError`,
also ``ValueError``; the CLI prints them and exits 2): bad data, a missing field, an
unreachable endpoint.
"""

from __future__ import annotations

from toa_graph.errors import UserError

__all__ = ["DistillError", "EvalError", "TrainError"]


class DistillError(UserError):
    """A user error in the distill loop (train / evaluate): the message says what to fix."""


class TrainError(DistillError):
    """``toa-graph train`` cannot start: bad data file, empty data, bad option or recipe."""


class EvalError(DistillError):
    """``toa-graph evaluate`` cannot run: bad data or field map, unreachable endpoint."""
