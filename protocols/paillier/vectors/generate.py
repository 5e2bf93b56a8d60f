"""Generate the Paillier test vectors (protocols/paillier/SPEC.md §9).

Every value comes from a fixed seed through ``DeterministicRandom``; keys are
512-bit (test size only, never for use). The rounds run on the round drivers
(a ServerDriver, a ClientDriver per client and one for the key holder, over
the in-process transport). Run from the repository root:

    python protocols/paillier/vectors/generate.py          # (re)write the JSON files
    python protocols/paillier/vectors/generate.py --check  # compare, exit 1 on a difference

``tests/test_paillier_vectors.py`` imports :func:`build_all` and compares its
output with the stored files byte for byte, then replays each file
independently of this script.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from secagg.drivers import ClientDriver, Contribution, KeyHolderRole, Observer, PaillierClientRole, ServerDriver
from secagg.encoding import wire
from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.packing import PackingLayout
from secagg.errors import RemoteProtocolError, SecAggError
from secagg.primitives import paillier as pl
from secagg.primitives.randomness import DeterministicRandom
from secagg.primitives.signatures import generate_signing_keypair
from secagg.protocols.paillier import (KEY_HOLDER, AggregateCiphertext, AggregateSums, PaillierClient,
                                       PaillierKeyHolder, PaillierParams, PaillierServer, PublicKeyMessage,
                                       Submission)
from secagg.protocols.paillier.messages import ciphertext_digest, statement_message
from secagg.protocols.stages import Stage
from secagg.transports.inprocess import LocalRound

HERE = Path(__file__).resolve().parent
KEY_BITS = 512
KEY_SEED = "secagg/paillier/vectors/key"


def _hex(x: int | bytes) -> str:
    if isinstance(x, bytes):
        return x.hex()
    return format(int(x), "x")


def test_key() -> tuple[pl.PublicKey, pl.PrivateKey]:
    return pl.generate_keypair(KEY_BITS, DeterministicRandom(KEY_SEED))


def _key_json(sk: pl.PrivateKey) -> dict[str, str]:
    k = sk.to_phe()
    return {"p": _hex(k.p), "q": _hex(k.q), "n": _hex(k.public_key.n), "key_id": _hex(sk.public_key.key_id)}


# ---------------------------------------------------------------- primitives

def build_primitives() -> dict[str, Any]:
    pk, sk = test_key()
    rng = DeterministicRandom("secagg/paillier/vectors/primitives")
    h_s = pl.djn_base(pk)
    cases = []
    for spec in (pl.STANDARD, pl.short_exponent(2048), pl.RandomizerSpec("short_exponent", 300, 5)):
        inputs = pl.draw_randomizer_inputs(pk, spec, 2, rng)
        rhos = pl.obfuscators_from_inputs(pk.n, spec.kind, inputs, h_s=h_s, exponent_bits=spec.exponent_bits,
                                          window=spec.window)
        for m, inp, rho in zip((0x1234567890ABCDEF, pk.n - 1), inputs, rhos):
            c = pl.encrypt_with_obfuscators(pk, [m], [rho])[0]
            assert sk.decrypt(c) == m
            cases.append({"randomizer": spec.kind, "exponent_bits": spec.exponent_bits, "plaintext": _hex(m),
                          "r" if spec.kind == "standard" else "a": _hex(inp), "obfuscator": _hex(rho),
                          "ciphertext": _hex(pl.ciphertexts_to_bytes(pk, [c]))})
    p = int(sk.to_phe().p)
    invalid = [{"why": why, "ciphertext": _hex(v.to_bytes(pk.ciphertext_bytes, "big"))}
               for why, v in (("zero", 0), ("n^2", int(pk.n_square)), ("above n^2", int(pk.n_square) + 1),
                              ("multiple of n", 2 * pk.n), ("multiple of p", 3 * p))]
    return {
        "description": "Paillier with g = n + 1: E(m) = (1 + m n) rho mod n^2; rho = r^n (standard) or "
                       "h_s^a (DJN short exponent, h_s = djn_base(n)). Ciphertexts big-endian, "
                       "ceil(2 key_bits / 8) bytes. Invalid ciphertexts must be refused (outside Z*_{n^2}).",
        "key_bits": KEY_BITS,
        "key": _key_json(sk),
        "djn_base": _hex(h_s),
        "encryptions": cases,
        "invalid_ciphertexts": invalid,
    }


# ---------------------------------------------------------------- packing

def build_packing() -> dict[str, Any]:
    layouts = []
    for clip, frac_bits, max_weight, n, key_bits in ((1.0, 14, 1.0, 100, 2048), (1.0, 16, 1.0, 2, 2048),
                                                     (2.0, 10, 50.0, 1000, 3072), (1.0, 12, 4.0, 4, 512),
                                                     (1.0, 40, 1000.0, 10_000, 2048), (8.0, 30, 100.0, 16, 32)):
        entry: dict[str, Any] = {"clip": clip, "frac_bits": frac_bits, "max_weight": max_weight,
                                 "max_clients": n, "key_bits": key_bits}
        try:
            entry.update(PackingLayout.derive(FixedPoint(clip, frac_bits, max_weight), n, key_bits).describe())
        except SecAggError as exc:
            entry["error"] = type(exc).__name__
        layouts.append(entry)
    lay = PackingLayout.derive(FixedPoint(1.0, 12, 4.0), 4, KEY_BITS)
    b = lay.bound
    clients = [[b, -b, 0, 1, -1] * 7, [b] * 35, [-b] * 35, [12345, -5432, 7, 0, b] * 7]
    packed = [lay.pack(np.array(q)) for q in clients]
    total = [sum(ms) for ms in zip(*packed)]
    sums = lay.unpack(total, 35, 4)
    return {
        "description": "Slot layout: s = bit_length(2 N B), k = floor((key_bits - 1) / s); slot value q + B; "
                       "slot j of a plaintext at bits [j s, (j+1) s); after decryption subtract n_included * B.",
        "layouts": layouts,
        "example": {"layout": lay.describe(), "length": 35, "clients": clients,
                    "packed": [[_hex(m) for m in ms] for ms in packed], "packed_sum": [_hex(m) for m in total],
                    "sums": [int(v) for v in sums]},
    }


# ---------------------------------------------------------------- rounds

class _Refusals(Observer):
    """The server driver's observer here: the typed error of the last refused message."""

    def __init__(self) -> None:
        self.last: RemoteProtocolError | None = None

    def rejected(self, role: str, stage: Stage, party: int, error: RemoteProtocolError) -> None:
        self.last = error


def _round(name: str, rule: str, randomizer: pl.RandomizerSpec, encoding: FixedPoint, updates: list[list[float]],
           weights: list[float], dropped: list[int], adversarial: bool, signed: bool = False) -> dict[str, Any]:
    """One round on the drivers: a server driver, a client driver per client
    and the key holder's (party 0), over the in-process transport. The network
    holds every submission; the script below releases them in its own order,
    with the adversarial messages in between, and the dropped clients' only
    after the round is over. ``signed``: every client signs its submission
    (Ed25519 keys from the seed), the server and the key holder check the
    signatures, and the refused messages are the signed mode's own."""
    seed = f"secagg/paillier/vectors/{name}"
    rng = DeterministicRandom(seed)
    _, sk = test_key()
    n = len(updates)
    signing = {cid: generate_signing_keypair(rng.fork(f"signing-{cid}")) for cid in range(1, n + 1)} if signed else {}
    verify_keys = {cid: k.public for cid, k in signing.items()} if signed else None
    keyholder = PaillierKeyHolder(private_key=sk, client_keys=verify_keys)
    public_key_bytes = wire.encode(keyholder.public_key_message())
    params = PaillierParams.create(keyholder.public_key, range(1, n + 1), len(updates[0]), encoding=encoding,
                                   rule=rule, rng=rng.fork("server"))
    refusals = _Refusals()
    server = ServerDriver(PaillierServer(params, client_keys=verify_keys), rule, observer=refusals,
                          protocol="paillier")
    roles = {cid: PaillierClientRole(cid, wire.decode(public_key_bytes, PublicKeyMessage),
                                     rng=rng.fork(f"client-{cid}"), randomizer=randomizer, min_key_bits=KEY_BITS,
                                     signing_key=signing[cid].private if signed else None)
             for cid in range(1, n + 1)}
    for role in roles.values():  # the offline phase
        role.precompute(params.n_ciphertexts)
    clients = {cid: ClientDriver(role) for cid, role in roles.items()}
    clients[KEY_HOLDER] = ClientDriver(KeyHolderRole(keyholder))
    held: dict[int, bytes] = {}

    def hold(direction: str, stage: Stage, party: int, data: bytes) -> bytes | None:
        if direction == "to_server" and stage is Stage.SUBMIT:
            held[party] = data
            return None
        return data

    network = LocalRound(server, clients, {cid: Contribution(np.array(updates[cid - 1]), weights[cid - 1])
                                           for cid in roles}, tamper=hold)
    network.start()
    params_bytes = network.outbox[KEY_HOLDER]
    assert params_bytes == wire.encode(params) and all(network.outbox[c] == params_bytes for c in roles)
    network.deliver()  # the key holder registers the round; every client answers with its submission (held)
    submissions = dict(sorted(held.items()))
    assert sorted(submissions) == list(range(1, n + 1))

    events: list[dict[str, Any]] = []

    def deliver(sender: int, data: bytes, what: str) -> None:
        refusals.last = None
        if server.receive(sender, data):
            outcome: dict[str, Any] = {"accepted": True}
        else:
            exc = refusals.last
            assert exc is not None
            outcome = {"accepted": False, "error": type(exc).__name__, "reason": exc.reason.value}
        events.append({"what": what, "sender": sender, "message": data.hex(), **outcome})

    honest = [c for c in range(1, n + 1) if c not in dropped]
    bad: list[tuple[int, bytes, str]] = []
    if adversarial:
        first = honest[0]
        sub = wire.decode(submissions[honest[1]], Submission)
        L = params.key.ciphertext_bytes
        p = int(sk.to_phe().p)
        other = PaillierParams.create(keyholder.public_key, range(1, n + 1), len(updates[0]), encoding=encoding,
                                      rule=rule, rng=rng.fork("other-session"))
        replay_client = PaillierClient(sub.client_id, keyholder.public_key, rng=rng.fork("replay"),
                                       min_key_bits=KEY_BITS)
        replay_client.receive_params(other)
        replay = wire.encode(replay_client.submit(np.array(updates[sub.client_id - 1]), weights[sub.client_id - 1]))
        _, foreign_sk = pl.generate_keypair(KEY_BITS, DeterministicRandom(seed + "/foreign-key"))
        bad = [
            (first, submissions[first], "duplicate of an accepted submission"),
            (sub.client_id, replay, "replay from another session"),
            (first, submissions[sub.client_id], "sender is not the client named in the message"),
            (99, submissions[sub.client_id], "sender not invited"),
            (sub.client_id, wire.encode(dataclasses.replace(sub, key_id=foreign_sk.public_key.key_id)),
             "another key's id"),
            (sub.client_id, wire.encode(dataclasses.replace(sub, ciphertexts=bytes(L) + sub.ciphertexts[L:])),
             "ciphertext 0"),
            (sub.client_id, wire.encode(dataclasses.replace(
                sub, ciphertexts=params.key.n.to_bytes(L, "big") + sub.ciphertexts[L:])), "ciphertext n"),
            (sub.client_id, wire.encode(dataclasses.replace(
                sub, ciphertexts=(5 * p).to_bytes(L, "big") + sub.ciphertexts[L:])), "ciphertext 5p"),
            (sub.client_id, wire.encode(dataclasses.replace(sub, ciphertexts=sub.ciphertexts[:-1])),
             "ciphertexts one byte short"),
            (sub.client_id, submissions[sub.client_id][:-9], "truncated message"),
        ]
    if signed:
        first = honest[0]
        sub = wire.decode(submissions[honest[1]], Submission)
        other = PaillierParams.create(keyholder.public_key, range(1, n + 1), len(updates[0]), encoding=encoding,
                                      rule=rule, rng=rng.fork("other-session"))
        replay_client = PaillierClient(sub.client_id, keyholder.public_key, rng=rng.fork("replay"),
                                       min_key_bits=KEY_BITS, signing_key=signing[sub.client_id].private)
        replay_client.receive_params(other)
        replayed = replay_client.submit(np.array(updates[sub.client_id - 1]), weights[sub.client_id - 1])
        others_signature = wire.decode(submissions[first], Submission).signature
        bad = [
            (sub.client_id, wire.encode(dataclasses.replace(sub, signature=b"")), "unsigned"),
            (sub.client_id, wire.encode(dataclasses.replace(sub, signature=others_signature)),
             "signed by another client"),
            (sub.client_id, wire.encode(dataclasses.replace(sub, ciphertexts=replayed.ciphertexts)),
             "ciphertexts of another session under this session's signature"),
            (sub.client_id, wire.encode(replayed), "replay from another session"),
            (sub.client_id, wire.encode(dataclasses.replace(replayed, session_id=params.session_id)),
             "replay from another session, moved into this session's envelope"),
        ]
    deliver(honest[0], submissions[honest[0]], "submission")
    for sender, data, what in bad:
        deliver(sender, data, what)
    for cid in honest[1:]:
        deliver(cid, submissions[cid], "submission")
    network.close()  # the deadline: the aggregate goes to the key holder
    aggregate_bytes = network.outbox[KEY_HOLDER]
    sums_bytes = network.deliver()[KEY_HOLDER]  # the key holder decrypts
    network.close()
    for cid in dropped:
        deliver(cid, submissions[cid], "late submission (after close)")
    res = server.result()
    aggregate = wire.decode(aggregate_bytes, AggregateCiphertext)
    sums = wire.decode(sums_bytes, AggregateSums)
    assert res.included == tuple(honest) == aggregate.included == sums.included
    extra: dict[str, Any] = {}
    if signed:
        extra["signing"] = {
            "description": "Ed25519; sig_u signs SHA-256(\"secagg/v1/paillier/submission\\0\" || session_id || "
                           "client_id (4 bytes, big-endian) || SHA-256(ciphertexts)); the aggregate carries "
                           "(client_id, SHA-256(ciphertexts), sig_u) for every included client",
            "verify_keys": {str(c): k.public.hex() for c, k in signing.items()},
            "signed_messages": {
                str(c): statement_message(params.session_id, c, ciphertext_digest(
                    wire.decode(submissions[c], Submission).ciphertexts)).hex() for c in range(1, n + 1)},
        }
    return {
        **extra,
        "description": f"One {rule} round, {n} clients, clients {dropped} never submit in time"
                       + (", every submission signed by its client (Ed25519), checked by the server and, for "
                          "the included clients, by the key holder" if signed else "")
                       + (", with rejected messages interleaved (each must leave the server unchanged)"
                          if adversarial or signed else ""),
        "seed": seed,
        "key": _key_json(sk),
        "randomizer": {"kind": randomizer.kind, "exponent_bits": randomizer.exponent_bits,
                       "window": randomizer.window},
        "inputs": {"updates": updates, "weights": weights, "dropped": dropped},
        "layout": params.layout.describe(),
        "messages": {"public_key": public_key_bytes.hex(), "params": params_bytes.hex(),
                     "submissions": {str(c): submissions[c].hex() for c in range(1, n + 1)},
                     "aggregate": aggregate_bytes.hex(), "sums": sums_bytes.hex()},
        "events": events,
        "session_id": params.session_id.hex(),
        "included": list(aggregate.included),
        "sums": [int(v) for v in sums.sums],
        "result": [float(v) for v in res.aggregate],
    }


def build_rounds() -> dict[str, dict[str, Any]]:
    updates = [[0.5, -0.25, 1.5, 0.0, -1.0, 0.125, 0.3, -0.7, 0.9],
               [-0.5, 0.75, -2.0, 0.01, 0.2, 0.0, -0.3, 0.6, -0.9],
               [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
               [-1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.5, -0.5, 0.25]]
    return {
        "round_weighted_adversarial.json": _round(
            "round_weighted_adversarial", "weighted", pl.STANDARD, FixedPoint(1.0, 8, 4.0), updates,
            [1.0, 2.5, 4.0, 0.5], [2], adversarial=True),
        "round_mean_short_exponent.json": _round(
            "round_mean_short_exponent", "mean", pl.RandomizerSpec("short_exponent", 300, 4), FixedPoint(1.0, 10, 1.0),
            updates, [1.0] * 4, [], adversarial=False),
        "round_sum_signed.json": _round(
            "round_sum_signed", "sum", pl.STANDARD, FixedPoint(1.0, 10, 1.0), updates, [1.0] * 4, [3],
            adversarial=False, signed=True),
    }


def build_all() -> dict[str, dict[str, Any]]:
    out = {"primitives.json": build_primitives(), "packing.json": build_packing()}
    out.update(build_rounds())
    return out


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    differ = []
    for name, obj in build_all().items():
        path = HERE / name
        text = dumps(obj)
        if check:
            if not path.exists() or path.read_text() != text:
                differ.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if differ:
        print("vectors differ:", ", ".join(differ))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
