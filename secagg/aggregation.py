"""Aggregation rules as pure functions over the unmasked (or decrypted) sums.

Weights stay private: every client encodes the vector ``[w*x, w]``, so the
server learns only ``S_wx = sum_i w_i x_i`` and ``S_w = sum_i w_i`` over the
included clients, never a single ``w_i``. The rules then are:

============  ======================  =====================================
rule          client weight ``w``     result
============  ======================  =====================================
``sum``       1                       ``S_wx``
``mean``      1                       ``S_wx / S_w`` (``S_w`` = count)
``weighted``  data size or quality    ``S_wx / S_w``
``fedavg``    number of examples      ``S_wx / S_w``; the server applies it
                                      as ``global + server_lr * mean``
``hybrid``    examples^a * quality^b  ``S_wx / S_w``
============  ======================  =====================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import ParameterError

__all__ = ["Rule", "RULES", "RULE_KINDS", "RuleKind", "AVERAGING_RULES", "get_rule", "client_weight", "hybrid_weight", "finalize", "fedavg_apply",
           "reference_aggregate"]

@dataclass(frozen=True)
class RuleKind:
    """What a named rule does: whether clients encode a weight other than 1,
    whether its result is an average (a model update a trainer can apply),
    and how the result comes from the two sums. Adding a rule is adding one
    entry to :data:`RULE_KINDS` (and, if its clients weigh themselves in a new
    way, a branch in :func:`client_weight`); every surface (the simulator, the
    training runner, the Flower ServerApp, the CLI) takes it from there."""

    description: str
    uses_weights: bool
    averages: bool
    result: Callable[[np.ndarray, float], np.ndarray]


def _sum(s: np.ndarray, sum_weights: float) -> np.ndarray:
    return s


def _average(s: np.ndarray, sum_weights: float) -> np.ndarray:
    if not sum_weights > 0:
        raise ParameterError("sum of weights is not positive: nothing to average")
    return s / float(sum_weights)


RULE_KINDS: dict[str, RuleKind] = {
    "sum": RuleKind("sum of the updates", uses_weights=False, averages=False, result=_sum),
    "mean": RuleKind("plain mean", uses_weights=False, averages=True, result=_average),
    "weighted": RuleKind("mean weighted by data size or quality", uses_weights=True, averages=True,
                         result=_average),
    "fedavg": RuleKind("FedAvg: mean weighted by examples, applied with a server learning rate",
                       uses_weights=True, averages=True, result=_average),
    "hybrid": RuleKind("mean weighted by examples^alpha * quality^beta", uses_weights=True, averages=True,
                       result=_average),
}
#: The rule names, in a stable order.
RULES = tuple(RULE_KINDS)
#: Rules whose result is an average update (what a training round applies).
AVERAGING_RULES = tuple(name for name, kind in RULE_KINDS.items() if kind.averages)


@dataclass(frozen=True)
class Rule:
    """An aggregation rule: the object every driver takes. ``alpha``/``beta``
    are the hybrid exponents; ``server_lr`` is the server learning rate
    applied by :meth:`apply` (FedAvg's ``global + server_lr * mean``)."""

    name: str = "mean"
    server_lr: float = 1.0
    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in RULE_KINDS:
            raise ParameterError(f"unknown aggregation rule {self.name!r}; choose one of {RULES}")
        for attr in ("server_lr", "alpha", "beta"):
            v = getattr(self, attr)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ParameterError(f"{attr} must be a finite number")
        if self.server_lr <= 0:
            raise ParameterError("server_lr must be > 0")

    @property
    def kind(self) -> RuleKind:
        return RULE_KINDS[self.name]

    @property
    def uses_weights(self) -> bool:
        return self.kind.uses_weights

    def finalize(self, sum_weighted: np.ndarray, sum_weights: float) -> np.ndarray:
        """The rule's result from the two sums the server learns."""
        return self.kind.result(np.asarray(sum_weighted, dtype=np.float64), float(sum_weights))

    def apply(self, global_params: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
        """The server step of a training round: ``global + server_lr * aggregate``."""
        return fedavg_apply(global_params, aggregate, self.server_lr)


def get_rule(rule: "str | Rule") -> Rule:
    return rule if isinstance(rule, Rule) else Rule(rule)


def _positive(v: float, what: str) -> float:
    f = float(v)
    if not math.isfinite(f) or f <= 0:
        raise ParameterError(f"{what} must be a finite number > 0, got {v!r}")
    return f


def hybrid_weight(examples: float, quality: float, alpha: float = 1.0, beta: float = 1.0) -> float:
    """``examples^alpha * quality^beta`` (both must be > 0, and so must the result)."""
    e, q = _positive(examples, "examples"), _positive(quality, "quality")
    try:
        w = e ** float(alpha) * q ** float(beta)
    except OverflowError:
        w = math.inf
    if not (math.isfinite(w) and w > 0):
        raise ParameterError(f"hybrid weight {examples!r}^{alpha} * {quality!r}^{beta} is not a finite number > 0")
    return w


def client_weight(rule: "str | Rule", *, weight: float | None = None, examples: float | None = None,
                  quality: float | None = None) -> float:
    """The weight a client encodes under ``rule``.

    ``weighted`` takes ``weight`` (or ``examples`` or ``quality``); ``fedavg``
    takes ``examples``; ``hybrid`` takes both ``examples`` and ``quality``."""
    r = get_rule(rule)
    if r.name in ("sum", "mean"):
        return 1.0
    if r.name == "fedavg":
        if examples is None:
            raise ParameterError("fedavg needs the client's number of examples")
        return _positive(examples, "examples")
    if r.name == "hybrid":
        if examples is None or quality is None:
            raise ParameterError("hybrid needs both examples and quality")
        return hybrid_weight(examples, quality, r.alpha, r.beta)
    given = [v for v in (weight, examples, quality) if v is not None]
    if len(given) != 1:
        raise ParameterError("weighted needs exactly one of weight, examples or quality")
    return _positive(given[0], "weight")


def finalize(rule: "str | Rule", sum_weighted: np.ndarray, sum_weights: float) -> np.ndarray:
    """The rule's result from the two sums the server learns."""
    return get_rule(rule).finalize(sum_weighted, sum_weights)


def fedavg_apply(global_params: np.ndarray, mean_update: np.ndarray, server_lr: float = 1.0) -> np.ndarray:
    """FedAvg's server step: ``global + server_lr * mean_update``."""
    g = np.asarray(global_params, dtype=np.float64)
    u = np.asarray(mean_update, dtype=np.float64)
    if g.shape != u.shape:
        raise ParameterError(f"update shape {u.shape} does not match the model {g.shape}")
    return g + server_lr * u


def reference_aggregate(rule: "str | Rule", updates: Sequence[np.ndarray],
                        weights: Sequence[float] | None = None, clip: float | None = None) -> np.ndarray:
    """The plaintext float result the secure protocols must match (within the
    encoding's error bound): for tests and the simulator's error report."""
    r = get_rule(rule)
    xs = [np.asarray(u, dtype=np.float64).ravel() for u in updates]
    if clip is not None:
        xs = [np.clip(x, -clip, clip) for x in xs]
    if weights is not None and len(weights) != len(xs):
        raise ParameterError(f"{len(weights)} weights for {len(xs)} updates")
    ws = [1.0] * len(xs) if (weights is None or not r.uses_weights) else [float(w) for w in weights]
    sw = np.sum([w * x for w, x in zip(ws, xs)], axis=0)
    return finalize(r, sw, float(sum(ws)))
