"""Run this example on a real Flower deployment on 127.0.0.1, in one command.

Starts a SuperLink and N SuperNodes as separate processes (free loopback ports,
a temporary Flower home), runs the app with ``flwr run``, prints its output and
stops everything::

    python examples/flower_app/run_local.py --nodes 4 --rounds 3
    python examples/flower_app/run_local.py --nodes 5 --kill-node 1   # a node crashes mid-round
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from secagg.flower.local import LocalDeployment

APP = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--protocol", choices=["secagg", "secagg+"], default="secagg+")
    ap.add_argument("--kill-node", type=int, default=None, metavar="I",
                    help="crash SuperNode I when it pulls its masked-input message of round 1")
    ap.add_argument("--out", default=None, help="directory for round reports and the final model")
    args = ap.parse_args()

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="secagg-flower-out-"))
    configs = [{"partition-id": i, "num-partitions": args.nodes} for i in range(args.nodes)]
    with LocalDeployment(args.nodes, node_configs=configs) as dep:
        print(f"SuperLink on 127.0.0.1:{dep.superlink_port}; SuperNodes: {dep.node_ids}")
        if args.kill_node is not None:
            dep.kill_node_on_message(args.kill_node, 3)
        run = dep.run_app(APP, run_config={"num-server-rounds": args.rounds, "min-nodes": args.nodes,
                                           "secagg-protocol": args.protocol, "output-dir": str(out)})
        print(run.output)
        for event in run.events:
            print("event:", event)
        print(f"flwr run finished in {run.seconds:.1f}s")
    summary = out / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        for r in data["rounds"]:
            print(f"round {r['server_round']}: {r['outcome']}, {len(r['included'])} included, "
                  f"dropped {r['dropped'] or 'none'}, stages {r['stage_seconds']}")
        print("central evaluation:", data["central_evaluation"])
        print(f"reports and final model in {out}")


if __name__ == "__main__":
    main()
