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
from decimal import Decimal, localcontext
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
    lam = Fraction(2)
    plan = S._poisson_plan(lam)
    engine = S._poisson_rejection(lam)
    theta = plan.theta
    word = int(engine.geo_lo[1])  # U's first 32 bits sit on theta^1's threshold: undecided
    assert word < int(engine.geo_hi[1])
    results = set()
    for tail in (0, (1 << 64) - 1):
        g = engine.magnitude(Scripted([tail]), word, 0)
        lo = Fraction((word << 64) + tail, 1 << 96)  # U lies in [lo, lo + 2^-96)
        hi = lo + Fraction(1, 1 << 96)
        assert theta ** (g + 1) <= lo and hi <= theta ** g  # G = max{g : U < theta^g} for all of them
        results.add(g)
    assert len(results) == 2  # the extra bits decided it, both ways


# --------------------------------------------------------------------------- tabulated rejection

def exp_decimal(num: int, den: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 120
        return (-Decimal(num) / Decimal(den)).exp()


@pytest.mark.parametrize("num,den", [(0, 1), (1, 1), (1, 3), (7, 2), (10**6 + 1, 10**6), (45, 1), (123457, 100),
                                     (1, 10**9), (10**9, 7), (3, 1 << 40)])
def test_exp_bounds_are_rigorous_and_tight(num, den):
    exact = exp_decimal(num, den)
    for prec in (31, 32, 64, 160, 300):
        lo, hi = S._exp_neg_bounds(num, den, prec)
        with localcontext() as ctx:
            ctx.prec = 200
            scaled = exact * (Decimal(2) ** prec)
        assert lo <= scaled <= hi, (num, den, prec)
        assert hi - lo <= 4


def test_exp_bounds_fail_for_a_wrong_value():
    """The bracket is tight enough to exclude a neighbouring argument."""
    lo, hi = S._exp_neg_bounds(1, 3, 64)
    with localcontext() as ctx:
        ctx.prec = 200
        assert lo <= exp_decimal(1, 3) * (Decimal(2) ** 64) <= hi
        assert not lo <= exp_decimal(1000001, 3000000) * (Decimal(2) ** 64) <= hi


@pytest.mark.parametrize("num,den,g", [(1, 2, 0), (1, 2, 1), (2, 3, 7), (2235, 2236, 5000), (10**9, 10**9 + 1, 12345),
                                       (3, 3, 9), (0, 5, 2)])
def test_power_bounds_are_rigorous_and_tight(num, den, g):
    exact = Fraction(num, den) ** g
    for prec in (31, 32, 64, 200):
        lo, hi = S._pow_bounds(num, den, g, prec)
        assert Fraction(lo, 1 << prec) <= exact <= Fraction(hi, 1 << prec), (num, den, g, prec)
        assert hi - lo <= 4
    if 0 < num < den and g:
        lo, hi = S._pow_bounds(num, den, g + 1, 64)  # the next power is outside the bracket
        assert not Fraction(lo, 1 << 64) <= exact <= Fraction(hi, 1 << 64) or exact < Fraction(1, 1 << 60)


def test_lazy_uniform_decides_exp_thresholds_exactly():
    """U's first 32 bits equal to exp(-1/3)'s: the next word decides, both ways, correctly."""
    target = exp_decimal(1, 3)
    word, _ = S._exp_neg_bounds(1, 3, 32)
    for tail in (0, (1 << 64) - 1):
        verdict = S._LazyUniform(Scripted([tail]), word, 32).less_exp(1, 3)
        u = Decimal((word << 64) + tail) / (Decimal(2) ** 96)
        assert verdict == (u < target)
    assert S._LazyUniform(Scripted([0]), word, 32).less_exp(1, 3) != \
        S._LazyUniform(Scripted([(1 << 64) - 1]), word, 32).less_exp(1, 3)


def _reference_dgauss(sigma2: Fraction, u: int, a: int) -> "int | None":
    """One attempt of CKS Algorithm 3 from U's 32 bits and (sign, U') in a, with Decimal
    thresholds (None: rejected, or undecided at this precision)."""
    num, den = sigma2.numerator, sigma2.denominator
    t = math.isqrt(num // den) + 1
    neg, wa = a >> 31, a & 0x7FFFFFFF
    with localcontext() as ctx:
        ctx.prec = 120
        # G = max{g : U < exp(-g/t)} = ceil(-t ln U) - 1, the same at both ends of U's interval
        ends = [int((-t * (Decimal(v) / 2 ** 32).ln()).to_integral_value(rounding="ROUND_CEILING")) - 1
                if v else 10**9 for v in (u + 1, u)]
    assert ends[0] == ends[1]  # decided (random words are never on a threshold)
    g = ends[0]
    if neg and g == 0:
        return None
    v = exp_decimal((den * t * g - num) ** 2, 2 * num * den * t * t)
    lo_a, hi_a = Decimal(wa) / 2 ** 31, Decimal(wa + 1) / 2 ** 31
    assert hi_a <= v or lo_a >= v
    return (-g if neg else g) if hi_a <= v else None


@pytest.mark.parametrize("sigma2", [Fraction(1, 4), Fraction(10), Fraction(10**4, 3)])
def test_dgauss_tables_match_a_direct_reference(sigma2, monkeypatch):
    """The vectorised sampler (guide table, refinement, acceptance tables) gives, attempt by
    attempt, what a direct high-precision evaluation of CKS Algorithm 3 gives."""
    k = 3000
    words = np.frombuffer(DeterministicRandom(f"ref{sigma2}").bytes(8 * k), dtype="<u4").astype(np.uint32)
    calls = []

    def scripted(rng, n):
        if not calls:
            calls.append(n)
            assert n == 2 * k
            return words.copy()
        return S.prg_ring(rng.bytes(32), "test", n, 32)

    monkeypatch.setattr(S, "_bulk_words", scripted)
    out = S.discrete_gaussian(sigma2, k, DeterministicRandom("rest"))
    expected = [_reference_dgauss(sigma2, int(words[i]), int(words[k + i])) for i in range(k)]
    accepted = [i for i, e in enumerate(expected) if e is not None]
    assert 0.3 * k < len(accepted) < k  # rejection happens, and many attempts pass
    assert all(out[i] == expected[i] for i in accepted)


def test_poisson_tables_match_a_direct_reference(monkeypatch):
    lam = Fraction(7, 2)
    plan = S._poisson_plan(lam)
    k = 3000
    words = np.frombuffer(DeterministicRandom("ref-po").bytes(8 * k), dtype="<u4").astype(np.uint32)
    calls = []

    def scripted(rng, n):
        if not calls:
            calls.append(n)
            return words.copy()
        return S.prg_ring(rng.bytes(32), "test", n, 32)

    monkeypatch.setattr(S, "_bulk_words", scripted)
    out = S.poisson(lam, k, DeterministicRandom("rest"))
    accepted = 0
    for i in range(k):
        u, a = int(words[i]), int(words[k + i])
        lo_u, hi_u = Fraction(u, 1 << 32), Fraction(u + 1, 1 << 32)
        g = 0
        while plan.theta ** (g + 1) > lo_u:
            assert plan.theta ** (g + 1) >= hi_u
            g += 1
        neg, wa = a >> 31, a & 0x7FFFFFFF
        if (neg and g == 0) or (neg and g > plan.m):
            continue
        v = plan.exact_accept(not neg, g)
        if Fraction(wa + 1, 1 << 31) <= v:
            accepted += 1
            assert out[i] == plan.m + (-g if neg else g)
        else:
            assert Fraction(wa, 1 << 31) >= v
    assert 0.3 * k < accepted < k


def test_tail_proposals_are_decided_exactly(monkeypatch):
    """U = 0 (the proposal beyond every table) with U' = 0 (below every acceptance bound):
    the magnitude and the acceptance are computed exactly, and the draw is valid."""
    state = {"first": True}

    def scripted(rng, n):
        if state["first"]:
            state["first"] = False
            return np.zeros(n, dtype=np.uint32)
        return S.prg_ring(rng.bytes(32), "test", n, 32)

    for draw in (lambda r: S.discrete_gaussian(Fraction(10), 4, r), lambda r: S.poisson(Fraction(7, 2), 4, r)):
        state["first"] = True
        monkeypatch.setattr(S, "_bulk_words", scripted)
        x = draw(DeterministicRandom("tail"))
        assert x.size == 4
    assert S._dgauss_rejection(Fraction(10)).last >= S._dgauss_rejection(Fraction(10)).size


def test_guide_table_agrees_with_a_search():
    """Every clean guide bucket's magnitude is the count of thresholds above the bucket,
    for the smallest and the largest U of the bucket."""
    for engine in (S._dgauss_rejection(Fraction(10**4, 3)), S._poisson_rejection(Fraction(12345, 2))):
        lows = engine.geo_lo[1:engine.last + 1].astype(np.int64)
        width = 1 << (32 - S._GUIDE_BITS)
        clean = np.nonzero(engine.guide >= 0)[0]
        assert clean.size > 0.9 * engine.guide.size
        for edge in (0, width - 1):
            us = clean.astype(np.int64) * width + edge
            counts = (lows[None, :] > us[:, None]).sum(axis=1) if lows.size < 64 else \
                lows.size - np.searchsorted(lows[::-1], us, side="right")
            assert np.array_equal(counts, engine.guide[clean])


# --------------------------------------------------------------------------- extreme parameters

@pytest.mark.parametrize("sigma2", [Fraction(1, 10), Fraction(1, 100), Fraction(1, 10**6)])
def test_discrete_gaussian_tiny_variance(sigma2):
    x = S.discrete_gaussian(sigma2, 1 << 16, DeterministicRandom(f"tiny{sigma2}"))
    w1 = 2 * math.exp(-1 / (2 * float(sigma2)))
    p1 = w1 / (1 + w1)  # P(|X| = 1); |X| >= 2 has probability below 1e-8 here
    assert np.all(np.abs(x) <= 1)
    assert abs(np.count_nonzero(x) / x.size - p1) <= K_SE * math.sqrt(max(p1, 1e-12) / x.size) + 1e-12
    if sigma2 == Fraction(1, 10):  # the same count rejects a variance 10% off
        w_wrong = 2 * math.exp(-1 / (2 * 0.11))
        assert abs(np.count_nonzero(x) / x.size - w_wrong / (1 + w_wrong)) > K_SE * math.sqrt(p1 / x.size)


def test_discrete_gaussian_largest_table_and_fallback():
    """sigma^2 just inside the tables (t = 2^15 + 1) and just beyond (the CKS fallback): moments."""
    inside = Fraction(1 << 30)
    beyond = Fraction(((1 << 15) + 1) ** 2)
    assert math.isqrt(int(inside)) + 1 <= S.TABLE_MAX_SCALE < math.isqrt(int(beyond)) + 1
    for s2, n in ((inside, 1 << 16), (beyond, 1 << 13)):
        x = S.discrete_gaussian(s2, n, DeterministicRandom(f"edge{s2}"))
        check_moments(x, 0.0, float(s2), 3 * float(s2) ** 2)


def test_skellam_tiny_and_huge_variance():
    x = S.skellam(Fraction(1, 1000), 1 << 16, DeterministicRandom("sk-tiny"))
    p = 1 - math.exp(-1 / 1000) * (1 + 1 / 4e6)  # P(X != 0) = 1 - e^-mu I_0(mu)
    assert abs(np.count_nonzero(x) / x.size - p) <= K_SE * math.sqrt(p / x.size)
    mu = Fraction(10**8)
    y = S.skellam(mu, 1 << 14, DeterministicRandom("sk-huge"))
    check_moments(y, 0.0, float(mu), 3 * float(mu) ** 2 + float(mu))
