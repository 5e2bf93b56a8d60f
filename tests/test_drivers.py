"""Adversarial tests of the round drivers (secagg/drivers) and the in-process
transport: the once-per-(session, stage) claim under copied state, what a
refused message does (and does not) change on either side, the server
driver's books (failures, gone, ready, the audit record), sender ids, the
Recorder, a key holder that refuses, and bounded tombstones."""

from __future__ import annotations

import dataclasses
import os
import threading
from functools import lru_cache

import numpy as np
import pytest

from secagg.drivers import (ClientDriver, Contribution, DirectoryStore, KeyHolderRole, MaskingClientRole,
                            MemoryStore, Observer, PaillierClientRole, Recorder, ServerDriver, StageAlreadyAnswered,
                            StateStore)
from secagg.drivers.observer import CLIENT, SERVER, TO_CLIENT, TO_SERVER
from secagg.encoding import wire
from secagg.errors import (AbortReason, InvalidCiphertext, LocalProtocolError, ParameterError, ProtocolAborted,
                           RemoteProtocolError, WireFormatError)
from secagg.primitives import paillier as pl
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.masking import (AdvertiseKeys, ForwardedShares, MaskingParams, MaskingServer, ServerResult,
                                      ShareKeys, UnmaskRequest, UnmaskShares)
from secagg.protocols.outcome import Abort
from secagg.protocols.paillier import (KEY_HOLDER, AggregateCiphertext, PaillierKeyHolder, PaillierParams,
                                       PaillierServer)
from secagg.protocols.stages import Stage
from secagg.transports.inprocess import LocalRound

from masking_harness import Round
from round_harness import Network


class CopiedState(StateStore):
    """A client's state kept as a copy (a transport that hands each task a
    snapshot of the node's state), its claims in a shared ``claims`` store."""

    def __init__(self, states: dict[bytes, object], claims: StateStore):
        self.states = states
        self.claims = claims

    def load(self, session: bytes) -> object | None:
        return self.states.get(session)

    def save(self, session: bytes, state: object) -> None:
        self.states[session] = state

    def claim(self, session: bytes, stage: str) -> None:
        self.claims.claim(session, stage)

    def finish(self, session: bytes) -> None:
        self.states.pop(session, None)
        self.claims.finish(session)


def _ids(*xs: int) -> np.ndarray:
    return np.array(sorted(xs), dtype=np.uint32)


# ============================================================ (a) one answer per stage, whatever copies exist

@pytest.mark.parametrize("claims", ["memory", "directory"])
def test_a_copied_state_cannot_answer_a_stage_twice(tmp_path, claims):
    """Client 1's state is copied before unmasking (the claims are shared: one
    MemoryStore, or a DirectoryStore instance per copy on one directory). The
    original answers the honest request, revealing the self-mask share of
    client 3; the copy is asked with 3 listed as dropped. Its core computes
    the mask-key shares, but the claim is spent: nothing leaves, the copy
    saves nothing, and the original finishes the round."""
    shared: dict[int, MemoryStore] = {}

    def claim_store(i: int) -> StateStore:  # each client's own claims, shared by its copies
        return shared.setdefault(i, MemoryStore()) if claims == "memory" else DirectoryStore(tmp_path / f"claims{i}")

    r = Round(n=6, store=lambda i: CopiedState({}, claim_store(i)))
    r.run_to("unmasking")
    sid = r.params.session_id
    snapshot = dict(r.stores[1].states)
    twin = ClientDriver(MaskingClientRole(1, rng=DeterministicRandom("twin")), CopiedState(snapshot, claim_store(1)))
    honest: UnmaskRequest = r.outgoing[1]
    lie = dataclasses.replace(honest, alive=_ids(*[v for v in honest.alive.tolist() if v != 3]), dropped=_ids(3))
    replies = r.step(parties=[1], close=False)
    assert isinstance(replies[1], UnmaskShares) and 3 in replies[1].self_mask_owners.tolist()
    assert twin.handle(wire.encode(lie)) is None
    assert isinstance(twin.last_error, StageAlreadyAnswered)
    assert twin.store.load(sid) is snapshot[sid]  # the copy saved nothing
    out = r.run()
    assert isinstance(out, ServerResult) and 1 in out.included and r.error(1) is None
    # the other order: the copy answers first, then the original is refused
    shared.clear()
    tmp_path = tmp_path / "again"
    r = Round(n=6, store=lambda i: CopiedState({}, claim_store(i)))
    r.run_to("share_keys")
    twin = ClientDriver(MaskingClientRole(2, rng=DeterministicRandom("twin")),
                        CopiedState(dict(r.stores[2].states), claim_store(2)))
    assert isinstance(wire.decode(twin.handle(r.network.outbox[2])), ShareKeys)
    assert r.step(parties=[2], close=False) == {}
    assert isinstance(r.error(2), StageAlreadyAnswered)


def test_the_same_message_twice_is_answered_once(tmp_path):
    """The same driver, or a second driver over another DirectoryStore
    instance on the same directory, gets a message it already answered (a
    duplicate delivery): no second answer, a typed ``wrong_round`` refusal
    that changes nothing, so the client stays in the round and answers the
    next stage as if the duplicate never came."""
    r = Round(n=6, store=lambda i: DirectoryStore(tmp_path / str(i)))
    r.advertise()
    message = r.network.outbox[1]
    first = r.step(parties=[1], close=False)[1]
    assert isinstance(first, ShareKeys)
    saved = wire.encode(r.stores[1].load(r.params.session_id))
    assert r.send(1, message) is None
    assert r.refusal(1) is AbortReason.WRONG_ROUND and not r.ended(1)
    other = ClientDriver(r.roles[1], DirectoryStore(tmp_path / "1"))
    assert other.handle(message) is None and other.last_error.reason is AbortReason.WRONG_ROUND
    assert wire.encode(r.stores[1].load(r.params.session_id)) == saved  # nothing changed
    assert not (tmp_path / "1" / f"{r.params.session_id.hex()}.done").exists()
    out = r.run()
    assert isinstance(out, ServerResult) and out.dropped == {} and 1 in out.included
    assert (tmp_path / "1" / f"{r.params.session_id.hex()}.done").exists()  # finished at the end


def test_concurrent_claims_on_one_directory_let_exactly_one_through(tmp_path):
    """Sixteen threads, each with its own DirectoryStore instance on one
    directory, claim the same (session, stage): exactly one succeeds."""
    sid = bytes(range(32))
    wins, refusals = [], []
    start = threading.Barrier(16)

    def claim() -> None:
        store = DirectoryStore(tmp_path)
        start.wait()
        try:
            store.claim(sid, "unmasking")
            wins.append(1)
        except StageAlreadyAnswered:
            refusals.append(1)

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(wins), len(refusals)) == (1, 15)


# ============================================================ (b) a malformed message burns no claim

@lru_cache(maxsize=None)
def _params() -> MaskingParams:
    return MaskingParams.create(range(1, 5), 3, protocol="secagg", dropout_tolerance=0.0,
                                rng=DeterministicRandom("drivers"))


def test_a_message_refused_before_the_claim_leaves_the_stage_open():
    params = _params()
    data = wire.encode(params)
    contribution = Contribution(np.array([0.25, -0.5, 0.125]))
    store = MemoryStore()
    accept = []

    def policy(p: MaskingParams) -> None:  # a node's own rule, refusing the round the first time
        if not accept:
            accept.append(1)
            raise ParameterError("this node refuses the round")

    recorder = Recorder()
    driver = ClientDriver(MaskingClientRole(1, rng=DeterministicRandom(1), check_params=policy), store,
                          observer=recorder)
    # undecodable: a typed refusal, nothing saved or claimed
    assert driver.handle(data[:-1], contribution) is None
    assert isinstance(driver.last_error, WireFormatError)
    # the round's first message without the client's contribution: the caller's error
    assert driver.handle(data) is None
    assert isinstance(driver.last_error, LocalProtocolError) and not isinstance(driver.last_error, StageAlreadyAnswered)
    # the node's policy refuses the round: a refusal, nothing saved
    assert driver.handle(data, contribution) is None
    assert isinstance(driver.last_error, ParameterError)
    assert store.load(params.session_id) is None and len(store) == 0
    assert recorder.bytes_sent == {}  # nothing left this client
    # and the stage is still open: the same message, well formed, is answered
    reply = driver.handle(data, contribution)
    assert isinstance(wire.decode(reply), AdvertiseKeys) and driver.last_error is None
    assert store.load(params.session_id) is not None
    assert recorder.bytes_sent == {1: len(reply)}


def test_a_broadcast_refused_by_decoding_leaves_the_client_in_the_round():
    r = Round(n=5, dropout_tolerance=0.2)
    r.advertise()
    before = wire.encode(r.record(1))
    assert r.send(1, r.network.outbox[1][:-3]) is None
    assert isinstance(r.error(1), WireFormatError)
    assert wire.encode(r.record(1)) == before and not r.ended(1)
    assert isinstance(r.step()[1], ShareKeys)  # the real broadcast is answered


def test_parameters_with_substituted_signing_keys_are_refused_before_anything_is_made():
    """Malicious-server mode: the server swaps a peer's verification key. The
    client's driver refuses the round (ParameterError), saves and claims
    nothing, and sends nothing."""
    from secagg.primitives.signatures import generate_signing_keypair

    r = Round(n=5, malicious=True, dropout_tolerance=0.2)
    forged = dict(r.params.signing_keys)
    forged[3] = generate_signing_keypair(DeterministicRandom("forger")).public
    evil = dataclasses.replace(r.params, signing_keys=forged)
    assert r.send(1, evil, r.network.contributions[1]) is None
    assert isinstance(r.error(1), ParameterError) and "trusted" in str(r.error(1))
    assert r.stores[1].load(evil.session_id) is None and len(r.stores[1]) == 0
    assert isinstance(r.run(), ServerResult)  # the honest round is untouched


# ============================================================ (c) a failed protocol check ends the session

@pytest.mark.parametrize("kind", ["memory", "directory"])
def test_a_server_message_failing_a_check_ends_the_session(tmp_path, kind):
    r = Round(n=5, dropout_tolerance=0.2,
              store=(lambda i: DirectoryStore(tmp_path / str(i))) if kind == "directory" else None)
    recorder = Recorder()
    r.network.clients[1] = ClientDriver(r.roles[1], r.stores[1], observer=recorder)
    r.advertise()
    r.step()
    msg: ForwardedShares = r.outgoing[1]
    ct = bytearray(msg.ciphertexts)
    ct[40] ^= 1
    sent = dict(recorder.bytes_sent)
    assert r.send(1, dataclasses.replace(msg, ciphertexts=bytes(ct))) is None
    assert isinstance(r.error(1), InvalidCiphertext)
    assert recorder.bytes_sent == sent  # nothing sent
    assert recorder.rejections == [(CLIENT, "masked_input", 1, "invalid_ciphertext")]
    sid = r.params.session_id
    assert r.stores[1].load(sid) is None  # its state, and every secret in it, dropped
    with pytest.raises(StageAlreadyAnswered):  # the session is over: not even the honest message is answered
        r.stores[1].claim(sid, "masked_input")
    assert r.send(1, msg) is None
    if kind == "directory":
        assert r.stores[1].sessions() == [] and (tmp_path / "1" / f"{sid.hex()}.done").exists()
    out = r.run()
    assert isinstance(out, ServerResult) and out.dropped == {1: "masked_input"}


# ============================================================ (d) the server driver's books

def _snapshot(server: MaskingServer) -> tuple:
    got = server._got
    return (server.stage, server.u1, server.u2, server.u3, tuple(sorted(got.advertised)), tuple(sorted(got.shares)),
            tuple(sorted(got.masked)), server._accumulator.tobytes())


def test_a_refused_reply_is_recorded_changes_nothing_and_drops_the_sender():
    r = Round(n=6)
    r.advertise()
    replies = r.step(hold=True, close=False)  # the network holds every ShareKeys
    assert r.release([1, 3, 4, 5]) == {1: True, 3: True, 4: True, 5: True}
    assert r.driver.awaiting == {2, 6} and not r.driver.ready
    before = _snapshot(r.server)
    bad = wire.encode(dataclasses.replace(replies[2], ciphertexts=replies[2].ciphertexts[:-1]))
    assert r.driver.receive(2, bad) is False
    assert _snapshot(r.server) == before
    assert r.driver.awaiting == {6}  # dropped at this stage
    assert r.driver.failures == {2: "share_keys: rejected (malformed_message): share records have the wrong length"}
    assert r.watch.rejections[-1] == (SERVER, "share_keys", 2, "malformed_message")
    audit = r.driver.audit_record()
    assert audit["failures"] == {"2": r.driver.failures[2]}
    assert audit["rejected_messages"][-1] == {"sender": 2, "stage": "share_keys", "reason": "malformed_message"}
    # undecodable bytes are refused by the driver before the core: in the failures, not the core's record
    assert r.driver.receive(6, b"\x93\x01") is False
    assert r.driver.failures[6].startswith("share_keys: rejected (malformed_message)")
    assert len(r.server.rejected) == len(audit["rejected_messages"]) and _snapshot(r.server) == before
    assert r.driver.ready  # every party answered or is gone: the stage may close early
    r.close()
    out = r.run()
    assert isinstance(out, ServerResult)
    assert out.dropped == {2: "share_keys", 6: "share_keys"} and out.included == (1, 3, 4, 5)


def test_gone_ready_and_the_deadline():
    r = Round(n=6)
    assert not r.driver.ready  # answers pending
    r.step(parties=[1, 2, 3], close=False)
    assert r.driver.awaiting == {4, 5, 6}
    r.driver.gone(1, "connection closed")  # already answered: nothing to record
    r.driver.gone(99)  # not a party of this stage: ignored
    r.driver.gone(4, "connection closed")
    assert r.driver.awaiting == {5, 6} and r.driver.failures == {4: "advertise_keys: connection closed"}
    r.step(parties=[5], close=False)
    assert not r.driver.ready
    r.close()  # the deadline: 6 never answered
    assert r.driver.failures == {4: "advertise_keys: connection closed", 6: "advertise_keys: no reply before the deadline"}
    assert set(r.network.outbox) == {1, 2, 3, 5}
    r.step(parties=[1, 2, 3, 5], close=False)
    assert r.driver.ready and r.driver.awaiting == frozenset()
    out = r.run()
    assert isinstance(out, ServerResult) and out.included == (1, 2, 3, 5)
    assert out.dropped == {4: "advertise_keys", 6: "advertise_keys"}
    assert not r.driver.ready  # the round is over
    with pytest.raises(LocalProtocolError):
        r.driver.close_stage()
    unstarted = ServerDriver(MaskingServer(r.params))
    assert not unstarted.ready
    for call in (lambda: unstarted.receive(1, b""), unstarted.close_stage):
        with pytest.raises(LocalProtocolError):
            call()


def test_a_party_that_left_is_not_awaited_again():
    r = Round(n=6)
    r.step(parties=[1, 2, 3, 4, 5], close=False)
    r.driver.left(5, "process crashed")  # after it answered: nothing to give up in this stage
    r.driver.left(6, "process crashed")
    assert r.driver.ready and r.driver.failures == {6: "advertise_keys: process crashed"}
    r.close()
    assert 5 in r.network.outbox and r.driver.awaiting == {1, 2, 3, 4}  # its message goes out, no answer awaited
    assert r.driver.failures[5] == "share_keys: process crashed"
    r.step(parties=[1, 2, 3, 4], close=False)
    assert r.driver.ready
    r.close()  # 5's pending message is lost with the stage
    out = r.run()
    assert isinstance(out, ServerResult) and out.dropped == {5: "share_keys", 6: "advertise_keys"}


@pytest.mark.parametrize("sender", [True, 1.0, np.uint32(1), np.int64(1), "1"])
def test_sender_ids_that_are_not_exact_ints_are_refused_by_both_cores(sender):
    r = Round(n=5, dropout_tolerance=0.2)
    adv = r.step(hold=True, close=False)[1]
    before = _snapshot(r.server)
    with pytest.raises(RemoteProtocolError) as info:
        r.server.receive(sender, adv)
    assert info.value.reason is AbortReason.UNEXPECTED_SENDER
    assert _snapshot(r.server) == before and r.server.rejected[-1] == (-1, "advertise_keys", "unexpected_sender")
    assert r.driver.receive(sender, wire.encode(adv)) is False  # through the driver: recorded, nobody dropped
    assert r.watch.rejections[-1] == (SERVER, "advertise_keys", -1, "unexpected_sender")
    assert r.driver.awaiting == set(r.ids) and r.driver.failures == {}
    assert r.release([1]) == {1: True}  # the same message from the real client 1 is taken

    kh, _, net = _paillier(2)
    net.step(hold=True, close=False)
    sub = net.held[1]
    core = net.server
    with pytest.raises(RemoteProtocolError) as info:
        core.receive(sender, wire.decode(sub))
    assert info.value.reason is AbortReason.UNEXPECTED_SENDER
    assert core.included == () and core.rejected[-1] == (-1, "submit", "unexpected_sender")
    assert net.driver.receive(sender, sub) is False and net.release() == {1: True, 2: True}


# ============================================================ (e) the Recorder

def test_the_recorder_counts_bytes_and_keeps_the_transcript():
    r = Round(n=5, dropout_tolerance=0.2)
    client_side = Recorder(transcript=True)
    r.network.clients[2] = ClientDriver(r.roles[2], r.stores[2], observer=client_side)
    for i in (1, 3, 4, 5):  # the others time their work into the server's recorder, bytes not counted twice
        r.network.clients[i] = ClientDriver(r.roles[i], r.stores[i], observer=r.watch.timer())
    assert isinstance(r.run(drop={4: "masked_input"}), ServerResult)
    transcript = r.watch.transcript
    for party in r.ids:
        assert r.watch.bytes_sent.get(party, 0) == sum(len(d) for _, w, p, d in transcript
                                                       if w == TO_SERVER and p == party)
        assert r.watch.bytes_received[party] == sum(len(d) for _, w, p, d in transcript
                                                    if w == TO_CLIENT and p == party)
    assert [(s, w) for s, w, p, _ in transcript if p == 4] == [
        ("advertise_keys", TO_CLIENT), ("advertise_keys", TO_SERVER), ("share_keys", TO_CLIENT),
        ("share_keys", TO_SERVER), ("masked_input", TO_CLIENT)]  # it vanished with its forwarded shares
    # the client's own recorder saw exactly what the server's saw of client 2, from the other end
    mine = [(s, w, d) for s, w, p, d in transcript if p == 2]
    assert [(s, w, d) for s, w, _, d in client_side.transcript] == mine
    assert client_side.bytes_sent == {2: r.watch.bytes_sent[2]}
    assert client_side.bytes_received == {2: r.watch.bytes_received[2]}
    assert {f"{s}.{who}" for s in ("advertise_keys", "share_keys", "masked_input", "unmasking")
            for who in ("server", "clients")} <= set(r.watch.timings)
    assert all(v >= 0 for v in r.watch.timings.values()) and r.watch.rejections == []


# ============================================================ (f) a key holder that refuses

def _paillier(n: int, *, rule: str = "mean", keyholder: PaillierKeyHolder | None = None):
    kh = keyholder or PaillierKeyHolder(private_key=_key()[1])
    params = PaillierParams.create(kh.public_key, range(1, n + 1), 6, rule=rule, rng=DeterministicRandom("p"))
    drivers = {c: ClientDriver(PaillierClientRole(c, kh.public_key_message(), rng=DeterministicRandom(f"c{c}"),
                                                  min_key_bits=512)) for c in range(1, n + 1)}
    drivers[KEY_HOLDER] = ClientDriver(KeyHolderRole(kh))
    xs = {c: np.linspace(-0.5, 0.5, 6) * c / n for c in range(1, n + 1)}
    net = Network(PaillierServer(params), rule, drivers, {c: Contribution(x) for c, x in xs.items()},
                  protocol="paillier")
    return kh, params, net


@lru_cache(maxsize=None)
def _key():
    return pl.generate_keypair(512, DeterministicRandom("drivers key"))


def _flip_a_ciphertext(party: int, msg: AggregateCiphertext) -> AggregateCiphertext:
    return dataclasses.replace(msg, ciphertexts=msg.ciphertexts[:-1] + bytes([msg.ciphertexts[-1] ^ 1]))


@pytest.mark.parametrize("how", ["aggregate altered", "included list altered", "key holder never registered",
                                 "already decrypted", "sums lost"])
def test_a_key_holder_that_refuses_ends_the_round_typed_never_a_partial_aggregate(how):
    kh, params, net = _paillier(3)
    if how == "already decrypted":  # the key holder decrypted this session's aggregate before (a replay)
        other_kh, _, first = _paillier(3, keyholder=kh)
        first.run()
    if how == "key holder never registered":
        net.step(tamper=lambda p, m: None if p == KEY_HOLDER else m)  # its copy of the parameters is lost
    else:
        net.step()
    assert net.stage is Stage.DECRYPT
    tampers = {"aggregate altered": _flip_a_ciphertext,
               "included list altered": lambda p, m: dataclasses.replace(m, included=(1, 2))}
    tamper_reply = (lambda p, m: None) if how == "sums lost" else None
    net.step(tamper=tampers.get(how), tamper_reply=tamper_reply)
    assert net.driver.done
    out = net.outcome
    assert isinstance(out, Abort) and out.reason is AbortReason.DECRYPTION_FAILED and out.stage == "decrypt"
    with pytest.raises(ProtocolAborted) as info:
        net.driver.result()
    assert info.value.reason is AbortReason.DECRYPTION_FAILED
    audit = net.driver.audit_record()
    assert audit["outcome"] == "aborted" and audit["abort_reason"] == "decryption_failed"
    assert "0" in audit["failures"]
    if how != "sums lost":
        assert isinstance(net.error(KEY_HOLDER), RemoteProtocolError)  # refused with a typed reason
        assert audit["failures"]["0"].startswith("decrypt: refused")
    assert not hasattr(out, "sum_weighted")


def test_a_paillier_round_through_the_drivers_completes():
    kh, params, net = _paillier(3)
    out = net.run()
    assert out.included == (1, 2, 3) and out.sum_weights == 3.0
    np.testing.assert_allclose(out.sum_weighted, np.linspace(-0.5, 0.5, 6) * 2, atol=3 / params.encoding.scale)
    assert net.driver.result().rule == "mean"


# ============================================================ (g) tombstones stay bounded

def test_memory_store_tombstones_are_bounded():
    store = MemoryStore(max_tombstones=3)
    sessions = [bytes([i]) * 32 for i in range(6)]
    for s in sessions:
        store.save(s, "state")
        store.claim(s, "submit")
        store.finish(s)
    assert len(store) == 0 and all(store.load(s) is None for s in sessions)
    for s in sessions[-3:]:  # the newest are remembered: over for this client
        with pytest.raises(StageAlreadyAnswered):
            store.claim(s, "submit")
        with pytest.raises(StageAlreadyAnswered):
            store.save(s, "state")
    store.claim(sessions[0], "submit")  # the oldest were forgotten (bounded memory)


def test_directory_store_tombstones_are_bounded(tmp_path):
    store = DirectoryStore(tmp_path / "store", max_tombstones=3)
    sessions = [bytes([i]) * 32 for i in range(8)]
    for s in sessions:
        store.save(s, _params())
        store.claim(s, "advertise_keys")
        store.finish(s)
    assert store.sessions() == []
    names = sorted(os.listdir(tmp_path / "store"))
    assert names == sorted(f"{s.hex()}.done" for s in sessions[-3:])
    other = DirectoryStore(tmp_path / "store", max_tombstones=3)  # another instance sees the same
    for s in sessions[-3:]:
        with pytest.raises(StageAlreadyAnswered):
            other.claim(s, "masked_input")
    # a directory others could write to is refused (fail closed)
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o777)
    os.chmod(open_dir, 0o777)
    with pytest.raises(LocalProtocolError):
        DirectoryStore(open_dir)


# ============================================================ the in-process transport

def test_local_round_delivers_to_chosen_parties_in_order():
    r = Round(n=4, dropout_tolerance=0.0)
    net = r.network
    order = []

    class Order(Observer):
        def message(self, stage, direction, party, data):  # type: ignore[no-untyped-def]
            if direction == TO_SERVER:
                order.append(party)

    r.driver.observer = Order()
    with pytest.raises(LocalProtocolError):
        net.deliver([7])  # no pending message for 7
    with pytest.raises(LocalProtocolError):
        net.deliver([2, 2])
    assert sorted(net.deliver([3, 1])) == [1, 3] and order == [3, 1]
    assert sorted(net.outbox) == [2, 4]  # the others stay pending
    assert sorted(net.deliver()) == [2, 4] and net.outbox == {}
    assert net.close() and sorted(net.outbox) == [1, 2, 3, 4]
    # step() is deliver() then close()
    while net.step():
        pass
    assert isinstance(r.outcome, ServerResult)
    with pytest.raises(LocalProtocolError):
        net.deliver()


def test_local_round_dropouts_and_refusals():
    params = _params()
    clients = {i: ClientDriver(MaskingClientRole(i, rng=DeterministicRandom(i))) for i in params.client_ids}
    server = ServerDriver(MaskingServer(params), "sum")
    net = LocalRound(server, clients, {i: Contribution(np.full(3, 0.1 * i)) for i in clients},
                     dropouts={4: "share_keys"}, tamper=lambda d, s, p, b: b[:-1] if (d, s, p) == (
                         TO_CLIENT, Stage.MASKED_INPUT, 3) else b)
    net.run()
    out = server.outcome
    # 4 vanished at share_keys, 3 refused its damaged forwarded shares (and said nothing): t = 3 of 4 left 2
    assert isinstance(out, Abort) and out.reason is AbortReason.TOO_FEW_SURVIVORS
    assert set(net.refusals) == {3} and net.refusals[3].startswith("WireFormatError")
    assert server.failures == {4: "share_keys: no reply before the deadline", 3: server.failures[3]}
    assert server.failures[3].startswith("masked_input: refused")


def _logged_round(server_last: bool, log: list[tuple[str, str, int]]) -> tuple[LocalRound, ServerDriver]:
    """A 5-client SecAgg round on deterministic randomness, one client
    dropping at masked_input; ``log`` gets (stage, who, party) for every
    client handling a message and every reply the server receives."""

    class Log(Observer):
        def __init__(self, who: str):
            self.who = who

        def message(self, stage, direction, party, data):  # type: ignore[no-untyped-def]
            if (self.who, direction) in (("client", TO_CLIENT), ("server", TO_SERVER)):
                log.append((stage.value, self.who, party))

    params = MaskingParams.create(range(1, 6), 3, protocol="secagg", dropout_tolerance=0.2,
                                  rng=DeterministicRandom("server-last"))
    clients = {i: ClientDriver(MaskingClientRole(i, rng=DeterministicRandom(f"c{i}")), observer=Log("client"))
               for i in params.client_ids}
    server = ServerDriver(MaskingServer(params, DeterministicRandom("s")), "sum", observer=Log("server"))
    net = LocalRound(server, clients, {i: Contribution(np.array([0.1, -0.05, 0.025]) * i) for i in clients},
                     dropouts={2: "masked_input"}, server_last=server_last)
    return net, server


def test_local_round_server_last_is_the_same_round_with_the_server_receiving_back_to_back():
    logs: dict[bool, list[tuple[str, str, int]]] = {False: [], True: []}
    sums = {}
    for server_last in (False, True):
        net, server = _logged_round(server_last, logs[server_last])
        net.run()
        assert isinstance(server.outcome, ServerResult)
        sums[server_last] = server.outcome.sum_weighted
    np.testing.assert_array_equal(sums[False], sums[True])
    np.testing.assert_allclose(sums[True], np.array([0.1, -0.05, 0.025]) * (1 + 3 + 4 + 5), atol=1e-3)
    # the server receives the same replies in the same order either way
    assert [e for e in logs[False] if e[1] == "server"] == [e for e in logs[True] if e[1] == "server"]
    for stage in ("advertise_keys", "share_keys", "masked_input", "unmasking"):
        who = {k: [e[1] for e in log if e[0] == stage] for k, log in logs.items()}
        assert who[True] == sorted(who[True])  # every client first ("client" < "server"), then the server
        assert who[False] != sorted(who[False])  # interleaved: a client after the server's first receive


def test_local_round_held_replies_reach_the_server_only_when_handed():
    net, server = _logged_round(False, log := [])
    net.start()
    net.step()  # advertise_keys
    got = net.deliver([1, 3], hold=True)
    assert sorted(got) == [1, 3] and list(net.held) == [1, 3]
    assert [e for e in log if e[0] == "share_keys" and e[1] == "server"] == []  # not handed yet
    assert net.hand_held() == got and net.held == {}
    assert [e[2] for e in log if e[0] == "share_keys" and e[1] == "server"] == [1, 3]
    net.deliver([2], hold=True)
    net.close()  # closing the stage hands what is still held first
    assert [e[2] for e in log if e[0] == "share_keys" and e[1] == "server"] == [1, 3, 2]


def test_a_server_driver_hands_bytes_unless_the_transport_takes_views():
    """The complete graph's ForwardedShares are laid out in place by the core.
    By default the driver hands every message as ``bytes`` (a transport such
    as Flower's records needs them); ``views=True`` (LocalRound) gets the
    read-only views themselves. Both are the same bytes, and both rounds give
    the same aggregate."""
    def run(views: bool) -> tuple[dict[int, object], object]:
        params = MaskingParams.create(range(1, 6), 3, protocol="secagg", dropout_tolerance=0.2,
                                      rng=DeterministicRandom("views"))
        clients = {i: ClientDriver(MaskingClientRole(i, rng=DeterministicRandom(f"c{i}"))) for i in params.client_ids}
        server = ServerDriver(MaskingServer(params, DeterministicRandom("s")), "sum")
        outbox = server.start(views=views)
        seen = {}
        while not server.done:
            if server.stage is Stage.MASKED_INPUT:
                seen = dict(outbox)
            for party, data in outbox.items():
                reply = clients[party].handle(data, Contribution(np.full(3, 0.1 * party)) if
                                              server.stage is Stage.ADVERTISE_KEYS else None)
                if reply is not None:
                    server.receive(party, reply)
            outbox = server.close_stage(views=views)
        return seen, server.outcome

    as_bytes, out_b = run(False)
    as_views, out_v = run(True)
    assert as_bytes and all(type(d) is bytes for d in as_bytes.values())
    assert all(isinstance(d, memoryview) and d.readonly for d in as_views.values())
    assert {p: bytes(d) for p, d in as_views.items()} == as_bytes
    assert isinstance(out_b, ServerResult) and isinstance(out_v, ServerResult)
    assert np.array_equal(out_b.sum_weighted, out_v.sum_weighted)
