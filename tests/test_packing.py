"""Packing layout for Paillier slots (secagg/encoding/packing.py,
protocols/paillier/SPEC.md "Packing"): derivation, refusal, no carry in the
worst case, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.packing import MAX_SLOT_BITS, PackingLayout, SlotOverflow
from secagg.errors import ParameterError, RemoteProtocolError


def add_packed(*packed_lists):
    """The plaintext sum a Paillier aggregate decrypts to: plain integer addition."""
    return [sum(ms) for ms in zip(*packed_lists)]


def test_derive_matches_formula():
    enc = FixedPoint(clip=1.0, frac_bits=14, max_weight=1.0)
    lay = PackingLayout.derive(enc, 100, 2048)
    assert lay.bound == 1 << 14
    assert lay.slot_bits == (2 * 100 * (1 << 14)).bit_length() == 22
    assert lay.slots == 2047 // 22 == 93
    assert lay.ciphertexts(1_000_001) == 10753
    assert lay.bytes_per_value(512) < 6  # the wire budget per parameter
    assert lay.packed_bits <= 2047


@pytest.mark.parametrize("key_bits", [512, 1024, 2048, 3072])
@pytest.mark.parametrize("n_clients", [1, 2, 7, 100, 1000])
def test_headroom_invariants(key_bits, n_clients):
    lay = PackingLayout.derive(FixedPoint(clip=2.0, frac_bits=10, max_weight=3.0), n_clients, key_bits)
    assert 2 * n_clients * lay.bound <= (1 << lay.slot_bits) - 1       # a slot holds the worst sum
    assert 2 * n_clients * lay.bound > (1 << (lay.slot_bits - 1)) - 1  # and is no wider than needed
    assert lay.slots * lay.slot_bits <= key_bits - 1                   # every sum is below n


@pytest.mark.parametrize("value", ["max", "min", "alternating"])
def test_worst_case_all_clients_never_carry(value):
    n_clients = 50
    lay = PackingLayout.derive(FixedPoint(clip=1.0, frac_bits=12, max_weight=2.0), n_clients, 1024)
    length = 3 * lay.slots + 5  # several plaintexts plus a partial one
    b = lay.bound
    if value == "max":
        q = np.full(length, b)
    elif value == "min":
        q = np.full(length, -b)
    else:
        q = np.where(np.arange(length) % 2 == 0, b, -b)
    packed = add_packed(*[lay.pack(q) for _ in range(n_clients)])
    assert all(0 <= m < 1 << (lay.key_bits - 1) for m in packed)
    np.testing.assert_array_equal(lay.unpack(packed, length, n_clients), n_clients * q)


def test_one_client_fewer_than_max():
    lay = PackingLayout.derive(FixedPoint(clip=1.0, frac_bits=8, max_weight=1.0), 10, 512)
    q = np.arange(-lay.bound, lay.bound + 1, 37)
    packed = add_packed(*[lay.pack(q) for _ in range(3)])
    np.testing.assert_array_equal(lay.unpack(packed, q.size, 3), 3 * q)


def test_layout_that_would_overflow_is_refused():
    enc = FixedPoint(clip=1.0, frac_bits=40, max_weight=1000.0)
    with pytest.raises(ParameterError, match="slot would need"):
        PackingLayout.derive(enc, 10_000, 2048)
    with pytest.raises(ParameterError, match="does not fit"):
        PackingLayout.for_bound(1 << 40, 1000, 32)
    with pytest.raises(ParameterError):
        PackingLayout.for_bound(100, 0, 2048)
    # hand-built layouts must equal the derived one
    with pytest.raises(ParameterError, match="slot_bits"):
        PackingLayout(key_bits=2048, max_clients=100, bound=1 << 14, slot_bits=21, slots=97)
    with pytest.raises(ParameterError, match="slots"):
        PackingLayout(key_bits=2048, max_clients=100, bound=1 << 14, slot_bits=22, slots=94)


def test_max_slot_bits_edge():
    # 2*N*B just below 2^62 is allowed, just above is refused
    ok = PackingLayout.for_bound((1 << 61) - 1, 1, 2048)
    assert ok.slot_bits == MAX_SLOT_BITS
    with pytest.raises(ParameterError):
        PackingLayout.for_bound(1 << 61, 1, 2048)


def test_pack_rejects_out_of_range_entries():
    lay = PackingLayout.for_bound(100, 4, 512)
    with pytest.raises(ParameterError):
        lay.pack(np.array([101]))
    with pytest.raises(ParameterError):
        lay.pack(np.array([-101]))
    with pytest.raises(ParameterError):
        lay.pack(np.array([0.5]))
    with pytest.raises(ParameterError):
        lay.pack(np.array([], dtype=np.int64))


def test_unpack_detects_inconsistent_aggregates():
    lay = PackingLayout.for_bound(100, 4, 512)
    q = np.array([100, -100, 5])
    good = add_packed(lay.pack(q), lay.pack(q))
    np.testing.assert_array_equal(lay.unpack(good, 3, 2), 2 * q)
    with pytest.raises(SlotOverflow) as info:
        lay.unpack([good[0] + (1 << lay.packed_bits)], 3, 2)  # bits above the last slot
    assert isinstance(info.value, RemoteProtocolError)
    with pytest.raises(SlotOverflow):
        lay.unpack([good[0] + (1 << (5 * lay.slot_bits))], 3, 2)  # a nonzero padding slot
    with pytest.raises(SlotOverflow):
        lay.unpack(good, 3, 1)  # slot sums too large for one client
    with pytest.raises(ParameterError):
        lay.unpack(good, 3, 5)  # more clients than the layout allows
    with pytest.raises(ParameterError):
        lay.unpack(good + good, 3, 2)  # wrong count


@given(st.integers(1, 20), st.integers(1, 1 << 20), st.sampled_from([256, 512, 1024]), st.data())
def test_pack_unpack_sum_property(n_clients, bound, key_bits, data):
    lay = PackingLayout.for_bound(bound, n_clients, key_bits)
    length = data.draw(st.integers(1, 3 * lay.slots + 2))
    k = data.draw(st.integers(1, n_clients))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    qs = [rng.integers(-bound, bound + 1, size=length) for _ in range(k)]
    packed = add_packed(*[lay.pack(q) for q in qs])
    np.testing.assert_array_equal(lay.unpack(packed, length, k), np.sum(qs, axis=0))
    assert lay.pack_sums(np.sum(qs, axis=0), k) == packed
