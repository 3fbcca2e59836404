"""Train on the exported data with TRL (SFT, DPO, T-DPO): see :mod:`.run` and :mod:`.data`.

Imports of torch / TRL happen inside the functions, so importing this package is cheap.
"""

from __future__ import annotations

from toa_graph.distill_errors import TrainError
from toa_graph.training.data import TrainKind, check_rows, load_rows, row_error
from toa_graph.training.run import TrainResult, TrainSpec, spec_from_recipe, train

__all__ = [
    "TrainError",
    "TrainKind",
    "TrainResult",
    "TrainSpec",
    "check_rows",
    "load_rows",
    "row_error",
    "spec_from_recipe",
    "train",
]
