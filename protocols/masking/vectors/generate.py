"""Regenerate the masking test vectors: whole deterministic protocol runs.

    python protocols/masking/vectors/generate.py

Every run uses DeterministicRandom(seed), so keys, nonces, shares, masks and
rounding are reproducible; every round runs on the round drivers (the
simulator's, or a LocalRound with a dishonest-server hook). Each vector
records the configuration, the inputs, the public parameters, every message
on the wire (hex) and the outcome. tests/test_masking_vectors.py replays
them. Inputs are multiples of 2^-10 so the JSON floats are exact.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from secagg import simulate
from secagg.drivers import ClientDriver, Contribution, MaskingClientRole, MaskingRecord, MemoryStore, ServerDriver
from secagg.encoding import wire
from secagg.errors import ProtocolAborted, RemoteProtocolError
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.masking import MaskingParams, MaskingServer, UnmaskRequest
from secagg.protocols.stages import Stage
from secagg.transports.inprocess import LocalRound

HERE = Path(__file__).resolve().parent


def _updates(n: int, dim: int, seed: int) -> list[list[float]]:
    gen = np.random.default_rng(seed)
    return [(gen.integers(-900, 900, dim) / 1024.0).tolist() for _ in range(n)]


def run_vector(config: dict) -> dict:
    """Run ``config`` through the simulator; return the recorded transcript and outcome."""
    trace: list = []
    kwargs = {k: config[k] for k in ("protocol", "rule", "seed", "threshold", "degree", "dropout_tolerance",
                                     "malicious_server") if k in config}
    dropouts = {int(k): v for k, v in config.get("dropouts", {}).items()}
    out: dict = {}
    try:
        res = simulate([np.array(u) for u in config["updates"]], config.get("weights"), dropouts=dropouts or None,
                       trace=trace, **kwargs)
        out["result"] = {"included": list(res.included),
                         "dropped": {str(k): v for k, v in sorted(res.dropped.items())},
                         "sum_weighted": res.sum_weighted.tolist(), "sum_weights": res.sum_weights,
                         "aggregate": res.aggregate.tolist(), "session_id": res.session_id}
    except ProtocolAborted as exc:
        out["abort"] = {"reason": exc.reason.value}
    out["transcript"] = [[stage, direction, client, data.hex()] for stage, direction, client, data in trace]
    return out


def dishonest_server_vector() -> dict:
    """A server that lists client 2 as both alive and dropped: client 1 must
    refuse with inconsistent_dropout_sets and send nothing. The round runs on
    the drivers; the dishonest server is a tamper hook on the in-process
    transport that rewrites client 1's unmask request."""
    rng = DeterministicRandom(99)
    params = MaskingParams.create(range(1, 5), 2, protocol="secagg", dropout_tolerance=0.0, rng=rng.fork("params"))
    stores = {i: MemoryStore() for i in params.client_ids}
    clients = {i: ClientDriver(MaskingClientRole(i, rng=rng.fork(f"client/{i}")), stores[i])
               for i in params.client_ids}
    contributions = {i: Contribution(np.array([0.25 * i, -0.5])) for i in clients}
    seen: dict[str, bytes] = {}

    def lie(direction: str, stage: Stage, party: int, data: bytes) -> bytes | None:
        if direction == "to_client" and stage is Stage.UNMASKING and party == 1:
            req = wire.decode(data, UnmaskRequest)
            data = wire.encode(dataclasses.replace(req, dropped=np.array([2], dtype=np.uint32)))
            record = stores[1].load(params.session_id)
            assert isinstance(record, MaskingRecord)
            seen.update(message=data, state_before=wire.encode(record.client))
        return data

    LocalRound(ServerDriver(MaskingServer(params), "sum"), clients, contributions, tamper=lie).run()
    error = clients[1].last_error
    assert isinstance(error, RemoteProtocolError) and stores[1].load(params.session_id) is None
    return {"description": "dishonest server: client 2 listed alive and dropped; client 1 aborts",
            "params": wire.encode(params).hex(), "client_state_before": seen["state_before"].hex(), "client_id": 1,
            "client_rng_seed": 99, "transcript": [["unmasking", "to_client", 1, seen["message"].hex()]],
            "expected_client_abort": error.reason.value}


VECTORS = {
    "secagg_no_dropout": dict(description="SecAgg, 4 clients, no dropout", protocol="secagg", n=4, dim=3, seed=1,
                              dropout_tolerance=0.0),
    "secagg_dropout_advertise_keys": dict(description="client 3 never advertises keys", protocol="secagg", n=5,
                                          dim=3, seed=2, dropouts={"3": "advertise_keys"}, dropout_tolerance=0.2),
    "secagg_dropout_share_keys": dict(description="client 3 vanishes before ShareKeys", protocol="secagg", n=5,
                                      dim=3, seed=3, dropouts={"3": "share_keys"}, dropout_tolerance=0.2),
    "secagg_dropout_masked_input": dict(description="client 3 vanishes before its masked input: its pairwise "
                                        "masks are removed with its reconstructed mask key", protocol="secagg",
                                        n=5, dim=3, seed=4, dropouts={"3": "masked_input"}, dropout_tolerance=0.2),
    "secagg_dropout_unmasking": dict(description="client 3 vanishes during unmasking: still included",
                                     protocol="secagg", n=5, dim=3, seed=5, dropouts={"3": "unmasking"},
                                     dropout_tolerance=0.2),
    "secagg_malicious_server_mode": dict(description="signed keys and consistency check; client 2 drops at the "
                                         "check, client 4 before its masked input", protocol="secagg", n=6, dim=2,
                                         seed=6, malicious_server=True, dropout_tolerance=0.3,
                                         dropouts={"2": "consistency_check", "4": "masked_input"}),
    "secaggplus_sparse_graph": dict(description="SecAgg+: 12 clients, degree 6, threshold 5, two dropouts",
                                    protocol="secagg+", n=12, dim=3, seed=7, degree=6, threshold=5,
                                    dropout_tolerance=0.05, dropouts={"2": "masked_input", "7": "unmasking"}),
    "secagg_weighted_fedavg": dict(description="FedAvg weights: sums of w*x and w only", protocol="secagg", n=4,
                                   dim=3, seed=8, rule="fedavg", weights=[3.0, 1.0, 2.0, 4.0],
                                   dropout_tolerance=0.25, dropouts={"2": "masked_input"}),
    "abort_too_few_survivors": dict(description="3 of 5 vanish before their masked inputs: abort, no aggregate",
                                    protocol="secagg", n=5, dim=2, seed=9, dropout_tolerance=0.2,
                                    dropouts={"1": "masked_input", "2": "masked_input", "3": "masked_input"}),
}


def build(name: str, spec: dict) -> dict:
    config = {k: v for k, v in spec.items() if k not in ("description", "n", "dim")}
    config["updates"] = _updates(spec["n"], spec["dim"], spec["seed"])
    config.setdefault("rule", "mean")
    vec = {"name": name, "description": spec["description"], "config": config}
    vec.update(run_vector(config))
    return vec


def main() -> int:
    for name, spec in VECTORS.items():
        (HERE / f"{name}.json").write_text(json.dumps(build(name, spec), indent=1) + "\n")
    (HERE / "dishonest_server_overlapping_sets.json").write_text(json.dumps(dishonest_server_vector(), indent=1) + "\n")
    print(f"wrote {len(VECTORS) + 1} vectors to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
