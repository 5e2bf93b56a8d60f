"""A long run on a real Flower deployment with SuperNodes crashing and coming
back: does every round end correctly, does memory stay flat, is no process
left behind?

One local deployment (:class:`secagg.flower.local.LocalDeployment`: a SuperLink
and ``--nodes`` SuperNodes on 127.0.0.1, TLS and SuperNode authentication, the
example app of examples/flower_app) runs ``--rounds`` SecAgg+ FedAvg rounds in
one ``flwr run`` (private evaluation metrics with ``--fraction-evaluate``). Every
``--kill-every`` rounds a random SuperNode is SIGKILLed as it pulls a random one
of its next messages (so it dies holding a message of some stage: training and
key advertisement, key sharing, masked input, unmasking or evaluation), and ``--down`` seconds
later it is started again with the same key and node config, as an operator
restarting a crashed node would (:meth:`LocalDeployment.restart_node`).

Checked for every training round, from the ServerApp's round report and the
nodes' audit files (node config ``secagg-audit-dir``: each node writes the
update it contributed, which never leaves the node):

- the round completed and its aggregate equals the plaintext FedAvg of the
  nodes the server reports as included (within the fixed-point bound), or
  it ended in a typed abort (``abort_reason``) and the model was kept;
- the ServerApp's run did not stop (``secagg-on-abort = "skip"``).

Sampled at the end of every round: the resident memory (VmRSS) of every
process of the deployment, grouped by role (SuperLink, each SuperNode, the
ServerApp, SuperExec and ClientApp processes), the number of live processes,
and the size of every node's ledger directory on disk. Memory is judged on the
processes that live through the whole run (the SuperLink, the ServerApp and
the SuperNodes never restarted): their RSS over the last fifth of the rounds
against the second fifth (after warm-up). After the run, ``stop()`` must leave
no process of the deployment alive.

    .venv/bin/python benchmarks/bench_flower_soak.py                  # 50 rounds, 5 nodes
    .venv/bin/python benchmarks/bench_flower_soak.py --rounds 6 --kill-every 2   # a short smoke run

Results: benchmarks/results/flower_soak.json and .md (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "flower_app"
RESULTS = ROOT / "benchmarks" / "results"
CLIP = 1.0
FRAC_BITS = 16
ROLES = ("flower-superlink", "flower-supernode", "flwr-serverapp", "flwr-clientapp", "flower-superexec")


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(root) / f).stat().st_size
            except FileNotFoundError:
                pass
    return total


def sample(dep, ledgers: list[Path]) -> dict:
    """RSS per role and per long-lived process, process count, ledger sizes."""
    node_pids = {n.process.pid: n for n in dep.nodes}
    serverapp: list[int] = []
    by_role: dict[str, int] = {r: 0 for r in ROLES}
    count: dict[str, int] = {r: 0 for r in ROLES}
    nodes: dict[str, int] = {}
    pids = dep.leftover_processes()
    for pid in pids:
        cmd = _cmdline(pid)
        role = next((r for r in ROLES if r in cmd), "other")
        rss = _rss_kib(pid)
        by_role[role] = by_role.get(role, 0) + rss
        count[role] = count.get(role, 0) + 1
        if pid in node_pids:
            n = node_pids[pid]
            nodes[f"{n.index}.{n.generation}"] = rss
        if role == "flwr-serverapp":
            serverapp.append(rss)
    return {
        "t": time.monotonic(), "processes": len(pids), "count_by_role": count,
        "rss_kib_by_role": by_role, "supernode_rss_kib": nodes,
        "superlink_rss_kib": _rss_kib(dep.superlink.pid) if dep.superlink else 0,
        "serverapp_rss_kib": max(serverapp, default=0),
        "ledger_bytes": [_dir_bytes(p) for p in ledgers],
    }


def check_round(report: dict, audit: Path) -> tuple[bool, str]:
    """(ok, detail): a completed round's aggregate equals the plaintext FedAvg
    over the included nodes; an aborted one carries a typed reason."""
    from secagg.aggregation import reference_aggregate

    if report["outcome"] != "completed":
        ok = bool(report.get("abort_reason")) and report.get("mean_update") is None
        return ok, f"aborted: {report.get('abort_reason')} {report.get('abort_detail', '')[:120]}"
    r = report["server_round"]
    updates, weights = [], []
    for node in report["included"]:
        meta = json.loads((audit / f"node-{node}-round-{r}.json").read_text())
        updates.append(np.load(audit / f"node-{node}-round-{r}.npy"))
        weights.append(meta["weight"])
    expected = reference_aggregate("fedavg", updates, weights, clip=CLIP)
    got = np.asarray(report["mean_update"])
    if got.shape != expected.shape:
        return False, f"shape {got.shape} != {expected.shape}"
    tol = 2 * len(weights) * 2.0 ** -FRAC_BITS * (1 + CLIP) / sum(weights)
    err = float(np.abs(got - expected).max())
    weight_err = abs(report["sum_weights"] - sum(weights))
    ok = err <= tol and weight_err <= len(weights) * 2.0 ** -FRAC_BITS and float(np.abs(expected).max()) > 1e-3
    return ok, f"max error {err:.2e} (bound {tol:.2e})"


class Chaos:
    """Kills a random SuperNode every ``kill_every`` rounds at a random one of
    its next messages, restarts it ``down`` seconds after it died, and samples
    the deployment when each round's report appears."""

    def __init__(self, dep, out: Path, ledgers: list[Path], args: argparse.Namespace):
        self.dep, self.out, self.ledgers, self.args = dep, out, ledgers, args
        self.rng = random.Random(args.seed)
        self.samples: dict[int, dict] = {}
        self.kills: list[dict] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-chaos", daemon=True)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # recorded, and the run is judged failed
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        args, dep = self.args, self.dep
        pending: dict | None = None  # a kill armed or a node down
        seen = 0
        while not self.stop.is_set():
            while (self.out / f"round-{seen + 1}.json").exists():
                seen += 1
                self.samples[seen] = sample(dep, self.ledgers)
                report = json.loads((self.out / f"round-{seen}.json").read_text())
                print(f"[{time.strftime('%H:%M:%S')}] round {seen}: {report['outcome']}, "
                      f"{len(report['included'])} included, dropped {report['dropped'] or '-'}, "
                      f"{sum(report['stage_seconds'].values()):.1f} s; {self.samples[seen]['processes']} processes, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
                if pending is None and seen % args.kill_every == 0 and seen < args.rounds:
                    victim = self.rng.randrange(args.nodes)
                    nth = self.rng.randint(1, args.kill_window)
                    node = dep.nodes[victim]
                    pending = {"armed_after_round": seen, "victim": victim, "node_id": node.node_id,
                               "nth_message": nth, "generation": node.generation}
                    dep.kill_node_on_message(victim, nth)
            if pending is not None:
                node = dep.nodes[pending["victim"]]
                if "killed_at" not in pending and node.killed and node.process.poll() is not None:
                    pending["killed_at"] = time.monotonic()
                    pending["killed_in_round"] = seen + 1
                    pending["event"] = next((e for e in reversed(dep.events) if e.startswith(
                        f"killed node {pending['victim']}")), "")
                if "killed_at" in pending and time.monotonic() - pending["killed_at"] >= args.down:
                    t0 = time.monotonic()
                    new = dep.restart_node(pending["victim"])
                    pending["restart_seconds"] = round(time.monotonic() - t0, 2)
                    pending["new_node_id"] = new.node_id
                    pending["restarted_before_round"] = seen + 1
                    del pending["killed_at"]
                    self.kills.append(pending)
                    print(f"[{time.strftime('%H:%M:%S')}] node {pending['victim']} killed ({pending['event']}), "
                          f"restarted in {pending['restart_seconds']} s", flush=True)
                    pending = None
            time.sleep(0.1)
        if pending is not None:
            pending.pop("killed_at", None)
            pending["unfinished"] = True
            self.kills.append(pending)


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


def summarise(result: dict) -> dict:
    rounds = result["rounds"]
    samples = [result["samples"][str(r)] for r in range(1, result["args"]["rounds"] + 1)
               if str(r) in result["samples"]]
    k = max(1, len(samples) // 5)
    early, late = samples[k:2 * k], samples[-k:]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    steady = {}
    for name, key in (("SuperLink", "superlink_rss_kib"), ("ServerApp", "serverapp_rss_kib")):
        a, b = mean([s[key] for s in early]), mean([s[key] for s in late])
        steady[name] = {"early_mib": _mib(a), "late_mib": _mib(b), "growth_mib": _mib(b - a),
                        "growth_pct": round(100 * (b - a) / a, 1) if a else None}
    restarted = {k_["victim"] for k_ in result["kills"]}
    for i in range(result["args"]["nodes"]):
        if i in restarted:
            continue
        a = mean([s["supernode_rss_kib"].get(f"{i}.0", 0) for s in early])
        b = mean([s["supernode_rss_kib"].get(f"{i}.0", 0) for s in late])
        steady[f"SuperNode {i}"] = {"early_mib": _mib(a), "late_mib": _mib(b), "growth_mib": _mib(b - a),
                                    "growth_pct": round(100 * (b - a) / a, 1) if a else None}
    node_rss = [v for smp in samples for v in smp["supernode_rss_kib"].values() if v]
    completed = sum(1 for r in rounds if r["outcome"] == "completed")
    return {
        "rounds_reported": len(rounds), "completed": completed,
        "aborted": sum(1 for r in rounds if r["outcome"] != "completed"),
        "all_checked_ok": all(r["ok"] for r in rounds) and len(rounds) == result["args"]["rounds"],
        "kills": len(result["kills"]), "steady_memory": steady,
        "supernode_rss_mib_min_max": [_mib(min(node_rss)), _mib(max(node_rss))] if node_rss else None,
        "processes_min_max": [min(s["processes"] for s in samples), max(s["processes"] for s in samples)]
        if samples else None,
        "ledger_bytes_first_last": [samples[0]["ledger_bytes"], samples[-1]["ledger_bytes"]] if samples else None,
        "leftover_after_stop": result["leftover_after_stop"],
    }


def render(result: dict) -> str:
    a, s = result["args"], result["summary"]
    lines = [
        "# Soak: SecAgg+ on a real Flower deployment with SuperNodes killed and restarted",
        "",
        f"Generated by `benchmarks/bench_flower_soak.py` on {result['when']}; {result['host']}; "
        f"Python {result['python']}, flwr {result['flwr']}; secagg at commit {result['commit']}. "
        f"1-min load average {result['load'][0]}–{result['load'][1]} during the run.",
        "",
        f"{a['nodes']} SuperNodes (TLS + SuperNode authentication), {a['rounds']} rounds in one `flwr run` "
        f"(example app: SecAgg+ FedAvg, fraction-evaluate {a['fraction_evaluate']} (private metrics), "
        f"`secagg-on-abort = \"skip\"`, "
        f"min-nodes {a['min_nodes']}, straggler grace {a['grace']} s, stage deadline {a['stage_timeout']} s). "
        f"Every {a['kill_every']} rounds a random SuperNode was SIGKILLed on one of its next {a['kill_window']} "
        f"messages and restarted {a['down']} s after it died. Seed {a['seed']}.",
        "",
        f"**Rounds:** {s['rounds_reported']} of {a['rounds']} reported; {s['completed']} completed, every "
        f"aggregate checked against the plaintext FedAvg of the included nodes; {s['aborted']} ended in a typed "
        f"abort. All checks passed: **{'yes' if s['all_checked_ok'] else 'NO'}**. "
        f"`flwr run` exit {result['flwr_exit']}, {result['run_seconds']:.0f} s wall.",
        "",
        f"**Kills:** {s['kills']}. **Processes** of the deployment alive at round ends: "
        f"{s['processes_min_max'][0]}–{s['processes_min_max'][1]}; left after `stop()`: "
        f"{len(s['leftover_after_stop'])}.",
        "",
        "**Memory of the processes that lived through the whole run** (mean RSS over the second fifth of the "
        "rounds against the last fifth):",
        "",
        "| process | early | late | growth |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, m in s["steady_memory"].items():
        lines.append(f"| {name} | {m['early_mib']} MiB | {m['late_mib']} MiB | {m['growth_mib']:+} MiB "
                     f"({m['growth_pct']:+}%) |" if m["growth_pct"] is not None else
                     f"| {name} | {m['early_mib']} MiB | {m['late_mib']} MiB | n/a |")
    if s.get("supernode_rss_mib_min_max"):
        lo, hi = s["supernode_rss_mib_min_max"]
        lines += ["", f"**SuperNodes** (every process, restarted ones included, at every round end): RSS {lo}–{hi} MiB."]
    if s["ledger_bytes_first_last"]:
        first, last = s["ledger_bytes_first_last"]
        lines += ["", "**Ledgers on disk** (bytes per node, after round 1 → after the last round): "
                  + ", ".join(f"{x:,} → {y:,}" for x, y in zip(first, last)) + "."]
    lines += ["", "Kills:", "", "| armed after round | node | message | killed in round | stage hit (round report) "
              "| restart (s) | node id kept |", "| ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    by_round = {r["server_round"]: r for r in result["rounds"]}
    for k in result["kills"]:
        r = by_round.get(k.get("killed_in_round", -1))
        hit = "—"
        if r is not None:
            hit = r["dropped"].get(str(k["node_id"])) or ("not in the training round (evaluation or between "
                                                           "rounds)" if str(k["node_id"]) in r["included"] or
                                                           str(k["node_id"]) not in r["nodes"] else "—")
        lines.append(f"| {k['armed_after_round']} | {k['victim']} | {k['nth_message']} | "
                     f"{k.get('killed_in_round', '—')} | {hit} | {k.get('restart_seconds', '—')} | "
                     f"{'yes' if k.get('new_node_id') == k['node_id'] else 'no'} |")
    lines += ["", "Rounds:", "", "| round | outcome | included | dropped (stage) | round time (s) | check |",
              "| ---: | --- | ---: | --- | ---: | --- |"]
    for r in result["rounds"]:
        dropped = ", ".join(f"{n}: {st}" for n, st in r["dropped"].items()) or "—"
        lines.append(f"| {r['server_round']} | {r['outcome']} | {len(r['included'])} | {dropped} | "
                     f"{r['round_seconds']:.1f} | {'ok' if r['ok'] else 'FAILED'}: {r['detail']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--min-nodes", type=int, default=4, help="nodes a round waits for (default 4 of 5)")
    ap.add_argument("--kill-every", type=int, default=3, help="kill a node every this many rounds")
    ap.add_argument("--kill-window", type=int, default=4,
                    help="the victim dies on one of its next this many messages (uniform)")
    ap.add_argument("--down", type=float, default=5.0, help="seconds between the kill and the restart")
    ap.add_argument("--grace", type=float, default=5.0, help="secagg-straggler-grace")
    ap.add_argument("--stage-timeout", type=float, default=60.0, help="secagg-stage-timeout")
    ap.add_argument("--fraction-evaluate", type=float, default=0.0,
                    help="nodes asked for private evaluation metrics each round (default 0: every message a "
                         "Flower ClientApp process, so evaluation doubles a round's cost on 2 cores; "
                         "tests/test_flower_e2e.py covers it)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=7200.0, help="the whole flwr run")
    ap.add_argument("--out", type=Path, default=RESULTS / "flower_soak")
    ap.add_argument("--render", type=Path, default=None, help="only re-render the markdown of a run's JSON")
    args = ap.parse_args()
    if args.render is not None:
        result = json.loads(args.render.read_text())
        result["summary"] = summarise(result)
        args.render.with_suffix(".md").write_text(render(result))
        print(render(result))
        return

    import signal
    import subprocess

    from secagg.flower.local import LocalDeployment

    def stop_on_signal(signum: int, frame: object) -> None:  # SIGTERM: clean up like Ctrl-C
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop_on_signal)

    with tempfile.TemporaryDirectory(prefix="secagg-bench-soak-") as tmp:
        tmp_path = Path(tmp)
        audit, out = tmp_path / "audit", tmp_path / "out"
        ledgers = [tmp_path / f"ledger-{i}" for i in range(args.nodes)]
        configs = [{"partition-id": i, "num-partitions": args.nodes, "secagg-audit-dir": str(audit),
                    "secagg-ledger-dir": str(ledgers[i])} for i in range(args.nodes)]
        dep = LocalDeployment(args.nodes, node_configs=configs, workdir=tmp_path / "deployment")
        chaos = Chaos(dep, out, ledgers, args)
        loads: list[float] = []
        stop_load = threading.Event()

        def watch_load() -> None:
            while not stop_load.is_set():
                loads.append(os.getloadavg()[0])
                stop_load.wait(5)

        threading.Thread(target=watch_load, daemon=True).start()
        try:
            dep.start()
            first_ids = dict(dep.node_ids)
            chaos.thread.start()
            run = dep.run_app(EXAMPLE, timeout=args.timeout, run_config={
                "num-server-rounds": args.rounds, "min-nodes": args.min_nodes,
                "fraction-evaluate": args.fraction_evaluate,
                "output-dir": str(out), "secagg-clip": CLIP, "secagg-frac-bits": FRAC_BITS,
                "secagg-on-abort": "skip", "secagg-stage-timeout": args.stage_timeout,
                "secagg-straggler-grace": args.grace, "local-epochs": 1})
            time.sleep(0.5)
            chaos.stop.set()
            chaos.thread.join(timeout=30)
        except BaseException:
            print(dep.logs()[-20000:], file=sys.stderr)
            raise
        finally:
            chaos.stop.set()
            dep.stop()
            stop_load.set()
        leftover = dep.leftover_processes()
        rounds = []
        for r in range(1, args.rounds + 1):
            path = out / f"round-{r}.json"
            if not path.exists():
                continue
            report = json.loads(path.read_text())
            ok, detail = check_round(report, audit)
            rounds.append({"server_round": r, "outcome": report["outcome"], "nodes": report["nodes"],
                           "included": report["included"], "dropped": report["dropped"],
                           "failures": report["failures"], "abort_reason": report["abort_reason"],
                           "stage_seconds": report["stage_seconds"],
                           "round_seconds": round(sum(report["stage_seconds"].values()), 3),
                           "ok": ok, "detail": detail})
        if run.returncode != 0 or chaos.errors or len(rounds) < args.rounds:
            print(run.output[-5000:], file=sys.stderr)
            print("chaos errors:", chaos.errors, file=sys.stderr)

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    import flwr

    result = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "host": platform.processor() or platform.machine(),
        "python": platform.python_version(), "flwr": flwr.__version__, "commit": commit,
        "load": [round(min(loads), 2), round(max(loads), 2)] if loads else [None, None],
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "first_node_ids": {str(k): v for k, v in first_ids.items()},
        "flwr_exit": run.returncode, "run_seconds": run.seconds, "timed_out": run.timed_out,
        "chaos_errors": chaos.errors, "kills": chaos.kills, "rounds": rounds,
        "samples": {str(k): v for k, v in chaos.samples.items()}, "leftover_after_stop": leftover,
        "events": run.events,
    }
    try:
        result["host"] = next(line.split(":", 1)[1].strip() for line in
                              Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    result["summary"] = summarise(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    text = render(result)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    ok = result["summary"]["all_checked_ok"] and not leftover and run.returncode == 0 and not chaos.errors
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
