"""What does distributed DP cost a client? The secagg.dp client pipeline at
d = 2^20 (about 1M) against the bare masking step it precedes.

Measures, for one client and one update of d = 2^20 float64 values:

- each step of ``secagg.dp.pipeline``: L2 clip, rotation (random signs from the
  public seed and the normalised Walsh-Hadamard transform), scaling,
  conditional stochastic rounding, the local noise share (exact discrete
  Gaussian, or exact Skellam), the wrap into Z_{2^b}; and ``encode`` whole;
- the server's ``decode`` (unwrap, unscale, inverse rotation);
- the bare masking step: one ``prg_ring_add_into`` of d uint32 words (the AES
  keystream expansion of one mask seed added into the vector; a masking
  client does this once per neighbour plus once for its self mask).

Parameters: C = 1, b = 20 bits, granularity 2^-11, n_min = 100, n_max = 200,
noise calibrated for epsilon = 3, delta = 1e-5 over 100 rounds
(``calibrate_noise``): each client's share has variance about 1e7.

Each figure is the median of ``--repeat`` runs (``time.perf_counter``). The
table goes to ``benchmarks/results/dp_pipeline.md``.

    .venv/bin/python benchmarks/bench_dp.py              # about a minute
    .venv/bin/python benchmarks/bench_dp.py --repeat 7
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from secagg.dp import accounting, pipeline as P  # noqa: E402
from secagg.primitives.prg import prg_ring_add_into  # noqa: E402
from secagg.primitives.randomness import DeterministicRandom  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 1 << 20


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _params(mechanism: str) -> P.DPParams:
    granularity = 2.0 ** -11
    c = 1.0 / granularity
    l2 = P.rounding_bound(c, DIM, math.exp(-0.5))
    l1 = min(l2 * l2, math.sqrt(DIM) * l2)
    noise = accounting.calibrate_noise(mechanism, 3.0, 1e-5, rounds=100, n_min=100, l2_sensitivity=l2,
                                       l1_sensitivity=l1, dim=DIM)
    return P.DPParams(mechanism, clip=1.0, bits=20, granularity=granularity, noise=noise, n_min=100, dim=DIM,
                      rotation_seed=bytes(range(32)), n_max=200)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = DeterministicRandom("bench-dp")
    x = np.random.default_rng(0).normal(size=DIM)
    rows: list[tuple[str, float, float]] = []  # (step, dgauss seconds, skellam seconds)

    params = {m: _params(m) for m in P.MECHANISMS}
    pd = params["dgauss"]
    clipped, _ = P.clip_l2(x, pd.clip)
    rotated = P.rotate(clipped, pd.rotation_seed)
    scaled = P.scale(rotated, pd.granularity)
    rounded, _ = P.conditional_round(scaled, pd.l2_sensitivity, rng)
    shared = {
        "L2 clip": _median(lambda: P.clip_l2(x, pd.clip), args.repeat),
        "rotation (signs + fast WHT)": _median(lambda: P.rotate(clipped, pd.rotation_seed), args.repeat),
        "scale": _median(lambda: P.scale(rotated, pd.granularity), args.repeat),
        "conditional rounding": _median(lambda: P.conditional_round(scaled, pd.l2_sensitivity, rng), args.repeat),
    }
    for name, secs in shared.items():
        rows.append((name, secs, secs))
    noise = {m: _median(lambda m=m: P.add_noise(rounded, m, params[m].local_noise, rng), args.repeat)
             for m in P.MECHANISMS}
    rows.append(("local noise share (exact)", noise["dgauss"], noise["skellam"]))
    noised = P.add_noise(rounded, "dgauss", pd.local_noise, rng)
    wrap = _median(lambda: P.wrap(noised, pd.bits), args.repeat)
    rows.append(("wrap into Z_2^b", wrap, wrap))
    whole = {m: _median(lambda m=m: P.encode(x, params[m], rng), args.repeat) for m in P.MECHANISMS}
    rows.append(("**client encode, whole**", whole["dgauss"], whole["skellam"]))
    total = P.wrap(noised, pd.bits)
    dec = _median(lambda: P.decode(total, pd), args.repeat)
    rows.append(("server decode", dec, dec))

    acc = np.zeros(DIM, dtype=np.uint32)
    seed = bytes(32)
    mask = _median(lambda: prg_ring_add_into(acc, seed, "bench"), max(args.repeat, 5))

    lines = [
        "# Distributed DP: client pipeline cost at d = 2^20",
        "",
        f"Host: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}. Median of {args.repeat} runs, one thread.",
        "",
        f"Parameters: C = 1, b = 20, granularity 2^-11, n_min = 100, n_max = 200; noise for "
        f"epsilon = 3, delta = 1e-5, 100 rounds: each client adds variance {float(pd.local_noise):.4g} "
        f"(sigma {math.sqrt(float(pd.local_noise)):.0f}) in integer units.",
        "",
        "| step | discrete Gaussian (s) | Skellam (s) |",
        "|---|---:|---:|",
    ]
    for name, a, b in rows:
        lines.append(f"| {name} | {a:.3f} | {b:.3f} |")
    lines += [
        "",
        f"Bare masking step for comparison: one `prg_ring_add_into` of 2^20 uint32 words (one mask "
        f"seed's AES keystream added into the vector): **{mask * 1000:.2f} ms**. A masking client does it "
        f"once per neighbour plus once for its self mask.",
        "",
        f"Ratio, whole DP encode / one mask expansion: discrete Gaussian {whole['dgauss'] / mask:.0f}x, "
        f"Skellam {whole['skellam'] / mask:.0f}x.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dp_pipeline.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
