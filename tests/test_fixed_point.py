"""Fixed point: clipping, weighting, unbiased stochastic rounding and its bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg.errors import ParameterError
from secagg.encoding.fixed_point import FixedPoint, Quantized, check_finite
from secagg.primitives.randomness import DeterministicRandom


def _mean_error_z(errors: np.ndarray, per_value_sd: float) -> float:
    return float(abs(errors.mean()) / (per_value_sd / math.sqrt(errors.size)))


def test_rounding_is_unbiased_over_many_values() -> None:
    enc = FixedPoint(clip=1.0, frac_bits=4)
    x = np.linspace(-0.99, 0.99, 200_001)
    q = enc.quantize(x, rng=DeterministicRandom(b"bias")).values
    err = enc.decode(q) - x
    # per value the error is Bernoulli-like with sd <= 0.5 * 2^-f
    assert _mean_error_z(err, 0.5 / enc.scale) < 5


def test_bias_statistic_has_power() -> None:
    # Rounding to nearest and flooring both fail the same statistic.
    enc = FixedPoint(clip=1.0, frac_bits=4)
    x = np.random.default_rng(0).uniform(0.0, 1.0, 200_001) / 3 + 0.01
    floor_err = np.floor(x * enc.scale) / enc.scale - x
    assert _mean_error_z(floor_err, 0.5 / enc.scale) > 50
    near = np.full(100_000, 0.3)  # round-to-nearest of 0.3 is 0: mean error -0.3
    assert _mean_error_z(np.round(near) - near, 0.5) > 50


@pytest.mark.parametrize("y", [0.3, -0.3, 0.5, 0.999, -2.25, 1e-6])
def test_rounding_of_one_value_is_unbiased(y: float) -> None:
    n = 100_000
    q = FixedPoint.round_stochastic(np.full(n, y), DeterministicRandom(repr(y)))
    lo = math.floor(y)
    assert set(np.unique(q).tolist()) <= {lo, lo + 1}
    frac = y - lo
    sd = math.sqrt(max(frac * (1 - frac), 1e-12))
    assert abs(q.mean() - y) < 5 * sd / math.sqrt(n) + 1e-12


def test_integers_round_exactly() -> None:
    y = np.array([-3.0, 0.0, 5.0, 2.0**40])
    assert FixedPoint.round_stochastic(y).tolist() == [-3, 0, 5, 2**40]


@given(
    x=st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=50),
    weight=st.floats(1e-3, 4.0),
    frac_bits=st.integers(0, 24),
    clip=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**31),
)
def test_per_value_error_below_one_ulp(x: list[float], weight: float, frac_bits: int, clip: float, seed: int) -> None:
    enc = FixedPoint(clip=clip, frac_bits=frac_bits, max_weight=4.0)
    arr = np.array(x)
    quant = enc.quantize(arr, weight, DeterministicRandom(seed))
    target = weight * np.clip(arr, -clip, clip)
    assert np.all(np.abs(enc.decode(quant.values) - target) < 2.0**-frac_bits)
    assert np.all(np.abs(quant.values) <= enc.max_entry_bound())
    assert quant.clipped == int(np.count_nonzero(np.abs(arr) > clip))


def test_sum_over_clients_within_documented_bound() -> None:
    enc = FixedPoint(clip=1.0, frac_bits=8, max_weight=10.0)
    n, d = 200, 500
    gen = np.random.default_rng(1)
    rng = DeterministicRandom(b"sum")
    xs = gen.uniform(-1.5, 1.5, size=(n, d))
    ws = gen.uniform(0.1, 10.0, size=n)
    total_q = np.zeros(d, dtype=np.int64)
    for x, w in zip(xs, ws):
        total_q += enc.quantize(x, w, rng).values
    exact = (ws[:, None] * np.clip(xs, -1.0, 1.0)).sum(axis=0)
    err = np.abs(enc.decode(total_q) - exact)
    assert enc.sum_error_bound(n) == n * 2.0**-8
    assert np.all(err < enc.sum_error_bound(n))
    # independent zero-mean errors: typically ~sqrt(n) ulps, far below n ulps
    assert err.max() < 8 * math.sqrt(n) * 2.0**-8


def test_clipping_is_counted_not_silent() -> None:
    enc = FixedPoint(clip=0.5, frac_bits=10)
    x = np.array([0.1, 0.5, -0.5, 0.500001, -7.0, 3.0, 0.0])
    quant = enc.quantize(x, rng=DeterministicRandom(0))
    assert isinstance(quant, Quantized)
    assert quant.clipped == 3
    decoded = enc.decode(quant.values)
    assert np.all(np.abs(decoded) <= 0.5)
    assert decoded[4] == -0.5 and decoded[5] == 0.5
    assert enc.quantize(np.array([0.4, -0.4])).clipped == 0


def test_weight_scales_before_rounding() -> None:
    enc = FixedPoint(clip=1.0, frac_bits=16, max_weight=8.0)
    q = enc.quantize(np.array([0.5, -0.25]), weight=8.0).values
    assert q.tolist() == [4 * 2**16, -2 * 2**16]  # exact: no rounding needed


def test_multidimensional_input_is_flattened() -> None:
    enc = FixedPoint(frac_bits=2)
    q = enc.quantize(np.array([[0.25, 0.5], [0.75, -1.0]])).values
    assert q.shape == (4,) and q.tolist() == [1, 2, 3, -4]


def test_quantize_is_replayable_with_injected_randomness() -> None:
    enc = FixedPoint(frac_bits=3)
    x = np.random.default_rng(2).uniform(-1, 1, 1000)
    a = enc.quantize(x, 1.0, DeterministicRandom(5)).values
    assert np.array_equal(a, enc.quantize(x, 1.0, DeterministicRandom(5)).values)
    assert not np.array_equal(a, enc.quantize(x, 1.0, DeterministicRandom(6)).values)
    assert a.dtype == np.int64


def test_quantize_weight() -> None:
    enc = FixedPoint(frac_bits=10, max_weight=100.0)
    assert enc.quantize_weight(3.0) == 3 * 1024
    draws = {enc.quantize_weight(3.0001, DeterministicRandom(i)) for i in range(50)}
    assert draws == {3072, 3073}
    assert enc.quantize_weight(100.0) <= enc.max_entry_bound()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_updates_refused(bad: float) -> None:
    enc = FixedPoint()
    with pytest.raises(ParameterError, match="NaN or infinite"):
        enc.quantize(np.array([0.0, bad, 1.0]))
    with pytest.raises(ParameterError):
        check_finite(np.array([[1.0], [bad]]), "gradient")


@pytest.mark.parametrize("weight", [0.0, -1.0, -0.0, np.nan, np.inf, -np.inf, 1.0000001, 2.0])
def test_bad_weights_refused(weight: float) -> None:
    enc = FixedPoint(max_weight=1.0)
    with pytest.raises(ParameterError):
        enc.quantize(np.zeros(3), weight)
    with pytest.raises(ParameterError):
        enc.quantize_weight(weight)
    with pytest.raises(ParameterError):
        enc.check_weight(weight)


def test_weight_equal_to_max_is_accepted() -> None:
    assert FixedPoint(max_weight=2.5).check_weight(2.5) == 2.5


@pytest.mark.parametrize("kwargs", [
    {"clip": 0.0}, {"clip": -1.0}, {"clip": math.nan}, {"clip": math.inf}, {"clip": "1"},
    {"frac_bits": -1}, {"frac_bits": 41}, {"frac_bits": 1.5}, {"frac_bits": "16"},
    {"max_weight": 0.0}, {"max_weight": -2.0}, {"max_weight": math.nan}, {"max_weight": math.inf},
    {"clip": 2.0**12, "frac_bits": 40, "max_weight": 1.0},  # |entries| reach 2^52: not exact
])
def test_bad_formats_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ParameterError):
        FixedPoint(**kwargs)  # type: ignore[arg-type]


def test_max_entry_bound_covers_weights_when_clip_below_one() -> None:
    enc = FixedPoint(clip=0.25, frac_bits=8, max_weight=3.0)
    assert enc.max_entry_bound() == 3 * 256
    assert enc.quantize_weight(3.0) == 3 * 256
    assert int(np.abs(enc.quantize(np.array([1.0, -1.0]), 3.0).values).max()) == 192


def test_decode_is_exact_division() -> None:
    enc = FixedPoint(frac_bits=16)
    assert enc.decode(np.array([65536, -32768, 1])).tolist() == [1.0, -0.5, 2.0**-16]
    assert float(enc.decode(3 * 65536)) == 3.0
