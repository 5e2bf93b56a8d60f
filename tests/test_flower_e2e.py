"""End to end on a real Flower deployment on 127.0.0.1.

Each test starts a SuperLink and SuperNodes as separate processes
(:class:`secagg.flower.local.LocalDeployment`: free loopback ports, an isolated
Flower home, TLS with a CA made for the test and SuperNode authentication;
one test keeps the development set-up, ``--insecure``), starts the example app (examples/flower_app) the way Flower users
do, with ``flwr run <app> <connection> --stream``, and stops every process it
started, also when an assertion fails.

The check against plaintext: every node writes the update it contributed to a
node-local audit directory (node config ``secagg-audit-dir``; this never leaves
the node), the ServerApp writes the aggregate it learned per round; the test
recomputes the plaintext FedAvg mean over exactly the nodes the server reports
as included and compares.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.flower

pytest.importorskip("flwr", reason="Flower is not installed (pip install '.[flower]' from the repository)")

from secagg.aggregation import reference_aggregate  # noqa: E402
from secagg.flower.local import LocalDeployment, RunOutput  # noqa: E402


@pytest.fixture(autouse=True)
def example_requirements():
    """The example app trains a torch model on scikit-learn data: without them
    the deployment would fail in the nodes' logs, so fail here, clearly."""
    import importlib.util
    missing = [m for m in ("torch", "sklearn") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"the example Flower app needs {', '.join(missing)}: pip install '.[train,flower]' from the repository")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower_app"
CLIP = 1.0
FRAC_BITS = 16


def _run(tmp_path: Path, num_nodes: int, run_config: dict, *, kill: tuple[int, int] | None = None,
         extra_runs: tuple[dict, ...] = (), timeout: float = 300.0, node_extra: list[dict] | None = None,
         insecure: bool = False, intruders: list | None = None):
    """Start a deployment (TLS and SuperNode authentication unless
    ``insecure``), run the example (and optionally more runs), stop
    everything. ``node_extra[i]`` is added to node ``i``'s node config. If
    ``intruders`` is a list, two SuperNodes the federation does not know (an
    unregistered key; one of them without the CA either) try to join before
    the run, and are appended to it. Returns (node ids by index, main run
    output, extra outputs, output dir, audit dir, events)."""
    audit, out = tmp_path / "audit", tmp_path / "out"
    configs = [{"partition-id": i, "num-partitions": num_nodes, "secagg-audit-dir": str(audit),
                **(node_extra[i] if node_extra else {})} for i in range(num_nodes)]
    dep = LocalDeployment(num_nodes, node_configs=configs, workdir=tmp_path / "deployment", insecure=insecure)
    result: RunOutput | None = None
    extras: list[RunOutput] = []
    try:
        dep.start()
        if intruders is not None:
            intruders += [dep.add_intruder(), dep.add_intruder(trust_ca=False)]
            for node in intruders:
                node.process.wait(timeout=120)  # refused: it gives up
        if kill is not None:
            dep.kill_node_on_message(*kill)
        config = {"output-dir": str(out), "min-nodes": num_nodes, "secagg-clip": CLIP,
                  "secagg-frac-bits": FRAC_BITS, **run_config}
        result = dep.run_app(EXAMPLE, run_config=config, timeout=timeout)
        for cfg in extra_runs:
            extras.append(dep.run_app(EXAMPLE, run_config={"min-nodes": num_nodes, **cfg}, timeout=120))
        node_ids = dep.node_ids
        events = list(dep.events)
    except BaseException:
        print(dep.logs())
        if result is not None:
            print(result.output)
        raise
    finally:
        dep.stop()
    assert dep.leftover_processes() == [], "processes of the deployment survived stop()"
    for node in dep.nodes:
        assert node.process.poll() is not None
    assert dep.superlink is not None and dep.superlink.poll() is not None
    if result.timed_out or not (out / "summary.json").exists():
        print(dep.logs())
        print(result.output)
    assert not result.timed_out, f"flwr run did not finish within {timeout}s"
    return node_ids, result, extras, out, audit, events


def _check_aggregate(report: dict, audit: Path) -> None:
    """The server's aggregate equals the plaintext FedAvg mean of the included
    nodes' updates (within the fixed-point error bound)."""
    r = report["server_round"]
    included = report["included"]
    updates, weights = [], []
    for node in included:
        meta = json.loads((audit / f"node-{node}-round-{r}.json").read_text())
        updates.append(np.load(audit / f"node-{node}-round-{r}.npy"))
        weights.append(meta["weight"])
    expected = reference_aggregate("fedavg", updates, weights, clip=CLIP)
    got = np.asarray(report["mean_update"])
    assert got.shape == expected.shape
    assert np.abs(expected).max() > 1e-3  # a real training update, not a trivial zero
    assert report["sum_weights"] == pytest.approx(sum(weights), abs=len(weights) * 2.0 ** -FRAC_BITS)
    # |error of the weighted sum| < n 2^-f per entry, of the weight sum < n 2^-f
    tol = 2 * len(included) * 2.0 ** -FRAC_BITS * (1 + CLIP) / sum(weights)
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


def test_secure_fedavg_on_a_real_deployment(tmp_path):
    t0 = time.monotonic()
    intruders: list = []
    node_ids, result, extras, out, audit, _ = _run(
        tmp_path, 4,
        {"num-server-rounds": 2, "fraction-evaluate": 1.0, "secagg-stage-timeout": 60.0},
        # a second run on the same deployment that cannot be secure: 4 nodes, threshold 5
        extra_runs=({"num-server-rounds": 1, "secagg-threshold": 5},), intruders=intruders, timeout=900.0)
    # TLS + SuperNode authentication: a SuperNode with an unregistered key is refused, one that does not
    # trust the deployment's CA does not even connect; neither ever gets a node id or a message
    unregistered, untrusting = intruders
    for node in intruders:
        assert node.process.returncode not in (0, None), node.log_text()
        assert "SuperNode ID" not in node.log_text() and node.received_messages() == 0
    assert "Failed to activate SuperNode" in unregistered.log_text(), unregistered.log_text()
    assert "CERTIFICATE_VERIFY_FAILED" in untrusting.log_text(), untrusting.log_text()
    summary = json.loads((out / "summary.json").read_text())
    assert [r["server_round"] for r in summary["rounds"]] == [1, 2]
    for r in (1, 2):
        report = json.loads((out / f"round-{r}.json").read_text())
        assert report["outcome"] == "completed"
        assert sorted(report["included"]) == sorted(str(n) for n in node_ids.values())
        assert report["dropped"] == {} and report["failures"] == {}
        _check_aggregate(report, audit)
    # private metrics: the server learned the examples-weighted means of the nodes' evaluation metrics, which
    # each node kept in its own audit directory, and their total of examples, nothing per node
    for r in (1, 2):
        fed = summary["federated_evaluation"][str(r)]
        metas = [json.loads((audit / f"node-{n}-eval-round-{r}.json").read_text()) for n in node_ids.values()]
        values = np.array([np.load(audit / f"node-{n}-eval-round-{r}.npy") for n in node_ids.values()])
        weights = [m["weight"] for m in metas]
        assert fed["num-examples"] == pytest.approx(sum(weights), abs=4 * 2.0 ** -FRAC_BITS)
        expected = np.average(values, axis=0, weights=weights)
        assert [fed["eval-loss"], fed["eval-accuracy"]] == pytest.approx(list(expected), abs=1e-3)
        assert len({tuple(v) for v in values}) > 1  # the nodes' metrics differ: a mean is not one node's value
    # FedAvg learned something: the global model beats the initial one on the whole data set
    central = summary["central_evaluation"]
    assert central["2"]["accuracy"] > max(0.8, central["0"]["accuracy"])
    # the insecure configuration stops with a clear error before any round runs
    bad = extras[0].output
    assert "SecAggConfigError" in bad and "4 node(s)" in bad and "secagg-threshold" in bad
    print(f"e2e secure FedAvg: {time.monotonic() - t0:.1f}s; run {result.seconds:.1f}s")


def test_supernode_killed_mid_round_is_recovered(tmp_path):
    t0 = time.monotonic()
    victim = 1
    stage_timeout = 120.0
    # each round sends a node: 1 setup (train + keys), 2 key broadcast, 3 forwarded shares,
    # 4 unmask request. Killing the node when it pulls message 3 drops it in the
    # masked-input stage, after its key shares went out: the survivors' shares
    # must remove its pairwise masks from the sum.
    node_ids, result, _, out, audit, events = _run(
        tmp_path, 5,
        {"num-server-rounds": 1, "fraction-evaluate": 0.0, "secagg-stage-timeout": stage_timeout,
         "secagg-straggler-grace": 3.0},
        kill=(victim, 3))
    assert any(e.startswith(f"killed node {victim}") for e in events), events
    report = json.loads((out / "round-1.json").read_text())
    assert report["outcome"] == "completed"
    dead = str(node_ids[victim])
    assert report["dropped"] == {dead: "masked_input"}
    # the stage closed early: the dead node was given up (straggler window, or Flower lists it offline),
    # not waited for until the deadline
    why = report["failures"][dead]
    assert why.startswith("masked_input: no reply") and "deadline" not in why, why
    assert report["stage_seconds"]["masked_input"] < stage_timeout / 2, report["stage_seconds"]
    assert sorted(report["included"]) == sorted(str(n) for i, n in node_ids.items() if i != victim)
    assert (audit / f"node-{dead}-round-1.npy").exists()  # it trained, but its update is not in the sum
    _check_aggregate(report, audit)
    print(f"e2e dropout recovery: {time.monotonic() - t0:.1f}s; run {result.seconds:.1f}s; "
          f"stages {report['stage_seconds']}")


def test_distributed_dp_round_on_a_real_deployment(tmp_path):
    """One DP training round (secagg-dp-epsilon = 4, rule mean): every node
    sends weight 1, the server's aggregate is the L2-clipped mean of the
    nodes' updates plus noise of the standard deviation it reports, the
    round's epsilon is within the target and the ServerApp logs it; a node
    that requires DP and one with a per-round epsilon limit above the
    round's take part."""
    from secagg.dp.pipeline import clip_l2

    t0 = time.monotonic()
    epsilon, dp_clip = 4.0, 0.5
    node_ids, result, _, out, audit, _ = _run(
        tmp_path, 4,
        {"num-server-rounds": 1, "fraction-evaluate": 0.0, "secagg-protocol": "secagg", "secagg-rule": "mean",
         "secagg-dp-epsilon": epsilon, "secagg-dp-clip": dp_clip, "secagg-stage-timeout": 60.0},
        node_extra=[{"secagg-require-dp": True}, {"secagg-dp-max-round-epsilon": 2 * epsilon}, {}, {}],
        timeout=600.0)
    report = json.loads((out / "round-1.json").read_text())
    assert report["outcome"] == "completed", report
    assert sorted(report["included"]) == sorted(str(n) for n in node_ids.values())
    dp = report["dp"]
    assert dp["survivors"] == 4 and dp["n_min"] == report["params"]["threshold"] and dp["rounds_planned"] == 1
    assert 0 < dp["epsilon_round"] <= epsilon * (1 + 1e-9) and dp["epsilon_spent"] == pytest.approx(dp["epsilon_round"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dp"]["epsilon_spent"] == pytest.approx(dp["epsilon_spent"]) and summary["dp"]["rounds_released"] == 1
    updates = []
    for node in report["included"]:
        meta = json.loads((audit / f"node-{node}-round-1.json").read_text())
        assert meta["weight"] == 1.0  # unweighted
        updates.append(clip_l2(np.load(audit / f"node-{node}-round-1.npy"), dp_clip)[0])
    err = np.asarray(report["mean_update"]) - np.mean(updates, axis=0)
    assert dp["mean_noise_std"] > 0 and 0.75 < float(np.std(err)) / dp["mean_noise_std"] < 1.3
    assert "DP (dgauss): epsilon" in result.output, result.output[-3000:]
    print(f"e2e DP round: {time.monotonic() - t0:.1f}s; run {result.seconds:.1f}s; epsilon {dp['epsilon_round']:.3g}")


# ------------------------------------------------------------------ Paillier, decrypted by a committee of the nodes


def _deal(tmp_path: Path, holders: int, threshold: int) -> tuple[dict, list[dict]]:
    """Deal a committee (1024-bit key, for speed) the way operators do, with
    ``secagg keys deal-committee``; returns the run config keys for the server
    and each node's config (its own share file, the pinned key, a key-size
    floor lowered to 1024 bits for the test)."""
    from click.testing import CliRunner

    from secagg.cli import main

    dealt = tmp_path / "dealt"
    dealt.mkdir(mode=0o700)
    res = CliRunner().invoke(main, ["keys", "deal-committee", "--holders", str(holders), "--threshold",
                                    str(threshold), "--key-bits", "1024", "--out", str(dealt)])
    assert res.exit_code == 0, res.output
    key = str(dealt / "committee.key")
    nodes = [{"secagg-committee-key": key, "secagg-key-share": str(dealt / f"share-{i + 1}.key"),
              "secagg-min-key-bits": 1024} for i in range(holders)]
    return {"secagg-protocol": "paillier", "secagg-committee-key": key}, nodes


def test_paillier_fedavg_decrypted_by_the_committee_on_a_real_deployment(tmp_path):
    t0 = time.monotonic()
    server, nodes = _deal(tmp_path, 4, 3)
    node_ids, result, _, out, audit, _ = _run(
        tmp_path, 4, {"num-server-rounds": 2, "fraction-evaluate": 0.0, "secagg-stage-timeout": 30.0, **server},
        node_extra=nodes)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["server_round"] for r in summary["rounds"]] == [1, 2]
    for r in (1, 2):
        report = json.loads((out / f"round-{r}.json").read_text())
        assert report["outcome"] == "completed"
        assert report["params"]["protocol"] == "paillier" and report["params"]["key_bits"] == 1024
        assert sorted(report["included"]) == sorted(str(n) for n in node_ids.values())
        # each node takes part under its committee holder id
        assert report["client_ids"] == {str(node_ids[i]): i + 1 for i in range(4)}
        assert report["dropped"] == {} and report["failures"] == {}
        dec = report["decryption"]
        assert dec["committee"] == [1, 2, 3, 4] and dec["threshold"] == 3 and dec["recovery"] is False
        assert dec["asked"] == [1, 2, 3, 4] and dec["failed_members"] == []
        _check_aggregate(report, audit)
    central = summary["central_evaluation"]
    assert central["2"]["accuracy"] > max(0.8, central["0"]["accuracy"])
    stages = [r["stage_seconds"] for r in summary["rounds"]]
    print(f"e2e paillier FedAvg (committee decryption): {time.monotonic() - t0:.1f}s; run {result.seconds:.1f}s; "
          f"stages {stages}")


def test_paillier_member_killed_during_decryption_is_recovered(tmp_path):
    t0 = time.monotonic()
    victim = 2
    # each node gets, in round 1: 1 identify (its holder id), 2 the parameters (train, encrypt, submit),
    # 3 its decryption request. Killing the node when it pulls message 3 loses its decryption share
    # after its update went into the aggregate: the other three members (t = 3) decrypt its part in
    # the recovery attempt.
    server, nodes = _deal(tmp_path, 4, 3)
    node_ids, result, _, out, audit, events = _run(
        tmp_path, 4, {"num-server-rounds": 1, "fraction-evaluate": 0.0, "secagg-stage-timeout": 120.0,
                      "secagg-straggler-grace": 3.0, **server},
        kill=(victim, 3), node_extra=nodes, insecure=True)  # the development set-up (--insecure) stays covered
    assert any(e.startswith(f"killed node {victim}") for e in events), events
    report = json.loads((out / "round-1.json").read_text())
    assert report["outcome"] == "completed"
    dead = str(node_ids[victim])
    assert sorted(report["included"]) == sorted(str(n) for n in node_ids.values())  # it submitted before dying
    assert report["dropped"] == {}
    assert report["failures"][dead].startswith("decrypt: no reply") and "deadline" not in report["failures"][dead]
    # the straggler window closed the stage (at most 1.5 times what the others took): far from the 120 s deadline
    assert report["stage_seconds"]["decrypt"] < 60, report["stage_seconds"]
    dec = report["decryption"]
    assert dec["recovery"] is True and dec["failed_members"] == [victim + 1]
    assert dec["recovery_asked"] and victim + 1 not in dec["recovery_asked"]
    _check_aggregate(report, audit)
    print(f"e2e paillier decryption recovery: {time.monotonic() - t0:.1f}s; run {result.seconds:.1f}s")
