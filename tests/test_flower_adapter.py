"""Fast tests of the Flower adapter (secagg.flower) without a deployment.

An in-process Grid delivers each message to a real ``flwr.clientapp.ClientApp``
with the node's own ``Context``, so the mod, the record layout, the context
state and the server driver run exactly as in a deployment, minus the network.
Dropouts are simulated by nodes that stop replying or reply with an error.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Callable

import numpy as np
import pytest

flwr = pytest.importorskip("flwr", reason="the flower extra (flwr) is not installed")

from flwr.app import (ArrayRecord, ConfigRecord, Context, Error, Message, MessageType,  # noqa: E402
                      MetricRecord, RecordDict)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

from secagg.aggregation import reference_aggregate  # noqa: E402
from secagg.errors import ParameterError, ProtocolAborted  # noqa: E402
from secagg.flower import (SecAggConfigError, SecAggFedAvg, SecAggSettings, make_secagg_mod,  # noqa: E402
                           run_secure_round, secagg_mod)
from secagg.flower.records import RECORD_KEY, STATE_KEY, ModelLayout  # noqa: E402

SHAPES = {"w": (3, 4), "b": (4,)}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Flower stamps new messages with the identity of the running task (set by
    the ServerApp process in a deployment); give the test process one."""
    from flwr.supercore.task_identity import TaskIdentity
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)


def model(seed: int = 0, shapes=SHAPES) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    return ArrayRecord({k: flwr.app.Array(rng.normal(size=s).astype(np.float32)) for k, s in shapes.items()})


DIM = sum(int(np.prod(s)) for s in SHAPES.values())


def delta_for(node_id: int, server_round: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng([node_id, server_round])
    return rng.uniform(-0.5, 0.5, size=dim)


def weight_for(node_id: int) -> int:
    return 10 + node_id % 7


def eval_metrics_for(node_id: int) -> tuple[float, float]:
    """A node's own evaluation loss and accuracy (distinct per node)."""
    return 0.25 + 0.37 * (node_id % 11), 0.5 + 0.031 * (node_id % 13)


def make_client_app(mod=secagg_mod, calls: list | None = None) -> ClientApp:
    """The test ClientApp; ``calls``, if given, gets the node id of every call
    of its train function."""
    app = ClientApp(mods=[mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if calls is not None:
            calls.append(context.node_id)
        arrays = msg.content.array_records["arrays"]
        layout = ModelLayout.of(arrays)
        r = int(msg.content.config_records["config"]["server-round"])
        local = layout.from_vector(layout.to_vector(arrays) + delta_for(context.node_id, r, layout.dim), arrays)
        return Message(RecordDict({"arrays": local, "metrics": MetricRecord(
            {"num-examples": weight_for(context.node_id), "train-loss": 0.5})}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        loss, acc = eval_metrics_for(context.node_id)
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": weight_for(context.node_id),
                                                            "eval-loss": loss, "eval-accuracy": acc})}), reply_to=msg)

    return app


class InProcessGrid(Grid):
    """Delivers messages to in-process ClientApps. ``behaviour(node_id, n)``
    for the node's ``n``-th message (from 1) returns "ok", "silent" (no reply:
    the node died) or "error" (a Flower error reply)."""

    def __init__(self, node_ids, app: ClientApp | None = None,
                 behaviour: Callable[[int, int], str] | None = None, tamper=None):
        self.app = app or make_client_app()
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
                         for n in node_ids}
        self.received = {n: 0 for n in node_ids}
        self.dead: set[int] = set()
        self.behaviour = behaviour or (lambda node, n: "ok")
        self.tamper = tamper
        self.replies: dict[str, Message] = {}
        self._ids = itertools.count(1)

    def set_run(self, run):  # pragma: no cover - not used
        self._run = run

    @property
    def run(self):  # pragma: no cover - not used
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # pragma: no cover
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return [n for n in self.contexts if n not in self.dead]

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            mid = f"m{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = mid
            ids.append(mid)
            node = msg.metadata.dst_node_id
            if node in self.dead:
                continue
            self.received[node] += 1
            action = self.behaviour(node, self.received[node])
            if action == "silent":
                self.dead.add(node)
                continue
            # each node gets its own copy, as after deserialization
            delivered = Message(copy.deepcopy(msg.content), metadata=copy.deepcopy(msg.metadata))
            if action == "error":
                reply = Message(Error(code=2, reason="simulated failure"), reply_to=delivered)
            else:
                reply = self.app(delivered, self.contexts[node])
            if self.tamper is not None:
                reply = self.tamper(node, reply)
            self.replies[mid] = reply
        return ids

    def pull_messages(self, message_ids):
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover - not used
        return self.pull_messages(self.push_messages(messages))


NODES = [1001, 1002, 1003, 1004, 1005]
FAST = SecAggSettings(train_timeout=0.2, stage_timeout=0.2, poll_interval=0.01)


def expected_mean(included, server_round=1, clip=1.0, dim=DIM):
    return reference_aggregate("fedavg", [delta_for(n, server_round, dim) for n in included],
                               [weight_for(n) for n in included], clip=clip)


def run_round(grid, settings=FAST, nodes=NODES, server_round=1, arrays=None):
    arrays = arrays or model()
    cfg = ConfigRecord({"server-round": server_round})
    return run_secure_round(grid, nodes, arrays, cfg, settings, server_round), arrays


def assert_close_to_reference(report, new, arrays, included, settings=FAST):
    assert report.outcome == "completed"
    assert sorted(report.included) == sorted(included)
    layout = ModelLayout.of(arrays)
    mean = expected_mean(included, clip=settings.clip, dim=layout.dim)
    # per entry: |error| < n * 2^-f * max_weight / sum(weights), plus float32 storage of the model
    tol = len(included) * 2.0 ** -settings.frac_bits + 1e-6
    np.testing.assert_allclose(report.mean_update, mean, atol=tol)
    got = layout.to_vector(new) - layout.to_vector(arrays)
    np.testing.assert_allclose(got, mean, atol=tol + 1e-6)
    assert report.sum_weights == pytest.approx(sum(weight_for(n) for n in included), abs=1e-3)


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_round_matches_plaintext_fedavg(protocol):
    grid = InProcessGrid(NODES)
    settings = SecAggSettings(protocol=protocol, train_timeout=0.2, stage_timeout=0.2, poll_interval=0.01)
    (report, new), arrays = run_round(grid, settings)
    assert_close_to_reference(report, new, arrays, NODES, settings)
    assert report.dropped == {} and report.failures == {}
    # every secret of the round is gone from the nodes' state
    for ctx in grid.contexts.values():
        assert STATE_KEY not in ctx.state.config_records


@pytest.mark.parametrize("stage_message, stage", [(1, "advertise_keys"), (2, "share_keys"), (3, "masked_input")])
def test_dropout_at_each_stage_is_recovered(stage_message, stage):
    victim = NODES[2]
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "silent" if (node, n) == (victim, stage_message) else "ok")
    (report, new), arrays = run_round(grid)
    survivors = [n for n in NODES if n != victim]
    assert_close_to_reference(report, new, arrays, survivors)
    assert report.dropped == {victim: stage}
    assert "no reply" in report.failures[victim]


def test_dropout_after_masked_input_still_included():
    victim = NODES[0]
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "silent" if (node, n) == (victim, 4) else "ok")
    (report, new), arrays = run_round(grid)
    assert_close_to_reference(report, new, arrays, NODES)  # its masked input is in; others unmask it
    assert report.dropped == {victim: "unmasking"}


def test_error_reply_counts_as_dropout():
    victim = NODES[4]
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "error" if (node, n) == (victim, 2) else "ok")
    (report, new), arrays = run_round(grid)
    assert_close_to_reference(report, new, arrays, [n for n in NODES if n != victim])
    assert "simulated failure" in report.failures[victim]


def test_malformed_reply_is_rejected_and_dropped():
    victim = NODES[1]

    def tamper(node, reply):
        if node == victim and not reply.has_error() and reply.content.config_records[RECORD_KEY]["stage"] == "share_keys":
            reply.content.config_records[RECORD_KEY]["payload"] = b"\x93garbage"
        return reply

    grid = InProcessGrid(NODES, tamper=tamper)
    (report, new), arrays = run_round(grid)
    assert_close_to_reference(report, new, arrays, [n for n in NODES if n != victim])
    assert "rejected (malformed_message)" in report.failures[victim]


def test_too_many_dropouts_abort_with_clear_reason():
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "silent" if node in NODES[:3] and n == 3 else "ok")
    with pytest.raises(ProtocolAborted, match="too_few_survivors"):
        run_round(grid)
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "silent" if node in NODES[:3] and n == 3 else "ok")
    skip = SecAggSettings(train_timeout=0.2, stage_timeout=0.2, poll_interval=0.01, on_abort="skip")
    (report, new), _ = run_round(grid, skip)
    assert new is None and report.outcome == "aborted" and report.abort_reason == "too_few_survivors"


def test_too_few_nodes_for_threshold_is_a_clear_error():
    grid = InProcessGrid(NODES[:3])
    with pytest.raises(SecAggConfigError, match="3 node\\(s\\).*secagg-threshold"):
        run_round(grid, SecAggSettings(threshold=4), nodes=NODES[:3])
    with pytest.raises(SecAggConfigError, match="at least 2 clients"):
        run_round(grid, FAST, nodes=NODES[:1])
    assert all(v == 0 for v in grid.received.values())  # nothing was sent


def test_mod_refuses_plain_train_and_plain_evaluate():
    app = make_client_app()
    ctx = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    train = Message(RecordDict({"arrays": model(), "config": ConfigRecord({"server-round": 1})}), 7,
                    MessageType.TRAIN)
    train.metadata.__dict__["_message_id"] = "x1"
    reply = app(train, ctx)
    assert reply.has_error() and "only trains under secure aggregation" in reply.error.reason
    ev = Message(RecordDict({"arrays": model()}), 7, MessageType.EVALUATE)
    ev.metadata.__dict__["_message_id"] = "x2"
    reply = app(ev, ctx)  # a plain evaluate reply would carry this node's metrics to the server
    assert reply.has_error() and "evaluation metrics under secure aggregation only" in reply.error.reason
    permissive = make_client_app(make_secagg_mod(allow_plaintext=True, allow_plaintext_metrics=True))
    assert not permissive(train, ctx).has_error()
    assert not permissive(ev, ctx).has_error()
    # the node's operator may allow plain metrics by node config
    opted = Context(run_id=1, node_id=7, node_config={"secagg-allow-plain-metrics": True}, state=RecordDict(),
                    run_config={})
    assert app(ev, opted).content.metric_records["metrics"]["eval-loss"] == pytest.approx(eval_metrics_for(7)[0])


def setup_message(params, client_id=1, payload=None, node=7, mid="s1") -> Message:
    """The first message of a round, as the server builds it."""
    from secagg.encoding import wire
    from secagg.flower.client import SETUP_STAGE
    from secagg.flower.records import pack

    content = pack(SETUP_STAGE, wire.encode(params) if payload is None else payload, round=1, **{
        "client-id": client_id, "arrays-key": "arrays", "weighted-by": "num-examples"})
    content["arrays"] = model()
    content["config"] = ConfigRecord({"server-round": 1})
    msg = Message(content, node, MessageType.TRAIN)
    msg.metadata.__dict__["_message_id"] = mid
    return msg


def node_context(tmp_path, node=7) -> Context:
    return Context(run_id=1, node_id=node, node_config={"secagg-ledger-dir": str(tmp_path / "ledger")},
                   state=RecordDict(), run_config={})


def live_sessions(tmp_path, node=7) -> list[str]:
    d = tmp_path / "ledger" / str(node)
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else []


def tombstones(tmp_path, node=7) -> list[bytes]:
    """The finished sessions in the node's ledger ring (hashed session ids), oldest first."""
    from secagg.flower.client import NodeLedger
    d = tmp_path / "ledger" / str(node)
    if not (d / NodeLedger.RING).exists():
        return []
    data = (d / NodeLedger.RING).read_bytes()
    slots = (len(data) - 8) // 32
    head = int.from_bytes(data[:8], "big") % slots
    ids = [data[8 + i * 32:8 + (i + 1) * 32] for i in range(slots)]
    return [x for x in ids[head:] + ids[:head] if x != bytes(32)]


@pytest.mark.parametrize("payload, why", [
    (7, "'payload' byte string"), ("text", "'payload' byte string"), (b"", "not a secagg message"),
    (b"\x93garbage", "not a secagg message"), ("other-type", "unexpected message type")])
def test_setup_with_a_bad_payload_is_refused_before_training(tmp_path, payload, why):
    """A first message whose payload is not the round's parameters gets an
    error reply that says why; the node neither trains nor keeps or claims
    anything."""
    from secagg.encoding import wire
    from secagg.flower.server import make_params
    from secagg.protocols.masking.messages import UnmaskRequest

    if payload == "other-type":
        payload = wire.encode(UnmaskRequest(session_id=b"\x01" * 32, alive=(1, 2), dropped=()))
    calls: list = []
    ctx = node_context(tmp_path)
    reply = make_client_app(calls=calls)(setup_message(make_params(FAST, 3, 16), payload=payload), ctx)
    assert reply.has_error() and why in reply.error.reason
    assert calls == [] and STATE_KEY not in ctx.state.config_records and live_sessions(tmp_path) == []


def test_a_replayed_first_message_is_refused_and_changes_nothing(tmp_path):
    """A server that sends a round's first message twice gets keys once; the
    second copy (a duplicate delivery, or a server probing for a second set of
    keys) is refused as out of place and changes nothing: the node stays in
    the round with the keys it advertised. A copy reaching the node with a
    fresh state finds the stage claimed in the ledger and is refused too."""
    from secagg.flower.server import make_params

    params = make_params(FAST, 3, 16)
    ctx = node_context(tmp_path)
    app = make_client_app()
    first = app(setup_message(params), ctx)
    assert not first.has_error() and first.content.config_records[RECORD_KEY]["stage"] == "advertise_keys"
    assert STATE_KEY in ctx.state.config_records and live_sessions(tmp_path) == [params.session_id.hex()]
    saved = bytes(ctx.state.config_records[STATE_KEY]["record"])
    again = app(setup_message(params, mid="s2"), ctx)
    assert again.has_error() and "wrong_round" in again.error.reason and "nothing changed" in again.error.reason
    assert bytes(ctx.state.config_records[STATE_KEY]["record"]) == saved
    assert live_sessions(tmp_path) == [params.session_id.hex()] and tombstones(tmp_path) == []
    third = app(setup_message(params, mid="s3"), node_context(tmp_path))  # a fork with a fresh state
    assert third.has_error() and "refusing a second answer" in third.error.reason


def test_a_message_of_another_session_leaves_the_round_in_progress_alone(tmp_path):
    """A later-stage message of a session the node never opened is refused as
    out of place and leaves no trace; the round the node is in goes on."""
    from secagg.drivers import ClientDriver, Contribution, MaskingClientRole, ServerDriver
    from secagg.flower.records import pack
    from secagg.flower.server import make_params
    from secagg.protocols.masking import MaskingServer

    ctx = node_context(tmp_path)
    app = make_client_app()
    mine, other = make_params(FAST, 3, 16, 1), make_params(FAST, 3, 16, 2)
    assert not app(setup_message(mine), ctx).has_error()
    server = ServerDriver(MaskingServer(other))
    for party, data in server.start().items():  # the other session's first stage, with clients of its own
        server.receive(party, ClientDriver(MaskingClientRole(party)).handle(data, Contribution(np.zeros(16))))
    keys = server.close_stage()[1]
    msg = Message(pack("share_keys", keys), 7, MessageType.TRAIN)
    msg.metadata.__dict__["_message_id"] = "k1"
    reply = app(msg, ctx)
    assert reply.has_error() and "wrong_round" in reply.error.reason
    assert live_sessions(tmp_path) == [mine.session_id.hex()]
    assert tombstones(tmp_path) == []
    assert ctx.state.config_records[STATE_KEY]["session"] == mine.session_id


def test_a_new_round_retires_the_one_a_node_was_left_in(tmp_path):
    """A node dropped in the middle of a round keeps that round's state only
    until the next round opens: then its secrets and claims go."""
    from secagg.flower.server import make_params

    ctx = node_context(tmp_path)
    app = make_client_app()
    old, new = make_params(FAST, 3, 16, 1), make_params(FAST, 3, 16, 2)
    assert not app(setup_message(old), ctx).has_error()
    assert not app(setup_message(new, mid="s2"), ctx).has_error()
    assert live_sessions(tmp_path) == [new.session_id.hex()]
    from secagg.flower.client import NodeLedger
    assert tombstones(tmp_path) == [NodeLedger._sid(old.session_id)]


def test_node_policy_min_clients():
    grid = InProcessGrid(NODES)
    grid.contexts[NODES[0]].node_config["secagg-min-clients"] = 10
    (report, new), arrays = run_round(grid)
    assert "at least 10" in report.failures[NODES[0]]
    assert_close_to_reference(report, new, arrays, NODES[1:])


def test_weight_above_max_weight_refused_before_keys():
    grid = InProcessGrid(NODES)
    settings = SecAggSettings(max_weight=12.0, train_timeout=0.2, stage_timeout=0.2, poll_interval=0.01)
    (report, new), arrays = run_round(grid, settings)
    heavy = [n for n in NODES if weight_for(n) > 12]
    assert heavy and all("max_weight" in report.failures[n] for n in heavy)
    assert_close_to_reference(report, new, arrays, [n for n in NODES if n not in heavy], settings)


def test_strategy_runs_rounds_and_keeps_reports():
    grid = InProcessGrid(NODES)
    seen = []
    strategy = SecAggFedAvg(settings=dataclasses.replace(FAST, eval_metrics="eval-loss"), on_round=seen.append,
                            min_available_nodes=5, min_train_nodes=5)
    arrays = model()
    result = strategy.start(grid, arrays, num_rounds=2, timeout=1)
    assert [r.server_round for r in seen] == [1, 2] and all(r.outcome == "completed" for r in seen)
    layout = ModelLayout.of(arrays)
    expected = layout.to_vector(arrays) + expected_mean(NODES, 1) + expected_mean(NODES, 2)
    np.testing.assert_allclose(layout.to_vector(result.arrays), expected, atol=1e-3)
    assert result.train_metrics_clientapp[2]["secagg-included"] == 5
    expected_loss = np.average([eval_metrics_for(n)[0] for n in NODES], weights=[weight_for(n) for n in NODES])
    assert result.evaluate_metrics_clientapp[2]["eval-loss"] == pytest.approx(expected_loss, abs=1e-3)
    with pytest.raises(RuntimeError, match="never aggregates plaintext"):
        strategy.aggregate_train(1, [])


def test_settings_from_run_config():
    s = SecAggSettings.from_run_config({"num-server-rounds": 3, "secagg-protocol": "secagg", "secagg-threshold": 0,
                                        "secagg-clip": 2, "secagg-frac-bits": 12, "secagg-stage-timeout": 5})
    assert (s.protocol, s.threshold, s.clip, s.frac_bits, s.stage_timeout) == ("secagg", None, 2.0, 12, 5.0)
    assert SecAggSettings.from_run_config(s.as_run_config()) == s
    with pytest.raises(ParameterError, match="unknown run-config key 'secagg-treshold'"):
        SecAggSettings.from_run_config({"secagg-treshold": 3})
    with pytest.raises(ParameterError, match="must be an integer"):
        SecAggSettings.from_run_config({"secagg-frac-bits": 1.5})
    with pytest.raises(ParameterError):
        SecAggSettings.from_run_config({"secagg-protocol": "plain"})


def test_layout_keeps_integer_arrays_out_of_the_aggregate():
    rec = ArrayRecord({"w": flwr.app.Array(np.ones((2, 2), np.float32)),
                       "count": flwr.app.Array(np.array([7], np.int64))})
    layout = ModelLayout.of(rec)
    assert layout.dim == 4
    back = layout.from_vector(np.arange(4.0), rec)
    assert back["count"].numpy().tolist() == [7] and back["w"].numpy().dtype == np.float32


# ------------------------------------------------------------------ malicious-server mode

from secagg.flower import keys as node_keys  # noqa: E402

MALICIOUS = SecAggSettings(malicious_server=True, train_timeout=0.2, stage_timeout=0.2, poll_interval=0.01)


def provision_keys(grid: InProcessGrid, tmp_path, nodes=NODES, extra_trusted=()):
    """Each node gets its key file; every node gets the federation's list."""
    public = {}
    for n in nodes:
        public[n] = node_keys.generate_node_key(tmp_path / f"{n}.key")
    trusted = tmp_path / "trusted-keys.txt"
    trusted.write_text("# federation\n" + "\n".join(k.hex() for k in [*public.values(), *extra_trusted]) + "\n")
    for n in nodes:
        grid.contexts[n].node_config.update({"secagg-signing-key": str(tmp_path / f"{n}.key"),
                                             "secagg-trusted-keys": str(trusted)})
    return public


def test_malicious_server_mode_round(tmp_path):
    grid = InProcessGrid(NODES)
    public = provision_keys(grid, tmp_path)
    (report, new), arrays = run_round(grid, MALICIOUS)
    assert_close_to_reference(report, new, arrays, NODES, MALICIOUS)
    assert report.params["malicious_server"] is True
    assert report.verification_keys == public
    assert "consistency_check" in report.stage_seconds


def test_malicious_server_mode_dropout_after_masking(tmp_path):
    victim = NODES[3]
    # messages: 1 identify, 2 setup, 3 keys, 4 shares, 5 consistency request, 6 unmask request
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "silent" if (node, n) == (victim, 5) else "ok")
    provision_keys(grid, tmp_path)
    (report, new), arrays = run_round(grid, MALICIOUS)
    assert_close_to_reference(report, new, arrays, NODES, MALICIOUS)  # its masked input is in
    assert report.dropped == {victim: "consistency_check"}


def test_node_without_key_is_left_out(tmp_path):
    grid = InProcessGrid(NODES)
    provision_keys(grid, tmp_path, nodes=NODES[1:])
    (report, new), arrays = run_round(grid, MALICIOUS)
    assert NODES[0] not in report.nodes
    assert "needs the node config secagg-signing-key" in report.failures[NODES[0]]
    assert_close_to_reference(report, new, arrays, NODES[1:], MALICIOUS)


def test_nodes_refuse_keys_not_on_their_list(tmp_path):
    """A server that swaps in a key of its own for one node (to impersonate it)
    is refused by every node in the setup stage."""
    grid = InProcessGrid(NODES)
    provision_keys(grid, tmp_path)
    forged = node_keys.generate_node_key(tmp_path / "server-made.key")
    honest = {n: node_keys.verification_key(node_keys.load_signing_key(tmp_path / f"{n}.key")) for n in NODES}
    with pytest.raises(ProtocolAborted, match="too_few_survivors"):
        run_secure_round(grid, NODES, model(), ConfigRecord({"server-round": 1}), MALICIOUS, 1,
                         signing_keys={**honest, NODES[2]: forged})
    for n in NODES:
        assert STATE_KEY not in grid.contexts[n].state.config_records


def test_node_policy_requires_malicious_server_mode():
    grid = InProcessGrid(NODES)
    grid.contexts[NODES[1]].node_config["secagg-require-malicious-server"] = True
    (report, new), arrays = run_round(grid)
    assert "requires the malicious-server mode" in report.failures[NODES[1]]
    assert_close_to_reference(report, new, arrays, [n for n in NODES if n != NODES[1]])


def test_key_files(tmp_path):
    pub = node_keys.generate_node_key(tmp_path / "a.key")
    assert (tmp_path / "a.key").stat().st_mode & 0o777 == 0o600
    assert node_keys.verification_key(node_keys.load_signing_key(tmp_path / "a.key")) == pub
    with pytest.raises(FileExistsError):
        node_keys.generate_node_key(tmp_path / "a.key")
    (tmp_path / "t.txt").write_text("zz\n")
    with pytest.raises(ParameterError, match="not a hex key"):
        node_keys.load_trusted_keys(tmp_path / "t.txt")
    with pytest.raises(ParameterError, match="cannot read"):
        node_keys.load_signing_key(tmp_path / "missing.key")


def test_local_deployment_helpers():
    from secagg.flower.local import LocalDeployment, format_config, free_port
    assert format_config({"partition-id": 0, "path": 'a "b"', "flag": True, "x": 0.5}) == \
        'partition-id=0 path="a \\"b\\"" flag=true x=0.5'
    assert 0 < free_port() < 65536
    with pytest.raises(ValueError):
        LocalDeployment(2, node_configs=[{}])


class ForkingGrid(InProcessGrid):
    """A SuperNode that runs two tasks of one stage at once: the server's n-th
    message to ``node`` is also delivered to a second task started from the
    same saved ``context.state`` (what concurrent ClientApp processes see)."""

    def __init__(self, node_ids, node: int, nth: int, **kw):
        super().__init__(node_ids, **kw)
        self.fork_node, self.fork_nth = node, nth
        self.forked_replies: list[Message] = []

    def push_messages(self, messages):
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node == self.fork_node and self.received[node] + 1 == self.fork_nth:
                ctx = self.contexts[node]
                twin = Context(run_id=1, node_id=node, node_config=dict(ctx.node_config),
                               state=copy.deepcopy(ctx.state), run_config={})
                first = self.app(Message(copy.deepcopy(msg.content), metadata=copy.deepcopy(msg.metadata)), ctx)
                second = self.app(Message(copy.deepcopy(msg.content), metadata=copy.deepcopy(msg.metadata)), twin)
                self.forked_replies += [first, second]
                ctx.state = copy.deepcopy(ctx.state)  # the first task's result stands
        return super().push_messages(messages)


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_a_node_answers_each_stage_of_a_session_once_even_from_forked_state(tmp_path, nth):
    grid = ForkingGrid(NODES, NODES[0], nth)
    for ctx in grid.contexts.values():
        ctx.node_config["secagg-ledger-dir"] = str(tmp_path)
    run_round(grid)
    first, second = grid.forked_replies
    assert not first.has_error()
    assert second.has_error() and "refusing a second answer" in second.error.reason
    # the first answer stands: after the last stage the session is over, before it the stage is taken
    assert ("over for this client" if nth == 4 else "already answered") in second.error.reason


@pytest.mark.parametrize("problem", ["world-writable", "group-writable", "symlink", "other-owner",
                                     "node-directory-writable"])
def test_a_ledger_directory_others_could_change_is_refused(tmp_path, monkeypatch, problem):
    """A ledger directory that another local user could write to (or that is a
    link to somewhere else, or belongs to someone else) makes the node refuse
    to answer, rather than trust claims others could delete."""
    import os

    from secagg.drivers.store import StageAlreadyAnswered
    from secagg.flower import client as flower_client

    target = tmp_path / "ledger"
    target.mkdir(mode=0o700)
    ledger = target
    broken = target
    if problem == "world-writable":
        target.chmod(0o777)
    elif problem == "group-writable":
        target.chmod(0o770)
    elif problem == "symlink":
        ledger = tmp_path / "link"
        ledger.symlink_to(target)
    elif problem == "node-directory-writable":
        broken = target / "7"
        broken.mkdir(mode=0o700)
        broken.chmod(0o777)
    else:
        real = os.getuid()
        monkeypatch.setattr(flower_client.os, "getuid", lambda: real + 1)
    ctx = Context(run_id=1, node_id=7, node_config={"secagg-ledger-dir": str(ledger)}, state=RecordDict(),
                  run_config={})
    with pytest.raises(flower_client._Refused, match="ledger directory"):
        flower_client.node_store(ctx)
    # and through the mod: an error reply, no training, nothing kept
    from secagg.flower.server import make_params
    calls: list = []
    reply = make_client_app(calls=calls)(setup_message(make_params(FAST, 3, 16)), ctx)
    assert reply.has_error() and "ledger directory" in reply.error.reason
    assert calls == [] and STATE_KEY not in ctx.state.config_records
    broken.chmod(0o700)
    if problem in ("world-writable", "group-writable", "node-directory-writable"):
        store = flower_client.node_store(ctx)  # once private, the claim goes through
        store.claim(b"\x01" * 32, "advertise_keys")
        with pytest.raises(StageAlreadyAnswered, match="already answered"):
            flower_client.node_store(ctx).claim(b"\x01" * 32, "advertise_keys")


# ------------------------------------------------------------------ rules, early close, observer, ledger


@pytest.mark.parametrize("rule", ["mean", "fedavg", "weighted", "hybrid"])
def test_every_averaging_rule_runs_on_flower(rule):
    """The rule decides the weights the nodes send (1 for the unweighted
    rules) and the result; the server applies it as global + lr * result."""
    grid = InProcessGrid(NODES)
    settings = SecAggSettings(rule=rule, train_timeout=0.2, stage_timeout=0.2, poll_interval=0.01)
    arrays = model()
    report, new = run_secure_round(grid, NODES, arrays, ConfigRecord({"server-round": 1}), settings, 1,
                                   server_learning_rate=0.5)
    assert report.outcome == "completed" and report.rule == rule
    expected = reference_aggregate(rule, [delta_for(n, 1) for n in NODES], [weight_for(n) for n in NODES],
                                   clip=settings.clip)
    unweighted = rule == "mean"
    assert report.sum_weights == pytest.approx(len(NODES) if unweighted else sum(weight_for(n) for n in NODES),
                                               abs=1e-3)
    tol = len(NODES) * 2.0 ** -settings.frac_bits + 1e-6
    np.testing.assert_allclose(report.mean_update, expected, atol=tol)
    layout = ModelLayout.of(arrays)
    np.testing.assert_allclose(layout.to_vector(new) - layout.to_vector(arrays), 0.5 * expected, atol=tol + 1e-6)
    if unweighted:  # a different answer from the weighted mean, so the weights really were 1
        assert np.abs(expected - expected_mean(NODES)).max() > 1e-3


def test_strategy_takes_its_rule_from_the_run_config_or_an_argument():
    from secagg.aggregation import Rule
    from secagg.flower.server import training_rule

    settings = SecAggSettings.from_run_config({"secagg-rule": "mean", "secagg-train-timeout": 0.2,
                                               "secagg-stage-timeout": 0.2, "secagg-poll-interval": 0.01})
    assert settings.rule == "mean" and SecAggSettings.from_run_config(settings.as_run_config()) == settings
    grid = InProcessGrid(NODES)
    strategy = SecAggFedAvg(settings=settings, server_learning_rate=0.5, min_available_nodes=5,
                            min_train_nodes=5, fraction_evaluate=0.0)
    assert strategy.rule == Rule("mean", server_lr=0.5) and strategy.server_learning_rate == 0.5
    arrays = model()
    result = strategy.start(grid, arrays, num_rounds=1, timeout=1)
    mean = reference_aggregate("mean", [delta_for(n, 1) for n in NODES], clip=1.0)
    layout = ModelLayout.of(arrays)
    np.testing.assert_allclose(layout.to_vector(result.arrays) - layout.to_vector(arrays), 0.5 * mean, atol=1e-3)
    assert strategy.reports[0].rule == "mean" and result.train_metrics_clientapp[1]["secagg-sum-weights"] == \
        pytest.approx(5.0, abs=1e-3)
    # a Rule object wins over the run config; a learning rate given beside it replaces the rule's
    assert SecAggFedAvg(settings=settings, rule=Rule("weighted", server_lr=2.0)).rule == Rule("weighted", 2.0)
    assert SecAggFedAvg(settings=settings, rule="fedavg", server_learning_rate=3.0).rule == Rule("fedavg", 3.0)
    assert training_rule("hybrid").name == "hybrid"


@pytest.mark.parametrize("bad", [dict(rule="sum"), dict(rule="median"), dict(server_learning_rate=0.0),
                                 dict(server_learning_rate=float("nan"))])
def test_a_rule_that_cannot_train_is_refused_before_any_message(bad):
    """"sum" is not an average (applying it to the model would add every
    node's update); unknown names and learning rates <= 0 are refused too,
    all before anything is sent."""
    grid = InProcessGrid(NODES)
    with pytest.raises(ParameterError):
        run_secure_round(grid, NODES, model(), ConfigRecord({"server-round": 1}), FAST, 1, **bad)
    with pytest.raises(ParameterError):
        SecAggFedAvg(settings=FAST, **bad)
    assert all(v == 0 for v in grid.received.values())
    if "rule" in bad:
        with pytest.raises(ParameterError, match="secagg-rule"):
            SecAggSettings.from_run_config({"secagg-rule": bad["rule"]})


class CountingGrid(InProcessGrid):
    """Counts pulls; the messages in ``refused`` ((node, n) as for
    ``behaviour``) are not taken by the SuperLink (an empty message id)."""

    def __init__(self, *a, refused=(), **kw):
        super().__init__(*a, **kw)
        self.pulls = 0
        self.refused = set(refused)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if (node, self.received[node] + 1) in self.refused:
                self.received[node] += 1
                ids.append("")
            else:
                ids += super().push_messages([msg])
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        return super().pull_messages(message_ids)


def test_a_stage_closes_as_soon_as_every_node_answered_or_is_gone():
    """With long deadlines, a round whose nodes all answer (or send an error,
    or a reply the driver refuses) needs exactly one pull per stage: nobody
    waits for the deadline."""
    def tamper(node, reply):
        if node == NODES[1] and not reply.has_error() and \
                reply.content.config_records[RECORD_KEY]["stage"] == "masked_input":
            reply.content.config_records[RECORD_KEY]["payload"] = b"\x93garbage"
        return reply

    grid = CountingGrid(NODES, behaviour=lambda node, n: "error" if (node, n) == (NODES[4], 2) else "ok",
                        tamper=tamper)
    slow = SecAggSettings(train_timeout=600, stage_timeout=600, poll_interval=0.01)
    (report, new), arrays = run_round(grid, slow)
    assert grid.pulls == 4  # advertise_keys, share_keys, masked_input, unmasking
    assert_close_to_reference(report, new, arrays, NODES[2:4] + NODES[:1], slow)
    assert report.dropped == {NODES[4]: "share_keys", NODES[1]: "masked_input"}
    assert set(report.stage_seconds) == {"advertise_keys", "share_keys", "masked_input", "unmasking"}


def test_a_reply_to_another_stage_drops_its_node_without_waiting():
    """A node that answers the share_keys message with its earlier key
    advertisement (out of place: wrong_round) has sent its one reply to that
    stage: it is dropped there, and nobody waits for the deadline."""
    adverts = {}

    def tamper(node, reply):
        stage = reply.content.config_records[RECORD_KEY]["stage"]
        if node == NODES[2] and stage == "advertise_keys":
            adverts[node] = reply.content.config_records[RECORD_KEY]["payload"]
        elif node == NODES[2] and stage == "share_keys":
            reply.content.config_records[RECORD_KEY]["payload"] = adverts[node]
        return reply

    grid = CountingGrid(NODES, tamper=tamper)
    slow = SecAggSettings(train_timeout=600, stage_timeout=600, poll_interval=0.01)
    (report, new), arrays = run_round(grid, slow)
    assert grid.pulls == 4
    assert report.dropped == {NODES[2]: "share_keys"}
    assert report.failures[NODES[2]].startswith("share_keys: rejected (wrong_round)")
    assert_close_to_reference(report, new, arrays, [n for n in NODES if n != NODES[2]], slow)


def test_a_message_the_superlink_did_not_take_drops_its_node_at_once():
    grid = CountingGrid(NODES, refused={(NODES[0], 3)})
    slow = SecAggSettings(train_timeout=600, stage_timeout=600, poll_interval=0.01)
    (report, new), arrays = run_round(grid, slow)
    assert grid.pulls == 4
    assert report.dropped == {NODES[0]: "masked_input"}
    assert report.failures == {NODES[0]: "masked_input: the SuperLink did not take the message"}
    assert_close_to_reference(report, new, arrays, NODES[1:], slow)


def test_an_observer_sees_the_round_bytes_and_refusals():
    from secagg.drivers import Recorder

    def tamper(node, reply):
        if node == NODES[3] and not reply.has_error() and \
                reply.content.config_records[RECORD_KEY]["stage"] == "share_keys":
            reply.content.config_records[RECORD_KEY]["payload"] = b"\x93garbage"
        return reply

    recorder = Recorder(transcript=True)
    grid = InProcessGrid(NODES, tamper=tamper)
    report, _ = run_secure_round(grid, NODES, model(), ConfigRecord({"server-round": 1}), FAST, 1,
                                 observer=recorder)
    assert recorder.rejections == [("server", "share_keys", 4, "malformed_message")]  # client id 4 = NODES[3]
    assert set(recorder.bytes_sent) == set(recorder.bytes_received) == {1, 2, 3, 4, 5}
    stages = [stage for stage, direction, party, data in recorder.transcript if direction == "to_client"]
    assert stages[0] == "advertise_keys" and stages[-1] == "unmasking"
    assert "rejected (malformed_message)" in report.failures[NODES[3]]


def test_the_ledger_keeps_only_tombstones_round_after_round(tmp_path):
    """Claims are made only for messages that passed their checks and go when
    the round ends for the node; a node dropped mid-round keeps its session
    only until the next round opens. So after rounds, every node's ledger
    holds one empty tombstone per round and nothing else."""
    victim = NODES[2]
    # round 1: the victim's 3rd message (forwarded shares) fails in Flower: it keeps round 1's state
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "error" if (node, n) == (victim, 3) else "ok")
    for ctx in grid.contexts.values():
        ctx.node_config["secagg-ledger-dir"] = str(tmp_path / "ledger")
    seen = []

    def on_round(report):
        live = {n: live_sessions(tmp_path, n) for n in NODES}
        seen.append((report.server_round, {n: len(v) for n, v in live.items()},
                     {n: len(tombstones(tmp_path, n)) for n in NODES}))

    strategy = SecAggFedAvg(settings=FAST, on_round=on_round, min_available_nodes=5, min_train_nodes=5,
                            fraction_evaluate=0.0)
    strategy.start(grid, model(), num_rounds=3, timeout=1)
    assert [r.outcome for r in strategy.reports] == ["completed"] * 3
    assert strategy.reports[0].dropped == {victim: "masked_input"}
    after1, after2, after3 = seen
    assert after1[1] == {n: int(n == victim) for n in NODES}  # only the victim's round is still open
    assert after1[2] == {n: int(n != victim) for n in NODES}
    for _, live, tombs in (after2, after3):
        assert all(v == 0 for v in live.values())
    assert after3[2] == {n: 3 for n in NODES}
    for n in NODES:
        names = [p.name for p in (tmp_path / "ledger" / str(n)).iterdir()]
        assert names == ["finished.ring"]  # no claim, no session directory left
        assert STATE_KEY not in grid.contexts[n].state.config_records


def _ledger_footprint(base):
    """Every entry under the ledger directory with its size."""
    return sorted((str(p.relative_to(base)), p.stat().st_size if p.is_file() else -1) for p in base.rglob("*"))


def test_the_ledger_does_not_grow_over_fifty_rounds(tmp_path):
    """50 rounds, one node lost mid-round now and then: after every round the
    ledger directory holds the same entries of the same sizes (the ring of
    finished sessions has a fixed size; claims go when a round ends), and a
    finished session stays refused."""
    from secagg.flower.client import NodeLedger
    victim = NODES[2]
    # the victim's forwarded-shares message fails in rounds 5, 17 and 33 (4 messages per round)
    fail_at = {4 * (r - 1) + 3 for r in (5, 17, 33)}
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "error" if node == victim and n in fail_at else "ok")
    ledger = tmp_path / "ledger"
    for ctx in grid.contexts.values():
        ctx.node_config.update({"secagg-ledger-dir": str(ledger), "secagg-ledger-tombstones": 16})
    footprints = []

    def on_round(report):
        footprints.append((report.server_round, _ledger_footprint(ledger)))

    strategy = SecAggFedAvg(settings=FAST, on_round=on_round, min_available_nodes=5, min_train_nodes=5,
                            fraction_evaluate=0.0)
    strategy.start(grid, model(), num_rounds=50, timeout=1)
    assert [r.outcome for r in strategy.reports] == ["completed"] * 50
    assert [r.server_round for r in strategy.reports if r.dropped] == [5, 17, 33]
    steady = [fp for r, fp in footprints if r not in (5, 17, 33)]  # a dropped node keeps its open round until the next
    assert len(steady) == 47 and all(fp == steady[0] for fp in steady), "the ledger grew"
    assert steady[0] == sorted([(f"{n}", -1) for n in NODES] + [(f"{n}/finished.ring", 8 + 16 * 32) for n in NODES])
    for n in NODES:
        assert len(tombstones(tmp_path, n)) == 16  # the last 16 sessions, oldest forgotten first
    # the last round's session is remembered: its first message again is refused, nothing is written
    last = strategy.reports[-1]
    node_ledger = NodeLedger(ledger / str(NODES[0]), tombstones=16)
    assert node_ledger.finished(bytes.fromhex(last.params["session_id"]))
    with pytest.raises(Exception, match="over for this client"):
        node_ledger.claim(bytes.fromhex(last.params["session_id"]), "advertise_keys")
    assert _ledger_footprint(ledger) == steady[0]


def test_the_ledger_keeps_a_bounded_number_of_open_sessions(tmp_path):
    """Rounds left open (their runs ended before the round did) are finished
    oldest first once more than ``open_sessions`` are open; a finished one
    takes no claim."""
    from secagg.drivers import StageAlreadyAnswered
    from secagg.flower.client import NodeLedger
    ledger = NodeLedger(tmp_path / "l", tombstones=8, open_sessions=3)
    sessions = [bytes([i]) * 32 for i in range(5)]
    for s_ in sessions:
        ledger.claim(s_, "advertise_keys")
    assert ledger.sessions() == sorted(s_.hex() for s_ in sessions[2:])
    for s_ in sessions[:2]:
        assert ledger.finished(s_)
        with pytest.raises(StageAlreadyAnswered):
            ledger.claim(s_, "share_keys")
    with pytest.raises(StageAlreadyAnswered):  # an open session's stage is answered once
        ledger.claim(sessions[4], "advertise_keys")
    ledger.claim(sessions[4], "share_keys")
    # a smaller ring keeps the newest tombstones
    small = NodeLedger(tmp_path / "l", tombstones=1, open_sessions=3)
    assert small.finished(sessions[1]) and not small.finished(sessions[0])
    assert (tmp_path / "l" / NodeLedger.RING).stat().st_size == 8 + 32
    with pytest.raises(ParameterError):
        NodeLedger(tmp_path / "m", tombstones=0)
    # a tombstone file left by the earlier ledger layout (one empty file per finished session) still counts
    legacy = bytes([9]) * 32
    (tmp_path / "l" / f"{legacy.hex()}.done").touch()
    assert small.finished(legacy)
    with pytest.raises(StageAlreadyAnswered):
        small.claim(legacy, "advertise_keys")


# ------------------------------------------------------------------ Paillier, decrypted by a committee of the nodes

from secagg.flower.keys import deal_committee_files  # noqa: E402


@pytest.fixture(scope="module")
def committees(tmp_path_factory):
    """Two committees of five holders (1024-bit keys, for speed): the run's and another one."""
    out = {}
    for name in ("ours", "other"):
        d = tmp_path_factory.mktemp(f"committee-{name}")
        d.chmod(0o700)
        ck, _ = deal_committee_files(d, 5, key_bits=1024)
        out[name] = (d, ck)
    return out


#: 410 values: 13 ciphertexts under a 1024-bit key, so that every member of a committee of five decrypts a part
PAILLIER_SHAPES = {"w": (40, 10), "b": (10,)}


def paillier_round(grid, settings, nodes=NODES, **kw):
    arrays = model(shapes=PAILLIER_SHAPES)
    return run_secure_round(grid, nodes, arrays, ConfigRecord({"server-round": 1}), settings, 1, **kw), arrays


def paillier_settings(committee_dir, **kw):
    return SecAggSettings(protocol="paillier", committee_key=str(committee_dir / "committee.key"), train_timeout=0.2,
                          stage_timeout=0.2, poll_interval=0.01, **kw)


def provision_shares(grid: InProcessGrid, committee_dir, nodes=NODES, holders=None):
    """Node i gets the pinned committee key and holder (i + 1)'s share file."""
    for i, n in enumerate(nodes):
        holder = (holders or {}).get(n, i + 1)
        grid.contexts[n].node_config.update({
            "secagg-committee-key": str(committee_dir / "committee.key"),
            "secagg-key-share": str(committee_dir / f"share-{holder}.key"), "secagg-min-key-bits": 1024})


def test_paillier_round_decrypted_by_the_committee_matches_plaintext_fedavg(committees):
    d, ck = committees["ours"]
    grid = InProcessGrid(NODES)
    provision_shares(grid, d)
    settings = paillier_settings(d)
    (report, new), arrays = paillier_round(grid, settings)
    assert_close_to_reference(report, new, arrays, NODES, settings)
    assert report.client_ids == {n: i + 1 for i, n in enumerate(NODES)}  # the holder ids
    assert report.dropped == {} and report.failures == {}
    dec = report.decryption
    assert dec["committee"] == [1, 2, 3, 4, 5] and dec["threshold"] == 3 and dec["committee_key_id"] == ck.key_id.hex()
    assert dec["asked"] == [1, 2, 3, 4, 5] and dec["failed_members"] == [] and dec["recovery"] is False
    assert report.params["protocol"] == "paillier" and report.params["key_bits"] == 1024
    assert set(report.stage_seconds) == {"submit", "decrypt"}
    assert report.to_json_dict()["decryption"]["threshold"] == 3
    # messages per node: identify, parameters (train + submit), decryption request
    assert all(v == 3 for v in grid.received.values())


@pytest.mark.parametrize("how", ["silent", "error"])
def test_paillier_member_lost_during_decryption_is_recovered(committees, how):
    """A member that dies holding its decryption request (or answers it with
    an error): the ciphertexts it was to decrypt go to the other members in
    the recovery attempt; its update, submitted before, stays in the sum."""
    d, _ = committees["ours"]
    victim = NODES[1]
    grid = InProcessGrid(NODES, behaviour=lambda node, n: how if (node, n) == (victim, 3) else "ok")
    provision_shares(grid, d)
    settings = paillier_settings(d)
    (report, new), arrays = paillier_round(grid, settings)
    assert_close_to_reference(report, new, arrays, NODES, settings)
    assert report.failures[victim].startswith("decrypt: ")
    assert report.decryption["recovery"] is True and report.decryption["failed_members"] == [2]
    assert 2 not in report.decryption["recovery_asked"] and report.decryption["recovery_asked"]
    assert "decrypt_recovery" in report.stage_seconds


def test_paillier_too_many_members_lost_during_decryption_aborts(committees):
    d, _ = committees["ours"]
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "silent" if node in NODES[:3] and n == 3 else "ok")
    provision_shares(grid, d)
    with pytest.raises(ProtocolAborted, match="decryption_failed"):
        paillier_round(grid, paillier_settings(d))


def test_paillier_node_with_a_share_of_another_committee_is_left_out(committees):
    """A node that pinned another committee's key (its identify answer names
    another key id) is refused by the server; a node that pinned the run's
    key but holds a share of another committee refuses itself. Either way it
    is left out before the round opens and the others complete it."""
    d, _ = committees["ours"]
    other, _ = committees["other"]
    grid = InProcessGrid(NODES)
    provision_shares(grid, d)
    grid.contexts[NODES[0]].node_config.update({"secagg-committee-key": str(other / "committee.key"),
                                                 "secagg-key-share": str(other / "share-1.key")})
    grid.contexts[NODES[1]].node_config["secagg-key-share"] = str(other / "share-2.key")
    settings = paillier_settings(d)
    (report, new), arrays = paillier_round(grid, settings)
    assert NODES[0] not in report.nodes and NODES[1] not in report.nodes
    assert report.failures[NODES[0]].startswith("identify: rejected (invalid_ciphertext)")
    assert "another committee" in report.failures[NODES[0]]
    assert "belongs to another committee" in report.failures[NODES[1]]
    assert_close_to_reference(report, new, arrays, NODES[2:], settings)
    assert report.decryption["absent_members"] == [1, 2]
    assert grid.received[NODES[0]] == grid.received[NODES[1]] == 1  # asked who they are, nothing more


def test_paillier_node_without_its_share_gets_a_clear_error_reply(committees, tmp_path):
    d, _ = committees["ours"]
    grid = InProcessGrid(NODES)
    provision_shares(grid, d)
    del grid.contexts[NODES[2]].node_config["secagg-key-share"]
    grid.contexts[NODES[3]].node_config["secagg-key-share"] = str(tmp_path / "missing.key")
    settings = paillier_settings(d)
    (report, new), arrays = paillier_round(grid, settings)
    assert "a Paillier round needs the node config secagg-key-share" in report.failures[NODES[2]]
    assert "cannot read the key share file" in report.failures[NODES[3]]
    assert_close_to_reference(report, new, arrays, [NODES[0], NODES[1], NODES[4]], settings)
    # straight through the mod: the error reply says what is missing, nothing is kept
    from secagg.flower.records import pack
    ctx = Context(run_id=1, node_id=9, node_config={}, state=RecordDict(), run_config={})
    msg = Message(pack("identify", b"", round=1, protocol="paillier"), 9, MessageType.TRAIN)
    msg.metadata.__dict__["_message_id"] = "i1"
    reply = make_client_app()(msg, ctx)
    assert reply.has_error() and "needs the node config secagg-committee-key" in reply.error.reason
    assert STATE_KEY not in ctx.state.config_records


def test_paillier_share_file_readable_by_others_is_refused(committees, tmp_path):
    import shutil

    d, _ = committees["ours"]
    leaky = tmp_path / "share-3.key"
    shutil.copy(d / "share-3.key", leaky)
    leaky.chmod(0o644)
    grid = InProcessGrid(NODES)
    provision_shares(grid, d)
    grid.contexts[NODES[2]].node_config["secagg-key-share"] = str(leaky)
    (report, _), _ = paillier_round(grid, paillier_settings(d))
    assert "accessible by other users" in report.failures[NODES[2]]


def test_paillier_duplicate_holder_ids_are_refused(committees):
    """Two nodes that tell the same holder id (a copied share file) are both
    left out: one share, one party."""
    d, _ = committees["ours"]
    grid = InProcessGrid(NODES)
    provision_shares(grid, d, holders={NODES[4]: 1})
    settings = paillier_settings(d)
    (report, new), arrays = paillier_round(grid, settings)
    for n in (NODES[0], NODES[4]):
        assert "rejected (unexpected_sender): holder id 1 is told by 2 nodes" in report.failures[n]
    assert_close_to_reference(report, new, arrays, NODES[1:4], settings)
    assert report.decryption["absent_members"] == [1, 5]


def test_paillier_identify_reply_with_an_unknown_holder_id_is_refused(committees):
    d, _ = committees["ours"]

    def tamper(node, reply):
        rec = reply.content.config_records[RECORD_KEY]
        if node == NODES[2] and rec["stage"] == "identify":
            rec["holder-id"] = 77
        return reply

    grid = InProcessGrid(NODES, tamper=tamper)
    provision_shares(grid, d)
    settings = paillier_settings(d)
    (report, new), arrays = paillier_round(grid, settings)
    assert "rejected (unexpected_sender): holder id 77 is not a member" in report.failures[NODES[2]]
    assert_close_to_reference(report, new, arrays, [n for n in NODES if n != NODES[2]], settings)


def test_paillier_node_refuses_a_client_id_other_than_its_holder_id(committees):
    """A server that relabels a node (to have it submit as another member)
    gets an error reply before the node trains."""
    d, _ = committees["ours"]
    grid = InProcessGrid(NODES)
    provision_shares(grid, d)
    calls: list = []
    grid.app = make_client_app(calls=calls)
    settings = paillier_settings(d)
    swapped = {NODES[0]: 2, NODES[1]: 1, NODES[2]: 3, NODES[3]: 4, NODES[4]: 5}
    (report, new), arrays = paillier_round(grid, settings, holder_ids=swapped)
    for n in NODES[:2]:
        assert "its committee holder id is" in report.failures[n]
    assert sorted(calls) == sorted(NODES[2:])
    assert_close_to_reference(report, new, arrays, NODES[2:], settings)


def test_paillier_too_few_members_abort_before_the_round_opens(committees):
    d, _ = committees["ours"]
    grid = InProcessGrid(NODES[:2])
    provision_shares(grid, d, nodes=NODES[:2])
    with pytest.raises(ProtocolAborted, match="2 node\\(s\\) hold shares of the committee key, 3 needed"):
        paillier_round(grid, paillier_settings(d), nodes=NODES[:2])
    assert all(v == 1 for v in grid.received.values())  # identify only: nobody trained
    (report, new), _ = paillier_round(grid, paillier_settings(d, on_abort="skip"), nodes=NODES[:2])
    assert new is None and report.abort_reason == "too_few_survivors"


def test_paillier_strategy_runs_rounds_and_asks_holder_ids_once(committees):
    d, _ = committees["ours"]
    grid = InProcessGrid(NODES)
    provision_shares(grid, d)
    settings = paillier_settings(d)
    strategy = SecAggFedAvg(settings=settings, min_available_nodes=5, min_train_nodes=5, fraction_evaluate=0.0)
    arrays = model(shapes=PAILLIER_SHAPES)
    result = strategy.start(grid, arrays, num_rounds=2, timeout=1)
    assert [r.outcome for r in strategy.reports] == ["completed"] * 2
    assert strategy.holder_ids == {n: i + 1 for i, n in enumerate(NODES)}
    assert all(v == 5 for v in grid.received.values())  # identify once, then 2 messages per round
    layout = ModelLayout.of(arrays)
    expected = (layout.to_vector(arrays) + expected_mean(NODES, 1, dim=layout.dim)
                + expected_mean(NODES, 2, dim=layout.dim))
    np.testing.assert_allclose(layout.to_vector(result.arrays), expected, atol=1e-3)


def test_paillier_settings_and_configuration_errors(committees, tmp_path):
    d, _ = committees["ours"]
    s = SecAggSettings.from_run_config({"secagg-protocol": "paillier",
                                        "secagg-committee-key": str(d / "committee.key")})
    assert s.protocol == "paillier" and SecAggSettings.from_run_config(s.as_run_config()) == s
    with pytest.raises(ParameterError, match="needs secagg-committee-key"):
        SecAggSettings(protocol="paillier")
    with pytest.raises(ParameterError, match="masking protocols"):
        SecAggSettings(protocol="paillier", committee_key="x", malicious_server=True)
    grid = InProcessGrid(NODES)
    with pytest.raises(SecAggConfigError, match="cannot read the committee key file"):
        run_round(grid, paillier_settings(tmp_path))
    # an encoding whose sums could overflow is refused before anything is sent
    with pytest.raises(ParameterError, match="too large for exact fixed point"):
        paillier_settings(d, frac_bits=40, max_weight=1e12, clip=1e6)
    assert all(v == 0 for v in grid.received.values())


def test_paillier_a_refused_first_message_leaves_the_round_in_progress_alone(committees, tmp_path):
    """A node that submitted keeps its session (for the decryption request to
    come) when a first message it refuses arrives: a client id other than its
    holder id, or a round under another key, changes nothing."""
    from secagg.encoding import wire
    from secagg.flower.records import pack
    from secagg.flower.server import make_paillier_params
    from secagg.aggregation import get_rule

    d, ck = committees["ours"]
    _, other_ck = committees["other"]
    settings = paillier_settings(d)
    arrays = model(shapes=PAILLIER_SHAPES)
    dim = ModelLayout.of(arrays).dim

    def first(params, client_id, mid):
        content = pack("submit", wire.encode(params), round=1, **{
            "client-id": client_id, "arrays-key": "arrays", "weighted-by": "num-examples"})
        content["arrays"] = arrays
        content["config"] = ConfigRecord({"server-round": 1})
        msg = Message(content, 7, MessageType.TRAIN)
        msg.metadata.__dict__["_message_id"] = mid
        return msg

    ctx = node_context(tmp_path)
    ctx.node_config.update({"secagg-committee-key": str(d / "committee.key"),
                            "secagg-key-share": str(d / "share-3.key"), "secagg-min-key-bits": 1024})
    calls: list = []
    app = make_client_app(calls=calls)
    mine = make_paillier_params(settings, ck, dim, get_rule("fedavg"))
    reply = app(first(mine, 3, "p1"), ctx)
    assert not reply.has_error() and reply.content.config_records[RECORD_KEY]["stage"] == "submit"
    saved = bytes(ctx.state.config_records[STATE_KEY]["record"])
    assert live_sessions(tmp_path) == [mine.session_id.hex()]
    again = make_paillier_params(settings, ck, dim, get_rule("fedavg"), 2)
    foreign = make_paillier_params(settings, other_ck, dim, get_rule("fedavg"), 3)
    for msg, why in ((first(again, 4, "p2"), "its committee holder id is 3"),
                     (first(foreign, 3, "p3"), "not this node's pinned committee key")):
        reply = app(msg, ctx)
        assert reply.has_error() and why in reply.error.reason
        assert bytes(ctx.state.config_records[STATE_KEY]["record"]) == saved
        assert live_sessions(tmp_path) == [mine.session_id.hex()] and tombstones(tmp_path) == []
    assert calls == [7]  # trained once


def test_paillier_a_bad_decryption_share_is_named_and_recovered(committees):
    """A member whose decryption share fails its proof is named in the report;
    the others decrypt its part in the recovery attempt."""
    import dataclasses

    from secagg.encoding import wire
    from secagg.protocols.paillier.threshold import DecryptionShares

    d, _ = committees["ours"]
    cheat = NODES[3]

    def tamper(node, reply):
        rec = reply.content.config_records[RECORD_KEY] if not reply.has_error() else None
        if node == cheat and rec is not None and rec["stage"] == "decrypt":
            shares = wire.decode(rec["payload"], DecryptionShares)
            values = bytearray(shares.values)
            values[-1] ^= 1
            rec["payload"] = wire.encode(dataclasses.replace(shares, values=bytes(values)))
        return reply

    grid = InProcessGrid(NODES, tamper=tamper)
    provision_shares(grid, d)
    settings = paillier_settings(d)
    (report, new), arrays = paillier_round(grid, settings)
    assert_close_to_reference(report, new, arrays, NODES, settings)
    assert report.failures[cheat].startswith("decrypt: rejected (invalid_decryption_share)")
    assert report.decryption["failed_members"] == [4] and report.decryption["recovery"] is True


# ------------------------------------------------------------------ early close: offline nodes and stragglers


class HangingGrid(CountingGrid):
    """``behaviour`` may also return "hang" (the node holds the message and
    never answers, yet Flower keeps listing it online) or "late:<k>" (the
    reply is delivered only after ``k`` more pulls)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.held: dict[str, tuple[int, int, Message]] = {}
        self.late_replies_pulled: list[int] = []

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            action = self.behaviour(node, self.received[node] + 1)
            if action == "hang" or action.startswith("late:"):
                self.received[node] += 1
                mid = f"m{next(self._ids)}"
                msg.metadata.__dict__["_message_id"] = mid
                ids.append(mid)
                if action.startswith("late:"):
                    delivered = Message(copy.deepcopy(msg.content), metadata=copy.deepcopy(msg.metadata))
                    self.held[mid] = (self.pulls + int(action[5:]), node, self.app(delivered, self.contexts[node]))
            else:
                ids += super().push_messages([msg])
        return ids

    def pull_messages(self, message_ids):
        out = super().pull_messages(message_ids)
        for mid in list(message_ids):
            if mid in self.held and self.held[mid][0] <= self.pulls:
                _, node, reply = self.held.pop(mid)
                self.late_replies_pulled.append(node)
                out.append(reply)
        return out


@pytest.fixture
def fast_liveness(monkeypatch):
    import secagg.flower.server as server
    monkeypatch.setattr(server, "LIVENESS_INTERVAL", 0.01)


@pytest.mark.parametrize("stage_message, stage", [(1, "advertise_keys"), (3, "masked_input"), (4, "unmasking")])
def test_a_node_flower_reports_offline_is_given_up_long_before_the_deadline(fast_liveness, stage_message, stage):
    """The node dies holding a message (no error reply ever comes); Flower
    stops listing it online. With hour-long deadlines and no straggler
    window, the stage closes on Flower's word alone."""
    victim = NODES[3]
    grid = CountingGrid(NODES, behaviour=lambda node, n: "silent" if (node, n) == (victim, stage_message) else "ok")
    settings = SecAggSettings(train_timeout=3600, stage_timeout=3600, poll_interval=0.01, straggler_grace=0)
    (report, new), arrays = run_round(grid, settings)
    assert report.outcome == "completed"
    assert report.failures == {victim: f"{stage}: no reply: Flower lists the node offline (no heartbeat, or it left)"}
    included = NODES if stage == "unmasking" else [n for n in NODES if n != victim]
    assert_close_to_reference(report, new, arrays, included, settings)
    if stage != "unmasking":
        assert report.dropped == {victim: stage}
    assert sum(report.stage_seconds.values()) < 60  # far below one deadline; never near it


def test_a_node_that_hangs_while_listed_online_is_cut_by_the_straggler_window():
    victim = NODES[1]
    grid = HangingGrid(NODES, behaviour=lambda node, n: "hang" if (node, n) == (victim, 2) else "ok")
    settings = SecAggSettings(train_timeout=3600, stage_timeout=3600, poll_interval=0.01, straggler_grace=0.05,
                              straggler_factor=0.0)
    (report, new), arrays = run_round(grid, settings)
    assert report.dropped == {victim: "share_keys"}
    assert "when the straggler window closed" in report.failures[victim]
    assert_close_to_reference(report, new, arrays, [n for n in NODES if n != victim], settings)
    assert report.stage_seconds["share_keys"] < 60


def test_a_reply_after_the_straggler_window_is_not_taken():
    """A slow node's reply that arrives once the window closed is dropped:
    the node counts as dropped at that stage and its late masked input never
    reaches the sum (the survivors' shares remove its masks)."""
    victim = NODES[4]
    grid = HangingGrid(NODES, behaviour=lambda node, n: "late:100000" if (node, n) == (victim, 3) else "ok")
    settings = SecAggSettings(train_timeout=3600, stage_timeout=3600, poll_interval=0.001, straggler_grace=0.02,
                              straggler_factor=0.0)
    (report, new), arrays = run_round(grid, settings)
    assert report.dropped == {victim: "masked_input"}
    assert grid.late_replies_pulled == []
    assert_close_to_reference(report, new, arrays, NODES[:4], settings)


def test_the_straggler_window_waits_for_a_slow_node_within_it():
    """A node slower than the others but inside the window is waited for:
    its reply (after a few pulls) is taken and its update is in the sum."""
    slow_node = NODES[0]
    grid = HangingGrid(NODES, behaviour=lambda node, n: "late:5" if (node, n) == (slow_node, 2) else "ok")
    settings = SecAggSettings(train_timeout=3600, stage_timeout=3600, poll_interval=0.01, straggler_grace=60,
                              straggler_factor=1.0)
    (report, new), arrays = run_round(grid, settings)
    assert grid.late_replies_pulled == [slow_node]
    assert report.failures == {} and report.dropped == {}
    assert_close_to_reference(report, new, arrays, NODES, settings)


def test_the_window_does_not_open_while_more_than_the_tolerated_dropouts_are_missing():
    """Two of five nodes hang (tolerance 20 %: one): no window, the stage
    waits for its deadline, the last resort, and the round aborts with too
    few survivors for the threshold if need be; here the threshold still holds."""
    hang = {NODES[1], NODES[2]}
    grid = HangingGrid(NODES, behaviour=lambda node, n: "hang" if node in hang and n == 2 else "ok")
    settings = SecAggSettings(train_timeout=3600, stage_timeout=3600, poll_interval=0.01, straggler_grace=0.01,
                              straggler_factor=0.0, on_abort="skip", dropout_tolerance=0.4)
    (report, new), arrays = run_round(grid, settings)
    # tolerance 40 %: two may be missing, so the window opens and cuts both
    assert all("straggler window" in report.failures[n] for n in hang)
    settings = SecAggSettings(train_timeout=3600, stage_timeout=0.3, poll_interval=0.01, straggler_grace=0.01,
                              straggler_factor=0.0, on_abort="skip", dropout_tolerance=0.2, threshold=3)
    grid = HangingGrid(NODES, behaviour=lambda node, n: "hang" if node in hang and n == 2 else "ok")
    (report, new), arrays = run_round(grid, settings)
    assert all(report.failures[n] == "share_keys: no reply before the deadline" for n in hang)
    assert_close_to_reference(report, new, arrays, [n for n in NODES if n not in hang], settings)


def test_early_close_settings_are_checked():
    assert SecAggSettings.from_run_config({"secagg-straggler-grace": 2, "secagg-straggler-factor": 0.5}) == \
        SecAggSettings(straggler_grace=2.0, straggler_factor=0.5)
    for bad in ({"secagg-straggler-grace": -1}, {"secagg-straggler-factor": float("nan")},
                {"secagg-straggler-grace": "5"}, {"secagg-straggler-grace": True}):
        with pytest.raises(ParameterError, match="straggler"):
            SecAggSettings.from_run_config(bad)


# ------------------------------------------------------------------ private metrics


class RecordingGrid(InProcessGrid):
    """Keeps every reply the server pulls (what the ServerApp receives)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.pulled: list[Message] = []

    def pull_messages(self, message_ids):
        out = super().pull_messages(message_ids)
        self.pulled += out
        return out


def _numbers_in(msg: Message) -> list[float]:
    """Every number a message carries to the server, wherever it sits: metric
    and config records, and every array."""
    if msg.has_error():
        return []
    found: list[float] = []
    for record in list(msg.content.metric_records.values()) + list(msg.content.config_records.values()):
        for value in record.values():
            values = value if isinstance(value, list) else [value]
            found += [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for record in msg.content.array_records.values():
        for arr in record.values():
            found += [float(x) for x in np.asarray(arr.numpy()).ravel()]
    return found


# long deadlines: in process every stage closes as soon as all replies are in (a silent node is offline at once),
# so a loaded host cannot make a stage miss replies that are already there
PRIVATE = dataclasses.replace(FAST, eval_metrics="eval-loss,eval-accuracy", train_timeout=60, stage_timeout=60)


def test_the_serverapp_never_receives_a_per_node_metric_in_plaintext():
    """Two rounds with federated evaluation under the defaults: the server
    gets the weighted means of the named metrics and the total examples;
    no reply it pulls carries any node's own loss, accuracy or example
    count, in any record (nor do the reports it keeps)."""
    grid = RecordingGrid(NODES)
    strategy = SecAggFedAvg(settings=PRIVATE, min_available_nodes=5, min_train_nodes=5, min_evaluate_nodes=5)
    result = strategy.start(grid, model(), num_rounds=2, timeout=1)
    weights = [weight_for(n) for n in NODES]
    for r in (1, 2):
        metrics = result.evaluate_metrics_clientapp[r]
        assert set(metrics) == {"eval-loss", "eval-accuracy", "num-examples"}
        assert metrics["eval-loss"] == pytest.approx(np.average([eval_metrics_for(n)[0] for n in NODES],
                                                                weights=weights), abs=1e-3)
        assert metrics["eval-accuracy"] == pytest.approx(np.average([eval_metrics_for(n)[1] for n in NODES],
                                                                    weights=weights), abs=1e-3)
        assert metrics["num-examples"] == pytest.approx(sum(weights), abs=1e-3)
    assert [r.outcome for r in strategy.eval_reports] == ["completed", "completed"]
    assert all(r.params["clip"] == PRIVATE.metrics_clip and r.params["dim"] == 2 for r in strategy.eval_reports)
    own = {v for n in NODES for v in (*eval_metrics_for(n), float(weight_for(n)))}
    seen = [v for msg in grid.pulled for v in _numbers_in(msg)]
    assert len(grid.pulled) == 2 * 4 * 5 * 2  # 2 rounds x 4 stages x 5 nodes x (training + evaluation)
    assert not [v for v in seen if any(abs(v - x) < 1e-9 for x in own)], "a per-node metric reached the server"
    # nor do the protocol payloads hold them as plain doubles
    import struct
    for msg in grid.pulled:
        payload = msg.content.config_records[RECORD_KEY]["payload"]
        for x in own:
            assert struct.pack(">d", x) not in payload and struct.pack("<d", x) not in payload


def test_the_recording_check_sees_plain_metrics_when_they_are_allowed():
    """The same check on a run that opted out (secagg-private-metrics =
    false, nodes allowing plain metrics) finds the per-node values: the
    check above can fail."""
    app = make_client_app(make_secagg_mod(allow_plaintext_metrics=True))
    grid = RecordingGrid(NODES, app=app)
    strategy = SecAggFedAvg(settings=dataclasses.replace(FAST, private_metrics=False), min_available_nodes=5,
                            min_train_nodes=5, min_evaluate_nodes=5)
    strategy.start(grid, model(), num_rounds=1, timeout=1)
    seen = [v for msg in grid.pulled for v in _numbers_in(msg)]
    assert any(abs(v - eval_metrics_for(NODES[0])[0]) < 1e-9 for v in seen)


def test_private_metrics_survive_a_dropout_and_weigh_by_examples():
    """A node lost in the evaluation round's masked-input stage: the means
    are over the others only, weighted by their examples."""
    victim = NODES[1]
    # training round: 4 messages; the evaluation round's 3rd message is the node's 7th
    grid = InProcessGrid(NODES, behaviour=lambda node, n: "silent" if (node, n) == (victim, 7) else "ok")
    strategy = SecAggFedAvg(settings=PRIVATE, min_available_nodes=5, min_train_nodes=5, min_evaluate_nodes=5)
    result = strategy.start(grid, model(), num_rounds=1, timeout=1)
    rest = [n for n in NODES if n != victim]
    assert strategy.eval_reports[0].dropped == {victim: "masked_input"}
    metrics = result.evaluate_metrics_clientapp[1]
    assert metrics["eval-loss"] == pytest.approx(np.average([eval_metrics_for(n)[0] for n in rest],
                                                            weights=[weight_for(n) for n in rest]), abs=1e-3)
    assert metrics["num-examples"] == pytest.approx(sum(weight_for(n) for n in rest), abs=1e-3)


def test_a_metric_beyond_the_clip_is_clipped_not_leaked():
    settings = dataclasses.replace(PRIVATE, metrics_clip=1.0)  # losses above 1 are clipped to 1
    grid = InProcessGrid(NODES)
    strategy = SecAggFedAvg(settings=settings, min_available_nodes=5, min_train_nodes=5, min_evaluate_nodes=5)
    result = strategy.start(grid, model(), num_rounds=1, timeout=1)
    clipped = [min(eval_metrics_for(n)[0], 1.0) for n in NODES]
    assert any(eval_metrics_for(n)[0] > 1.0 for n in NODES)
    assert result.evaluate_metrics_clientapp[1]["eval-loss"] == pytest.approx(
        np.average(clipped, weights=[weight_for(n) for n in NODES]), abs=1e-3)


def test_a_node_missing_a_named_metric_drops_out_of_the_evaluation():
    settings = dataclasses.replace(PRIVATE, eval_metrics="eval-loss,eval-f1")
    grid = InProcessGrid(NODES)
    strategy = SecAggFedAvg(settings=dataclasses.replace(settings, on_abort="skip"), min_available_nodes=5,
                            min_train_nodes=5, min_evaluate_nodes=5)
    result = strategy.start(grid, model(), num_rounds=1, timeout=1)
    report = strategy.eval_reports[0]
    assert report.outcome == "aborted" and 1 not in result.evaluate_metrics_clientapp
    assert all("no metric 'eval-f1'" in why for why in report.failures.values()) and len(report.failures) == 5


def test_private_metrics_configuration_errors():
    grid = InProcessGrid(NODES)
    strategy = SecAggFedAvg(settings=FAST, min_available_nodes=5, min_train_nodes=5)  # no metric names
    with pytest.raises(SecAggConfigError, match="secagg-eval-metrics"):
        strategy.start(grid, model(), num_rounds=1, timeout=1)
    assert all(v == 0 for v in grid.received.values())  # refused before any message
    with pytest.raises(SecAggConfigError, match="evaluate_metrics_aggr_fn"):
        SecAggFedAvg(settings=PRIVATE, evaluate_metrics_aggr_fn=lambda records, key: MetricRecord())
    for bad in ({"secagg-eval-metrics": "a,a"}, {"secagg-eval-metrics": "a, b"}, {"secagg-eval-metrics": "a,"},
                {"secagg-private-metrics": "yes"}, {"secagg-metrics-clip": 0}):
        with pytest.raises(ParameterError):
            SecAggSettings.from_run_config(bad)
    s = SecAggSettings.from_run_config({"secagg-eval-metrics": "eval-loss,eval-accuracy", "secagg-metrics-clip": 10})
    assert s.metric_names == ("eval-loss", "eval-accuracy") and s.private_metrics and s.metrics_clip == 10.0
    # a setup asking for metrics under names that do not match its dimension is refused by the node
    from secagg.encoding import wire
    from secagg.flower.client import SETUP_STAGE
    from secagg.flower.records import pack
    from secagg.flower.server import make_params
    params = make_params(dataclasses.replace(PRIVATE, clip=100.0), 5, 3)
    content = pack(SETUP_STAGE, wire.encode(params), round=1, **{
        "client-id": 1, "arrays-key": "arrays", "weighted-by": "num-examples", "metric-keys": "eval-loss"})
    content["arrays"] = model()
    msg = Message(content, 7, MessageType.EVALUATE)
    msg.metadata.__dict__["_message_id"] = "e1"
    ctx = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    reply = make_client_app()(msg, ctx)
    assert reply.has_error() and "must name 3 distinct metrics" in reply.error.reason


def test_nodes_an_abort_is_blamed_on_are_left_out_of_later_rounds(monkeypatch):
    """A round aborts naming a node (a secret it dealt did not reconstruct):
    the report names it (as a node id), and the strategy's later rounds run
    without it while the others go on."""
    import secagg.flower.server as srv
    from secagg.errors import AbortReason
    from secagg.protocols.masking import Abort

    real = srv._conclude
    blamed = NODES[2]

    def abort_first(driver, report, node_of, settings, *args, **kwargs):
        if report.server_round == 1:
            client = {n: c for c, n in node_of.items()}[blamed]
            driver.core.outcome = Abort(AbortReason.RECONSTRUCTION_FAILED, "test", "unmasking", (client,))
        return real(driver, report, node_of, settings, *args, **kwargs)

    monkeypatch.setattr(srv, "_conclude", abort_first)
    seen = []
    strategy = SecAggFedAvg(settings=dataclasses.replace(FAST, on_abort="skip", eval_metrics="eval-loss"),
                            on_round=seen.append,
                            min_available_nodes=5, min_train_nodes=5)
    strategy.start(InProcessGrid(NODES), model(), num_rounds=2, timeout=1)
    assert seen[0].outcome == "aborted" and seen[0].culprits == (blamed,)
    assert seen[0].to_json_dict()["culprits"] == [str(blamed)]
    assert strategy.excluded_nodes == {blamed}
    assert seen[1].outcome == "completed" and blamed not in seen[1].nodes
    assert set(seen[1].included) == set(NODES) - {blamed}
