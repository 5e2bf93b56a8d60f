"""Fixed-point encoding of real-valued updates: clipping, stochastic rounding,
decoding (SPEC.md "Encoding", shared by both protocol families).

An update ``x`` is first clipped entrywise to ``[-clip, clip]``, multiplied by
its weight ``w`` (``0 < w <= max_weight``) and by the scale ``2^frac_bits``,
then rounded *stochastically* to an integer: ``y`` becomes ``floor(y) + 1`` with
probability ``y - floor(y)``, else ``floor(y)``. The rounding is unbiased,
``E[q] = y``, and ``|q - y| < 1``. The uniform draws come from an injected
:class:`~secagg.primitives.randomness.RandomSource`, never a global RNG.

Error bound (tested): for one value, ``|decode(q) - w * clip(x)| < 2^-frac_bits``;
for a sum over ``n`` clients, ``< n * 2^-frac_bits`` (and, being a sum of
independent zero-mean errors, typically ``~ sqrt(n) * 2^-frac_bits``).
Clipping is deliberate, part of the contract: the number of clipped entries is
reported to the caller so it is never silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..primitives.randomness import RandomSource, default_random, uniform_floats

__all__ = ["FixedPoint", "Quantized", "check_finite"]

_MAX_EXACT = float(1 << 52)  # quantized magnitudes must stay exact in float64


def check_finite(x: np.ndarray, what: str = "update") -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ParameterError(f"{what} contains {bad} NaN or infinite value(s)")


@dataclass(frozen=True)
class Quantized:
    """Integers of a quantized vector and how many entries clipping changed."""

    values: np.ndarray  # int64
    clipped: int

    def __repr__(self) -> str:  # the values are a client's private update
        return f"Quantized(<{np.size(self.values)} values>, clipped={self.clipped})"


@dataclass(frozen=True)
class FixedPoint:
    """The fixed-point format: entries clipped to ``[-clip, clip]``, weights in
    ``(0, max_weight]``, ``frac_bits`` fractional bits."""

    clip: float = 1.0
    frac_bits: int = 16
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip > 0):
            raise ParameterError(f"clip must be a finite number > 0, got {self.clip!r}")
        if not (isinstance(self.frac_bits, int) and 0 <= self.frac_bits <= 40):
            raise ParameterError(f"frac_bits must be an integer in [0, 40], got {self.frac_bits!r}")
        if not (isinstance(self.max_weight, (int, float)) and math.isfinite(self.max_weight)
                and self.max_weight > 0):
            raise ParameterError(f"max_weight must be a finite number > 0, got {self.max_weight!r}")
        if self.max_entry_bound() >= _MAX_EXACT:
            raise ParameterError("clip * max_weight * 2^frac_bits is too large for exact fixed point")

    @property
    def scale(self) -> float:
        return float(1 << self.frac_bits)

    def max_entry_bound(self) -> int:
        """Largest magnitude any quantized entry (value or weight) can take."""
        return math.ceil(max(self.clip, 1.0) * self.max_weight * self.scale)

    def check_weight(self, weight: float) -> float:
        w = float(weight)
        if not math.isfinite(w) or w <= 0:
            raise ParameterError(f"weight must be a finite number > 0, got {weight!r}")
        if w > self.max_weight:
            raise ParameterError(f"weight {w} exceeds max_weight {self.max_weight} fixed for this round")
        return w

    def quantize(self, x: np.ndarray, weight: float = 1.0, rng: RandomSource | None = None) -> Quantized:
        """Clip, weight, scale and stochastically round ``x`` (any shape, flattened)."""
        arr = np.asarray(x, dtype=np.float64).ravel()
        check_finite(arr)
        w = self.check_weight(weight)
        clipped = np.clip(arr, -self.clip, self.clip)
        n_clipped = int(np.count_nonzero(clipped != arr))
        return Quantized(self.round_stochastic(clipped * (w * self.scale), rng), n_clipped)

    def quantize_weight(self, weight: float, rng: RandomSource | None = None) -> int:
        w = self.check_weight(weight)
        return int(self.round_stochastic(np.array([w * self.scale]), rng)[0])

    @staticmethod
    def round_stochastic(y: np.ndarray, rng: RandomSource | None = None) -> np.ndarray:
        """Unbiased randomized rounding of the float array ``y`` to int64."""
        floor = np.floor(y)
        u = uniform_floats(default_random(rng), y.size).reshape(y.shape)
        return (floor + (u < (y - floor))).astype(np.int64)

    def decode(self, q: np.ndarray | int) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) / self.scale

    def sum_error_bound(self, n: int) -> float:
        """Worst-case absolute error of a decoded sum of ``n`` quantized values."""
        return n / self.scale
