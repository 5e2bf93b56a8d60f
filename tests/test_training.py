"""The federated training runner: data split, validation errors, short runs,
secure vs plaintext agreement, run directory, CLI."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from click.testing import CliRunner  # noqa: E402

from secagg.errors import ParameterError  # noqa: E402
from secagg.training.cli import demo_command, train_command  # noqa: E402
from secagg.training.data import make_federated_data, partition_dirichlet  # noqa: E402
from secagg.training.run import CSV_COLUMNS, run_training  # noqa: E402
from secagg.training.runner import (  # noqa: E402
    FedRunner,
    LocalResult,
    TrainConfig,
    dropout_schedule,
    seed_for,
    validate_updates,
)

HAVE_SIMULATE = importlib.util.find_spec("secagg.simulation") is not None
needs_simulate = pytest.mark.skipif(not HAVE_SIMULATE, reason="secagg.simulation not available yet")

FAST = dict(clients=5, rounds=4, epochs=1, dropout=0.2, seed=3, model="logreg", key_bits=1024)


# -- data ---------------------------------------------------------------------------------
def test_data_split_and_standardization():
    d = make_federated_data(10, "iid", seed=1)
    assert len(d.y_train) + len(d.y_test) == 569
    assert d.x_train.shape[1] == 30 and d.x_train.dtype == np.float32
    assert sum(d.client_sizes) == len(d.y_train)
    assert max(d.client_sizes) - min(d.client_sizes) <= 1
    # standardized with training statistics only: train is centred, test is not exactly
    np.testing.assert_allclose(d.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(axis=0), 1, atol=1e-4)
    assert abs(d.y_test.mean() - d.y_train.mean()) < 0.02  # stratified
    # each client's data is a disjoint piece of the training set
    rows = np.concatenate([x for x, _ in d.clients])
    assert len({r.tobytes() for r in rows}) == len(rows)


def test_noniid_split_is_skewed_and_reproducible():
    a = make_federated_data(10, "noniid", alpha=0.3, seed=2)
    b = make_federated_data(10, "noniid", alpha=0.3, seed=2)
    assert a.client_sizes == b.client_sizes
    assert min(a.client_sizes) >= 5 and sum(a.client_sizes) == len(a.y_train)
    shares = [float(np.mean(y)) for _, y in a.clients]
    assert max(shares) - min(shares) > 0.5  # label skew
    iid = make_federated_data(10, "iid", seed=2)
    assert max(float(np.mean(y)) for _, y in iid.clients) - min(float(np.mean(y)) for _, y in iid.clients) < 0.5


def test_partition_errors():
    with pytest.raises(ParameterError, match="alpha"):
        make_federated_data(5, "noniid", alpha=0.0)
    with pytest.raises(ParameterError, match="split"):
        make_federated_data(5, "shards")
    with pytest.raises(ParameterError, match="at least"):
        partition_dirichlet(np.zeros(20, dtype=int), 10, 1.0, np.random.default_rng(0), min_examples=5)


def test_dropout_schedule_is_seeded_and_exact():
    s = [dropout_schedule(7, r, 10, 0.2) for r in range(1, 6)]
    assert all(len(x) == 2 and all(1 <= c <= 10 for c in x) for x in s)
    assert s == [dropout_schedule(7, r, 10, 0.2) for r in range(1, 6)]
    assert len({tuple(x) for x in s}) > 1  # a fresh draw per round
    assert dropout_schedule(7, 1, 10, 0.0) == []


# -- clear errors ---------------------------------------------------------------------------
def test_weight_not_positive_is_an_error():
    with pytest.raises(ParameterError, match=r"client 2: weight must be a finite number > 0"):
        FedRunner(TrainConfig(**{**FAST, "protocol": "plaintext", "rule": "weighted",
                                 "client_weights": (1.0, 0.0, 2.0, 1.0, 1.0)}))
    with pytest.raises(ParameterError, match=r"client 4: weight"):
        validate_updates({1: np.zeros(3), 4: np.zeros(3)}, {1: 1.0, 4: -2.0}, 3)


def test_dropout_leaving_too_few_clients_is_an_error_before_training():
    # 5 clients, 60 % dropout -> 3 drop, 2 survive < a majority threshold of 3
    for protocol in ("secagg", "secagg+"):
        with pytest.raises(ParameterError, match=r"drops 3 of 5 clients each round, leaving 2; .*threshold 3"):
            FedRunner(TrainConfig(**{**FAST, "protocol": protocol, "dropout": 0.6}))
    with pytest.raises(ParameterError, match=r"leaving 4, fewer than the paillier threshold of 5"):
        FedRunner(TrainConfig(**{**FAST, "protocol": "paillier", "threshold": 5}))
    with pytest.raises(ParameterError, match="threshold of 5"):
        FedRunner(TrainConfig(**{**FAST, "protocol": "plaintext", "threshold": 5}))
    with pytest.raises(ParameterError, match="dropout rate"):
        FedRunner(TrainConfig(**{**FAST, "dropout": 1.0}))


def test_other_config_errors():
    for bad in ({"rule": "sum"}, {"protocol": "rot13"}, {"rounds": 0}, {"lr": -1.0}, {"clients": 1},
                {"client_weights": (1.0,) * 5}, {"rule": "mean", "server_lr": 0.5}):
        with pytest.raises(ParameterError):
            FedRunner(TrainConfig(**{**FAST, "protocol": "plaintext", **bad}))


class ShapeMismatchRunner(FedRunner):
    """Client 3 returns a model with a different hidden size."""

    def local_update(self, client_id, global_state, round_number):
        res = super().local_update(client_id, global_state, round_number)
        if client_id == 3:
            sd = dict(res.state_dict)
            sd["0.weight"] = torch.zeros(2, 30)
            return LocalResult(client_id, sd, res.examples, res.train_loss, res.train_accuracy)
        return res


class NaNRunner(FedRunner):
    def local_update(self, client_id, global_state, round_number):
        res = super().local_update(client_id, global_state, round_number)
        if client_id == 2:
            res.state_dict["0.bias"][0] = float("nan")
        return res


def test_mismatched_model_shape_names_the_client():
    r = ShapeMismatchRunner(TrainConfig(**{**FAST, "protocol": "plaintext"}))
    with pytest.raises(ParameterError, match=r"client 3: entry '0.weight' has shape \(2, 30\), the model has \(1, 30\)"):
        r.run()
    with pytest.raises(ParameterError, match=r"client 2: update has shape \(4,\)"):
        validate_updates({1: np.zeros(3), 2: np.zeros(4)}, None, 3)


def test_nan_update_is_an_error():
    r = NaNRunner(TrainConfig(**{**FAST, "protocol": "plaintext"}))
    with pytest.raises(ParameterError, match=r"client 2: NaN or infinite values in \['0.bias'\]"):
        r.run()
    with pytest.raises(ParameterError, match="client 1: update contains 1 NaN"):
        validate_updates({1: np.array([0.0, np.inf, 1.0])}, None, 3)


# -- training runs ---------------------------------------------------------------------------
def test_plaintext_training_learns():
    cfg = TrainConfig(**{**FAST, "protocol": "plaintext", "rounds": 5})
    m = FedRunner(cfg).run()
    assert len(m) == 6 and m[0]["round"] == 0
    assert m[-1]["test_accuracy"] > 0.9  # chance is ~0.63
    assert m[-1]["test_loss"] < m[0]["test_loss"]
    assert all(r["n_dropped"] == 1 and r["n_included"] == 4 for r in m[1:])


@pytest.mark.parametrize("rule", ["mean", "weighted", "hybrid"])
def test_other_rules_train(rule):
    m = FedRunner(TrainConfig(**{**FAST, "protocol": "plaintext", "rule": rule, "rounds": 3})).run()
    assert m[-1]["test_accuracy"] > 0.85


def test_batchnorm_model_trains_and_keeps_its_counter():
    r = FedRunner(TrainConfig(**{**FAST, "protocol": "plaintext", "model": "mlp_bn", "rounds": 3}))
    m = r.run()
    assert m[-1]["test_accuracy"] > 0.85
    counter = r.global_state["1.num_batches_tracked"]
    assert counter.dtype == torch.int64 and int(counter) == 0  # never aggregated


@needs_simulate
@pytest.mark.parametrize("protocol", ["secagg", "secagg+", "paillier"])
def test_secure_run_matches_plaintext(protocol):
    cfg = TrainConfig(**{**FAST, "protocol": protocol, "split": "noniid"})
    secure = FedRunner(cfg).run()
    plain = FedRunner(cfg, protocol="plaintext").run()
    assert secure[-1]["test_accuracy"] > 0.85
    assert [r["dropped"] for r in secure] == [r["dropped"] for r in plain]
    assert abs(secure[-1]["test_accuracy"] - plain[-1]["test_accuracy"]) <= 0.005
    assert abs(secure[-1]["test_loss"] - plain[-1]["test_loss"]) < 1e-4
    assert max(r["aggregation_error"] for r in secure[1:]) < 1e-5
    assert all(r["bytes_up_per_client"] > 0 for r in secure[1:])


@needs_simulate
def test_malicious_server_mode_trains():
    cfg = TrainConfig(**{**FAST, "protocol": "secagg", "rounds": 2, "malicious_server": True})
    secure = FedRunner(cfg).run()
    plain = FedRunner(cfg, protocol="plaintext").run()
    assert abs(secure[-1]["test_loss"] - plain[-1]["test_loss"]) < 1e-4


def test_aborted_round_keeps_the_model(recwarn):
    from secagg.errors import AbortReason, ProtocolAborted
    from secagg.simulation import simulate

    def flaky(updates, weights, **kw):
        if kw["seed"] == seed_for(FAST["seed"], 13, 2):  # the protocol seed of round 2
            raise ProtocolAborted(AbortReason.TOO_FEW_SURVIVORS, "test")
        return simulate(updates, weights, **kw)

    cfg = TrainConfig(**{**FAST, "protocol": "plaintext", "rounds": 3})
    m = FedRunner(cfg, simulate_fn=flaky).run()
    assert m[2]["aborted"] == "too_few_survivors" and m[1]["aborted"] == ""
    assert m[2]["test_loss"] == m[1]["test_loss"]
    assert any("aborted" in str(w.message) for w in recwarn)
    with pytest.raises(ProtocolAborted):
        FedRunner(cfg.replace(on_abort="raise"), simulate_fn=flaky).run()


def test_run_directory(tmp_path):
    cfg = TrainConfig(**{**FAST, "protocol": "secagg+" if HAVE_SIMULATE else "plaintext", "rounds": 2})
    rep = run_training(cfg, runs_dir=tmp_path, progress=False)
    d = rep.run_dir
    assert d is not None and d.parent == tmp_path
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "metrics.csv", "metrics.json", "summary.json", "comparison.png"} <= names
    if cfg.protocol != "plaintext":
        assert {"baseline_metrics.csv", "baseline_metrics.json"} <= names
    config = json.loads((d / "config.json").read_text())
    assert config["clients"] == 5 and len(config["partition"]) == 5
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert tuple(rows[0]) == CSV_COLUMNS
    js = json.loads((d / "metrics.json").read_text())
    assert js[-1]["test_accuracy"] == pytest.approx(rep.final_accuracy)
    assert (d / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((d / "summary.json").read_text())
    assert summary["final_test_accuracy"] == pytest.approx(rep.final_accuracy)
    if cfg.protocol == "secagg+":
        # 5 clients: SecAgg+ derives the complete graph, and the run says so, from the rounds' results
        assert [r["degree"] for r in rows[1:]] == ["4", "4"] and rows[1]["threshold"]
        graph = summary["graph"]
        assert graph["degree"] == 4 and graph["complete"] is True
        assert "the derived degree is 4 = n-1, the complete graph" in graph["note"]
        assert "the sparse graph pays off from about" in graph["note"]


def test_cli_train(tmp_path):
    res = CliRunner().invoke(train_command, ["--protocol", "plaintext", "--rule", "fedavg", "--clients", "4",
                                             "--rounds", "2", "--dropout", "0.25", "--seed", "1", "--model",
                                             "logreg", "--out", str(tmp_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "final test accuracy" in res.output and "results: " in res.output
    assert len(list(tmp_path.iterdir())) == 1


def test_cli_reports_parameter_errors_cleanly(tmp_path):
    res = CliRunner().invoke(train_command, ["--protocol", "secagg", "--clients", "4", "--dropout", "0.5",
                                             "--out", str(tmp_path), "--no-progress"])
    assert res.exit_code != 0
    assert "Error:" in res.output and "threshold" in res.output
    assert not isinstance(res.exception, ParameterError) or res.exit_code == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_demo_help():
    res = CliRunner().invoke(demo_command, ["--help"])
    assert res.exit_code == 0 and "secagg+" in res.output


# -- distributed differential privacy ------------------------------------------------------------
@needs_simulate
def test_dp_training_composes_epsilon_per_round_within_the_target(tmp_path):
    """A DP run: each released round adds its epsilon to the accountant; the
    composed epsilon grows round by round and stays within the run's target
    (the noise is calibrated for the threshold of survivors; more survive);
    the aggregate differs from the noiseless mean of the L2-clipped updates
    by the noise; the baseline of the same seed has no DP; the run directory
    carries the columns, the summary and the plot."""
    cfg = TrainConfig(**{**FAST, "protocol": "secagg", "rule": "mean", "rounds": 3, "dp_epsilon": 4.0,
                         "dp_clip": 0.5})
    rep = run_training(cfg, runs_dir=tmp_path, progress=False)
    rows = rep.metrics
    spent = [r["dp_epsilon_spent"] for r in rows]
    assert spent[0] == 0.0 and all(a < b for a, b in zip(spent, spent[1:]))
    assert spent[-1] <= 4.0
    assert all(0 < r["dp_epsilon_round"] < spent[-1] for r in rows[1:])
    assert all(r["dp_noise_std"] > 0 and r["dp_clip"] == 0.5 for r in rows[1:])
    assert all(r["aggregation_error"] > 1e-3 for r in rows[1:])  # noise, not fixed-point rounding
    assert rep.baseline_metrics is not None and "dp_epsilon_spent" not in rep.baseline_metrics[-1]
    summary = json.loads((rep.run_dir / "summary.json").read_text())
    assert summary["dp"]["epsilon_spent"] == pytest.approx(spent[-1])
    assert summary["dp"]["released_rounds"] == 3
    header = next(csv.reader(open(rep.run_dir / "metrics.csv")))
    assert "dp_epsilon_spent" in header


@needs_simulate
def test_dp_adaptive_clip_moves_the_clip_from_the_securely_summed_count():
    cfg = TrainConfig(**{**FAST, "protocol": "secagg", "rule": "mean", "rounds": 3, "dp_epsilon": 20.0,
                         "dp_clip": 1e-3, "dp_adaptive_clip": True})
    runner = FedRunner(cfg)
    rows = runner.run()
    clips = [r["dp_clip"] for r in rows]
    # every update's norm is far above 1e-3: the noised clipped fraction is high, so the clip grows
    assert clips[-1] > clips[1] >= clips[0] == 1e-3
    assert all(0.0 <= r["dp_clipped_fraction"] or np.isnan(r["dp_clipped_fraction"]) for r in rows[1:])


def test_dp_configuration_errors():
    with pytest.raises(ParameterError, match="secure protocol"):
        FedRunner(TrainConfig(**{**FAST, "protocol": "plaintext", "rule": "mean", "dp_epsilon": 1.0}))
    with pytest.raises(ParameterError, match="unweighted"):
        FedRunner(TrainConfig(**{**FAST, "protocol": "secagg", "rule": "fedavg", "dp_epsilon": 1.0}))
    with pytest.raises(ParameterError, match="epsilon"):
        FedRunner(TrainConfig(**{**FAST, "protocol": "secagg", "rule": "mean", "dp_epsilon": -1.0}))
    with pytest.raises(ParameterError, match="mechanism"):
        FedRunner(TrainConfig(**{**FAST, "protocol": "secagg", "rule": "mean", "dp_epsilon": 1.0,
                                 "dp_mechanism": "laplace"}))


@needs_simulate
def test_cli_train_with_dp_reports_the_guarantee(tmp_path):
    res = CliRunner().invoke(train_command, ["--protocol", "secagg", "--clients", "5", "--rounds", "2",
                                             "--epochs", "1", "--model", "logreg", "--dp-epsilon", "5",
                                             "--out", str(tmp_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "secagg / mean" in res.output  # the default FedAvg weighs by examples: DP runs use mean
    line = next(x for x in res.output.splitlines() if "privacy:" in x)
    assert "-DP for each client's data over the 2 released rounds" in line and "target epsilon 5" in line


def test_a_client_an_abort_names_is_left_out_of_the_next_rounds(recwarn):
    """A round aborts naming client 3 (e.g. its shared secret did not
    reconstruct): the global model is unchanged, and every later round runs
    without client 3 (left out from the first stage), the others included."""
    from secagg.errors import AbortReason, ProtocolAborted
    from secagg.simulation import simulate

    seen: dict[int, dict[int, str]] = {}

    def blame(updates, weights, **kw):
        rnd = next(r for r in (1, 2, 3) if kw["seed"] == seed_for(FAST["seed"], 13, r))
        seen[rnd] = dict(kw["dropouts"] or {})
        if rnd == 1:
            raise ProtocolAborted(AbortReason.RECONSTRUCTION_FAILED, "test", culprits=(3,))
        return simulate(updates, weights, **kw)

    cfg = TrainConfig(**{**FAST, "protocol": "plaintext", "rounds": 3, "dropout": 0.0})
    m = FedRunner(cfg, simulate_fn=blame).run()
    assert m[1]["aborted"] == "reconstruction_failed" and m[1]["test_loss"] == m[0]["test_loss"]
    assert 3 not in seen[1]
    for r in (2, 3):
        assert seen[r] == {3: "masked_input"} and m[r]["excluded"] == [3] and m[r]["aborted"] == ""
        assert m[r]["n_included"] == FAST["clients"] - 1
    assert any("clients [3] are left out" in str(w.message) for w in recwarn)


def test_protocol_aborted_keeps_its_culprits_through_pickling():
    import pickle

    from secagg.errors import AbortReason, ProtocolAborted

    exc = pickle.loads(pickle.dumps(ProtocolAborted(AbortReason.RECONSTRUCTION_FAILED, "d", culprits=(4, 2))))
    assert exc.culprits == (4, 2) and exc.reason is AbortReason.RECONSTRUCTION_FAILED and exc.detail == "d"


def test_digits_dataset_holds_200_hospitals_and_secagg_plus_goes_sparse():
    """The larger data set: 200 IID hospitals with at least 7 examples each,
    binary labels of both classes; SecAgg+ derives a sparse graph for them
    (degree below n - 1), which the breast cancer data cannot hold."""
    data = make_federated_data(200, "iid", dataset="digits")
    assert len(data.clients) == 200 and min(data.client_sizes) >= 7
    assert set(np.unique(data.y_train)) == {0, 1} and data.n_features == 64
    runner = FedRunner(TrainConfig(protocol="secagg+", clients=200, split="iid", dataset="digits", rounds=1,
                                   model="logreg"), data)
    assert runner.degree is not None and runner.degree < 199
    with pytest.raises(ParameterError, match="dataset"):
        FedRunner(TrainConfig(**{**FAST, "dataset": "mnist"}))
