"""Replay of protocols/paillier/vectors/*.json.

Two checks per file: the generator, run again, reproduces it byte for byte
(nothing drifted), and an independent replay from the file alone (keys from
the stored primes, messages from the stored bytes fed to the round drivers,
phe for the arithmetic) gives the stored outcomes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from phe import paillier as phe_paillier

from secagg import errors
from secagg.aggregation import finalize
from secagg.drivers import ClientDriver, CommitteeClientRole, Contribution, KeyHolderRole, ServerDriver
from secagg.encoding import wire
from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.packing import PackingLayout
from secagg.primitives import paillier as pl
from secagg.primitives import threshold_paillier as tp
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols import paillier as proto
from secagg.protocols.outcome import Abort
from secagg.protocols.paillier.threshold import CommitteeKey, DecryptionRequest, DecryptionShares
from secagg.primitives import signatures
from secagg.protocols.paillier import AggregateCiphertext, AggregateSums, PaillierKeyHolder, PaillierParams, \
    PaillierServer, PublicKeyMessage

from round_harness import Watch

VECTORS = Path(__file__).resolve().parents[1] / "protocols" / "paillier" / "vectors"
ROUNDS = ["round_weighted_adversarial.json", "round_mean_short_exponent.json", "round_sum_signed.json"]
COMMITTEE_ROUNDS = ["committee_round.json", "committee_recovery.json", "committee_bad_share.json",
                    "committee_too_few_shares.json", "committee_recovery_fails.json", "committee_signed_round.json"]
REFUSALS = ["committee_member_refusals.json", "committee_signed_refusals.json"]
FILES = ["primitives.json", "packing.json", *ROUNDS, *COMMITTEE_ROUNDS, *REFUSALS]


def load(name):
    return json.loads((VECTORS / name).read_text())


def generator():
    spec = importlib.util.spec_from_file_location("paillier_vectors_generate", VECTORS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_every_file_byte_for_byte():
    gen = generator()
    built = gen.build_all()
    assert sorted(built) == sorted(FILES)
    for name, obj in built.items():
        assert gen.dumps(obj) == (VECTORS / name).read_text(), name


def keypair(key_json):
    pk, sk = pl.keypair_from_primes(int(key_json["p"], 16), int(key_json["q"], 16))
    assert pk.n == int(key_json["n"], 16) and pk.key_id.hex() == key_json["key_id"]
    return pk, sk


def test_primitives_vector():
    v = load("primitives.json")
    pk, sk = keypair(v["key"])
    assert pl.djn_base(pk) == int(v["djn_base"], 16)
    phe_pk, phe_sk = pk.to_phe(), sk.to_phe()
    for case in v["encryptions"]:
        m = int(case["plaintext"], 16)
        c = int(case["ciphertext"], 16)
        assert len(bytes.fromhex(case["ciphertext"])) == pk.ciphertext_bytes
        if case["randomizer"] == "standard":
            r = int(case["r"], 16)
            assert pow(r, pk.n, pk.n_square) == int(case["obfuscator"], 16)
            assert phe_pk.raw_encrypt(m, r_value=r) == c
        else:
            a = int(case["a"], 16)
            assert a < 1 << case["exponent_bits"]
            assert pow(int(v["djn_base"], 16), a, int(pk.n_square)) == int(case["obfuscator"], 16)
            assert (1 + m * pk.n) * int(case["obfuscator"], 16) % pk.n_square == c
        assert phe_sk.raw_decrypt(c) == m
    for case in v["invalid_ciphertexts"]:
        with pytest.raises(errors.SecAggError) as info:  # the primitive's typed refusal
            pl.ciphertexts_from_bytes(pk, bytes.fromhex(case["ciphertext"]), 1)
        assert info.value.reason is errors.AbortReason.INVALID_CIPHERTEXT, case["why"]


def test_packing_vector():
    v = load("packing.json")
    for entry in v["layouts"]:
        enc = FixedPoint(entry["clip"], entry["frac_bits"], entry["max_weight"])
        if "error" in entry:
            with pytest.raises(getattr(errors, entry["error"])):
                PackingLayout.derive(enc, entry["max_clients"], entry["key_bits"])
            continue
        lay = PackingLayout.derive(enc, entry["max_clients"], entry["key_bits"])
        assert lay.slot_bits == entry["slot_bits"] == (2 * entry["max_clients"] * entry["bound"]).bit_length()
        assert lay.slots == entry["slots_per_ciphertext"] == (entry["key_bits"] - 1) // entry["slot_bits"]
    ex = v["example"]
    lay = PackingLayout.for_bound(ex["layout"]["bound"], ex["layout"]["max_clients"], ex["layout"]["key_bits"])
    s, b = lay.slot_bits, lay.bound
    for q, packed in zip(ex["clients"], ex["packed"]):
        # the layout by hand: slot j of plaintext i holds q[i*k + j] + B at bits [j s, (j+1) s)
        expect = []
        for i in range(0, len(q), lay.slots):
            expect.append(sum((v_ + b) << (j * s) for j, v_ in enumerate(q[i:i + lay.slots])))
        assert [int(m, 16) for m in packed] == expect
    total = [sum(int(p[i], 16) for p in ex["packed"]) for i in range(len(ex["packed"][0]))]
    assert [format(t, "x") for t in total] == ex["packed_sum"]
    assert ex["sums"] == list(np.sum(ex["clients"], axis=0))
    assert list(lay.unpack(total, ex["length"], len(ex["clients"]))) == ex["sums"]


def block_digest(records, length):
    """A submission's digest (SPEC §3.2), by hand: SHA-256 of the tag and the
    SHA-256 hashes of its blocks of 64 records (the last may be shorter)."""
    step = 64 * length
    hashes = b"".join(hashlib.sha256(b"secagg/v1/paillier/block\x00" + records[i:i + step]).digest()
                      for i in range(0, len(records), step))
    return hashlib.sha256(b"secagg/v1/paillier/digest\x00" + hashes).digest()


def params_of(v):
    return wire.decode(bytes.fromhex(v["messages"]["params"]), PaillierParams)


def signed_mode(v):
    """The clients' verify keys of a signed round (``None`` for an unsigned
    one), after checking each stored submission's signature by hand: Ed25519
    over SHA-256(tag || sid || id || digest), the digest the hash of the
    hashes of 64-record blocks (SPEC §3.2)."""
    if "signing" not in v:
        return None
    keys = {int(c): bytes.fromhex(k) for c, k in v["signing"]["verify_keys"].items()}
    sid = bytes.fromhex(v["session_id"])
    for cid_str, hexdata in v["messages"]["submissions"].items():
        sub = wire.decode(bytes.fromhex(hexdata), proto.Submission)
        cid = int(cid_str)
        signed = hashlib.sha256(b"secagg/v1/paillier/submission\x00" + sid + cid.to_bytes(4, "big")
                                + block_digest(sub.ciphertexts, len(sub.ciphertexts) // params_of(v).n_ciphertexts)
                                ).digest()
        assert signed.hex() == v["signing"]["signed_messages"][cid_str]
        signatures.verify(keys[cid], signed, sub.signature)
    agg = wire.decode(bytes.fromhex(v["messages"]["aggregate"]), AggregateCiphertext)
    assert [s.client_id for s in agg.statements] == list(agg.included)
    for st in agg.statements:
        sub = wire.decode(bytes.fromhex(v["messages"]["submissions"][str(st.client_id)]), proto.Submission)
        assert st.signature == sub.signature and st.ciphertext_digest == block_digest(
            sub.ciphertexts, len(sub.ciphertexts) // params_of(v).n_ciphertexts)
    return keys


@pytest.mark.parametrize("name", ROUNDS)
def test_round_vector_replay(name):
    """The round replayed on the drivers from the file alone: a server driver
    fed the recorded bytes (each refused one refused with the recorded typed
    error, the server unchanged), the key holder's driver fed the recorded
    aggregate; phe for the arithmetic. A signed round's server and key holder
    check the signatures with the verify keys stored in the file."""
    v = load(name)
    pk, sk = keypair(v["key"])
    client_keys = signed_mode(v)
    msgs = v["messages"]
    assert wire.decode(bytes.fromhex(msgs["public_key"]), PublicKeyMessage).key == pk
    params_bytes = bytes.fromhex(msgs["params"])
    params = wire.decode(params_bytes, PaillierParams)
    assert params.session_id.hex() == v["session_id"]
    assert params.layout.describe() == v["layout"]
    watch = Watch()
    server = ServerDriver(PaillierServer(params, client_keys=client_keys), params.rule, observer=watch,
                          protocol="paillier")
    assert server.start() == {c: params_bytes for c in (proto.KEY_HOLDER, *params.client_ids)}
    keyholder = ClientDriver(KeyHolderRole(PaillierKeyHolder(private_key=sk, client_keys=client_keys)))
    assert keyholder.handle(params_bytes) is None and keyholder.last_error is None  # the round registered
    sums_bytes = bytes.fromhex(msgs["sums"])

    def close_and_decrypt() -> None:  # the deadline passed: the aggregate to the key holder, its sums back
        assert server.close_stage() == {proto.KEY_HOLDER: bytes.fromhex(msgs["aggregate"])}
        assert keyholder.handle(bytes.fromhex(msgs["aggregate"])) == sums_bytes
        assert server.receive(proto.KEY_HOLDER, sums_bytes)
        assert server.close_stage() == {} and server.done

    core = server.core
    for event in v["events"]:
        data = bytes.fromhex(event["message"])
        if event["what"].startswith("late") and not server.done:
            close_and_decrypt()
        before, seen = (core.included, core.state, core.stage), len(watch.errors)
        assert server.receive(event["sender"], data) is event["accepted"], event["what"]
        if event["accepted"]:
            continue
        (party, exc), = watch.errors[seen:]
        expected = getattr(proto, event["error"], None) or getattr(errors, event["error"])
        assert party == event["sender"] and type(exc).__name__ == event["error"] and isinstance(exc, expected)
        assert exc.reason.value == event["reason"]
        assert (core.included, core.state, core.stage) == before
    if not server.done:
        close_and_decrypt()
    agg = wire.decode(bytes.fromhex(msgs["aggregate"]), AggregateCiphertext)
    assert list(agg.included) == v["included"] == list(server.result().included)
    # phe decrypts the aggregate to the packed slot sums
    phe_sk = sk.to_phe()
    cts = pl.ciphertexts_from_bytes(pk, agg.ciphertexts, params.n_ciphertexts)
    packed = [phe_sk.raw_decrypt(int(c)) for c in cts]
    sums = params.layout.unpack(packed, params.entries, len(agg.included))
    assert list(sums) == v["sums"]
    assert list(wire.decode(sums_bytes, AggregateSums).sums) == v["sums"]
    # the key holder decrypts once: a second request is refused (and its driver sends nothing)
    assert keyholder.handle(bytes.fromhex(msgs["aggregate"])) is None
    assert isinstance(keyholder.last_error, proto.AlreadyDecrypted)
    kh = PaillierKeyHolder(private_key=sk, client_keys=client_keys)
    kh.accept_params(params)
    if client_keys is not None:  # a signed key holder refuses the aggregate without its statements ...
        with pytest.raises(proto.UnexpectedSender):
            kh.decrypt_aggregate(AggregateCiphertext(agg.session_id, agg.key_id, agg.included, agg.ciphertexts))
        kh = PaillierKeyHolder(private_key=sk, client_keys=client_keys)  # ... and that consumed the session
        kh.accept_params(params)
    assert wire.encode(kh.decrypt_aggregate(bytes.fromhex(msgs["aggregate"]))).hex() == msgs["sums"]
    with pytest.raises(proto.AlreadyDecrypted):
        kh.decrypt_aggregate(agg)
    # the result against the plaintext inputs, within the error bound
    scaled = np.array(v["sums"]) / params.encoding.scale
    np.testing.assert_array_equal(finalize(params.rule, scaled[:-1], scaled[-1]), v["result"])
    np.testing.assert_array_equal(server.result().aggregate, v["result"])
    ids = v["included"]
    xs = [np.clip(v["inputs"]["updates"][i - 1], -params.clip, params.clip) for i in ids]
    ws = [v["inputs"]["weights"][i - 1] for i in ids]
    err = len(ids) / params.encoding.scale
    assert np.max(np.abs(scaled[:-1] - np.sum([w * x for w, x in zip(ws, xs)], axis=0))) < err
    assert abs(scaled[-1] - sum(ws)) < err
    # every stored submission decrypts (with phe) to the packing of a valid client vector
    for cid_str, hexdata in msgs["submissions"].items():
        sub = wire.decode(bytes.fromhex(hexdata), proto.Submission)
        assert sub.client_id == int(cid_str) and sub.session_id == params.session_id
        one = [phe_sk.raw_decrypt(int(c)) for c in pl.ciphertexts_from_bytes(pk, sub.ciphertexts,
                                                                               params.n_ciphertexts)]
        q = params.layout.unpack(one, params.entries, 1)
        assert q[-1] == round(v["inputs"]["weights"][int(cid_str) - 1] * params.encoding.scale)


def test_packed_ciphertext_is_a_phe_ciphertext():
    v = load("round_mean_short_exponent.json")
    pk, sk = keypair(v["key"])
    sub = wire.decode(bytes.fromhex(v["messages"]["submissions"]["1"]), proto.Submission)
    c = int.from_bytes(sub.ciphertexts[: pk.ciphertext_bytes], "big")
    enc = phe_paillier.EncryptedNumber(pk.to_phe(), c, 0)
    assert sk.to_phe().decrypt_encoded(enc).encoding == sk.decrypt(c)


# ---------------------------------------------------------------- committee rounds (SPEC §8)
#
# The hash inputs below are written from SPEC §8 alone (tags, length
# prefixes, byte orders), not taken from the code, so a difference between the
# spec and the code fails here.

KEY_TAG = b"secagg/v1/threshold-paillier/key\x00"
RHO_TAG = b"secagg/v1/threshold-paillier/batch-weights\x00"
CHALLENGE_TAG = b"secagg/v1/threshold-paillier/challenge\x00"
CONTEXT_TAG = b"secagg/v1/paillier/threshold-request\x00"
AGGREGATE_TAG = b"secagg/v1/paillier/aggregate\x00"


def _records(data, length):
    assert len(data) % length == 0
    return [int.from_bytes(data[i:i + length], "big") for i in range(0, len(data), length)]


def _indices(ranges):
    return [j for a, b in zip(ranges[0::2], ranges[1::2]) for j in range(a, b)]


class HandKey:
    """The committee's public key and the dealt share values, from the file,
    every derived value recomputed by hand."""

    def __init__(self, c):
        self.ck = wire.decode(bytes.fromhex(c["wire"]), CommitteeKey)
        self.n = int(c["n"], 16)
        self.mod = self.n * self.n
        self.length = (self.mod.bit_length() + 7) // 8
        self.t = c["threshold"]
        self.holders = c["holders"]
        self.delta = math.factorial(len(self.holders))
        self.v = int(c["v"], 16)
        self.vks = [int(x, 16) for x in c["verification_keys"]]
        assert self.ck.public_key.n == self.n and self.ck.threshold == self.t == len(self.holders) // 2 + 1
        assert list(self.ck.holders) == self.holders and self.delta == c["delta"]
        assert int.from_bytes(self.ck.base, "big") == self.v
        assert _records(self.ck.verification_keys, self.length) == self.vks
        h = hashlib.sha256(KEY_TAG)
        for x in (self.n, 1, self.t, len(self.holders), self.v, *self.vks):
            b = x.to_bytes((x.bit_length() + 7) // 8 or 1, "big")
            h.update(len(b).to_bytes(4, "big") + b)
        self.key_id = h.digest()
        assert self.key_id.hex() == c["key_id"] == self.ck.key_id.hex()
        self.secrets = {int(hh): int(x, 16) for hh, x in c["share_secrets"].items()}
        for hh, s_i in self.secrets.items():  # each share matches its verification key v_i = v^(Delta s_i)
            assert pow(self.v, self.delta * s_i, self.mod) == self.vks[self.index(hh) - 1]
        # v is a square's image: v^(2 m') for no m' we know; at least it is a unit of Z*_{n^2} other than 1
        assert math.gcd(self.v, self.n) == 1 and self.v != 1

    def index(self, holder):
        return self.holders.index(holder) + 1

    def share(self, holder):
        return tp.KeyShare(self.ck.key, self.index(holder), self.secrets[holder])

    def partial(self, holder, c):
        return pow(c, 2 * self.delta * self.secrets[holder], self.mod)

    def combine(self, partials):
        """``{holder: share of one ciphertext}`` for exactly t holders -> the plaintext."""
        idx = {self.index(h): w for h, w in partials.items()}
        assert len(idx) == self.t
        lam = {}
        for i in idx:
            num = den = 1
            for j in idx:
                if j != i:
                    num, den = num * j, den * (j - i)
            lam[i] = Fraction(num, den)
        d = math.lcm(*(f.denominator for f in lam.values()))
        c1 = 1
        for i, w in idx.items():
            e = 2 * d * lam[i]
            assert e.denominator == 1
            c1 = c1 * pow(w, int(e), self.mod) % self.mod
        assert (c1 - 1) % self.n == 0
        return (c1 - 1) // self.n * pow(4 * self.delta * d, -1, self.n) % self.n

    def verify(self, request, answer):
        """The server's check of one answer, by hand (SPEC §8.4): the
        intermediate values and whether the challenge matches."""
        sid, agg = request.session_id, request.aggregate
        digest = hashlib.sha256(AGGREGATE_TAG + sid + agg).digest()
        assert answer.aggregate_digest == digest and answer.session_id == sid
        ctx = hashlib.sha256(CONTEXT_TAG + sid + digest + answer.holder.to_bytes(4, "big")
                             + request.attempt.to_bytes(1, "big")
                             + b"".join(r.to_bytes(8, "big") for r in request.ranges)).digest()
        cts = _records(agg, self.length)
        cs = [cts[j] for j in _indices(request.ranges)]
        values = _records(answer.values, self.length)
        assert len(values) == len(cs) and all(0 < w < self.mod and math.gcd(w, self.n) == 1 for w in values)
        i = self.index(answer.holder)
        enc = lambda xs: b"".join(x.to_bytes(self.length, "big") for x in xs)  # noqa: E731
        seed = (RHO_TAG + self.key_id + len(ctx).to_bytes(4, "big") + ctx + i.to_bytes(4, "big")
                + hashlib.sha256(enc(cs)).digest() + hashlib.sha256(enc(values)).digest())
        stream = hashlib.shake_256(seed).digest(16 * len(values))
        rho = [int.from_bytes(stream[16 * j:16 * j + 16], "big") for j in range(len(values))]
        x = y = 1
        for c, w, r in zip(cs, values, rho):
            x, y = x * pow(c, r, self.mod) % self.mod, y * pow(w, r, self.mod) % self.mod
        x4, y2 = pow(x, 4, self.mod), pow(y, 2, self.mod)
        e, z = int.from_bytes(answer.challenge, "big"), int.from_bytes(answer.response, "big")
        bound = self.delta.bit_length() + self.mod.bit_length() + 128 + 128
        assert len(answer.challenge) == 16 and 0 <= z < 1 << (bound + 1)
        a = pow(x4, z, self.mod) * pow(y2, -e, self.mod) % self.mod
        b = pow(self.v, z, self.mod) * pow(self.vks[i - 1], -e, self.mod) % self.mod
        h = hashlib.sha256(CHALLENGE_TAG + self.key_id + len(ctx).to_bytes(4, "big") + ctx + i.to_bytes(4, "big")
                           + enc([x4, y2, self.v, self.vks[i - 1], a, b])).digest()
        recomputed = int.from_bytes(h[:16], "big")
        return ctx, {"index": i, "weights": [format(r, "032x") for r in rho], "x4": format(x4, "x"),
                     "y2": format(y2, "x"), "a": format(a, "x"), "b": format(b, "x"), "challenge": format(e, "x"),
                     "recomputed_challenge": format(recomputed, "x"), "verifies": recomputed == e}


def _verify_keys(v):
    return {int(c): bytes.fromhex(k) for c, k in v["signing"]["verify_keys"].items()} if "signing" in v else None


def _member(v, hk, holder, label):
    signing = v["signing"]["private_keys"][str(holder)] if "signing" in v else None
    return ClientDriver(CommitteeClientRole(holder, wire.decode(bytes.fromhex(v["committee"]["wire"]), CommitteeKey),
                                            hk.share(holder), rng=DeterministicRandom(v["seed"]).fork(label),
                                            min_key_bits=512, signing_key=None if signing is None
                                            else bytes.fromhex(signing), client_keys=_verify_keys(v)))


def _check_signed_request(hk, req, subs, keys):
    """A signed request's statements and evidence, by hand (SPEC §3.2, §8.8):
    each statement is its client's Ed25519 signature over this session and
    the digest of its block hashes; each evidence item carries exactly those
    block hashes and the client's records of the blocks covering the ranges,
    and their product is the aggregate there."""
    assert [st.client_id for st in req.statements] == [e.client_id for e in req.evidence] == list(req.included)
    count = len(req.aggregate) // hk.length
    covered = sorted({j // 64 for j in _indices(req.ranges)})
    idx = [j for b in covered for j in range(64 * b, min(count, 64 * b + 64))]
    product = [1] * len(idx)
    for st, ev in zip(req.statements, req.evidence):
        records = subs[st.client_id].ciphertexts
        assert st.ciphertext_digest == block_digest(records, hk.length)
        signed = hashlib.sha256(b"secagg/v1/paillier/submission\x00" + req.session_id
                                + st.client_id.to_bytes(4, "big") + st.ciphertext_digest).digest()
        signatures.verify(keys[st.client_id], signed, st.signature)
        step = 64 * hk.length
        assert ev.block_hashes == b"".join(hashlib.sha256(b"secagg/v1/paillier/block\x00" + records[i:i + step])
                                           .digest() for i in range(0, len(records), step))
        mine = _records(records, hk.length)
        assert _records(ev.records, hk.length) == [mine[j] for j in idx]
        product = [a * mine[j] % hk.mod for a, j in zip(product, idx)]
    agg = _records(req.aggregate, hk.length)
    assert product == [agg[j] for j in idx]


@pytest.mark.parametrize("name", COMMITTEE_ROUNDS)
def test_committee_round_vector_replay(name):
    """A committee round from the file alone: the key and shares checked by
    hand; every member re-derives its submission and every answer byte for
    byte on its driver; each answer's proof checked by a verifier written
    from the spec, each share against c^(2 Delta s_i); a fresh server driver
    fed the recorded bytes emits exactly the recorded requests, refuses the
    recorded answers with the recorded errors and ends with the recorded
    outcome; the plaintexts combined by hand from the accepted answers."""
    v = load(name)
    hk = HandKey(v["committee"])
    msgs = v["messages"]
    assert bytes.fromhex(msgs["committee_key"]) == wire.encode(hk.ck)
    params_bytes = bytes.fromhex(msgs["params"])
    params = wire.decode(params_bytes, PaillierParams)
    assert params.session_id.hex() == v["session_id"] and params.layout.describe() == v["layout"]
    assert params.key.n == hk.n and params.rule == "sum"
    updates = v["inputs"]["updates"]
    # the members: each re-derives its submission from its update and its random stream
    members = {}
    for h in hk.holders:
        members[h] = _member(v, hk, h, f"client-{h}")
        members[h].role.precompute(params.n_ciphertexts)
        sub = members[h].handle(params_bytes, Contribution(np.array(updates[h - 1]), 1.0))
        assert sub is not None and sub.hex() == msgs["submissions"][str(h)]
    # the aggregate is the product of the four submissions mod n^2
    product = [1] * params.n_ciphertexts
    for h in hk.holders:
        sub = wire.decode(bytes.fromhex(msgs["submissions"][str(h)]), proto.Submission)
        product = [x * y % hk.mod for x, y in zip(product, _records(sub.ciphertexts, hk.length))]
    aggregate = bytes.fromhex(v["aggregate"])
    assert _records(aggregate, hk.length) == product
    assert hashlib.sha256(AGGREGATE_TAG + params.session_id + aggregate).hexdigest() == v["aggregate_digest"]
    # the server, fed the recorded bytes
    keys = _verify_keys(v)
    subs = {h: wire.decode(bytes.fromhex(msgs["submissions"][str(h)]), proto.Submission) for h in hk.holders}
    watch = Watch()
    server = ServerDriver(PaillierServer(params, committee=hk.ck, client_keys=keys), "sum", observer=watch,
                          protocol="paillier")
    assert server.start() == {h: params_bytes for h in hk.holders}
    for h in hk.holders:
        assert server.receive(h, bytes.fromhex(msgs["submissions"][str(h)]))
    valid: dict[int, dict[int, int]] = {}  # holder -> {ciphertext index: accepted share}
    gone = set()
    for entry in v["stages"]:
        out = server.close_stage()
        assert server.stage.value == entry["stage"]
        assert {str(h): data.hex() for h, data in out.items()} == {h: r["message"] for h, r in entry["requests"].items()}
        attempt = 0 if entry["stage"] == "decrypt" else 1
        for h_str, r in entry["requests"].items():
            req = wire.decode(bytes.fromhex(r["message"]), DecryptionRequest)
            assert req.attempt == r["attempt"] == attempt and list(req.ranges) == r["ranges"]
            assert req.aggregate == aggregate and req.key_id == hk.key_id and req.included == tuple(hk.holders)
            if keys is None:
                assert req.statements == () and req.evidence == ()
            else:
                _check_signed_request(hk, req, subs, keys)
        assert set(entry["vanished"]) | set(map(int, entry["answers"])) == set(map(int, entry["requests"]))
        assert not gone & set(map(int, entry["answers"]))  # a member that vanished answers nothing later
        gone |= set(entry["vanished"])
        for h_str, ans in entry["answers"].items():
            h = int(h_str)
            req_bytes = bytes.fromhex(entry["requests"][h_str]["message"])
            req = wire.decode(req_bytes, DecryptionRequest)
            # the member re-derives its answer byte for byte (its proof's randomness from its stream)
            assert members[h].handle(req_bytes).hex() == ans["message"]
            sent = wire.decode(bytes.fromhex(ans["message"]), DecryptionShares)
            ctx, proof = hk.verify(req, sent)
            assert ctx.hex() == entry["requests"][h_str]["context"]
            assert proof == ans["proof"] and proof["verifies"]
            cts = _records(aggregate, hk.length)
            idx = _indices(req.ranges)
            assert _records(sent.values, hk.length) == [hk.partial(h, cts[j]) for j in idx]
            delivered = bytes.fromhex(ans.get("delivered", ans["message"]))
            if "delivered" in ans:
                bad = wire.decode(delivered, DecryptionShares)
                _, proof = hk.verify(req, bad)
                assert proof == ans["delivered_proof"] and not proof["verifies"]
                w0 = _records(bad.values, hk.length)[0]
                assert w0 == hk.partial(h, cts[idx[0]]) * (1 + hk.n) % hk.mod
            seen = len(watch.errors)
            assert server.receive(h, delivered) is ans["accepted"]
            if ans["accepted"]:
                valid.setdefault(h, {}).update(zip(idx, _records(sent.values, hk.length)))
                continue
            (party, exc), = watch.errors[seen:]
            assert party == h and type(exc).__name__ == ans["error"] and exc.reason.value == ans["reason"]
            assert str(exc) == ans["detail"] and f"holder {h}" in str(exc)
    assert server.close_stage() == {} and server.done
    assert [{"sender": p, "stage": st, "reason": r} for p, st, r in server.rejected] == v["rejected"]
    assert server.audit_record()["decryption"]["failed_members"] == v["failed_members"]
    outcome = v["outcome"]
    if outcome["aborted"]:
        assert isinstance(server.outcome, Abort)
        assert (server.outcome.reason.value, server.outcome.stage, server.outcome.detail) == (
            outcome["reason"], outcome["stage"], outcome["detail"])
        assert outcome["reason"] == "decryption_failed"
        # some ciphertext has fewer than t accepted shares: nothing could be combined
        assert any(sum(j in got for got in valid.values()) < hk.t for j in range(params.n_ciphertexts))
        return
    # combined by hand from the accepted shares (the first t holders of each ciphertext, as the server does)
    plaintexts = []
    for j in range(params.n_ciphertexts):
        holders = sorted(h for h in valid if j in valid[h])[:hk.t]
        plaintexts.append(hk.combine({h: valid[h][j] for h in holders}))
        # and any other t holders' shares, from the dealt values, give the same plaintext
        others = [h for h in hk.holders if h not in holders][:1] + holders[1:]
        c = _records(aggregate, hk.length)[j]
        assert hk.combine({h: hk.partial(h, c) for h in others}) == plaintexts[-1]
    assert [format(m, "x") for m in plaintexts] == outcome["plaintexts"]
    sums = params.layout.unpack(plaintexts, params.entries, len(hk.holders))
    assert list(sums) == outcome["sums"]
    assert sums[-1] == len(hk.holders) << params.frac_bits  # the weight slot of a sum round
    res = server.result()
    assert list(res.included) == outcome["included"] == hk.holders
    np.testing.assert_array_equal(res.aggregate, outcome["result"])
    scaled = np.array(outcome["sums"]) / params.encoding.scale
    exact = np.sum(np.clip(np.array(updates), -params.clip, params.clip), axis=0)
    assert np.max(np.abs(scaled[:-1] - exact)) < len(hk.holders) / params.encoding.scale


LAST_ERRORS = {
    "committee_member_refusals.json": ["SessionMismatch", "SessionMismatch", "StageAlreadyAnswered", "SessionMismatch",
                                       "UnexpectedSender", "UnexpectedSender", "KeyMismatch", "WireFormatError"],
    "committee_signed_refusals.json": ["InvalidSignature", "InvalidCiphertext", "InvalidCiphertext",
                                       "InvalidCiphertext", "UnexpectedSender", "UnexpectedSender"],
}


@pytest.mark.parametrize("name", REFUSALS)
def test_committee_member_refusals_vector(name):
    """Each case replayed on a fresh member driver (its random stream from the
    file): every answered step gives the recorded bytes, every refused step
    the recorded error and nothing sent."""
    v = load(name)
    hk = HandKey(v["committee"])
    complete = load("committee_round.json" if "signing" not in v else "committee_signed_round.json")
    assert v["params"] == complete["messages"]["params"]
    params = wire.decode(bytes.fromhex(v["params"]), PaillierParams)
    update = np.array(complete["inputs"]["updates"][0])
    genuine = bytes.fromhex(complete["stages"][0]["requests"]["1"]["message"])
    for case in v["cases"] + v["limitations"]:
        member = _member(v, hk, case["member"], case["rng_fork"])
        for step in case["steps"]:
            data = bytes.fromhex(step["message"])
            reply = member.handle(data, Contribution(update, 1.0) if step["contribution"] else None)
            assert (None if reply is None else reply.hex()) == step["reply"], case["what"]
            exc = member.last_error
            assert (None if exc is None else type(exc).__name__) == step["error"], case["what"]
            assert getattr(getattr(exc, "reason", None), "value", None) == step["reason"]
            if step["error"] is not None:
                assert reply is None
                expected = (getattr(proto, step["error"], None) or getattr(errors, step["error"], None)
                            or getattr(__import__("secagg.drivers.store", fromlist=["x"]), step["error"]))
                assert isinstance(exc, expected)
            if step["reply"] is not None and isinstance(wire.decode(data, (PaillierParams, DecryptionRequest)),
                                                        DecryptionRequest):
                _, proof = hk.verify(wire.decode(data, DecryptionRequest),
                                     wire.decode(reply, DecryptionShares))
                assert proof["verifies"]  # an answered request carries a valid proof
    assert [c["steps"][-1]["error"] for c in v["cases"]] == LAST_ERRORS[name]
    if "signing" in v:  # the forged requests are what their cases say
        assert v["signing"] == complete["signing"]
        agg = wire.decode(genuine, DecryptionRequest).aggregate
        fresh = wire.decode(bytes.fromhex(v["cases"][0]["steps"][1]["message"]), DecryptionRequest)
        other = wire.decode(bytes.fromhex(v["another_session_params"]), PaillierParams)
        assert fresh.session_id == other.session_id and fresh.aggregate == agg
        single = wire.decode(bytes.fromhex(v["cases"][1]["steps"][1]["message"]), DecryptionRequest)
        sub1 = wire.decode(bytes.fromhex(complete["messages"]["submissions"]["1"]), proto.Submission)
        assert single.aggregate == sub1.ciphertexts and single.session_id == params.session_id
        shifted = wire.decode(bytes.fromhex(v["cases"][2]["steps"][1]["message"]), DecryptionRequest)
        first = _records(shifted.aggregate, hk.length)[0]
        assert first == _records(agg, hk.length)[0] * (1 + hk.n) % hk.mod
        assert v["limitations"] == []
        return
    cases = {c["what"].split(":")[0]: c for c in v["cases"]}
    # the second aggregate is client 1's submission, in the registered session
    second = cases["a second aggregate in a registered session"]["steps"][2]
    forged = wire.decode(bytes.fromhex(second["message"]), DecryptionRequest)
    sub1 = wire.decode(bytes.fromhex(complete["messages"]["submissions"]["1"]), proto.Submission)
    assert forged.session_id == params.session_id and forged.aggregate == sub1.ciphertexts
    # the limitation: an old aggregate in a fresh session is answered (unsigned mode)
    (lim,) = v["limitations"]
    req = wire.decode(bytes.fromhex(lim["steps"][1]["message"]), DecryptionRequest)
    other = wire.decode(bytes.fromhex(v["another_session_params"]), PaillierParams)
    assert req.session_id == other.session_id != params.session_id
    assert req.aggregate == wire.decode(genuine, DecryptionRequest).aggregate and lim["steps"][1]["reply"]
