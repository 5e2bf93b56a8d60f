"""Generate the distributed-DP test vectors (protocols/dp/vectors/*.json).

    python protocols/dp/vectors/generate.py          # rewrite the vectors
    python protocols/dp/vectors/generate.py --check  # exit 1 if a vector differs

Each vector is one noised round of three clients with a small dimension, from
fixed randomness (``DeterministicRandom(seed).fork("client-<i>")`` per client):
every client's intermediate values (rotated and scaled update, rounded vector,
rounding attempts, noise, wrapped ring vector), the ring sum, and the server's
decoded sum. Floats are written with ``float.hex`` (exact), integers as decimal.
tests/test_dp_vectors.py replays them bit for bit.
"""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from secagg.dp import pipeline as P
from secagg.primitives.randomness import DeterministicRandom

HERE = Path(__file__).resolve().parent

CONFIGS = {
    "dgauss_3_clients": dict(mechanism="dgauss", clip=1.0, bits=20, granularity=1 / 64, noise="300/7", n_min=3,
                             n_max=3, dim=5, rotation_seed="00" * 16 + "ff" * 16, seed="dp-vector-dgauss",
                             updates=[[0.5, -0.25, 0.125, 0.0, 0.75], [2.0, 1.0, -1.0, 0.5, 0.0],
                                      [-0.1, 0.2, -0.3, 0.4, -0.5]]),
    "skellam_3_clients": dict(mechanism="skellam", clip=1.0, bits=16, granularity=1 / 32, noise="45/2", n_min=2,
                              n_max=3, dim=6, rotation_seed="5a" * 32, seed="dp-vector-skellam",
                              updates=[[0.3, 0.3, 0.3, -0.3, -0.3, -0.3], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                                       [1.5, -2.5, 0.0, 0.0, 0.5, 0.0]]),
}


def params_of(config: dict) -> P.DPParams:
    return P.DPParams(config["mechanism"], clip=config["clip"], bits=config["bits"],
                      granularity=config["granularity"], noise=Fraction(config["noise"]), n_min=config["n_min"],
                      dim=config["dim"], rotation_seed=bytes.fromhex(config["rotation_seed"]), n_max=config["n_max"])


def run_vector(config: dict) -> dict:
    params = params_of(config)
    root = DeterministicRandom(config["seed"])
    clients = []
    for i, update in enumerate(config["updates"]):
        x = np.array(update, dtype=np.float64)
        # the steps of pipeline.encode, one at a time, from the same source in the same order
        rng = root.fork(f"client-{i}")
        clipped, was_clipped = P.clip_l2(x, params.clip)
        y = P.scale(P.rotate(clipped, params.rotation_seed), params.granularity)
        rounded, attempts = P.conditional_round(y, params.l2_sensitivity, rng, params.max_retries)
        noised = P.add_noise(rounded, params.mechanism, params.local_noise, rng)
        wrapped = P.wrap(noised, params.bits)
        whole = P.encode(x, params, root.fork(f"client-{i}"))
        assert np.array_equal(whole.values, wrapped) and whole.attempts == attempts
        clients.append({
            "clipped": was_clipped,
            "rotated_scaled": [float(v).hex() for v in y],
            "rounded": rounded.tolist(),
            "attempts": attempts,
            "noise": (noised - rounded).tolist(),
            "wrapped": [int(v) for v in wrapped],
        })
    total = P.ring_sum([np.array(c["wrapped"], dtype=np.uint64) for c in clients], params.bits)
    decoded = P.decode(total, params)
    return {"config": config, "clients": clients, "sum": [int(v) for v in total],
            "decoded": [float(v).hex() for v in decoded]}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, config in CONFIGS.items():
        path = HERE / f"{name}.json"
        text = json.dumps(run_vector(config), indent=1) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("out of date:", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
