"""The client and server steps of distributed differential privacy
(protocols/dp/SPEC.md): each client clips, rotates, scales and rounds its
update to integers, adds its share of discrete noise and wraps the result into
``Z_{2^b}``; secure aggregation sums the clients' vectors modulo ``2^b``; the
server unwraps the sum (centered), scales it back and undoes the rotation.

Client, in order (each step is a small pure function below):

1. :func:`clip_l2`: scale ``x`` down to L2 norm at most ``C`` (float64).
2. :func:`rotate`: pad to ``d' = 2^ceil(log2 d)`` and apply ``H D`` (``D`` a
   random ±1 diagonal drawn from the round's *public* rotation seed, ``H`` the
   normalised Walsh-Hadamard matrix); orthogonal, so norms are kept, and the
   coordinates of the result are sub-Gaussian, which bounds the wrap-around.
3. :func:`scale`: divide by the granularity ``gamma`` (one integer step).
4. :func:`conditional_round`: stochastic rounding, repeated until the rounded
   vector's L2 norm is at most the bound ``Delta_2`` of Kairouz, Liu and Steinke
   (ICML 2021), :func:`rounding_bound`; at most ``max_retries`` attempts, else
   :class:`RoundingError`.
5. :func:`add_noise`: this client's share of the noise, ``N_Z(0, sigma^2/n_min)``
   (discrete Gaussian) or ``Sk(mu/n_min)`` (Skellam): with at least ``n_min``
   survivors the sum carries at least the noise the accountant was given.
6. :func:`wrap`: reduce modulo ``2^b``.

Server: :func:`unwrap` (centered representative), :func:`unscale` (times
``gamma``), :func:`unrotate` (``D H``, then drop the padding).

:class:`DPParams` holds one round's parameters and refuses those under which
the sum of up to ``n_max`` clients could wrap modulo ``2^b`` with probability
above ``wrap_probability`` (:meth:`DPParams.wrap_bound`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..errors import ParameterError
from ..primitives.prg import prg_bytes
from ..primitives.randomness import RandomSource, default_random, uniform_floats
from . import samplers
from . import transform as _transform
from .samplers import Rational, as_rational

__all__ = [
    "MECHANISMS",
    "DPParams",
    "RoundingError",
    "ClientEncoding",
    "clip_l2",
    "padded_dim",
    "rotation_signs",
    "fwht",
    "rotate",
    "unrotate",
    "scale",
    "unscale",
    "rounding_bound",
    "stochastic_round",
    "conditional_round",
    "add_noise",
    "wrap",
    "unwrap",
    "ring_sum",
    "encode",
    "decode",
    "noise_variance",
]

MECHANISMS = ("dgauss", "skellam")
ROTATION_TAG = "secagg/v1/dp/rotation"
SEED_SIZE = 32


class RoundingError(ParameterError):
    """Conditional rounding did not meet its norm bound within the allowed attempts."""


# --------------------------------------------------------------------------- parameters

def noise_variance(stddev: float, denominator: int = 1 << 10) -> Fraction:
    """The variance ``stddev^2`` (integer units) as a rational with the given
    denominator, rounded *up* (never less noise than asked for)."""
    if not (math.isfinite(stddev) and stddev > 0):
        raise ParameterError(f"stddev must be a finite number > 0, got {stddev!r}")
    return Fraction(math.ceil(Fraction(stddev) ** 2 * denominator), denominator)


def _sub_gaussian_radius(variance: float, count: int, probability: float) -> float:
    """``r`` with ``count * 2 exp(-r^2 / (2 variance)) <= probability``."""
    return math.sqrt(2.0 * variance * math.log(2.0 * count / probability))


def _skellam_radius(mu: float, count: int, probability: float) -> float:
    """``r`` with ``count * 2 P(X >= r) <= probability`` for ``X ~ Sk(mu)``, from the
    Chernoff bound ``P(X >= r) <= exp(mu (cosh t - 1) - t r)`` at ``t = asinh(r/mu)``."""
    target = math.log(probability / (2.0 * count))

    def log_tail(r: float) -> float:
        t = math.asinh(r / mu)
        return mu * (math.cosh(t) - 1.0) - t * r

    lo, hi = 0.0, max(1.0, math.sqrt(mu))
    while log_tail(hi) > target:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if log_tail(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class DPParams:
    """One round's distributed-DP parameters.

    ``noise`` is the variance (in integer units, i.e. of the scaled vectors) the
    *sum* must carry: ``sigma^2`` of the discrete Gaussian or ``mu`` of the
    Skellam mechanism. Each client adds ``noise / n_min``. ``n_max`` is the most
    clients whose vectors the server may sum (defaults to ``n_min``).

    Refused (:class:`ParameterError`): parameters under which the sum of up to
    ``n_max`` clients could leave ``[-2^(b-1), 2^(b-1))`` with probability above
    ``wrap_probability`` (default ``1e-9``); see :meth:`wrap_bound`.
    """

    mechanism: str
    clip: float
    bits: int
    granularity: float
    noise: Rational
    n_min: int
    dim: int
    rotation_seed: bytes = field(repr=False)
    n_max: int | None = None
    beta: float = math.exp(-0.5)
    max_retries: int = 100
    wrap_probability: float = 1e-9

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ParameterError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        for name in ("clip", "granularity"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ParameterError(f"{name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 64):
            raise ParameterError(f"bits must be an integer in [2, 64], got {self.bits!r}")
        object.__setattr__(self, "noise", as_rational(self.noise, "noise"))
        if not as_rational(self.noise) > 0:
            raise ParameterError(f"noise must be > 0, got {self.noise}")
        for name in ("n_min", "dim", "max_retries"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ParameterError(f"{name} must be an integer >= 1, got {v!r}")
        if self.n_max is None:
            object.__setattr__(self, "n_max", self.n_min)
        if not (isinstance(self.n_max, int) and self.n_max >= self.n_min):
            raise ParameterError(f"n_max must be an integer >= n_min, got {self.n_max!r}")
        if not (isinstance(self.rotation_seed, (bytes, bytearray)) and len(self.rotation_seed) == SEED_SIZE):
            raise ParameterError("rotation_seed must be exactly 32 bytes (public, fresh per round)")
        if not 0 < self.beta < 1:
            raise ParameterError(f"beta must be in (0, 1), got {self.beta!r}")
        if not 0 < self.wrap_probability < 1:
            raise ParameterError(f"wrap_probability must be in (0, 1), got {self.wrap_probability!r}")
        bound = self.wrap_bound()
        if bound > (1 << (self.bits - 1)) - 1:
            raise ParameterError(
                f"the sum of {self.n_max} clients could reach {bound:.4g} in some coordinate (probability "
                f"{self.wrap_probability:g}), beyond the {self.bits}-bit ring's {(1 << (self.bits - 1)) - 1}: "
                f"use more bits, a coarser granularity, less noise or fewer clients")

    @property
    def padded_dim(self) -> int:
        return padded_dim(self.dim)

    @property
    def scaled_clip(self) -> float:
        """``c = C / gamma``: the clip in integer units."""
        return self.clip / self.granularity

    @property
    def l2_sensitivity(self) -> float:
        """``Delta_2``: the L2 norm bound of a client's rounded vector (KLS eq. for conditional rounding)."""
        return rounding_bound(self.scaled_clip, self.padded_dim, self.beta)

    @property
    def l1_sensitivity(self) -> float:
        """``Delta_1 = min(Delta_2^2, sqrt(d') Delta_2)``: an integer vector has ``|v|_1 <= |v|_2^2``."""
        d2 = self.l2_sensitivity
        return min(d2 * d2, math.sqrt(self.padded_dim) * d2)

    @property
    def local_noise(self) -> Fraction:
        """One client's share: ``noise / n_min`` rounded *up* to an integer when it is
        at least 4096 (a relative increase below 2.5e-4), else to a multiple of
        2^-12: small denominators keep the exact sampler's integers in 64 bits.
        ``n_min`` shares carry at least ``noise``; the accountant uses this value."""
        share = as_rational(self.noise) / self.n_min
        unit = 1 if share >= 4096 else 4096
        return Fraction(math.ceil(share * unit), unit)

    def wrap_bound(self, n: int | None = None) -> float:
        """A magnitude that every coordinate of the sum of ``n`` (default
        ``n_max``) clients' noised vectors stays below, except with probability
        at most ``wrap_probability`` (over the rotation and the noise, for
        updates chosen independently of the rotation seed):

        * signal: the rotated sum of clipped vectors ``s`` (``|s|_2 <= n c``) has
          ``P(|(HDs)_j| >= r) <= 2 exp(-r^2 d' / (2 (n c)^2))`` per coordinate
          (Hoeffding over the random signs); rounding adds less than ``n`` per
          coordinate; and never more than ``n Delta_2`` in all;
        * noise: the sum of ``n`` discrete Gaussians ``N_Z(0, s^2)`` (``s^2`` the
          share, :attr:`local_noise`) is sub-Gaussian with variance proxy ``n s^2`` (each one is
          sub-Gaussian with proxy its parameter: Canonne, Kamath, Steinke 2020),
          the sum of ``n`` Skellams is ``Sk(n s^2)``, bounded by its
          Chernoff tail;

        each with probability ``wrap_probability / 2`` over all ``d'`` coordinates."""
        n = self.n_max if n is None else n
        assert n is not None
        d, c = self.padded_dim, self.scaled_clip
        half = self.wrap_probability / 2.0
        signal = min(_sub_gaussian_radius((n * c) ** 2 / d, d, half) + n, n * self.l2_sensitivity)
        total_noise = float(self.local_noise) * n  # the shares as drawn (rounded up)
        if self.mechanism == "dgauss":
            noise = _sub_gaussian_radius(total_noise, d, half)
        else:
            noise = _skellam_radius(total_noise, d, half)
        return signal + noise


# --------------------------------------------------------------------------- client steps

def clip_l2(x: np.ndarray, clip: float) -> tuple[np.ndarray, bool]:
    """``x`` (flattened, float64) scaled down to L2 norm ``<= clip``, and whether it was."""
    v = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ParameterError("update contains NaN or infinite values")
    norm = float(np.linalg.norm(v))
    if norm > clip:
        return v * (clip / norm), True
    return v.copy(), False


def padded_dim(d: int) -> int:
    """The smallest power of two ``>= d``."""
    if d < 1:
        raise ParameterError("dimension must be >= 1")
    return 1 << (d - 1).bit_length()


def rotation_signs(seed: bytes, n: int) -> np.ndarray:
    """The ±1 diagonal ``D`` of length ``n`` (float64) from the public rotation seed."""
    if not (isinstance(seed, (bytes, bytearray)) and len(seed) == SEED_SIZE):
        raise ParameterError("rotation seed must be exactly 32 bytes")
    bits = np.unpackbits(np.frombuffer(prg_bytes(bytes(seed), ROTATION_TAG, (n + 7) // 8), dtype=np.uint8),
                         bitorder="little")[:n]
    return 1.0 - 2.0 * bits.astype(np.float64)


def fwht(x: np.ndarray) -> np.ndarray:
    """The normalised Walsh-Hadamard transform ``H x`` (``H = H^T = H^-1``) of a
    vector whose length is a power of two; returns a new array. Computed by
    :func:`secagg.dp.transform.fwht` (a few products with small Hadamard
    factors; bit for bit the butterflies below 4096 values, within 1e-14 of
    them in relative L2 norm above)."""
    return _transform.fwht(x)


def rotate(x: np.ndarray, seed: bytes) -> np.ndarray:
    """``H D pad(x)``: length ``padded_dim(len(x))``, same L2 norm."""
    v = np.asarray(x, dtype=np.float64).ravel()
    n = padded_dim(v.size)
    padded = np.zeros(n, dtype=np.float64)
    padded[:v.size] = v
    return fwht(padded * rotation_signs(seed, n))


def unrotate(y: np.ndarray, seed: bytes, dim: int) -> np.ndarray:
    """The inverse of :func:`rotate`: ``(D H y)[:dim]``."""
    v = np.asarray(y, dtype=np.float64).ravel()
    if v.size != padded_dim(dim):
        raise ParameterError(f"expected {padded_dim(dim)} rotated values, got {v.size}")
    return (fwht(v) * rotation_signs(seed, v.size))[:dim]


def scale(x: np.ndarray, granularity: float) -> np.ndarray:
    """``x / gamma``: values in units of the granularity."""
    return np.asarray(x, dtype=np.float64) / granularity


def unscale(x: np.ndarray, granularity: float) -> np.ndarray:
    """``x * gamma``."""
    return np.asarray(x, dtype=np.float64) * granularity


def rounding_bound(c: float, d: int, beta: float) -> float:
    """``Delta_2`` of Kairouz, Liu, Steinke (ICML 2021, conditional randomized
    rounding) for a vector of L2 norm ``<= c`` in ``d`` dimensions, granularity 1:
    ``min(sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2)), c + sqrt(d))``.
    One unconditional rounding meets it with probability ``>= 1 - beta``."""
    if not 0 < beta < 1:
        raise ParameterError(f"beta must be in (0, 1), got {beta!r}")
    root_d = math.sqrt(d)
    conditional = math.sqrt(c * c + d / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (c + root_d / 2.0))
    return min(conditional, c + root_d)


def stochastic_round(y: np.ndarray, rng: RandomSource | None = None) -> np.ndarray:
    """Unbiased randomized rounding to int64: ``floor(y) + Bernoulli(y - floor(y))``."""
    v = np.asarray(y, dtype=np.float64)
    floor = np.floor(v)
    u = uniform_floats(default_random(rng), v.size).reshape(v.shape)
    return (floor + (u < (v - floor))).astype(np.int64)


def conditional_round(y: np.ndarray, bound: float, rng: RandomSource | None = None,
                      max_retries: int = 100) -> tuple[np.ndarray, int]:
    """Stochastic rounding of ``y`` repeated until ``|round(y)|_2 <= bound``;
    returns the rounded vector and the number of attempts. Raises
    :class:`RoundingError` after ``max_retries`` failed attempts."""
    r = default_random(rng)
    v = np.asarray(y, dtype=np.float64).ravel()
    for attempt in range(1, max_retries + 1):
        q = stochastic_round(v, r)
        if float(np.dot(q.astype(np.float64), q.astype(np.float64))) <= bound * bound:
            return q, attempt
    raise RoundingError(f"conditional rounding missed the L2 bound {bound:.6g} in {max_retries} attempts "
                        f"(input norm {float(np.linalg.norm(v)):.6g})")


def add_noise(q: np.ndarray, mechanism: str, local_noise: Rational, rng: RandomSource | None = None) -> np.ndarray:
    """``q`` plus one client's share of the noise, drawn exactly: ``N_Z(0, local_noise)``
    for ``"dgauss"``, ``Sk(local_noise)`` for ``"skellam"``."""
    v = np.asarray(q, dtype=np.int64)
    if mechanism == "dgauss":
        return v + samplers.discrete_gaussian(local_noise, v.size, rng).reshape(v.shape)
    if mechanism == "skellam":
        return v + samplers.skellam(local_noise, v.size, rng).reshape(v.shape)
    raise ParameterError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")


def _ring_mask(bits: int) -> np.uint64:
    if not (isinstance(bits, int) and 1 <= bits <= 64):
        raise ParameterError(f"bits must be an integer in [1, 64], got {bits!r}")
    return np.uint64((1 << bits) - 1)


def wrap(v: np.ndarray, bits: int) -> np.ndarray:
    """Signed integers to ``Z_{2^bits}``: representatives in ``[0, 2^bits)`` as uint64."""
    a = np.asarray(v)
    if a.size and a.dtype.kind not in "iu":
        raise ParameterError(f"expected integers, got dtype {a.dtype}")
    return a.astype(np.int64).astype(np.uint64) & _ring_mask(bits)


def ring_sum(vectors: "list[np.ndarray] | np.ndarray", bits: int) -> np.ndarray:
    """The sum modulo ``2^bits`` of wrapped vectors (what secure aggregation reveals)."""
    acc: np.ndarray | None = None
    for v in vectors:
        w = np.asarray(v, dtype=np.uint64)
        acc = w.copy() if acc is None else acc + w  # uint64 addition wraps modulo 2^64
    if acc is None:
        raise ParameterError("nothing to sum")
    return acc & _ring_mask(bits)


def unwrap(s: np.ndarray, bits: int) -> np.ndarray:
    """``Z_{2^bits}`` to the centered representative in ``[-2^(bits-1), 2^(bits-1))`` (int64)."""
    shift = np.uint64(64 - bits)
    _ring_mask(bits)
    top = np.asarray(s, dtype=np.uint64) << shift  # the ring's bits at the top of the word
    return top.view(np.int64) >> shift.astype(np.int64)  # arithmetic shift: sign extension


# --------------------------------------------------------------------------- composed

@dataclass(frozen=True)
class ClientEncoding:
    """A client's noised vector in ``Z_{2^b}`` (uint64, length ``padded_dim``),
    whether clipping changed the update, and the rounding attempts it took."""

    values: np.ndarray
    clipped: bool
    attempts: int

    def __repr__(self) -> str:  # the values are a client's (noised) update
        return f"ClientEncoding(<{np.size(self.values)} values>, clipped={self.clipped}, attempts={self.attempts})"


def encode(x: np.ndarray, params: DPParams, rng: RandomSource | None = None) -> ClientEncoding:
    """The client pipeline: clip, rotate, scale, round conditionally, add noise, wrap.
    The rounding and the noise draw from ``rng`` (rounding first)."""
    r = default_random(rng)
    v = np.asarray(x, dtype=np.float64).ravel()
    if v.size != params.dim:
        raise ParameterError(f"update has {v.size} entries; this round aggregates {params.dim}")
    clipped, was_clipped = clip_l2(v, params.clip)
    y = scale(rotate(clipped, params.rotation_seed), params.granularity)
    q, attempts = conditional_round(y, params.l2_sensitivity, r, params.max_retries)
    noised = add_noise(q, params.mechanism, params.local_noise, r)
    return ClientEncoding(wrap(noised, params.bits), was_clipped, attempts)


def decode(total: np.ndarray, params: DPParams) -> np.ndarray:
    """The server side: the noised sum of the clients' clipped updates (float64,
    length ``dim``) from their vectors' sum modulo ``2^b``."""
    centered = unwrap(total, params.bits)
    return unrotate(unscale(centered.astype(np.float64), params.granularity), params.rotation_seed, params.dim)
