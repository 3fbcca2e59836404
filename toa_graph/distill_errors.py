"""Errors of ``train`` and ``evaluate``, in one place so that they can join the project's
user-error root (the CLI maps a user error to exit code 2).

Both are ``ValueError`` subclasses: bad data, a missing field, an unreachable endpoint.
"""

from __future__ import annotations

__all__ = ["DistillError", "EvalError", "TrainError"]


class DistillError(ValueError):
    """A user error in the distill loop (train / evaluate): the message says what to fix."""


class TrainError(DistillError):
    """``toa-graph train`` cannot start: bad data file, empty data, bad option or recipe."""


class EvalError(DistillError):
    """``toa-graph evaluate`` cannot run: bad data or field map, unreachable endpoint."""
