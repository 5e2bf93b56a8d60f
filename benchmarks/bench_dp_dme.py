"""Distributed mean estimation (DME): the experiment of Kairouz, Liu, Steinke
(ICML 2021, distributed discrete Gaussian) and Agarwal, Kairouz, Liu (NeurIPS
2021, Skellam) on secagg.dp.

n clients each hold a vector of dimension d = 2^16 drawn uniformly on the
sphere of radius C = 1 (as in the papers); the server estimates their mean
under (epsilon, delta = 1e-5)-DP for one release (one round). Measured: the
mean squared error ``|estimate - true mean|_2^2`` of

- **distributed DP**: every client runs ``secagg.dp.pipeline.encode`` (clip,
  random rotation, conditional rounding, its noise share, wrap into Z_2^b)
  with the parameters of ``secagg.dp.plan.DPConfig(epsilon, delta, rounds=1,
  mechanism, clip=1, bits).round_params(d, n_min=n)`` (the finest granularity
  whose sum fits ``bits``, noise calibrated for its sensitivity);
  ``ring_sum`` (what secure aggregation computes, exactly); ``decode``;
  divided by n. Discrete Gaussian and Skellam, bits in {12, 14, 16, 18, 20};
- **central DP**: the exact sum plus continuous Gaussian noise
  ``N(0, (z C)^2 I)`` at a trusted server, ``z`` the smallest noise multiplier
  with ``accounting.continuous_gaussian_epsilon(z, 1, delta) <= epsilon``; its
  MSE is also given in closed form, ``d (z C / n)^2``.

n = 100 (epsilon in {1, 3, 10}, ``--reps`` repetitions, default 3, each with
fresh vectors, rotation seed and noise) and n = 1000 (epsilon = 3 only, one
repetition, discrete Gaussian only: a thousand clients' encodes of 2^16 values
per cell keep the run to minutes). A cell whose parameters do not fit its bits
(``DPConfig`` refuses them) is reported as such.

    .venv/bin/python benchmarks/bench_dp_dme.py          # several minutes
    .venv/bin/python benchmarks/bench_dp_dme.py --reps 1 --skip-1000

Writes benchmarks/results/dp_dme.md, .json and dp_dme.png.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from secagg.dp import accounting, pipeline as P  # noqa: E402
from secagg.dp.plan import DPConfig  # noqa: E402
from secagg.errors import ParameterError  # noqa: E402
from secagg.primitives.randomness import DeterministicRandom  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 1 << 16
DELTA = 1e-5
BITS = (12, 14, 16, 18, 20)


def central_multiplier(epsilon: float) -> float:
    lo, hi = 0.1, 1.0
    while accounting.continuous_gaussian_epsilon(hi, 1, DELTA) > epsilon:
        lo, hi = hi, hi * 2
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        if accounting.continuous_gaussian_epsilon(mid, 1, DELTA) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def sphere(gen: np.random.Generator, n: int) -> np.ndarray:
    x = gen.normal(size=(n, DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def distributed_mse(x: np.ndarray, config: DPConfig, seed: str) -> tuple[float, P.DPParams]:
    n = x.shape[0]
    root = DeterministicRandom(seed)
    params = config.round_params(DIM, n_min=n, n_max=n, rotation_seed=root.fork("rotation").bytes(32)).pipeline
    vectors = [P.encode(x[i], params, root.fork(f"client-{i}")).values for i in range(n)]
    estimate = P.decode(P.ring_sum(vectors, params.bits), params) / n
    return float(np.sum((estimate - x.mean(axis=0)) ** 2)), params


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-1000", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    load_before = [round(v, 2) for v in os.getloadavg()]
    plan = [(100, eps, mech, args.reps) for eps in (1.0, 3.0, 10.0) for mech in ("dgauss", "skellam")]
    if not args.skip_1000:
        plan.append((1000, 3.0, "dgauss", 1))
    z = {eps: central_multiplier(eps) for eps in {p[1] for p in plan}}
    results: list[dict[str, Any]] = []
    for n, eps, mech, reps in plan:
        central_closed = DIM * (z[eps] / n) ** 2
        central_sim = []
        for rep in range(reps):
            gen = np.random.default_rng([n, rep])
            x = sphere(gen, n)
            noisy = x.sum(axis=0) + gen.normal(0.0, z[eps], DIM)
            central_sim.append(float(np.sum((noisy / n - x.mean(axis=0)) ** 2)))
        for bits in BITS:
            config = DPConfig(epsilon=eps, delta=DELTA, rounds=1, mechanism=mech, clip=1.0, bits=bits)
            row: dict[str, Any] = {"n": n, "epsilon": eps, "mechanism": mech, "bits": bits, "reps": reps,
                                   "central_mse_closed": central_closed, "central_mse_sim": central_sim,
                                   "central_noise_multiplier": z[eps]}
            try:
                mses, params = [], None
                for rep in range(reps):
                    x = sphere(np.random.default_rng([n, rep]), n)  # the same vectors as the central run
                    mse, params = distributed_mse(x, config, f"dme-{n}-{eps}-{mech}-{bits}-{rep}")
                    mses.append(mse)
                assert params is not None
                row.update(mse=mses, granularity=params.granularity, local_noise=float(params.local_noise))
                print(f"n={n} eps={eps:g} {mech} b={bits}: MSE {np.mean(mses):.4g} vs central "
                      f"{central_closed:.4g} (x{np.mean(mses) / central_closed:.2f}), granularity "
                      f"{params.granularity:.3g}", flush=True)
            except ParameterError as exc:
                row.update(mse=None, refused=str(exc))
                print(f"n={n} eps={eps:g} {mech} b={bits}: refused ({exc})", flush=True)
            results.append(row)
    elapsed = time.perf_counter() - t0
    load_after = [round(v, 2) for v in os.getloadavg()]
    write(results, z, load_before, load_after, elapsed, args)
    return 0


def write(results: list[dict[str, Any]], z: dict[float, float], load_before: list[float], load_after: list[float],
          elapsed: float, args: argparse.Namespace) -> None:
    host = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "load_before": load_before, "load_after": load_after,
            "elapsed_s": round(elapsed, 1)}
    lines = [
        "# Distributed mean estimation: MSE against bits, distributed vs central DP",
        "",
        f"d = 2^16, vectors uniform on the unit sphere (C = 1), one release at (epsilon, delta = {DELTA}). "
        "Distributed: `secagg.dp` encode per client + ring sum + decode, parameters from "
        "`DPConfig.round_params` (rounds = 1); central: continuous Gaussian on the exact sum. MSE = "
        "|estimate - mean|_2^2, mean over the repetitions; the ratio is distributed / central (closed form "
        "d (z/n)^2; the simulated central MSE is in the JSON).",
        "",
        f"Host: {host['machine']}, {host['cpu_count']} cores, Python {host['python']}, numpy {host['numpy']}; "
        f"load average {load_before} before, {load_after} after; {elapsed:.0f} s.",
        "",
        "| n | epsilon | mechanism | reps | central MSE | " + " | ".join(f"{b} bits" for b in BITS) + " |",
        "|---:|---:|---|---:|---:|" + "---:|" * len(BITS),
    ]
    keys = list(dict.fromkeys((r["n"], r["epsilon"], r["mechanism"]) for r in results))
    for n, eps, mech in keys:
        rows = [r for r in results if (r["n"], r["epsilon"], r["mechanism"]) == (n, eps, mech)]
        c = rows[0]["central_mse_closed"]
        cells = []
        for r in rows:
            if r["mse"] is None:
                cells.append("does not fit")
            else:
                m = float(np.mean(r["mse"]))
                cells.append(f"{m:.3g} (x{m / c:.2f})")
        lines.append(f"| {n} | {eps:g} | {mech} | {rows[0]['reps']} | {c:.3g} | " + " | ".join(cells) + " |")
    lines += ["", "Central noise multipliers (one release): "
              + ", ".join(f"epsilon {e:g}: {v:.3f}" for e, v in sorted(z.items())) + ".", ""]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dp_dme.md").write_text(text)
    (RESULTS / "dp_dme.json").write_text(json.dumps(
        {"host": host, "args": vars(args), "dim": DIM, "delta": DELTA, "central_noise_multiplier": z,
         "results": results}, indent=2))
    plot(results)


def plot(results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted({r["n"] for r in results})
    fig, axes = plt.subplots(1, len(ns), figsize=(6 * len(ns), 4.5), squeeze=False)
    for ax, n in zip(axes[0], ns):
        for eps in sorted({r["epsilon"] for r in results if r["n"] == n}):
            color = None
            for mech, style in (("dgauss", "-o"), ("skellam", "--s")):
                rows = [r for r in results if (r["n"], r["epsilon"], r["mechanism"]) == (n, eps, mech)]
                pts = [(r["bits"], float(np.mean(r["mse"]))) for r in rows if r["mse"] is not None]
                if pts:
                    b, m = zip(*pts)
                    line, = ax.plot(b, m, style, color=color, label=f"{mech}, eps {eps:g}")
                    color = line.get_color()
            c = next(r["central_mse_closed"] for r in results if r["n"] == n and r["epsilon"] == eps)
            ax.axhline(c, color=color, linestyle=":", label=f"central, eps {eps:g}")
        ax.set_yscale("log")
        ax.set_xticks(list(BITS))
        ax.set_xlabel("bits per coordinate")
        ax.set_ylabel("MSE of the mean")
        ax.set_title(f"n = {n}, d = 2^16")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "dp_dme.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
