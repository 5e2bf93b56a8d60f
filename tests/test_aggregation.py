"""Aggregation rules over the two sums the server learns, checked against
hand-computed float references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secagg.aggregation import (
    RULES,
    Rule,
    client_weight,
    fedavg_apply,
    finalize,
    get_rule,
    hybrid_weight,
    reference_aggregate,
)
from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.ring import choose_ring_bits, dtype_for, from_ring, to_ring
from secagg.errors import ParameterError
from secagg.primitives.randomness import DeterministicRandom

UPDATES = [np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, -6.0])]
WEIGHTS = [1.0, 2.0, 3.0]


# ------------------------------------------------------ rules, by hand

def test_sum_rule() -> None:
    assert reference_aggregate("sum", UPDATES).tolist() == [9.0, 0.0]
    # "sum" encodes w = 1: weights given are not applied
    assert reference_aggregate("sum", UPDATES, WEIGHTS).tolist() == [9.0, 0.0]


def test_mean_rule() -> None:
    assert reference_aggregate("mean", UPDATES).tolist() == [3.0, 0.0]
    assert reference_aggregate("mean", UPDATES, WEIGHTS).tolist() == [3.0, 0.0]


@pytest.mark.parametrize("rule", ["weighted", "fedavg", "hybrid"])
def test_weighted_rules(rule: str) -> None:
    # (1*[1,2] + 2*[3,4] + 3*[5,-6]) / 6 = [22, -8] / 6
    got = reference_aggregate(rule, UPDATES, WEIGHTS)
    assert got == pytest.approx([22 / 6, -8 / 6], rel=1e-15)


def test_reference_clips_before_weighting() -> None:
    # clipped to [-2, 2]: [1,2], [2,2], [2,-2]
    assert reference_aggregate("sum", UPDATES, clip=2.0).tolist() == [5.0, 2.0]
    got = reference_aggregate("weighted", UPDATES, WEIGHTS, clip=2.0)
    assert got == pytest.approx([(1 + 4 + 6) / 6, (2 + 4 - 6) / 6])


def test_reference_flattens_and_checks_lengths() -> None:
    got = reference_aggregate("mean", [np.ones((2, 2)), np.zeros((2, 2))])
    assert got.shape == (4,) and got.tolist() == [0.5] * 4
    with pytest.raises(ParameterError):
        reference_aggregate("weighted", UPDATES, WEIGHTS[:2])
    with pytest.raises(ParameterError):
        reference_aggregate("weighted", UPDATES, WEIGHTS + [1.0])


def test_finalize_by_rule() -> None:
    s = np.array([6.0, -3.0])
    assert finalize("sum", s, 0.0).tolist() == [6.0, -3.0]
    for rule in ("mean", "weighted", "fedavg", "hybrid"):
        assert finalize(rule, s, 3.0).tolist() == [2.0, -1.0]
    assert finalize(Rule("mean"), [1, 2], 2).tolist() == [0.5, 1.0]


@pytest.mark.parametrize("sum_weights", [0.0, -1.0, -0.0, math.nan])
@pytest.mark.parametrize("rule", ["mean", "weighted", "fedavg", "hybrid"])
def test_finalize_without_positive_weight_refused(rule: str, sum_weights: float) -> None:
    with pytest.raises(ParameterError):
        finalize(rule, np.ones(2), sum_weights)


def test_fedavg_apply() -> None:
    g = np.array([1.0, -1.0, 0.5])
    u = np.array([0.5, 0.5, -1.0])
    assert fedavg_apply(g, u).tolist() == [1.5, -0.5, -0.5]
    assert fedavg_apply(g, u, server_lr=0.1) == pytest.approx([1.05, -0.95, 0.4])
    # the global model is not modified in place
    assert g.tolist() == [1.0, -1.0, 0.5]
    with pytest.raises(ParameterError):
        fedavg_apply(g, u[:2])
    with pytest.raises(ParameterError):
        fedavg_apply(np.zeros((2, 2)), np.zeros(4))


# ---------------------------------------------------------------- weights

def test_hybrid_weight_by_hand() -> None:
    assert hybrid_weight(100, 0.8, alpha=0.5, beta=2.0) == pytest.approx(10 * 0.64)
    assert hybrid_weight(3, 2) == 6.0
    assert hybrid_weight(16, 9, alpha=0.5, beta=0.5) == pytest.approx(12.0)
    assert hybrid_weight(8, 0.5, alpha=1.0, beta=0.0) == 8.0


@pytest.mark.parametrize("examples, quality, alpha, beta", [
    (0, 1, 1, 1), (-1, 1, 1, 1), (1, 0, 1, 1), (1, -0.5, 1, 1), (math.nan, 1, 1, 1), (1, math.inf, 1, 1),
    (1e300, 1.0, 2.0, 1.0),   # overflows to infinity
    (1e-300, 1.0, 2.0, 1.0),  # underflows to zero
])
def test_hybrid_weight_refuses_non_positive_or_non_finite(examples: float, quality: float, alpha: float,
                                                          beta: float) -> None:
    with pytest.raises(ParameterError):
        hybrid_weight(examples, quality, alpha, beta)


def test_client_weight_per_rule() -> None:
    assert client_weight("sum", weight=5.0) == 1.0
    assert client_weight("mean", examples=10) == 1.0
    assert client_weight("fedavg", examples=120) == 120.0
    assert client_weight("hybrid", examples=100, quality=0.5) == 50.0
    assert client_weight(Rule("hybrid", alpha=0.5, beta=2.0), examples=100, quality=0.5) == pytest.approx(2.5)
    assert client_weight("weighted", weight=2.5) == 2.5
    assert client_weight("weighted", examples=7) == 7.0
    assert client_weight("weighted", quality=0.9) == 0.9


@pytest.mark.parametrize("rule, kwargs", [
    ("fedavg", {}),
    ("fedavg", {"weight": 3.0}),
    ("fedavg", {"examples": 0}),
    ("fedavg", {"examples": -5}),
    ("fedavg", {"examples": math.inf}),
    ("hybrid", {"examples": 10}),
    ("hybrid", {"quality": 0.5}),
    ("hybrid", {"examples": 10, "quality": 0}),
    ("weighted", {}),
    ("weighted", {"weight": 1.0, "examples": 2}),
    ("weighted", {"weight": 1.0, "examples": 2, "quality": 0.5}),
    ("weighted", {"weight": 0.0}),
    ("weighted", {"weight": -1.0}),
    ("weighted", {"weight": math.nan}),
])
def test_client_weight_errors(rule: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(ParameterError):
        client_weight(rule, **kwargs)


# ----------------------------------------------------------------- Rule

def test_rule_validation() -> None:
    assert set(RULES) == {"sum", "mean", "weighted", "fedavg", "hybrid"}
    assert get_rule("fedavg") == Rule("fedavg")
    r = Rule("hybrid", alpha=0.5)
    assert get_rule(r) is r
    assert [Rule(n).uses_weights for n in RULES] == [False, False, True, True, True]
    for bad in (dict(name="median"), dict(name=""), dict(server_lr=0.0), dict(server_lr=-1.0),
                dict(server_lr=math.nan), dict(alpha=math.inf), dict(beta=math.nan), dict(alpha="1")):
        with pytest.raises(ParameterError):
            Rule(**bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        client_weight("median", weight=1.0)


# ---------------------------------------- the rule through the encoding

@pytest.mark.parametrize("rule", RULES)
def test_rule_through_fixed_point_and_ring(rule: str) -> None:
    """Clients encode [w*x, w]; the ring sum, decoded and finalized, matches the
    float reference within the encoding's error bound."""
    gen = np.random.default_rng(3)
    n, d = 40, 25
    updates = [gen.uniform(-2, 2, d) for _ in range(n)]
    examples = gen.integers(1, 500, n).astype(float)
    quality = gen.uniform(0.1, 1.0, n)
    r = Rule(rule, alpha=0.5, beta=1.0)

    def weight_of(e: float, q: float) -> float:
        if rule == "weighted":
            return client_weight(r, weight=e)
        if rule == "hybrid":
            return client_weight(r, examples=e, quality=q)
        return client_weight(r, examples=e)  # 1.0 for sum and mean

    weights = [weight_of(float(e), float(q)) for e, q in zip(examples, quality)]
    enc = FixedPoint(clip=1.5, frac_bits=12, max_weight=500.0)
    bits = choose_ring_bits(n, enc)
    rng = DeterministicRandom(rule)
    acc = np.zeros(d + 1, dtype=dtype_for(bits))
    for x, w in zip(updates, weights):
        q = enc.quantize(x, w, rng).values
        qw = enc.quantize_weight(w, rng)
        acc += to_ring(np.append(q, qw), bits)
    total = enc.decode(from_ring(acc, bits))
    got = finalize(r, total[:d], float(total[d]))
    want = reference_aggregate(r, updates, weights, clip=1.5)
    e = enc.sum_error_bound(n)
    s_w = float(sum(weights))
    bound = e if rule == "sum" else (e + np.abs(want) * e) / (s_w - e)
    assert np.all(np.abs(got - want) <= bound)
