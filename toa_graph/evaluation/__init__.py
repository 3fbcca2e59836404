"""Evaluate a model behind an OpenAI-compatible endpoint, or a local checkpoint served with
vLLM for the run: accuracy (GSM8K, MATH, letter choice), win rate vs. references (reward
model or judge; raw and length-controlled), chrF and COMET-KIWI for translation.

Heavy imports (openai, vLLM, sacrebleu) happen inside the functions.
"""

from __future__ import annotations

from toa_graph.distill_errors import EvalError
from toa_graph.evaluation.runner import (
    Endpoint,
    EvalSpec,
    check_endpoint,
    format_table,
    read_rows,
    run_eval,
    summarize,
)
from toa_graph.evaluation.serving import served_checkpoint
from toa_graph.evaluation.stats import bootstrap_ci, length_controlled_winrate
from toa_graph.evaluation.tasks import (
    EVAL_TASKS,
    EvalItem,
    EvalTask,
    builtin_rows,
    chrf,
    make_items,
    score_accuracy,
)

__all__ = [
    "EVAL_TASKS",
    "Endpoint",
    "EvalError",
    "EvalItem",
    "EvalSpec",
    "EvalTask",
    "bootstrap_ci",
    "builtin_rows",
    "check_endpoint",
    "chrf",
    "format_table",
    "length_controlled_winrate",
    "make_items",
    "read_rows",
    "run_eval",
    "score_accuracy",
    "served_checkpoint",
    "summarize",
]
