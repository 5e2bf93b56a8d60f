"""Run this example on a real Flower deployment on 127.0.0.1, in one command.

Starts a SuperLink and N SuperNodes as separate processes (free loopback ports,
a temporary Flower home), runs the app with ``flwr run``, prints its output and
stops everything::

    python examples/flower_app/run_local.py --nodes 4 --rounds 3
    python examples/flower_app/run_local.py --nodes 5 --kill-node 1   # a node crashes mid-round
    python examples/flower_app/run_local.py --protocol paillier --kill-node 2   # a committee member dies decrypting

With ``--protocol paillier`` a decryption committee of the nodes is dealt
first (``secagg keys deal-committee`` into a private temporary directory):
each SuperNode gets the committee's key and its own share file, the server the
committee's key.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from secagg.flower.keys import COMMITTEE_KEY_FILE, deal_committee_files, share_file_name
from secagg.flower.local import LocalDeployment

APP = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--protocol", choices=["secagg", "secagg+", "paillier"], default="secagg+")
    ap.add_argument("--key-bits", type=int, choices=[1024, 2048, 3072], default=2048,
                    help="paillier: the committee's key size (1024 for quick tests only)")
    ap.add_argument("--kill-node", type=int, default=None, metavar="I",
                    help="crash SuperNode I when it pulls its 3rd message of round 1: the masked-input "
                         "message, or with paillier its decryption request")
    ap.add_argument("--out", default=None, help="directory for round reports and the final model")
    ap.add_argument("--insecure", action="store_true",
                    help="development set-up: no TLS, no SuperNode authentication (default: both)")
    args = ap.parse_args()

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="secagg-flower-out-"))
    configs = [{"partition-id": i, "num-partitions": args.nodes} for i in range(args.nodes)]
    run_config = {"num-server-rounds": args.rounds, "min-nodes": args.nodes, "secagg-protocol": args.protocol,
                  "output-dir": str(out)}
    dealt: Path | None = None
    if args.protocol == "paillier":
        dealt = Path(tempfile.mkdtemp(prefix="secagg-committee-"))  # mode 0700
        committee, _ = deal_committee_files(dealt, args.nodes, key_bits=args.key_bits)
        print(f"dealt {committee!r} into {dealt}")
        key = str(dealt / COMMITTEE_KEY_FILE)
        for i, cfg in enumerate(configs):
            cfg.update({"secagg-committee-key": key, "secagg-key-share": str(dealt / share_file_name(i + 1)),
                        "secagg-min-key-bits": args.key_bits})
        run_config["secagg-committee-key"] = key
    try:
        with LocalDeployment(args.nodes, node_configs=configs, insecure=args.insecure) as dep:
            print(f"SuperLink on 127.0.0.1:{dep.superlink_port} "
                  f"({'insecure' if args.insecure else 'TLS + SuperNode authentication'}); SuperNodes: {dep.node_ids}")
            if args.kill_node is not None:
                dep.kill_node_on_message(args.kill_node, 3)
            run = dep.run_app(APP, run_config=run_config)
            print(run.output)
            for event in run.events:
                print("event:", event)
            print(f"flwr run finished in {run.seconds:.1f}s")
    finally:
        if dealt is not None:  # the share files of this demo's committee
            shutil.rmtree(dealt, ignore_errors=True)
    summary = out / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        for r in data["rounds"]:
            print(f"round {r['server_round']}: {r['outcome']}, {len(r['included'])} included, "
                  f"dropped {r['dropped'] or 'none'}, stages {r['stage_seconds']}")
            if r.get("decryption"):
                dec = r["decryption"]
                print(f"  decryption: any {dec['threshold']} of committee {dec['committee']}; shares failed: "
                      f"{dec['failed_members'] or 'none'}; recovery: {dec['recovery']}")
        print("central evaluation:", data["central_evaluation"])
        print("federated evaluation (secure, weighted by examples):", data["federated_evaluation"])
        print(f"reports and final model in {out}")


if __name__ == "__main__":
    main()
