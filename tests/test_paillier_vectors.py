"""Replay of protocols/paillier/vectors/*.json.

Two checks per file: the generator, run again, reproduces it byte for byte
(nothing drifted), and an independent replay from the file alone (keys from
the stored primes, messages from the stored bytes fed to the round drivers,
phe for the arithmetic) gives the stored outcomes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from phe import paillier as phe_paillier

from secagg import errors
from secagg.aggregation import finalize
from secagg.drivers import ClientDriver, KeyHolderRole, ServerDriver
from secagg.encoding import wire
from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.packing import PackingLayout
from secagg.primitives import paillier as pl
from secagg.protocols import paillier as proto
from secagg.primitives import signatures
from secagg.protocols.paillier import AggregateCiphertext, AggregateSums, PaillierKeyHolder, PaillierParams, \
    PaillierServer, PublicKeyMessage

from round_harness import Watch

VECTORS = Path(__file__).resolve().parents[1] / "protocols" / "paillier" / "vectors"
FILES = ["primitives.json", "packing.json", "round_weighted_adversarial.json", "round_mean_short_exponent.json",
         "round_sum_signed.json"]
ROUNDS = ["round_weighted_adversarial.json", "round_mean_short_exponent.json", "round_sum_signed.json"]


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


def signed_mode(v):
    """The clients' verify keys of a signed round (``None`` for an unsigned
    one), after checking each stored submission's signature by hand: Ed25519
    over SHA-256(tag || sid || id || SHA-256(ciphertexts))."""
    if "signing" not in v:
        return None
    keys = {int(c): bytes.fromhex(k) for c, k in v["signing"]["verify_keys"].items()}
    sid = bytes.fromhex(v["session_id"])
    for cid_str, hexdata in v["messages"]["submissions"].items():
        sub = wire.decode(bytes.fromhex(hexdata), proto.Submission)
        cid = int(cid_str)
        signed = hashlib.sha256(b"secagg/v1/paillier/submission\x00" + sid + cid.to_bytes(4, "big")
                                + hashlib.sha256(sub.ciphertexts).digest()).digest()
        assert signed.hex() == v["signing"]["signed_messages"][cid_str]
        signatures.verify(keys[cid], signed, sub.signature)
    agg = wire.decode(bytes.fromhex(v["messages"]["aggregate"]), AggregateCiphertext)
    assert [s.client_id for s in agg.statements] == list(agg.included)
    for st in agg.statements:
        sub = wire.decode(bytes.fromhex(v["messages"]["submissions"][str(st.client_id)]), proto.Submission)
        assert st.signature == sub.signature and st.ciphertext_digest == hashlib.sha256(sub.ciphertexts).digest()
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
