"""Does our SecAgg reproduce the Bonawitz et al. (CCS'17) run-time table at
least 10x faster? And does a client's masking cost stay within 1.5x of
(neighbours x the bare PRG time for d words)?

The table (their single-thread Java implementation, 100K-entry vectors):

    server   n = 500:  2.0 s / 62.2 s / 143.4 s  at 0 / 10 / 30 % dropout
             n = 1000: 4.9 s / 180.9 s / 413.8 s
    client   849 ms (n = 500), 1.7 s (n = 1000)

Dropout there means clients that vanish after sharing their keys and before
sending their masked input: the server reconstructs their mask keys and
recomputes every pairwise mask they had with the survivors. We run exactly
that: the complete graph (protocol "secagg"), ``dim`` = 100K, every client of
``n`` through every round in one process (masking_driver.py), clients of the
dropout cells vanishing at ``masked_input``.

What is timed (process CPU time on one pinned core; wall time alongside):

- server: ``receive`` of every message and ``close_round`` of every round
  ("core"); wire decode/encode of the server's messages apart ("wire"), and
  the sum. The goal is judged on core, and reported on core + wire too;
- client: key generation and every round handler of one client, for every
  client (mean and median over those that ran every round), wire apart;
- masking step, for ``--probe`` clients per cell: right after the client's
  real ``masked_input``, the same library primitives replay its masking step
  (checked to reproduce its mask exactly) and the bare AES-256 keystream
  runs for as many streams (OpenSSL's faster way to it on this machine, CTR
  or GCM of zeros; see masking_driver.BareKeystream and probe_masking).

The dropout cells of one ``n`` share rounds 0-1 (key advertisement, share
distribution: identical whatever drops later); their cost is counted in
every cell.

    .venv/bin/python benchmarks/bench_bonawitz.py --quick      # n = 50, 100, d = 10K (seconds)
    .venv/bin/python benchmarks/bench_bonawitz.py              # the table: n = 500, 1000, d = 100K
    .venv/bin/python benchmarks/bench_bonawitz.py --profile    # + cProfile of the server, one cell

Results: benchmarks/results/masking_bonawitz.json and .md (``--quick``:
masking_bonawitz_quick.*).
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import masking_driver as D  # noqa: E402  (sets the thread env before numpy loads)

from secagg.protocols.masking import MaskingParams  # noqa: E402

PAPER_SERVER = {500: {0.0: 2.0, 0.1: 62.2, 0.3: 143.4}, 1000: {0.0: 4.9, 0.1: 180.9, 0.3: 413.8}}
PAPER_CLIENT = {500: 0.849, 1000: 1.7}
SPEEDUP_GOAL = 10.0
MASKING_GOAL = 1.5
def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = D.machine_info()  # at the start: the library commit the run actually loaded
    memory = D.memory_report(args.warm_memory)
    load = D.LoadLog()
    load.mark("start")
    cells = []
    profile_text = None
    for n in args.n:
        ids = tuple(range(1, n + 1))
        params = MaskingParams.create(ids, args.dim, protocol="secagg", dropout_tolerance=max(args.dropout))
        D.say(f"n={n}: threshold {params.threshold}, ring {params.ring_bits} bits; rounds 0-1")
        keys_prof = cProfile.Profile() if args.profile and n == args.n[-1] else None
        keyed = D.run_keys(params, seed=args.seed, progress=D.say, profile_server=keys_prof,
                           server_last=not args.interleaved, freeze_gc=not args.no_freeze_gc)
        if keys_prof is not None:
            profile_text = (profile_text or "") + D.dump_profile(keys_prof, f"server_n{n}_rounds01")
        load.mark(f"n={n} keys")
        bare = D.BareKeystream(4 * params.entries if params.ring_bits == 32 else 8 * params.entries)
        D.say(f"bare keystream floor through {bare.mode.upper()} (per stream: "
              + ", ".join(f"{k} {D.fmt_s(v)}" for k, v in bare.calibration_cpu_s.items()) + ")")
        for rate in args.dropout:
            schedule = D.drop_schedule(ids, rate, "masked_input", seed=args.seed)
            sample = D.probe_sample(ids, schedule, args.probe, seed=args.seed)
            prof = None
            if args.profile and n == args.n[-1]:
                prof = cProfile.Profile()
            D.say(f"n={n}, dropout {rate:.0%}: {len(schedule)} drop at masked_input")
            report = D.run_rest(keyed, schedule, probe_clients=sample, bare=bare, profile_server=prof)
            load.mark(f"n={n} dropout={rate}")
            s = report.summary()
            s["n"] = n
            s["dropout"] = rate
            # the server's floor, timed bare in this process right after the cell
            s["server_floor"] = D.server_floor(params, survivors=report.included, advertised=n,
                                               dropped=len(schedule), bare=bare)
            s["server_core_over_floor"] = s["server_core"]["cpu_s"] / s["server_floor"]["cpu_s"]
            s["server_wire_over_core"] = s["server_wire"]["cpu_s"] / s["server_core"]["cpu_s"]
            if args.workers > 1 and (n, rate) in args.parallel_cells:
                s["parallel"] = D.parallel_rest(keyed, schedule, report, args.workers)
                D.say(f"  unmasking on {args.workers} cores: {s['parallel']['unmasking_wall_s']:.2f} s wall vs "
                      f"{s['parallel']['one_core_unmasking_wall_s']:.2f} s on one "
                      f"({s['parallel']['unmasking_speedup']:.2f}x; server core {s['parallel']['server_core_speedup']:.2f}x)")
            s["masking"] = D.probe_summary(report.probes)
            s["masking"]["bare_keystream_mode"] = bare.mode
            s["masking"]["bare_keystream_calibration_cpu_s"] = bare.calibration_cpu_s
            paper_s = PAPER_SERVER.get(n, {}).get(rate)
            paper_c = PAPER_CLIENT.get(n)
            s["paper_server_s"] = paper_s
            s["paper_client_s"] = paper_c
            if paper_s:
                s["server_speedup_core"] = paper_s / s["server_core"]["cpu_s"]
                s["server_speedup_core_plus_wire"] = paper_s / s["server_core_plus_wire"]["cpu_s"]
                s["server_speedup_core_wall"] = paper_s / s["server_core"]["wall_s"]
            if paper_c:
                s["client_speedup_mean"] = paper_c / s["client_core_cpu_s"]["mean"]
                s["client_speedup_mean_with_wire"] = paper_c / (s["client_core_cpu_s"]["mean"]
                                                                + s["client_wire_cpu_s"]["mean"])
            cells.append(s)
            D.say(f"  server core {D.fmt_s(s['server_core']['cpu_s'])} CPU "
                  f"(+ wire {D.fmt_s(s['server_wire']['cpu_s'])}), client mean "
                  f"{D.fmt_s(s['client_core_cpu_s']['mean'])}, masking step/floor "
                  f"{s['masking'].get('ratio_masking_step', float('nan')):.2f}")
            if prof is not None:
                profile_text = (profile_text or "") + D.dump_profile(prof, f"server_n{n}_drop{int(rate * 100)}_rounds24")
            del report
        del keyed
    load.mark("end")
    return {"benchmark": "masking_bonawitz", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "quick": args.quick, "dim": args.dim,
            "delivery": "interleaved" if args.interleaved else "server_last", "freeze_gc": not args.no_freeze_gc, "machine": machine, "load": load.summary(),
            "timer": "process CPU time on one pinned core (wall time alongside)", "cells": cells,
            "speedup_goal": SPEEDUP_GOAL, "masking_goal": MASKING_GOAL, "server_profile_top": profile_text,
            **memory, "peak_rss_mb": D.peak_rss_mb()}


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def to_markdown(r: dict[str, Any]) -> str:
    lo, hi = r["load"]["load_1min_min"], r["load"]["load_1min_max"]
    m = r["machine"]
    lines = [
        "# SecAgg (complete graph) vs Bonawitz et al. CCS'17" + (" — quick smoke run" if r["quick"] else ""),
        "",
        f"Generated by `benchmarks/bench_bonawitz.py` on {r['date']}; d = {r['dim']:,}; {m['cpu']}, "
        f"pinned to CPU {m['pinned_to_cpu']} of {m['cpu_count']}; Python {m['python']}, numpy {m['numpy']}, "
        f"cryptography {m['cryptography']}. " + D.source_line(m),
        f"Machine shared with other jobs: 1-min load average {lo}–{hi} during the run. Figures are process "
        "CPU seconds (time waiting for the core is not counted); wall seconds in the JSON.",
        D.memory_line(r),
        "",
        "Server = `receive` + `close_round` of every round (core); wire = decode of received and encode of sent "
        "messages. Client = key generation + every round handler, mean over the clients that ran every round.",
    ]
    lines.append(D.delivery_line(r, "--interleaved"))
    if r["cells"] and r["cells"][0].get("timing"):  # runs on the round drivers
        lines += ["Every party runs on the round drivers (ServerDriver, ClientDriver with MaskingClientRole, moved by "
                  "LocalRound); figures are the drivers' observer spans (masking_driver.ClockObserver). A client's "
                  "core includes restoring it from its saved record at every message and, in advertise_keys, "
                  "checking the round's parameters (its neighbour graph, the session id) and making its keys; its "
                  "wire includes decoding the parameters."]
    lines += [
        "",
        "| n | dropout | server core | + wire | paper server | speedup (core) | speedup (core+wire) | "
        "client mean | client median | paper client | client speedup | server 10x | client 10x |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for c in r["cells"]:
        ps, pc = c.get("paper_server_s"), c.get("paper_client_s")
        ss = c.get("server_speedup_core")
        sw = c.get("server_speedup_core_plus_wire")
        cs = c.get("client_speedup_mean")
        lines.append(
            f"| {c['n']} | {c['dropout']:.0%} | {D.fmt_s(c['server_core']['cpu_s'])} | "
            f"{D.fmt_s(c['server_core_plus_wire']['cpu_s'])} | {D.fmt_s(ps)} | "
            f"{'%.1fx' % ss if ss else '—'} | {'%.1fx' % sw if sw else '—'} | "
            f"{D.fmt_s(c['client_core_cpu_s']['mean'])} | {D.fmt_s(c['client_core_cpu_s']['median'])} | "
            f"{D.fmt_s(pc)} | {'%.1fx' % cs if cs else '—'} | "
            f"{verdict(ss >= SPEEDUP_GOAL) if ss else '—'} | {verdict(cs >= SPEEDUP_GOAL) if cs else '—'} |")
    lines += ["", "Server core time by stage (CPU):", "",
              "| n | dropout | advertise_keys | share_keys | masked_input | unmasking | wire (all) |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in r["cells"]:
        st = c["server_core"]["by_stage"]
        lines.append(f"| {c['n']} | {c['dropout']:.0%} | " + " | ".join(
            D.fmt_s(st[k]["cpu_s"]) for k in ("advertise_keys", "share_keys", "masked_input", "unmasking"))
            + f" | {D.fmt_s(c['server_wire']['cpu_s'])} |")
    if r["cells"] and "server_floor" in r["cells"][0]:
        lines += ["", "Server against its floor (CPU), timed bare in the same process right after each cell: "
                  "a keystream of d words per survivor's self mask, one vector add per masked input, one "
                  "transpose of the n x (n - 1) table of encrypted share records into a preallocated buffer, "
                  "and per (dropped, survivor) pair one X25519 exchange and one keystream. The adds read distinct "
                  "inputs from memory, as received inputs are. Apart: the primitives of the key check "
                  "of the 2n advertised keys (per key one Legendre symbol in gmpy2; records at 5bf4391 and "
                  "before also spent an X25519 exchange on every key, to refuse mixed-order keys, which the "
                  "server now accepts: masking SPEC §4.2), which refusing twist keys costs; "
                  "`core / (floor + check)` counts them in:", "",
                  "| n | dropout | server core | floor | core / floor | of which keystreams | adds | transpose "
                  "| X25519 | key check | core / (floor + check) | server wire | wire / core |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in r["cells"]:
            f = c["server_floor"]
            lines.append(f"| {c['n']} | {c['dropout']:.0%} | {D.fmt_s(c['server_core']['cpu_s'])} | "
                         f"{D.fmt_s(f['cpu_s'])} | {c['server_core_over_floor']:.2f} | "
                         f"{D.fmt_s(f['keystreams_cpu_s'])} | {D.fmt_s(f['adds_cpu_s'])} | "
                         f"{D.fmt_s(f['transpose_cpu_s'])} | {D.fmt_s(f['x25519_cpu_s'])} | "
                         + (f"{D.fmt_s(f['subgroup_check_cpu_s'])} | "
                            f"{c['server_core']['cpu_s'] / (f['cpu_s'] + f['subgroup_check_cpu_s']):.2f} | "
                            if "subgroup_check_cpu_s" in f else "— | — | ")
                         + f"{D.fmt_s(c['server_wire']['cpu_s'])} | {c['server_wire_over_core']:.2f} |")
    copies = [c for c in r["cells"] if c.get("server_bytes_copy")]
    if copies:
        lines += ["", "Server wire: the complete graph's ForwardedShares are laid out in place by the share "
                  "routing and LocalRound takes them as views of that buffer (`ServerDriver.close_stage(views="
                  "True)`), so encoding them copies nothing. A transport that needs `bytes` (a Flower record) "
                  "copies each once; timed apart, every copy alive at once: "
                  + "; ".join(f"n = {c['n']}, {c['dropout']:.0%}: +{D.fmt_s(c['server_bytes_copy']['cpu_s'])}, "
                              f"wire / core {(c['server_wire']['cpu_s'] + c['server_bytes_copy']['cpu_s']) / c['server_core']['cpu_s']:.2f}"
                              for c in copies if c["dropout"] == 0) + "."]
    par = [c for c in r["cells"] if c.get("parallel")]
    if par:
        lines += ["", "The server's mask removal on several cores (`drivers.concurrency.process_unmasker`), "
                  "the same cell run again in the same process; WALL seconds (the workers' CPU time is not "
                  "the process's); the aggregate checked against the plaintext sum, as every cell's. Beside it, "
                  "what the same cores gave the bare primitives of that work at that moment: the pairs' X25519 "
                  "exchange and keystream alone in this process, then split evenly over this process and the "
                  "spawned ones, three times each, just before and just after the library's run "
                  "(`masking_driver.bare_two_core_ceiling`, no library code; the median of the two), and the "
                  "hypervisor's steal time over the library's run (`/proc/stat`):", "",
                  "| n | dropout | workers | unmasking, 1 core | unmasking, workers | speedup | server core, 1 core "
                  "| server core, workers | speedup | bare primitives' speedup (before / after) | unmasking "
                  "speedup / bare | steal |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in par:
            q = c["parallel"]
            bare = (f"{q['bare_speedup']:.2f}x ({q['bare_before']['speedup']:.2f}x / {q['bare_after']['speedup']:.2f}x) | "
                    f"{q['unmasking_speedup'] / q['bare_speedup']:.2f} | {q['steal_s']:.1f} s in {q['steal_span_wall_s']:.0f} s"
                    if "bare_speedup" in q else "not measured | | ")
            lines.append(f"| {c['n']} | {c['dropout']:.0%} | {q['workers']} | {D.fmt_s(q['one_core_unmasking_wall_s'])} | "
                         f"{D.fmt_s(q['unmasking_wall_s'])} | {q['unmasking_speedup']:.2f}x | "
                         f"{D.fmt_s(q['one_core_server_core_wall_s'])} | {D.fmt_s(q['server_core_wall_s'])} | "
                         f"{q['server_core_speedup']:.2f}x | {bare} |")
    keys, heads = D.client_stages(r["cells"][0]["client_stage_core_cpu_s"])
    lines += ["", "Client time by stage (CPU, mean per client that ran it):", "",
              "| n | dropout | " + " | ".join(heads) + " | share_keys | masked_input | unmasking | wire |",
              "| ---: | ---: | " + " | ".join("---:" for _ in keys) + " | ---: |"]
    for c in r["cells"]:
        st = c["client_stage_core_cpu_s"]
        lines.append(f"| {c['n']} | {c['dropout']:.0%} | " + " | ".join(
            D.fmt_s(st[k]["mean"]) if st.get(k) else "—" for k in keys)
            + f" | {D.fmt_s(c['client_wire_cpu_s']['mean'])} |")
    modes = sorted({c["masking"]["bare_keystream_mode"] for c in r["cells"] if "bare_keystream_mode" in
                    c.get("masking", {})})
    floor = (f"bare AES-256 keystream for d words, through OpenSSL's {'/'.join(m.upper() for m in modes)} code: "
             "the faster here" if modes else "bare AES-256-CTR keystream for d words")  # runs before it was chosen
    lines += ["", f"Client masking step vs (neighbours × {floor}), goal <= "
              f"{MASKING_GOAL}x; medians over the probed clients, each ratio taken per client:", "",
              "| n | dropout | clients | peers | masked_input | masking step | PRG+add only | keystream/stream "
              "| X25519/peer | floor (peers × keystream) | step / floor | PRG+add / keystream "
              "| step / (peers × (keystream + X25519)) | goal (step) | goal (PRG+add) |",
              "|" + " ---: |" * 13 + " --- | --- |"]
    for c in r["cells"]:
        k = c["masking"]
        if not k.get("clients"):  # --probe 0
            continue
        lines.append(
            f"| {c['n']} | {c['dropout']:.0%} | {k['clients']} | {k['peers_median']:.0f} | "
            f"{D.fmt_s(k['masked_input_s'])} | {D.fmt_s(k['masking_step_s'])} | {D.fmt_s(k['prg_add_s'])} | "
            f"{D.fmt_s(k['bare_keystream_per_stream_s'])} | {D.fmt_s(k['bare_x25519_per_peer_s'])} | "
            f"{D.fmt_s(k['floor_s'])} | {k['ratio_masking_step']:.2f} | {k['ratio_prg_add']:.2f} | "
            f"{k['ratio_masking_step_vs_keystream_plus_x25519']:.2f} | "
            f"{verdict(k['ratio_masking_step'] <= MASKING_GOAL)} | {verdict(k['ratio_prg_add'] <= MASKING_GOAL)} |")
    lines += ["", "Client against the primitives it cannot avoid: per peer one keystream of d words for its "
              "pairwise mask and two X25519 exchanges (share-encryption key, mask key), plus its self mask "
              "(bare timings from the probes of the same cell), and the Shamir split of its two secrets "
              "(self-mask seed, mask key) into a share per neighbour at the round's threshold (the library's "
              "`shamir.split_many`, timed alone on fresh secrets):", "",
              "| n | dropout | client mean | keystreams + X25519 | + Shamir split | floor | mean / floor "
              "| paper client / floor |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in r["cells"]:
        k = c["masking"]
        if not k.get("clients"):
            continue
        base = (k["peers_median"] + 1) * k["bare_keystream_per_stream_s"] + 2 * k["peers_median"] * k[
            "bare_x25519_per_peer_s"]
        split = k.get("shamir_split_s", 0.0)
        floor = base + split
        pc = c.get("paper_client_s")
        lines.append(f"| {c['n']} | {c['dropout']:.0%} | {D.fmt_s(c['client_core_cpu_s']['mean'])} | "
                     f"{D.fmt_s(base)} | {D.fmt_s(split)} | {D.fmt_s(floor)} | "
                     f"{c['client_core_cpu_s']['mean'] / floor:.2f} | "
                     f"{'%.1fx' % (pc / floor) if pc else '—'} |")
    lines += ["", "PRG+add = the masking loop of `masked_input`: `prg_ring_add_into` for the self mask and "
              "`prg_ring_add_many_into` over the peers, seeds already derived (the client agrees its mask keys in ShareKeys). Masking "
              "step = all the work that makes the masks: that loop plus, per peer, the X25519 exchange and the "
              "KDF of the mask seed (wherever the client does them). X25519/peer = a bare `cryptography` "
              "exchange (public key parsed, private key loaded once). The `masked_input` column is the whole "
              "handler (share decryption, quantization, the loop).", ""]
    lines.append("Every cell's aggregate was checked against the plaintext sum (max error "
                 + ", ".join(f"{c['max_abs_error']:.1e}" for c in r["cells"]) + "; bounds "
                 + ", ".join(f"{c['error_bound']:.1e}" for c in r["cells"]) + ").")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run: n = 50, 100; d = 10K; 5 probes")
    ap.add_argument("--n", type=int, nargs="+", help="numbers of clients (default 500 1000)")
    ap.add_argument("--dim", type=int, help="entries per update (default 100000)")
    ap.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    ap.add_argument("--probe", type=int, help="clients whose masking step is timed per cell (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-freeze-gc", action="store_true",
                    help="let collections the server's work triggers walk the in-process clients' objects too "
                         "(masking_driver.BenchRound), as records before 2026-12-04, night, did")
    ap.add_argument("--interleaved", action="store_true",
                    help="hand each reply to the server as soon as its client made it (client, server, "
                         "client...), as runs before 2026-12-04 did; by default every client of a stage answers "
                         "first and the server receives the replies back to back (LocalRound(server_last=True))")
    ap.add_argument("--profile", action="store_true",
                    help=f"cProfile the server in the cells of the largest n (stats to {D.PROFILE_DIR})")
    ap.add_argument("--workers", type=int, default=1,
                    help="also run --parallel-cells with the server's mask removal on this many cores "
                         "(drivers.concurrency.process_unmasker; default 1: no parallel run)")
    ap.add_argument("--parallel-cells", nargs="+", metavar="N:DROPOUT",
                    help="cells for --workers (default: the largest n at the largest dropout)")
    D.add_output_args(ap)
    args = ap.parse_args()
    if D.render_only(args, to_markdown):
        return
    args.n = args.n or ([50, 100] if args.quick else [500, 1000])
    args.dim = args.dim or (10_000 if args.quick else 100_000)
    args.probe = args.probe if args.probe is not None else (5 if args.quick else 20)
    args.parallel_cells = ({(int(c.split(":")[0]), float(c.split(":")[1])) for c in args.parallel_cells}
                           if args.parallel_cells else {(max(args.n), max(args.dropout))})
    D.run_and_write(args, run, to_markdown, "masking_bonawitz")


if __name__ == "__main__":
    main()
