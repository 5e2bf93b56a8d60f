"""Distributed differential privacy for secure aggregation (protocols/dp/SPEC.md).

Each client adds its share of *discrete* noise to its integer-encoded update
before masking or encryption, so the server only ever learns a noised sum:

* :mod:`secagg.dp.samplers`: exact samplers (discrete Gaussian, Skellam, ...);
* :mod:`secagg.dp.pipeline`: the client encoding (clip, rotate, scale, round,
  noise, wrap), the server decoding, and :class:`DPParams`;
* :mod:`secagg.dp.accounting`: Renyi-DP accounting and noise calibration
  (needs the ``dp`` extra: ``dp-accounting``).
"""

from .pipeline import DPParams, decode, encode
from .samplers import discrete_gaussian, skellam

__all__ = ["DPParams", "encode", "decode", "discrete_gaussian", "skellam"]
