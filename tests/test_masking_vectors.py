"""Replay the masking test vectors (protocols/masking/vectors/*.json).

Two independent checks per vector: (1) rerunning its configuration reproduces
every message byte for byte and the same outcome; (2) a fresh server fed only
the recorded client messages produces exactly the recorded server messages and
outcome (the server's behaviour is a function of what it receives)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from secagg.encoding import wire
from secagg.protocols.masking import Abort, MaskingClient, MaskingParams, MaskingServer, ServerResult
from secagg.primitives.randomness import DeterministicRandom

VECTORS = Path(__file__).resolve().parent.parent / "protocols" / "masking" / "vectors"
RUNS = sorted(p for p in VECTORS.glob("*.json") if not p.name.startswith("dishonest"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_there_are_vectors_for_each_case():
    names = {p.stem for p in RUNS}
    assert {"secagg_no_dropout", "secaggplus_sparse_graph", "abort_too_few_survivors",
            "secagg_malicious_server_mode"} <= names
    assert {f"secagg_dropout_{s}" for s in ("advertise_keys", "share_keys", "masked_input", "unmasking")} <= names


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_rerun_reproduces_the_transcript(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", VECTORS / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)  # type: ignore[union-attr]
    vec = _load(path)
    again = gen.run_vector(vec["config"])
    assert again["transcript"] == vec["transcript"]
    assert again.get("result") == vec.get("result")
    assert again.get("abort") == vec.get("abort")


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_fresh_server_replays_the_transcript(path):
    vec = _load(path)
    entries = [(s, d, c, bytes.fromhex(h)) for s, d, c, h in vec["transcript"]]
    params = wire.decode(entries[0][3], MaskingParams)
    server = MaskingServer(params)
    stages = []
    for s, d, _, _ in entries[1:]:
        if d == "to_server" and s not in stages:
            stages.append(s)
    for k, stage in enumerate(stages):
        for s, d, c, data in entries:
            if s == stage and d == "to_server":
                server.receive(c, wire.decode(data))
        out = server.close_round()
        nxt = stages[k + 1] if k + 1 < len(stages) else None
        expected = {c: data for s, d, c, data in entries if d == "to_client" and s == nxt}
        if nxt is None or server.done:
            break
        assert {c: wire.encode(m) for c, m in out.items()} == expected
    if "abort" in vec:
        assert isinstance(server.outcome, Abort) and server.outcome.reason.value == vec["abort"]["reason"]
    else:
        res = vec["result"]
        assert isinstance(server.outcome, ServerResult)
        assert list(server.outcome.included) == res["included"]
        assert server.outcome.sum_weighted.tolist() == res["sum_weighted"]
        assert server.outcome.sum_weights == res["sum_weights"]
        assert params.session_id.hex() == res["session_id"]
        # and the recorded result is the plaintext aggregate within the encoding bound
        cfg = vec["config"]
        ws = cfg.get("weights") or [1.0] * len(cfg["updates"])
        ref = sum(ws[i - 1] * np.array(cfg["updates"][i - 1]) for i in res["included"])
        assert np.max(np.abs(np.array(res["sum_weighted"]) - ref)) <= params.encoding.sum_error_bound(
            len(res["included"])) * max(ws)


def test_dishonest_server_vector_makes_the_client_abort():
    vec = _load(VECTORS / "dishonest_server_overlapping_sets.json")
    params = wire.decode(bytes.fromhex(vec["params"]), MaskingParams)
    client = MaskingClient.from_bytes(params, bytes.fromhex(vec["client_state_before"]), DeterministicRandom(0))
    (_, _, cid, data), = vec["transcript"]
    assert client.handle(wire.decode(bytes.fromhex(data))) is None
    assert client.abort_reason.value == vec["expected_client_abort"]
