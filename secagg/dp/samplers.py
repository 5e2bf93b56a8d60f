"""Exact samplers of discrete noise: Bernoulli(exp(-gamma)), the discrete
Laplace, the discrete Gaussian, Poisson and the (symmetric) Skellam
distribution (protocols/dp/SPEC.md "Samplers").

Every sampler is *exact*: its output distribution is the stated one, with no
floating point anywhere in the sampling path. Parameters are rationals
(``int`` or :class:`fractions.Fraction`; floats are refused, since their
binary value is rarely the intended one), arithmetic is on Python or numpy
integers, and the only source of randomness is an injected
:class:`~secagg.primitives.randomness.RandomSource`: uniform integers in
``[0, m)`` are drawn by rejection from random bytes (masked to the bit length of
``m - 1``, redrawn when ``>= m``), so there is no modulo bias.

Algorithms:

* ``Bernoulli(exp(-gamma))``, ``Bernoulli(p)`` for rational ``p``, the discrete
  Laplace and the discrete Gaussian follow Canonne, Kamath and Steinke, "The
  Discrete Gaussian for Differential Privacy" (NeurIPS 2020), Algorithms 1-3:
  the discrete Gaussian of variance parameter ``sigma^2`` is a discrete Laplace
  of scale ``t = floor(sigma) + 1`` accepted with probability
  ``exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2))``.
* The discrete Gaussian (up to ``sigma^2`` about ``2^30``) and Poisson run on
  one vectorised rejection scheme over rigorous tables (:class:`_Rejection`,
  SPEC §4.1): a magnitude drawn by inversion through a guide table and a sign,
  accepted by comparing a uniform against a tabulated acceptance probability;
  one pair of 32-bit words decides an attempt unless it falls on a threshold
  (probability about 2^-32 per comparison), which is then decided exactly with
  more random bits (:class:`_LazyUniform`, with rigorous bounds of ``exp`` from
  :func:`_exp_neg_bounds` or exact :class:`~fractions.Fraction` arithmetic).
  The bulk words are an AES-256-CTR keystream under a fresh key drawn from the
  ``RandomSource`` per batch.
* Poisson(lambda) for rational ``lambda`` is our own exact rejection sampler:
  a two-sided geometric proposal ``q(j) ~ theta^|j|`` around the mode
  ``m = floor(lambda)`` (``theta = 1 - 1/T``, ``T = isqrt(m) + 2``), accepted
  with probability ``v(j) = P(m+j) / (P(m) theta^|j| C)``. ``P(m+j)/P(m)`` is a
  product of ``|j|`` rationals (``lambda/(m+i)`` above the mode,
  ``(m-i+1)/lambda`` below) that decrease in ``i``, so ``P(m+j)/(P(m)
  theta^|j|)`` peaks where the factor over ``theta`` falls below 1, and ``C`` is
  a rational just above that peak: every ``v(j)`` is a rational in [0, 1].
  Its tables (:class:`_PoissonPlan`, 128-bit bounds, ``O(sqrt(lambda))``
  entries, cached; about 0.1 s at ``lambda = 10^6``, 5 s at ``10^9``) run
  until ``v < 2^-64``.
* Skellam with variance ``mu`` is ``Poisson(mu/2) - Poisson(mu/2)`` (the
  symmetric Skellam of Agarwal, Kairouz and Liu, NeurIPS 2021).

Every sampler draws a whole vector at once: each loop of the algorithms runs
over the samples still pending, as numpy integer arrays (``int64`` while every
intermediate value provably stays below ``2^62``, Python integers in an object
array beyond), so ``2^16`` draws take a fraction of a second.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Callable, Iterator, Union

import numpy as np

from ..errors import ParameterError
from ..primitives.prg import prg_ring
from ..primitives.randomness import RandomSource, default_random

__all__ = [
    "Rational",
    "as_rational",
    "uniform_below",
    "bernoulli",
    "bernoulli_exp",
    "discrete_laplace",
    "discrete_gaussian",
    "poisson",
    "skellam",
]

Rational = Union[int, Fraction]

_SAFE = 1 << 62  # int64 arithmetic below this bound cannot overflow in one + or *
_MAX_SIZE = 1 << 31


def as_rational(x: object, what: str = "parameter") -> Fraction:
    """``x`` as an exact :class:`Fraction`: ints, Fractions and strings such as
    ``"3/2"`` are accepted; floats (and bools) are refused."""
    if isinstance(x, bool) or isinstance(x, float):
        raise ParameterError(f"{what} must be an int or a Fraction (exact), got {x!r}")
    if isinstance(x, (int, Fraction)):
        return Fraction(x)
    if isinstance(x, str):
        try:
            return Fraction(x)
        except (ValueError, ZeroDivisionError) as exc:
            raise ParameterError(f"{what}: {x!r} is not a rational number") from exc
    if isinstance(x, np.integer):
        return Fraction(int(x))
    raise ParameterError(f"{what} must be an int or a Fraction, got {type(x).__name__}")


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 0 <= int(size) <= _MAX_SIZE:
        raise ParameterError(f"size must be an integer in [0, 2^31], got {size!r}")
    return int(size)


def _fits(*bounds: int) -> bool:
    return all(abs(b) < _SAFE for b in bounds)


def _ints(values: np.ndarray, big: bool) -> np.ndarray:
    """An integer array: object dtype (Python ints) when ``big``, else int64."""
    if big:
        out = np.empty(np.shape(values), dtype=object)
        out[...] = [int(v) for v in np.asarray(values).ravel()] if np.size(values) else []
        return out
    return np.asarray(values, dtype=np.int64)


def _const(n: int, value: int, big: bool) -> np.ndarray:
    """``n`` copies of ``value``: int64, or Python ints in an object array when ``big``."""
    return _ints(np.zeros(n, dtype=np.int64), big) + value


def _full(n: int, value: int) -> np.ndarray:
    if _fits(value):
        return np.full(n, value, dtype=np.int64)
    out = np.empty(n, dtype=object)
    out[:] = value
    return out


# --------------------------------------------------------------------------- uniform integers

def _uniform_below_int(rng: RandomSource, m: int) -> int:
    """One uniform integer in ``[0, m)``: rejection from ``bitlen(m-1)`` random bits."""
    if m <= 1:
        return 0
    k = (m - 1).bit_length()
    nbytes, mask = (k + 7) // 8, (1 << k) - 1
    while True:
        v = int.from_bytes(rng.bytes(nbytes), "little") & mask
        if v < m:
            return v


def uniform_below(rng: RandomSource, m: np.ndarray) -> np.ndarray:
    """Per element, a uniform integer in ``[0, m[i])`` (every ``m[i] >= 1``).

    ``int64`` bounds (below ``2^62``) are served 64 random bits at a time (32 when
    one bound below ``2^32`` serves every element),
    masked to the bit length of ``m[i] - 1`` and redrawn when ``>= m[i]`` (each
    draw is accepted with probability above 1/2); larger bounds, in an object
    array, one Python integer at a time."""
    m = np.asarray(m)
    if m.dtype == object:
        out = np.empty(m.shape, dtype=object)
        flat_in, flat_out = m.ravel(), out.ravel()
        for i in range(flat_in.size):
            flat_out[i] = _uniform_below_int(rng, int(flat_in[i]))
        return out
    if m.size and int(m.min()) < 1:
        raise ParameterError("uniform_below needs bounds >= 1")
    if m.size and int(m.min()) == int(m.max()):  # one bound for all: scalar mask and comparison
        top = int(m.flat[0])
        small = top < 1 << 32  # 32-bit words suffice
        kind, size = (np.uint32, 4) if small else (np.uint64, 8)
        mask1 = kind((1 << (top - 1).bit_length()) - 1)
        bound1 = top if small else np.uint64(top)
        flat = np.empty(m.size, dtype=kind)
        todo = np.arange(m.size)
        while todo.size:
            words = np.frombuffer(rng.bytes(size * todo.size), dtype=f"<u{size}").astype(kind) & mask1
            ok = words < bound1
            flat[todo[ok]] = words[ok]
            todo = todo[~ok]
        return flat.astype(np.int64).reshape(m.shape)
    bound = m.astype(np.uint64).ravel()
    mask = bound - np.uint64(1)
    for shift in (1, 2, 4, 8, 16, 32):
        mask |= mask >> np.uint64(shift)
    out64 = np.empty(bound.size, dtype=np.uint64)
    todo = np.arange(bound.size)
    while todo.size:
        words = np.frombuffer(rng.bytes(8 * todo.size), dtype="<u8").astype(np.uint64) & mask[todo]
        ok = words < bound[todo]
        out64[todo[ok]] = words[ok]
        todo = todo[~ok]
    return out64.astype(np.int64).reshape(m.shape)


# --------------------------------------------------------------------------- Bernoulli trials

def _bern_ratio(rng: RandomSource, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Per element, Bernoulli(num[i] / den[i]) for integers ``0 <= num <= den``."""
    if num.size == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(uniform_below(rng, den) < num, dtype=bool)


def _bern_fraction(rng: RandomSource, p: Fraction, n: int) -> np.ndarray:
    """``n`` Bernoulli(p) trials for a rational ``p`` of any size: a uniform real
    ``U`` in [0, 1) is compared with ``p`` one 64-bit word at a time (``U < p``
    is decided by the first word unless it equals the first 64 bits of ``p``)."""
    if p <= 0:
        return np.zeros(n, dtype=bool)
    if p >= 1:
        return np.ones(n, dtype=bool)
    scaled = p.numerator << 64
    head, rest = divmod(scaled, p.denominator)  # p * 2^64 = head + rest/den
    words = np.frombuffer(rng.bytes(8 * n), dtype="<u8").astype(np.uint64)
    out = words < np.uint64(head)
    for i in np.nonzero(words == np.uint64(head))[0]:  # probability 2^-64 each
        out[i] = bool(_bern_fraction(rng, Fraction(rest, p.denominator), 1)[0]) if rest else False
    return np.asarray(out, dtype=bool)


def bernoulli(p: Rational, size: int, rng: RandomSource | None = None) -> np.ndarray:
    """``size`` independent Bernoulli(p) trials (bool array), ``p`` rational in [0, 1]."""
    q = as_rational(p, "p")
    if not 0 <= q <= 1:
        raise ParameterError(f"p must be in [0, 1], got {q}")
    return _bern_fraction(default_random(rng), q, _check_size(size))


def _bern_exp_unit(rng: RandomSource, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Bernoulli(exp(-num/den)) with ``0 <= num/den <= 1`` (CKS Algorithm 1):
    count ``K`` up while Bernoulli(gamma/K) succeeds; the answer is ``K`` odd."""
    n = num.size
    k = np.ones(n, dtype=np.int64)
    active = np.arange(n)
    while active.size:
        d = den[active]
        kk = k[active]
        if d.dtype != object and not _fits(int(d.max()) * int(kk.max())):
            d = _ints(d, True)
        hit = _bern_ratio(rng, num[active], d * kk)
        k[active[hit]] += 1
        active = active[hit]
    return (k % 2) == 1


def _bern_exp(rng: RandomSource, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Per element, Bernoulli(exp(-num[i]/den[i])) for integers ``num >= 0, den >= 1``:
    ``floor(gamma)`` Bernoulli(exp(-1)) trials must all succeed, then one
    Bernoulli(exp(-frac(gamma))) (CKS Algorithm 1, general case)."""
    n = num.size
    result = np.ones(n, dtype=bool)
    whole = num // den
    frac = num - whole * den
    alive = np.nonzero(whole > 0)[0]
    left = whole[alive]
    while alive.size:
        ok = _bern_exp_unit(rng, np.ones(alive.size, dtype=np.int64), np.ones(alive.size, dtype=np.int64))
        result[alive[~ok]] = False
        left = left - 1
        keep = ok & np.asarray(left > 0, dtype=bool)
        alive, left = alive[keep], left[keep]
    idx = np.nonzero(result)[0]
    if idx.size:
        result[idx] = _bern_exp_unit(rng, frac[idx], den[idx])
    return result


def bernoulli_exp(gamma: Rational, size: int, rng: RandomSource | None = None) -> np.ndarray:
    """``size`` independent Bernoulli(exp(-gamma)) trials, ``gamma >= 0`` rational."""
    g = as_rational(gamma, "gamma")
    if g < 0:
        raise ParameterError(f"gamma must be >= 0, got {g}")
    n = _check_size(size)
    return _bern_exp(default_random(rng), _full(n, g.numerator), _full(n, g.denominator))


# --------------------------------------------------------------------------- discrete Laplace / Gaussian

def _geometric_exp1(rng: RandomSource, n: int) -> np.ndarray:
    """``n`` counts of Bernoulli(exp(-1)) successes before the first failure."""
    v = np.zeros(n, dtype=np.int64)
    alive = np.arange(n)
    while alive.size:
        one = np.ones(alive.size, dtype=np.int64)
        hit = _bern_exp_unit(rng, one, one)
        v[alive[hit]] += 1
        alive = alive[hit]
    return v


def _discrete_laplace(rng: RandomSource, t: int, n: int) -> np.ndarray:
    """CKS Algorithm 2 with ``s = 1``: ``P(Z = z) ~ exp(-|z|/t)``, integer ``t >= 1``."""
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        m = todo.size
        u = uniform_below(rng, _full(m, t))
        keep = _bern_exp(rng, u, _full(m, t))  # accept U with probability exp(-U/t)
        u = u[keep]
        pending = todo[keep]
        x = u + t * _geometric_exp1(rng, u.size)
        neg = _bern_ratio(rng, np.ones(u.size, dtype=np.int64), np.full(u.size, 2, dtype=np.int64))
        ok = ~(neg & (x == 0))  # -0 would double the weight of 0
        out[pending[ok]] = np.where(neg, -x, x)[ok]
        done = np.zeros(m, dtype=bool)
        done[np.nonzero(keep)[0][ok]] = True
        todo = todo[~done]
    return out


def discrete_laplace(t: int, size: int, rng: RandomSource | None = None) -> np.ndarray:
    """``size`` draws with ``P(Z = z) ∝ exp(-|z| / t)`` for an integer scale ``t >= 1``."""
    if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or t < 1:
        raise ParameterError(f"the discrete Laplace scale must be an integer >= 1, got {t!r}")
    return _discrete_laplace(default_random(rng), int(t), _check_size(size))


def discrete_gaussian(sigma2: Rational, size: int, rng: RandomSource | None = None) -> np.ndarray:
    """``size`` draws of the discrete Gaussian ``N_Z(0, sigma2)``:
    ``P(X = x) ∝ exp(-x^2 / (2 sigma2))`` over the integers (CKS Algorithm 3).

    ``sigma2`` (the variance *parameter*; the variance itself is slightly below
    it) is a positive rational. Returns an int64 array. While the Laplace
    scale ``t = floor(sigma) + 1`` is at most :data:`TABLE_MAX_SCALE`
    (``sigma2`` below ``(2^15 + 1)^2``, just over ``2^30``) the tabulated sampler runs
    (:func:`_dgauss_rejection`); beyond, the same algorithm with every
    Bernoulli trial drawn on whole arrays (:func:`_discrete_gaussian_cks`)."""
    s2 = as_rational(sigma2, "sigma2")
    if not 0 < s2 < _SAFE >> 8:
        raise ParameterError(f"sigma2 must be in (0, 2^54), got {s2}")
    n = _check_size(size)
    r = default_random(rng)
    if math.isqrt(s2.numerator // s2.denominator) + 1 <= TABLE_MAX_SCALE:
        return _dgauss_rejection(s2).sample(r, n)
    return _discrete_gaussian_cks(r, s2, n)


def _discrete_gaussian_cks(r: RandomSource, s2: Fraction, n: int) -> np.ndarray:
    """CKS Algorithm 3 with every Bernoulli trial drawn by :func:`_bern_exp`
    (any ``sigma2``; slower than the tables)."""
    a, b = s2.numerator, s2.denominator
    t = math.isqrt(a // b) + 1  # floor(sigma) + 1
    den = 2 * a * b * t * t
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        y = _discrete_laplace(r, t, todo.size)
        ay = np.abs(y)
        # accept with probability exp(-(|y| - sigma2/t)^2 / (2 sigma2)) = exp(-(b t |y| - a)^2 / (2 a b t^2)),
        # in int64 where (b t |y| - a)^2 and the denominator stay below 2^62, in Python integers elsewhere
        y_safe = (math.isqrt(_SAFE - 1) + a) // (b * t) if _fits(den) and math.isqrt(_SAFE - 1) >= a else -1
        accept = np.zeros(y.size, dtype=bool)
        for big, part in ((False, np.nonzero(ay <= y_safe)[0]), (True, np.nonzero(ay > y_safe)[0])):
            if part.size:
                num_base = _ints(ay[part], big) * (b * t) - a
                accept[part] = _bern_exp(r, num_base * num_base, _const(part.size, den, big))
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out


# --------------------------------------------------------------------------- Poisson / Skellam

_F = 128  # fractional bits of the interval tables
_WORD = 1 << 64


class _LazyUniform:
    """A uniform real in [0, 1) whose binary digits are drawn on demand, starting
    from a 64-bit word already drawn: ``less(x)`` compares it with a rational
    ``x`` exactly, drawing 64 more bits while the comparison is undecided."""

    def __init__(self, rng: RandomSource, word: int, bits: int = 64):
        self.rng, self.prefix, self.bits = rng, int(word), bits

    def _extend(self) -> None:
        self.prefix = (self.prefix << 64) | int.from_bytes(self.rng.bytes(8), "little")
        self.bits += 64

    def less(self, x: Fraction) -> bool:
        while True:
            if (self.prefix + 1) * x.denominator <= x.numerator << self.bits:
                return True
            if self.prefix * x.denominator >= x.numerator << self.bits:
                return False
            self._extend()

    def less_bounds(self, bounds: "Callable[[int], tuple[int, int]]") -> bool:
        """``U < x`` for an ``x`` given by ``bounds(p) = (lo, hi)``, integers with
        ``lo <= 2^p x <= hi`` and ``hi - lo`` bounded as ``p`` grows: decided
        at the precision of the bits drawn, drawing more while undecided."""
        while True:
            lo, hi = bounds(self.bits)
            if self.prefix + 1 <= lo:
                return True
            if self.prefix >= hi:
                return False
            self._extend()

    def less_exp(self, num: int, den: int) -> bool:
        """``U < exp(-num/den)`` (``num >= 0``, ``den >= 1``), exactly."""
        return self.less_bounds(lambda p: _exp_neg_bounds(num, den, p))

    def less_pow(self, num: int, den: int, g: int) -> bool:
        """``U < (num/den)^g`` (``0 <= num <= den``, ``g >= 0``), exactly, without
        forming the power's huge numerator and denominator."""
        return self.less_bounds(lambda p: _pow_bounds(num, den, g, p))


class _Table:
    """Rigorous 64-bit thresholds for a sequence of rationals in [0, 1],
    ``v_0 = start``, ``v_l = v_{l-1} * num_l / den_l``: a uniform real ``U`` whose
    first 64 bits are the word ``u`` has ``U < v_l`` surely when ``u < lower[l]``
    and ``U >= v_l`` surely when ``u >= upper[l]`` (where ``sure_upper[l]``); the
    gap between them (about 2^-60 wide) is left to an exact comparison.

    ``factor(l)`` gives ``(num_l, den_l)``; the table grows until ``stop(l, upper_l)``."""

    def __init__(self, start: Fraction, factor: "Callable[[int], tuple[int, int]]",
                 stop: "Callable[[int, int], bool]"):
        shift = _F - 64
        lo = (start.numerator << _F) // start.denominator
        hi = -((-(start.numerator << _F)) // start.denominator)
        lows, uppers = [], []
        l = 0
        while True:
            lows.append(min(lo >> shift, _WORD - 1))
            up = -((-hi) >> shift)
            uppers.append(up)
            if stop(l, up):
                break
            l += 1
            num, den = factor(l)
            lo = lo * num // den
            hi = -((-hi * num) // den)
        self.lower = np.array(lows, dtype=np.uint64)
        self.sure_upper = np.array([x < _WORD for x in uppers], dtype=bool)
        self.upper = np.array([min(x, _WORD - 1) for x in uppers], dtype=np.uint64)

    def __len__(self) -> int:
        return int(self.lower.size)


def _product_upper(factors: "Iterator[tuple[int, int]]") -> int:
    """An upper bound of ``prod num/den`` in fixed point with ``_F`` fractional bits."""
    hi = 1 << _F
    for num, den in factors:
        hi = -((-hi * num) // den)
    return hi


class _PoissonPlan:
    """The constants and tables of the Poisson(lambda) sampler for one ``lambda = a/b``."""

    def __init__(self, lam: Fraction):
        a, b = lam.numerator, lam.denominator
        self.lam = lam
        self.m = m = a // b
        self.T = T = math.isqrt(m) + 2
        self.theta = Fraction(T - 1, T)
        # envelope factors f_i on each side (decreasing in i): above the mode
        # f_i = lambda/(m+i) / theta, below it f_i = ((m-i+1)/lambda) / theta
        self.up_factor = lambda i: (a * T, b * (m + i) * (T - 1))
        self.down_factor = lambda i: ((m - i + 1) * b * T, a * (T - 1))
        j_up = 0
        while a * T >= b * (m + j_up + 1) * (T - 1):
            j_up += 1
        j_down = 0
        while j_down < m and (m - j_down) * b * T >= a * (T - 1):
            j_down += 1
        # C >= max_l prod_{i<=l} f_i on both sides (the peaks are at J): a rational upper bound
        # of the larger peak, so that every acceptance probability v(l) = prod f_i / C is <= 1
        peak = max(_product_upper(self.up_factor(i) for i in range(1, j_up + 1)),
                   _product_upper(self.down_factor(i) for i in range(1, j_down + 1)))
        self.c = Fraction(peak, 1 << _F)
        # acceptance tables v(l), l = 0, 1, ...: past the peak v decreases, so they stop once
        # v(l) < 2^-64 surely (upper <= 1); every later l is then rejected unless U < 2^-64
        self.accept_up = _Table(1 / self.c, self.up_factor, lambda l, up: l >= j_up and up <= 1)
        self.accept_down = _Table(1 / self.c, self.down_factor,
                                  lambda l, up: l >= m or (l >= j_down and up <= 1))
        # P(G >= g) = theta^g for the proposal's magnitude, g = 0 .. G-1 with G - 1 past both
        # acceptance tables (a larger magnitude is rejected anyway, unless U' < 2^-64)
        reach = max(len(self.accept_up), len(self.accept_down))
        self.geo = _Table(Fraction(1), lambda g: (T - 1, T), lambda g, up: g >= reach)

    def exact_accept(self, up: bool, l: int) -> Fraction:
        if not up and l > self.m:
            return Fraction(0)
        f = self.up_factor if up else self.down_factor
        num = math.prod(f(i)[0] for i in range(1, l + 1))
        den = math.prod(f(i)[1] for i in range(1, l + 1))
        return Fraction(num, den) / self.c


def _words(rng: RandomSource, n: int) -> np.ndarray:
    return np.frombuffer(rng.bytes(8 * n), dtype="<u8").astype(np.uint64)


@functools.lru_cache(maxsize=16)
def _poisson_plan(lam: Fraction) -> _PoissonPlan:
    return _PoissonPlan(lam)


# --------------------------------------------------------------------------- tabulated rejection (fast path)

#: The discrete Gaussian's tables are used up to this Laplace scale ``t = floor(sigma) + 1``
#: (about 7.7 t entries, built once per sigma^2 and cached); beyond, the CKS Bernoulli trials.
TABLE_MAX_SCALE = (1 << 15) + 1
_PRG_TAG = "secagg/v1/dp/sampler-words"
_FX = 160  # fractional bits of the fixed-point bounds the tables are built from
_U_BITS = 32  # the proposal's uniform U: the high 32 bits of an attempt's word
_A_BITS = 31  # the acceptance uniform U': the low 31 bits; bit 31 is the sign
_GUIDE_BITS = 20


def _bulk_words(rng: RandomSource, n: int) -> np.ndarray:
    """``n`` uniform 32-bit words: the AES-256-CTR keystream
    (:func:`~secagg.primitives.prg.prg_ring`) under a fresh 32-byte key drawn from ``rng``."""
    return prg_ring(rng.bytes(32), _PRG_TAG, n, 32)


def _exp_neg_bounds(num: int, den: int, prec: int) -> tuple[int, int]:
    """``(lo, hi)``, integers with ``lo <= 2^prec exp(-num/den) <= hi`` and
    ``hi - lo`` a few units (``num >= 0``, ``den >= 1``): the alternating Taylor
    series of ``exp(-x)`` at ``x = num/(den 2^s) <= 1/2`` brackets the value,
    then ``s`` squarings with directed rounding give ``exp(-num/den)``."""
    if num == 0:
        return 1 << prec, 1 << prec
    if num > den * (prec + 1):  # exp(-r) < 2^-(prec+1)
        return 0, 1
    s = (-(-num // den)).bit_length() + 1  # ceil(r) < 2^(s-1): x = r / 2^s < 1/2
    w = prec + s + 16
    xden = den << s
    eps = Fraction(1, 1 << (w + 2))
    total, term, k = Fraction(0), Fraction(1), 0
    while True:
        total += term if k % 2 == 0 else -term
        k += 1
        term = term * num / (xden * k)
        if term < eps:
            break
    # the next term has sign (-1)^k, and exp(-x) lies between total and total + that term
    low, high = (total, total + term) if k % 2 == 0 else (total - term, total)
    lo = (low.numerator << w) // low.denominator
    hi = -((-(high.numerator << w)) // high.denominator)
    for _ in range(s):
        lo = (lo * lo) >> w
        hi = -((-(hi * hi)) >> w)
    return lo >> (w - prec), -((-hi) >> (w - prec))


def _pow_bounds(num: int, den: int, g: int, prec: int) -> tuple[int, int]:
    """``(lo, hi)``, integers with ``lo <= 2^prec (num/den)^g <= hi`` and ``hi - lo``
    a few units (``0 <= num <= den``): binary powering in fixed point with
    ``2 bitlen(g) + 16`` guard bits, rounding the lower bound down and the upper up."""
    if g == 0 or num == den:
        return 1 << prec, 1 << prec
    w = prec + 2 * g.bit_length() + 16
    base_lo, base_hi = (num << w) // den, -((-(num << w)) // den)
    lo = hi = 1 << w
    e = g
    while e:
        if e & 1:
            lo, hi = (lo * base_lo) >> w, -((-(hi * base_hi)) >> w)
        e >>= 1
        if e:
            base_lo, base_hi = (base_lo * base_lo) >> w, -((-(base_hi * base_hi)) >> w)
    return lo >> (w - prec), -((-hi) >> (w - prec))


def _rescale(lo: int, hi: int, frac: int, bits: int) -> tuple[int, int]:
    """Bounds with ``frac`` fractional bits to ``bits``: floor of the lower, ceiling of the upper."""
    return lo >> (frac - bits), -((-hi) >> (frac - bits))


class _Thresholds:
    """Rigorous ``bits``-bit thresholds of a sequence ``v_0, v_1, ...`` in [0, 1]:
    a uniform real ``U`` whose first ``bits`` bits are ``w`` has ``U < v_l`` when
    ``w < lo[l]`` and ``U >= v_l`` when ``w >= hi[l]`` (``hi[l] - lo[l]`` is 1 or 2)."""

    def __init__(self, lows: "list[int]", highs: "list[int]"):
        self.lo = np.array(lows, dtype=np.uint64)
        self.hi = np.array(highs, dtype=np.uint64)
        self.tail = self.hi[-1]

    def __len__(self) -> int:
        return int(self.lo.size)


class _Rejection:
    """Exact rejection sampling, vectorised, for the discrete Gaussian and Poisson
    (SPEC §4 "tabulated rejection"). Proposal: ``offset + S G`` with a magnitude
    ``G``, ``P(G >= g) = x_g`` (``x_0 = 1``, decreasing), drawn by inversion
    ``G = max{g : U < x_g}``, and a uniform sign ``S`` (``-0`` rejected; ``G >
    neg_max`` with ``S = -1`` rejected). Acceptance: ``U' < v_S(G)``.

    Two 32-bit words per attempt: ``U``'s first 32 bits, and the sign with
    ``U'``'s first 31 bits. A guide table over the top :data:`_GUIDE_BITS` bits
    of ``U`` gives ``G`` at once when no threshold's bounds fall inside the
    bucket ("clean", all but a few percent of the probability); otherwise a few
    vectorised steps locate ``U`` among the thresholds. Whatever one word
    cannot decide (it falls between a threshold's bounds, probability about
    2^-31 per comparison) is finished exactly by ``geo_exact(lazy, g)`` (``U <
    x_g``?) and ``acc_exact(lazy, negative, l)`` (``U' < v(l)``?) on
    :class:`_LazyUniform` with more random bits. The acceptance tables run
    past the peak of ``v`` (``v`` decreases after it) until ``v < 2^-32``;
    ``x`` is tabulated one entry further, so a magnitude past the tables has
    ``v`` below the last entry's upper bound: rejected unless ``U'`` is below
    it too (then its magnitude and acceptance are computed exactly)."""

    def __init__(self, geo: _Thresholds, pos: _Thresholds, neg: _Thresholds, neg_max: "int | None", offset: int,
                 geo_exact: "Callable[[_LazyUniform, int], bool]",
                 acc_exact: "Callable[[_LazyUniform, bool, int], bool]"):
        self.last = last = len(geo) - 1
        if last < max(len(pos), len(neg)) or last < 1:
            raise AssertionError("the proposal table must reach past the acceptance tables")
        self.geo_lo = np.append(geo.lo, np.uint64(0))  # sentinel: U < x_{last+1} is never sure
        self.geo_hi = np.append(geo.hi, np.uint64(0))
        self.neg_max, self.offset = neg_max, offset
        self.geo_exact, self.acc_exact = geo_exact, acc_exact
        # one table of 2 * size entries, [v_+(0..size-1), v_-(0..size-1)], indexed by
        # min(G, size - 1) + size * [S = -1]: v_-(0) is set to 0 (no -0), a zero entry follows
        # v_-(neg_max) (nothing below zero), and each side is padded with its last entry (past the
        # peak: lower bound 0, and an upper bound of every later v), so that one lookup decides
        neg_lo, neg_hi = neg.lo.copy(), neg.hi.copy()
        neg_lo[0] = neg_hi[0] = 0
        if neg_max is not None and len(neg) == neg_max + 1:
            neg_lo, neg_hi = np.append(neg_lo, np.uint64(0)), np.append(neg_hi, np.uint64(0))
        self.size = size = max(len(pos), neg_lo.size)
        if size > last + 1:
            raise AssertionError("the proposal table must reach past the acceptance tables")

        def pad(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, np.full(size - a.size, a[-1], dtype=np.uint64)])

        self.acc_lo = np.concatenate([pad(pos.lo), pad(neg_lo)]).astype(np.uint32)
        self.acc_hi = np.concatenate([pad(pos.hi), pad(neg_hi)])
        # guide: per bucket of U's top bits, c = #{g >= 1 : lo(x_g) > u} if it is the same for
        # every u of the bucket and decides G (u >= hi(x_{c+1}) and c < last); else -1 - (that
        # count for the bucket's largest u), a starting point for the search
        ascending = self.geo_lo[1:last + 1][::-1].astype(np.int64)
        width = 1 << (_U_BITS - _GUIDE_BITS)
        bottoms = np.arange(1 << _GUIDE_BITS, dtype=np.int64) * width
        tops = bottoms + (width - 1)
        c_top = last - np.searchsorted(ascending, tops, side="right")
        c_bottom = last - np.searchsorted(ascending, bottoms, side="right")
        clean = (c_top == c_bottom) & (c_top < last) & (bottoms >= self.geo_hi[c_top + 1].astype(np.int64))
        self.guide = np.where(clean, c_top, -1 - c_top).astype(np.int32)

    def magnitude(self, rng: RandomSource, word: int, known: int) -> int:
        """``max{g : U < x_g}`` exactly, for ``U`` starting with ``word`` (32 bits)
        and known to satisfy ``U < x_known``."""
        lazy, g = _LazyUniform(rng, word, _U_BITS), known
        while self.geo_exact(lazy, g + 1):
            g += 1
        return g

    def sample(self, rng: RandomSource, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        todo = np.arange(n)
        last = self.last
        while todo.size:
            k = todo.size
            words = _bulk_words(rng, 2 * k)
            u, a = words[:k], words[k:]
            neg = a >= np.uint32(1 << _A_BITS)
            wa = a & np.uint32((1 << _A_BITS) - 1)
            mag = self.guide[u >> np.uint32(_U_BITS - _GUIDE_BITS)]  # int32
            unknown: "set[int]" = set()
            hard = np.flatnonzero(mag < 0)
            if hard.size:
                # c = #{g >= 1 : lo(x_g) > u}: U < x_c surely, and U >= x_{c+1} unless u < hi(x_{c+1})
                uh = u[hard].astype(np.uint64)
                c = (-1 - mag[hard]).astype(np.int64)
                step = np.flatnonzero(self.geo_lo[c + 1] > uh)
                while step.size:
                    c[step] += 1
                    step = step[self.geo_lo[c[step] + 1] > uh[step]]
                kn = c < last  # c == last: G >= last, its value is needed only if U' asks for it below
                for i in np.flatnonzero(kn & (uh < self.geo_hi[np.minimum(c + 1, last)])):
                    c[i] = self.magnitude(rng, int(uh[i]), int(c[i]))
                mag[hard] = c
                unknown = set(hard[~kn].tolist())
            li = np.minimum(mag, self.size - 1)
            li[neg] += self.size
            accept = wa < self.acc_lo[li]
            if unknown:
                accept[list(unknown)] = False
            maybe = np.flatnonzero(~accept)
            for i in maybe[wa[maybe] < self.acc_hi[li[maybe]]]:
                side = bool(neg[i])
                if int(i) in unknown:
                    mag[i] = self.magnitude(rng, int(u[i]), last)
                if side and (mag[i] == 0 or (self.neg_max is not None and int(mag[i]) > self.neg_max)):
                    continue
                accept[i] = self.acc_exact(_LazyUniform(rng, int(wa[i]), _A_BITS), side, int(mag[i]))
            values = np.where(neg, -mag, mag)
            if self.offset:
                values = values + np.int64(self.offset)
            out[todo[accept]] = values[accept]
            todo = todo[~accept]
        return out


def _fx_lo(x: int, y: int) -> int:
    return (x * y) >> _FX


def _fx_hi(x: int, y: int) -> int:
    return -((-(x * y)) >> _FX)


@functools.lru_cache(maxsize=16)
def _dgauss_rejection(s2: Fraction) -> _Rejection:
    """The tables of CKS Algorithm 3 for ``sigma^2 = a/b``: proposal the discrete
    Laplace of scale ``t = floor(sigma) + 1`` (``x_g = exp(-g/t)``), acceptance
    ``v(l) = exp(-(b t l - a)^2 / (2 a b t^2))``, from 160-bit bounds:
    ``v(l+1) = v(l) e^{1/t} e^{-b/(2a)} (e^{-b/a})^l``, ``x_{g+1} = x_g e^{-1/t}``."""
    a, b = s2.numerator, s2.denominator
    t = math.isqrt(a // b) + 1
    one = 1 << _FX
    vlo, vhi = _exp_neg_bounds(a, 2 * b * t * t, _FX)  # v(0)
    elo, ehi = _exp_neg_bounds(1, t, _FX)  # e^{-1/t}
    ilo, ihi = (one * one) // ehi, -((-(one * one)) // elo)  # e^{1/t}
    rlo, rhi = _exp_neg_bounds(b, 2 * a, _FX)  # e^{-(2l+1) b/(2a)} at l = 0
    qlo, qhi = _exp_neg_bounds(b, a, _FX)  # e^{-b/a}
    small = 1 << (_FX - 32)
    lows, highs = [], []
    l = 0
    while True:
        lo, hi = _rescale(vlo, min(vhi, one), _FX, _A_BITS)
        lows.append(lo)
        highs.append(hi)
        if b * t * l >= a and vhi < small:  # past the peak l = sigma^2/t, and v(l) < 2^-32
            break
        vlo, vhi = _fx_lo(_fx_lo(vlo, ilo), rlo), _fx_hi(_fx_hi(vhi, ihi), rhi)
        rlo, rhi = _fx_lo(rlo, qlo), _fx_hi(rhi, qhi)
        l += 1
    accept = _Thresholds(lows, highs)
    glo = ghi = one
    geo_lows, geo_highs = [], []
    for _ in range(len(accept) + 1):
        lo, hi = _rescale(glo, ghi, _FX, _U_BITS)
        geo_lows.append(lo)
        geo_highs.append(hi)
        glo, ghi = _fx_lo(glo, elo), _fx_hi(ghi, ehi)
    den = 2 * a * b * t * t
    return _Rejection(_Thresholds(geo_lows, geo_highs), accept, accept, None, 0,
                      geo_exact=lambda lazy, g: lazy.less_exp(g, t),
                      acc_exact=lambda lazy, negative, l: lazy.less_exp((b * t * l - a) ** 2, den))


def _from_table(table: _Table, bits: int) -> _Thresholds:
    """A 64-bit :class:`_Table` as ``bits``-bit thresholds."""
    shift = 64 - bits
    lows = [int(x) >> shift for x in table.lower]
    highs = [-((-int(x)) >> shift) if sure else 1 << bits for x, sure in zip(table.upper, table.sure_upper)]
    return _Thresholds(lows, highs)


@functools.lru_cache(maxsize=16)
def _poisson_rejection(lam: Fraction) -> _Rejection:
    """The Poisson tables (:class:`_PoissonPlan`) for the vectorised sampler:
    ``x_g = theta^g``, ``v`` above (``S = +1``) and below (``S = -1``, at most
    ``m``) the mode ``m``."""
    plan = _poisson_plan(lam)
    return _Rejection(_from_table(plan.geo, _U_BITS), _from_table(plan.accept_up, _A_BITS),
                      _from_table(plan.accept_down, _A_BITS), plan.m, plan.m,
                      geo_exact=lambda lazy, g: lazy.less_pow(plan.theta.numerator, plan.theta.denominator, g),
                      acc_exact=lambda lazy, negative, l: lazy.less(plan.exact_accept(not negative, l)))


def _poisson(rng: RandomSource, lam: Fraction, n: int) -> np.ndarray:
    return _poisson_rejection(lam).sample(rng, n)


def poisson(lam: Rational, size: int, rng: RandomSource | None = None) -> np.ndarray:
    """``size`` exact Poisson(lam) draws for a rational mean ``lam > 0`` (int64)."""
    q = as_rational(lam, "lam")
    if q <= 0:
        raise ParameterError(f"the Poisson mean must be > 0, got {q}")
    return _poisson(default_random(rng), q, _check_size(size))


def skellam(mu: Rational, size: int, rng: RandomSource | None = None) -> np.ndarray:
    """``size`` draws of the symmetric Skellam distribution of variance ``mu``:
    ``Poisson(mu/2) - Poisson(mu/2)``, ``P(X = k) = exp(-mu) I_k(mu)`` (int64)."""
    q = as_rational(mu, "mu")
    if q <= 0:
        raise ParameterError(f"the Skellam variance must be > 0, got {q}")
    n = _check_size(size)
    r = default_random(rng)
    both = _poisson(r, q / 2, 2 * n)
    return both[:n] - both[n:]
