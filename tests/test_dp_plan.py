"""The distributed-DP plan (secagg/dp/plan.py), the round parameters as the
protocols carry them (secagg/dp/round.py), adaptive clipping's update rule
and the accountant's reports (protocols/dp/SPEC.md §9)."""

from __future__ import annotations

import copy
import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from secagg.dp import DPAccountant, DPConfig, DPParams, DPRoundParams, DPRoundReport, next_clip
from secagg.dp.accounting import calibrate_noise, round_guarantee
from secagg.dp.plan import MAX_LOCAL_NOISE
from secagg.dp.pipeline import ring_sum, rounding_bound
from secagg.encoding import wire
from secagg.errors import ParameterError, WireFormatError
from secagg.primitives.randomness import DeterministicRandom

SEED = bytes(range(32))


# --------------------------------------------------------------------------- DPConfig validation

@pytest.mark.parametrize("kwargs", [
    dict(epsilon=0.0), dict(epsilon=-1.0), dict(epsilon=float("nan")), dict(epsilon=float("inf")),
    dict(epsilon=1.0, delta=0.0), dict(epsilon=1.0, delta=1.0), dict(epsilon=1.0, rounds=0),
    dict(epsilon=1.0, rounds=2.0), dict(epsilon=1.0, mechanism="laplace"), dict(epsilon=1.0, clip=0.0),
    dict(epsilon=1.0, bits=63), dict(epsilon=1.0, bits=1), dict(epsilon=1.0, bits=True),
    dict(epsilon=1.0, sampling_rate=0.0), dict(epsilon=1.0, sampling_rate=1.5),
    dict(epsilon=1.0, adaptive_clip=1), dict(epsilon=1.0, target_quantile=1.0),
    dict(epsilon=1.0, target_quantile=0.0), dict(epsilon=1.0, clip_learning_rate=0.0),
    dict(epsilon=True),
])
def test_config_refuses_bad_values(kwargs):
    with pytest.raises(ParameterError):
        DPConfig(**kwargs)


def test_config_is_frozen_and_replace_gives_the_next_rounds_config():
    cfg = DPConfig(epsilon=2, delta=1e-6, rounds=5, clip=1)
    assert isinstance(cfg.epsilon, float) and isinstance(cfg.clip, float)  # normalised
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.clip = 2.0  # type: ignore[misc]
    nxt = dataclasses.replace(cfg, clip=0.5)
    assert nxt.clip == 0.5 and nxt.epsilon == 2.0
    with pytest.raises(ParameterError):
        dataclasses.replace(cfg, clip=-1.0)


# --------------------------------------------------------------------------- planning a round

@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_round_params_meet_the_target_over_all_rounds_with_n_min_survivors(mechanism):
    cfg = DPConfig(epsilon=3.0, delta=1e-5, rounds=20, mechanism=mechanism)
    dp = cfg.round_params(300, n_min=6, n_max=10, rotation_seed=SEED)
    assert (dp.dim, dp.n_min, dp.n_max, dp.bits, dp.delta) == (300, 6, 10, 20, 1e-5)
    acc = DPAccountant()
    for _ in range(cfg.rounds):
        acc.add_round(dp.pipeline, 6, 1.0, cfg.delta)
    total = acc.epsilon(cfg.delta)
    assert total <= cfg.epsilon
    assert total >= 0.98 * cfg.epsilon  # calibrated, not padded
    # one round alone is well within the target; more survivors only help
    one = round_guarantee(dp.pipeline, 6, cfg.delta).epsilon
    assert one < cfg.epsilon
    assert round_guarantee(dp.pipeline, 10, cfg.delta).epsilon < one


def test_granularity_is_the_finest_power_of_two_step_that_fits_the_bits():
    cfg = DPConfig(epsilon=1.0, rounds=10, bits=16)
    dp = cfg.round_params(1000, n_min=20, n_max=40, rotation_seed=SEED)
    k = round(-math.log2(dp.granularity / dp.clip))
    assert dp.granularity == math.ldexp(dp.clip, -k)  # a power-of-two fraction of the clip
    # the next finer step, with its own calibrated noise, would wrap (or exceed the sampler's range)
    d = dp.padded_dim
    l2 = rounding_bound(math.ldexp(1.0, k + 1), d, math.exp(-0.5))
    finer = calibrate_noise("dgauss", 1.0, 1e-5, rounds=10, n_min=20, l2_sensitivity=l2,
                            l1_sensitivity=min(l2 * l2, math.sqrt(d) * l2), dim=d)
    try:
        p = DPParams("dgauss", clip=dp.clip, bits=16, granularity=dp.granularity / 2, noise=finer, n_min=20,
                     dim=1000, rotation_seed=SEED, n_max=40)
    except ParameterError:
        pass
    else:
        assert p.local_noise > MAX_LOCAL_NOISE
    # more bits: a finer granularity
    assert cfg.round_params(1000, n_min=20, n_max=40, rotation_seed=SEED).granularity == dp.granularity
    wider = dataclasses.replace(cfg, bits=24).round_params(1000, n_min=20, n_max=40, rotation_seed=SEED)
    assert wider.granularity < dp.granularity


def test_plan_is_scale_free_in_the_clip():
    a = DPConfig(epsilon=1.0, rounds=3, clip=1.0).round_params(64, n_min=5, n_max=9, rotation_seed=SEED)
    b = DPConfig(epsilon=1.0, rounds=3, clip=8.0).round_params(64, n_min=5, n_max=9, rotation_seed=SEED)
    assert b.granularity == 8 * a.granularity and b.noise == a.noise


def test_plan_that_no_granularity_fits_is_refused_with_what_to_change():
    with pytest.raises(ParameterError, match="no granularity fits 4 bits.*more bits"):
        DPConfig(epsilon=1.0, rounds=10, bits=4).round_params(4096, n_min=50, n_max=500, rotation_seed=SEED)


@pytest.mark.parametrize("kwargs", [dict(dim=0, n_min=2), dict(dim=10, n_min=0), dict(dim=10, n_min=5, n_max=4),
                                    dict(dim=10, n_min=2, rotation_seed=b"short")])
def test_round_params_refuse_bad_shapes(kwargs):
    with pytest.raises(ParameterError):
        DPConfig(epsilon=1.0).round_params(**kwargs)


def test_rotation_seed_is_fresh_by_default():
    cfg = DPConfig(epsilon=1.0)
    assert cfg.round_params(10, n_min=3).rotation_seed != cfg.round_params(10, n_min=3).rotation_seed


def test_client_policy_refuses_a_round_with_less_noise_or_no_dp():
    cfg = DPConfig(epsilon=2.0, rounds=4)
    dp = cfg.round_params(50, n_min=4, n_max=6, rotation_seed=SEED)
    cfg.check_round(dp)  # the plan's own parameters pass
    with pytest.raises(ParameterError, match="no DP"):
        cfg.check_round(None)
    lower = Fraction(dp.noise) * Fraction(9, 10)
    weaker = dataclasses.replace(dp, noise_numerator=lower.numerator, noise_denominator=lower.denominator)
    with pytest.raises(ParameterError, match="not this client's plan"):
        cfg.check_round(weaker)
    with pytest.raises(ParameterError, match="not this client's plan"):
        cfg.check_round(dataclasses.replace(dp, delta=1e-3))
    with pytest.raises(ParameterError, match="not this client's plan"):
        cfg.check_round(dataclasses.replace(dp, clip=2.0))  # a fixed clip is part of the plan
    adaptive = DPConfig(epsilon=2.0, rounds=4, adaptive_clip=True)
    moved = dataclasses.replace(adaptive, clip=0.3).round_params(50, n_min=4, n_max=6, rotation_seed=SEED)
    adaptive.check_round(moved)  # adaptive: the clip moves, the rest is the plan's


# --------------------------------------------------------------------------- DPRoundParams on the wire

def _dp(**kw) -> DPRoundParams:
    return DPConfig(epsilon=2.0, rounds=2, **kw).round_params(20, n_min=3, n_max=5, rotation_seed=SEED)


def test_round_params_round_trip_on_the_wire():
    for dp in (_dp(), _dp(adaptive_clip=True, mechanism="skellam")):
        data = wire.encode(dp)
        back = wire.decode(data, DPRoundParams)
        assert back == dp and back.pipeline == dp.pipeline and wire.encode(back) == data


def test_round_params_refuse_inconsistent_or_wrapping_values():
    dp = _dp()
    with pytest.raises(ParameterError, match="wrap|could reach"):
        dataclasses.replace(dp, bits=8)  # the same noise in 8 bits could wrap
    with pytest.raises(ParameterError, match="reduced"):
        dataclasses.replace(dp, noise_numerator=2 * dp.noise_numerator, noise_denominator=2 * dp.noise_denominator)
    with pytest.raises(ParameterError):
        dataclasses.replace(dp, clip=1)  # an int is not the wire's float
    with pytest.raises(ParameterError):
        dataclasses.replace(dp, delta=1.0)
    with pytest.raises(ParameterError):
        dataclasses.replace(dp, count_scale=-1.0)
    with pytest.raises(ParameterError, match="max_retries"):
        dataclasses.replace(dp, max_retries=1 << 17)  # beyond its wire range: would encode but not decode
    # the same refusals come out of the decoder as wire errors, building nothing
    forged = copy.copy(dp)
    object.__setattr__(forged, "bits", 8)  # what a dishonest sender could encode
    bad = wire.encode(forged)
    assert bad != wire.encode(dp)
    with pytest.raises(WireFormatError, match="could reach"):
        wire.decode(bad, DPRoundParams)


def test_round_params_from_pipeline_round_trips():
    dp = _dp(adaptive_clip=True)
    again = DPRoundParams.from_pipeline(dp.pipeline, clip=dp.clip, delta=dp.delta, count_scale=dp.count_scale,
                                        target_quantile=dp.target_quantile,
                                        clip_learning_rate=dp.clip_learning_rate)
    assert again == dp
    with pytest.raises(ParameterError):
        DPRoundParams.from_pipeline(dp.pipeline, clip=dp.clip, delta=dp.delta)  # the count coordinate lost


def test_encode_and_decode_sum_of_a_round():
    dp = _dp()
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=20) * 0.1 for _ in range(4)]
    encs = [dp.encode_update(x, DeterministicRandom(i)) for i, x in enumerate(xs)]
    total, count = dp.decode_sum(ring_sum([e.values for e in encs], dp.bits))
    assert count is None and total.shape == (20,)
    sd = math.sqrt(4 * float(dp.pipeline.local_noise)) * dp.granularity
    assert np.max(np.abs(total - np.sum(xs, axis=0))) < 6 * sd + 4 * dp.granularity
    with pytest.raises(ParameterError):
        dp.decode_sum(np.zeros(3, dtype=np.uint64))
    with pytest.raises(ParameterError):
        dp.encode_update(np.zeros(19))


# --------------------------------------------------------------------------- adaptive clipping

def test_next_clip_is_the_geometric_rule():
    assert next_clip(1.0, 0.5, 0.5, 0.2) == 1.0  # at the target quantile: unchanged
    # 80 % unclipped, target 50 %: shrink by exp(-0.2 * 0.3)
    assert next_clip(2.0, 0.2, 0.5, 0.2) == pytest.approx(2.0 * math.exp(-0.06), rel=1e-15)
    # everything clipped: grow by exp(0.2 * 0.5)
    assert next_clip(2.0, 1.0, 0.5, 0.2) == pytest.approx(2.0 * math.exp(0.1), rel=1e-15)
    # the noised estimate outside [0, 1] is clamped (post-processing)
    assert next_clip(1.0, 1.7, 0.5, 0.2) == next_clip(1.0, 1.0, 0.5, 0.2)
    assert next_clip(1.0, -0.4, 0.5, 0.2) == next_clip(1.0, 0.0, 0.5, 0.2)
    for bad in [(0.0, 0.5, 0.5, 0.2), (1.0, float("nan"), 0.5, 0.2), (1.0, 0.5, 1.0, 0.2), (1.0, 0.5, 0.5, 0.0)]:
        with pytest.raises(ParameterError):
            next_clip(*bad)


def test_adaptive_clipping_converges_to_the_target_quantile_of_norms():
    """Driving the rule with exact fractions moves the clip to the quantile."""
    norms = np.linspace(0.1, 10.0, 1000)
    clip = 0.2
    for _ in range(200):
        clip = next_clip(clip, float(np.mean(norms > clip)), 0.5, 0.2)
    assert abs(clip - float(np.median(norms))) < 0.2


def test_adaptive_round_carries_the_clipped_count_noised_and_accounted():
    cfg = DPConfig(epsilon=4.0, rounds=1, adaptive_clip=True, clip=1.0)
    dp = cfg.round_params(16, n_min=40, n_max=40, rotation_seed=SEED)
    assert dp.adaptive and dp.pipeline.dim == 17
    assert dp.pipeline.clip == pytest.approx(math.hypot(1.0, dp.count_scale))
    rng = np.random.default_rng(5)
    # 30 of 40 updates above the clip
    xs = [rng.normal(size=16) * (2.0 if i < 30 else 0.01) for i in range(40)]
    encs = [dp.encode_update(x, DeterministicRandom(100 + i)) for i, x in enumerate(xs)]
    assert sum(e.clipped for e in encs) == 30
    total, count = dp.decode_sum(ring_sum([e.values for e in encs], dp.bits))
    assert count is not None and abs(count - 30) < 6 * dp.count_noise_stddev + 1
    rep = dp.report(40, count)
    assert rep.clipped_fraction == pytest.approx(count / 40)
    assert rep.next_clip == next_clip(1.0, count / 40, 0.5, 0.2)
    # the count coordinate is inside the accounted vector: the same guarantee as the plan's
    assert rep.epsilon <= cfg.epsilon
    with pytest.raises(ParameterError):
        dp.report(40)  # an adaptive round reports its count


# --------------------------------------------------------------------------- reports and the accountant

def test_accountant_add_report_composes_like_add_round():
    dp = _dp()
    rep = dp.report(4)
    assert isinstance(rep, DPRoundReport) and rep.survivors == 4 and rep.clipped_fraction is None
    assert rep.noise_variance == pytest.approx(4 * float(dp.pipeline.local_noise) * dp.granularity ** 2)
    a, b = DPAccountant(), DPAccountant()
    for _ in range(3):
        a.add_report(rep)
        b.add_round(dp.pipeline, 4, 1.0, dp.delta)
    assert a.epsilon(1e-5) == b.epsilon(1e-5) > rep.epsilon
    with pytest.raises(ParameterError):
        dp.report(2)  # fewer survivors than n_min: no guarantee to report
    s = rep.summary()
    assert s["survivors"] == 4 and s["epsilon"] == rep.epsilon and s["next_clip"] is None
