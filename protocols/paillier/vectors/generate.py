"""Generate the Paillier test vectors (protocols/paillier/SPEC.md §10).

Every value comes from a fixed seed through ``DeterministicRandom``; keys are
512-bit (test size only, never for use). The key-holder rounds run on the
round drivers (a ServerDriver, a ClientDriver per client and one for the key
holder, over the in-process transport); the committee rounds (SPEC §8) on a
ServerDriver around ``PaillierServer(params, committee=...)`` and one
ClientDriver with a ``CommitteeClientRole`` per client, every message handed
over by this script in a fixed order. Run from the repository root:

    python protocols/paillier/vectors/generate.py          # (re)write the JSON files
    python protocols/paillier/vectors/generate.py --check  # compare, exit 1 on a difference

``tests/test_paillier_vectors.py`` imports :func:`build_all` and compares its
output with the stored files byte for byte, then replays each file
independently of this script.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from secagg.drivers import (ClientDriver, CommitteeClientRole, Contribution, KeyHolderRole, Observer,
                            PaillierClientRole, ServerDriver)
from secagg.encoding import wire
from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.packing import PackingLayout
from secagg.errors import RemoteProtocolError, SecAggError
from secagg.primitives import paillier as pl
from secagg.primitives import threshold_paillier as tp
from secagg.primitives.randomness import DeterministicRandom
from secagg.primitives.signatures import generate_signing_keypair
from secagg.protocols.paillier import (KEY_HOLDER, AggregateCiphertext, AggregateSums, PaillierClient,
                                       PaillierKeyHolder, PaillierParams, PaillierServer, PublicKeyMessage,
                                       Submission)
from secagg.protocols.paillier.messages import ciphertext_digest, statement_message
from secagg.protocols.paillier.threshold import (CommitteeKey, DecryptionRequest, DecryptionShares,
                                                 aggregate_digest, deal_committee, request_context)
from secagg.protocols.outcome import Abort
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
                           "client_id (4 bytes, big-endian) || digest), digest = SHA-256(\"secagg/v1/paillier/"
                           "digest\\0\" || h_0 || h_1 || ...), h_b = SHA-256(\"secagg/v1/paillier/block\\0\" || "
                           "records 64b .. 64b + 63); the aggregate carries (client_id, digest, sig_u) for every "
                           "included client",
            "verify_keys": {str(c): k.public.hex() for c, k in signing.items()},
            "signed_messages": {
                str(c): statement_message(params.session_id, c, ciphertext_digest(
                    wire.decode(submissions[c], Submission).ciphertexts, params.key.ciphertext_bytes)).hex() for c in range(1, n + 1)},
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


# ---------------------------------------------------------------- committee rounds (SPEC §8)

COMMITTEE_SEED = "secagg/paillier/vectors/committee-key"
COMMITTEE = (1, 2, 3, 4)
#: 34-bit slots, 15 per 512-bit plaintext: d = 50 gives 51 entries in 4 ciphertexts, one block per member
COMMITTEE_ENCODING = FixedPoint(1.0, 30, 1.0)
COMMITTEE_D = 50


def committee_key() -> tuple[CommitteeKey, dict[int, tp.KeyShare]]:
    """The dealer's key for clients 1..4 with the default threshold (a
    majority: t = 3), from a fixed seed."""
    return deal_committee(COMMITTEE, key_bits=KEY_BITS, rng=DeterministicRandom(COMMITTEE_SEED))


def committee_updates() -> list[list[float]]:
    """Client ``c``'s update: multiples of 1/16 in [-1, 1] (exact in JSON)."""
    return [[((7 * j + 13 * c) % 33 - 16) / 16 for j in range(COMMITTEE_D)] for c in COMMITTEE]


def _committee_json(ck: CommitteeKey, shares: dict[int, tp.KeyShare]) -> dict[str, Any]:
    key = ck.key
    return {"seed": COMMITTEE_SEED, "wire": wire.encode(ck).hex(), "n": _hex(key.n), "threshold": key.threshold,
            "holders": list(ck.holders), "delta": int(key.delta), "v": _hex(key.v),
            "verification_keys": [_hex(x) for x in key.verification_keys], "key_id": _hex(ck.key_id),
            "share_secrets": {str(h): sh.secret_bytes().hex() for h, sh in shares.items()}}


def _records(data: bytes, length: int) -> list[int]:
    return [int.from_bytes(data[i:i + length], "big") for i in range(0, len(data), length)]


def _indices(ranges: tuple[int, ...]) -> list[int]:
    return [j for a, b in zip(ranges[0::2], ranges[1::2]) for j in range(a, b)]


def _proof_json(ck: CommitteeKey, request: DecryptionRequest, answer: DecryptionShares) -> dict[str, Any]:
    """What a verifier computes from a request and an answer (SPEC §8.4):
    the batch weights rho_j, X^4, Y^2, a = X^4^z Y^2^-e, b = v^z v_i^-e and
    the challenge recomputed from them (equal to ``e`` iff the proof holds)."""
    key = ck.key
    mod = int(key.modulus)
    length = key.element_bytes
    cts = _records(request.aggregate, length)
    cs = [cts[j] for j in _indices(request.ranges)]
    values = _records(answer.values, length)
    index = ck.index_of(answer.holder)
    context = request_context(request.session_id, aggregate_digest(request.session_id, request.aggregate),
                              answer.holder, request.attempt, request.ranges)
    weights = tp._batch_weights(key, context, index, tp._digest_list(key, cs), values)
    rho = [int.from_bytes(bytes(row), "big") for row in weights]
    x = y = 1
    for c, w, r in zip(cs, values, rho):
        x = x * pow(c, r, mod) % mod
        y = y * pow(w, r, mod) % mod
    x4, y2 = pow(x, 4, mod), pow(y, 2, mod)
    e, z = int.from_bytes(answer.challenge, "big"), int.from_bytes(answer.response, "big")
    a = pow(x4, z, mod) * pow(y2, -e, mod) % mod
    b = pow(int(key.v), z, mod) * pow(int(key.verification_keys[index - 1]), -e, mod) % mod
    recomputed = tp._challenge(key, context, index, x4, y2, a, b)
    return {"index": index, "weights": [format(r, "032x") for r in rho], "x4": _hex(x4), "y2": _hex(y2),
            "a": _hex(a), "b": _hex(b), "challenge": _hex(e), "recomputed_challenge": _hex(recomputed),
            "verifies": recomputed == e}


def _times_one_plus_n(ck: CommitteeKey, data: bytes) -> bytes:
    """An answer whose first share is multiplied by ``1 + n`` (it would add a
    known offset to that plaintext), the proof left as the member made it."""
    ans = wire.decode(data, DecryptionShares)
    length = ck.key.element_bytes
    first = int.from_bytes(ans.values[:length], "big") * (1 + int(ck.key.n)) % int(ck.key.modulus)
    return wire.encode(dataclasses.replace(ans, values=first.to_bytes(length, "big") + ans.values[length:]))


def committee_signing(seed: str) -> dict[int, Any]:
    """Client ``c``'s Ed25519 key pair of a signed committee vector."""
    rng = DeterministicRandom(seed)
    return {c: generate_signing_keypair(rng.fork(f"signing-{c}")) for c in COMMITTEE}


def _signing_json(signing: dict[int, Any]) -> dict[str, Any]:
    return {"description": "Ed25519 key pairs of the clients (test keys: the private keys are here so that the "
                           "replay can re-derive every signed submission); the server and every member hold the "
                           "verify keys",
            "private_keys": {str(c): k.private.hex() for c, k in signing.items()},
            "verify_keys": {str(c): k.public.hex() for c, k in signing.items()}}


def _committee_round(name: str, description: str, *, vanish: dict[int, Stage] | None = None,
                     tamper: frozenset[tuple[int, Stage]] = frozenset(), signed: bool = False) -> dict[str, Any]:
    """One sum round of clients 1..4, all of them committee members (t = 3),
    on the drivers. ``vanish``: member -> the decryption stage from which on
    it answers nothing; ``tamper``: (member, stage) whose answer reaches the
    server with its first share multiplied by ``1 + n``; ``signed``: every
    client signs its submission, the server and every member check the
    statements and the members the evidence (SPEC §8.8)."""
    vanish = vanish or {}
    seed = f"secagg/paillier/vectors/{name}"
    rng = DeterministicRandom(seed)
    ck, shares = committee_key()
    ck_bytes = wire.encode(ck)
    pinned = wire.decode(ck_bytes, CommitteeKey)  # the key as published: the server and every client pin it
    updates = committee_updates()
    params = PaillierParams.create(pinned.public_key, COMMITTEE, COMMITTEE_D, encoding=COMMITTEE_ENCODING,
                                   rule="sum", rng=rng.fork("server"))
    signing = committee_signing(seed) if signed else {}
    verify_keys = {c: k.public for c, k in signing.items()} if signed else None
    refusals = _Refusals()
    server = ServerDriver(PaillierServer(params, committee=pinned, client_keys=verify_keys), "sum",
                          observer=refusals, protocol="paillier")
    roles = {c: CommitteeClientRole(c, wire.decode(ck_bytes, CommitteeKey), shares[c], rng=rng.fork(f"client-{c}"),
                                    min_key_bits=KEY_BITS, signing_key=signing[c].private if signed else None,
                                    client_keys=verify_keys) for c in COMMITTEE}
    for role in roles.values():  # the offline phase
        role.precompute(params.n_ciphertexts)
    members = {c: ClientDriver(role) for c, role in roles.items()}
    outbox = server.start()
    params_bytes = wire.encode(params)
    assert outbox == {c: params_bytes for c in COMMITTEE}
    submissions = {}
    for c in COMMITTEE:  # each member registers the session and submits
        reply = members[c].handle(params_bytes, Contribution(np.array(updates[c - 1]), 1.0))
        assert reply is not None, members[c].last_error
        submissions[c] = reply
    for c in COMMITTEE:
        assert server.receive(c, submissions[c])
    outbox = server.close_stage()
    stages: list[dict[str, Any]] = []
    gone: set[int] = set()
    aggregate = b""
    while outbox:
        stage = server.stage
        requests = {h: wire.decode(data, DecryptionRequest) for h, data in outbox.items()}
        aggregate = next(iter(requests.values())).aggregate
        entry: dict[str, Any] = {"stage": stage.value, "requests": {}, "answers": {}, "vanished": []}
        for h, data in outbox.items():
            req = requests[h]
            entry["requests"][str(h)] = {
                "message": data.hex(), "attempt": req.attempt, "ranges": list(req.ranges),
                "context": request_context(req.session_id, aggregate_digest(req.session_id, req.aggregate), h,
                                           req.attempt, req.ranges).hex()}
        for h, data in outbox.items():
            if h in gone or vanish.get(h) == stage:
                gone.add(h)
                entry["vanished"].append(h)
                continue
            reply = members[h].handle(data)
            assert reply is not None, members[h].last_error
            answer: dict[str, Any] = {"message": reply.hex(),
                                      "proof": _proof_json(ck, requests[h], wire.decode(reply, DecryptionShares))}
            delivered = reply
            if (h, stage) in tamper:
                delivered = _times_one_plus_n(ck, reply)
                answer["delivered"] = delivered.hex()
                answer["tampered"] = "first share multiplied by 1 + n, proof unchanged"
                answer["delivered_proof"] = _proof_json(ck, requests[h], wire.decode(delivered, DecryptionShares))
            refusals.last = None
            answer["accepted"] = server.receive(h, delivered)
            if not answer["accepted"]:
                exc = refusals.last
                assert exc is not None
                answer.update(error=type(exc).__name__, reason=exc.reason.value, detail=str(exc))
            entry["answers"][str(h)] = answer
        stages.append(entry)
        outbox = server.close_stage()
    assert server.done
    key = ck.key
    cts = _records(aggregate, key.element_bytes)
    product = _records(submissions and wire.decode(submissions[1], Submission).ciphertexts, key.element_bytes)
    for c in COMMITTEE[1:]:
        sub = _records(wire.decode(submissions[c], Submission).ciphertexts, key.element_bytes)
        product = [x * y % int(key.modulus) for x, y in zip(product, sub)]
    assert product == cts  # every member submitted: the aggregate is the product of all four
    outcome: dict[str, Any]
    audit = server.core.audit_record()
    if isinstance(server.outcome, Abort):
        outcome = {"aborted": True, "reason": server.outcome.reason.value, "stage": server.outcome.stage,
                   "detail": server.outcome.detail}
    else:
        # the plaintexts from the dealt shares directly (any t holders give the same)
        plaintexts = tp.combine(key, {shares[h].index: [pow(c, 2 * int(key.delta) * int.from_bytes(
            shares[h].secret_bytes(), "big"), int(key.modulus)) for c in cts] for h in COMMITTEE[:key.threshold]})
        sums = params.layout.unpack(plaintexts, params.entries, len(COMMITTEE))
        res = server.result()
        scaled = np.asarray(sums).astype(np.float64) / params.encoding.scale
        assert np.array_equal(scaled[:-1], res.sum_weighted) and scaled[-1] == res.sum_weights
        outcome = {"aborted": False, "included": list(res.included), "plaintexts": [_hex(m) for m in plaintexts],
                   "sums": [int(v) for v in sums], "result": [float(v) for v in res.aggregate]}
    return {
        "description": description,
        "seed": seed,
        **({"signing": _signing_json(signing)} if signed else {}),
        "committee": _committee_json(ck, shares),
        "inputs": {"updates": updates, "weights": [1.0] * len(COMMITTEE),
                   "vanish": {str(h): st.value for h, st in sorted(vanish.items())},
                   "tamper": [[h, st.value] for h, st in sorted(tamper)]},
        "layout": params.layout.describe(),
        "session_id": params.session_id.hex(),
        "messages": {"committee_key": ck_bytes.hex(), "params": params_bytes.hex(),
                     "submissions": {str(c): submissions[c].hex() for c in COMMITTEE}},
        "aggregate": aggregate.hex(),
        "aggregate_digest": aggregate_digest(params.session_id, aggregate).hex(),
        "stages": stages,
        "rejected": [{"sender": p, "stage": st, "reason": r} for p, st, r in server.rejected],
        "failed_members": audit["decryption"]["failed_members"],  # type: ignore[index]
        "outcome": outcome,
    }


def _member_refusals(complete: dict[str, Any]) -> dict[str, Any]:
    """A committee member's refusals, on its client driver, of requests made
    from the complete round's: each case is a fresh member (its own random
    stream) fed the steps in order; a refused step sends nothing."""
    seed = "secagg/paillier/vectors/committee_member_refusals"
    rng = DeterministicRandom(seed)
    ck, shares = committee_key()
    params_bytes = bytes.fromhex(complete["messages"]["params"])
    params = wire.decode(params_bytes, PaillierParams)
    first = complete["stages"][0]["requests"]["1"]
    req_bytes = bytes.fromhex(first["message"])
    req = wire.decode(req_bytes, DecryptionRequest)
    single = wire.decode(bytes.fromhex(complete["messages"]["submissions"]["1"]), Submission).ciphertexts
    other = PaillierParams.create(ck.public_key, COMMITTEE, COMMITTEE_D, encoding=COMMITTEE_ENCODING, rule="sum",
                                  rng=rng.fork("another-session"))
    fresh = dataclasses.replace(req, session_id=other.session_id)

    def enc(**changes: Any) -> bytes:
        return wire.encode(dataclasses.replace(req, **changes))

    submit = (params_bytes, True)  # the member registers the session and submits its update
    cases = [
        ("a request for a session this member never registered", [(req_bytes, False)]),
        ("a second aggregate in a registered session: one client's submission passed off as the aggregate in "
         "a recovery request, then the genuine recovery request (the refusal ended the session for this "
         "member)", [submit, (req_bytes, False), (enc(attempt=1, aggregate=single, ranges=(0, params.n_ciphertexts)),
                                                  False), (enc(attempt=1), False)]),
        ("the same request twice (the driver's once-per-(session, stage) claim)",
         [submit, (req_bytes, False), (req_bytes, False)]),
        ("a request naming fewer included clients than min_clients, then the corrected request (the refusal "
         "ended the session for this member: no retry)", [submit, (enc(included=(1, 2)), False), (req_bytes, False)]),
        ("a request naming an uninvited client", [submit, (enc(included=(1, 2, 3, 99)), False)]),
        ("a request naming this member, which registered the session but did not submit in it",
         [(params_bytes, False), (req_bytes, False)]),
        ("a request under another committee key", [submit, (enc(key_id=bytes(32)), False)]),
        ("ranges outside the aggregate", [submit, (enc(ranges=(0, params.n_ciphertexts + 1)), False)]),
    ]
    limitations = [
        ("unsigned mode: the server opens a fresh session (another nonce), the member registers it and submits, "
         "and a request of that session carrying the complete round's aggregate is answered: nothing ties an "
         "aggregate to the submissions of its session (SPEC §8.9)", [(wire.encode(other), True),
                                                                      (wire.encode(fresh), False)]),
    ]
    update = np.array(committee_updates()[0])
    out: dict[str, list[dict[str, Any]]] = {"cases": [], "limitations": []}
    for kind, group in (("cases", cases), ("limitations", limitations)):
        for k, (what, messages) in enumerate(group):
            label = f"{kind}-{k}"
            member = ClientDriver(CommitteeClientRole(1, wire.decode(wire.encode(ck), CommitteeKey), shares[1],
                                                      rng=rng.fork(label), min_key_bits=KEY_BITS))
            steps = []
            for data, contributes in messages:
                reply = member.handle(data, Contribution(update, 1.0) if contributes else None)
                exc = member.last_error
                steps.append({"message": data.hex(), "contribution": contributes,
                              "reply": None if reply is None else reply.hex(),
                              "error": None if exc is None else type(exc).__name__,
                              "reason": getattr(getattr(exc, "reason", None), "value", None)})
            out[kind].append({"what": what, "member": 1, "rng_fork": label, "steps": steps})
    return {
        "description": "A committee member's refusals (ThresholdDecryptor behind CommitteeClientRole and "
                       "ClientDriver). Member 1 of the committee of committee_round.json; each case starts a "
                       "fresh member whose random stream is DeterministicRandom(seed).fork(rng_fork); a step "
                       "with 'contribution' carries client 1's update of committee_round (the member submits); "
                       "a step with a reply was answered, a step with an error sent nothing. 'limitations' are "
                       "requests a malicious server can make that are NOT refused.",
        "seed": seed,
        "committee": _committee_json(ck, shares),
        "params": params_bytes.hex(),
        "another_session_params": wire.encode(other).hex(),
        **out,
    }


def _signed_member_refusals(signed_round: dict[str, Any]) -> dict[str, Any]:
    """The signed mode's refusals by member 1 of committee_signed_round.json
    (it holds every client's verify key): each case a fresh member fed the
    steps in order, as in committee_member_refusals.json."""
    seed = "secagg/paillier/vectors/committee_signed_refusals"
    rng = DeterministicRandom(seed)
    ck, shares = committee_key()
    signing = committee_signing(signed_round["seed"])
    verify_keys = {c: k.public for c, k in signing.items()}
    params_bytes = bytes.fromhex(signed_round["messages"]["params"])
    params = wire.decode(params_bytes, PaillierParams)
    req = wire.decode(bytes.fromhex(signed_round["stages"][0]["requests"]["1"]["message"]), DecryptionRequest)
    subs = {c: wire.decode(bytes.fromhex(signed_round["messages"]["submissions"][str(c)]), Submission)
            for c in COMMITTEE}
    length = ck.key.element_bytes
    n2 = int(ck.key.modulus)
    other = PaillierParams.create(ck.public_key, COMMITTEE, COMMITTEE_D, encoding=COMMITTEE_ENCODING, rule="sum",
                                  rng=rng.fork("another-session"))
    agg = _records(req.aggregate, length)
    shifted = (agg[0] * (1 + int(ck.key.n)) % n2).to_bytes(length, "big") + req.aggregate[length:]
    ev = list(req.evidence)
    swapped = tuple(dataclasses.replace(e, records=ev[2].records) if e.client_id == 2 else e for e in ev)

    def enc(**changes: Any) -> bytes:
        return wire.encode(dataclasses.replace(req, **changes))

    submit = (params_bytes, True)
    cases = [
        ("a fresh session: the complete round's aggregate with its (old) statements and evidence, in a session "
         "the member registered and submitted to", [(wire.encode(other), True),
                                                    (enc(session_id=other.session_id), False)]),
        ("one client's submission passed off as the aggregate of the four (genuine statements and evidence)",
         [submit, (enc(aggregate=subs[1].ciphertexts), False)]),
        ("the aggregate times an encryption of a known value (its first ciphertext multiplied by 1 + n)",
         [submit, (enc(aggregate=shifted), False)]),
        ("client 2's evidence records replaced by client 3's", [submit, (enc(evidence=swapped), False)]),
        ("no statements", [submit, (enc(statements=()), False)]),
        ("no evidence", [submit, (enc(evidence=()), False)]),
    ]
    update = np.array(committee_updates()[0])
    out = []
    for k, (what, messages) in enumerate(cases):
        label = f"cases-{k}"
        member = ClientDriver(CommitteeClientRole(1, wire.decode(wire.encode(ck), CommitteeKey), shares[1],
                                                  rng=rng.fork(label), min_key_bits=KEY_BITS,
                                                  signing_key=signing[1].private, client_keys=verify_keys))
        steps = []
        for data, contributes in messages:
            reply = member.handle(data, Contribution(update, 1.0) if contributes else None)
            exc = member.last_error
            steps.append({"message": data.hex(), "contribution": contributes,
                          "reply": None if reply is None else reply.hex(),
                          "error": None if exc is None else type(exc).__name__,
                          "reason": getattr(getattr(exc, "reason", None), "value", None)})
        out.append({"what": what, "member": 1, "rng_fork": label, "steps": steps})
    return {
        "description": "A committee member's refusals in the signed mode (statements and evidence, SPEC §8.8). "
                       "Member 1 of committee_signed_round.json, holding every client's verify key and signing "
                       "its own submissions with its key from that file; each case a fresh member whose random "
                       "stream is DeterministicRandom(seed).fork(rng_fork); a step with 'contribution' carries "
                       "client 1's update (the member submits); a step with an error sent nothing.",
        "seed": seed,
        "committee": _committee_json(ck, shares),
        "signing": _signing_json(signing),
        "params": params_bytes.hex(),
        "another_session_params": wire.encode(other).hex(),
        "cases": out,
        "limitations": [],
    }


def build_committee() -> dict[str, dict[str, Any]]:
    d, r = Stage.DECRYPT, Stage.DECRYPT_RECOVERY
    complete = _committee_round(
        "committee_round", "A sum round decrypted by a committee: clients 1..4 all submit and are all members, "
        "t = 3 (the default majority); every member answers its first request and the server combines.")
    signed = _committee_round(
        "committee_signed_round", "As committee_round in the signed mode: every client signs its submission "
        "(the digest of its 64-record block hashes), the server and every member hold the verify keys, each "
        "request carries the included clients' statements and, per included client, its block hashes and its "
        "records of the blocks covering the member's ranges; each member checks them and that the product of "
        "the records is the aggregate there before it decrypts.", signed=True)
    return {
        "committee_round.json": complete,
        "committee_recovery.json": _committee_round(
            "committee_recovery", "As committee_round, but member 2 vanishes before answering its decryption "
            "request: the ciphertexts it held lack t valid shares, the server asks the members that answered "
            "(Decrypt recovery, attempt 1) and combines.", vanish={2: d}),
        "committee_bad_share.json": _committee_round(
            "committee_bad_share", "As committee_round, but member 4's answer reaches the server with its first "
            "share multiplied by 1 + n: the proof fails on intake (InvalidDecryptionShare, "
            "invalid_decryption_share, naming the member), nothing of it is kept, and the recovery request "
            "to the other members completes the round.", tamper=frozenset({(4, d)})),
        "committee_too_few_shares.json": _committee_round(
            "committee_too_few_shares", "Member 2 vanishes and member 4's share fails its proof: two valid "
            "members remain, t = 3, so no recovery request can be made and the round aborts "
            "(decryption_failed, naming member 4) without decrypting anything.",
            vanish={2: d}, tamper=frozenset({(4, d)})),
        "committee_recovery_fails.json": _committee_round(
            "committee_recovery_fails", "Member 4's share fails its proof; the recovery request goes to members "
            "1, 2 and 3, and member 3 vanishes before answering it: a ciphertext still lacks t valid shares "
            "and the round aborts at decrypt_recovery (decryption_failed).",
            vanish={3: r}, tamper=frozenset({(4, d)})),
        "committee_member_refusals.json": _member_refusals(complete),
        "committee_signed_round.json": signed,
        "committee_signed_refusals.json": _signed_member_refusals(signed),
    }


def build_all() -> dict[str, dict[str, Any]]:
    out = {"primitives.json": build_primitives(), "packing.json": build_packing()}
    out.update(build_rounds())
    out.update(build_committee())
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
