"""The exact samplers of secagg.dp.samplers, tested statistically.

Every statistical test draws from a fixed seed (``DeterministicRandom``), so
the outcome is reproducible; the thresholds are set for a false-alarm rate of
1e-4 per test (chi-square at the 1 - 1e-4 quantile, means and variances within
4.5 standard errors, two-sided about 7e-6), i.e. a *correct* sampler would fail
one of these checks with a fresh seed about once in 10^4 runs. Each
distribution is also tested against a *wrong* parameter with the same samples,
to show the test has the power to fail.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction

import numpy as np
import pytest

from secagg.dp import samplers as S
from secagg.errors import ParameterError
from secagg.primitives.randomness import DeterministicRandom

FALSE_ALARM = 1e-4
Z_ALARM = 3.719  # standard normal 1 - 1e-4 quantile
K_SE = 4.5  # standard errors allowed on a mean or a variance


def chi2_critical(df: int, z: float = Z_ALARM) -> float:
    """Upper ``1 - FALSE_ALARM`` quantile of chi-square(df), Wilson-Hilferty (accurate to <1% for df >= 3)."""
    return df * (1.0 - 2.0 / (9.0 * df) + z * math.sqrt(2.0 / (9.0 * df))) ** 3


def chi2_statistic(samples: np.ndarray, pmf: dict[int, float]) -> tuple[float, int]:
    """Pearson's statistic on bins of expected count >= 5 (tails pooled), and the degrees of freedom."""
    n = samples.size
    values, counts = np.unique(samples, return_counts=True)
    observed = dict(zip(values.tolist(), counts.tolist()))
    keys = sorted(pmf)
    bins: list[tuple[float, int]] = []
    exp_acc, obs_acc = 0.0, 0
    for k in keys:
        exp_acc += n * pmf[k]
        obs_acc += observed.get(k, 0)
        if exp_acc >= 5.0:
            bins.append((exp_acc, obs_acc))
            exp_acc, obs_acc = 0.0, 0
    # the remainder (and anything outside the pmf's support list) joins the last bin
    outside = n - sum(observed.get(k, 0) for k in keys)
    e_last, o_last = bins.pop()
    bins.append((e_last + exp_acc + n * max(0.0, 1.0 - sum(pmf.values())), o_last + obs_acc + outside))
    stat = sum((o - e) ** 2 / e for e, o in bins)
    return stat, len(bins) - 1


def dgauss_pmf(sigma2: float) -> dict[int, float]:
    r = int(12 * math.sqrt(sigma2)) + 12
    w = {x: math.exp(-x * x / (2 * sigma2)) for x in range(-r, r + 1)}
    z = sum(w.values())
    return {x: v / z for x, v in w.items()}


def poisson_pmf(lam: float) -> dict[int, float]:
    hi = int(lam + 14 * math.sqrt(lam) + 30)
    return {k: math.exp(k * math.log(lam) - lam - math.lgamma(k + 1)) for k in range(0, hi)}


def skellam_pmf(mu: float) -> dict[int, float]:
    p = poisson_pmf(mu / 2)
    keys = sorted(p)
    top = keys[-1]
    out = {}
    for k in range(-top, top + 1):
        out[k] = sum(p[j + k] * p[j] for j in keys if 0 <= j + k <= top)
    return out


def check_moments(x: np.ndarray, mean: float, var: float, fourth: float) -> None:
    n = x.size
    assert abs(x.mean() - mean) <= K_SE * math.sqrt(var / n), (x.mean(), mean)
    assert abs(x.var() - var) <= K_SE * math.sqrt((fourth - var * var) / n), (x.var(), var)


def dgauss_moments(sigma2: float) -> tuple[float, float]:
    pmf = dgauss_pmf(sigma2)
    return sum(x * x * p for x, p in pmf.items()), sum(x ** 4 * p for x, p in pmf.items())


# --------------------------------------------------------------------------- building blocks

def test_uniform_below_is_uniform_small_and_large_bounds():
    rng = DeterministicRandom("uniform")
    for m in (1, 2, 7, 1000, (1 << 62) - 1):
        x = S.uniform_below(rng, np.full(20000, m, dtype=np.int64))
        assert x.min() >= 0 and x.max() < m
    x = S.uniform_below(rng, np.full(70000, 7, dtype=np.int64))
    stat, df = chi2_statistic(x, {k: 1 / 7 for k in range(7)})
    assert stat < chi2_critical(df)
    big = np.empty(3000, dtype=object)
    big[:] = 3 << 100
    y = S.uniform_below(rng, big)
    assert all(0 <= v < 3 << 100 for v in y)
    top = sum(1 for v in y if v >= 2 << 100)  # P = 1/3
    assert abs(top - 1000) < K_SE * math.sqrt(3000 * (1 / 3) * (2 / 3))


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(1, 3), Fraction(1), Fraction(7, 2), Fraction(10**12 + 1, 10**12)])
def test_bernoulli_exp(gamma):
    n = 100_000
    x = S.bernoulli_exp(gamma, n, DeterministicRandom(f"bexp{gamma}"))
    p = math.exp(-gamma)
    assert abs(x.mean() - p) <= K_SE * math.sqrt(p * (1 - p) / n) + 1e-12
    if 0 < gamma:
        wrong = math.exp(-float(gamma) * 1.05)
        assert abs(x.mean() - wrong) > K_SE * math.sqrt(wrong * (1 - wrong) / n)


def test_bernoulli_rational_any_size():
    n = 100_000
    for p in (Fraction(1, 3), Fraction(3**80, 2**127 + 1)):
        x = S.bernoulli(p, n, DeterministicRandom(f"bern{p}"))
        pf = float(p)
        assert abs(x.mean() - pf) <= K_SE * math.sqrt(pf * (1 - pf) / n)


def test_lazy_uniform_decides_exactly_on_the_threshold():
    class Fixed:
        def __init__(self, data: bytes):
            self.data = data

        def bytes(self, n: int) -> bytes:
            out, self.data = self.data[:n], self.data[n:]
            return out

    # U starts with the 64 bits of 1/3 = 0.010101...; the next word decides
    word = (1 << 64) // 3
    assert S._LazyUniform(Fixed(b"\x00" * 8), word).less(Fraction(1, 3))  # 0x5555..5 0000.. < 1/3
    assert not S._LazyUniform(Fixed(b"\xff" * 8), word).less(Fraction(1, 3))  # 0x5555..5 ffff.. > 1/3


# --------------------------------------------------------------------------- distributions

@pytest.mark.parametrize("sigma2", [Fraction(1, 4), Fraction(1), Fraction(10), Fraction(1000, 3), Fraction(10**6)])
def test_discrete_gaussian_chi_square_and_moments(sigma2):
    n = 1 << 16
    x = S.discrete_gaussian(sigma2, n, DeterministicRandom(f"dg{sigma2}"))
    assert x.dtype == np.int64 and x.size == n
    s2 = float(sigma2)
    if s2 <= 1000:
        stat, df = chi2_statistic(x, dgauss_pmf(s2))
        assert stat < chi2_critical(df), (stat, df)
        # the same samples against sigma 10% too large fail
        stat_w, df_w = chi2_statistic(x, dgauss_pmf(s2 * 1.21))
        assert stat_w > chi2_critical(df_w), (stat_w, df_w)
    var, fourth = dgauss_moments(s2) if s2 <= 1000 else (s2, 3 * s2 * s2)
    check_moments(x, 0.0, var, fourth)


def test_discrete_gaussian_wrong_sigma_fails_the_moment_test():
    x = S.discrete_gaussian(Fraction(400), 1 << 16, DeterministicRandom("dg-wrong"))
    with pytest.raises(AssertionError):
        check_moments(x, 0.0, 440.0, 3 * 440.0 ** 2)


def test_discrete_gaussian_large_parameters_take_the_big_integer_path():
    sigma2 = Fraction(10**14 + 7, 3)  # intermediate products exceed 2^62
    x = S.discrete_gaussian(sigma2, 20000, DeterministicRandom("dg-big"))
    s2 = float(sigma2)
    check_moments(x, 0.0, s2, 3 * s2 * s2)


@pytest.mark.parametrize("lam", [Fraction(1, 3), Fraction(2), Fraction(7, 2), Fraction(100), Fraction(12345, 2)])
def test_poisson_chi_square_and_moments(lam):
    n = 1 << 16
    x = S.poisson(lam, n, DeterministicRandom(f"po{lam}"))
    lf = float(lam)
    stat, df = chi2_statistic(x, poisson_pmf(lf))
    assert stat < chi2_critical(df), (stat, df)
    stat_w, df_w = chi2_statistic(x, poisson_pmf(lf * (1.1 if lf > 10 else 1.3)))
    assert stat_w > chi2_critical(df_w)
    check_moments(x, lf, lf, lf * (1 + 3 * lf))


def test_poisson_large_mean_moments():
    lam = Fraction(10**6 + 1, 7)
    x = S.poisson(lam, 1 << 15, DeterministicRandom("po-large"))
    lf = float(lam)
    check_moments(x, lf, lf, lf * (1 + 3 * lf))


@pytest.mark.parametrize("mu", [Fraction(1, 2), Fraction(5), Fraction(300)])
def test_skellam_chi_square_and_moments(mu):
    n = 1 << 16
    x = S.skellam(mu, n, DeterministicRandom(f"sk{mu}"))
    m = float(mu)
    stat, df = chi2_statistic(x, skellam_pmf(m))
    assert stat < chi2_critical(df), (stat, df)
    stat_w, df_w = chi2_statistic(x, skellam_pmf(m * 1.2))
    assert stat_w > chi2_critical(df_w)
    check_moments(x, 0.0, m, 3 * m * m + m)  # kurtosis of Sk(mu): 3 mu^2 + mu


def test_samplers_are_deterministic_given_the_source():
    for draw in (lambda r: S.discrete_gaussian(Fraction(50), 1000, r), lambda r: S.skellam(Fraction(50), 1000, r)):
        assert np.array_equal(draw(DeterministicRandom("same")), draw(DeterministicRandom("same")))
        assert not np.array_equal(draw(DeterministicRandom("same")), draw(DeterministicRandom("other")))


def test_parameters_must_be_exact_and_valid():
    with pytest.raises(ParameterError):
        S.discrete_gaussian(2.5, 10)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        S.discrete_gaussian(0, 10)
    with pytest.raises(ParameterError):
        S.skellam(-1, 10)
    with pytest.raises(ParameterError):
        S.poisson(Fraction(1), -1)
    with pytest.raises(ParameterError):
        S.bernoulli(Fraction(3, 2), 1)
    assert S.discrete_gaussian("9/4", 3).size == 3
    assert S.skellam(1, 0).size == 0


def test_speed_of_2_16_draws():
    """d = 2^16 draws take well under the 'seconds' budget (timings printed with -s)."""
    n = 1 << 16
    for name, draw in (("discrete Gaussian sigma^2=1e6", lambda r: S.discrete_gaussian(10**6, n, r)),
                       ("Skellam mu=1e6", lambda r: S.skellam(10**6, n, r))):
        t = time.perf_counter()
        draw(DeterministicRandom("speed"))
        elapsed = time.perf_counter() - t
        print(f"{name}: {elapsed:.3f} s for 2^16 draws")
        assert elapsed < 20.0


class Scripted:
    """A RandomSource that returns the given 64-bit words (little-endian) first, then a seeded stream."""

    def __init__(self, words: list[int], then: str = "after-script"):
        self.data = b"".join(w.to_bytes(8, "little") for w in words)
        self.rest = DeterministicRandom(then)

    def bytes(self, n: int) -> bytes:
        head, self.data = self.data[:n], self.data[n:]
        return head + self.rest.bytes(n - len(head))


def test_poisson_threshold_ties_are_decided_exactly():
    """A first word inside a table's uncertainty interval is finished with exact arithmetic."""
    plan = S._poisson_plan(Fraction(2))
    theta = plan.theta
    word = int(plan.geo.lower[1])  # U is within 2^-60 of theta^1
    assert not word < int(plan.geo.lower[1]) and word < int(plan.geo.upper[1])
    for tail in (0, (1 << 64) - 1):
        g = S._exact_magnitude(Scripted([tail]), plan, word, 0)
        lo = Fraction(word * (1 << 64) + tail, 1 << 128)  # U lies in [lo, lo + 2^-128)
        hi = lo + Fraction(1, 1 << 128)
        assert theta ** (g + 1) <= lo and hi <= theta ** g  # G = max{g : U < theta^g} for all of them
    assert S._exact_magnitude(Scripted([0]), plan, word, 0) != S._exact_magnitude(Scripted([(1 << 64) - 1]), plan,
                                                                                word, 0)


def test_poisson_proposal_past_the_tables_is_handled():
    """U < 2^-64 for the proposal (beyond every table) and U' < 2^-64 for the acceptance:
    both decided exactly; the sampler still returns a valid draw."""
    plan = S._poisson_plan(Fraction(7, 2))
    x = S._poisson(Scripted([0, 0, 0]), Fraction(7, 2), 1)
    assert x.size == 1 and x[0] >= 0
    assert len(plan.geo) - 1 >= max(len(plan.accept_up), len(plan.accept_down))
