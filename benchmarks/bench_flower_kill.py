"""A SecAgg+ round on a real Flower deployment, with and without a SuperNode
SIGKILLed in the middle of a stage, side by side in one run.

Each scenario starts its own local deployment (:class:`secagg.flower.local.LocalDeployment`:
one SuperLink and 5 SuperNodes on 127.0.0.1, the example app of
examples/flower_app), runs one round with ``flwr run``, and stops everything.
The scenarios: no kill; the node of index 1 killed as soon as it pulls its
``k``-th message of the round (k = 1 advertise_keys, where the nodes train;
2 share_keys; 3 masked_input; 4 unmasking), so it dies holding the message
and no reply, not even an error, ever comes. Flower 1.41's SuperLink lists a
SuperNode offline only after two missed 30 s heartbeats, so a stage gives such
a node up through the straggler window (``secagg-straggler-grace``,
``secagg-straggler-factor``; :class:`secagg.flower.server.EarlyClose`) long
before the stage deadline (``secagg-stage-timeout``, 60 s here).

Figures: the round's wall time (the sum of its stage times as the ServerApp
measured them: messages out to stage close, training included) and the whole
``flwr run`` time. The machine is shared and its load drifts, so every kill
scenario runs right after a round without a kill (``--pairs``, default on) and
its ratio is to that round; the table also gives the ratio to the mean of all
rounds without a kill. Goal: with the kill <= 1.5x without.

    .venv/bin/python benchmarks/bench_flower_kill.py            # every stage
    .venv/bin/python benchmarks/bench_flower_kill.py --stages 3 # only masked_input

Results: benchmarks/results/flower_kill.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "flower_app"
RESULTS = ROOT / "benchmarks" / "results"
STAGES = {1: "advertise_keys", 2: "share_keys", 3: "masked_input", 4: "unmasking"}


def run_scenario(kill_at: int | None, args: argparse.Namespace) -> dict:
    from secagg.flower.local import LocalDeployment

    with tempfile.TemporaryDirectory(prefix="secagg-bench-kill-") as tmp:
        out = Path(tmp) / "out"
        configs = [{"partition-id": i, "num-partitions": args.nodes} for i in range(args.nodes)]
        dep = LocalDeployment(args.nodes, node_configs=configs, workdir=Path(tmp) / "deployment",
                              insecure=args.insecure)
        try:
            dep.start()
            if kill_at is not None:
                dep.kill_node_on_message(args.victim, kill_at)
            run = dep.run_app(EXAMPLE, timeout=args.timeout, run_config={
                "num-server-rounds": 1, "min-nodes": args.nodes, "fraction-evaluate": 0.0,
                "output-dir": str(out), "secagg-stage-timeout": args.stage_timeout,
                "secagg-train-timeout": args.train_timeout,
                "secagg-straggler-grace": args.grace, "secagg-straggler-factor": args.factor})
            node_ids = dep.node_ids
        finally:
            dep.stop()
        report_path = out / "round-1.json"
        if not report_path.exists():
            print(run.output[-3000:], file=sys.stderr)
            raise SystemExit(f"scenario kill_at={kill_at}: no round report (flwr run exit {run.returncode})")
        report = json.loads(report_path.read_text())
    victim = str(node_ids[args.victim])
    return {
        "kill_at_message": kill_at, "kill_stage": STAGES.get(kill_at or 0, "none"),
        "killed": any(e.startswith(f"killed node {args.victim}") for e in run.events),
        "outcome": report["outcome"], "included": len(report["included"]),
        "dropped": report["dropped"], "victim_failure": report["failures"].get(victim, ""),
        "stage_seconds": report["stage_seconds"], "round_seconds": round(sum(report["stage_seconds"].values()), 3),
        "flwr_run_seconds": round(run.seconds, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--victim", type=int, default=1)
    ap.add_argument("--stages", type=int, nargs="*", default=[1, 2, 3, 4], choices=sorted(STAGES))
    ap.add_argument("--stage-timeout", type=float, default=60.0)
    ap.add_argument("--train-timeout", type=float, default=300.0, help="the first stage, where the nodes train")
    ap.add_argument("--grace", type=float, default=5.0, help="secagg-straggler-grace")
    ap.add_argument("--factor", type=float, default=0.5, help="secagg-straggler-factor")
    ap.add_argument("--timeout", type=float, default=600.0, help="per flwr run")
    ap.add_argument("--insecure", action="store_true", help="no TLS, no node authentication")
    ap.add_argument("--no-pairs", dest="pairs", action="store_false",
                    help="one round without a kill first, instead of one before each kill")
    ap.add_argument("--out", default=str(RESULTS / "flower_kill"), help="results path without extension")
    args = ap.parse_args()

    rows = []
    order: list[int | None] = []
    for kill_at in args.stages:
        order += [None, kill_at] if args.pairs else [kill_at]
    if not args.pairs:
        order.insert(0, None)
    for kill_at in order:
        t0 = time.monotonic()
        row = run_scenario(kill_at, args)
        rows.append(row)
        print(f"kill at {row['kill_stage']:>14}: {row['outcome']}, {row['included']} included, round "
              f"{row['round_seconds']:.1f}s (flwr run {row['flwr_run_seconds']:.1f}s), stages {row['stage_seconds']}"
              f"{'; victim: ' + row['victim_failure'] if row['victim_failure'] else ''} [{time.monotonic() - t0:.0f}s]",
              flush=True)
        save(rows, args, done=False)
    print(save(rows, args, done=True))


def save(rows: list[dict], args: argparse.Namespace, done: bool) -> str:
    """Write the figures so far (after every scenario: a long run that is cut short keeps them)."""
    bases = [r["round_seconds"] for r in rows if r["kill_at_message"] is None]
    mean_base = sum(bases) / len(bases)
    previous = None
    for row in rows:
        if row["kill_at_message"] is None:
            previous = row["round_seconds"]
            row["ratio"] = row["ratio_to_mean"] = round(row["round_seconds"] / mean_base, 3)
            continue
        row["ratio"] = round(row["round_seconds"] / previous, 3) if previous else None
        row["ratio_to_mean"] = round(row["round_seconds"] / mean_base, 3)
    meta = {"nodes": args.nodes, "victim": args.victim, "stage_timeout": args.stage_timeout,
            "train_timeout": args.train_timeout,
            "straggler_grace": args.grace, "straggler_factor": args.factor, "tls_and_node_auth": not args.insecure,
            "host": platform.node(), "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# A SecAgg+ round on Flower with a SuperNode SIGKILLed mid-stage",
        "",
        f"benchmarks/bench_flower_kill.py: {args.nodes} SuperNodes on 127.0.0.1 "
        f"({'insecure' if args.insecure else 'TLS + SuperNode authentication'}), the example app, one round, "
        f"train timeout {args.train_timeout:g} s, stage timeout {args.stage_timeout:g} s, straggler grace {args.grace:g} s, factor {args.factor:g}; "
        f"{meta['cpus']} CPUs shared with other work (load average at the end {meta['loadavg_at_end'][0]:.1f}); "
        f"{meta['date']}. Round = sum of the ServerApp's stage times (training included).",
        "",
        "| killed at | outcome | included | round (s) | x the round before | x mean without kill | flwr run (s) | "
        "stages (s) | the victim's failure |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in row["stage_seconds"].items())
        before = "" if row["kill_at_message"] is None else f"{row['ratio']:.2f}"
        lines.append(f"| {row['kill_stage']} | {row['outcome']} | {row['included']} | {row['round_seconds']:.1f} | "
                     f"{before} | {row['ratio_to_mean']:.2f} | {row['flwr_run_seconds']:.1f} | {stages} | "
                     f"{row['victim_failure']} |")
    kills = [r for r in rows if r["kill_at_message"] is not None]
    if kills:
        worst = max(r["ratio"] for r in kills)
        worst_mean = max(r["ratio_to_mean"] for r in kills)
        lines += ["", f"Rounds without a kill: mean {mean_base:.1f} s (min {min(bases):.1f}, max {max(bases):.1f}). "
                      f"Worst ratio with a kill: {worst:.2f}x the round before it, {worst_mean:.2f}x the mean "
                      f"(goal <= 1.5x: {'met' if max(worst, worst_mean) <= 1.5 else 'NOT met'})."]
    if not done:
        lines += ["", "(partial: the run was still going)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
