"""How much faster is the masking server's mask removal on two cores than on
one, and how much faster could it be on this host at this moment?

The server removes the dropped clients' pairwise masks (per dropped client
and survivor: one X25519 exchange and one keystream of d words) and the
survivors' self masks (one keystream each). ``process_unmasker(workers,
chunks_per_worker)`` cuts those jobs into ``workers x chunks_per_worker``
parts and runs them on the cores; ``run_local`` runs them in this process.
This script builds the jobs of one dropout cell (fresh keys, no round around
them: the jobs are what the server hands its unmasker) and times, alternated
``--repeats`` times in one run, WALL seconds:

- ``run_local`` (one core);
- ``process_unmasker(workers, c)`` for each ``--chunks`` c (every result
  checked equal to the one-core result);
- the bare primitives of the same number of pairs (X25519 exchange and
  keystream, no library code) alone and split over the same cores
  (``masking_driver.bare_two_core_ceiling``): the speedup two vCPUs of this
  host gave at that moment, beside the library's (a measure of the host, not
  a bound: both move from second to second).

    .venv/bin/python benchmarks/bench_unmask_parallel.py            # d = 100K, 60 dropped x 300 survivors
    .venv/bin/python benchmarks/bench_unmask_parallel.py --quick    # d = 10K (seconds)

Results: benchmarks/results/unmask_parallel.json and .md (``--quick``:
unmask_parallel_quick.*).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import masking_driver as D  # noqa: E402  (sets the thread env before numpy loads)
import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

from secagg.drivers.concurrency import process_unmasker  # noqa: E402
from secagg.encoding.ring import dtype_for  # noqa: E402
from secagg.protocols.masking.unmask import MaskJob, run_local  # noqa: E402


def _public() -> bytes:
    return X25519PrivateKey.generate().public_key().public_bytes_raw()


def build_jobs(dim: int, dropped: int, survivors: int) -> list[MaskJob]:
    """The jobs of a cell: the survivors' self masks, then per dropped client
    its pairwise masks with every survivor (fresh random keys and seeds)."""
    sid = os.urandom(32)
    publics = tuple(_public() for _ in range(survivors))
    ids = tuple(range(1, survivors + 1))
    jobs = [MaskJob(dim, 32, sid, seeds=tuple(os.urandom(32) for _ in range(survivors)))]
    for v in range(dropped):
        jobs.append(MaskJob(dim, 32, sid, survivors + 1 + v, secret=X25519PrivateKey.generate().private_bytes_raw(),
                            owner_public=_public(), peers=ids, peer_publics=publics))
    return jobs


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = D.machine_info()
    every = set(range(os.cpu_count() or 1))
    os.sched_setaffinity(0, every)  # this process and the workers it spawns may use every CPU
    jobs = build_jobs(args.dim, args.dropped, args.survivors)
    pairs = args.dropped * args.survivors
    D.say(f"d = {args.dim}, {args.dropped} dropped x {args.survivors} survivors: {pairs} pairwise streams, "
          f"{args.survivors} self-mask streams")
    unmaskers = {c: process_unmasker(args.workers, chunks_per_worker=c).start() for c in args.chunks}
    names = ["one core"] + [f"{args.workers} workers, {c} parts each" for c in args.chunks]
    wall: dict[str, list[float]] = {n: [] for n in names}
    bare: list[dict[str, Any]] = []
    load = D.LoadLog()
    steal0, t0 = D.steal_seconds(), time.perf_counter()
    reference = None
    try:
        for rep in range(args.repeats):
            load.mark(f"repeat {rep + 1}")
            for name, chunks in zip(names, [None, *args.chunks]):
                w = time.perf_counter()
                out = run_local(jobs) if chunks is None else unmaskers[chunks](jobs)
                wall[name].append(time.perf_counter() - w)
                if reference is None:
                    reference = out
                elif not np.array_equal(out, reference):
                    raise SystemExit(f"{name}: the mask removal differs from the one-core result")
            bare.append(D.bare_two_core_ceiling(args.dim * np.dtype(dtype_for(32)).itemsize, args.workers))
            D.say(f"repeat {rep + 1}: " + ", ".join(f"{n} {wall[n][-1]:.2f} s" for n in names)
                  + f"; bare primitives {bare[-1]['speedup']:.2f}x")
    finally:
        for u in unmaskers.values():
            u.shutdown()
    load.mark("end")
    one = statistics.median(wall["one core"])
    rows = [{"name": n, "wall_s": wall[n], "median_wall_s": statistics.median(wall[n]),
             "speedup": one / statistics.median(wall[n])} for n in names]
    bare_speedup = statistics.median(b["speedup"] for b in bare)
    return {"benchmark": "unmask_parallel", "quick": args.quick, "dim": args.dim, "dropped": args.dropped,
            "survivors": args.survivors, "pairwise_streams": pairs, "workers": args.workers,
            "chunks": args.chunks, "repeats": args.repeats, "rows": rows, "bare": bare,
            "bare_speedup": bare_speedup, "steal_s": D.steal_seconds() - steal0,
            "run_wall_s": time.perf_counter() - t0, "load": load.summary(), "machine": machine,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def to_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# The server's mask removal on {r['workers']} cores{' (quick)' if r['quick'] else ''}", "",
             f"Generated by `benchmarks/bench_unmask_parallel.py` on {r['date']}; {m.get('cpu')}, "
             f"{m.get('cpu_count')} CPUs (this process and its workers on all of them). " + D.source_line(m), "",
             f"Jobs of one cell: d = {r['dim']:,}, {r['dropped']} dropped clients x {r['survivors']} survivors "
             f"({r['pairwise_streams']:,} pairwise streams, each with an X25519 exchange) and {r['survivors']} "
             f"self masks, fresh keys. WALL seconds, {r['repeats']} repeats alternated in one run (medians); "
             "every result checked equal to the one-core one.", "",
             "| unmasker | wall (median) | each repeat | speedup over one core | of the bare primitives' speedup |",
             "| --- | ---: | --- | ---: | ---: |"]
    for row in r["rows"]:
        lines.append(f"| {row['name']} | {D.fmt_s(row['median_wall_s'])} | "
                     f"{', '.join(D.fmt_s(x) for x in row['wall_s'])} | {row['speedup']:.2f}x | "
                     + (f"{row['speedup'] / r['bare_speedup']:.2f} |" if row is not r["rows"][0] else "— |"))
    lines += ["", f"Bare primitives (`masking_driver.bare_two_core_ceiling`, after each repeat: per pair one X25519 "
              f"exchange and one keystream, alone and then split over {r['workers']} processes, no library code): "
              + ", ".join(f"{b['speedup']:.2f}x" for b in r["bare"]) + f"; median {r['bare_speedup']:.2f}x. "
              f"Hypervisor steal over the run: {r['steal_s']:.1f} s in {r['run_wall_s']:.0f} s. "
              f"1-min load average {r['load']['load_1min_min']}–{r['load']['load_1min_max']}.", "",
              "A part queued to a worker cannot be withdrawn once the pool has handed it on (it queues one "
              "beyond each running call), so where this process and the workers meet, this process may wait "
              "for a whole part: fewer, larger parts leave a longer tail.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="d = 10K (a few seconds)")
    ap.add_argument("--dim", type=int, help="entries per update (default 100000; 10000 with --quick)")
    ap.add_argument("--dropped", type=int, default=60)
    ap.add_argument("--survivors", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunks", type=int, nargs="+", default=[4, 16, 32], help="parts per worker to compare")
    ap.add_argument("--repeats", type=int, default=5)
    D.add_output_args(ap, memory_gib=None)
    args = ap.parse_args()
    if args.dim is None:
        args.dim = 10_000 if args.quick else 100_000
    if args.workers < 2:
        ap.error("--workers must be at least 2")
    if D.render_only(args, to_markdown):
        return
    result = run(args)
    md = to_markdown(result)
    print(md)
    D.write_results("unmask_parallel" + ("_quick" if args.quick else ""), result, md, args.out)


if __name__ == "__main__":
    main()
