"""The user-facing plan: a target (epsilon, delta) over a number of rounds,
turned into one round's parameters (protocols/dp/SPEC.md §9.1).

:class:`DPConfig` is what a caller sets; :meth:`DPConfig.round_params` gives
the :class:`~secagg.dp.round.DPRoundParams` of one round for its dimension,
its survivor floor ``n_min`` (the round's threshold: the server never releases
a sum of fewer clients) and its number of invited clients ``n_max``.

**How the granularity is chosen.** Write ``C'`` for the clip of the encoded
vector (the update's clip ``C``; ``sqrt(C^2 + s^2)`` with adaptive clipping's
count coordinate of scale ``s``) and take ``gamma = C' / 2^k``, so that the
clip in integer units is ``c = 2^k`` whatever ``C'`` is. For a given ``k``
the sensitivity ``Delta_2`` (conditional rounding, SPEC §2) is fixed, the
noise is calibrated to it (``calibrate_noise``: ``rounds`` rounds of
``n_min`` survivors at the sampling rate meet the target), and the wrap check
(SPEC §5, for ``n_max`` clients) either passes or not. A finer granularity
(larger ``k``) makes the rounding error small next to the noise (the
``d'/4`` term of ``Delta_2`` fades) but needs larger integers; the check is
monotone in ``k``, so a bisection over ``k`` in ``[0, 62]`` finds the finest
granularity that fits in ``bits`` and keeps each client's noise share at most
:data:`MAX_LOCAL_NOISE` (the exact samplers' comfortable range, SPEC §4).
If even ``k = 0`` (one integer step per clip) does not fit, the plan is
refused with a :class:`ParameterError` that says what to change. Since
everything in integer units depends on ``k`` alone, the calibration is cached
and does not depend on ``C``: adaptive clipping changes ``C`` every round
without changing the privacy of a round.

**Adaptive clipping** (Andrew et al., NeurIPS 2021): the clipped bit travels
as one more coordinate ``s * bit`` of the same vector. With ``z`` the round's
noise multiplier (aggregate noise standard deviation over ``Delta_2``) and
``sigma_b`` the wanted standard deviation of the noised count
(``max(n_min / 20, 2 z)``, their recommendation of about a twentieth of the
clients), ``s = C * z / sqrt(sigma_b^2 - z^2)``: the count's noise is then
about ``sigma_b`` and the update's clip in the accounting is
``C' = sqrt(C^2 + s^2)``, so the bit costs privacy through ``C'`` only and
is counted like every other coordinate.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction

from ..errors import ParameterError
from .pipeline import MECHANISMS, SEED_SIZE, DPParams, padded_dim, rounding_bound
from .round import DPRoundParams, DPRoundReport

__all__ = ["DPConfig", "MAX_LOCAL_NOISE", "DEFAULT_BITS"]

#: Largest noise share (variance, integer units) one client draws: the exact
#: samplers stay fast below it (protocols/dp/SPEC.md §4).
MAX_LOCAL_NOISE = 1 << 30
#: Bits per coordinate by default. 20 rather than 16: at d = 2^20 and a few
#: hundred clients, 16 bits force a granularity so coarse that the rounding
#: error (the d'/4 term of the sensitivity) outweighs the signal, while 20
#: keep it small (SPEC §5's worked example); masking sends 32-bit ring
#: elements either way, and a Paillier slot of 20 + log2(n) + 1 bits still
#: packs about 90 values per 2048-bit ciphertext.
DEFAULT_BITS = 20
_MAX_K = 62


def _check_float(v: object, name: str, low: float, high: float, *, low_open: bool = True,
                 high_open: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        f = float(v)  # type: ignore[arg-type]
        ok = (f > low if low_open else f >= low) and (f < high if high_open else f <= high)
    if not ok:
        raise ParameterError(f"{name} must be a number in {'(' if low_open else '['}{low}, {high}"
                             f"{')' if high_open else ']'}, got {v!r}")


@dataclass(frozen=True)
class DPConfig:
    """A distributed-DP plan: the guarantee ``(epsilon, delta)`` over
    ``rounds`` rounds, with ``sampling_rate`` the fraction of the population
    taken (Poisson) per round, at least the round's ``n_min`` survivors each
    round (the protocol's threshold).

    ``mechanism``: ``"dgauss"`` (distributed discrete Gaussian) or
    ``"skellam"``. ``clip``: L2 clip of one client's update. ``bits``: bits per
    coordinate of the modular sum (2..62; Paillier slots must fit in 62 bits
    with the clients' carries; default :data:`DEFAULT_BITS`). Adaptive
    clipping (``adaptive_clip=True``): the clip follows the
    ``target_quantile`` of the update norms with the geometric rule at
    ``clip_learning_rate``; each round reports its ``next_clip``, and
    ``dataclasses.replace(config, clip=report.next_clip)`` is the next
    round's config. Bad values raise :class:`ParameterError`."""

    epsilon: float
    delta: float = 1e-5
    rounds: int = 1
    mechanism: str = "dgauss"
    clip: float = 1.0
    bits: int = DEFAULT_BITS
    sampling_rate: float = 1.0
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2

    def __post_init__(self) -> None:
        _check_float(self.epsilon, "epsilon", 0.0, 1e6)
        _check_float(self.delta, "delta", 0.0, 1.0, high_open=True)
        if type(self.rounds) is not int or self.rounds < 1:
            raise ParameterError(f"rounds must be an integer >= 1, got {self.rounds!r}")
        if self.mechanism not in MECHANISMS:
            raise ParameterError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        _check_float(self.clip, "clip", 0.0, 1e300)
        if type(self.bits) is not int or not 2 <= self.bits <= 62:
            raise ParameterError(f"bits must be an integer in [2, 62], got {self.bits!r}")
        _check_float(self.sampling_rate, "sampling_rate", 0.0, 1.0)
        if type(self.adaptive_clip) is not bool:
            raise ParameterError(f"adaptive_clip must be a bool, got {self.adaptive_clip!r}")
        _check_float(self.target_quantile, "target_quantile", 0.0, 1.0, high_open=True)
        _check_float(self.clip_learning_rate, "clip_learning_rate", 0.0, 1e3)
        for name in ("epsilon", "delta", "clip", "sampling_rate", "target_quantile", "clip_learning_rate"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def round_params(self, dim: int, *, n_min: int, n_max: int | None = None,
                     rotation_seed: bytes | None = None) -> DPRoundParams:
        """One round's parameters for updates of ``dim`` values, at least
        ``n_min`` survivors (the noise is calibrated for them: use the round's
        survivor threshold) and at most ``n_max`` clients summed (default
        ``n_min``; the wrap check covers them). ``rotation_seed``: 32 public
        bytes, fresh per round (default: from ``os.urandom``). Raises
        :class:`ParameterError` when no granularity fits ``bits``."""
        if type(dim) is not int or dim < 1:
            raise ParameterError(f"dim must be an integer >= 1, got {dim!r}")
        if type(n_min) is not int or n_min < 1:
            raise ParameterError(f"n_min must be an integer >= 1, got {n_min!r}")
        n_max = n_min if n_max is None else n_max
        if type(n_max) is not int or n_max < n_min:
            raise ParameterError(f"n_max must be an integer >= n_min = {n_min}, got {n_max!r}")
        seed = os.urandom(SEED_SIZE) if rotation_seed is None else bytes(rotation_seed)
        if len(seed) != SEED_SIZE:
            raise ParameterError("rotation_seed must be exactly 32 bytes (public, fresh per round)")
        k, noise, kappa = _plan(self.mechanism, self.epsilon, self.delta, self.rounds, self.bits,
                                self.sampling_rate, dim, n_min, n_max, self.adaptive_clip)
        scale = self.clip * kappa
        outer = math.hypot(self.clip, scale) if self.adaptive_clip else self.clip
        return DPRoundParams(mechanism=self.mechanism, clip=self.clip, bits=self.bits,
                             granularity=math.ldexp(outer, -k), noise_numerator=noise.numerator,
                             noise_denominator=noise.denominator, n_min=n_min, n_max=n_max, dim=dim,
                             rotation_seed=seed, delta=self.delta, sampling_rate=self.sampling_rate,
                             count_scale=scale if self.adaptive_clip else 0.0,
                             target_quantile=self.target_quantile, clip_learning_rate=self.clip_learning_rate)

    def after(self, report: DPRoundReport) -> "DPConfig":
        """The next round's config: with adaptive clipping, this one at the
        report's ``next_clip``; otherwise this one unchanged."""
        if not isinstance(report, DPRoundReport):
            raise ParameterError("after() takes the DPRoundReport of a round run with this config")
        if self.adaptive_clip:
            if report.next_clip is None:
                raise ParameterError("the report has no next clip: the round did not run with adaptive clipping")
            return replace(self, clip=report.next_clip)
        return self

    def check_round(self, dp: DPRoundParams | None) -> None:
        """A client's policy: refuse (:class:`ParameterError`) a round whose DP
        parameters are missing or are not this plan's for the round's own
        ``dim``, ``n_min``, ``n_max`` and rotation seed (so a server cannot
        lower the noise, the clip's bit scale or the delta it reports at). With
        adaptive clipping the clip is the server's to move; everything
        expressed in integer units must still match."""
        if dp is None:
            raise ParameterError("this client takes part only in distributed-DP rounds; the round has no DP")
        if not isinstance(dp, DPRoundParams):
            raise ParameterError("dp must be a DPRoundParams")
        plan = replace(self, clip=dp.clip) if self.adaptive_clip else self
        expected = plan.round_params(dp.dim, n_min=dp.n_min, n_max=dp.n_max, rotation_seed=dp.rotation_seed)
        if dp != expected:
            raise ParameterError("the round's DP parameters are not this client's plan (noise, granularity, "
                                 "clip, bits, delta or sampling rate differ): refusing the round")

    def summary(self) -> dict[str, object]:
        """JSON-ready description."""
        return {"epsilon": self.epsilon, "delta": self.delta, "rounds": self.rounds, "mechanism": self.mechanism,
                "clip": self.clip, "bits": self.bits, "sampling_rate": self.sampling_rate,
                "adaptive_clip": self.adaptive_clip, "target_quantile": self.target_quantile,
                "clip_learning_rate": self.clip_learning_rate}


def _fits(mechanism: str, k: int, noise: Fraction, bits: int, d: int, n_min: int, n_max: int) -> bool:
    try:
        p = DPParams(mechanism, clip=1.0, bits=bits, granularity=math.ldexp(1.0, -k), noise=noise, n_min=n_min,
                     dim=d, rotation_seed=bytes(SEED_SIZE), n_max=n_max)
    except ParameterError:
        return False
    return p.local_noise <= MAX_LOCAL_NOISE


@functools.lru_cache(maxsize=256)
def _plan(mechanism: str, epsilon: float, delta: float, rounds: int, bits: int, sampling_rate: float, dim: int,
          n_min: int, n_max: int, adaptive: bool) -> tuple[int, Fraction, float]:
    """``(k, noise, kappa)``: the granularity exponent (``gamma = C' 2^-k``), the
    aggregate noise in integer units, and the count scale over the clip."""
    from .accounting import calibrate_noise

    d = dim + (1 if adaptive else 0)
    dp_ = padded_dim(d)
    beta = math.exp(-0.5)

    def calibrated(k: int) -> Fraction:
        l2 = rounding_bound(math.ldexp(1.0, k), dp_, beta)
        return calibrate_noise(mechanism, epsilon, delta, rounds=rounds, n_min=n_min, l2_sensitivity=l2,
                               l1_sensitivity=min(l2 * l2, math.sqrt(dp_) * l2), dim=dp_,
                               sampling_rate=sampling_rate)

    def ok(k: int) -> Fraction | None:
        noise = calibrated(k)
        return noise if _fits(mechanism, k, noise, bits, d, n_min, n_max) else None

    best = ok(0)
    if best is None:
        raise ParameterError(
            f"no granularity fits {bits} bits: {n_max} clients' noised sums of {d} values at epsilon = {epsilon} "
            f"over {rounds} rounds (n_min = {n_min}) could wrap even at one integer step per clip; use more bits, "
            f"a larger epsilon, fewer rounds, a larger n_min or a smaller n_max")
    lo, hi = 0, _MAX_K + 1  # ok(lo) holds; ok(hi) is taken to fail
    found = best
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = ok(mid)
        if got is None:
            hi = mid
        else:
            lo, found = mid, got
    kappa = 0.0
    if adaptive:
        l2 = rounding_bound(math.ldexp(1.0, lo), dp_, beta)
        z = math.sqrt(float(found)) / l2
        sigma_b = max(n_min / 20.0, 2.0 * z)
        kappa = z / math.sqrt(sigma_b * sigma_b - z * z)
    return lo, found, kappa
