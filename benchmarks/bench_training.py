"""Does secure aggregation change what federated training learns?

For each split (IID, non-IID Dirichlet alpha=0.5) and each seed, trains the same
model on the breast cancer data across 10 hospitals with 20 % dropout per round,
once per protocol (plaintext, secagg, secagg+, paillier), and compares the final
test accuracy of each secure protocol with plaintext FedAvg of the same seed.

    .venv/bin/python benchmarks/bench_training.py            # seeds 0..4, writes results/training.{json,md}
    .venv/bin/python benchmarks/bench_training.py --seeds 0  # quicker

The acceptance criterion: every |secure - plaintext| <= 0.5 percentage points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from secagg.training.runner import FedRunner, TrainConfig, round_threshold

PROTOCOLS = ("plaintext", "secagg", "secagg+", "paillier")
SPLITS = (("iid", "IID"), ("noniid", "non-IID (alpha=0.5)"))
RESULTS = Path(__file__).resolve().parent / "results"


def run(config: TrainConfig, protocol: str) -> dict:
    t0 = time.perf_counter()
    rows = FedRunner(config, protocol=protocol).run()
    seconds = time.perf_counter() - t0
    body = rows[1:]
    return {
        "final_test_accuracy": rows[-1]["test_accuracy"],
        "final_test_loss": rows[-1]["test_loss"],
        "max_aggregation_error": max(r["aggregation_error"] for r in body),
        "clipped_entries": sum(r["clipped_entries"] for r in body),
        "aborted_rounds": [r["round"] for r in body if r["aborted"]],
        "bytes_up_per_client_per_round": sum(r["bytes_up_per_client"] for r in body) / len(body),
        "bytes_down_per_client_per_round": sum(r["bytes_down_per_client"] for r in body) / len(body),
        "aggregation_seconds_per_round": sum(r["time_secure_aggregation_s"] for r in body) / len(body),
        "seconds": seconds,
        "dropped_per_round": [r["dropped"] for r in body],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--key-bits", type=int, default=1024)
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite training.md from an existing training.json without training")
    args = ap.parse_args()
    if args.render_only:
        saved = json.loads((args.out / "training.json").read_text())
        meta, results = saved["meta"], saved["results"]
        c = meta["config"]
        args.seeds, args.clients, args.rounds = c["seeds"], c["clients"], c["rounds"]
        args.dropout, args.model, args.key_bits = c["dropout"], c["model"], c["key_bits"]
        args.protocols = [p for p in PROTOCOLS if any(r["protocol"] == p for r in results)]
        (args.out / "training.md").write_text(markdown(meta, results, args))
        return

    results = []
    config = None
    for split, _ in SPLITS:
        for seed in args.seeds:
            config = TrainConfig(protocol="secagg+", rule="fedavg", clients=args.clients, rounds=args.rounds,
                                 dropout=args.dropout, seed=seed, split=split, alpha=0.5, model=args.model,
                                 key_bits=args.key_bits)
            base = None
            for protocol in args.protocols:
                r = run(config, protocol)
                if protocol == "plaintext":
                    base = r
                diff = None if base is None else 100 * (r["final_test_accuracy"] - base["final_test_accuracy"])
                same_dropouts = None if base is None else r["dropped_per_round"] == base["dropped_per_round"]
                entry = {"split": split, "seed": seed, "protocol": protocol, **r,
                         "difference_pp": diff, "same_dropouts_as_plaintext": same_dropouts}
                del entry["dropped_per_round"]
                results.append(entry)
                print(f"{split:7s} seed {seed} {protocol:9s} acc {100 * r['final_test_accuracy']:6.2f} %  "
                      f"diff {diff if diff is None else round(diff, 3)} pp  agg err {r['max_aggregation_error']:.1e}  "
                      f"{r['seconds']:.1f} s", flush=True)

    meta = {
        "question": "final test accuracy of each secure protocol vs plaintext FedAvg, same seed",
        "data": "scikit-learn breast cancer (569 patients, 30 features), stratified 80/20 train/test "
                "(114 test patients: one patient = 0.88 percentage points)",
        "config": {**{k: v for k, v in config.to_dict().items() if k not in ("seed", "split", "protocol")},
                   "seeds": args.seeds},
        "command": " ".join(["python benchmarks/bench_training.py", *sys.argv[1:]]),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (args.out / "training.md").write_text(markdown(meta, results, args))
    print(f"wrote {args.out / 'training.json'} and {args.out / 'training.md'}")


def markdown(meta: dict, results: list[dict], args: argparse.Namespace) -> str:
    def cell(split: str, seed: int, protocol: str) -> dict | None:
        for r in results:
            if (r["split"], r["seed"], r["protocol"]) == (split, seed, protocol):
                return r
        return None

    secure = [p for p in args.protocols if p != "plaintext"]
    first = args.seeds[0]
    lines = [
        "# Federated training: secure aggregation vs plaintext FedAvg",
        "",
        f"Breast cancer data, {args.clients} hospitals, {args.rounds} rounds of FedAvg "
        f"({meta['config']['epochs']} local epochs of SGD, lr {meta['config']['lr']}, model {args.model}), "
        f"{int(round(100 * args.dropout))} % of the clients dropping out in every round "
        f"(the same clients for every protocol of a seed), Paillier with {args.key_bits}-bit keys.",
        f"Test set: 114 patients, so one patient is 0.88 percentage points. Command: `{meta['command']}`.",
        "",
        f"## Final test accuracy, seed {first}",
        "",
        "| split | " + " | ".join(args.protocols) + " | " + " | ".join(f"{p} − plaintext (pp)" for p in secure) + " |",
        "|---" * (len(args.protocols) + len(secure) + 1) + "|",
    ]
    for split, label in SPLITS:
        accs = [cell(split, first, p) for p in args.protocols]
        diffs = [cell(split, first, p) for p in secure]
        lines.append(f"| {label} | " + " | ".join(f"{100 * a['final_test_accuracy']:.2f} %" for a in accs if a)
                     + " | " + " | ".join(f"{d['difference_pp']:+.2f}" for d in diffs if d) + " |")
    lines += ["", "## Final test accuracy, every seed (%)", "",
              "| split | seed | " + " | ".join(args.protocols) + " |", "|---" * (len(args.protocols) + 2) + "|"]
    for split, label in SPLITS:
        for seed in args.seeds:
            cells = [cell(split, seed, p) for p in args.protocols]
            lines.append(f"| {label} | {seed} | " + " | ".join(
                f"{100 * c['final_test_accuracy']:.2f}" if c else "" for c in cells) + " |")
    lines += ["", "## All seeds: largest |secure − plaintext| accuracy difference and model error", "",
              "| split | protocol | seeds | max abs difference (pp) | max abs test-loss difference "
              "| max aggregation error | clipped entries | aborted rounds |",
              "|---|---|---|---|---|---|---|---|"]
    for split, label in SPLITS:
        for p in secure:
            rs = [r for r in results if r["split"] == split and r["protocol"] == p]
            if not rs:
                continue
            loss_diffs = [abs(r["final_test_loss"] - cell(split, r["seed"], "plaintext")["final_test_loss"])
                          for r in rs]
            lines.append(f"| {label} | {p} | {len(rs)} | {max(abs(r['difference_pp']) for r in rs):.2f} "
                         f"| {max(loss_diffs):.1e} | {max(r['max_aggregation_error'] for r in rs):.1e} "
                         f"| {sum(r['clipped_entries'] for r in rs)} "
                         f"| {sum(len(r['aborted_rounds']) for r in rs)} |")
    lines += ["", "## Cost per client per round (seed " + str(first) + ", non-IID)", "",
              "| protocol | bytes up | bytes down | aggregation time per round | whole run |",
              "|---|---|---|---|---|"]
    for p in args.protocols:
        r = cell("noniid", first, p)
        if r:
            lines.append(f"| {p} | {r['bytes_up_per_client_per_round']:.0f} | "
                         f"{r['bytes_down_per_client_per_round']:.0f} | "
                         f"{1000 * r['aggregation_seconds_per_round']:.1f} ms | {r['seconds']:.1f} s |")
    graphs = []
    for p in ("secagg", "secagg+"):
        if p in args.protocols:
            t, k = round_threshold(p, args.clients, args.dropout)
            graphs.append(f"{p}: degree {k}" + (" (complete graph)" if k == args.clients - 1 else "")
                          + f", threshold {t}")
    if graphs:
        lines += ["", "Masking parameters as derived for this round size and dropout: " + "; ".join(graphs)
                  + ". (When SecAgg+ derives the complete graph it coincides with SecAgg: at 20 % dropout its "
                    "sparse graph only becomes admissible between 100 and 200 clients.)"]
    lines += ["", f"Machine: {meta['machine']['platform']}, {meta['machine']['cpus']} CPUs, "
              f"Python {meta['machine']['python']}. Timings are single measurements on a shared machine.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
