"""Round time on Flower's Simulation Engine (Ray): plain FedAvg, Flower's own
SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) and ours
(``SecAggFedAvg`` + ``secagg_mod``, SecAgg+), side by side in one run, at
N virtual SuperNodes (default 20, 100 and 500).

Needs ``flwr[simulation]`` (``pip install '.[simulation]'``); without Ray this
script says so and exits with status 0.

The task: a linear least-squares model of ``--dim`` weights plus a bias
(4,001 parameters by default) in numpy (no torch, so a message's cost is
Flower's and the protocol's, not a framework's import). Every client holds
``--examples`` examples of its own, drawn from a seed of its partition id, the
same for the three runs; it trains ``--local-steps`` full-batch gradient
steps from the global model and replies with its model and ``num-examples``
(the same for every client, so the FedAvg mean is the plain mean).

Dropouts: the same ``--dropout`` fraction of partition ids (fixed by the seed)
fails in each run: in the secure runs after sharing keys, when asked for its
masked input (ours: stage ``masked_input``; Flower's: ``collect_masked_vectors``),
so the server must recover their masks; in plain FedAvg when asked to train.
The ClientApp raises, the Simulation Engine turns that into an error reply.

Each run (one mode at one N) is a separate process (a fresh Ray instance)
that runs ``flwr.simulation.run_simulation``; the ServerApp stamps the time
whenever the strategy's central ``evaluate_fn`` sees a new global model (after
round 0, 1, 2, ...), so a round's time is the whole round as the ServerApp
sees it (sampling, every message of every stage, aggregation). The first
round includes Ray's actors starting and importing; the figure reported is
the median of the later rounds. Each round's new global model is checked
against the plaintext FedAvg mean of the surviving clients' local models,
recomputed here from the previous global model (max absolute error).

Ours and Flower's share the SecAgg+ graph size: ``MaskingParams.create``
derives our degree k and threshold t for N (dropout tolerance
``--dropout-tolerance``); Flower gets ``num_shares = k + 1`` (it counts a
client among its own share holders) and ``reconstruction_threshold = t``.

Ray gets ``--ray-cpus`` logical CPUs and every ClientApp ``--client-cpus``
of them (so ``ray-cpus / client-cpus`` actors run the N virtual clients).
Every Ray process a run started is gone when it ends (checked with ``ps``).

    .venv/bin/python benchmarks/bench_flower_simulation.py                    # N = 20, 100, 500
    .venv/bin/python benchmarks/bench_flower_simulation.py --clients 20,100   # what ran is recorded

Results: benchmarks/results/flower_simulation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODES = ("fedavg", "flower-secaggplus", "ours")
GOAL_VS_FEDAVG = 2.0
GOAL_VS_FLOWER = 5.0


# ---------------------------------------------------------------------------- the task (shared by all runs)
def client_data(pid: int, dim: int, examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    w_true = np.random.default_rng(seed).standard_normal(dim) / np.sqrt(dim)
    rng = np.random.default_rng([seed, pid])
    x = rng.standard_normal((examples, dim))
    y = x @ w_true + 0.5 + 0.1 * rng.standard_normal(examples)
    return x, y


def local_train(arrays: list[np.ndarray], pid: int, dim: int, examples: int, steps: int, lr: float,
                seed: int) -> list[np.ndarray]:
    """Full-batch gradient descent on the client's squared loss; deterministic."""
    x, y = client_data(pid, dim, examples, seed)
    w, b = arrays[0].astype(np.float64), float(arrays[1][0])
    for _ in range(steps):
        r = x @ w + b - y
        w = w - lr * (x.T @ r) / examples
        b = b - lr * float(r.mean())
    return [w.astype(np.float32), np.array([b], dtype=np.float32)]


def dropped_pids(n: int, fraction: float, seed: int) -> frozenset[int]:
    k = int(round(fraction * n))
    return frozenset(int(i) for i in np.random.default_rng([seed, n, 7]).choice(n, size=k, replace=False))


# ---------------------------------------------------------------------------- one run (child process)
def child(args: argparse.Namespace) -> None:
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    n, mode = args.child_n, args.child_mode
    dim, examples, steps, lr, seed = args.dim, args.examples, args.local_steps, args.lr, args.seed
    drop = dropped_pids(n, args.dropout, seed)
    drop_stage = {"fedavg": "train", "flower-secaggplus": "collect_masked_vectors", "ours": "masked_input"}[mode]
    stamps: list[float] = []
    globals_: list[list[list[float]]] = []
    extra: dict[str, Any] = {}
    init = [np.zeros(dim, dtype=np.float32), np.zeros(1, dtype=np.float32)]

    def dump(error: str | None = None, total: float | None = None) -> None:
        out = {"mode": mode, "n": n, "dropped_pids": sorted(drop), "drop_stage": drop_stage, "total_s": total,
               "error": error, "round_s": [b - a for a, b in zip(stamps, stamps[1:])], "globals": globals_, **extra}
        tmp = Path(args.child_out + ".tmp")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, args.child_out)

    def record(arrays: list[np.ndarray]) -> None:
        stamps.append(time.perf_counter())
        globals_.append([a.astype(np.float64).tolist() for a in arrays])
        dump()  # after every round: a run cut short by the time limit keeps the rounds it completed

    def drop_mod(msg: Message, context: Context, call_next: Any) -> Message:
        # the listed clients vanish at one stage of every round: the ClientApp raises
        if int(context.node_config["partition-id"]) in drop:
            records = msg.content.config_records
            if "secagg" in records:
                stage = records["secagg"].get("stage")
            elif "secaggplus_configs" in records:
                stage = records["secaggplus_configs"].get("stage")
            else:
                stage = "train"
            if stage == drop_stage:
                raise RuntimeError(f"client dropped out at {stage}")
        return call_next(msg, context)

    def train_reply(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        new = local_train(msg.content["arrays"].to_numpy_ndarrays(), pid, dim, examples, steps, lr, seed)
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": examples})}),
                       reply_to=msg)

    server_app = ServerApp()
    if mode in ("fedavg", "ours"):
        if mode == "fedavg":
            client_app = ClientApp(mods=[drop_mod])
        else:
            from secagg.flower import secagg_mod
            client_app = ClientApp(mods=[drop_mod, secagg_mod])
        client_app.train()(train_reply)

        @server_app.main()
        def main(grid: Grid, context: Context) -> None:
            def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
                record(arrays.to_numpy_ndarrays())
                return None

            common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
            if mode == "fedavg":
                from flwr.serverapp.strategy import FedAvg
                strategy = FedAvg(**common)
            else:
                from secagg.flower import SecAggFedAvg, SecAggSettings
                settings = SecAggSettings(protocol="secagg+", dropout_tolerance=args.dropout_tolerance,
                                          clip=1.0, frac_bits=16, max_weight=1000.0, rule="fedavg",
                                          poll_interval=args.poll_interval)
                strategy = SecAggFedAvg(settings=settings, **common)
            strategy.start(grid=grid, initial_arrays=ArrayRecord(init), num_rounds=args.rounds,
                           evaluate_fn=evaluate_fn)
            if mode == "ours":
                extra["reports"] = [{"round": r.server_round, "outcome": r.outcome, "included": len(r.included),
                                     "dropped": len(r.dropped), "degree": r.params.get("degree"),
                                     "threshold": r.params.get("threshold"),
                                     "stage_seconds": r.stage_seconds} for r in strategy.reports]
    else:
        from flwr.client import NumPyClient
        from flwr.client.mod import secaggplus_mod
        from flwr.common import ndarrays_to_parameters
        from flwr.server import LegacyContext, ServerConfig
        from flwr.server.strategy import FedAvg as LegacyFedAvg
        from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

        from secagg.protocols.masking import MaskingParams

        params = MaskingParams.create(tuple(range(1, n + 1)), dim + 1, protocol="secagg+",
                                      dropout_tolerance=args.dropout_tolerance)
        num_shares, threshold = params.degree + 1, params.threshold
        extra.update(num_shares=num_shares, reconstruction_threshold=threshold)

        class Client(NumPyClient):
            def __init__(self, pid: int) -> None:
                self.pid = pid

            def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int,
                                                                                        dict[str, Any]]:
                return local_train(parameters, self.pid, dim, examples, steps, lr, seed), examples, {}

        def client_fn(context: Context) -> Any:
            return Client(int(context.node_config["partition-id"])).to_client()

        client_app = ClientApp(client_fn=client_fn, mods=[drop_mod, secaggplus_mod])

        @server_app.main()
        def main(grid: Grid, context: Context) -> None:
            def evaluate_fn(server_round: int, parameters: list[np.ndarray], config: dict[str, Any]) -> None:
                record(parameters)
                return None

            strategy = LegacyFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                                    min_available_clients=n, initial_parameters=ndarrays_to_parameters(init),
                                    evaluate_fn=evaluate_fn)
            legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=args.rounds), strategy=strategy)
            workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=num_shares,
                                                                       reconstruction_threshold=threshold))
            workflow(grid, legacy)

    backend_config = {"client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0},
                      "init_args": {"num_cpus": args.ray_cpus, "logging_level": "error", "log_to_driver": False}}
    t0 = time.perf_counter()
    error = None
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n, backend_config=backend_config)
    except BaseException as exc:  # noqa: BLE001  (recorded, then the process ends)
        error = f"{type(exc).__name__}: {exc}"
    total = time.perf_counter() - t0
    try:
        import ray
        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
    dump(error, total)


# ---------------------------------------------------------------------------- the parent
def ray_processes(sid: int) -> list[tuple[int, str]]:
    """Processes of session ``sid`` (a run's own session) still alive."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    procs = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and int(parts[1]) == sid:
            procs.append((int(parts[0]), parts[2][:120]))
    return procs


def run_one(args: argparse.Namespace, mode: str, n: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{mode}-{n}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-mode", mode, "--child-n", str(n),
           "--child-out", str(out), "--rounds", str(args.rounds), "--dim", str(args.dim),
           "--examples", str(args.examples), "--local-steps", str(args.local_steps), "--lr", str(args.lr),
           "--seed", str(args.seed), "--dropout", str(args.dropout),
           "--dropout-tolerance", str(args.dropout_tolerance), "--ray-cpus", str(args.ray_cpus),
           "--client-cpus", str(args.client_cpus), "--poll-interval", str(args.poll_interval)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", RAY_DEDUP_LOGS="0")
    log = tmp / f"{mode}-{n}.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=args.run_timeout)
        except subprocess.TimeoutExpired:
            rc = None
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    # every process of the run's session (Ray's raylet, GCS, workers) must be gone
    time.sleep(2)
    left = ray_processes(proc.pid)
    for pid, _ in left:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    res: dict[str, Any] = {"mode": mode, "n": n, "returncode": rc, "wall_s": wall,
                           "ray_processes_left_at_end": [c for _, c in left]}
    if out.exists():
        res.update(json.loads(out.read_text()))
    if rc is None:
        res["error"] = (f"stopped at the time limit of {args.run_timeout:g} s (--run-timeout); the rounds "
                        "completed before it are kept")
    elif not out.exists():
        res["error"] = f"no result (exit {rc}); log tail: " + log.read_text()[-1500:]
    if res.get("error"):
        res["log_tail"] = log.read_text()[-3000:]
    return res


def check(args: argparse.Namespace, res: dict[str, Any]) -> None:
    """Max abs error of each round's new global model against the plaintext
    FedAvg mean of the survivors' local models (from the previous global)."""
    g = res.pop("globals", [])
    drop = set(res.get("dropped_pids", []))
    survivors = [p for p in range(res["n"]) if p not in drop]
    errors = []
    for prev, new in zip(g, g[1:]):
        prev_a = [np.asarray(a, dtype=np.float32) for a in prev]
        acc = [np.zeros_like(a, dtype=np.float64) for a in prev_a]
        for p in survivors:
            for s, a in zip(acc, local_train(prev_a, p, args.dim, args.examples, args.local_steps, args.lr,
                                             args.seed)):
                s += a
        errors.append(max(float(np.max(np.abs(np.asarray(b) - s / len(survivors)))) for s, b in zip(acc, new)))
    res["max_abs_error_per_round"] = errors
    res["max_abs_error"] = max(errors) if errors else None
    res["rounds_completed"] = len(g) - 1 if g else 0


def summarize(res: dict[str, Any]) -> None:
    rounds = res.get("round_s", [])
    later = rounds[1:]
    res["first_round_s"] = rounds[0] if rounds else None
    res["median_round_s"] = statistics.median(later) if later else None


def fmt(x: float | None, unit: str = " s") -> str:
    return "—" if x is None else f"{x:.2f}{unit}"


def write(args: argparse.Namespace, ns: list[int], modes: list[str], machine: dict[str, Any], flwr_version: str,
          ray_version: str, uptime_before: str, results: list[dict[str, Any]], final: bool,
          earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write the results so far (after every run: an interrupted run keeps what finished)."""
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    invocations = earlier + [{"clients": ns, "modes": modes, "uptime_before": uptime_before,
                              "uptime_after": uptime_after, "complete": final}]
    ns = sorted({r["n"] for r in results})

    by = {(r["n"], r["mode"]): r for r in results}
    goals = []
    for n in ns:
        fa, fl, us = (by.get((n, m), {}).get("median_round_s") for m in MODES)
        row: dict[str, Any] = {"n": n, "fedavg_s": fa, "flower_secaggplus_s": fl, "ours_s": us,
                               "ours_over_fedavg": us / fa if us and fa else None,
                               "flower_over_ours": fl / us if us and fl else None}
        row["goal_le_2x_fedavg"] = None if row["ours_over_fedavg"] is None else row["ours_over_fedavg"] <= GOAL_VS_FEDAVG
        row["goal_ge_5x_faster_than_flower"] = (None if row["flower_over_ours"] is None
                                                else row["flower_over_ours"] >= GOAL_VS_FLOWER)
        goals.append(row)
    out = {"benchmark": "flower_simulation", "flwr": flwr_version, "ray": ray_version, "machine": machine,
           "uptime_before": uptime_before, "uptime_after": uptime_after,
           "config": {k: v for k, v in vars(args).items() if not k.startswith("child") and k != "out"},
           "parameters": args.dim + 1, "clients_requested": ns, "modes_requested": modes, "complete": final,
           "runs_done": [[r["n"], r["mode"]] for r in results], "invocations": invocations, "results": results,
           "goals": goals}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flower_simulation.json").write_text(json.dumps(out, indent=1, default=str))

    lines = [
        "# Round time on Flower's Simulation Engine (Ray)",
        "",
        f"flwr {flwr_version}, ray {ray_version}; {machine.get('cpu')}, {machine.get('cpu_count')} CPUs; "
        f"secagg {machine.get('secagg_commit')}.",
        "Shared machine under load from other jobs (`uptime` before and after each invocation: "
        + "; ".join(f"N = {','.join(map(str, i['clients']))}, {','.join(i['modes'])}: `{i['uptime_before']}` / "
                    f"`{i['uptime_after']}`{'' if i['complete'] else ' (incomplete)'}" for i in invocations)
        + "). Compare ratios within this file, not absolute times.",
        "",
        f"Linear model, {args.dim + 1} parameters (numpy); {args.examples} examples per client, "
        f"{args.local_steps} local steps; {args.rounds} rounds per run, the median of rounds 2..{args.rounds} reported "
        f"(round 1 includes Ray's actors starting). {args.dropout:.0%} of clients drop out in every run (secure "
        "runs: after sharing keys; FedAvg: at training). Ray: "
        f"{args.ray_cpus:g} CPUs, {args.client_cpus:g} per ClientApp "
        f"({int(args.ray_cpus / args.client_cpus)} actors). Each run is its own process and Ray instance. "
        f"Ours pulls replies every {args.poll_interval:g} s (`secagg-poll-interval`; its default is 0.2 s), "
        "Flower's in-memory grid every 0.1 s.",
        "",
        "| N | run | round 1 | median later round | rounds | max abs error vs plaintext | load 1-min before/after | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        note = r.get("error") or ""
        if r["mode"] == "flower-secaggplus" and "num_shares" in r:
            note = f"num_shares {r['num_shares']}, threshold {r['reconstruction_threshold']}. " + note
        if r["mode"] == "ours" and r.get("reports"):
            rep = r["reports"][-1]
            note = (f"k {rep['degree']}, t {rep['threshold']}; included {rep['included']}, "
                    f"dropped {rep['dropped']}. " + note)
        if r.get("ray_processes_left_at_end"):
            note += f" {len(r['ray_processes_left_at_end'])} Ray processes were left and killed."
        err = r.get("max_abs_error")
        lines.append(f"| {r['n']} | {r['mode']} | {fmt(r.get('first_round_s'))} | {fmt(r.get('median_round_s'))} | "
                     f"{r.get('rounds_completed', 0)}/{args.rounds} | {'—' if err is None else f'{err:.1e}'} | "
                     f"{(r['load_before'] or ['?'])[0]} / {(r['load_after'] or ['?'])[0]} | {note.strip()[:300]} |")
    lines += ["", "| N | ours / FedAvg (goal ≤ 2) | Flower SecAgg+ / ours (goal ≥ 5 at 100) |", "| --- | --- | --- |"]
    for g in goals:
        a = g["ours_over_fedavg"]
        b = g["flower_over_ours"]
        lines.append(f"| {g['n']} | {fmt(a, 'x')} {'' if a is None else ('met' if g['goal_le_2x_fedavg'] else 'NOT met')}"
                     f" | {fmt(b, 'x')} {'' if b is None else ('met' if g['goal_ge_5x_faster_than_flower'] else 'NOT met')} |")
    (args.out / "flower_simulation.md").write_text("\n".join(lines) + "\n")
    if not final:
        return goals
    print("\n".join(lines[-len(goals) - 2:]))
    for g in goals:
        if g["ours_over_fedavg"] is not None:
            print(f"goal N={g['n']}: ours <= 2x plain FedAvg: {'met' if g['goal_le_2x_fedavg'] else 'NOT met'} "
                  f"({g['ours_over_fedavg']:.2f}x)")
        if g["flower_over_ours"] is not None and g["n"] == 100:
            print(f"goal N=100: >= 5x faster than Flower's SecAgg+: "
                  f"{'met' if g['goal_ge_5x_faster_than_flower'] else 'NOT met'} ({g['flower_over_ours']:.2f}x)")
    return goals


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="20,100,500", help="comma-separated N")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, of " + ", ".join(MODES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dim", type=int, default=4000, help="model weights (plus one bias)")
    p.add_argument("--examples", type=int, default=32, help="examples per client")
    p.add_argument("--local-steps", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.005, help="small enough that no update entry reaches the clip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dropout", type=float, default=0.1, help="fraction of clients that drop out in each run")
    p.add_argument("--dropout-tolerance", type=float, default=0.2, help="SecAgg+ graph and threshold, both sides")
    p.add_argument("--poll-interval", type=float, default=0.1,
                   help="ours: seconds between pulls of replies (secagg-poll-interval, default 0.2); Flower's "
                        "in-memory grid pulls every 0.1 s in its own send_and_receive")
    p.add_argument("--ray-cpus", type=float, default=2)
    p.add_argument("--client-cpus", type=float, default=0.5)
    p.add_argument("--run-timeout", type=float, default=3600, help="seconds per run (one mode at one N)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--append", action="store_true",
                   help="keep the runs of the existing results file for other (N, mode) pairs and add these")
    p.add_argument("--child-mode", help=argparse.SUPPRESS)
    p.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_mode:
        child(args)
        return
    try:
        import flwr
        import ray
    except ImportError as exc:
        print(f"Flower's Simulation Engine is not installed ({exc}): pip install '.[simulation]'. Skipping.")
        return

    import tempfile

    sys.path.insert(0, str(HERE))
    import masking_driver as D

    ns = [int(x) for x in args.clients.split(",") if x.strip()]
    modes = [m for m in args.modes.split(",") if m.strip()]
    machine = D.machine_info()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(uptime_before, flush=True)
    results: list[dict[str, Any]] = []
    earlier: list[dict[str, Any]] = []
    prior_file = args.out / "flower_simulation.json"
    if args.append and prior_file.exists():
        prior = json.loads(prior_file.read_text())
        results = [r for r in prior["results"] if not (r["n"] in ns and r["mode"] in modes)]
        earlier = prior.get("invocations") or [{"clients": prior["clients_requested"],
                                                "modes": prior["modes_requested"],
                                                "uptime_before": prior["uptime_before"],
                                                "uptime_after": prior["uptime_after"], "complete": prior["complete"]}]
    with tempfile.TemporaryDirectory(prefix="flower-sim-") as tmp:
        for n in ns:
            for mode in modes:
                load0 = D.load_average()
                res = run_one(args, mode, n, Path(tmp))
                res["load_before"], res["load_after"] = load0, D.load_average()
                check(args, res)
                summarize(res)
                results.append(res)
                write(args, ns, modes, machine, flwr.__version__, ray.__version__, uptime_before, results, False,
                      earlier)
                print(f"N={n:4d} {mode:18s} rounds {[round(x, 2) for x in res.get('round_s', [])]} "
                      f"median(after 1st) {fmt(res['median_round_s'])} max err {res.get('max_abs_error')} "
                      f"load {res['load_before']}->{res['load_after']}"
                      + (f" ERROR {res['error']}" if res.get("error") else ""), flush=True)
    goals = write(args, ns, modes, machine, flwr.__version__, ray.__version__, uptime_before, results, True, earlier)
    del goals
    print(f"wrote {args.out / 'flower_simulation.json'} and .md")


if __name__ == "__main__":
    main()
