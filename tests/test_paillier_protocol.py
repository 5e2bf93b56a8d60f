"""The Paillier protocol roles and the simulator: round trips under every
rule against the plaintext reference, dropout, adversarial input (typed
errors, unchanged state), the trust model (the server cannot decrypt)."""

from __future__ import annotations

import dataclasses
import sys
from functools import lru_cache

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier as phe_paillier

from secagg.aggregation import Rule, reference_aggregate
from secagg.drivers import ClientDriver, Contribution, KeyHolderRole, PaillierClientRole, Recorder, ServerDriver
from secagg.drivers.concurrency import sharded_accumulator
from secagg.encoding import wire
from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.packing import PackingLayout, SlotOverflow
from secagg.errors import (AbortReason, InvalidCiphertext, LocalProtocolError, ParameterError, ProtocolAborted,
                           RemoteProtocolError, WireFormatError)
from secagg.primitives import paillier as pl
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.outcome import Abort, ServerResult
from secagg.protocols.paillier import (KEY_HOLDER, AggregateCiphertext, AggregateSums, AlreadyDecrypted,
                                       ClientState, DuplicateSubmission, KeyMismatch, LateSubmission, PaillierClient,
                                       PaillierKeyHolder, PaillierParams, PaillierServer, PublicKeyMessage,
                                       ServerState, SessionMismatch, Submission, TooFewClients, UnexpectedSender,
                                       default_encoding)
from secagg.simulation import simulate_paillier
from secagg.protocols.paillier import server as server_module

from round_harness import Network

KEY_BITS = 512
ENC = FixedPoint(clip=1.0, frac_bits=12, max_weight=4.0)


@lru_cache(maxsize=None)
def private_key(seed: str = "protocol"):
    return pl.generate_keypair(KEY_BITS, DeterministicRandom(seed))[1]


def keyholder(seed: str = "protocol") -> PaillierKeyHolder:
    return PaillierKeyHolder(private_key=private_key(seed))


def make_round(n=4, d=10, rule="weighted", seed="round", key_seed="protocol", encoding=ENC, min_clients=None,
               randomizer=pl.STANDARD):
    kh = keyholder(key_seed)
    rng = DeterministicRandom(seed)
    params = PaillierParams.create(kh.public_key, range(1, n + 1), d, encoding=encoding, rule=rule,
                                   min_clients=min_clients, rng=rng.fork("server"))
    kh.accept_params(wire.encode(params))
    clients = {}
    for cid in range(1, n + 1):
        c = PaillierClient(cid, kh.public_key_message(), rng=rng.fork(f"client-{cid}"), min_key_bits=KEY_BITS,
                           randomizer=randomizer)
        c.receive_params(wire.encode(params))
        clients[cid] = c
    return kh, params, clients


def updates_for(n, d, seed=0, scale=0.6):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, scale, d) for _ in range(n)]


def paillier_server(params, workers=1):
    """The server core; with ``workers`` > 1 its arithmetic sharded over that many processes."""
    return PaillierServer(params, accumulator=sharded_accumulator(workers)) if workers > 1 else PaillierServer(params)


def network(xs, ws=None, rule="weighted", seed="round", key_seed="protocol", encoding=ENC, min_clients=None,
            randomizer=pl.STANDARD, workers=1):
    """A Paillier round on the drivers (tests/round_harness.py): the key
    holder (party 0, holding ``keyholder(key_seed)``), a client driver per
    update, a server driver. Same seeds as :func:`make_round`, so a client
    here submits exactly what the same client there does."""
    kh = keyholder(key_seed)
    rng = DeterministicRandom(seed)
    n, d = len(xs), len(xs[0])
    params = PaillierParams.create(kh.public_key, range(1, n + 1), d, encoding=encoding, rule=rule,
                                   min_clients=min_clients, rng=rng.fork("server"))
    roles = {cid: PaillierClientRole(cid, kh.public_key_message(), rng=rng.fork(f"client-{cid}"),
                                     min_key_bits=KEY_BITS, randomizer=randomizer) for cid in range(1, n + 1)}
    drivers = {cid: ClientDriver(role) for cid, role in roles.items()}
    drivers[KEY_HOLDER] = ClientDriver(KeyHolderRole(kh))
    ws = ws or [1.0] * n
    net = Network(paillier_server(params, workers), rule, drivers,
                  {cid: Contribution(xs[cid - 1], ws[cid - 1]) for cid in roles}, protocol="paillier")
    return kh, params, roles, net


def mean_error_bound(enc: FixedPoint, n_included: int, sum_w: float) -> float:
    """SPEC.md "Error bound": |A_hat - A| <= n 2^-f (1 + clip) / (S_w - n 2^-f)."""
    e = n_included / enc.scale
    return e * (1 + enc.clip) / (sum_w - e)


# --------------------------------------------------------------- round trips

@pytest.mark.parametrize("rule", ["sum", "mean", "weighted", "fedavg", "hybrid"])
def test_round_trip_matches_reference(rule):
    n, d = 4, 37
    xs = updates_for(n, d, 1)
    xs[0][:3] = [5.0, -7.0, 1.5]  # clipped entries
    ws = [1.0, 2.5, 4.0, 0.25] if Rule(rule).uses_weights else [1.0] * n
    kh, params, roles, net = network(xs, ws, rule)
    out = net.run()
    assert isinstance(out, ServerResult) and out.included == (1, 2, 3, 4) and out.dropped == {}
    assert roles[1].clipped == int(np.count_nonzero(np.abs(xs[0]) > 1.0)) >= 3
    s_wx, s_w = out.sum_weighted, out.sum_weights
    ref_sum = reference_aggregate("sum", [w * np.clip(x, -1, 1) for x, w in zip(xs, ws)])
    assert np.max(np.abs(s_wx - ref_sum)) < ENC.sum_error_bound(n)
    assert abs(s_w - sum(ws)) < ENC.sum_error_bound(n)
    res = net.driver.result().aggregate  # the rule applied by the server driver
    np.testing.assert_array_equal(res, s_wx if rule == "sum" else s_wx / s_w)
    ref = reference_aggregate(rule, xs, ws if Rule(rule).uses_weights else None, clip=ENC.clip)
    bound = ENC.sum_error_bound(n) if rule == "sum" else mean_error_bound(ENC, n, sum(ws))
    assert np.max(np.abs(res - ref)) < bound


@pytest.mark.parametrize("rule", ["sum", "mean", "weighted", "fedavg", "hybrid"])
def test_simulator_rules_against_reference(rule):
    n, d = 5, 120
    xs = updates_for(n, d, 2)
    ws = [3.0, 1.0, 2.0, 5.0, 0.5]
    res = simulate_paillier(xs, ws, rule=rule, encoding=None, dropouts={}, rng=DeterministicRandom(rule),
                            key_bits=KEY_BITS)
    enc = FixedPoint(clip=1.0, frac_bits=res.params["frac_bits"], max_weight=res.params["max_weight"])
    used_w = ws if Rule(rule).uses_weights else None
    ref = reference_aggregate(rule, xs, used_w, clip=1.0)
    sw = sum(ws) if used_w else n
    bound = enc.sum_error_bound(n) if rule == "sum" else mean_error_bound(enc, n, sw)
    assert np.max(np.abs(res.aggregate - ref)) < bound
    assert res.protocol == "paillier" and res.rule == rule
    assert res.included == (1, 2, 3, 4, 5) and res.dropped == {}
    assert abs(res.sum_weights - sw) < enc.sum_error_bound(n)
    assert res.params["max_weight"] == (8.0 if used_w else 1.0)  # the largest weight, 5, rounded up


def test_simulator_dropout_names_included_clients():
    n, d = 6, 50
    xs = updates_for(n, d, 3)
    ws = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    res = simulate_paillier(xs, ws, rule="weighted", encoding=ENC.__class__(1.0, 12, 6.0),
                            dropouts={2: "submit", 5: "submit"}, rng=DeterministicRandom("drop"), key_bits=KEY_BITS)
    assert res.included == (1, 3, 4, 6)
    assert res.dropped == {2: "submit", 5: "submit"}
    keep = [0, 2, 3, 5]
    ref = reference_aggregate("weighted", [xs[i] for i in keep], [ws[i] for i in keep], clip=1.0)
    enc = FixedPoint(1.0, 12, 6.0)
    assert np.max(np.abs(res.aggregate - ref)) < mean_error_bound(enc, 4, sum(ws[i] for i in keep))
    assert res.bytes_sent[2] == res.bytes_sent[5] == 0
    assert all(res.bytes_sent[c] > 0 for c in res.included)
    assert all(v > 0 for v in res.bytes_received.values())
    assert len(bytes.fromhex(res.session_id)) == 32
    for stage in ("keygen", "offline_precompute", "online_encrypt", "combine", "decrypt"):
        assert stage in res.timings
    assert res.summary()["protocol"] == "paillier"


def test_simulator_deterministic_and_short_exponent():
    xs = updates_for(3, 20, 4)
    a = simulate_paillier(xs, None, rule="mean", encoding=None, dropouts={}, rng=DeterministicRandom("det"),
                          key_bits=KEY_BITS)
    b = simulate_paillier(xs, None, rule="mean", encoding=None, dropouts={}, rng=DeterministicRandom("det"),
                          key_bits=KEY_BITS)
    assert a.session_id == b.session_id
    np.testing.assert_array_equal(a.aggregate, b.aggregate)
    c = simulate_paillier(xs, None, rule="mean", encoding=None, dropouts={}, rng=DeterministicRandom("det"),
                          key_bits=KEY_BITS, short_exponent=True)
    assert c.params["randomizer"] == f"DJN base, {pl.short_exponent(KEY_BITS).exponent_bits}-bit exponent"
    np.testing.assert_allclose(c.aggregate, a.aggregate, atol=2 * 3 / 2**c.params["frac_bits"])


def test_simulator_two_workers():
    xs = updates_for(2, 30, 5)
    res = simulate_paillier(xs, None, rule="mean", encoding=None, dropouts={}, rng=DeterministicRandom("w2"),
                            key_bits=KEY_BITS, workers=2)
    ref = reference_aggregate("mean", xs, clip=1.0)
    assert np.max(np.abs(res.aggregate - ref)) < 2 * 2 / 2 ** res.params["frac_bits"]
    assert res.params["workers"] == 2


def test_simulator_everyone_dropped_aborts():
    xs = updates_for(2, 5)
    with pytest.raises(ProtocolAborted) as info:
        simulate_paillier(xs, None, rule="mean", encoding=None, dropouts={1: "submit", 2: "submit"},
                          rng=DeterministicRandom("abort"), key_bits=KEY_BITS)
    assert info.value.reason is AbortReason.TOO_FEW_SURVIVORS


def test_simulator_bad_arguments():
    xs = updates_for(2, 5)
    kw = dict(rule="mean", encoding=None, rng=DeterministicRandom("bad"), key_bits=KEY_BITS)
    with pytest.raises(ParameterError):
        simulate_paillier(xs, None, dropouts={3: "submit"}, **kw)
    with pytest.raises(ParameterError):
        simulate_paillier(xs, None, dropouts={1: "unmask"}, **kw)
    with pytest.raises(ParameterError):
        simulate_paillier([np.zeros(3), np.zeros(4)], None, dropouts={}, **kw)
    with pytest.raises(ParameterError):
        simulate_paillier(xs, [1.0], dropouts={}, **{**kw, "rule": "weighted"})
    with pytest.raises(ParameterError):  # weight above the encoding's max_weight
        simulate_paillier(xs, [1.0, 9.0], dropouts={}, **{**kw, "rule": "weighted", "encoding": ENC})
    with pytest.raises(ParameterError):
        simulate_paillier([np.array([np.nan, 0.0])] * 2, None, dropouts={}, **kw)


def test_default_encoding_targets_slot_width():
    enc = default_encoding(100, 2048)
    lay = PackingLayout.derive(enc, 100, 2048)
    assert enc.frac_bits == 14 and lay.slot_bits == 22 and lay.slots == 93
    assert default_encoding(2, 2048).frac_bits == 16
    assert default_encoding(100, 2048, max_weight=1000.0).frac_bits == 8
    assert default_encoding(100, 2048, max_weight=1000.0).max_weight == 1024.0
    assert default_encoding(3, 2048, max_weight=0.5).max_weight == 1.0


# --------------------------------------------------------------- adversarial

@pytest.fixture()
def adversarial_round():
    """A round on the drivers in which client 4's submission is late: the
    key holder (registered), every client's submission bytes, and the
    honest aggregate of 1, 2 and 3 (not yet decrypted)."""
    n, d = 4, 80  # three ciphertexts per client with a 512-bit key
    xs = updates_for(n, d, 6)
    kh, params, _, net = network(xs, [1.0, 2.0, 3.0, 4.0], "weighted", seed="adv")
    net.step(hold=True, close=False)  # the key holder registers the round; every submission is held
    subs = dict(net.held)
    assert net.release([1, 2, 3]) == {1: True, 2: True, 3: True}
    assert net.close()  # client 4's submission missed the deadline
    return kh, params, subs, net.outgoing[KEY_HOLDER]


def server_state(driver):
    core = driver.core
    return core.included, core.state, core.stage, core._accumulator.result()


def assert_rejected(driver, sender, data, error, reason=None, *, by="core"):
    """``data`` from ``sender`` is refused by the server driver with a typed
    ``error`` (reported to its observer), the server is unchanged, and the
    refusal came from ``by``: the driver's decoding (``"wire"``) or the core."""
    watch = driver.observer
    before, seen, core_seen = server_state(driver), len(watch.errors), len(driver.core.rejected)
    assert driver.receive(sender, data) is False
    (party, exc), = watch.errors[seen:]
    assert party == sender and isinstance(exc, error) and isinstance(exc, RemoteProtocolError)
    if reason is not None:
        assert exc.reason is reason
    assert server_state(driver) == before
    assert len(driver.core.rejected) == core_seen + (1 if by == "core" else 0)


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_submissions_are_typed_and_change_nothing(adversarial_round, workers):
    _, _, subs, honest_aggregate = adversarial_round
    # the same round (same seeds: the same submissions), its server's arithmetic on `workers` processes
    _, params, _, net = network(updates_for(4, 80, 6), [1.0, 2.0, 3.0, 4.0], "weighted", seed="adv",
                                workers=workers)
    net.step(hold=True, close=False)
    assert net.held == subs
    server = net.driver
    assert net.release([1]) == {1: True}
    sub2 = wire.decode(subs[2], Submission)
    pk = params.key
    L = pk.ciphertext_bytes
    # duplicate (an exact replay within the session)
    assert_rejected(server, 1, subs[1], DuplicateSubmission, AbortReason.DUPLICATE_MESSAGE)
    # replayed from another session (same key, other nonce)
    _, other_params, other_clients = make_round(4, 80, "weighted", seed="adv-other")
    replay = wire.encode(other_clients[2].submit(updates_for(4, 80)[1], 2.0))
    assert_rejected(server, 2, replay, SessionMismatch, AbortReason.SESSION_MISMATCH)
    # wrong key: a round under another key holder's key
    _, foreign_params, foreign_clients = make_round(4, 80, "weighted", seed="adv", key_seed="foreign")
    foreign = wire.encode(foreign_clients[2].submit(updates_for(4, 80)[1], 2.0))
    assert_rejected(server, 2, foreign, KeyMismatch, AbortReason.INVALID_CIPHERTEXT)
    # sender / id mismatches
    assert_rejected(server, 3, subs[2], UnexpectedSender, AbortReason.UNEXPECTED_SENDER)
    assert_rejected(server, 9, subs[2], UnexpectedSender)
    # ciphertexts outside Z*_{n^2}
    p = int(private_key().to_phe().p)
    for bad in (0, pk.n_square, pk.n, 5 * p, (1 << (8 * L)) - 1):
        blob = bad.to_bytes(L, "big") + sub2.ciphertexts[L:]
        data = wire.encode(dataclasses.replace(sub2, ciphertexts=blob))
        assert_rejected(server, 2, data, InvalidCiphertext, AbortReason.INVALID_CIPHERTEXT)
    # wrong length (the core's check), truncated message, junk, wrong message type, wrong hash length (decoding)
    for blob in (sub2.ciphertexts[:-1], sub2.ciphertexts + b"\x01", sub2.ciphertexts[:L], b""):
        assert_rejected(server, 2, wire.encode(dataclasses.replace(sub2, ciphertexts=blob)), WireFormatError)
    for data in (subs[2][:-7], subs[2][: len(subs[2]) // 2], b"", b"\x93\x01", wire.encode(params),
                 subs[2] + b"\x00"):
        assert_rejected(server, 2, data, WireFormatError, AbortReason.MALFORMED_MESSAGE, by="wire")
    short_sid = wire.encode(sub2).replace(sub2.session_id, sub2.session_id[:31], 1)
    assert_rejected(server, 2, short_sid, WireFormatError, by="wire")
    # every refusal is in the audit record, the driver's (undecodable bytes) and the core's; the
    # first against an awaited sender is its failure at this stage
    record = server.audit_record()
    assert len(server.core.rejected) == 14
    assert len(record["rejected_messages"]) == len(server.rejected) == 14 + 7  # 7 refused while decoding
    assert [(r["sender"], r["stage"], r["reason"]) for r in record["rejected_messages"]] == server.rejected
    assert set(server.core.rejected) <= set(server.rejected)
    assert {k: v.split(":")[:2] for k, v in record["failures"].items()} == {
        "2": ["submit", " rejected (session_mismatch)"], "3": ["submit", " rejected (unexpected_sender)"]}
    # the honest continuation gives exactly the honest aggregate
    assert net.release([2, 3]) == {2: True, 3: True}
    assert net.close()  # client 4 missed the deadline
    assert net.network.outbox == {KEY_HOLDER: wire.encode(honest_aggregate)}
    with pytest.raises(LocalProtocolError):
        server.core.close()  # closed once
    # late: during the Decrypt stage (only the key holder answers it), and after the round
    assert_rejected(server, 4, subs[4], RemoteProtocolError)
    assert net.step() == {KEY_HOLDER: net.replies[KEY_HOLDER]} and server.done  # the key holder decrypts
    assert server.result().included == (1, 2, 3)
    assert_rejected(server, 4, subs[4], LateSubmission, AbortReason.WRONG_ROUND)
    with pytest.raises(LocalProtocolError):
        server.close_stage()


def test_too_few_clients_is_an_abort_state():
    kh, params, _, net = network([np.zeros(5)] * 3, None, "mean", seed="few", min_clients=2)
    net.step(hold=True, close=False)
    late = net.held.pop(2)
    assert net.release([1]) == {1: True}
    assert net.close() is False and net.outgoing == {}  # nothing goes to the key holder
    server = net.server
    assert server.state is ServerState.ABORTED and server.abort_reason is AbortReason.TOO_FEW_SURVIVORS
    assert isinstance(net.outcome, Abort) and net.outcome.reason is AbortReason.TOO_FEW_SURVIVORS
    with pytest.raises(ProtocolAborted) as info:
        net.driver.result()
    assert info.value.reason is AbortReason.TOO_FEW_SURVIVORS
    assert_rejected(net.driver, 2, late, LateSubmission, AbortReason.WRONG_ROUND)


def registered(params) -> PaillierKeyHolder:
    """A key holder (the same key) with ``params`` registered."""
    kh = keyholder()
    kh.accept_params(wire.encode(params))
    return kh


def test_keyholder_refuses_everything_but_one_honest_aggregate(adversarial_round):
    kh, params, subs, aggregate = adversarial_round
    data = wire.encode(aggregate)
    L = params.key.ciphertext_bytes
    # refused before the request names a registered session: nothing changes
    with pytest.raises(WireFormatError):  # not an aggregate
        kh.decrypt_aggregate(subs[1])
    with pytest.raises(SessionMismatch):  # unknown session
        kh.decrypt_aggregate(dataclasses.replace(aggregate, session_id=bytes(32)))
    with pytest.raises(KeyMismatch):
        kh.decrypt_aggregate(dataclasses.replace(aggregate, key_id=bytes(32)))
    with pytest.raises(WireFormatError):
        kh.decrypt_aggregate(data[:-3])
    # refused after it names the session: each refusal consumes the session (a key holder of its own for each)
    pk = params.key
    junk = pl.encrypt_with_obfuscators(pk, [pk.n - 1] * params.n_ciphertexts,
                                       pl.precompute_obfuscators(pk, params.n_ciphertexts, DeterministicRandom("j")))
    for bad, error in [
        (dataclasses.replace(aggregate, included=(1, 1, 2)), UnexpectedSender),
        (dataclasses.replace(aggregate, included=(1, 2, 99)), UnexpectedSender),
        (dataclasses.replace(aggregate, ciphertexts=aggregate.ciphertexts[:-L]), WireFormatError),
        (dataclasses.replace(aggregate, ciphertexts=bytes(L) + aggregate.ciphertexts[L:]), InvalidCiphertext),
        # bits above the last slot (not a sum of honest packed plaintexts)
        (dataclasses.replace(aggregate, ciphertexts=pl.ciphertexts_to_bytes(pk, junk)), SlotOverflow),
    ]:
        other = registered(params)
        with pytest.raises(error):
            other.decrypt_aggregate(bad)
        with pytest.raises(AlreadyDecrypted):  # the honest aggregate, too late
            other.decrypt_aggregate(data)
    # the refusals before the session was named consumed nothing: the honest aggregate decrypts, once
    sums = kh.decrypt_aggregate(data)
    assert sums.included == (1, 2, 3)
    with pytest.raises(AlreadyDecrypted):
        kh.decrypt_aggregate(data)


def test_keyholder_min_clients_and_mean_weight_check():
    kh, params, clients = make_round(3, 5, "mean", seed="mean-check", min_clients=2)
    subs = {c: wire.decode(wire.encode(cl.submit(np.full(5, 0.1))), Submission) for c, cl in clients.items()}
    # a server claiming 3 clients for the ciphertexts of 2: the weight slot says 2
    pk = params.key
    c1 = pl.ciphertexts_from_bytes(pk, subs[1].ciphertexts, params.n_ciphertexts)
    c2 = pl.ciphertexts_from_bytes(pk, subs[2].ciphertexts, params.n_ciphertexts)
    pl.multiply_into(pk, c1, c2)
    blob = pl.ciphertexts_to_bytes(pk, c1)
    lie = AggregateCiphertext(params.session_id, pk.key_id, (1, 2, 3), blob)
    with pytest.raises(SlotOverflow):
        kh.decrypt_aggregate(lie)
    with pytest.raises(TooFewClients):
        registered(params).decrypt_aggregate(AggregateCiphertext(params.session_id, pk.key_id, (1,),
                                                                 subs[1].ciphertexts))
    ok = registered(params).decrypt_aggregate(AggregateCiphertext(params.session_id, pk.key_id, (1, 2), blob))
    assert int(ok.sums[-1]) == 2 << params.frac_bits


def test_client_checks():
    kh, params, clients = make_round(2, 4, "weighted", seed="client")
    c = clients[1]
    with pytest.raises(LocalProtocolError):
        c.receive_params(params)
    with pytest.raises(ParameterError):
        c.submit(np.zeros(5), 1.0)  # wrong length
    with pytest.raises(ParameterError):
        c.submit(np.zeros(4), 5.0)  # weight above max_weight
    c.submit(np.zeros(4), 1.0)
    assert c.state is ClientState.SUBMITTED
    with pytest.raises(LocalProtocolError):
        c.submit(np.zeros(4), 1.0)
    # pinned key: parameters carrying another key are refused
    other = PaillierClient(1, keyholder("foreign").public_key, min_key_bits=KEY_BITS)
    with pytest.raises(KeyMismatch):
        other.receive_params(wire.encode(params))
    stranger = PaillierClient(7, kh.public_key, min_key_bits=KEY_BITS)
    with pytest.raises(UnexpectedSender):
        stranger.receive_params(params)
    # small keys are refused unless explicitly allowed
    with pytest.raises(ParameterError):
        PaillierClient(1, kh.public_key)


def test_pool_offline_online_split():
    kh, params, roles, net = network([np.full(300, 0.25), np.full(300, -0.25)], None, "mean", seed="pool")
    roles[1].precompute(params.n_ciphertexts)
    assert len(roles[1].pool) == params.n_ciphertexts
    out = net.run()
    assert len(roles[1].pool) == 0 and roles[1].online_exponentiations == 0
    # a client without a pool still works (tops up online) and says so
    assert roles[2].online_exponentiations == params.n_ciphertexts
    assert np.max(np.abs(out.sum_weighted)) <= 2 / params.encoding.scale and out.sum_weights == 2


def test_params_validation_and_session_binding():
    kh = keyholder()
    rng = DeterministicRandom("params")
    p1 = PaillierParams.create(kh.public_key, [1, 2, 3], 10, encoding=ENC, rng=rng)
    p2 = PaillierParams.create(kh.public_key, [1, 2, 3], 10, encoding=ENC, rng=rng)
    assert p1.session_id != p2.session_id  # fresh nonce per round
    assert wire.decode(wire.encode(p1), PaillierParams).session_id == p1.session_id
    with pytest.raises(ParameterError):  # a layout that could carry is refused before the round
        PaillierParams.create(kh.public_key, range(1, 1001), 10, encoding=FixedPoint(4.0, 40, 1000.0), rng=rng)
    with pytest.raises(ParameterError):
        PaillierParams.create(kh.public_key, [1, 2], 10, min_clients=3, rng=rng)
    with pytest.raises(ParameterError):
        PaillierParams.create(kh.public_key, [1, 2], 10, rule="median", rng=rng)
    bad = wire.encode(p1).replace(p1.public_key.modulus, b"\x00" + p1.public_key.modulus[1:], 1)
    with pytest.raises(WireFormatError):
        wire.decode(bad, PaillierParams)
    with pytest.raises(WireFormatError):
        wire.decode(wire.encode(p1)[:-2], PaillierParams)
    with pytest.raises(KeyMismatch):
        keyholder("foreign").accept_params(p1)
    assert wire.decode(wire.encode(PublicKeyMessage.from_key(kh.public_key)), PublicKeyMessage).key == kh.public_key


# --------------------------------------------------------------- trust model

def _walk(obj, seen=None):
    """Every object reachable from ``obj`` through attributes and containers."""
    seen = set() if seen is None else seen
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, (type, type(sys))) or callable(o) and not hasattr(o, "__dict__"):
            continue
        seen.add(id(o))
        yield o
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        else:
            stack.extend(getattr(o, "__dict__", {}).values())
            for cls in type(o).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if hasattr(o, slot):
                        stack.append(getattr(o, slot))


def test_server_has_no_way_to_decrypt(adversarial_round):
    kh, params, subs, _ = adversarial_round
    server = ServerDriver(PaillierServer(wire.decode(wire.encode(params), PaillierParams)), "weighted",
                          observer=Recorder(transcript=True), protocol="paillier")
    server.start()
    for cid in (1, 2, 4):
        assert server.receive(cid, subs[cid])
    received = [wire.decode(subs[c], Submission) for c in (1, 2, 4)] + [params]
    phe_key = private_key().to_phe()
    secrets = {int(phe_key.p), int(phe_key.q), int(phe_key.hp), int(phe_key.hq), int(phe_key.p_inverse),
               int((phe_key.p - 1) * (phe_key.q - 1))}
    for root in [server, *received]:
        for o in _walk(root):
            assert not isinstance(o, (pl.PrivateKey, phe_paillier.PaillierPrivateKey, PaillierKeyHolder))
            if isinstance(o, int) or type(o).__name__ == "mpz":
                assert int(o) not in secrets
            if isinstance(o, bytes):
                assert not any(s.to_bytes((s.bit_length() + 7) // 8, "big") in o for s in secrets if s > 1 << 64)
    # nothing on the server class or in its module decrypts
    assert not [a for a in dir(PaillierServer) if "decrypt" in a.lower()]
    assert "keyholder" not in {m.rsplit(".", 1)[-1] for m in vars(server_module) if isinstance(m, str)}
    assert not any(isinstance(v, type) and v in (pl.PrivateKey, PaillierKeyHolder) for v in vars(server_module).values())
    assert not hasattr(server_module, "phe")
    agg = wire.decode(server.close_stage()[KEY_HOLDER], AggregateCiphertext)
    assert agg.included == (1, 2, 4)
    # the aggregate is a product of ciphertexts: without the key it is a random-looking unit mod n^2
    for c in pl.ciphertexts_from_bytes(params.key, agg.ciphertexts, params.n_ciphertexts):
        assert gmpy2.gcd(c, params.key.n) == 1


def test_phe_private_key_decrypts_packed_ciphertext():
    """Interop: a packed ciphertext is a plain Paillier ciphertext; phe's
    raw_decrypt of one client's ciphertext gives the packed integer."""
    kh, params, clients = make_round(2, 40, "weighted", seed="interop")
    x = updates_for(1, 40, 9)[0]
    sub = clients[1].submit(x, 2.0)
    cts = pl.ciphertexts_from_bytes(params.key, sub.ciphertexts, params.n_ciphertexts)
    phe_key = private_key().to_phe()
    packed = [phe_key.raw_decrypt(int(c)) for c in cts]
    assert all(0 <= m < 1 << params.layout.packed_bits for m in packed)
    q = params.layout.unpack(packed, params.entries, 1)
    assert abs(q[-1] - 2.0 * params.encoding.scale) == 0
    np.testing.assert_allclose(q[:-1] / params.encoding.scale, 2.0 * np.clip(x, -1, 1),
                               atol=1 / params.encoding.scale)
    assert params.layout.pack(q) == packed
    # and phe's EncryptedNumber arithmetic on it works as on any phe ciphertext
    enc_num = phe_paillier.EncryptedNumber(phe_key.public_key, int(cts[0]), 0)
    assert phe_key.decrypt_encoded(enc_num + enc_num).encoding == 2 * packed[0]


# --------------------------------------------------------------- schedules (property)

SCHEDULE_XS = updates_for(5, 60, 11)
SCHEDULE_WS = [1.0, 0.5, 4.0, 2.0, 3.0]


def _schedule_round():
    return network(SCHEDULE_XS, SCHEDULE_WS, "weighted", seed="schedule", min_clients=2)


@lru_cache(maxsize=None)
def _schedule_fixture():
    """Every client's submission (the same in every round of this seed), what
    each encoded (test-only decryption), and three bad messages."""
    _, params, _, net = _schedule_round()
    net.step(hold=True, close=False)
    subs = dict(net.held)
    sk = private_key()
    quantized = {}
    for cid, data in subs.items():
        cts = pl.ciphertexts_from_bytes(params.key, wire.decode(data, Submission).ciphertexts, params.n_ciphertexts)
        quantized[cid] = params.layout.unpack(sk.decrypt_many(cts), params.entries, 1)
    sub = wire.decode(subs[1], Submission)
    bad = [wire.encode(dataclasses.replace(sub, ciphertexts=bytes(params.key.ciphertext_bytes) + sub.ciphertexts[
        params.key.ciphertext_bytes:])), subs[1][:-5], wire.encode(dataclasses.replace(sub, session_id=bytes(32)))]
    return params, subs, quantized, bad


@settings(max_examples=40)
@given(st.permutations([1, 2, 3, 4, 5]), st.integers(0, 5), st.lists(st.tuples(st.integers(0, 2), st.integers(1, 5)),
                                                                    max_size=6), st.data())
def test_any_dropout_schedule_and_noise_gives_the_sum_of_the_included(order, k, noise, data):
    """Submissions arrive in any order (those after the k-th miss the
    deadline), with bad messages and duplicates anywhere in between: the
    round ends with exactly the sum of the included clients' encodings, or
    aborts when fewer than ``min_clients`` (2) submitted."""
    params, subs, quantized, bad = _schedule_fixture()
    _, _, _, net = _schedule_round()
    server = net.driver
    net.step(parties=[KEY_HOLDER], close=False)  # the key holder registers the round
    submitters = order[:k]
    events = [("ok", c) for c in submitters]
    for which, sender in noise:  # bad messages and duplicates at random points
        pos = data.draw(st.integers(0, len(events)))
        events.insert(pos, ("bad", (which, sender)))
    seen = set()
    for kind, arg in events:
        if kind == "ok":
            assert wire.encode(net.step(parties=[arg], close=False)[arg]) == subs[arg]
            seen.add(arg)
        else:
            which, sender = arg
            assert server.receive(sender, bad[which]) is False
            assert isinstance(net.watch.errors[-1][1], RemoteProtocolError)
            if sender in seen:
                assert server.receive(sender, subs[sender]) is False
                assert isinstance(net.watch.errors[-1][1], DuplicateSubmission)
    assert net.server.included == tuple(sorted(submitters))
    if not net.close():
        assert k < params.min_clients == 2 and net.outcome.reason is AbortReason.TOO_FEW_SURVIVORS
        return
    assert k >= 2
    out = net.run()  # the key holder decrypts
    assert out.included == tuple(sorted(submitters))
    assert out.dropped == {c: "submit" for c in order[k:]}
    assert isinstance(net.replies[KEY_HOLDER], AggregateSums)
    sums = net.replies[KEY_HOLDER].sums
    np.testing.assert_array_equal(sums, np.sum([quantized[c] for c in submitters], axis=0))
    np.testing.assert_array_equal(out.sum_weighted, sums[:-1] / params.encoding.scale)


def test_nothing_secret_is_picklable_and_no_exponent_on_the_wire():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(keyholder())
    # a submission carries ids, hashes and fixed-length records: no per-value exponent
    assert [f.name for f in dataclasses.fields(Submission)] == ["session_id", "key_id", "client_id", "ciphertexts",
                                                                "signature"]
    assert [f.name for f in dataclasses.fields(AggregateCiphertext)] == ["session_id", "key_id", "included",
                                                                        "ciphertexts", "statements"]


def test_keyholder_threads_default_and_validation():
    """By default the key holder decrypts on every CPU it may use; an explicit
    count is kept; nonsense is a ParameterError. Decryption gives the same
    aggregate whatever the thread count."""
    import os

    kh = PaillierKeyHolder(private_key=private_key())
    assert kh.threads == len(os.sched_getaffinity(0))
    assert PaillierKeyHolder(private_key=private_key(), threads=3).threads == 3
    assert PaillierKeyHolder(private_key=private_key(), threads=np.int64(2)).threads == 2
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ParameterError):
            PaillierKeyHolder(private_key=private_key(), threads=bad)
    sk = private_key()
    cts = [pl.encrypt(sk.public_key, m) for m in range(40)]
    assert sk.decrypt_many(cts, threads=1) == sk.decrypt_many(cts, threads=kh.threads) == list(range(40))


@pytest.mark.parametrize("name, marker", [("standard", "standard r^n"), ("djn", f"{KEY_BITS + 128}-bit exponent"),
                                          ("djn-short", f"{pl.short_exponent(KEY_BITS).exponent_bits}-bit exponent")])
def test_simulator_randomizer_choice(name, marker):
    """Each named randomizer gives the right aggregate and is named in the
    round's parameters; unknown or contradictory choices are ParameterErrors."""
    xs = updates_for(3, 12, 9)
    res = simulate_paillier(xs, None, rule="mean", encoding=None, dropouts={}, rng=DeterministicRandom(name),
                            key_bits=KEY_BITS, randomizer=name)
    assert marker in res.params["randomizer"]
    ref = reference_aggregate("mean", xs, clip=1.0)
    assert np.max(np.abs(res.aggregate - ref)) < 2 * 3 / 2 ** res.params["frac_bits"]


def test_simulator_randomizer_errors():
    xs = updates_for(2, 4, 1)
    for kwargs in ({"randomizer": "rsa"}, {"randomizer": "standard", "short_exponent": True}):
        with pytest.raises(ParameterError):
            simulate_paillier(xs, None, rule="mean", encoding=None, dropouts={}, rng=DeterministicRandom(1),
                              key_bits=KEY_BITS, **kwargs)
