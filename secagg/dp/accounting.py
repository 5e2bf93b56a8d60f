"""Renyi-DP accounting for distributed discrete noise, composition over rounds,
Poisson subsampling of clients, conversion to (epsilon, delta), and noise
calibration (protocols/dp/SPEC.md "Accounting").

Per round (sensitivities in integer units: ``Delta_2`` the L2 bound of one
client's rounded vector, ``Delta_1`` its L1 bound, ``d`` the padded dimension):

* distributed discrete Gaussian (Kairouz, Liu, Steinke, ICML 2021, Prop. 14):
  ``n`` clients each adding ``N_Z(0, s^2)`` (``s >= 1/2``) give RDP at order ``alpha``
  ``min(alpha Delta_2^2 / (2 n s^2) + tau d, (alpha/2) (Delta_2/(sqrt(n) s) + tau sqrt(d))^2)``,
  ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k/(k+1))`` (the distance of a sum of
  discrete Gaussians from one discrete Gaussian); for every ``alpha >= 1`` this is
  at most ``alpha eps^2 / 2`` with ``eps = min(sqrt(Delta_2^2/(n s^2) + 2 tau d),
  Delta_2/(sqrt(n) s) + tau sqrt(d))`` (their Thm. 1, concentrated DP).
* Skellam (Agarwal, Kairouz, Liu, NeurIPS 2021, their multi-dimensional Skellam
  bound, with ``mu`` the variance of the aggregate noise ``Sk(mu)``): RDP at order ``alpha``
  ``alpha Delta_2^2/(2 mu) + min(((2 alpha - 1) Delta_2^2 + 6 Delta_1)/(4 mu^2), 3 Delta_1/(2 mu))``.
* Poisson subsampling of clients at rate ``q < 1``: the general upper bound of
  Zhu and Wang ("Poisson Subsampled Renyi Differential Privacy", ICML 2019:
  the bound for any mechanism) for a mechanism with RDP curve ``e(.)``, at integer orders only.
  (``dp_accounting``'s tight subsampled-Gaussian analysis is for the continuous
  Gaussian and is used here only as a reference.)

Composition adds RDP curves; the (epsilon, delta) conversion is
``dp_accounting``'s (:func:`dp_accounting.rdp.compute_epsilon`, Canonne-Kamath-
Steinke / Asoodeh et al.'s improved bound). Everything is in float64: these are
bounds on a guarantee, not part of the sampling path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import dp_accounting as _dpa  # type: ignore[import-untyped, import-not-found, unused-ignore]
from dp_accounting import rdp as _dp_rdp  # type: ignore[import-untyped, import-not-found, unused-ignore]

from ..errors import ParameterError
from .pipeline import MECHANISMS, DPParams

if TYPE_CHECKING:
    from .round import DPRoundReport

__all__ = [
    "ORDERS",
    "ddg_tau",
    "ddg_epsilon",
    "ddg_rdp",
    "skellam_rdp",
    "gaussian_rdp",
    "mechanism_rdp",
    "subsampled_rdp",
    "epsilon_from_rdp",
    "continuous_gaussian_epsilon",
    "RoundGuarantee",
    "DPAccountant",
    "round_guarantee",
    "calibrate_noise",
    "ADJACENCIES",
]

#: Neighbouring rounds. ``"replace"`` (the default): one client's
#: update is replaced by zero, the client still takes part and its noise share is
#: in the sum either way, so ``survivors`` shares protect it. ``"remove"``: the
#: client and its noise share are absent in one of the two rounds, so only the
#: other ``survivors - 1`` shares count (more conservative).
ADJACENCIES = ("replace", "remove")


def _shares(survivors: int, adjacency: str) -> int:
    if adjacency not in ADJACENCIES:
        raise ParameterError(f"adjacency must be one of {ADJACENCIES}, got {adjacency!r}")
    shares = survivors if adjacency == "replace" else survivors - 1
    if shares < 1:
        raise ParameterError("no other client's noise protects a removed client: need at least 2 survivors")
    return shares

#: RDP orders: fractional ones for rounds without sampling, integers 2..256 and a few beyond.
ORDERS: tuple[float, ...] = (1.25, 1.5, 1.75) + tuple(float(a) for a in range(2, 257)) + (320.0, 384.0, 512.0, 1024.0)


def _orders(orders: "Sequence[float] | np.ndarray | None") -> np.ndarray:
    a = np.asarray(ORDERS if orders is None else orders, dtype=np.float64)
    if a.size == 0 or np.any(a <= 1):
        raise ParameterError("RDP orders must be > 1")
    return a


def _positive(value: float, what: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ParameterError(f"{what} must be a finite number > 0, got {value!r}")
    return v


# --------------------------------------------------------------------------- one round, no sampling

def ddg_tau(local_sigma2: float, n: int) -> float:
    """``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k+1))`` (KLS 2021)."""
    s2 = _positive(local_sigma2, "local_sigma2")
    if n < 1:
        raise ParameterError("need at least one client")
    k = np.arange(1, n, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi ** 2 * s2 * k / (k + 1.0))))


def _ddg_terms(l2: float, local_sigma2: float, n: int, dim: int) -> tuple[float, float]:
    s2 = _positive(local_sigma2, "local_sigma2")
    if s2 < 0.25:
        raise ParameterError(f"the KLS bound needs each client's sigma >= 1/2, got sigma^2 = {s2}")
    return l2 * l2 / (n * s2), ddg_tau(s2, n)


def ddg_epsilon(l2: float, local_sigma2: float, n: int, dim: int) -> float:
    """The ``eps`` of the distributed discrete Gaussian's ``eps^2/2``-concentrated DP (KLS 2021, Thm. 1)."""
    scale2, tau = _ddg_terms(l2, local_sigma2, n, dim)
    return min(math.sqrt(scale2 + 2.0 * tau * dim), math.sqrt(scale2) + tau * math.sqrt(dim))


def ddg_rdp(orders: "Sequence[float] | np.ndarray | None", l2: float, local_sigma2: float, n: int,
            dim: int) -> np.ndarray:
    """RDP curve of the distributed discrete Gaussian (KLS 2021, Prop. 14)."""
    scale2, tau = _ddg_terms(l2, local_sigma2, n, dim)
    a = _orders(orders)
    return np.minimum(a * scale2 / 2.0 + tau * dim, a / 2.0 * (math.sqrt(scale2) + tau * math.sqrt(dim)) ** 2)


def skellam_rdp(orders: "Sequence[float] | np.ndarray | None", l2: float, l1: float, mu: float) -> np.ndarray:
    """RDP curve of the Skellam mechanism with aggregate noise variance ``mu`` (AKL 2021)."""
    m = _positive(mu, "mu")
    a = _orders(orders)
    return a * l2 * l2 / (2.0 * m) + np.minimum(((2.0 * a - 1.0) * l2 * l2 + 6.0 * l1) / (4.0 * m * m),
                                                3.0 * l1 / (2.0 * m))


def gaussian_rdp(orders: "Sequence[float] | np.ndarray | None", noise_multiplier: float) -> np.ndarray:
    """RDP curve ``alpha / (2 z^2)`` of the continuous Gaussian mechanism."""
    z = _positive(noise_multiplier, "noise_multiplier")
    return _orders(orders) / (2.0 * z * z)


def mechanism_rdp(mechanism: str, orders: "Sequence[float] | np.ndarray | None", *, l2: float, l1: float, dim: int,
                  local_noise: float, n: int) -> np.ndarray:
    """The RDP curve of one round with ``n`` clients each adding ``local_noise``
    (variance, integer units) of the given mechanism."""
    if mechanism == "dgauss":
        return ddg_rdp(orders, l2, local_noise, n, dim)
    if mechanism == "skellam":
        return skellam_rdp(orders, l2, l1, n * local_noise)
    raise ParameterError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")


# --------------------------------------------------------------------------- subsampling, conversion

def subsampled_rdp(orders: "Sequence[float] | np.ndarray | None", curve: Callable[[np.ndarray], np.ndarray],
                   q: float) -> np.ndarray:
    """RDP of a mechanism with RDP curve ``curve`` run on a Poisson sample of the
    clients at rate ``q`` (Zhu and Wang 2019, the general upper bound; integer orders ``alpha >= 2``):

    ``1/(alpha-1) log((1-q)^(alpha-1) (alpha q - q + 1) + C(alpha,2) q^2 (1-q)^(alpha-2) e^{e(2)}
    + 3 sum_{l=3}^{alpha} C(alpha,l) (1-q)^(alpha-l) q^l e^{(l-1) e(l)})``,

    never above the unsampled ``e(alpha)``. Fractional orders get ``inf``."""
    a = _orders(orders)
    if not 0 < q <= 1:
        raise ParameterError(f"sampling rate must be in (0, 1], got {q!r}")
    if q == 1:
        return curve(a)
    out = np.full(a.size, np.inf)
    ints = [int(x) for x in a if float(x).is_integer() and x >= 2]
    if not ints:
        return out
    top = max(ints)
    ls = np.arange(2, top + 1, dtype=np.float64)
    e = np.concatenate([[0.0, 0.0], curve(ls)])  # e[l] = the unsampled RDP at order l
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, top + 1, dtype=np.float64)))])
    lq, l1q = math.log(q), math.log1p(-q)
    for i, alpha in enumerate(a):
        if not (float(alpha).is_integer() and alpha >= 2):
            continue
        al = int(alpha)
        l = np.arange(3, al + 1)
        log_comb = log_fact[al] - log_fact[l] - log_fact[al - l]
        terms = np.concatenate([
            [(al - 1) * l1q + math.log(al * q - q + 1),
             log_fact[al] - log_fact[2] - log_fact[al - 2] + 2 * lq + (al - 2) * l1q + e[2]],
            math.log(3.0) + log_comb + (al - l) * l1q + l * lq + (l - 1) * e[l]])
        peak = float(terms.max())
        log_sum = peak + math.log(float(np.sum(np.exp(terms - peak))))
        out[i] = min(log_sum / (al - 1), float(e[al]))
    return out


def epsilon_from_rdp(orders: "Sequence[float] | np.ndarray | None", rdp: np.ndarray, delta: float) -> tuple[float, float]:
    """``(epsilon, best order)`` for ``delta`` from an RDP curve (``dp_accounting``'s conversion)."""
    if not 0 < delta < 1:
        raise ParameterError(f"delta must be in (0, 1), got {delta!r}")
    a = _orders(orders)
    eps, order = _dp_rdp.compute_epsilon(a.tolist(), np.asarray(rdp, dtype=np.float64).tolist(), delta)
    return float(eps), float(order)


def continuous_gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float, sampling_rate: float = 1.0,
                                orders: "Sequence[float] | np.ndarray | None" = None) -> float:
    """The reference: epsilon of the *continuous* Gaussian mechanism with noise
    multiplier ``z`` (aggregate standard deviation over L2 sensitivity), Poisson
    sampled at ``sampling_rate``, over ``rounds`` rounds, from ``dp_accounting``'s
    RDP accountant (``GaussianDpEvent``, ``PoissonSampledDpEvent``, tight
    subsampling analysis). Not a guarantee for discrete noise: the discrete
    mechanisms' epsilon is at least this, and tends to it as the noise grows."""
    z = _positive(noise_multiplier, "noise_multiplier")
    if not 0 < sampling_rate <= 1:
        raise ParameterError(f"sampling rate must be in (0, 1], got {sampling_rate!r}")
    event = _dpa.GaussianDpEvent(z)
    if sampling_rate < 1:
        event = _dpa.PoissonSampledDpEvent(sampling_rate, event)
    a = _orders(orders)
    if sampling_rate < 1:
        a = a[[float(x).is_integer() for x in a]]
    accountant = _dp_rdp.RdpAccountant(a.tolist())
    accountant.compose(_dpa.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))


# --------------------------------------------------------------------------- rounds, composition

@dataclass(frozen=True)
class RoundGuarantee:
    """What one round achieved: the survivors that added noise, the aggregate
    noise variance (integer units), and the round's own (epsilon, delta)."""

    survivors: int
    aggregate_noise: float
    epsilon: float
    delta: float
    order: float


def _round_curve(params: DPParams, survivors: int, sampling_rate: float,
                 orders: "Sequence[float] | np.ndarray | None", adjacency: str) -> np.ndarray:
    if not (isinstance(survivors, int) and survivors >= 1):
        raise ParameterError(f"survivors must be an integer >= 1, got {survivors!r}")
    if survivors < params.n_min:
        raise ParameterError(f"{survivors} survivors is below the round's n_min = {params.n_min}: "
                             f"the noise was calibrated for at least n_min")
    local = float(params.local_noise)
    shares = _shares(survivors, adjacency)

    def curve(a: np.ndarray) -> np.ndarray:
        return mechanism_rdp(params.mechanism, a, l2=params.l2_sensitivity, l1=params.l1_sensitivity,
                             dim=params.padded_dim, local_noise=local, n=shares)

    return subsampled_rdp(orders, curve, sampling_rate)


def round_guarantee(params: DPParams, survivors: int, delta: float, sampling_rate: float = 1.0,
                    orders: "Sequence[float] | np.ndarray | None" = None,
                    adjacency: str = "replace") -> RoundGuarantee:
    """The guarantee of one round given its actual number of survivors
    (each added ``noise / n_min``: more survivors, more noise, smaller epsilon)."""
    curve = _round_curve(params, survivors, sampling_rate, orders, adjacency)
    eps, order = epsilon_from_rdp(orders, curve, delta)
    return RoundGuarantee(survivors, survivors * float(params.local_noise), eps, delta, order)


@dataclass
class DPAccountant:
    """Renyi-DP composition over rounds: ``add_round`` after each round with its
    survivors, ``epsilon(delta)`` for the guarantee so far."""

    orders: tuple[float, ...] = ORDERS
    rdp: np.ndarray = field(init=False)
    rounds: list[RoundGuarantee] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.rdp = np.zeros(len(self.orders))

    def add_curve(self, curve: np.ndarray) -> None:
        """Compose a round given by its RDP curve on :attr:`orders`."""
        c = np.asarray(curve, dtype=np.float64)
        if c.shape != self.rdp.shape or np.any(c < 0):
            raise ParameterError("an RDP curve must be >= 0 on the accountant's orders")
        self.rdp = self.rdp + c

    def add_round(self, params: DPParams, survivors: int, sampling_rate: float = 1.0,
                  delta: float = 1e-6, adjacency: str = "replace") -> RoundGuarantee:
        """Compose one round; returns that round's own guarantee at ``delta``."""
        curve = _round_curve(params, survivors, sampling_rate, self.orders, adjacency)
        self.add_curve(curve)
        eps, order = epsilon_from_rdp(self.orders, curve, delta)
        got = RoundGuarantee(survivors, survivors * float(params.local_noise), eps, delta, order)
        self.rounds.append(got)
        return got

    def add_report(self, report: "DPRoundReport", sampling_rate: float | None = None) -> RoundGuarantee:
        """Compose a completed round from its report (its parameters and
        actual survivors); ``sampling_rate`` defaults to the report's."""
        rate = report.sampling_rate if sampling_rate is None else sampling_rate
        return self.add_round(report.params, report.survivors, rate, report.delta)

    def epsilon(self, delta: float) -> float:
        """The (epsilon, delta) guarantee of every round composed so far."""
        return epsilon_from_rdp(self.orders, self.rdp, delta)[0]


# --------------------------------------------------------------------------- calibration

def _total_epsilon(mechanism: str, noise: float, *, delta: float, rounds: int, n_min: int, sampling_rate: float,
                   l2: float, l1: float, dim: int, orders: "Sequence[float] | np.ndarray | None",
                   adjacency: str) -> float:
    local = noise / n_min
    shares = _shares(n_min, adjacency)

    def curve(a: np.ndarray) -> np.ndarray:
        return mechanism_rdp(mechanism, a, l2=l2, l1=l1, dim=dim, local_noise=local, n=shares)

    per_round = subsampled_rdp(orders, curve, sampling_rate)
    return epsilon_from_rdp(orders, rounds * per_round, delta)[0]


def calibrate_noise(mechanism: str, target_epsilon: float, delta: float, *, rounds: int, n_min: int,
                    l2_sensitivity: float, l1_sensitivity: float, dim: int, sampling_rate: float = 1.0,
                    denominator: int = 1 << 10, orders: "Sequence[float] | np.ndarray | None" = None,
                    adjacency: str = "replace") -> Fraction:
    """The least aggregate noise variance (integer units, a rational with the
    given denominator, rounded up) for which ``rounds`` rounds of ``n_min``
    clients at sampling rate ``sampling_rate`` are ``(target_epsilon, delta)``-DP:
    bisection on the variance (epsilon decreases with it). Pass the result as
    :attr:`DPParams.noise`, with the sensitivities of those parameters."""
    eps_target = _positive(target_epsilon, "target_epsilon")
    if not (isinstance(rounds, int) and rounds >= 1 and isinstance(n_min, int) and n_min >= 1):
        raise ParameterError("rounds and n_min must be integers >= 1")

    def eps(noise: float) -> float:
        return _total_epsilon(mechanism, noise, delta=delta, rounds=rounds, n_min=n_min,
                              sampling_rate=sampling_rate, l2=l2_sensitivity, l1=l1_sensitivity, dim=dim,
                              orders=orders, adjacency=adjacency)

    lo = 0.25 * n_min  # each client's sigma >= 1/2 (the KLS bound's range)
    if eps(lo) <= eps_target:
        hi = lo
    else:
        hi = max(lo * 2.0, 1.0)
        while eps(hi) > eps_target:
            hi *= 2.0
            if hi > 1e30:
                raise ParameterError(f"no noise reaches epsilon = {eps_target} at delta = {delta}")
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            if eps(mid) > eps_target:
                lo = mid
            else:
                hi = mid
            if hi / lo < 1 + 1e-9:
                break
    out = Fraction(math.ceil(Fraction(hi) * denominator), denominator)
    assert eps(float(out)) <= eps_target * (1 + 1e-12)
    return out
