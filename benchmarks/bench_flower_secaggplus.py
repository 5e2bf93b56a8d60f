"""Our SecAgg+ side by side with Flower's (flwr 1.41), driven with Flower's own
code, at the same n, neighbourhood, threshold, d and dropout.

Flower is an OPTIONAL benchmark dependency (``pip install flwr``): without it
this script says so and exits with status 0.

How Flower is driven. Their client is the ``secaggplus_mod`` of
``flwr.client.mod.secure_aggregation.secaggplus_mod``: we call its stage
functions ``_setup``, ``_share_keys``, ``_collect_masked_vectors`` and
``_unmask`` directly with the ConfigRecords their server would send (the mod
itself only adds Message plumbing around them), and persist its state between
stages as the mod does (``ConfigRecord(state.to_dict())`` /
``SecAggPlusState(**record)``; timed apart as "state"). Their server is
``SecAggPlusWorkflow``, whose stages are methods bound to a Grid and a
LegacyContext; we perform what each stage computes by calling the same
functions from ``flwr.common.secure_aggregation`` and
``flwr.supercore.primitives.asymmetric``: routing of the encrypted shares,
``bytes_to_ndarray`` + ``parameters_addition`` + ``parameters_mod`` of the
masked vectors, and in the unmask stage ``combine_shares`` for every client,
``pseudo_rand_gen`` for every self mask, and for every dropped client
``generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(pk1))`` +
``pseudo_rand_gen`` for every one of its neighbours (as their workflow does),
then ``dequantize``. Nothing of theirs is copied here; their functions are
imported. Their own code starts a ThreadPoolExecutor inside Shamir; the whole
process is pinned to one core and timed in process CPU time, which counts
every thread.

Parameters. Ours: ``MaskingParams.create(protocol="secagg+",
dropout_tolerance=...)`` derives the degree k and threshold t for n. Flower
counts a client among its own share holders: ``num_shares = k + 1`` (odd, as
their workflow wants), ``reconstruction_threshold = t``; its neighbour graph is
the same shape (a shuffled ring, k/2 on either side). Flower's defaults for
clipping (8.0), quantization range (2^22), modulus (2^32) and max_weight
(1000). A fraction ``--dropout`` of clients (the same ids on both sides)
vanish after sharing keys, before sending the masked input.

Timed (process CPU on one pinned core, wall alongside): per client, every
stage of one client, mean over the clients that finished (Flower: their stage
functions; ours: key generation + round handlers, our wire encode/decode
apart); server: every stage's computation (ours: ``receive`` +
``close_round``, our wire apart; Flower: the stage computations above, their
in-stage ``ndarray_to_bytes``/``bytes_to_ndarray`` included). Both sides'
aggregates are checked against the plaintext.

    .venv/bin/python benchmarks/bench_flower_secaggplus.py --quick   # n = 40, d = 10K
    .venv/bin/python benchmarks/bench_flower_secaggplus.py           # n = 200, d = 100K, 10 % dropout

Results: benchmarks/results/masking_flower.json and .md (``--quick``:
masking_flower_quick.*).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import masking_driver as D  # noqa: E402  (sets the thread env before numpy loads)
import numpy as np  # noqa: E402

from secagg.protocols.masking import MaskingParams  # noqa: E402

GOAL = 10.0


def import_flower() -> dict[str, Any] | None:
    try:
        import importlib

        import flwr
        from flwr.app import ConfigRecord

        # the module, not the function of the same name its package exports
        mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
        from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
        from flwr.common.secure_aggregation.crypto.shamir import combine_shares
        from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
        from flwr.common.secure_aggregation.ndarrays_arithmetic import (factor_extract, get_parameters_shape,
                                                                        parameters_addition, parameters_mod,
                                                                        parameters_subtraction)
        from flwr.common.secure_aggregation.quantization import dequantize
        from flwr.common.secure_aggregation.secaggplus_constants import Key
        from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
        from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key
    except ImportError as exc:
        print(f"flwr is not installed ({exc}); it is an optional benchmark dependency "
              f"(`pip install flwr`). Skipping the Flower comparison.")
        return None
    return dict(version=flwr.__version__, ConfigRecord=ConfigRecord, mod=mod, bytes_to_ndarray=bytes_to_ndarray,
                ndarrays_to_parameters=ndarrays_to_parameters, combine_shares=combine_shares,
                generate_shared_key=generate_shared_key, factor_extract=factor_extract,
                get_parameters_shape=get_parameters_shape, parameters_addition=parameters_addition,
                parameters_mod=parameters_mod, parameters_subtraction=parameters_subtraction,
                dequantize=dequantize, Key=Key, pseudo_rand_gen=pseudo_rand_gen,
                bytes_to_private_key=bytes_to_private_key, bytes_to_public_key=bytes_to_public_key)


# ---------------------------------------------------------------------------- Flower's protocol, in-process
CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 1 << 22
MODULUS_RANGE = 1 << 32
MAX_WEIGHT = 1000.0


def run_flower(F: dict[str, Any], n: int, num_shares: int, threshold: int, dim: int, dropped: set[int],
               seed: int) -> dict[str, Any]:
    """One SecAgg+ round of Flower's client stage functions and the computation
    of their server workflow, clients 1..n, ``dropped`` vanishing before the
    masked-vector stage."""
    mod, Key, CR = F["mod"], F["Key"], F["ConfigRecord"]
    ids = list(range(1, n + 1))
    server = {s: D.Clock() for s in ("setup", "share_keys", "collect_masked_vectors", "unmask")}
    client_core = {i: D.Clock() for i in ids}
    client_state = {i: D.Clock() for i in ids}
    stage_cpu: dict[str, list[float]] = {s: [] for s in server}
    records: dict[int, Any] = {}

    def client_stage(i: int, stage: str, fn: Any, *args: Any) -> Any:
        # as secaggplus_mod: load the state from the node's record, run the stage, store it
        st = D.timed(client_state[i], lambda: mod.SecAggPlusState(**records[i]))
        if stage == "setup":
            st.nid = i
        clk = D.Clock()
        out = D.timed(clk, fn, st, *args)
        client_core[i] += clk
        stage_cpu[stage].append(clk.cpu)
        records[i] = D.timed(client_state[i], lambda: CR(st.to_dict()))
        return out

    # --- stage 0: setup (server: shuffled ring of num_shares per node, self included)
    def server_setup() -> tuple[dict[int, set[int]], Any]:
        order = ids[:]
        random.Random(seed).shuffle(order)
        half = num_shares >> 1
        neighbours = {nid: {order[(j + off) % n] for off in range(-half, half + 1)} for j, nid in enumerate(order)}
        cfg = CR({Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: num_shares, Key.THRESHOLD: threshold,
                  Key.CLIPPING_RANGE: CLIPPING_RANGE, Key.TARGET_RANGE: QUANTIZATION_RANGE,
                  Key.MOD_RANGE: MODULUS_RANGE, Key.MAX_WEIGHT: MAX_WEIGHT})
        return neighbours, cfg

    neighbours, setup_cfg = D.timed(server["setup"], server_setup)
    public_keys: dict[int, list[bytes]] = {}
    for i in ids:
        records[i] = CR({})
        res = client_stage(i, "setup", mod._setup, setup_cfg)
        public_keys[i] = [res[Key.PUBLIC_KEY_1], res[Key.PUBLIC_KEY_2]]
    active = set(ids)

    # --- stage 1: share keys
    def share_keys_cfg(i: int) -> Any:
        return CR({str(v): public_keys[v] for v in neighbours[i] & active})

    fwd_ct: dict[int, list[bytes]] = {i: [] for i in active}
    fwd_src: dict[int, list[int]] = {i: [] for i in active}
    for i in ids:
        cfg = D.timed(server["share_keys"], share_keys_cfg, i)
        res = client_stage(i, "share_keys", mod._share_keys, cfg)

        def route(i: int = i, res: Any = res) -> None:
            for dst, ct in zip(res[Key.DESTINATION_LIST], res[Key.CIPHERTEXT_LIST]):
                if dst in fwd_ct:
                    fwd_ct[dst].append(ct)
                    fwd_src[dst].append(i)

        D.timed(server["share_keys"], route)

    # --- stage 2: collect masked vectors
    masked_sum: list[np.ndarray] | None = None
    expected = np.zeros(dim, dtype=np.float64)
    for i in ids:
        cfg = D.timed(server["collect_masked_vectors"], lambda: CR(
            {Key.CIPHERTEXT_LIST: fwd_ct[i], Key.SOURCE_LIST: fwd_src[i]}))
        if i in dropped:
            continue
        x = D.update_of(i, dim, seed).astype(np.float32)  # outside every timer
        expected += np.clip(x, -CLIPPING_RANGE, CLIPPING_RANGE)
        params = F["ndarrays_to_parameters"]([x])  # what the ClientApp's fit returns (outside the timers)
        res = client_stage(i, "collect_masked_vectors", mod._collect_masked_vectors, cfg, 1, params)

        def add(res: Any = res) -> None:
            nonlocal masked_sum
            vec = [F["bytes_to_ndarray"](b) for b in res[Key.MASKED_PARAMETERS]]
            masked_sum = vec if masked_sum is None else F["parameters_addition"](masked_sum, vec)

        D.timed(server["collect_masked_vectors"], add)
        del res, params, x
    assert masked_sum is not None
    masked_sum = D.timed(server["collect_masked_vectors"], F["parameters_mod"], masked_sum, MODULUS_RANGE)
    active = active - dropped
    dead = set(ids) - active

    # --- stage 3: unmask
    collected: dict[int, list[bytes]] = {i: [] for i in ids}
    for i in sorted(active):
        cfg = D.timed(server["unmask"], lambda: CR({Key.ACTIVE_NODE_ID_LIST: list(neighbours[i] & active),
                                                    Key.DEAD_NODE_ID_LIST: list(neighbours[i] & dead)}))
        res = client_stage(i, "unmask", mod._unmask, cfg)

        def collect(res: Any = res) -> None:
            for owner, share in zip(res[Key.NODE_ID_LIST], res[Key.SHARE_LIST]):
                collected[owner].append(share)

        D.timed(server["unmask"], collect)

    def unmask() -> np.ndarray:
        vec = masked_sum
        shape = F["get_parameters_shape"](vec)
        for nid, shares in collected.items():
            if len(shares) < threshold:
                raise RuntimeError(f"Flower round: too few shares for {nid}")
            secret = F["combine_shares"](shares)
            if nid in active:
                vec = F["parameters_subtraction"](vec, F["pseudo_rand_gen"](secret, MODULUS_RANGE, shape))
            else:
                for w in neighbours[nid] - {nid}:
                    key = F["generate_shared_key"](F["bytes_to_private_key"](secret),
                                                   F["bytes_to_public_key"](public_keys[w][0]))
                    mask = F["pseudo_rand_gen"](key, MODULUS_RANGE, shape)
                    vec = (F["parameters_addition"] if nid > w else F["parameters_subtraction"])(vec, mask)
        vec = F["parameters_mod"](vec, MODULUS_RANGE)
        q_total, vec = F["factor_extract"](vec)
        out = F["dequantize"](vec, CLIPPING_RANGE, QUANTIZATION_RANGE)
        for arr in out:
            arr += -(len(active) - 1) * CLIPPING_RANGE
            arr *= QUANTIZATION_RANGE / q_total
        return out[0]

    mean = D.timed(server["unmask"], unmask)
    err = float(np.max(np.abs(mean - expected / len(active))))
    if not err < 0.05:  # their quantization step with max_weight 1000 is ~4e-3 per client
        raise RuntimeError(f"Flower round gave a wrong mean: max error {err}")
    finished = sorted(active)
    total = D.Clock()
    for c in server.values():
        total += c
    return {"n": n, "num_shares": num_shares, "threshold": threshold, "dim": dim, "dropped": len(dropped),
            "server": {"cpu_s": total.cpu, "wall_s": total.wall,
                       "by_stage": {k: v.as_dict() for k, v in server.items()}},
            "client_core_cpu_s": D.describe(client_core[i].cpu for i in finished),
            "client_core_wall_s": D.describe(client_core[i].wall for i in finished),
            "client_state_cpu_s": D.describe(client_state[i].cpu for i in finished),
            "client_stage_cpu_s": {k: D.describe(v) for k, v in stage_cpu.items()},
            "max_abs_error_of_mean": err}


# ---------------------------------------------------------------------------- ours
def run_ours(n: int, dim: int, tolerance: float, dropped: set[int], seed: int) -> tuple[MaskingParams, dict[str, Any]]:
    ids = tuple(range(1, n + 1))
    params = MaskingParams.create(ids, dim, protocol="secagg+", dropout_tolerance=tolerance)
    keyed = D.run_keys(params, seed=seed)
    report = D.run_rest(keyed, {i: "masked_input" for i in dropped})
    s = report.summary()
    s["degree"], s["threshold"] = params.degree, params.threshold
    return params, s


def run(args: argparse.Namespace, F: dict[str, Any]) -> dict[str, Any]:
    machine = D.machine_info()  # at the start: the library commit the run actually loaded
    load = D.LoadLog()
    load.mark("start")
    n, dim = args.n, args.dim
    ids = tuple(range(1, n + 1))
    dropped = set(D.drop_schedule(ids, args.dropout, seed=args.seed))
    tolerance = args.dropout_tolerance if args.dropout_tolerance is not None else args.dropout
    D.say(f"ours: n={n}, d={dim}, {len(dropped)} drop at masked_input")
    params, ours = run_ours(n, dim, tolerance, dropped, args.seed)
    load.mark("ours")
    k, t = params.degree, params.threshold
    D.say(f"  k={k}, t={t}: server core {D.fmt_s(ours['server_core']['cpu_s'])}, client mean "
          f"{D.fmt_s(ours['client_core_cpu_s']['mean'])}")
    D.say(f"flower {F['version']}: num_shares={k + 1}, threshold={t}")
    theirs = run_flower(F, n, k + 1, t, dim, dropped, args.seed)
    load.mark("flower")
    D.say(f"  server {D.fmt_s(theirs['server']['cpu_s'])}, client mean {D.fmt_s(theirs['client_core_cpu_s']['mean'])}")
    ratios = {
        "client_core": theirs["client_core_cpu_s"]["mean"] / ours["client_core_cpu_s"]["mean"],
        "client_ours_with_wire": theirs["client_core_cpu_s"]["mean"] / (
            ours["client_core_cpu_s"]["mean"] + ours["client_wire_cpu_s"]["mean"]),
        "server_core": theirs["server"]["cpu_s"] / ours["server_core"]["cpu_s"],
        "server_ours_with_wire": theirs["server"]["cpu_s"] / ours["server_core_plus_wire"]["cpu_s"],
    }
    load.mark("end")
    return {"benchmark": "masking_flower", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick,
            "flwr_version": F["version"], "n": n, "dim": dim, "dropout": args.dropout,
            "dropout_tolerance": tolerance, "degree": k, "threshold": t, "machine": machine,
            "load": load.summary(), "timer": "process CPU time on one pinned core (wall alongside)",
            "ours": ours, "flower": theirs, "ratios_flower_over_ours": ratios, "goal": GOAL}


def to_markdown(r: dict[str, Any]) -> str:
    o, f, q = r["ours"], r["flower"], r["ratios_flower_over_ours"]
    m = r["machine"]
    lo, hi = r["load"]["load_1min_min"], r["load"]["load_1min_max"]

    def v(ok: bool) -> str:
        return "met" if ok else "**not met**"

    keys, heads = D.client_stages(o["client_stage_core_cpu_s"])
    lines = [
        "# SecAgg+: ours vs Flower " + r["flwr_version"] + (" — quick smoke run" if r["quick"] else ""),
        "",
        f"Generated by `benchmarks/bench_flower_secaggplus.py` on {r['date']}; {m['cpu']}, pinned to CPU "
        f"{m['pinned_to_cpu']}; 1-min load average {lo}–{hi} (shared machine). Process CPU seconds. "
        + D.source_line(m),
        "",
        f"n = {r['n']}, d = {r['dim']:,}, {r['dropout']:.0%} of clients ({f['dropped']}) drop after sharing keys; "
        f"degree k = {r['degree']} (Flower num_shares = k + 1 = {f['num_shares']}), threshold t = {r['threshold']} "
        f"(ours derived with dropout_tolerance = {r['dropout_tolerance']}).",
        "",
        "| | ours | Flower | Flower / ours | goal >= 10x |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| client, mean per client (core) | {D.fmt_s(o['client_core_cpu_s']['mean'])} | "
        f"{D.fmt_s(f['client_core_cpu_s']['mean'])} | {q['client_core']:.1f}x | {v(q['client_core'] >= GOAL)} |",
        f"| client, ours + our wire encode/decode | "
        f"{D.fmt_s(o['client_core_cpu_s']['mean'] + o['client_wire_cpu_s']['mean'])} "
        f"| {D.fmt_s(f['client_core_cpu_s']['mean'])} | {q['client_ours_with_wire']:.1f}x | "
        f"{v(q['client_ours_with_wire'] >= GOAL)} |",
        f"| server (core) | {D.fmt_s(o['server_core']['cpu_s'])} | {D.fmt_s(f['server']['cpu_s'])} | "
        f"{q['server_core']:.1f}x | {v(q['server_core'] >= GOAL)} |",
        f"| server, ours + our wire | {D.fmt_s(o['server_core_plus_wire']['cpu_s'])} | "
        f"{D.fmt_s(f['server']['cpu_s'])} | {q['server_ours_with_wire']:.1f}x | "
        f"{v(q['server_ours_with_wire'] >= GOAL)} |",
        "",
        f"Flower's client also persists its state between stages through ConfigRecords (as `secaggplus_mod` "
        f"does): {D.fmt_s(f['client_state_cpu_s']['mean'])} per client, not counted above.",
        "",
        "Client stages (CPU, mean per client):",
        "",
        "| ours: " + " | ".join(heads) + " | share_keys | masked_input | unmasking || Flower: setup | share_keys | "
        "collect_masked_vectors | unmask |",
        "| " + " | ".join("---:" for _ in keys) + " | --- | ---: | ---: | ---: | ---: |",
        "| " + " | ".join(D.fmt_s(o["client_stage_core_cpu_s"][k]["mean"]) for k in keys) + " || "
        + " | ".join(D.fmt_s(f["client_stage_cpu_s"][k]["mean"]) for k in
                     ("setup", "share_keys", "collect_masked_vectors", "unmask")) + " |",
        "",
        "Server stages (CPU):",
        "",
        "| ours: advertise_keys | share_keys | masked_input | unmasking | (wire) || Flower: setup | share_keys | "
        "collect_masked_vectors | unmask |",
        "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        "| " + " | ".join(D.fmt_s(o["server_core"]["by_stage"][k]["cpu_s"]) for k in
                         ("advertise_keys", "share_keys", "masked_input", "unmasking"))
        + f" | {D.fmt_s(o['server_wire']['cpu_s'])} || "
        + " | ".join(D.fmt_s(f["server"]["by_stage"][k]["cpu_s"]) for k in
                     ("setup", "share_keys", "collect_masked_vectors", "unmask")) + " |",
        "",
        f"Both aggregates checked against the plaintext (ours: sum, max error {o['max_abs_error']:.1e} <= "
        f"{o['error_bound']:.1e}; Flower: mean, max error {f['max_abs_error_of_mean']:.1e}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run: n = 40, d = 10K")
    ap.add_argument("--n", type=int, help="clients (default 200)")
    ap.add_argument("--dim", type=int, help="entries per update (default 100000)")
    ap.add_argument("--dropout", type=float, default=0.1, help="fraction dropping before the masked input")
    ap.add_argument("--dropout-tolerance", type=float,
                    help="tolerance our SecAgg+ parameters are derived for (default: --dropout)")
    ap.add_argument("--seed", type=int, default=0)
    D.add_output_args(ap, memory_gib=None)
    args = ap.parse_args()
    if D.render_only(args, to_markdown):
        return
    args.n = args.n or (40 if args.quick else 200)
    args.dim = args.dim or (10_000 if args.quick else 100_000)
    F = import_flower()
    if F is None:
        return
    logging.getLogger("flwr").setLevel(logging.WARNING)
    D.run_and_write(args, lambda a: run(a, F), to_markdown, "masking_flower", memory_gib=None)


if __name__ == "__main__":
    main()
