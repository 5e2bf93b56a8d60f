"""secagg.dp.transform: the fast Walsh-Hadamard transform against the pipeline's
reference butterflies and against a dense Hadamard matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secagg.dp import pipeline as P
from secagg.dp import transform as T
from secagg.errors import ParameterError
from secagg.primitives.randomness import DeterministicRandom


def dense_hadamard(n: int) -> np.ndarray:
    """``H_n / sqrt(n)`` from the definition ``H[i, j] = (-1)^popcount(i & j)``."""
    i = np.arange(n, dtype=np.uint16)
    bits = np.bitwise_and.outer(i, i)
    parity = np.zeros_like(bits)
    while bits.any():
        parity ^= bits & 1
        bits >>= 1
    return (1.0 - 2.0 * parity) / math.sqrt(n)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64, 1024, 1 << 12])
def test_fwht_equals_the_dense_matrix(n):
    x = np.random.default_rng(n).normal(size=n)
    y = T.fwht(x)
    assert y.dtype == np.float64 and y.shape == (n,)
    assert np.allclose(y, dense_hadamard(n) @ x, rtol=0, atol=1e-13 * max(1.0, np.linalg.norm(x)))


def test_fwht_catches_a_wrong_transform():
    """The dense-matrix comparison can fail: a transform with one sign flipped does not pass."""
    n = 1 << 12
    x = np.random.default_rng(1).normal(size=n)
    wrong = T.fwht(x)
    wrong[5] = -wrong[5]
    assert not np.allclose(wrong, dense_hadamard(n) @ x, rtol=0, atol=1e-13 * np.linalg.norm(x))


@pytest.mark.parametrize("n", [1, 2, 8, 1 << 11, 1 << 12, 1 << 15, 1 << 17, 1 << 20])
def test_fwht_matches_the_pipeline_reference(n):
    x = np.random.default_rng(n + 1).normal(size=n) * 1000.0
    ref = P.fwht(x)
    y = T.fwht(x)
    if n < T.SMALL:
        assert np.array_equal(y, ref)  # the same butterflies: identical bits
    assert np.max(np.abs(y - ref)) <= 1e-14 * np.linalg.norm(x)


def test_fwht_is_its_own_inverse_and_keeps_norms():
    x = np.random.default_rng(7).normal(size=1 << 16)
    y = T.fwht(x)
    assert math.isclose(np.linalg.norm(y), np.linalg.norm(x), rel_tol=1e-12)
    assert np.allclose(T.fwht(y), x, rtol=0, atol=1e-12)


def test_fwht_leaves_its_input_alone_and_accepts_lists_and_ints():
    x = np.arange(1 << 12, dtype=np.float64)
    before = x.copy()
    T.fwht(x)
    assert np.array_equal(x, before)
    assert np.allclose(T.fwht([1, 1]), [math.sqrt(2), 0.0])
    assert np.allclose(T.fwht(np.arange(1 << 13, dtype=np.int64)), P.fwht(np.arange(1 << 13)), atol=1e-9)


@pytest.mark.parametrize("bad", [np.zeros(0), np.zeros(3), np.zeros(6), np.zeros((1 << 12) + 1)])
def test_fwht_refuses_lengths_that_are_not_powers_of_two(bad):
    with pytest.raises(ParameterError):
        T.fwht(bad)


def test_hadamard_factor():
    h = T.hadamard(8)
    assert np.array_equal(h @ h, 8 * np.eye(8))
    assert np.array_equal(h, dense_hadamard(8) * math.sqrt(8))
    with pytest.raises(ParameterError):
        T.hadamard(6)


# --------------------------------------------------------------------------- rounding

def test_stochastic_round_is_unbiased_and_within_one():
    y = np.full(1 << 18, 0.3) + np.arange(1 << 18) % 5 - 2.0  # fractional part 0.3 everywhere
    q = T.stochastic_round(y, DeterministicRandom("round"))
    assert q.dtype == np.int64 and q.shape == y.shape
    assert np.all((q == np.floor(y)) | (q == np.floor(y) + 1))
    up = float(np.mean(q - np.floor(y)))
    assert abs(up - 0.3) <= 4.5 * math.sqrt(0.3 * 0.7 / y.size)
    assert abs(up - 0.31) > 4.5 * math.sqrt(0.3 * 0.7 / y.size)  # the check can fail
    ints = np.arange(-5, 5, dtype=np.float64)
    assert np.array_equal(T.stochastic_round(ints, DeterministicRandom("ints")), ints.astype(np.int64))


def test_stochastic_round_is_deterministic_given_the_source_and_refuses_nan():
    y = np.random.default_rng(3).normal(size=1000) * 10
    a = T.stochastic_round(y, DeterministicRandom("same"))
    assert np.array_equal(a, T.stochastic_round(y, DeterministicRandom("same")))
    assert not np.array_equal(a, T.stochastic_round(y, DeterministicRandom("other")))
    with pytest.raises(ParameterError):
        T.stochastic_round(np.array([1.0, np.nan]))


def test_conditional_round_meets_the_bound_or_raises():
    d = 1 << 12
    y = np.random.default_rng(4).normal(size=d) * 3
    bound = P.rounding_bound(float(np.linalg.norm(y)), d, math.exp(-0.5))
    q, attempts = T.conditional_round(y, bound, DeterministicRandom("cond"))
    assert 1 <= attempts <= 100 and float(np.linalg.norm(q)) <= bound
    with pytest.raises(P.RoundingError):
        T.conditional_round(y, float(np.linalg.norm(y)) / 2, DeterministicRandom("cond"), max_retries=3)
