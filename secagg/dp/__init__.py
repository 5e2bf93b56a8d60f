"""Distributed differential privacy for secure aggregation (protocols/dp/SPEC.md).

Each client adds its share of *discrete* noise to its integer-encoded update
before masking or encryption, so the server only ever learns a noised sum:

* :mod:`secagg.dp.plan`: :class:`DPConfig`, the target ``(epsilon, delta)``
  over a number of rounds, turned into one round's parameters;
* :mod:`secagg.dp.round`: :class:`DPRoundParams` (the round's DP parameters as
  the protocols carry them), :class:`DPRoundReport` (what a round achieved) and
  the adaptive-clipping rule :func:`next_clip`;
* :mod:`secagg.dp.samplers`: exact samplers (discrete Gaussian, Skellam, ...);
* :mod:`secagg.dp.pipeline`: the client encoding (clip, rotate, scale, round,
  noise, wrap), the server decoding, and :class:`DPParams`;
* :mod:`secagg.dp.accounting`: Renyi-DP accounting and noise calibration
  (needs the ``dp`` extra: ``dp-accounting``); :class:`DPAccountant` is loaded
  on first use.
"""

from typing import Any

from .pipeline import DPParams, decode, encode, ring_sum
from .plan import DPConfig
from .round import DPRoundParams, DPRoundReport, next_clip
from .samplers import discrete_gaussian, skellam

__all__ = ["DPConfig", "DPAccountant", "DPRoundReport", "DPRoundParams", "DPParams", "encode", "decode",
           "ring_sum", "next_clip", "discrete_gaussian", "skellam"]


def __getattr__(name: str) -> Any:  # the accountant needs the dp extra: load it on first use
    if name == "DPAccountant":
        from .accounting import DPAccountant
        return DPAccountant
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
