"""Federated training on real data with secure aggregation (torch).

``secagg.training`` imports torch, scikit-learn and matplotlib lazily: importing
this package (e.g. to register the CLI commands) costs nothing until a name is
used. Main entry points: :class:`TrainConfig`, :class:`FedRunner`,
:func:`run_training`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrainConfig", "FedRunner", "TrainingReport", "run_training", "make_federated_data",
           "make_model", "plot_comparison"]

_LAZY = {
    "TrainConfig": "runner",
    "FedRunner": "runner",
    "TrainingReport": "run",
    "run_training": "run",
    "make_federated_data": "data",
    "make_model": "model",
    "plot_comparison": "plot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
