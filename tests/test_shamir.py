"""Shamir t-of-n sharing: reconstruction from any t shares, perfect secrecy of
t - 1 shares (exhaustively on tiny fields), malformed input, batch reconstruction."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.errors import ReconstructionError
from secagg.primitives import shamir
from secagg.primitives.randomness import DeterministicRandom
from secagg.primitives.shamir import (
    M31,
    PrimeField,
    chunks_for,
    evaluate,
    lagrange_at_zero,
    reconstruct,
    reconstruct_many,
    split,
    uniform_mod,
)

F7 = PrimeField("F7", 7)
F11 = PrimeField("F11", 11)
SECRET = bytes(range(1, 33))


# ------------------------------------------------------------- round trips

@given(data=st.data())
@settings(max_examples=150)
def test_any_t_of_n_reconstruct(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 50), label="n")
    t = data.draw(st.integers(1, n), label="t")
    ids = data.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True), label="ids")
    secret = data.draw(st.binary(min_size=1, max_size=48), label="secret")
    seed = data.draw(st.integers(0, 2**32), label="seed")
    shares = split(secret, t, ids, DeterministicRandom(seed))
    assert shares.shape == (n, chunks_for(len(secret)))
    k = data.draw(st.integers(t, n), label="k")
    order = data.draw(st.permutations(range(n)), label="order")[:k]
    holders = [ids[i] for i in order]
    assert reconstruct(holders, shares[order], t, secret_len=len(secret)) == secret
    # exactly t of them, through the batch path
    coeffs = lagrange_at_zero(holders[:t])
    assert reconstruct_many(coeffs, shares[order[:t]][None], len(secret)) == [secret]


@given(data=st.data())
@settings(max_examples=60)
def test_fewer_than_t_shares_refused(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 30))
    t = data.draw(st.integers(2, n))
    shares = split(SECRET, t, range(1, n + 1), DeterministicRandom(n * 100 + t))
    k = data.draw(st.integers(1, t - 1))
    with pytest.raises(ReconstructionError):
        reconstruct(list(range(1, k + 1)), shares[:k], t)


@pytest.mark.parametrize("field", [PrimeField("F5", 5), F7, F11, PrimeField("F257", 257), M31])
def test_round_trip_over_other_fields(field: PrimeField) -> None:
    n = min(field.prime - 1, 8)
    t = (n + 1) // 2
    for secret in (b"\x00", b"\xff", b"\x00\x01", SECRET):
        shares = split(secret, t, range(1, n + 1), DeterministicRandom(secret), field=field)
        assert int(shares.max()) < field.prime
        for subset in itertools.combinations(range(n), t):
            xs = [i + 1 for i in subset]
            assert reconstruct(xs, shares[list(subset)], t, len(secret), field) == secret


def test_large_n_round_trip() -> None:
    n, t = 1000, 501
    rng = DeterministicRandom(b"large")
    secrets = [rng.bytes(32) for _ in range(5)]
    shares = np.stack([split(s, t, range(1, n + 1), rng) for s in secrets])  # (m, n, chunks)
    holders = sorted(np.random.default_rng(5).choice(np.arange(1, n + 1), size=t, replace=False).tolist())
    rows = [h - 1 for h in holders]
    assert reconstruct(holders, shares[0][rows], t) == secrets[0]
    coeffs = lagrange_at_zero(holders)
    assert reconstruct_many(coeffs, shares[:, rows, :], 32) == secrets
    # t - 1 of them do not suffice
    with pytest.raises(ReconstructionError):
        reconstruct(holders[:-1], shares[0][rows[:-1]], t)


def test_threshold_one_and_t_equals_n() -> None:
    s1 = split(SECRET, 1, [1, 2, 3])
    assert all(reconstruct([x], s1[[x - 1]], 1) == SECRET for x in (1, 2, 3))
    sn = split(SECRET, 5, range(1, 6))
    assert reconstruct(range(1, 6), sn, 5) == SECRET


def test_split_is_replayable_and_random() -> None:
    a = split(SECRET, 3, range(1, 6), DeterministicRandom(1))
    assert np.array_equal(a, split(SECRET, 3, range(1, 6), DeterministicRandom(1)))
    assert not np.array_equal(a, split(SECRET, 3, range(1, 6), DeterministicRandom(2)))
    assert not np.array_equal(split(SECRET, 3, range(1, 6)), split(SECRET, 3, range(1, 6)))


def test_extra_shares_are_ignored_beyond_the_first_t() -> None:
    shares = split(SECRET, 3, range(1, 6), DeterministicRandom(3))
    tampered = shares.copy()
    tampered[4] = 0
    assert reconstruct(range(1, 6), tampered, 3) == SECRET  # documented: the first t are used


def test_a_wrong_share_never_yields_the_secret_silently() -> None:
    shares = split(SECRET, 3, range(1, 6), DeterministicRandom(4))
    for row in range(3):
        bad = shares.copy()
        bad[row, 0] = (int(bad[row, 0]) + 1) % M31.prime
        try:
            out = reconstruct(range(1, 6), bad, 3)
        except ReconstructionError:
            continue
        assert out != SECRET


# ------------------------------------------------- perfect secrecy (exhaustive)

def _share_distribution(field: PrimeField, secret: int, t: int, xs: list[int]) -> Counter[tuple[int, ...]]:
    """The shares at ``xs`` of every degree-(t-1) polynomial with constant term
    ``secret``: one column per choice of the t - 1 random coefficients."""
    p = field.prime
    choices = np.array(list(itertools.product(range(p), repeat=t - 1)), dtype=np.uint64).T  # (t-1, p^(t-1))
    coeffs = np.vstack([np.full((1, choices.shape[1]), secret, dtype=np.uint64), choices])
    values = evaluate(coeffs, np.array(xs, dtype=np.uint64), field)  # (len(xs), p^(t-1))
    return Counter(map(tuple, values.T.tolist()))


@pytest.mark.parametrize("field, n, t", [(F7, 6, 2), (F7, 6, 3), (F7, 5, 4), (F11, 5, 3)])
def test_t_minus_1_shares_are_independent_of_the_secret(field: PrimeField, n: int, t: int) -> None:
    p = field.prime
    for xs in itertools.combinations(range(1, n + 1), t - 1):
        dists = [_share_distribution(field, s, t, list(xs)) for s in range(p)]
        # identical for every secret, and in fact uniform over F_p^(t-1)
        assert all(d == dists[0] for d in dists)
        assert len(dists[0]) == p ** (t - 1) and set(dists[0].values()) == {1}


@pytest.mark.parametrize("field, n, t", [(F7, 6, 2), (F7, 6, 3), (F11, 5, 3)])
def test_t_shares_do_determine_the_secret(field: PrimeField, n: int, t: int) -> None:
    # The same enumeration has the power to see a difference: with t shares the
    # distributions for different secrets are disjoint.
    for xs in itertools.combinations(range(1, n + 1), t):
        supports = [set(_share_distribution(field, s, t, list(xs))) for s in range(field.prime)]
        for a, b in itertools.combinations(supports, 2):
            assert not a & b


def test_evaluate_matches_hand_computation() -> None:
    # f(x) = 3 + 2x + x^2 and g(x) = 6 + 0x + 5x^2 over F7
    coeffs = np.array([[3, 6], [2, 0], [1, 5]], dtype=np.uint64)
    xs = np.arange(1, 7, dtype=np.uint64)
    got = evaluate(coeffs, xs, F7)
    want = [[(3 + 2 * x + x * x) % 7, (6 + 5 * x * x) % 7] for x in range(1, 7)]
    assert got.tolist() == want


def test_split_coefficients_are_uniform() -> None:
    # With t = 2 a share is secret + a * x: over many splits of one secret, the
    # share at x = 1 is uniform in F7 (chi-square, 6 df, loose).
    m = 7000
    rng = DeterministicRandom(b"uniform")
    vals = np.array([split(b"\x02", 2, [1, 2], rng, F7)[0, 0] for _ in range(m)])
    counts = np.bincount(vals.astype(np.int64), minlength=7)
    chi2 = float(((counts - m / 7) ** 2 / (m / 7)).sum())
    assert chi2 < 40, counts


# ---------------------------------------------------------- lagrange helpers

@pytest.mark.parametrize("xs", [[1], [1, 2], [3, 9, 27], list(range(1, 40)), [5, 1000, 77777, 2**31 - 2]])
def test_lagrange_coefficients_interpolate_monomials(xs: list[int]) -> None:
    p = M31.prime
    lam = [int(v) for v in lagrange_at_zero(xs)]
    assert all(0 <= v < p for v in lam)
    # f(0) = sum l_i f(x_i): 1 for f = 1, 0 for f = x^k, 0 < k < t
    assert sum(lam) % p == 1
    for k in range(1, len(xs)):
        assert sum(l_i * pow(x, k, p) for l_i, x in zip(lam, xs)) % p == 0


def test_lagrange_is_order_consistent() -> None:
    xs = [4, 8, 15, 16, 23, 42]
    lam = dict(zip(xs, lagrange_at_zero(xs).tolist()))
    rev = dict(zip(xs[::-1], lagrange_at_zero(xs[::-1]).tolist()))
    assert lam == rev


def test_lagrange_blocks_agree_with_small_case() -> None:
    # more than one 256-row block
    xs = list(range(1, 600))
    lam = lagrange_at_zero(xs).tolist()
    p = M31.prime
    assert sum(lam) % p == 1
    assert sum(int(l_i) * x for l_i, x in zip(lam, xs)) % p == 0


def test_reconstruct_many_equals_reconstruct() -> None:
    rng = DeterministicRandom(b"many")
    n, t = 20, 11
    secrets = [rng.bytes(32) for _ in range(7)]
    all_shares = np.stack([split(s, t, range(1, n + 1), rng) for s in secrets])
    holders = [2, 3, 5, 7, 11, 13, 17, 19, 20, 1, 4]
    rows = [h - 1 for h in holders]
    coeffs = lagrange_at_zero(holders)
    many = reconstruct_many(coeffs, all_shares[:, rows, :], 32)
    single = [reconstruct(holders, all_shares[i][rows], t) for i in range(len(secrets))]
    assert many == single == secrets


# --------------------------------------------------------- malformed input

def _shares(n: int = 5, t: int = 3) -> np.ndarray:
    return split(SECRET, t, range(1, n + 1), DeterministicRandom(b"malformed"))


@pytest.mark.parametrize("xs", [[1, 1, 2], [1, 2, 2], [3, 3, 3]])
def test_duplicate_points_refused(xs: list[int]) -> None:
    s = _shares()
    with pytest.raises(ReconstructionError):
        reconstruct(xs, s[[x - 1 for x in xs]], 3)
    with pytest.raises(ReconstructionError):
        lagrange_at_zero(xs)


def test_duplicate_point_beyond_threshold_refused() -> None:
    s = _shares()
    with pytest.raises(ReconstructionError):
        reconstruct([1, 2, 3, 1], s[[0, 1, 2, 0]], 3)


@pytest.mark.parametrize("bad", [0, -1, M31.prime, M31.prime + 1, 2**64, 2**70])
def test_points_out_of_range_refused(bad: int) -> None:
    s = _shares()
    with pytest.raises(ReconstructionError):
        reconstruct([1, 2, bad], s[:3], 3)
    with pytest.raises(ReconstructionError):
        lagrange_at_zero([1, bad])


@pytest.mark.parametrize("bad", [1.5, 2.0, "3", None, True, b"\x01"])
def test_non_integer_points_refused(bad: object) -> None:
    s = _shares()
    with pytest.raises(ReconstructionError):
        reconstruct([bad, 4, 5], s[[0, 3, 4]], 3)  # type: ignore[list-item]


def test_numpy_integer_points_accepted() -> None:
    s = _shares()
    assert reconstruct(np.array([1, 3, 5]), s[[0, 2, 4]], 3) == SECRET
    assert reconstruct([np.int64(2), np.uint32(3), 4], s[1:4], 3) == SECRET


def test_empty_points_refused() -> None:
    with pytest.raises(ReconstructionError):
        lagrange_at_zero([])
    with pytest.raises(ReconstructionError):
        reconstruct([], np.zeros((0, 9), dtype=np.uint64), 1)


@pytest.mark.parametrize("threshold", [0, -1, -3, 1.5, True])
def test_bad_threshold_refused(threshold: object) -> None:
    s = _shares()
    with pytest.raises(ReconstructionError):
        reconstruct([1, 2, 3], s[:3], threshold)  # type: ignore[arg-type]


def test_malformed_share_arrays_refused() -> None:
    s = _shares()
    cases = {
        "1-D": s[0],
        "3-D": s[:3][None],
        "rows != points": s[:2],
        "too many rows": s[:4],
        "too few chunks": s[:3, :-1],
        "too many chunks": np.hstack([s[:3], s[:3, :1]]),
        "out of field": np.where(np.arange(9) == 4, M31.prime, s[:3]).astype(np.uint64),
        "uint64 max": np.full((3, 9), np.iinfo(np.uint64).max, dtype=np.uint64),
        "negative": -s[:3].astype(np.int64),
        "float": s[:3].astype(np.float64),
        "object": s[:3].astype(object),
        "bool": s[:3] > 0,
        "strings": s[:3].astype(str),
    }
    for name, arr in cases.items():
        with pytest.raises(ReconstructionError):
            reconstruct([1, 2, 3], arr, 3)
            pytest.fail(name)


def test_reconstruct_many_validates_its_input() -> None:
    s = _shares()
    coeffs = lagrange_at_zero([1, 2, 3])
    good = s[:3][None]
    assert reconstruct_many(coeffs, good, 32) == [SECRET]
    for bad in (s[:3], s[:2][None], good[:, :, :-1], -good.astype(np.int64), good.astype(np.float64),
                good + np.uint64(M31.prime)):
        with pytest.raises(ReconstructionError):
            reconstruct_many(coeffs, bad, 32)
    with pytest.raises(ReconstructionError):
        reconstruct_many(coeffs, good, 31)  # chunk count does not fit the secret length
    with pytest.raises(ValueError):
        reconstruct_many(coeffs.astype(np.float64), good, 32)


def test_wrong_secret_length_refused() -> None:
    s = split(b"\xff" * 32, 3, range(1, 6), DeterministicRandom(9))
    with pytest.raises(ReconstructionError):
        reconstruct([1, 2, 3], s[:3], 3, secret_len=16)
    # 33 bytes need 9 chunks too; the value fits, with a leading zero byte
    assert reconstruct([1, 2, 3], s[:3], 3, secret_len=33) == b"\x00" + b"\xff" * 32


def test_split_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError):
        split(SECRET, 0, [1, 2, 3])
    with pytest.raises(ValueError):
        split(SECRET, 4, [1, 2, 3])
    with pytest.raises(ReconstructionError):
        split(SECRET, 2, [1, 1, 2])
    with pytest.raises(ReconstructionError):
        split(SECRET, 2, [0, 1, 2])
    with pytest.raises(ReconstructionError):
        split(b"\x01", 2, [1, 2, 7], field=F7)  # the point 7 is 0 in F7


# ------------------------------------------------------------------ fields

@pytest.mark.parametrize("modulus", [4, 8, 9, 15, 21, 25, 341, 561, 2**31 - 3, 2**31])
def test_composite_modulus_refused(modulus: int) -> None:
    with pytest.raises(ValueError):
        PrimeField("bad", modulus)


@pytest.mark.parametrize("modulus", [0, 1, -7, 2**31 + 11, 2**61 - 1])
def test_modulus_out_of_range_refused(modulus: int) -> None:
    with pytest.raises(ValueError):
        PrimeField("bad", modulus)


def test_m31_layout() -> None:
    assert M31.prime == 2**31 - 1
    assert M31.chunk_bits == 30
    assert chunks_for(32) == 9
    assert split(SECRET, 2, [1, 2]).shape == (2, 9)
    assert shamir._is_prime(2**31 - 1) and not shamir._is_prime(2**31 + 1)


def test_primality_check_against_trial_division() -> None:
    def slow(n: int) -> bool:
        return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))

    assert [n for n in range(3000) if shamir._is_prime(n)] == [n for n in range(3000) if slow(n)]


def test_uniform_mod_range_and_spread() -> None:
    rng = DeterministicRandom(b"umod")
    for p in (2, 7, 65521, M31.prime):
        v = uniform_mod(rng, 20_000, p)
        assert v.dtype == np.uint64 and int(v.max()) < p
    v = uniform_mod(rng, 70_000, 7)
    counts = np.bincount(v.astype(np.int64), minlength=7)
    assert np.all(np.abs(counts - 10_000) < 600), counts


# ---------------------------------------------------------------- split_many

@given(data=st.data())
@settings(max_examples=60)
def test_split_many_shares_each_secret(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 30))
    t = data.draw(st.integers(1, n))
    length = data.draw(st.integers(1, 40))
    secrets = data.draw(st.lists(st.binary(min_size=length, max_size=length), min_size=1, max_size=5))
    out = shamir.split_many(secrets, t, range(1, n + 1), DeterministicRandom(n + 7 * t))
    assert len(out) == len(secrets)
    order = data.draw(st.permutations(range(n)))[:t]
    holders = [i + 1 for i in order]
    for secret, shares in zip(secrets, out):
        assert shares.shape == (n, chunks_for(length))
        assert int(shares.max()) < M31.prime
        assert reconstruct(holders, shares[order], t, length) == secret


def test_split_many_uses_independent_polynomials() -> None:
    # Two equal secrets must not get equal shares (that would tell a holder of
    # one share of each that the secrets are equal).
    a, b = shamir.split_many([SECRET, SECRET], 3, range(1, 6), DeterministicRandom(1))
    assert not np.any(a == b)


def test_split_many_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        shamir.split_many([], 2, [1, 2])
    with pytest.raises(ValueError):
        shamir.split_many([b"ab", b"abc"], 2, [1, 2])
    with pytest.raises(ValueError):
        shamir.split_many([b"ab"], 3, [1, 2])
    with pytest.raises(ReconstructionError):
        shamir.split_many([b"ab"], 2, [1, 1])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.sampled_from([1, 2, 1000, (1 << 30) - 1]), st.data())
def test_mersenne_fast_path_equals_plain_horner(t, c, top, data):
    """evaluate()'s folded reduction for GF(2^31 - 1) against Horner with a
    full reduction at every step, including extreme points and coefficients."""
    from secagg.primitives.shamir import M31, evaluate

    p = M31.prime
    coeffs = np.array(data.draw(st.lists(st.lists(st.sampled_from([0, 1, p - 1, p - 2, 12345]) | st.integers(0, p - 1),
                                                  min_size=c, max_size=c), min_size=t, max_size=t)), dtype=np.uint64)
    xs = np.array(sorted({1, top, max(1, top - 1)}), dtype=np.uint64)
    expected = np.empty((xs.size, c), dtype=object)
    for i, x in enumerate(xs.tolist()):
        for j in range(c):
            acc = 0
            for k in range(t - 1, -1, -1):
                acc = (acc * x + int(coeffs[k, j])) % p
            expected[i, j] = acc
    assert evaluate(coeffs, xs).tolist() == expected.tolist()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(1, 5000), min_size=1, max_size=12, unique=True), min_size=1, max_size=6)
       .filter(lambda sets: len({len(s) for s in sets}) == 1))
def test_batch_lagrange_equals_one_set_at_a_time(sets):
    from secagg.primitives.shamir import lagrange_at_zero, lagrange_at_zero_batch

    table = lagrange_at_zero_batch(np.array(sets))
    for row, pts in zip(table, sets):
        assert row.tolist() == lagrange_at_zero(pts).tolist()


@pytest.mark.parametrize("bad, why", [
    ([[1, 2, 3], [2, 0, 4]], "lie in"),  # zero
    ([[1, 2, 3], [2, 3, -4]], "lie in"),  # negative
    ([[1, 2, shamir.M31.prime], [1, 2, 3]], "lie in"),  # the prime itself
    ([[1, 2, 3], [4, 5, 4]], "duplicate"),
    ([[1.0, 2.0, 3.0]], "not an integer"),
    ([[True, 2, 3]], "not an integer"),
])
def test_batch_lagrange_refuses_bad_point_sets(bad, why):
    from secagg.primitives.shamir import lagrange_at_zero_batch

    arr = np.array(bad, dtype=object) if isinstance(bad[0][0], bool) else np.array(bad)
    with pytest.raises(ReconstructionError, match=why):
        lagrange_at_zero_batch(arr)


def test_reconstruct_rows_flags_inconsistent_shares_with_none():
    from secagg.primitives.shamir import lagrange_at_zero_batch, reconstruct_rows, split

    secret = bytes(range(32))
    sh = split(secret, 3, [1, 2, 3, 4], DeterministicRandom(1))
    pts = np.array([[1, 2, 3], [2, 3, 4]])
    coeffs = lagrange_at_zero_batch(pts)
    good = np.stack([sh[[0, 1, 2]], sh[[1, 2, 3]]])
    assert reconstruct_rows(coeffs, good, 32) == [secret, secret]
    bad = good.copy()
    bad[1, 0, 0] = (int(bad[1, 0, 0]) + 1) % shamir.M31.prime
    out = reconstruct_rows(coeffs, bad, 32)
    assert out[0] == secret and out[1] != secret


def _reference_evaluate(coeffs: np.ndarray, xs: list[int], p: int) -> list[list[int]]:
    t, c = coeffs.shape
    return [[sum(int(coeffs[k, j]) * pow(x, k, p) for k in range(t)) % p for j in range(c)] for x in xs]


# large t draws a large coefficient table by design: hypothesis' entropy health check would fail at random
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(st.sampled_from([1, 2, 3, 4, 255, 256, 257, 512, 513, 1024, 1025]), st.integers(1, 20), st.data())
def test_matmul_evaluation_is_exact(t, c, data):
    """The float64 matrix-product path against big-integer arithmetic, with the
    worst-case coefficients (p - 1) and points (up to p - 1) that maximise every
    partial sum: one inexact float addition would show."""
    p = M31.prime
    coeffs = np.array(data.draw(st.lists(st.lists(st.sampled_from([p - 1, p - 2, 0, 1]) | st.integers(0, p - 1),
                                                  min_size=c, max_size=c), min_size=t, max_size=t)), dtype=np.uint64)
    xs = sorted(set(data.draw(st.lists(st.sampled_from([1, 2, p - 1, p - 2, (1 << 30) + 7]) | st.integers(1, p - 1),
                                       min_size=1, max_size=6))))
    got = shamir._evaluate_matmul(coeffs, np.array(xs, dtype=np.uint64), M31)
    assert got.dtype == np.uint64 and got.shape == (len(xs), c)
    assert got.tolist() == _reference_evaluate(coeffs, xs, p)


def test_all_maximal_inputs_through_matmul_at_protocol_size():
    """n = 1000, t = 501, every coefficient p - 1: the largest partial sums the
    masking protocol produces, checked against Horner (itself checked against
    big integers above) and, for a few points, against big integers."""
    p = M31.prime
    coeffs = np.full((501, 18), p - 1, dtype=np.uint64)
    xs = np.arange(1, 1001, dtype=np.uint64)
    got = shamir._evaluate_matmul(coeffs, xs, M31)
    assert np.array_equal(got, shamir._evaluate_horner(coeffs, xs, M31))
    assert got[[0, 499, 999]].tolist() == _reference_evaluate(coeffs, [1, 500, 1000], p)


def test_split_large_instance_uses_a_path_that_reconstructs():
    """split() at a size that takes the matrix-product path still gives shares
    that reconstruct, and the same shares as Horner would."""
    secret = bytes(range(32))
    xs = list(range(1, 701))
    shares = split(secret, 300, xs, DeterministicRandom(b"seed"))
    assert reconstruct(xs[100:400], shares[100:400], 300) == secret
    coeffs_rng = DeterministicRandom(b"seed")
    # rebuild the same polynomials and evaluate them with Horner
    c = chunks_for(32)
    coeffs = np.empty((300, c), dtype=np.uint64)
    coeffs[0] = shamir._to_chunks(secret, M31)
    coeffs[1:] = uniform_mod(coeffs_rng, 299 * c, M31.prime).reshape(299, c)
    assert np.array_equal(shares, shamir._evaluate_horner(coeffs, np.array(xs, dtype=np.uint64), M31))


def test_combine_at_zero_is_the_lagrange_sum_exactly() -> None:
    from secagg.primitives.shamir import M31, combine_at_zero, lagrange_at_zero, secrets_from_chunk_rows, split

    rng = np.random.default_rng(5)
    for t in (1, 2, 7, 300, 1100):  # limb widths change with t
        xs = sorted(rng.choice(np.arange(1, 5000), size=t, replace=False).tolist())
        coeffs = lagrange_at_zero(xs)
        rows = [rng.integers(0, M31.prime, size=37, dtype=np.uint32) for _ in range(t)]
        rows[0][:3] = M31.prime - 1  # the largest values
        p = M31.prime
        want = [sum(int(c) * int(r[j]) for c, r in zip(coeffs.tolist(), rows)) % p for j in range(37)]
        got = combine_at_zero(coeffs, rows, block=16)
        assert got.dtype == np.uint64 and got.tolist() == want
        assert combine_at_zero(coeffs, np.stack(rows)).tolist() == want
    secrets = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(4)]
    xs = list(range(1, 11))
    table = np.stack([split(s, 6, xs) for s in secrets])  # secrets x holders x chunks
    rows = [table[:, i, :].reshape(-1) for i in range(6)]
    chunks = combine_at_zero(lagrange_at_zero(xs[:6]), rows).reshape(4, -1)
    assert secrets_from_chunk_rows(chunks, 32) == secrets
    chunks[1, 0] = M31.prime - 1  # out of range for a chunk: not a secret
    assert secrets_from_chunk_rows(chunks, 32)[1] is None
    with pytest.raises(ReconstructionError):
        combine_at_zero(lagrange_at_zero(xs[:6]), rows[:5])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(0, 10**6), st.data())
def test_reconstruct_without_each_equals_each_subset(t, seed, data):
    """Entry k of ``reconstruct_without_each`` is the reconstruction from every
    point but the k-th: against ``reconstruct`` on each subset, with one share
    spoilt, so exactly the subset without it gives the secret back."""
    from secagg.primitives.shamir import reconstruct, reconstruct_without_each, split

    rng = DeterministicRandom(seed)
    secret = rng.bytes(32)
    xs = sorted(data.draw(st.lists(st.integers(1, 100_000), min_size=t + 1, max_size=t + 1, unique=True)))
    shares = split(secret, t, xs, rng).astype(np.uint64)
    bad = data.draw(st.integers(0, t))
    shares[bad, data.draw(st.integers(0, shares.shape[1] - 1))] ^= np.uint64(1)
    got = reconstruct_without_each(xs, shares, 32)
    assert len(got) == t + 1 and got[bad] == secret
    for k in range(t + 1):
        keep = [j for j in range(t + 1) if j != k]
        try:
            want = reconstruct([xs[j] for j in keep], shares[keep], t, 32)
        except ReconstructionError:
            want = None
        assert got[k] == want
        if k != bad:
            assert got[k] != secret


def test_reconstruct_without_each_refuses_bad_input():
    from secagg.primitives.shamir import reconstruct_without_each

    with pytest.raises(ReconstructionError):
        reconstruct_without_each([1], np.zeros((1, 9), dtype=np.uint64), 32)  # one point
    with pytest.raises(ReconstructionError):
        reconstruct_without_each([1, 2, 2], np.zeros((3, 9), dtype=np.uint64), 32)  # duplicate
    with pytest.raises(ReconstructionError):
        reconstruct_without_each([1, 2, 3], np.zeros((2, 9), dtype=np.uint64), 32)  # rows do not match
