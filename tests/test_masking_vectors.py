"""Replay the masking test vectors (protocols/masking/vectors/*.json).

Two independent checks per vector: (1) rerunning its configuration reproduces
every message byte for byte and the same outcome; (2) a fresh server driver fed
only the recorded client bytes produces exactly the recorded server bytes and
outcome (the server's behaviour is a function of what it receives)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from secagg.drivers import ClientDriver, MaskingClientRole, MaskingRecord, MemoryStore, ServerDriver
from secagg.encoding import wire
from secagg.errors import ProtocolAborted
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.masking import (Abort, ClientState, MaskingClient, MaskingParams, MaskingServer, ServerResult,
                                      UnmaskRequest, UnmaskShares)

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
    """A fresh server driver fed only the recorded client bytes sends exactly
    the recorded server bytes, stage after stage, and ends the same way."""
    vec = _load(path)
    (tag, _, _, params_bytes), *entries = [(s, d, c, bytes.fromhex(h)) for s, d, c, h in vec["transcript"]]
    assert tag == "params"
    params = wire.decode(params_bytes, MaskingParams)
    cfg = vec["config"]
    driver = ServerDriver(MaskingServer(params), cfg["rule"])
    assert driver.start() == {c: params_bytes for c in params.client_ids}
    fed = compared = 0
    while not driver.done:
        stage = driver.stage.value
        for s, d, c, data in entries:
            if s == stage and d == "to_server":
                assert driver.receive(c, data), (stage, c)
                fed += 1
        out = driver.close_stage()
        expected = {c: data for s, d, c, data in entries if d == "to_client" and s == driver.stage.value}
        assert out == expected, driver.stage
        compared += len(out)
    assert (fed, compared) == (sum(d == "to_server" for _, d, _, _ in entries),
                               sum(d == "to_client" for _, d, _, _ in entries))  # every message replayed
    # the scheduled dropouts, and nothing else, are what the driver saw fail
    assert driver.failures == {int(c): f"{s}: no reply before the deadline" for c, s in cfg.get("dropouts", {}).items()}
    outcome = driver.outcome
    if "abort" in vec:
        assert isinstance(outcome, Abort) and outcome.reason.value == vec["abort"]["reason"]
        with pytest.raises(ProtocolAborted) as info:
            driver.result()
        assert info.value.reason.value == vec["abort"]["reason"]
        return
    res = vec["result"]
    assert isinstance(outcome, ServerResult)
    assert list(outcome.included) == res["included"]
    assert outcome.sum_weighted.tolist() == res["sum_weighted"]
    assert outcome.sum_weights == res["sum_weights"]
    assert params.session_id.hex() == res["session_id"]
    result = driver.result()
    assert result.aggregate.tolist() == res["aggregate"] and result.session_id == res["session_id"]
    assert {str(k): v for k, v in sorted(result.dropped.items())} == res["dropped"]
    # and the recorded result is the plaintext aggregate within the encoding bound
    ws = cfg.get("weights") or [1.0] * len(cfg["updates"])
    ref = sum(ws[i - 1] * np.array(cfg["updates"][i - 1]) for i in res["included"])
    assert np.max(np.abs(np.array(res["sum_weighted"]) - ref)) <= params.encoding.sum_error_bound(
        len(res["included"])) * max(ws)


def test_dishonest_server_vector_makes_the_client_abort():
    vec = _load(VECTORS / "dishonest_server_overlapping_sets.json")
    params = wire.decode(bytes.fromhex(vec["params"]), MaskingParams)
    state = wire.decode(bytes.fromhex(vec["client_state_before"]), ClientState)
    (stage, direction, cid, data), = vec["transcript"]
    assert (stage, direction, cid) == ("unmasking", "to_client", vec["client_id"])
    evil = wire.decode(bytes.fromhex(data), UnmaskRequest)

    def client_with_saved_state() -> tuple[ClientDriver, MemoryStore]:
        store = MemoryStore()
        store.save(params.session_id, MaskingRecord(params, state))
        return ClientDriver(MaskingClientRole(cid, rng=DeterministicRandom(0)), store), store

    # the client driver, from the recorded state: a typed refusal, nothing sent, its secrets dropped
    driver, store = client_with_saved_state()
    assert driver.handle(bytes.fromhex(data)) is None
    assert driver.last_error.reason.value == vec["expected_client_abort"]
    assert store.load(params.session_id) is None
    # the same state answers the request without the lie (the refusal is the lie's doing)
    driver, _ = client_with_saved_state()
    honest = dataclasses.replace(evil, dropped=np.zeros(0, dtype=np.uint32))
    assert isinstance(wire.decode(driver.handle(wire.encode(honest))), UnmaskShares)
    # and the protocol core by itself
    client = MaskingClient.from_bytes(params, bytes.fromhex(vec["client_state_before"]), DeterministicRandom(0))
    assert client.handle(evil) is None
    assert client.abort_reason.value == vec["expected_client_abort"]
