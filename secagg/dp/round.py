"""One round's distributed-DP parameters as the protocols carry them, and what
the round reports (protocols/dp/SPEC.md §9).

:class:`DPRoundParams` is a wire message: it travels inside the round's
parameters (``MaskingParams.dp``, ``PaillierParams.dp``), so its fields are
bound by the round's session id. It holds the pipeline's parameters
(:class:`~secagg.dp.pipeline.DPParams`, rebuilt and validated, wrap check
included, on construction and on decoding) and, for adaptive clipping, the
scale of one extra coordinate that carries each client's "my update was
clipped" bit inside the same noised vector (SPEC §9.5).

:class:`DPRoundReport` is what a completed round says about privacy: the
survivors whose noise is in the sum, the round's own epsilon at the configured
delta (:func:`secagg.dp.accounting.round_guarantee`), and with adaptive
clipping the noised fraction of clipped updates and the next round's clip
(:func:`next_clip`, the geometric rule of Andrew et al., NeurIPS 2021).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ..encoding import wire
from ..errors import ParameterError
from ..primitives.randomness import RandomSource
from .pipeline import MECHANISMS, SEED_SIZE, ClientEncoding, DPParams, clip_l2, decode, encode

__all__ = ["DPRoundParams", "DPRoundReport", "next_clip", "clip_bit_vector"]

_MAX_INT = (1 << 63) - 1


def next_clip(clip: float, clipped_fraction: float, target_quantile: float, learning_rate: float) -> float:
    """The geometric clip update of Andrew, Thakkar, McMahan, Ramaswamy
    ("Differentially Private Learning with Adaptive Clipping", NeurIPS 2021):
    ``C * exp(-eta (b - q))`` with ``b = 1 - clipped_fraction`` the fraction of
    updates whose norm was at most ``C`` (clamped to [0, 1]: the estimate is
    noised), ``q`` the target quantile and ``eta`` the learning rate. Too many
    updates unclipped (``b > q``): the clip shrinks; too many clipped: it grows."""
    for name, v in (("clip", clip), ("learning_rate", learning_rate)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ParameterError(f"{name} must be a finite number > 0, got {v!r}")
    if not (isinstance(target_quantile, (int, float)) and 0 < target_quantile < 1):
        raise ParameterError(f"target_quantile must be in (0, 1), got {target_quantile!r}")
    if not (isinstance(clipped_fraction, (int, float)) and math.isfinite(clipped_fraction)):
        raise ParameterError(f"clipped_fraction must be a finite number, got {clipped_fraction!r}")
    unclipped = min(1.0, max(0.0, 1.0 - float(clipped_fraction)))
    return float(clip) * math.exp(-float(learning_rate) * (unclipped - float(target_quantile)))


def clip_bit_vector(x: np.ndarray, clip: float, count_scale: float) -> tuple[np.ndarray, bool]:
    """``[clip_l2(x, C), s * bit]`` with ``bit = 1`` iff ``|x|_2 > C``: the
    vector an adaptive-clipping client encodes (L2 norm at most
    ``sqrt(C^2 + s^2)``), and the bit."""
    clipped, was = clip_l2(x, clip)
    out = np.empty(clipped.size + 1, dtype=np.float64)
    out[:-1] = clipped
    out[-1] = count_scale if was else 0.0
    return out, was


def _finite(v: Any, name: str, low: float = 0.0, strict: bool = True) -> None:
    if type(v) is not float or not math.isfinite(v) or (v <= low if strict else v < low):
        raise ParameterError(f"{name} must be a finite float {'>' if strict else '>='} {low}, got {v!r}")


@wire.message("dp.RoundParams")
@dataclass(frozen=True)
class DPRoundParams:
    """A round's public DP parameters, as they travel with the round.

    ``clip`` is the L2 clip of one client's update (real units); ``dim`` the
    update's length; ``noise_numerator / noise_denominator`` the aggregate
    noise variance for ``n_min`` survivors in integer units (a reduced
    fraction: one value, one encoding); ``delta`` and ``sampling_rate`` are
    what the server reports the round's epsilon at. ``count_scale`` > 0 turns
    on adaptive clipping: each client appends ``count_scale * bit`` (its
    clipped bit) to its update before the pipeline, whose clip is then
    ``sqrt(clip^2 + count_scale^2)``, so the bit is noised and accounted for
    like every other coordinate; ``target_quantile`` and
    ``clip_learning_rate`` then give the next round's clip
    (:func:`next_clip`). Construction (and decoding) rebuilds the pipeline's
    :class:`DPParams` and refuses parameters that could wrap."""

    mechanism: str = field(metadata={"max_len": 16})
    clip: float
    bits: int = field(metadata={"min": 2, "max": 64})
    granularity: float
    noise_numerator: int = field(metadata={"min": 1, "max": _MAX_INT})
    noise_denominator: int = field(metadata={"min": 1, "max": _MAX_INT})
    n_min: int = field(metadata={"min": 1, "max": 1 << 31})
    n_max: int = field(metadata={"min": 1, "max": 1 << 31})
    dim: int = field(metadata={"min": 1, "max": 1 << 34})
    rotation_seed: bytes = field(metadata={"len": SEED_SIZE}, repr=False)
    delta: float
    sampling_rate: float = 1.0
    count_scale: float = 0.0
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    beta: float = math.exp(-0.5)
    max_retries: int = field(default=100, metadata={"min": 1, "max": 1 << 16})
    wrap_probability: float = 1e-9

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ParameterError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        for name in ("clip", "granularity"):
            _finite(getattr(self, name), name)
        _finite(self.count_scale, "count_scale", strict=False)
        for f in dataclasses.fields(self):  # integers within their wire ranges: what encodes, decodes
            if f.type in (int, "int"):
                v = getattr(self, f.name)
                lo, hi = f.metadata.get("min", 1), f.metadata.get("max", _MAX_INT)
                if type(v) is not int or not lo <= v <= hi:
                    raise ParameterError(f"{f.name} must be an integer in [{lo}, {hi}], got {v!r}")
        if math.gcd(self.noise_numerator, self.noise_denominator) != 1:
            raise ParameterError("the noise must be a reduced fraction (numerator and denominator coprime)")
        if type(self.delta) is not float or not 0 < self.delta < 1:
            raise ParameterError(f"delta must be a float in (0, 1), got {self.delta!r}")
        if type(self.sampling_rate) is not float or not 0 < self.sampling_rate <= 1:
            raise ParameterError(f"sampling_rate must be a float in (0, 1], got {self.sampling_rate!r}")
        for name in ("target_quantile", "beta", "wrap_probability"):
            v = getattr(self, name)
            if type(v) is not float or not 0 < v < 1:
                raise ParameterError(f"{name} must be a float in (0, 1), got {v!r}")
        _finite(self.clip_learning_rate, "clip_learning_rate")
        self.pipeline  # builds and validates the pipeline's parameters (wrap check included)

    # ------------------------------------------------------------------ derived
    @classmethod
    def from_pipeline(cls, params: DPParams, *, clip: float, delta: float, sampling_rate: float = 1.0,
                      count_scale: float = 0.0, target_quantile: float = 0.5,
                      clip_learning_rate: float = 0.2) -> "DPRoundParams":
        """The round parameters whose :attr:`pipeline` is ``params`` (``params.dim``
        and ``params.clip`` include the count coordinate when ``count_scale > 0``)."""
        noise = Fraction(params.noise)
        dim = params.dim - (1 if count_scale > 0 else 0)
        out = cls(mechanism=params.mechanism, clip=float(clip), bits=params.bits,
                  granularity=float(params.granularity), noise_numerator=noise.numerator,
                  noise_denominator=noise.denominator, n_min=params.n_min, n_max=int(params.n_max or params.n_min),
                  dim=dim, rotation_seed=bytes(params.rotation_seed), delta=float(delta),
                  sampling_rate=float(sampling_rate), count_scale=float(count_scale),
                  target_quantile=float(target_quantile), clip_learning_rate=float(clip_learning_rate),
                  beta=float(params.beta), max_retries=params.max_retries,
                  wrap_probability=float(params.wrap_probability))
        if out.pipeline != params:
            raise ParameterError("these DP parameters do not match the pipeline's (clip or dimension)")
        return out

    @property
    def adaptive(self) -> bool:
        """Whether the vector carries the clipped-bit coordinate (adaptive clipping)."""
        return self.count_scale > 0

    @property
    def noise(self) -> Fraction:
        return Fraction(self.noise_numerator, self.noise_denominator)

    @functools.cached_property
    def pipeline(self) -> DPParams:
        """The pipeline's parameters: clip ``sqrt(C^2 + s^2)`` and ``dim + 1``
        values with adaptive clipping, ``C`` and ``dim`` otherwise."""
        adaptive = self.count_scale > 0
        return DPParams(mechanism=self.mechanism,
                        clip=math.hypot(self.clip, self.count_scale) if adaptive else self.clip,
                        bits=self.bits, granularity=self.granularity, noise=self.noise, n_min=self.n_min,
                        dim=self.dim + (1 if adaptive else 0), rotation_seed=bytes(self.rotation_seed),
                        n_max=self.n_max, beta=self.beta, max_retries=self.max_retries,
                        wrap_probability=self.wrap_probability)

    @property
    def padded_dim(self) -> int:
        """The length of every encoded vector in ``Z_{2^b}``."""
        return self.pipeline.padded_dim

    @property
    def count_noise_stddev(self) -> float:
        """The standard deviation of the noised clipped count with ``n_min``
        survivors (adaptive clipping; 0 otherwise)."""
        if not self.adaptive:
            return 0.0
        p = self.pipeline
        return math.sqrt(float(p.local_noise) * self.n_min) * p.granularity / self.count_scale

    def summary(self) -> dict[str, object]:
        """JSON-ready, value-free description."""
        return {"mechanism": self.mechanism, "clip": self.clip, "bits": self.bits,
                "granularity": self.granularity, "noise": str(self.noise), "n_min": self.n_min,
                "n_max": self.n_max, "dim": self.dim, "padded_dim": self.padded_dim, "delta": self.delta,
                "sampling_rate": self.sampling_rate, "adaptive_clip": self.adaptive,
                "count_scale": self.count_scale, "rotation_seed": bytes(self.rotation_seed).hex()}

    # ------------------------------------------------------------------ client / server
    def encode_update(self, x: np.ndarray, rng: RandomSource | None = None) -> ClientEncoding:
        """A client's noised vector in ``Z_{2^b}`` (SPEC §2), with the clipped
        bit appended first when clipping is adaptive; ``.clipped`` is whether
        the update itself was clipped to :attr:`clip`."""
        v = np.asarray(x, dtype=np.float64).ravel()
        if v.size != self.dim:
            raise ParameterError(f"update has {v.size} entries; this round aggregates {self.dim}")
        if not self.adaptive:
            return encode(v, self.pipeline, rng)
        extended, was = clip_bit_vector(v, self.clip, self.count_scale)
        got = encode(extended, self.pipeline, rng)
        return ClientEncoding(got.values, was, got.attempts)

    def decode_sum(self, total: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The noised sum of the survivors' clipped updates (length ``dim``) and,
        with adaptive clipping, the noised number of clipped updates; from the
        sum of their vectors modulo ``2^b`` (any integer array; reduced here)."""
        t = np.asarray(total)
        if t.size != self.padded_dim or t.dtype.kind not in "iu":
            raise ParameterError(f"expected {self.padded_dim} integers, got {t.size} of {t.dtype}")
        ring = t.astype(np.uint64) & np.uint64((1 << self.bits) - 1) if self.bits < 64 else t.astype(np.uint64)
        out = decode(ring, self.pipeline)
        if not self.adaptive:
            return out, None
        return out[:-1].copy(), float(out[-1]) / self.count_scale

    def report(self, survivors: int, noised_count: float | None = None) -> "DPRoundReport":
        """The round's report for its actual number of survivors (>= ``n_min``)."""
        from .accounting import round_guarantee

        g = round_guarantee(self.pipeline, survivors, self.delta, self.sampling_rate)
        fraction = nxt = None
        if self.adaptive:
            if noised_count is None:
                raise ParameterError("an adaptive-clipping round reports its noised clipped count")
            fraction = float(noised_count) / survivors
            nxt = next_clip(self.clip, fraction, self.target_quantile, self.clip_learning_rate)
        return DPRoundReport(mechanism=self.mechanism, params=self.pipeline, survivors=survivors,
                             epsilon=g.epsilon, delta=self.delta,
                             noise_variance=g.aggregate_noise * self.granularity ** 2, clip=self.clip,
                             clipped_fraction=fraction, next_clip=nxt, sampling_rate=self.sampling_rate)


@dataclass(frozen=True)
class DPRoundReport:
    """What one completed DP round achieved.

    ``epsilon`` is this round alone at ``delta`` for its ``survivors`` (each
    added ``noise / n_min``, so more survivors, more noise); ``noise_variance``
    is the per-coordinate variance of the noise in the released sum, in real
    units (``survivors * local share * granularity^2``); ``clip`` the round's
    update clip. With adaptive clipping, ``clipped_fraction`` is the noised
    estimate of the fraction of clipped updates and ``next_clip`` the next
    round's clip (:func:`next_clip`); ``None`` otherwise. Compose rounds with
    :meth:`secagg.dp.DPAccountant.add_report`."""

    mechanism: str
    params: DPParams
    survivors: int
    epsilon: float
    delta: float
    noise_variance: float
    clip: float
    clipped_fraction: float | None = None
    next_clip: float | None = None
    sampling_rate: float = 1.0

    def summary(self) -> dict[str, object]:
        """JSON-ready fields (no update values)."""
        p = self.params
        return {"mechanism": self.mechanism, "survivors": self.survivors, "epsilon": self.epsilon,
                "delta": self.delta, "noise_variance": self.noise_variance, "clip": self.clip,
                "clipped_fraction": self.clipped_fraction, "next_clip": self.next_clip,
                "sampling_rate": self.sampling_rate, "n_min": p.n_min, "n_max": p.n_max, "bits": p.bits,
                "granularity": p.granularity, "noise": str(Fraction(p.noise)),
                "rotation_seed": bytes(p.rotation_seed).hex()}
