"""SecAgg+ with the Flower adapter on Flower's Simulation Engine (Ray).

``SecAggFedAvg`` and ``secagg_mod`` run unchanged under
``flwr.simulation.run_simulation``: a fresh interpreter (this file run as a
script, so Ray's state never reaches the pytest process) runs a ServerApp with
``SecAggFedAvg`` (SecAgg+, each client with :data:`DEGREE` neighbours) and
a ClientApp with ``secagg_mod`` on :data:`NUM_NODES` virtual SuperNodes for
:data:`ROUNDS` rounds; the clients with a partition id in :data:`DROPPED`
raise when asked for their masked input (stage ``masked_input``), so every
round recovers their masks.

The apps are numpy only: a linear least-squares model of :data:`DIM` weights
and a bias; each virtual client draws its examples (their number varies, so
FedAvg's weights matter) from a seed of its partition id and trains a few
full-batch gradient steps. The child process writes what its ServerApp saw:
the global model after every round, the strategy's round reports and
metrics, and every reply the strategy pulled from the Grid (a recording
wrapper around the simulation's Grid). The test recomputes the clients'
local models from the same seeds and checks:

* every round completed on the SecAgg+ graph asked for, with the dropped
  clients reported dropped at ``masked_input`` and the others included;
* the aggregate the server learned (the round report's mean update, and the
  new global model) is the plaintext FedAvg mean of the surviving clients'
  updates, within the fixed-point error bound, and not the mean over all;
* the server never pulled a client's update in plaintext: no reply carries
  an ArrayRecord or a MetricRecord (a plain FedAvg reply carries both), and
  no reply's bytes contain any client's local model or update as float32 or
  float64; the strategy's training metrics are its own counts only;
* the child exits with status 0, and no process of its session (Ray's GCS,
  raylet and workers, which were seen in it during the run) is left after it.

Needs Flower's Simulation Engine (``flwr[simulation]``, the ``simulation``
extra, which ``make test`` installs): without Ray the test fails and says so.
Ray gets 2 logical CPUs, one per ClientApp actor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.flower

ROOT = Path(__file__).resolve().parents[1]
NUM_NODES = 10
ROUNDS = 2
DROPPED = (3, 7)  # partition ids that fail at masked_input in every round
#: SecAgg+ neighbours per client: 8 of the 9 others, a graph that is not complete (derived, 10 clients would
#: get the complete graph, i.e. SecAgg); every client keeps at least its threshold of live neighbours
DEGREE = 8
DIM = 300  # model weights (plus one bias)
STEPS = 2
LR = 0.02
SEED = 11
CLIP = 1.0
FRAC_BITS = 16
#: seconds the child may take (a run takes about a minute on a loaded 2-core machine, most of it Ray's start)
RUN_TIMEOUT = 300.0
RAY_CPUS = 2


@pytest.fixture(autouse=True)
def simulation_engine_installed():
    """``make test`` installs Flower's Simulation Engine (the ``simulation``
    extra): without it, fail here, clearly, rather than skip."""
    import importlib.util
    missing = [m for m in ("flwr", "ray") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"Flower's Simulation Engine is not installed (no {', '.join(missing)}): "
                    "pip install '.[simulation]' from the repository (make test installs it)")


# ---------------------------------------------------------------------------- the task (child and test)
def examples_of(pid: int) -> int:
    return 16 + 4 * (pid % 4)


def client_data(pid: int) -> tuple[np.ndarray, np.ndarray]:
    w_true = np.random.default_rng(SEED).standard_normal(DIM) / np.sqrt(DIM)
    rng = np.random.default_rng([SEED, pid])
    x = rng.standard_normal((examples_of(pid), DIM))
    y = x @ w_true + 0.5 + 0.1 * rng.standard_normal(examples_of(pid))
    return x, y


def local_train(arrays: list[np.ndarray], pid: int) -> list[np.ndarray]:
    """Full-batch gradient descent on the client's squared loss; deterministic."""
    x, y = client_data(pid)
    w, b = np.asarray(arrays[0], dtype=np.float64), float(np.asarray(arrays[1])[0])
    for _ in range(STEPS):
        r = x @ w + b - y
        w = w - LR * (x.T @ r) / len(y)
        b = b - LR * float(r.mean())
    return [w.astype(np.float32), np.array([b], dtype=np.float32)]


def flat(arrays: list[Any]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


# ---------------------------------------------------------------------------- the run (child process)
def _child(out_path: Path) -> int:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from secagg.flower import SecAggFedAvg, SecAggSettings, secagg_mod

    out: dict[str, Any] = {"globals": [], "replies": [], "reports": [], "node_pid": {}, "error": None}

    class RecordingGrid(Grid):
        """The simulation's Grid; keeps what every reply the strategy pulls carries."""

        def __init__(self, inner: Grid) -> None:
            self.inner = inner
            self.asked: dict[str, str] = {}  # message id -> the stage it asks for

        def set_run(self, run: Any) -> None:
            self.inner.set_run(run)

        @property
        def run(self) -> Any:
            return self.inner.run

        def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                           ttl: float | None = None) -> Message:
            return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

        def get_node_ids(self) -> Any:
            return self.inner.get_node_ids()

        def push_messages(self, messages: Any) -> Any:
            messages = list(messages)
            ids = list(self.inner.push_messages(messages))
            for mid, msg in zip(ids, messages):
                records = msg.content.config_records
                self.asked[mid] = str(records["secagg"]["stage"]) if "secagg" in records else "?"
            return ids

        def pull_messages(self, message_ids: Any) -> Any:
            replies = list(self.inner.pull_messages(message_ids))
            for reply in replies:
                self.keep(reply)
            return replies

        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
            raise AssertionError("the strategy is expected to push and pull")

        def keep(self, reply: Message) -> None:
            d: dict[str, Any] = {"node": int(reply.metadata.src_node_id),
                                 "asked": self.asked.get(reply.metadata.reply_to_message_id, "?")}
            if reply.has_error():
                d["error"] = f"{reply.error.code}: {reply.error.reason}"[:300]
            else:
                content = reply.content
                d["array_records"] = sorted(content.array_records)
                d["metric_records"] = sorted(content.metric_records)
                blobs = []
                for rec in content.config_records.values():
                    for v in rec.values():
                        blobs += [x for x in (v if isinstance(v, list) else [v]) if isinstance(x, bytes)]
                for arec in content.array_records.values():
                    blobs += [a.data for a in arec.values()]
                d["stage"] = (str(content.config_records["secagg"].get("stage"))
                              if "secagg" in content.config_records else None)
                d["bytes"] = b"".join(blobs).hex()
            out["replies"].append(d)

    def drop_mod(msg: Message, context: Context, call_next: Any) -> Message:
        records = msg.content.config_records
        if (int(context.node_config["partition-id"]) in DROPPED and "secagg" in records
                and records["secagg"].get("stage") == "masked_input"):
            raise RuntimeError("this client drops out at masked_input")
        return call_next(msg, context)

    client_app = ClientApp(mods=[drop_mod, secagg_mod])

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        local = local_train(msg.content["arrays"].to_numpy_ndarrays(), pid)
        return Message(RecordDict({"arrays": ArrayRecord(local),
                                   "metrics": MetricRecord({"num-examples": examples_of(pid)})}), reply_to=msg)

    @client_app.query()
    def who(msg: Message, context: Context) -> Message:  # the test maps node ids to partition ids
        return Message(RecordDict({"who": ConfigRecord({"partition-id": int(context.node_config["partition-id"])})}),
                       reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            deadline = time.monotonic() + 120
            while len(nodes := list(grid.get_node_ids())) < NUM_NODES and time.monotonic() < deadline:
                time.sleep(0.2)  # the virtual nodes register as the engine starts
            queries = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
            for reply in grid.send_and_receive(queries, timeout=120):
                pid = reply.content.config_records["who"]["partition-id"]
                out["node_pid"][str(reply.metadata.src_node_id)] = int(pid)  # type: ignore[arg-type]

            def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
                out["globals"].append([a.astype(np.float64).tolist() for a in arrays.to_numpy_ndarrays()])
                return None

            settings = SecAggSettings(protocol="secagg+", dropout_tolerance=0.2, clip=CLIP, frac_bits=FRAC_BITS,
                                      max_weight=1000.0, rule="fedavg", degree=DEGREE, poll_interval=0.1,
                                      train_timeout=120.0, stage_timeout=60.0)
            strategy = SecAggFedAvg(settings=settings, fraction_train=1.0, fraction_evaluate=0.0,
                                    min_train_nodes=NUM_NODES, min_available_nodes=NUM_NODES)
            init = [np.zeros(DIM, dtype=np.float32), np.zeros(1, dtype=np.float32)]
            result = strategy.start(grid=RecordingGrid(grid), initial_arrays=ArrayRecord(init), num_rounds=ROUNDS,
                                    evaluate_fn=evaluate_fn)
            out["reports"] = [r.to_json_dict(with_aggregate=True) for r in strategy.reports]
            out["result_arrays"] = [a.astype(np.float64).tolist() for a in result.arrays.to_numpy_ndarrays()]
            out["train_metrics"] = {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()}
        except BaseException as exc:  # noqa: BLE001  (written out; the test fails on it)
            import traceback
            out["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"

    backend_config: Any = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                           "init_args": {"num_cpus": RAY_CPUS, "include_dashboard": False,
                                         "logging_level": "error", "log_to_driver": False}}
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=NUM_NODES,
                       backend_config=backend_config)
    except BaseException as exc:  # noqa: BLE001
        out["error"] = out["error"] or f"run_simulation: {type(exc).__name__}: {exc}"
    import ray
    if ray.is_initialized():
        ray.shutdown()
    out_path.write_text(json.dumps(out))
    return 1 if out["error"] else 0


# ---------------------------------------------------------------------------- the test
def _session_processes(sid: int) -> list[tuple[int, str]]:
    """The processes of session ``sid`` (the child's own) still in the process table."""
    table = subprocess.run(["ps", "-ww", "-eo", "pid=,sid=,args="], capture_output=True, text=True, check=True).stdout
    found = []
    for line in table.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and int(parts[1]) == sid:
            found.append((int(parts[0]), parts[2][:200]))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _run_child(tmp_path: Path) -> tuple[int | None, str, dict[str, Any] | None, set[str], list[str], float]:
    """Run this file as the child in its own session. Returns its exit code (None: killed at the time
    limit), its output, what it wrote, the command lines seen in its session while it ran, those left in
    the session after it ended (then killed), and the wall time."""
    out_path, log_path = tmp_path / "simulation.json", tmp_path / "simulation.log"
    node_tmp = tmp_path / "tmp"  # the virtual nodes' ledgers (the system temp dir of the child and Ray's workers)
    node_tmp.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="secagg-ray-")  # short: Ray's socket paths must stay under 107 bytes
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(node_tmp),
               RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0", FLWR_TELEMETRY_ENABLED="0")
    env.pop("RAY_ADDRESS", None)  # a fresh local Ray instance, never a cluster the environment points at
    seen: set[str] = set()
    t0 = time.monotonic()
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(out_path)], cwd=tmp_path,
                                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            rc: int | None = None
            try:
                while (rc := proc.poll()) is None and time.monotonic() - t0 < RUN_TIMEOUT:
                    seen.update(cmd for pid, cmd in _session_processes(proc.pid) if pid != proc.pid)
                    time.sleep(0.5)
            finally:
                if rc is None:  # the time limit, or the test interrupted: the whole session goes
                    _kill([pid for pid, _ in _session_processes(proc.pid)])
                    proc.wait()
        wall = time.monotonic() - t0
        # Ray's processes go with the child (ray.shutdown, and the kernel's parent-death signal): allow a few
        # seconds for them to exit and be reaped, then whatever is left of the session is a leftover
        left = _session_processes(proc.pid)
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = _session_processes(proc.pid)
        _kill([pid for pid, _ in left])
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    written = json.loads(out_path.read_text()) if out_path.exists() else None
    return rc, log_path.read_text(), written, seen, [cmd for _, cmd in left], wall


def _float_forms(vector: np.ndarray) -> list[bytes]:
    """How a float vector would look on the wire in plaintext: its first 16 entries as float32 or float64."""
    return [vector[:16].astype("<f4").tobytes(), vector[:16].astype("<f8").tobytes()]


def _check_run(out: dict[str, Any]) -> None:
    """What the child's ServerApp saw, against the plaintext recomputed here."""
    node_of = {pid: int(node) for node, pid in out["node_pid"].items()}
    assert sorted(node_of) == list(range(NUM_NODES))
    survivors = [p for p in range(NUM_NODES) if p not in DROPPED]
    globals_ = [[np.asarray(a) for a in g] for g in out["globals"]]
    assert len(globals_) == ROUNDS + 1  # the initial model, then one per completed round
    reports = out["reports"]
    assert [r["server_round"] for r in reports] == list(range(1, ROUNDS + 1))

    for r, report in enumerate(reports, start=1):
        assert report["outcome"] == "completed", report
        assert (report["params"]["protocol"], report["params"]["degree"]) == ("secagg+", DEGREE)
        assert sorted(int(n) for n in report["nodes"]) == sorted(node_of.values())
        assert sorted(int(n) for n in report["included"]) == sorted(node_of[p] for p in survivors)
        assert {int(n): s for n, s in report["dropped"].items()} == {node_of[p]: "masked_input" for p in DROPPED}

        # the aggregate: the plaintext FedAvg mean of the survivors' (clipped) updates, recomputed here
        prev = flat(globals_[r - 1])
        updates = {p: flat(local_train(globals_[r - 1], p)) - prev for p in range(NUM_NODES)}
        weights = {p: float(examples_of(p)) for p in range(NUM_NODES)}
        sum_w = sum(weights[p] for p in survivors)
        expected = sum(weights[p] * np.clip(updates[p], -CLIP, CLIP) for p in survivors) / sum_w
        assert np.abs(expected).max() > 1e-3  # a real training update, not a trivial zero
        # |error of the weighted sum| < n 2^-f per entry, of the weight sum < n 2^-f
        tol = 2 * len(survivors) * 2.0 ** -FRAC_BITS * (1 + CLIP) / sum_w
        got = np.asarray(report["mean_update"])
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
        assert report["sum_weights"] == pytest.approx(sum_w, abs=len(survivors) * 2.0 ** -FRAC_BITS)
        every = sum(weights[p] * np.clip(updates[p], -CLIP, CLIP) for p in updates) / sum(weights.values())
        assert np.abs(every - expected).max() > 10 * tol  # the check tells the survivors' mean from all's
        # the new global model is the old one plus the aggregate (server learning rate 1), in float32
        new = flat(globals_[r])
        np.testing.assert_allclose(new, prev + expected, rtol=0,
                                   atol=tol + 2.0 ** -23 * max(1.0, float(np.abs(new).max())))

        # what the strategy exposes for the round: its own counts, no per-client metric
        assert out["train_metrics"][str(r)] == pytest.approx(
            {"secagg-completed": 1, "secagg-included": len(survivors), "secagg-dropped": len(DROPPED),
             "secagg-sum-weights": report["sum_weights"]})

        # no reply carried a client's local model or update of this round in plaintext
        forms = [f for p in range(NUM_NODES)
                 for f in _float_forms(flat(local_train(globals_[r - 1], p))) + _float_forms(updates[p])]
        for rep in out["replies"]:
            payload = bytes.fromhex(rep.get("bytes", ""))
            assert not any(f in payload for f in forms), f"a reply ({rep['asked']}) carries plaintext floats"
    assert flat([np.asarray(a) for a in out["result_arrays"]]).tolist() == flat(globals_[-1]).tolist()

    replies = out["replies"]
    assert replies, "the recording Grid saw no reply"
    plain = [(rep["node"], rep["asked"], rep["array_records"], rep["metric_records"]) for rep in replies
             if "error" not in rep and (rep["array_records"] or rep["metric_records"])]
    assert plain == [], f"replies with an ArrayRecord or a MetricRecord reached the server: {plain}"
    # every survivor sent its masked input in every round, and only the dropped clients failed there
    masked = [rep for rep in replies if rep["asked"] == "masked_input"]
    assert sorted(rep["node"] for rep in masked if "error" not in rep) == sorted(
        node_of[p] for p in survivors for _ in range(ROUNDS))
    assert sorted(rep["node"] for rep in masked if "error" in rep) == sorted(
        node_of[p] for p in DROPPED for _ in range(ROUNDS))
    assert all(len(rep["bytes"]) // 2 >= 4 * (DIM + 1) for rep in masked if "error" not in rep)


def test_secagg_plus_on_the_simulation_engine(tmp_path: Path) -> None:
    rc, output, out, seen, left, wall = _run_child(tmp_path)
    try:
        assert rc is not None, f"the simulation did not end within {RUN_TIMEOUT:g} s"
        assert out is not None, f"the simulation wrote no result (exit code {rc})"
        assert out["error"] is None, out["error"]
        assert rc == 0
        # Ray ran in the child's session (so the check below sees its processes), and none of it is left
        assert any("raylet" in cmd for cmd in seen), f"no Ray raylet seen in the child's session: {sorted(seen)}"
        assert left == [], f"processes of the simulation survived it (killed now): {left}"
        _check_run(out)
    except BaseException:
        print(f"child exit code {rc}, {wall:.1f} s; its output:\n{output[-20000:]}")
        raise
    print(f"simulation: {NUM_NODES} virtual clients, {ROUNDS} rounds, {wall:.1f} s in the child")


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
