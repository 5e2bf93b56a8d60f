"""Distributed differential privacy over the Flower adapter (secagg.flower):
the ``secagg-dp-*`` run-config settings, DP rounds over the in-process Grid of
test_flower_adapter (masking and Paillier), the run's DP budget (epsilon per
round, epsilon spent, adaptive clipping) and the nodes' DP policy against a
server that switches DP off or weakens it."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the flower extra (flwr) is not installed")
pytest.importorskip("dp_accounting", reason="the dp extra (dp-accounting) is not installed")

from flwr.app import ConfigRecord  # noqa: E402
from test_flower_adapter import (NODES, InProcessGrid, delta_for, make_client_app, model,  # noqa: E402
                                 provision_shares, task_identity)

from secagg.dp import DPConfig  # noqa: E402
from secagg.dp.pipeline import clip_l2  # noqa: E402
from secagg.errors import ParameterError  # noqa: E402
from secagg.flower import SecAggFedAvg, SecAggSettings, run_secure_round  # noqa: E402
from secagg.flower.client import round_epsilon  # noqa: E402
from secagg.flower.keys import deal_committee_files  # noqa: E402
from secagg.flower.records import RECORD_KEY, STATE_KEY, ModelLayout  # noqa: E402
from secagg.flower.server import DPBudget, SecAggConfigError, make_params  # noqa: E402

__all__ = ["task_identity"]  # the adapter tests' autouse fixture: Flower's task identity for this process

#: 200 values: enough coordinates to compare the aggregate's error with the noise's standard deviation
DP_SHAPES = {"w": (20, 9), "b": (20,)}
DP_DIM = 200
TIMEOUTS = dict(train_timeout=0.5, stage_timeout=0.5, poll_interval=0.01)


def dp_settings(**kw) -> SecAggSettings:
    base = dict(protocol="secagg", rule="mean", dp_epsilon=8.0, dp_rounds=1, dp_clip=1.0, **TIMEOUTS)
    base.update(kw)
    return SecAggSettings(**base)


def dp_round(grid, settings, budget, nodes=NODES, server_round=1, arrays=None):
    arrays = arrays or model(shapes=DP_SHAPES)
    cfg = ConfigRecord({"server-round": server_round})
    return run_secure_round(grid, nodes, arrays, cfg, settings, server_round, dp_budget=budget), arrays


def clipped_mean(included, server_round=1, clip=1.0, dim=DP_DIM):
    return np.mean([clip_l2(delta_for(n, server_round, dim), clip)[0] for n in included], axis=0)


# ------------------------------------------------------------------ settings


def test_dp_settings_from_run_config_and_validation():
    s = SecAggSettings.from_run_config({"secagg-rule": "mean", "secagg-dp-epsilon": 3, "secagg-dp-delta": 1e-6,
                                        "secagg-dp-mechanism": "skellam", "secagg-dp-clip": 0.5,
                                        "secagg-dp-bits": 24, "secagg-dp-rounds": 0,
                                        "secagg-dp-adaptive-clip": True})
    assert s.dp and (s.dp_epsilon, s.dp_delta, s.dp_mechanism, s.dp_clip, s.dp_bits, s.dp_rounds,
                     s.dp_adaptive_clip) == (3.0, 1e-6, "skellam", 0.5, 24, None, True)
    assert SecAggSettings.from_run_config(s.as_run_config()) == s
    cfg = s.dp_config(4)  # secagg-dp-rounds = 0: the run's number of rounds
    assert cfg == DPConfig(epsilon=3.0, delta=1e-6, rounds=4, mechanism="skellam", clip=0.5, bits=24,
                           adaptive_clip=True)
    assert SecAggSettings().dp is False and SecAggSettings().dp_config(3) is None  # off by default
    with pytest.raises(ParameterError, match='secagg-rule = "mean", not \'fedavg\''):
        SecAggSettings(dp_epsilon=1.0)  # a weighted rule would release the weights without noise
    with pytest.raises(ParameterError, match="secagg-rule"):
        SecAggSettings.from_run_config({"secagg-dp-epsilon": 1.0, "secagg-rule": "weighted"})
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ParameterError, match="secagg-dp-epsilon must be a number"):
            SecAggSettings(rule="mean", dp_epsilon=bad)
    with pytest.raises(ParameterError, match="secagg-dp-epsilon must be a number"):
        SecAggSettings.from_run_config({"secagg-dp-epsilon": "2"})
    for kw, key in ((dict(dp_delta=1.5), "secagg-dp-delta"), (dict(dp_mechanism="laplace"), "secagg-dp-mechanism"),
                    (dict(dp_clip=0.0), "secagg-dp-clip"), (dict(dp_bits=1), "secagg-dp-bits")):
        with pytest.raises(ParameterError, match=key):
            SecAggSettings(rule="mean", dp_epsilon=1.0, **kw)
    with pytest.raises(ParameterError, match="must be an integer"):
        SecAggSettings.from_run_config({"secagg-dp-rounds": 2.5})
    with pytest.raises(ParameterError, match="true or false"):
        SecAggSettings.from_run_config({"secagg-dp-adaptive-clip": 1})
    with pytest.raises(ParameterError, match="unknown run-config key 'secagg-dp-epsillon'"):
        SecAggSettings.from_run_config({"secagg-dp-epsillon": 1.0})
    # fewer planned rounds than the run has: the spent epsilon would exceed the target
    with pytest.raises(ParameterError, match="secagg-dp-rounds = 2 but the run has 3"):
        SecAggSettings(rule="mean", dp_epsilon=1.0, dp_rounds=2).dp_config(3)
    with pytest.raises(ParameterError, match="set secagg-dp-rounds"):
        SecAggSettings(rule="mean", dp_epsilon=1.0).dp_config()


@pytest.mark.parametrize("n, degree", [(12, 6), (12, None), (40, 10)])
def test_the_noise_is_calibrated_for_the_rounds_threshold(n, degree):
    """n_min of a masking round's DP parameters is the threshold its
    parameters derive (SecAgg+ with a sparse graph too), n_max its node
    count; each round gets a fresh rotation seed."""
    settings = dp_settings(protocol="secagg+", degree=degree)
    budget = DPBudget.of(settings, 1)
    a, b = make_params(settings, n, DP_DIM, dp_budget=budget), make_params(settings, n, DP_DIM, dp_budget=budget)
    assert a.dp is not None and a.dp.n_min == a.threshold and a.dp.n_max == n
    if degree is not None:
        assert a.degree == degree < n - 1 and a.threshold < n // 2  # sparse: a floor well below a majority
    assert a.dp.rotation_seed != b.dp.rotation_seed and a.session_nonce != b.session_nonce
    assert make_params(dataclasses.replace(settings, dp_epsilon=0.0, rule="fedavg"), n, DP_DIM).dp is None


def test_a_dp_round_without_a_budget_or_with_a_weighted_rule_is_refused_before_any_message():
    grid = InProcessGrid(NODES)
    settings = dp_settings()
    with pytest.raises(SecAggConfigError, match="needs the run's DPBudget"):
        dp_round(grid, settings, None)
    with pytest.raises(SecAggConfigError, match="the rule must be 'mean', not 'fedavg'"):
        run_secure_round(grid, NODES, model(shapes=DP_SHAPES), ConfigRecord({"server-round": 1}), settings, 1,
                         rule="fedavg", dp_budget=DPBudget.of(settings, 1))
    with pytest.raises(SecAggConfigError, match="DP off"):
        dp_round(grid, dataclasses.replace(settings, dp_epsilon=0.0), DPBudget.of(settings, 1))
    with pytest.raises(SecAggConfigError, match="the rule must be 'mean'"):
        SecAggFedAvg(settings=settings, rule="fedavg")
    assert all(v == 0 for v in grid.received.values())


# ------------------------------------------------------------------ DP rounds


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_a_dp_round_reports_its_epsilon_and_its_noise_matches_the_report(protocol, caplog):
    grid = InProcessGrid(NODES)
    settings = dp_settings(protocol=protocol)
    budget = DPBudget.of(settings, 1)
    with caplog.at_level(logging.INFO, logger="flwr.secagg"):
        (report, new), arrays = dp_round(grid, settings, budget)
    assert report.outcome == "completed" and sorted(report.included) == NODES
    dp = report.dp
    threshold = report.params["threshold"]
    assert report.params["dp"]["n_min"] == threshold == dp["n_min"] and dp["n_max"] == len(NODES)
    assert dp["survivors"] == len(NODES) and dp["rounds_released"] == 1 and dp["rounds_planned"] == 1
    # one round planned: the round's epsilon is within the target (5 survivors, noise for n_min < 5: below it)
    assert 0 < dp["epsilon_round"] <= settings.dp_epsilon * (1 + 1e-9)
    assert dp["epsilon_spent"] == pytest.approx(dp["epsilon_round"], rel=1e-6)
    assert budget.spent == dp["epsilon_spent"] and len(budget.reports) == 1
    assert report.sum_weights == len(NODES)  # unweighted: every node counted once
    # the aggregate is the clipped mean plus noise of the reported standard deviation (200 coordinates)
    err = report.mean_update - clipped_mean(NODES)
    assert dp["mean_noise_std"] > 0.01  # the noise is not negligible at this epsilon: the check below can fail
    assert 0.75 < float(np.std(err)) / dp["mean_noise_std"] < 1.3
    assert abs(float(np.mean(err))) < 4 * dp["mean_noise_std"] / math.sqrt(DP_DIM)
    layout = ModelLayout.of(arrays)
    np.testing.assert_allclose(layout.to_vector(new) - layout.to_vector(arrays), report.mean_update, atol=1e-5)
    # the ServerApp log line and the report's JSON
    line = next(r.getMessage() for r in caplog.records if "DP (dgauss)" in r.getMessage())
    assert f"epsilon {dp['epsilon_round']:.4g} this round" in line and "noise std" in line and "5 survivors" in line
    assert json.loads(report.to_json())["dp"]["epsilon_spent"] == pytest.approx(dp["epsilon_spent"])
    for ctx in grid.contexts.values():
        assert STATE_KEY not in ctx.state.config_records


def test_dp_noise_is_calibrated_for_the_threshold_and_a_dropout_keeps_the_report_honest():
    victim = NODES[2]
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "silent" if (node, n) == (victim, 1) else "ok")
    settings = dp_settings()
    budget = DPBudget.of(settings, 1)
    (report, _), _ = dp_round(grid, settings, budget)
    survivors = [n for n in NODES if n != victim]
    assert sorted(report.included) == survivors and report.dp["survivors"] == 4
    full = DPBudget.of(settings, 1)
    (full_report, _), _ = dp_round(InProcessGrid(NODES), settings, full)
    # fewer survivors, less noise in the sum: a larger epsilon, still within the target (noise for n_min)
    assert full_report.dp["epsilon_round"] < report.dp["epsilon_round"] <= settings.dp_epsilon * (1 + 1e-9)
    err = report.mean_update - clipped_mean(survivors)
    assert 0.75 < float(np.std(err)) / report.dp["mean_noise_std"] < 1.3


def test_an_aborted_dp_round_spends_nothing():
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "silent" if node in NODES[:3] and n == 3 else "ok")
    settings = dp_settings(on_abort="skip")
    budget = DPBudget.of(settings, 1)
    (report, new), _ = dp_round(grid, settings, budget)
    assert report.outcome == "aborted" and new is None
    assert report.dp == {} and budget.reports == [] and budget.spent == 0.0


def test_the_strategy_composes_epsilon_over_rounds_and_logs_it(caplog):
    grid = InProcessGrid(NODES)
    settings = dp_settings(dp_epsilon=6.0, dp_rounds=None)  # secagg-dp-rounds = 0: the rounds the strategy runs
    seen = []
    strategy = SecAggFedAvg(settings=settings, on_round=seen.append, min_available_nodes=5, min_train_nodes=5,
                            fraction_evaluate=0.0)
    with caplog.at_level(logging.INFO, logger="flwr.secagg"):
        result = strategy.start(grid, model(shapes=DP_SHAPES), num_rounds=3, timeout=1)
    assert [r.outcome for r in seen] == ["completed"] * 3
    assert strategy.dp_budget is not None and strategy.dp_budget.target.rounds == 3  # the rounds run
    spent = [r.dp["epsilon_spent"] for r in seen]
    assert spent[0] < spent[1] < spent[2] <= 6.0 * (1 + 1e-9)
    # composition is sub-additive under RDP, and more than one round alone
    assert spent[2] < sum(r.dp["epsilon_round"] for r in seen) and spent[2] > seen[2].dp["epsilon_round"]
    assert result.train_metrics_clientapp[3]["secagg-dp-epsilon-spent"] == pytest.approx(spent[2])
    assert result.train_metrics_clientapp[1]["secagg-dp-epsilon-round"] == pytest.approx(seen[0].dp["epsilon_round"])
    lines = [r.getMessage() for r in caplog.records if "DP (dgauss)" in r.getMessage()]
    assert len(lines) == 3 and f"{spent[2]:.4g} spent over 3 of 3 planned" in lines[2]
    # a run longer than its planned rounds is refused before any message
    grid2 = InProcessGrid(NODES)
    short = SecAggFedAvg(settings=dp_settings(dp_rounds=2), min_available_nodes=5, min_train_nodes=5,
                         fraction_evaluate=0.0)
    with pytest.raises(SecAggConfigError, match="secagg-dp-rounds = 2 but the run has 3"):
        short.start(grid2, model(shapes=DP_SHAPES), num_rounds=3, timeout=1)
    assert all(v == 0 for v in grid2.received.values())


def test_adaptive_clipping_moves_the_clip_across_rounds():
    """Every update's norm is about 4 (200 uniform values in [-0.5, 0.5]):
    with a clip of 0.5 every one is clipped, so the clip moves by the
    geometric rule applied to the noised clipped fraction, and the next round
    runs with it. The estimate is noised (with 5 nodes its standard deviation
    is about 0.25), so whether the clip grows in a given round is checked
    against the reported estimate, not assumed: it grows exactly when the
    estimate says more than the target quantile's share was clipped."""
    from secagg.dp.round import next_clip

    grid = InProcessGrid(NODES)
    settings = dp_settings(dp_epsilon=20.0, dp_rounds=2, dp_clip=0.5, dp_adaptive_clip=True)
    budget = DPBudget.of(settings, 2)
    q, eta = budget.config.target_quantile, budget.config.clip_learning_rate
    (first, _), arrays = dp_round(grid, settings, budget, server_round=1)
    (second, _), _ = dp_round(grid, settings, budget, server_round=2, arrays=arrays)
    assert first.dp["clip"] == 0.5
    assert second.params["dp"]["clip"] == pytest.approx(first.dp["next_clip"]) == second.dp["clip"]
    for report in (first, second):
        clip, fraction = report.dp["clip"], report.dp["clipped_fraction"]
        assert fraction is not None and fraction > 0.0  # the truth is 1: 4 standard deviations below it
        assert report.dp["next_clip"] == pytest.approx(next_clip(clip, fraction, q, eta))
        assert (report.dp["next_clip"] > clip) == (1.0 - min(1.0, fraction) < q)
    assert budget.config.clip == second.dp["next_clip"]
    assert second.dp["epsilon_spent"] <= 20.0 * (1 + 1e-9)


class WeightAskingGrid(InProcessGrid):
    """A server that asks the nodes for their example counts as weights in a
    DP round (the setup record's ``weighted-by``)."""

    def push_messages(self, messages):
        for msg in messages:
            rec = msg.content.config_records.get(RECORD_KEY)
            if rec is not None and "weighted-by" in rec:
                rec["weighted-by"] = "num-examples"
        return super().push_messages(messages)


def test_in_a_dp_round_a_node_sends_weight_1_whatever_metric_the_server_names(tmp_path):
    grid = WeightAskingGrid(NODES)
    for n in NODES:
        grid.contexts[n].node_config["secagg-audit-dir"] = str(tmp_path)
    settings = dp_settings()
    (report, _), _ = dp_round(grid, settings, DPBudget.of(settings, 1))
    assert report.outcome == "completed" and sorted(report.included) == NODES
    assert report.sum_weights == len(NODES)
    for n in NODES:  # each node's own record of what it contributed
        assert json.loads((tmp_path / f"node-{n}-round-1.json").read_text())["weight"] == 1.0


# ------------------------------------------------------------------ the nodes' DP policy


def test_a_node_that_requires_dp_refuses_a_round_without_it_before_training():
    calls = []
    grid = InProcessGrid(NODES, app=make_client_app(calls=calls))
    victim = NODES[0]
    grid.contexts[victim].node_config["secagg-require-dp"] = True
    # the server switched DP off (and FedAvg back on): the node refuses, with a typed error reply
    off = SecAggSettings(protocol="secagg", **TIMEOUTS)
    report, _ = run_secure_round(grid, NODES, model(shapes=DP_SHAPES), ConfigRecord({"server-round": 1}), off, 1)
    assert report.outcome == "completed" and victim not in report.included
    assert "distributed differential privacy" in report.failures[victim]
    assert "secagg-require-dp" in report.failures[victim]
    assert victim not in calls  # refused before training: its model never reached its train function
    assert grid.received[victim] == 1  # nothing more was sent to it, and it sent nothing but the error
    # the same node takes part in a DP round
    grid2 = InProcessGrid(NODES)
    grid2.contexts[victim].node_config["secagg-require-dp"] = True
    settings = dp_settings()
    (dp_report, _), _ = dp_round(grid2, settings, DPBudget.of(settings, 1))
    assert victim in dp_report.included
    grid3 = InProcessGrid(NODES)
    grid3.contexts[victim].node_config["secagg-require-dp"] = "yes"
    (bad, _), _ = dp_round(grid3, settings, DPBudget.of(settings, 1))
    assert "secagg-require-dp must be true or false" in bad.failures[victim]


def test_a_node_with_a_max_round_epsilon_refuses_a_weaker_round():
    """The node computes the round's epsilon itself, from the parameters: a
    server that lowers the noise (a larger epsilon per round) or switches DP
    off is refused; a round within the node's limit is not."""
    strong = dp_settings(dp_epsilon=2.0)
    weak = dp_settings(dp_epsilon=40.0)
    n_min = make_params(strong, len(NODES), DP_DIM).threshold
    eps_strong = round_epsilon(DPBudget.of(strong, 1).round_params(DP_DIM, n_min, len(NODES)))
    eps_weak = round_epsilon(DPBudget.of(weak, 1).round_params(DP_DIM, n_min, len(NODES)))
    assert eps_strong <= 2.0 * (1 + 1e-9) < 5.0 < eps_weak
    victim = NODES[3]
    for settings, refused in ((weak, True), (strong, False), (SecAggSettings(protocol="secagg", **TIMEOUTS), True)):
        calls = []
        grid = InProcessGrid(NODES, app=make_client_app(calls=calls))
        grid.contexts[victim].node_config["secagg-dp-max-round-epsilon"] = 5.0
        if settings.dp:
            (report, _), _ = dp_round(grid, settings, DPBudget.of(settings, 1))
        else:
            report, _ = run_secure_round(grid, NODES, model(shapes=DP_SHAPES), ConfigRecord({"server-round": 1}),
                                         settings, 1)
        assert report.outcome == "completed"
        if refused:
            assert victim not in report.included and victim not in calls and grid.received[victim] == 1
            why = report.failures[victim]
            assert ("allows at most 5" in why) if settings.dp else ("secagg-dp-max-round-epsilon = 5" in why)
        else:
            assert victim in report.included and victim in calls
    grid = InProcessGrid(NODES)
    grid.contexts[victim].node_config["secagg-dp-max-round-epsilon"] = -1
    (report, _), _ = dp_round(grid, strong, DPBudget.of(strong, 1))
    assert "must be a number > 0" in report.failures[victim]


# ------------------------------------------------------------------ Paillier


@pytest.fixture(scope="module")
def committee(tmp_path_factory):
    d = tmp_path_factory.mktemp("dp-committee")
    d.chmod(0o700)
    ck, _ = deal_committee_files(d, 5, key_bits=1024)
    return d, ck


def paillier_dp_settings(d, **kw):
    return dp_settings(protocol="paillier", committee_key=str(d / "committee.key"), **kw)


def test_a_paillier_dp_round_decrypted_by_the_committee(committee, caplog):
    d, _ = committee
    grid = InProcessGrid(NODES)
    provision_shares(grid, d)
    settings = paillier_dp_settings(d)
    budget = DPBudget.of(settings, 1)
    with caplog.at_level(logging.INFO, logger="flwr.secagg"):
        (report, _), _ = dp_round(grid, settings, budget)
    assert report.outcome == "completed" and sorted(report.included) == NODES
    dp = report.dp
    assert dp["n_min"] == report.params["min_clients"] == 3 and dp["n_max"] == 5 and dp["survivors"] == 5
    assert 0 < dp["epsilon_round"] <= settings.dp_epsilon * (1 + 1e-9)
    err = report.mean_update - clipped_mean(NODES)
    assert 0.75 < float(np.std(err)) / dp["mean_noise_std"] < 1.3
    assert any("DP (dgauss)" in r.getMessage() for r in caplog.records)


def test_paillier_nodes_apply_their_dp_policy(committee):
    d, _ = committee
    victim, other = NODES[1], NODES[2]
    grid = InProcessGrid(NODES)
    provision_shares(grid, d)
    grid.contexts[victim].node_config["secagg-require-dp"] = True
    grid.contexts[other].node_config["secagg-dp-max-round-epsilon"] = 1.0
    off = SecAggSettings(protocol="paillier", committee_key=str(d / "committee.key"), **TIMEOUTS)
    report, _ = run_secure_round(grid, NODES, model(shapes=DP_SHAPES), ConfigRecord({"server-round": 1}), off, 1)
    assert report.outcome == "completed"
    assert victim not in report.included and "secagg-require-dp" in report.failures[victim]
    assert other not in report.included and "secagg-dp-max-round-epsilon" in report.failures[other]
    # a DP round above the other node's limit: it refuses; the node that requires DP takes part
    grid = InProcessGrid(NODES)
    provision_shares(grid, d)
    grid.contexts[victim].node_config["secagg-require-dp"] = True
    grid.contexts[other].node_config["secagg-dp-max-round-epsilon"] = 1.0
    settings = paillier_dp_settings(d, dp_epsilon=8.0)
    (report, _), _ = dp_round(grid, settings, DPBudget.of(settings, 1))
    assert victim in report.included and other not in report.included
    assert "allows at most 1" in report.failures[other]
