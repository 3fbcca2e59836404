"""Summary statistics: bootstrap 95% intervals and a length-controlled win rate.

Pure numeric code (numpy only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_ci", "length_controlled_winrate"]


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (nan, nan) for no values.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    if not values:
        return (math.nan, math.nan)
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(resamples, len(arr)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


def length_controlled_winrate(
    wins: Sequence[float], model_lengths: Sequence[int], reference_lengths: Sequence[int]
) -> float:
    """Win rate with the length difference regressed out, in the spirit of AlpacaEval 2.

    Fits ``P(win) = sigmoid(b0 + b1 * tanh(d / std(d)))`` with ``d`` the length difference
    (model - reference, in characters) by logistic regression (Newton steps, a small ridge
    for stability), then reports ``sigmoid(b0)``: the win rate the model would have at
    equal length. AlpacaEval's own GLM also has a per-instruction term, which needs many
    models; this is its single-model part. Ties count half (``wins`` in [0, 1]).

    >>> round(length_controlled_winrate([1, 0, 1, 0], [10, 10, 10, 10], [10, 10, 10, 10]), 3)
    0.5
    """
    y = np.asarray(wins, dtype=float)
    if len(y) == 0:
        return math.nan
    d = np.asarray(model_lengths, dtype=float) - np.asarray(reference_lengths, dtype=float)
    std = float(d.std())
    x = np.tanh(d / std) if std > 0 else np.zeros_like(d)
    features = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros(2)
    ridge = 1e-3
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(features @ beta)))
        grad = features.T @ (y - p) - ridge * beta
        hess = (features * (p * (1 - p))[:, None]).T @ features + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if float(np.abs(step).max()) < 1e-8:
            break
    return float(1.0 / (1.0 + math.exp(-float(beta[0]))))
