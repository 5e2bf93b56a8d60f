"""The Renyi-DP accountant of secagg.dp.accounting: agreement with
dp_accounting in the continuous-Gaussian limit, composition, monotonicity,
subsampling, survivor-count guarantees and calibration."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

dp_accounting = pytest.importorskip("dp_accounting")

from secagg.dp import accounting as A  # noqa: E402
from secagg.dp.pipeline import DPParams  # noqa: E402
from secagg.errors import ParameterError  # noqa: E402

INT_ORDERS = [float(a) for a in range(2, 257)] + [320.0, 384.0, 512.0, 1024.0]
DELTA = 1e-5
GAUSSIAN_LIMIT_TOL = 1e-9  # relative: with tau ~ 0 the curves are the same function


def _library_epsilon(z: float, rounds: int, q: float, orders=INT_ORDERS) -> float:
    acc = dp_accounting.rdp.RdpAccountant(list(orders))
    event = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    acc.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return acc.get_epsilon(DELTA)


def _ddg_epsilon(z: float, rounds: int, q: float, n: int = 10, l2: float = 1000.0, dim: int = 1024,
                 orders=INT_ORDERS) -> float:
    """Our accountant for the distributed discrete Gaussian with noise multiplier z = sqrt(n s^2)/l2."""
    s2 = (z * l2) ** 2 / n

    def curve(a):
        return A.ddg_rdp(a, l2, s2, n, dim)

    return A.epsilon_from_rdp(orders, rounds * A.subsampled_rdp(orders, curve, q), DELTA)[0]


@pytest.mark.parametrize("z,rounds", [(0.8, 1), (1.0, 100), (2.0, 1000), (5.0, 10)])
def test_ddg_matches_dp_accounting_in_the_gaussian_limit(z, rounds):
    """Large sigma (in integer units): tau vanishes and the discrete Gaussian's
    curve is the continuous Gaussian's; the epsilons agree to 1e-9 relative."""
    assert A.ddg_tau((z * 1000.0) ** 2 / 10, 10) < 1e-300
    ours, lib = _ddg_epsilon(z, rounds, 1.0), _library_epsilon(z, rounds, 1.0)
    assert math.isclose(ours, lib, rel_tol=GAUSSIAN_LIMIT_TOL), (ours, lib)


@pytest.mark.parametrize("z,rounds,q", [(1.0, 100, 0.01), (1.5, 100, 0.1), (0.8, 1000, 0.05)])
def test_subsampled_bound_is_above_the_tight_gaussian_analysis_and_close_to_it(z, rounds, q):
    """The general Poisson-subsampling bound (Zhu-Wang) is valid for any mechanism, so it is
    at least dp_accounting's tight subsampled-Gaussian epsilon, and within 40% of it here."""
    ours, lib = _ddg_epsilon(z, rounds, q), _library_epsilon(z, rounds, q)
    assert lib * (1 - 1e-9) <= ours <= 1.4 * lib, (ours, lib)
    assert ours < _ddg_epsilon(z, rounds, 1.0)  # subsampling helps


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
@pytest.mark.parametrize("local,q", [(0.3, 1.0), (1.0, 1.0), (1e4, 1.0), (0.3, 0.1), (1e4, 0.05)])
def test_discrete_is_never_better_than_the_continuous_reference(mechanism, local, q):
    """The same aggregate noise as a continuous Gaussian (dp_accounting) gives a smaller or equal
    epsilon; at small noise (tau, the Skellam correction) the discrete bound is strictly larger."""
    n, l2, d, rounds = 20, 3.0, 256, 50
    curve = A.subsampled_rdp(A.ORDERS, lambda a: A.mechanism_rdp(
        mechanism, a, l2=l2, l1=min(l2 * l2, math.sqrt(d) * l2), dim=d, local_noise=local, n=n), q)
    ours = A.epsilon_from_rdp(A.ORDERS, rounds * curve, DELTA)[0]
    ref = A.continuous_gaussian_epsilon(math.sqrt(n * local) / l2, rounds, DELTA, q)
    assert ours >= ref * (1 - 1e-9)
    if local < 1 and q == 1:
        assert ours > 1.01 * ref


def test_skellam_tends_to_the_gaussian_for_large_variance():
    l2, l1 = 100.0, 100.0 * 32
    for mu, tol in ((1e6, 1e-2), (1e9, 1e-5)):
        z = math.sqrt(mu) / l2
        sk = A.epsilon_from_rdp(INT_ORDERS, 50 * A.skellam_rdp(INT_ORDERS, l2, l1, mu), DELTA)[0]
        ga = _library_epsilon(z, 50, 1.0)
        assert ga <= sk <= ga * (1 + tol), (mu, sk, ga)


def test_skellam_rdp_formula():
    a = np.array([2.0, 8.0])
    got = A.skellam_rdp(a, 3.0, 5.0, 10.0)
    expect = a * 9 / 20 + np.minimum(((2 * a - 1) * 9 + 30) / 400, 15 / 20)
    assert np.allclose(got, expect)


def test_ddg_tau_and_the_discrete_correction():
    assert A.ddg_tau(1.0, 1) == 0.0
    t = A.ddg_tau(0.5, 3)
    assert math.isclose(t, 10 * (math.exp(-math.pi ** 2 / 2) + math.exp(-2 * math.pi ** 2 / 3)))
    # small sigma: the correction makes epsilon larger than the Gaussian's, at every order
    l2, s2, n, d = 10.0, 0.3, 50, 1024
    tau = A.ddg_tau(s2, n)
    eps = A.ddg_epsilon(l2, s2, n, d)
    gauss = l2 / math.sqrt(n * s2)
    assert math.isclose(eps, min(math.sqrt(gauss ** 2 + 2 * tau * d), gauss + tau * math.sqrt(d)))
    a = np.array(A.ORDERS)
    curve = A.ddg_rdp(a, l2, s2, n, d)
    assert np.all(curve > a * gauss ** 2 / 2)
    assert np.all(curve <= a * eps ** 2 / 2 * (1 + 1e-12))  # Prop. 14 is within Thm. 1's zCDP
    with pytest.raises(ParameterError):
        A.ddg_epsilon(10.0, 0.2, 50, 1024)  # sigma < 1/2


def test_composition_is_additive():
    acc = A.DPAccountant()
    curve = A.gaussian_rdp(acc.orders, 2.0)
    for _ in range(7):
        acc.add_curve(curve)
    assert np.allclose(acc.rdp, 7 * curve)
    one = A.DPAccountant()
    one.add_curve(7 * curve)
    assert acc.epsilon(DELTA) == one.epsilon(DELTA)
    with pytest.raises(ParameterError):
        acc.add_curve(-curve)


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_monotone_in_noise_and_rounds(mechanism):
    def eps(noise, rounds):
        curve = A.mechanism_rdp(mechanism, A.ORDERS, l2=300.0, l1=3000.0, dim=1024, local_noise=noise, n=10)
        return A.epsilon_from_rdp(A.ORDERS, rounds * curve, DELTA)[0]

    noises = [1e3, 1e4, 1e5, 1e6]
    for rounds in (1, 10, 100):
        series = [eps(s, rounds) for s in noises]
        assert all(a > b for a, b in zip(series, series[1:]))
    for s in noises:
        series = [eps(s, r) for r in (1, 10, 100)]
        assert all(a < b for a, b in zip(series, series[1:]))


def _params(mechanism="dgauss", noise=Fraction(10**7), n_min=10) -> DPParams:
    return DPParams(mechanism, clip=1.0, bits=32, granularity=1 / 256, noise=noise, n_min=n_min, dim=1000,
                    rotation_seed=bytes(32), n_max=40)


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_more_survivors_give_a_smaller_epsilon(mechanism):
    p = _params(mechanism)
    got = [A.round_guarantee(p, n, DELTA) for n in (10, 20, 40)]
    assert got[0].epsilon > got[1].epsilon > got[2].epsilon
    assert [g.aggregate_noise for g in got] == [1e7, 2e7, 4e7]
    with pytest.raises(ParameterError, match="n_min"):
        A.round_guarantee(p, 9, DELTA)


def test_remove_adjacency_counts_the_other_clients_noise_only():
    p = _params()
    replace = A.round_guarantee(p, 12, DELTA)
    remove = A.round_guarantee(p, 12, DELTA, adjacency="remove")
    assert remove.epsilon > replace.epsilon
    assert math.isclose(remove.epsilon, A.round_guarantee(p, 11, DELTA).epsilon)
    with pytest.raises(ParameterError):
        A.round_guarantee(p, 12, DELTA, adjacency="swap")
    noise = A.calibrate_noise("dgauss", 2.0, DELTA, rounds=10, n_min=10, l2_sensitivity=p.l2_sensitivity,
                              l1_sensitivity=p.l1_sensitivity, dim=p.padded_dim, adjacency="remove")
    assert noise > A.calibrate_noise("dgauss", 2.0, DELTA, rounds=10, n_min=10, l2_sensitivity=p.l2_sensitivity,
                                     l1_sensitivity=p.l1_sensitivity, dim=p.padded_dim)


def test_accountant_over_rounds_with_dropouts():
    p = _params()
    acc = A.DPAccountant()
    per_round = [acc.add_round(p, n, delta=DELTA) for n in (12, 10, 15)]
    assert [r.survivors for r in acc.rounds] == [12, 10, 15]
    assert acc.epsilon(DELTA) > max(r.epsilon for r in per_round)
    # the worst case (n_min survivors every round) bounds what was achieved
    worst = A.DPAccountant()
    for _ in range(3):
        worst.add_round(p, 10, delta=DELTA)
    assert acc.epsilon(DELTA) < worst.epsilon(DELTA)


@pytest.mark.parametrize("mechanism,q,rounds,target", [("dgauss", 1.0, 100, 4.0), ("skellam", 1.0, 10, 1.0),
                                                       ("dgauss", 0.1, 200, 2.0), ("skellam", 0.05, 500, 3.0)])
def test_calibration_round_trip(mechanism, q, rounds, target):
    p = _params(mechanism)
    l2, l1, d = p.l2_sensitivity, p.l1_sensitivity, p.padded_dim
    noise = A.calibrate_noise(mechanism, target, DELTA, rounds=rounds, n_min=10, l2_sensitivity=l2,
                              l1_sensitivity=l1, dim=d, sampling_rate=q)
    assert isinstance(noise, Fraction) and noise.denominator <= 1 << 10

    def eps(v):
        curve = A.subsampled_rdp(A.ORDERS, lambda a: A.mechanism_rdp(
            mechanism, a, l2=l2, l1=l1, dim=d, local_noise=float(v) / 10, n=10), q)
        return A.epsilon_from_rdp(A.ORDERS, rounds * curve, DELTA)[0]

    got = eps(noise)
    assert got <= target and got >= target * 0.99, (got, target)
    assert eps(noise * Fraction(99, 100)) > target  # 1% less noise is not enough
    # the calibrated noise is accepted by DPParams with a wide enough ring, and its round accounting agrees
    cal = DPParams(mechanism, clip=1.0, bits=48, granularity=1 / 256, noise=noise, n_min=10, dim=1000,
                   rotation_seed=bytes(32))
    acc = A.DPAccountant()
    for _ in range(rounds):
        acc.add_round(cal, 10, sampling_rate=q, delta=DELTA)
    # (each client's share is rounded up: never above the calibrated epsilon, and within 0.1 %)
    assert got * 0.999 <= acc.epsilon(DELTA) <= got


def test_calibration_refuses_nonsense():
    with pytest.raises(ParameterError):
        A.calibrate_noise("dgauss", 0.0, DELTA, rounds=1, n_min=1, l2_sensitivity=1, l1_sensitivity=1, dim=1)
    with pytest.raises(ParameterError):
        A.calibrate_noise("laplace", 1.0, DELTA, rounds=1, n_min=1, l2_sensitivity=1, l1_sensitivity=1, dim=1)
    with pytest.raises(ParameterError):
        A.epsilon_from_rdp(None, np.zeros(len(A.ORDERS)), 0.0)
