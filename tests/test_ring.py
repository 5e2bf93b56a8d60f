"""Ring vectors Z_2^k and the choice of k (security invariant 5: a sum of n
clipped, weighted, quantized inputs never wraps)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg.errors import ParameterError
from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.ring import RING_BITS, choose_ring_bits, dtype_for, from_ring, max_clients, to_ring
from secagg.primitives.randomness import DeterministicRandom


def _ring_sum(rows: np.ndarray, bits: int) -> np.ndarray:
    """Sum ring vectors the way the server does: wrapping uint addition."""
    acc = np.zeros(rows.shape[1], dtype=dtype_for(bits))
    for r in rows:
        acc += r
    return acc


# ---------------------------------------------------------------- mapping

@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40))
def test_round_trip_32(values: list[int]) -> None:
    v = np.array(values, dtype=np.int64)
    r = to_ring(v, 32)
    assert r.dtype == np.uint32
    assert from_ring(r, 32).tolist() == values


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40))
def test_round_trip_64(values: list[int]) -> None:
    r = to_ring(np.array(values, dtype=np.int64), 64)
    assert r.dtype == np.uint64
    assert from_ring(r, 64).tolist() == values


def test_twos_complement_layout() -> None:
    assert to_ring(np.array([-1, 0, 1, -(2**31)]), 32).tolist() == [2**32 - 1, 0, 1, 2**31]
    assert from_ring(np.array([2**31, 2**31 - 1], dtype=np.uint32), 32).tolist() == [-(2**31), 2**31 - 1]
    assert to_ring(np.array([-1]), 64).tolist() == [2**64 - 1]


@given(st.lists(st.lists(st.integers(-1000, 1000), min_size=5, max_size=5), min_size=1, max_size=30))
def test_ring_sum_equals_integer_sum(rows: list[list[int]]) -> None:
    arr = np.array(rows, dtype=np.int64)
    for bits in RING_BITS:
        total = _ring_sum(np.stack([to_ring(r, bits) for r in arr]), bits)
        assert from_ring(total, bits).tolist() == arr.sum(axis=0).tolist()


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**40])
def test_values_outside_the_32_bit_ring_refused(value: int) -> None:
    with pytest.raises(ParameterError):
        to_ring(np.array([0, value]), 32)


@pytest.mark.parametrize("values", [
    np.array([1.7, 2.0]), np.array([0.5]), np.array([1, 2], dtype=np.float32),
    np.array([True, False]), np.array(["1"]), np.array([2**64 - 1], dtype=np.uint64),
])
def test_non_integer_or_oversized_input_refused(values: np.ndarray) -> None:
    # A float would otherwise be truncated toward zero without a word.
    with pytest.raises(ParameterError):
        to_ring(values, 64)


def test_lists_and_unsigned_inputs_accepted() -> None:
    assert to_ring([1, -2], 32).tolist() == [1, 2**32 - 2]
    assert to_ring(np.array([5], dtype=np.uint32), 64).tolist() == [5]
    assert to_ring([], 32).size == 0


def test_from_ring_requires_the_ring_dtype() -> None:
    with pytest.raises(ParameterError):
        from_ring(np.array([1, 2], dtype=np.uint64), 32)
    with pytest.raises(ParameterError):
        from_ring(np.array([1, 2], dtype=np.int64), 64)
    with pytest.raises(ParameterError):
        from_ring([1, 2], 32)


@pytest.mark.parametrize("bits", [0, 8, 16, 31, 128])
def test_unsupported_ring_sizes_refused(bits: int) -> None:
    with pytest.raises(ParameterError):
        dtype_for(bits)
    with pytest.raises(ParameterError):
        to_ring(np.array([1]), bits)
    with pytest.raises(ParameterError):
        choose_ring_bits(10, FixedPoint(), bits)


# ------------------------------------------------------------ ring choice

def test_picks_32_bits_when_safe() -> None:
    enc = FixedPoint(clip=1.0, frac_bits=16, max_weight=1.0)  # B = 2^16
    assert max_clients(enc, 32) == (2**31 - 1) // 2**16
    assert choose_ring_bits(100, enc) == 32
    assert choose_ring_bits(max_clients(enc, 32), enc) == 32


def test_picks_64_bits_when_needed() -> None:
    enc = FixedPoint(clip=1.0, frac_bits=16, max_weight=1.0)
    assert choose_ring_bits(max_clients(enc, 32) + 1, enc) == 64
    assert choose_ring_bits(10**6, FixedPoint(clip=10.0, frac_bits=20, max_weight=100.0)) == 64


def test_refuses_when_no_ring_is_safe() -> None:
    enc = FixedPoint(clip=2.0**10, frac_bits=40, max_weight=1.0)  # B = 2^50
    assert choose_ring_bits(max_clients(enc, 64), enc) == 64
    with pytest.raises(ParameterError, match="wraps"):
        choose_ring_bits(max_clients(enc, 64) + 1, enc)


def test_explicit_bits_honoured_only_if_safe() -> None:
    enc = FixedPoint(clip=1.0, frac_bits=16)
    assert choose_ring_bits(10, enc, bits=64) == 64
    with pytest.raises(ParameterError):
        choose_ring_bits(max_clients(enc, 32) + 1, enc, bits=32)


@pytest.mark.parametrize("n", [0, -1])
def test_needs_a_client(n: int) -> None:
    with pytest.raises(ParameterError):
        choose_ring_bits(n, FixedPoint())


# -------------------------------------------------------- adversarial sums

# Formats where max_clients is small enough to simulate every client: the
# bound is then checked with real quantized inputs at the extremes.
EXTREME_FORMATS = [
    pytest.param(FixedPoint(clip=4.0, frac_bits=24, max_weight=8.0), 32, id="32bit-B=2^29"),
    pytest.param(FixedPoint(clip=0.7, frac_bits=20, max_weight=3.0), 32, id="32bit-B-not-integer"),
    pytest.param(FixedPoint(clip=0.25, frac_bits=22, max_weight=50.0), 32, id="32bit-weight-dominates"),
    pytest.param(FixedPoint(clip=2.0**10, frac_bits=40, max_weight=1.0), 64, id="64bit-B=2^50"),
    pytest.param(FixedPoint(clip=30.3, frac_bits=40, max_weight=100.0), 64, id="64bit-B-not-integer"),
]


@pytest.mark.parametrize("enc, bits", EXTREME_FORMATS)
def test_worst_case_sums_do_not_wrap(enc: FixedPoint, bits: int) -> None:
    n = max_clients(enc, bits)
    assert 1 <= n <= 10_000
    assert choose_ring_bits(n, enc, bits=bits) == bits
    d = 4
    rng = DeterministicRandom(b"extreme")
    for sign in (+1, -1):
        # every client at sign * clip (and beyond: clipping applies), at the maximal weight
        x = np.full((n, d), sign * enc.clip * 3.0)
        q = enc.quantize(x, enc.max_weight, rng).values.reshape(n, d)
        assert np.all(np.abs(q) <= enc.max_entry_bound())
        total = from_ring(_ring_sum(to_ring(q, bits).reshape(n, d), bits), bits)
        assert total.tolist() == q.sum(axis=0).tolist()
        assert np.all(np.sign(total) == sign)
        # the quantized weights too (they are summed the same way)
        w = np.array([enc.quantize_weight(enc.max_weight, rng) for _ in range(n)], dtype=np.int64)
        w_total = from_ring(_ring_sum(to_ring(w, bits).reshape(n, 1), bits), bits)
        assert int(w_total[0]) == int(w.sum()) > 0
        # the absolute worst case, every entry at the bound itself
        worst = np.full((n, 1), sign * enc.max_entry_bound(), dtype=np.int64)
        total = from_ring(_ring_sum(to_ring(worst, bits).reshape(n, 1), bits), bits)
        assert int(total[0]) == sign * n * enc.max_entry_bound()


@pytest.mark.parametrize("enc, bits", EXTREME_FORMATS)
def test_one_client_more_is_refused_and_would_wrap(enc: FixedPoint, bits: int) -> None:
    n = max_clients(enc, bits) + 1
    with pytest.raises(ParameterError):
        choose_ring_bits(n, enc, bits=bits)
    if bits == 64:
        with pytest.raises(ParameterError):
            choose_ring_bits(n, enc)
    # and the refusal is not needlessly strict: n clients at the bound do wrap
    worst = np.full((n, 1), enc.max_entry_bound(), dtype=np.int64)
    total = from_ring(_ring_sum(to_ring(worst, bits).reshape(n, 1), bits), bits)
    assert int(total[0]) != n * enc.max_entry_bound()


@given(
    clip=st.floats(0.01, 100.0),
    frac_bits=st.integers(0, 30),
    max_weight=st.floats(0.01, 1000.0),
    n=st.integers(1, 10**7),
)
def test_chosen_ring_holds_n_times_the_bound(clip: float, frac_bits: int, max_weight: float, n: int) -> None:
    enc = FixedPoint(clip=clip, frac_bits=frac_bits, max_weight=max_weight)
    bound = enc.max_entry_bound()
    # the bound really bounds an entry at the extremes
    q = enc.quantize(np.array([clip, -clip]), max_weight, DeterministicRandom(1)).values
    assert np.all(np.abs(q) <= bound)
    assert enc.quantize_weight(max_weight, DeterministicRandom(2)) <= bound
    try:
        bits = choose_ring_bits(n, enc)
    except ParameterError:
        assert n * bound > 2**63 - 1
        return
    assert n * bound <= 2 ** (bits - 1) - 1
    if bits == 64:
        assert n * bound > 2**31 - 1  # 32 bits would not have been safe
