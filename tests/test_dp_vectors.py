"""Replay the distributed-DP test vectors (protocols/dp/vectors/*.json): a
noised round of three clients from fixed randomness, bit for bit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from secagg.dp import pipeline as P

VECTORS = Path(__file__).resolve().parent.parent / "protocols" / "dp" / "vectors"
PATHS = sorted(VECTORS.glob("*.json"))


def _generator():
    spec = importlib.util.spec_from_file_location("dp_vectors_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_is_a_vector_per_mechanism():
    assert {p.stem for p in PATHS} == {"dgauss_3_clients", "skellam_3_clients"}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_rerun_reproduces_the_vector_bit_for_bit(path):
    vec = json.loads(path.read_text())
    assert len(vec["clients"]) == 3
    assert _generator().run_vector(vec["config"]) == vec


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_recorded_values_are_consistent(path):
    """Without rerunning the clients: each wrapped vector is its rounded vector
    plus its noise modulo 2^b, the rounded vectors meet the norm bound, the sum
    is the sum of the wrapped vectors, and the decoded output is decode(sum)."""
    vec = json.loads(path.read_text())
    params = _generator().params_of(vec["config"])
    for c in vec["clients"]:
        rounded = np.array(c["rounded"], dtype=np.int64)
        scaled = np.array([float.fromhex(v) for v in c["rotated_scaled"]])
        assert np.all(np.abs(rounded - scaled) < 1)
        assert float(np.linalg.norm(rounded)) <= params.l2_sensitivity
        noised = rounded + np.array(c["noise"], dtype=np.int64)
        assert [int(v) for v in P.wrap(noised, params.bits)] == c["wrapped"]
    total = P.ring_sum([np.array(c["wrapped"], dtype=np.uint64) for c in vec["clients"]], params.bits)
    assert [int(v) for v in total] == vec["sum"]
    decoded = P.decode(np.array(vec["sum"], dtype=np.uint64), params)
    assert [float(v).hex() for v in decoded] == vec["decoded"]
    # the decoded sum is the clipped updates' sum plus the (unrotated) noise and rounding
    clipped = sum(P.clip_l2(np.array(u), params.clip)[0] for u in vec["config"]["updates"])
    noise_total = sum(np.array(c["noise"], dtype=np.int64) for c in vec["clients"])
    rounding = sum(np.array(c["rounded"]) - np.array([float.fromhex(v) for v in c["rotated_scaled"]])
                   for c in vec["clients"])
    expect = clipped + P.unrotate((noise_total + rounding) * params.granularity, params.rotation_seed, params.dim)
    assert np.allclose(decoded, expect, atol=1e-9)
