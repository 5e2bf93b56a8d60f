"""The distributed-DP client pipeline and server decoding (secagg.dp.pipeline):
each step on its own, the parameter checks, and whole rounds."""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numpy as np
import pytest

from secagg.dp import pipeline as P
from secagg.errors import ParameterError
from secagg.primitives.randomness import DeterministicRandom

SEED = bytes(range(32))


def _params(**kw) -> P.DPParams:
    base = dict(mechanism="dgauss", clip=1.0, bits=24, granularity=1 / 256, noise=Fraction(400 * 10),
                n_min=10, dim=300, rotation_seed=SEED, n_max=20)
    base.update(kw)
    return P.DPParams(**base)  # type: ignore[arg-type]


def _updates(n: int, d: int, seed: str, norm: float) -> list[np.ndarray]:
    g = np.random.default_rng(zlib.crc32(seed.encode()))
    out = []
    for _ in range(n):
        x = g.normal(size=d) + 0.3
        out.append(x / np.linalg.norm(x) * norm)
    return out


# --------------------------------------------------------------------------- clip

def test_clip_scales_down_to_the_bound_only_when_above():
    x = np.array([3.0, 4.0])
    y, clipped = P.clip_l2(x, 1.0)
    assert clipped and math.isclose(float(np.linalg.norm(y)), 1.0) and np.allclose(y, [0.6, 0.8])
    z, clipped = P.clip_l2(x, 10.0)
    assert not clipped and np.array_equal(z, x) and z is not x
    with pytest.raises(ParameterError):
        P.clip_l2(np.array([1.0, np.nan]), 1.0)


# --------------------------------------------------------------------------- rotation

def _hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(n)


def test_fwht_is_the_normalised_hadamard_matrix_and_self_inverse():
    g = np.random.default_rng(1)
    for n in (1, 2, 8, 64):
        x = g.normal(size=n)
        assert np.allclose(P.fwht(x), _hadamard(n) @ x, atol=1e-12)
        assert np.allclose(P.fwht(P.fwht(x)), x, atol=1e-12)
    with pytest.raises(ParameterError):
        P.fwht(np.ones(6))


@pytest.mark.parametrize("d", [1, 5, 300, 1024, 1025])
def test_rotation_preserves_the_norm_and_inverts(d):
    x = np.random.default_rng(d).normal(size=d)
    y = P.rotate(x, SEED)
    assert y.size == P.padded_dim(d)
    assert math.isclose(float(np.linalg.norm(y)), float(np.linalg.norm(x)), rel_tol=1e-12)
    assert np.allclose(P.unrotate(y, SEED, d), x, rtol=0, atol=1e-12 * max(1.0, float(np.abs(x).max())))


def test_rotation_depends_on_the_public_seed_only():
    x = np.arange(10, dtype=np.float64)
    assert np.array_equal(P.rotate(x, SEED), P.rotate(x, SEED))
    assert not np.allclose(P.rotate(x, SEED), P.rotate(x, bytes(32)))
    signs = P.rotation_signs(SEED, 4096)
    assert set(np.unique(signs).tolist()) == {-1.0, 1.0} and abs(float(signs.mean())) < 0.1
    with pytest.raises(ParameterError):
        P.rotation_signs(b"short", 8)


def test_rotation_flattens_a_spike():
    """A vector with all its mass on one coordinate spreads to |x|/sqrt(d') per coordinate."""
    x = np.zeros(1024)
    x[7] = 1.0
    y = P.rotate(x, SEED)
    assert np.allclose(np.abs(y), 1 / 32)


# --------------------------------------------------------------------------- scale and rounding

def test_scale_and_unscale_are_inverse():
    x = np.array([0.5, -0.25, 1e-3])
    assert np.allclose(P.unscale(P.scale(x, 1 / 1024), 1 / 1024), x)
    assert np.allclose(P.scale(x, 0.25), x * 4)


def test_rounding_bound_formula():
    c, d, beta = 100.0, 1024, math.exp(-0.5)
    expect = math.sqrt(c * c + d / 4 + 1.0 * (c + 16))  # sqrt(2 ln(1/beta)) = 1
    assert math.isclose(P.rounding_bound(c, d, beta), expect)
    assert P.rounding_bound(0.0, 4, 1e-300) == 2.0  # the deterministic branch c + sqrt(d)


def test_stochastic_rounding_is_unbiased():
    y = np.full(200_000, 0.3)
    q = P.stochastic_round(y, DeterministicRandom("sr"))
    assert set(np.unique(q).tolist()) == {0, 1}
    assert abs(q.mean() - 0.3) < 4.5 * math.sqrt(0.21 / y.size)


def test_conditional_rounding_respects_the_bound():
    g = np.random.default_rng(2)
    rng = DeterministicRandom("cr")
    d, c = 1024, 50.0
    bound = P.rounding_bound(c, d, math.exp(-0.5))
    attempts = []
    for _ in range(200):
        y = g.normal(size=d)
        y *= c / np.linalg.norm(y)
        q, tries = P.conditional_round(y, bound, rng)
        assert float(np.linalg.norm(q)) <= bound
        assert np.all(np.abs(q - y) < 1)
        attempts.append(tries)
    # each attempt passes with probability >= 1 - beta = 0.39: 200 inputs need far fewer than 200 * 10 attempts
    assert sum(attempts) < 200 / (1 - math.exp(-0.5)) * 1.5


def test_conditional_rounding_gives_up_with_a_typed_error():
    y = np.full(64, 10.5)
    with pytest.raises(P.RoundingError) as info:
        P.conditional_round(y, bound=float(np.linalg.norm(y)) / 2, rng=DeterministicRandom("x"), max_retries=7)
    assert isinstance(info.value, ParameterError) and "7 attempts" in str(info.value)


# --------------------------------------------------------------------------- noise and the ring

def test_add_noise_shares_are_the_local_variance():
    q = np.zeros(1 << 15, dtype=np.int64)
    for mech in P.MECHANISMS:
        v = P.add_noise(q, mech, Fraction(900), DeterministicRandom(mech))
        assert v.dtype == np.int64
        assert abs(v.var() - 900) < 4.5 * 900 * math.sqrt(2 / v.size)
    with pytest.raises(ParameterError):
        P.add_noise(q, "laplace", 1)


@pytest.mark.parametrize("bits", [2, 8, 20, 32, 63, 64])
def test_wrap_unwrap_round_trip(bits):
    half = 1 << (bits - 1)
    v = np.array([0, 1, -1, half - 1, -half, 5 % half, -(3 % half)], dtype=np.int64)
    w = P.wrap(v, bits)
    assert w.dtype == np.uint64 and int(w.max()) < (1 << bits)
    assert np.array_equal(P.unwrap(w, bits), v)
    # sums wrap and unwrap consistently
    parts = [np.array([half - 1, -half // 2], dtype=np.int64), np.array([-(half - 1), -half // 2], dtype=np.int64)]
    assert np.array_equal(P.unwrap(P.ring_sum([P.wrap(p, bits) for p in parts], bits), bits), parts[0] + parts[1])
    with pytest.raises(ParameterError):
        P.wrap(np.array([0.5]), bits)


# --------------------------------------------------------------------------- parameters

def test_params_refuse_a_ring_that_could_wrap():
    p = _params()
    assert p.wrap_bound() < (1 << 23) - 1
    with pytest.raises(ParameterError, match="ring"):
        _params(bits=12)
    with pytest.raises(ParameterError):
        _params(noise=Fraction(10**14))  # the noise alone would wrap 24 bits
    # more survivors than n_max is not covered
    assert _params(n_max=40).wrap_bound() > p.wrap_bound()


@pytest.mark.parametrize("bad", [dict(mechanism="gauss"), dict(clip=0.0), dict(clip=float("inf")), dict(bits=1),
                                 dict(bits=65), dict(granularity=-1.0), dict(noise=0), dict(noise=1.5),
                                 dict(n_min=0), dict(n_max=5), dict(dim=0), dict(rotation_seed=b"x" * 16),
                                 dict(beta=1.0), dict(wrap_probability=0.0)])
def test_params_validation(bad):
    with pytest.raises(ParameterError):
        _params(**bad)


def test_params_derived_quantities():
    p = _params()
    assert p.padded_dim == 512 and p.scaled_clip == 256.0 and p.local_noise == Fraction(400)
    assert p.l2_sensitivity == P.rounding_bound(256.0, 512, p.beta)
    assert p.l1_sensitivity == min(p.l2_sensitivity ** 2, math.sqrt(512) * p.l2_sensitivity)
    assert P.noise_variance(2.5, 4) == Fraction(25, 4) and P.noise_variance(0.1, 16) >= Fraction(1, 100)


def test_the_wrap_bound_holds_empirically():
    """At the edge of acceptance (the smallest ring allowed) no coordinate of 5 summed rounds wraps."""
    bits = 2
    while True:
        try:
            p = _params(bits=bits, n_max=10)
            break
        except ParameterError:
            bits += 1
    rng = DeterministicRandom("edge")
    xs = _updates(10, p.dim, "edge", 1.0)
    worst = 0
    for _ in range(5):
        encs = [P.encode(x, p, rng) for x in xs]
        total = P.unwrap(P.ring_sum([e.values for e in encs], p.bits), p.bits)
        worst = max(worst, int(np.abs(total).max()))
    assert worst < p.wrap_bound() < 1 << (bits - 1)


# --------------------------------------------------------------------------- whole rounds

@pytest.mark.parametrize("mechanism", P.MECHANISMS)
@pytest.mark.parametrize("survivors", [10, 16])
def test_round_recovers_the_mean_within_the_predicted_error(mechanism, survivors):
    p = _params(mechanism=mechanism)
    rng = DeterministicRandom(f"e2e-{mechanism}-{survivors}")
    xs = _updates(survivors, p.dim, mechanism, 0.8)
    encs = [P.encode(x, p, rng.fork(str(i))) for i, x in enumerate(xs)]
    assert all(e.values.dtype == np.uint64 and e.values.size == p.padded_dim for e in encs)
    assert not any(e.clipped for e in encs)
    total = P.decode(P.ring_sum([e.values for e in encs], p.bits), p)
    mean = total / survivors
    truth = sum(xs) / survivors
    # per coordinate of the sum: noise variance survivors * local + rounding variance <= survivors / 4,
    # in units of gamma^2; the rotation is orthogonal, so the same holds after unrotating (on average)
    sd = p.granularity * math.sqrt(survivors * float(p.local_noise) + survivors / 4) / survivors
    err = mean - truth
    assert abs(float(err.mean())) < 4.5 * sd / math.sqrt(p.dim)
    assert float(err.std()) < 1.2 * sd
    assert float(np.abs(err).max()) < 6.5 * sd


def test_clipping_is_reported_and_applied():
    p = _params()
    x = _updates(1, p.dim, "big", 5.0)[0]
    e = P.encode(x, p, DeterministicRandom("clip"))
    assert e.clipped and e.attempts >= 1
    with pytest.raises(ParameterError):
        P.encode(np.ones(p.dim + 1), p)
    assert "values>" in repr(e)


def test_encode_is_deterministic_given_the_source():
    p = _params(mechanism="skellam")
    x = _updates(1, p.dim, "det", 0.5)[0]
    a = P.encode(x, p, DeterministicRandom("same")).values
    b = P.encode(x, p, DeterministicRandom("same")).values
    assert np.array_equal(a, b)
