"""How fast is the foundation? The primitives every protocol round is built from.

Measures, in one run:

- the raw ``cryptography`` keystreams (AES-256-CTR, AES-256-GCM of zero bytes
  (the same counter-mode keystream, through OpenSSL's GCM code, which uses
  vector AES where the CPU has it) and ChaCha20, written with ``update_into``
  into a reused buffer, a fresh encryptor per call as a PRG call needs one) for
  d = 100K and 1M uint32 words;
- our mask PRG: ``prg_ring`` (returns a fresh vector) and ``prg_ring_add_into``
  (adds into an accumulator: the server's hot loop), and their throughput as a
  fraction of the raw AES-CTR keystream and of the faster of the two raw AES
  keystreams (goal: >= 0.8 of the faster), ``prg_ring_add_into`` also against
  that raw keystream followed by a numpy add (the same work);
- numpy uint32 addition of 1M words (the floor under any masking scheme);
- X25519: the raw exchange, our ``agree`` (which also loads the private key:
  a second scalar multiplication) and ``agree_many`` per peer;
  ChaCha20-Poly1305 on a ~100-byte share;
- Shamir with a 32-byte secret for n = 100 and 1000, t = n // 2 + 1: split,
  Lagrange coefficients for t holders, and reconstruct_many per secret.

Each figure is the median over repeats of ``time.perf_counter`` around a batch
of calls. Results go to ``benchmarks/results/primitives.json`` and ``.md``.

    .venv/bin/python benchmarks/bench_primitives.py              # about half a minute
    .venv/bin/python benchmarks/bench_primitives.py --repeat 31  # steadier medians
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core's figures: numpy's BLAS (Shamir's matrix product) on one thread

import cryptography  # noqa: E402
import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from masking_driver import cpu_description  # noqa: E402  (this directory is on sys.path)
from secagg.primitives import aead, shamir
from secagg.primitives.key_agreement import agree, agree_many, generate_keypair
from secagg.primitives.prg import prg_backend, prg_ring, prg_ring_add_into
from secagg.encoding.fixed_point import FixedPoint
from secagg.primitives.randomness import DeterministicRandom, SystemRandom

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (100_000, 1_000_000)
PRG_GOAL = 0.8


def measure(fn: Callable[[], Any], repeat: int, budget: float = 0.02) -> dict[str, float]:
    """Median seconds per call of ``fn``: calls are batched so that one batch
    takes about ``budget`` seconds; ``repeat`` batches, after one warm-up."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(budget / one))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "calls_per_sample": number,
            "samples": repeat}


def machine_info() -> dict[str, Any]:
    cpu, flags = cpu_description()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cryptography": cryptography.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_flags": flags,
        "prg_backend": prg_backend(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
    }


def measure_paired(fns: dict[str, Callable[[], Any]], repeat: int, budget: float = 0.005
                   ) -> tuple[dict[str, dict[str, float]], list[dict[str, float]]]:
    """Like :func:`measure` for several functions, their batches interleaved
    (A B C A B C ...) so that each round of samples sees the same machine load:
    ratios between them are then taken per round, which is robust on a busy
    machine. Returns per-function stats and the per-round samples."""
    numbers = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        numbers[name] = max(1, int(budget / max(time.perf_counter() - t0, 1e-7)))
    rounds = []
    for _ in range(repeat):
        row = {}
        for name, fn in fns.items():
            number = numbers[name]
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            row[name] = (time.perf_counter() - t0) / number
        rounds.append(row)
    stats = {name: {"median_s": statistics.median(r[name] for r in rounds),
                    "min_s": min(r[name] for r in rounds),
                    "calls_per_sample": numbers[name], "samples": repeat} for name in fns}
    return stats, rounds


RAW_AES = "raw AES-256-CTR, update_into reused buffer"
RAW_GCM = "raw AES-256-GCM of zeros (a counter-mode keystream), update_into reused buffer"
RAW_CHACHA = "raw ChaCha20, update_into reused buffer"
RAW_FRESH = "raw AES-256-CTR, update() fresh buffer"
RAW_PLUS_ADD = "raw AES-256 keystream (the PRG's backend) reused buffer + numpy add"
OURS_RING = "prg_ring (fresh vector)"
OURS_ADD = "prg_ring_add_into (keystream + add)"


def bench_keystreams_and_prg(repeat: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    keystream, ours = [], []
    seed = bytes(range(32))
    iv = bytes(16)
    for d in SIZES:
        nbytes = 4 * d
        # The plaintext is an all-zero buffer that is never written (so its pages
        # all map the kernel's zero page, as the PRG's own cached zero buffer
        # does); the output is one reused buffer. Same layout for every candidate.
        zeros = memoryview(np.zeros(nbytes, dtype=np.uint8))
        out_array = np.empty(nbytes + 16, dtype=np.uint8)
        out = memoryview(out_array)
        acc = np.zeros(d, dtype=np.uint32)

        def aes_ctr() -> None:
            enc = Cipher(algorithms.AES(seed), modes.CTR(iv)).encryptor()
            enc.update_into(zeros, out)

        def aes_gcm() -> None:
            enc = Cipher(algorithms.AES(seed), modes.GCM(iv[:12])).encryptor()
            enc.update_into(zeros, out)

        raw_backend = aes_gcm if prg_backend() == "gcm" else aes_ctr

        def chacha20() -> None:
            enc = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
            enc.update_into(zeros, out)

        def aes_ctr_fresh_buffer() -> None:
            Cipher(algorithms.AES(seed), modes.CTR(iv)).encryptor().update(zeros)

        raw_acc = np.zeros(d, dtype=np.uint32)
        stream = out_array[:nbytes].view(np.uint32)

        def aes_ctr_plus_add() -> None:
            raw_backend()
            np.add(raw_acc, stream, out=raw_acc)

        fns = {
            RAW_AES: aes_ctr,
            RAW_GCM: aes_gcm,
            RAW_CHACHA: chacha20,
            RAW_FRESH: aes_ctr_fresh_buffer,
            RAW_PLUS_ADD: aes_ctr_plus_add,
            OURS_RING: lambda: prg_ring(seed, b"mask/1/2", d),
            OURS_ADD: lambda: prg_ring_add_into(acc, seed, b"mask/1/2"),
        }
        stats, rounds = measure_paired(fns, repeat)
        for name, m in stats.items():
            row = {"operation": name, "words": d, **m, "gb_per_s": nbytes / m["median_s"] / 1e9}
            if name in (OURS_RING, OURS_ADD):
                # per round: raw time / our time, then the median over rounds
                row["ratio_to_raw"] = statistics.median(r[RAW_AES] / r[name] for r in rounds)
                # best case against best case: robust when the machine is busy
                row["ratio_to_raw_of_mins"] = stats[RAW_AES]["min_s"] / m["min_s"]
                # against the faster raw AES keystream of the round (CTR or GCM code)
                row["ratio_to_best_raw"] = statistics.median(min(r[RAW_AES], r[RAW_GCM]) / r[name] for r in rounds)
                row["ratio_to_best_raw_of_mins"] = min(stats[RAW_AES]["min_s"], stats[RAW_GCM]["min_s"]) / m["min_s"]
                if name == OURS_ADD:  # the same work done by hand: keystream then add
                    row["ratio_to_raw_plus_add"] = statistics.median(r[RAW_PLUS_ADD] / r[name] for r in rounds)
                    row["ratio_to_raw_plus_add_of_mins"] = stats[RAW_PLUS_ADD]["min_s"] / m["min_s"]
                ours.append(row)
            else:
                keystream.append(row)
    return keystream, ours


def bench_numpy_add(repeat: int) -> list[dict[str, Any]]:
    d = 1_000_000
    a = np.arange(d, dtype=np.uint32)
    b = np.full(d, 7, dtype=np.uint32)
    m = measure(lambda: np.add(a, b, out=a), repeat)
    return [{"operation": "numpy uint32 add (in place)", "words": d, **m}]


def bench_small(repeat: int) -> list[dict[str, Any]]:
    rng = DeterministicRandom(b"bench")
    me, peer = generate_keypair(rng), generate_keypair(rng)
    key = rng.bytes(32)
    share = rng.bytes(100)
    ad = rng.bytes(32) + b"/1/2"
    box = aead.encrypt(key, share, ad)
    loaded = X25519PrivateKey.from_private_bytes(me.private)
    peer_key = X25519PublicKey.from_public_bytes(peer.public)
    peers = [generate_keypair(rng).public for _ in range(100)]
    fixed = FixedPoint(clip=1.0, frac_bits=16, max_weight=1.0)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, 100_000)
    many = measure(lambda: agree_many(me.private, peers), repeat)
    return [
        {"operation": "X25519 exchange, raw (private key loaded once)",
         **measure(lambda: loaded.exchange(peer_key), repeat)},
        {"operation": "X25519 agree (loads the private key: two scalar mults)",
         **measure(lambda: agree(me.private, peer.public), repeat)},
        {"operation": "X25519 agree_many, 100 peers (per peer)",
         **{k: (v / 100 if k.endswith("_s") else v) for k, v in many.items()}},
        {"operation": "AEAD encrypt, 100-byte share", **measure(lambda: aead.encrypt(key, share, ad), repeat)},
        {"operation": "AEAD decrypt, 100-byte share", **measure(lambda: aead.decrypt(key, box, ad), repeat)},
        # the randomness of stochastic rounding for 100K entries (8 bytes each)
        {"operation": "os.urandom, 800 KB (100K entries' rounding)",
         **measure(lambda: os.urandom(800_000), repeat)},
        {"operation": "SystemRandom().bytes, 800 KB (ChaCha20 under a fresh os.urandom key)",
         **measure(lambda: SystemRandom().bytes(800_000), repeat)},
        {"operation": "FixedPoint.quantize, 100K entries, SystemRandom",
         **measure(lambda: fixed.quantize(x, 1.0, SystemRandom()), repeat)},
    ]


def bench_shamir(repeat: int) -> list[dict[str, Any]]:
    rows = []
    rng = DeterministicRandom(b"shamir")
    for n in (100, 1000):
        t = n // 2 + 1
        secret = rng.bytes(32)
        xs = list(range(1, n + 1))
        m = measure(lambda: shamir.split(secret, t, xs, rng), repeat)
        rows.append({"operation": "Shamir split (32 B secret to n points)", "n": n, "t": t, **m})
        m = measure(lambda: shamir.split_many([secret, secret[::-1]], t, xs, rng), repeat)
        rows.append({"operation": "Shamir split_many (two 32 B secrets: a client's ShareKeys)", "n": n, "t": t, **m})
        # the two evaluation paths of split_many's polynomials (18 chunk polynomials), same inputs
        coef = shamir.uniform_mod(rng, t * 2 * shamir.chunks_for(32), shamir.M31.prime).reshape(t, -1)
        pts = np.array(xs, dtype=np.uint64)
        m = measure(lambda: shamir._evaluate_horner(coef, pts, shamir.M31), repeat)
        rows.append({"operation": "Shamir evaluate, 18 polynomials: Horner", "n": n, "t": t, **m})
        m = measure(lambda: shamir._evaluate_matmul(coef, pts, shamir.M31), repeat)
        rows.append({"operation": "Shamir evaluate, 18 polynomials: exact float64 matrix product", "n": n, "t": t,
                     **m})

        holders = list(range(2, t + 2))
        m = measure(lambda: shamir.lagrange_at_zero(holders), repeat)
        rows.append({"operation": "Shamir lagrange_at_zero (t holders)", "n": n, "t": t, **m})

        # The server recovers many secrets from one holder set. Timing does not
        # depend on the values, so one valid share set stands for every secret.
        secrets_count = n  # about one secret per client
        valid = shamir.split(secret, t, holders, rng)  # shares at the holders only
        shares = np.ascontiguousarray(np.broadcast_to(valid, (secrets_count, *valid.shape)))
        coeffs = shamir.lagrange_at_zero(holders)
        assert shamir.reconstruct_many(coeffs, shares[:2], 32) == [secret, secret]
        m = measure(lambda: shamir.reconstruct_many(coeffs, shares, 32), repeat)
        rows.append({"operation": f"Shamir reconstruct_many, {secrets_count} secrets (per secret)",
                     "n": n, "t": t, **{k: (v / secrets_count if k.endswith("_s") else v) for k, v in m.items()}})

        one = shares[:1]
        m = measure(lambda: shamir.reconstruct_many(coeffs, one, 32), repeat)
        rows.append({"operation": "Shamir reconstruct_many, 1 secret", "n": n, "t": t, **m})

        m = measure(lambda: shamir.reconstruct(holders, shares[0], t), repeat)
        rows.append({"operation": "Shamir reconstruct (lagrange + 1 secret)", "n": n, "t": t, **m})
    return rows


def fmt_time(seconds: float) -> str:
    if seconds >= 1e-1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.2f} µs"


def to_markdown(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        "# Primitive benchmarks",
        "",
        f"Generated by `benchmarks/bench_primitives.py` on {result['date']} "
        f"(median of {result['repeat']} samples, {result['prg_repeat']} interleaved rounds for the "
        f"keystream table; each sample a batch of calls).",
        "",
        f"Machine: {info['cpu']}, {info['cpus_usable']} usable of {info['cpu_count']} CPUs, {info['platform']}; "
        f"Python {info['python']}, numpy {info['numpy']}, cryptography {info['cryptography']}.",
        "",
        f"Load: 1-minute load average {result['load_average_before'][0]:.2f} before, "
        f"{result['load_average_after'][0]:.2f} after; the run got {100 * result['cpu_share']:.0f} % of a CPU "
        f"(below ~95 % the machine was busy and the medians are inflated; the ratios, from interleaved "
        f"samples, hold up better).",
        "",
        "## Keystreams and the mask PRG",
        "",
        f"The PRG's backend in this run: OpenSSL's {result['machine'].get('prg_backend', 'ctr').upper()} code "
        f"(`prg.prg_backend()`, timed once per process; CPU flags: {' '.join(info.get('cpu_flags') or []) or 'not read'}).",
        "",
        "| operation | words (uint32) | median | min | throughput (median) | vs raw AES-CTR "
        "| vs faster raw AES | vs raw AES + add |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["keystream"] + result["prg"]:
        ratio = f"{r['ratio_to_raw']:.2f} ({r['ratio_to_raw_of_mins']:.2f})" if "ratio_to_raw" in r else ""
        best = (f"{r['ratio_to_best_raw']:.2f} ({r['ratio_to_best_raw_of_mins']:.2f})"
                if "ratio_to_best_raw" in r else "")
        ratio_add = (f"{r['ratio_to_raw_plus_add']:.2f} ({r['ratio_to_raw_plus_add_of_mins']:.2f})"
                     if "ratio_to_raw_plus_add" in r else "")
        lines.append(f"| {r['operation']} | {r['words']:,} | {fmt_time(r['median_s'])} | {fmt_time(r['min_s'])} | "
                     f"{r['gb_per_s']:.2f} GB/s | {ratio} | {best} | {ratio_add} |")
    lines += [
        "",
        "Ratios are raw time / our time, taken per round of interleaved samples, median over rounds "
        "(1.0 = as fast as the raw keystream); in parentheses the ratio of the two minimum times. "
        "`prg_ring_add_into` also does the modular add, so its like-for-like baseline is the last column.",
        "",
        f"PRG goal: >= {PRG_GOAL} of the faster raw AES-256 keystream (CTR or GCM code) for `prg_ring`, and for "
        f"`prg_ring_add_into` against the same work done by hand (keystream + add). "
        f"Met on the per-round medians: {'yes' if result['prg_goal_met'] else 'NO'}; "
        f"on the minima: {'yes' if result['prg_goal_met_on_minima'] else 'NO'} "
        f"(on a busy machine the minima are the better estimate of the undisturbed cost).",
        "",
        "## Other primitives",
        "",
        "| operation | size | median | min |",
        "| --- | --- | ---: | ---: |",
    ]
    for r in result["numpy"]:
        lines.append(f"| {r['operation']} | {r['words']:,} words | {fmt_time(r['median_s'])} "
                     f"| {fmt_time(r['min_s'])} |")
    for r in result["small"]:
        lines.append(f"| {r['operation']} | | {fmt_time(r['median_s'])} | {fmt_time(r['min_s'])} |")
    for r in result["shamir"]:
        lines.append(f"| {r['operation']} | n={r['n']}, t={r['t']} | {fmt_time(r['median_s'])} "
                     f"| {fmt_time(r['min_s'])} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15, help="samples per figure (median taken)")
    ap.add_argument("--prg-repeat", type=int, default=61,
                    help="rounds of interleaved keystream/PRG samples (short batches: many rounds)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for primitives.json/.md")
    args = ap.parse_args()

    load_before = os.getloadavg()
    t0, cpu0 = time.perf_counter(), time.process_time()
    keystream, prg_rows = bench_keystreams_and_prg(args.prg_repeat)
    result: dict[str, Any] = {
        "benchmark": "primitives",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "repeat": args.repeat,
        "prg_repeat": args.prg_repeat,
        "machine": machine_info(),
        "keystream": keystream,
        "prg": prg_rows,
        "prg_goal": PRG_GOAL,
        "prg_goal_met": all(r.get("ratio_to_raw_plus_add", r["ratio_to_best_raw"]) >= PRG_GOAL for r in prg_rows),
        "prg_goal_met_on_minima": all(r.get("ratio_to_raw_plus_add_of_mins", r["ratio_to_best_raw_of_mins"]) >= PRG_GOAL
                                      for r in prg_rows),
        "numpy": bench_numpy_add(args.repeat),
        "small": bench_small(args.repeat),
        "shamir": bench_shamir(args.repeat),
    }
    result["total_seconds"] = time.perf_counter() - t0
    # A busy machine shows as a CPU share well below 1 (the process waited for a
    # core) and a load average above the core count: read the figures with that.
    result["cpu_share"] = (time.process_time() - cpu0) / result["total_seconds"]
    result["load_average_before"] = list(load_before)
    result["load_average_after"] = list(os.getloadavg())

    md = to_markdown(result)
    print(md)
    print(f"(total {result['total_seconds']:.1f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "primitives.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "primitives.md").write_text(md)
    print(f"wrote {args.out / 'primitives.json'} and {args.out / 'primitives.md'}")


if __name__ == "__main__":
    main()
