"""Fast transforms of the distributed-DP client pipeline (protocols/dp/SPEC.md §2):
the rotation's Walsh-Hadamard transform and the conditional stochastic rounding.

:func:`fwht` is the normalised Walsh-Hadamard transform ``H x`` of
:func:`secagg.dp.pipeline.fwht` (same semantics and normalisation), faster:
``H_n = H_{m_1} (x) H_{m_2} (x) ... (x) H_{m_k}`` (Kronecker product, ``n =
m_1 m_2 ... m_k``, each ``m_i <= 32``), so the transform is ``k`` passes over
the vector, each multiplying one axis of the vector viewed as an
``m_1 x ... x m_k`` array by the small dense ±1 matrix ``H_{m_i}`` (one
BLAS matrix product per pass, 32 multiply-adds per value, instead of five
butterfly levels with a numpy call and a memory pass each).

Exactness: the entries of ``H_m`` are ±1, so every product is exact; only the
order of the additions differs from the butterflies', which changes the result
by a few units in the last place (tests/test_dp_transform.py: within
``1e-14 * |x|_2`` of the reference and of a dense Hadamard matrix). Below
:data:`SMALL` values the reference butterflies run unchanged (identical bits,
and cheap at that size).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import ParameterError
from ..primitives.prg import prg_ring
from ..primitives.randomness import RandomSource, default_random

__all__ = ["fwht", "hadamard", "stochastic_round", "conditional_round", "SMALL", "FACTOR_BITS"]

ROUNDING_TAG = "secagg/v1/dp/rounding-words"

#: Lengths below this use the butterflies of the reference implementation.
SMALL = 1 << 12
#: log2 of the largest dense factor ``H_m``.
FACTOR_BITS = 5


@functools.lru_cache(maxsize=16)
def hadamard(m: int) -> np.ndarray:
    """The (unnormalised) Sylvester-Hadamard matrix ``H_m`` (entries ±1, float64),
    ``m`` a power of two; read-only."""
    if m < 1 or m & (m - 1):
        raise ParameterError(f"the Hadamard matrix needs a power-of-two order, got {m}")
    h = np.ones((1, 1))
    while h.shape[0] < m:
        h = np.block([[h, h], [h, -h]])
    h.setflags(write=False)
    return h


def _butterflies(v: np.ndarray) -> np.ndarray:
    n = v.size
    h = 1
    while h < n:
        blocks = v.reshape(-1, 2, h)
        a = blocks[:, 0, :].copy()
        blocks[:, 0, :] += blocks[:, 1, :]
        blocks[:, 1, :] = a - blocks[:, 1, :]
        h *= 2
    return v


def fwht(x: np.ndarray) -> np.ndarray:
    """The normalised Walsh-Hadamard transform ``H x`` (``H = H^T = H^-1``,
    entries ``±1/sqrt(n)``) of a vector whose length ``n`` is a power of two;
    returns a new float64 array (the input is not modified)."""
    v = np.array(x, dtype=np.float64).ravel()
    n = v.size
    if n == 0 or n & (n - 1):
        raise ParameterError(f"the Walsh-Hadamard transform needs a power-of-two length, got {n}")
    if n < SMALL:
        out = _butterflies(v)
    else:
        k = n.bit_length() - 1
        parts = [FACTOR_BITS] * (k // FACTOR_BITS) + ([k % FACTOR_BITS] if k % FACTOR_BITS else [])
        out = v
        inner = 1  # product of the factors already applied (the trailing axes)
        for bits in parts:
            m = 1 << bits
            h = hadamard(m)  # symmetric: H_m^T = H_m
            if inner == 1:
                out = (out.reshape(-1, m) @ h).reshape(n)
            else:
                out = np.matmul(h, out.reshape(-1, m, inner)).reshape(n)
            inner *= m
    out *= 1.0 / math.sqrt(n)
    return out


def stochastic_round(y: np.ndarray, rng: RandomSource | None = None) -> np.ndarray:
    """Unbiased randomized rounding to int64, ``floor(y) + [U < y - floor(y)]``
    with ``U`` uniform on the 2^-53 grid of [0, 1) -- the rule of
    :func:`secagg.dp.pipeline.stochastic_round` -- with ``U``'s 53 bits from
    the AES-256-CTR keystream under a fresh 32-byte key drawn from ``rng``
    (one key per call) instead of ``rng``'s own bytes: an order of magnitude
    fewer bytes from a slow source at d = 2^20."""
    v = np.asarray(y, dtype=np.float64)
    if v.size and not np.all(np.isfinite(v)):
        raise ParameterError("cannot round NaN or infinite values")
    floor = np.floor(v)
    words = prg_ring(default_random(rng).bytes(32), ROUNDING_TAG, v.size, 64)
    u = (words >> np.uint64(11)).astype(np.float64).reshape(v.shape)
    u *= 2.0 ** -53
    return (floor + (u < (v - floor))).astype(np.int64)


def conditional_round(y: np.ndarray, bound: float, rng: RandomSource | None = None,
                      max_retries: int = 100) -> tuple[np.ndarray, int]:
    """:func:`stochastic_round` repeated until ``|round(y)|_2 <= bound`` (the
    conditional rounding of Kairouz, Liu, Steinke, as
    :func:`secagg.dp.pipeline.conditional_round`); returns the rounded vector
    and the number of attempts; :class:`~secagg.dp.pipeline.RoundingError`
    after ``max_retries`` failed attempts."""
    from .pipeline import RoundingError  # the pipeline's error type (imported here: no import cycle)

    if not (isinstance(max_retries, int) and max_retries >= 1):
        raise ParameterError(f"max_retries must be an integer >= 1, got {max_retries!r}")
    r = default_random(rng)
    v = np.asarray(y, dtype=np.float64).ravel()
    limit = bound * bound
    for attempt in range(1, max_retries + 1):
        q = stochastic_round(v, r)
        qf = q.astype(np.float64)
        if float(np.dot(qf, qf)) <= limit:
            return q, attempt
    raise RoundingError(f"conditional rounding missed the L2 bound {bound:.6g} in {max_retries} attempts "
                        f"(input norm {float(np.linalg.norm(v)):.6g})")
