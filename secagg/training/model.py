"""Small torch models for the breast cancer task (binary classification, one
logit out): logistic regression, a one-hidden-layer MLP, and the same MLP with
BatchNorm (which exercises the integer-buffer policy of :mod:`secagg.torch`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ParameterError

__all__ = ["MODELS", "make_model"]

MODELS = ("logreg", "mlp", "mlp_bn")


def make_model(name: str, n_features: int, hidden: int = 16, seed: int = 0) -> nn.Module:
    """A freshly initialised model, reproducible from ``seed``."""
    if name not in MODELS:
        raise ParameterError(f"model must be one of {MODELS}, got {name!r}")
    if hidden < 1:
        raise ParameterError(f"hidden must be >= 1, got {hidden!r}")
    # Initialise under a private generator state so that building a model does
    # not disturb (or depend on) torch's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if name == "logreg":
            model: nn.Module = nn.Sequential(nn.Linear(n_features, 1))
        elif name == "mlp":
            model = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            model = nn.Sequential(nn.Linear(n_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                  nn.Linear(hidden, 1))
    return model
