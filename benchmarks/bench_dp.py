"""What does distributed DP cost a client? The secagg.dp client pipeline at
d = 2^20 (about 1M) against the client's masking step, in one run.

Goal (product requirements): the DP client overhead at d = 1M (rotation +
rounding + noise) at most 1x the masking step itself (it must not double the
client's time).

Measured in this one process, for one client and one update of d = 2^20
float64 values, each figure the median of ``--repeat`` runs, CPU time
(``time.process_time``: robust on a shared machine, time spent waiting for a
core is not counted; one thread: BLAS pools limited to 1, process pinned to
one core) and wall time (``time.perf_counter``):

- the pipeline steps, **before / after** side by side:
  - rotation: ``pipeline.rotate`` (signs + the reference butterflies) vs the
    same signs + ``secagg.dp.transform.fwht``;
  - conditional rounding: ``pipeline.conditional_round`` (uniforms from the
    RandomSource's bytes) vs ``transform.conditional_round`` (from an AES-CTR
    keystream keyed from the RandomSource);
  - the noise share, exact: the sampler before this change (loaded from git,
    commit ``BASELINE_COMMIT``: every Bernoulli trial on arrays for the
    discrete Gaussian, binary-search Poisson) vs ``secagg.dp.samplers`` now
    (tabulated rejection);
  - the whole client encode: clip, rotate, scale, round, noise, wrap, composed
    from the "before" steps and from the "after" steps;
- the client's **masking step** for a round: its self mask plus, per
  neighbour, the X25519 exchange (``agree_many``), the KDF
  (``pairwise_mask_seed``) and the keystream added into the vector
  (``prg_ring_add_many_into``), i.e. what ``MaskingClient.masked_input`` and
  its key agreement compute for the vector (benchmarks/masking_driver.py's
  ``masking_step``, checked there against a real client), for SecAgg at
  n = 100 (99 neighbours) and SecAgg+ at n = 1000 (the degree
  ``derive_secagg_plus`` gives, 116 at 20 % dropout tolerance);
- the ratio DP overhead / masking step.

Parameters: C = 1, b = 20 bits, granularity 2^-11, n_min = 100, n_max = 200,
noise calibrated for epsilon = 3, delta = 1e-5 over 100 rounds
(``calibrate_noise``): each client's share has variance about 1e7.

    .venv/bin/python benchmarks/bench_dp.py              # a few minutes
    .venv/bin/python benchmarks/bench_dp.py --repeat 7

Writes benchmarks/results/dp_pipeline.md and .json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

from secagg.dp import accounting, pipeline as P, samplers, transform as T  # noqa: E402
from secagg.primitives.key_agreement import agree_many, generate_keypair  # noqa: E402
from secagg.primitives.prg import prg_ring_add_into, prg_ring_add_many_into  # noqa: E402
from secagg.primitives.randomness import DeterministicRandom  # noqa: E402
from secagg.protocols.masking import _crypto  # noqa: E402
from secagg.protocols.masking.graph import derive_secagg_plus  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent
DIM = 1 << 20
#: the samplers before the tabulated rejection (the "before" column)
BASELINE_COMMIT = "d666634"


def load_baseline_samplers() -> ModuleType | None:
    """``secagg/dp/samplers.py`` as of :data:`BASELINE_COMMIT`, imported as a
    module of the installed package (its relative imports resolve to it)."""
    try:
        src = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:secagg/dp/samplers.py"], cwd=ROOT,
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(tempfile.mkdtemp()) / "samplers_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("secagg.dp._samplers_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Timer:
    def __init__(self, repeat: int):
        self.repeat = repeat

    def __call__(self, fn: Callable[[], object]) -> dict[str, float]:
        cpu, wall = [], []
        for _ in range(self.repeat):
            c, w = time.process_time(), time.perf_counter()
            fn()
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall)}


def make_params(mechanism: str) -> P.DPParams:
    granularity = 2.0 ** -11
    c = 1.0 / granularity
    l2 = P.rounding_bound(c, DIM, math.exp(-0.5))
    l1 = min(l2 * l2, math.sqrt(DIM) * l2)
    noise = accounting.calibrate_noise(mechanism, 3.0, 1e-5, rounds=100, n_min=100, l2_sensitivity=l2,
                                       l1_sensitivity=l1, dim=DIM)
    return P.DPParams(mechanism, clip=1.0, bits=20, granularity=granularity, noise=noise, n_min=100, dim=DIM,
                      rotation_seed=bytes(range(32)), n_max=200)


def rotate_new(x: np.ndarray, seed: bytes) -> np.ndarray:
    n = P.padded_dim(x.size)
    padded = np.zeros(n)
    padded[:x.size] = x
    return T.fwht(padded * P.rotation_signs(seed, n))


def noise_with(module: Any, q: np.ndarray, mechanism: str, share: Any, rng: Any) -> np.ndarray:
    draw = module.discrete_gaussian if mechanism == "dgauss" else module.skellam
    return q + draw(share, q.size, rng)


def encode_with(x: np.ndarray, params: P.DPParams, rng: Any, *, new: bool, sampler: Any) -> np.ndarray:
    clipped, _ = P.clip_l2(x, params.clip)
    rotated = rotate_new(clipped, params.rotation_seed) if new else P.rotate(clipped, params.rotation_seed)
    y = P.scale(rotated, params.granularity)
    rounding = T.conditional_round if new else P.conditional_round
    q, _ = rounding(y, params.l2_sensitivity, rng, params.max_retries)
    return P.wrap(noise_with(sampler, q, params.mechanism, params.local_noise, rng), params.bits)


def masking_step(acc: np.ndarray, peers: int, own: Any, publics: list[bytes], session: bytes) -> None:
    """A client's mask for the vector: self mask, then per neighbour X25519 + KDF + keystream."""
    u = 0
    prg_ring_add_into(acc, bytes(32), _crypto.SELF_MASK_TAG)
    shared = agree_many(own.private, publics[:peers])
    seeds = [_crypto.pairwise_mask_seed(s, session, u, v + 1, own.public, publics[v]) for v, s in enumerate(shared)]
    prg_ring_add_many_into(acc, seeds, _crypto.PAIR_MASK_TAG, [_crypto.mask_sign(u, v + 1) for v in range(peers)])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    timer = Timer(args.repeat)
    load_before = [round(v, 2) for v in os.getloadavg()]
    rng = DeterministicRandom("bench-dp")
    x = np.random.default_rng(0).normal(size=DIM)
    base = load_baseline_samplers()
    params = {m: make_params(m) for m in P.MECHANISMS}
    pd = params["dgauss"]
    for m in P.MECHANISMS:  # build (and cache) the sampler tables outside the timers; timed apart below
        samplers.discrete_gaussian(params[m].local_noise, 1, rng) if m == "dgauss" else \
            samplers.skellam(params[m].local_noise, 1, rng)
    setup = {}
    samplers._dgauss_rejection.cache_clear()
    samplers._poisson_rejection.cache_clear()
    samplers._poisson_plan.cache_clear()
    setup["dgauss"] = timer(lambda: (samplers._dgauss_rejection.cache_clear(),
                                     samplers._dgauss_rejection(pd.local_noise)))
    setup["skellam"] = timer(lambda: (samplers._poisson_rejection.cache_clear(), samplers._poisson_plan.cache_clear(),
                                      samplers._poisson_rejection(params["skellam"].local_noise / 2)))
    if base is not None:
        base.skellam(params["skellam"].local_noise, 1, rng)  # its Poisson tables, cached
    clipped, _ = P.clip_l2(x, pd.clip)
    rotated = P.rotate(clipped, pd.rotation_seed)
    scaled = P.scale(rotated, pd.granularity)
    rounded, _ = P.conditional_round(scaled, pd.l2_sensitivity, rng)
    assert np.allclose(rotate_new(clipped, pd.rotation_seed), rotated, atol=1e-12)

    rows: list[dict[str, Any]] = []

    def row(step: str, before: dict[str, float] | None, after: dict[str, float]) -> None:
        rows.append({"step": step, "before": before, "after": after})

    row("L2 clip", None, timer(lambda: P.clip_l2(x, pd.clip)))
    row("rotation (signs + Walsh-Hadamard)", timer(lambda: P.rotate(clipped, pd.rotation_seed)),
        timer(lambda: rotate_new(clipped, pd.rotation_seed)))
    row("  of which the transform alone", timer(lambda: P.fwht(rotated)), timer(lambda: T.fwht(rotated)))
    row("scale", None, timer(lambda: P.scale(rotated, pd.granularity)))
    row("conditional rounding", timer(lambda: P.conditional_round(scaled, pd.l2_sensitivity, rng)),
        timer(lambda: T.conditional_round(scaled, pd.l2_sensitivity, rng)))
    for m, label in (("dgauss", "noise share, discrete Gaussian (exact)"), ("skellam", "noise share, Skellam (exact)")):
        share = params[m].local_noise
        before = timer(lambda m=m, share=share: noise_with(base, rounded, m, share, rng)) if base else None
        row(label, before, timer(lambda m=m, share=share: noise_with(samplers, rounded, m, share, rng)))
    row("wrap into Z_2^b", None, timer(lambda: P.wrap(rounded, pd.bits)))
    whole: dict[str, dict[str, Any]] = {}
    for m in P.MECHANISMS:
        before = timer(lambda m=m: encode_with(x, params[m], rng, new=False, sampler=base)) if base else None
        after = timer(lambda m=m: encode_with(x, params[m], rng, new=True, sampler=samplers))
        whole[m] = {"before": before, "after": after}
        row(f"**client encode, whole ({m})**", before, after)
    total = P.wrap(rounded, pd.bits)
    row("server decode (pipeline)", None, timer(lambda: P.decode(total, pd)))
    # the new encode is the library's: same distribution; check it decodes to the update
    check = encode_with(x, pd, rng, new=True, sampler=samplers)
    err = P.decode(check, pd) - P.clip_l2(x, pd.clip)[0]
    noise_sd = pd.granularity * math.sqrt(float(pd.local_noise) + 0.25)
    assert abs(float(np.std(err)) / noise_sd - 1) < 0.05, (float(np.std(err)), noise_sd)

    # the masking step
    own = generate_keypair(rng)
    publics = [generate_keypair(rng).public for _ in range(200)]
    session = bytes(32)
    configs = [("SecAgg, n = 100 (complete graph)", 99),
               ("SecAgg+, n = 1000", derive_secagg_plus(1000, 0.2, 0.0)[0])]
    masks = []
    acc = np.zeros(DIM, dtype=np.uint32)
    for name, peers in configs:
        t = Timer(max(args.repeat, 3))(lambda peers=peers: masking_step(acc, peers, own, publics, session))
        masks.append({"round": name, "neighbours": peers, **t})
    load_after = [round(v, 2) for v in os.getloadavg()]

    # the DP overhead: rotation + rounding + noise (+ clip, scale, wrap), i.e. the whole encode
    def fmt(v: dict[str, float] | None, key: str) -> str:
        return "–" if v is None else f"{v[key]:.3f}"

    host = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(), "load_before": load_before,
            "load_after": load_after, "repeat": args.repeat,
            "pinned": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    lines = [
        "# Distributed DP: client pipeline cost at d = 2^20, against the masking step",
        "",
        f"Host: {host['machine']}, {host['cpu_count']} cores (pinned to one), Python {host['python']}, "
        f"numpy {host['numpy']}; one thread. Load average (1, 5, 15 min) {load_before} before, "
        f"{load_after} after: a shared machine, so compare within this run (ratios). Median of "
        f"{args.repeat} runs; CPU time (process_time), wall time in parentheses.",
        "",
        f"Parameters: C = 1, b = 20, granularity 2^-11, n_min = 100, n_max = 200; noise for "
        f"epsilon = 3, delta = 1e-5, 100 rounds: each client adds variance {float(pd.local_noise):.4g} "
        f"(sigma {math.sqrt(float(pd.local_noise)):.0f}) in integer units.",
        "",
        f"Before: `pipeline.rotate`, `pipeline.conditional_round`, samplers of commit {BASELINE_COMMIT}. "
        "After: `transform.fwht`, `transform.conditional_round`, `samplers` now (tabulated rejection).",
        "",
        "| step | before CPU s (wall) | after CPU s (wall) | speed-up (CPU) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        b, a = r["before"], r["after"]
        speed = f"{b['cpu_s'] / a['cpu_s']:.1f}x" if b and a["cpu_s"] > 0 else ""
        lines.append(f"| {r['step']} | {fmt(b, 'cpu_s')} ({fmt(b, 'wall_s')}) | {fmt(a, 'cpu_s')} "
                     f"({fmt(a, 'wall_s')}) | {speed} |")
    lines += [
        "",
        f"Sampler tables, built once per noise level and cached (not in the figures above): discrete Gaussian "
        f"{setup['dgauss']['cpu_s']:.3f} s, Skellam (Poisson at mu/2) {setup['skellam']['cpu_s']:.3f} s CPU.",
        "",
        "## DP overhead against the masking step",
        "",
        "Masking step: self mask + per neighbour X25519, KDF and keystream added into 2^20 uint32 words.",
        "",
        "| round | neighbours | masking step CPU s (wall) | DP encode / masking, dgauss before → after "
        "| Skellam before → after | goal ≤ 1x |",
        "|---|---:|---:|---:|---:|---|",
    ]
    ratios = []
    for mk in masks:
        cells = []
        met = []
        for m in P.MECHANISMS:
            b, a = whole[m]["before"], whole[m]["after"]
            rb = b["cpu_s"] / mk["cpu_s"] if b else None
            ra = a["cpu_s"] / mk["cpu_s"]
            ratios.append({"round": mk["round"], "mechanism": m, "before": rb, "after": ra})
            cells.append(f"{'–' if rb is None else f'{rb:.2f}x'} → **{ra:.2f}x**")
            met.append(f"{m}: {'met' if ra <= 1.0 else 'NOT met'}")
        lines.append(f"| {mk['round']} | {mk['neighbours']} | {mk['cpu_s']:.3f} ({mk['wall_s']:.3f}) | "
                     f"{cells[0]} | {cells[1]} | {', '.join(met)} |")
    lines += [
        "",
        "DP overhead = the whole client encode (clip, rotation, scaling, conditional rounding, noise, wrap) "
        "after this change, CPU time, over the masking step's CPU time, same run.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dp_pipeline.md").write_text(text)
    (RESULTS / "dp_pipeline.json").write_text(json.dumps(
        {"host": host, "dim": DIM, "local_noise": float(pd.local_noise), "baseline_commit": BASELINE_COMMIT,
         "steps": rows, "table_setup": setup, "masking": masks, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
