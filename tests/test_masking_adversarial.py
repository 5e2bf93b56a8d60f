"""The dishonest server, the forged message and the replayed one.

Each test plays an attacker against honest parties and checks the named
defence: clients abort with a typed reason and reveal nothing they must not;
the server rejects bad client messages with a typed error and no state change."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.encoding import wire
from secagg.errors import AbortReason, RemoteProtocolError, WireFormatError
from secagg.protocols.masking import (Abort, ConsistencyRequest, ForwardedShares, KeysBroadcast, MaskedInput,
                                      ServerResult, ShareKeys, UnmaskRequest, UnmaskShares)
from secagg.protocols.masking.messages import SHARE_RECORD_SIZE

from masking_harness import Round


def _reply(r: Round, i: int, msg) -> object | None:  # type: ignore[no-untyped-def]
    """The (dishonest) server sends ``msg`` to client ``i``'s driver: its answer, or None."""
    return r.send(i, msg)


def _ids(*xs: int) -> np.ndarray:
    return np.array(sorted(xs), dtype=np.uint32)


# ================================================================ invariant 1: never both shares

def test_overlapping_alive_and_dropped_sets_abort_and_reveal_nothing():
    r = Round(n=6)
    r.run_to("unmasking")
    req: UnmaskRequest = r.outgoing[1]
    evil = dataclasses.replace(req, dropped=_ids(*req.dropped.tolist(), 2))  # 2 is alive AND dropped
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) is AbortReason.INCONSISTENT_DROPOUT_SETS


def test_peer_missing_from_both_lists_aborts():
    r = Round(n=6)
    r.run_to("unmasking")
    req: UnmaskRequest = r.outgoing[1]
    evil = dataclasses.replace(req, alive=_ids(*[v for v in req.alive.tolist() if v != 4]))
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) is AbortReason.INCONSISTENT_DROPOUT_SETS


def test_client_never_reveals_a_second_time_in_a_session():
    """The server asks again with shifted lists (v now 'dropped'): the client
    has already revealed b_v's share and must not add s_v^SK's."""
    r = Round(n=6)
    r.run_to("unmasking")
    req: UnmaskRequest = r.outgoing[1]
    first = _reply(r, 1, req)
    assert isinstance(first, UnmaskShares) and 3 in first.self_mask_owners.tolist()
    shifted = dataclasses.replace(req, alive=_ids(*[v for v in req.alive.tolist() if v != 3]),
                                  dropped=_ids(*req.dropped.tolist(), 3))
    assert _reply(r, 1, shifted) is None
    assert r.ended(1)  # its round was over when it answered: nothing more leaves


def test_alive_set_naming_a_peer_whose_shares_never_arrived_aborts():
    """Claiming that a client which never shared keys is alive would make
    honest clients reveal shares they do not hold / unmask an inconsistency."""
    r = Round(n=6)
    r.run_to("unmasking", drop={5: "share_keys"})
    req: UnmaskRequest = r.outgoing[1]
    evil = dataclasses.replace(req, alive=_ids(*req.alive.tolist(), 5))
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) is AbortReason.INCONSISTENT_DROPOUT_SETS


def test_server_listing_me_as_dropped_aborts():
    r = Round(n=6)
    r.run_to("unmasking")
    req: UnmaskRequest = r.outgoing[2]
    evil = dataclasses.replace(req, alive=_ids(*[v for v in req.alive.tolist() if v != 2]),
                               dropped=_ids(*req.dropped.tolist(), 2))
    assert _reply(r, 2, evil) is None
    assert r.refusal(2) is AbortReason.INCONSISTENT_DROPOUT_SETS


def test_split_view_attack_cannot_collect_both_share_kinds_in_malicious_mode():
    """A dishonest server tells client 1 that victim 3 is alive (to get b_3's
    share) and tells everyone else that 3 dropped (to get s_3^SK's shares).
    With signed consistency checks and t > n/2 it can reach the threshold for at
    most one of the two secrets."""
    r = Round(n=7, malicious=True)  # t = 4
    r.run_to("consistency_check")
    victim = 3
    true_alive = r.outgoing[1].alive
    fake_alive = _ids(*[v for v in true_alive.tolist() if v != victim])
    sigs_true, sigs_fake = {}, {}
    for i in r.ids:
        if i == victim:
            continue
        alive = true_alive if i == 1 else fake_alive
        rep = _reply(r, i, ConsistencyRequest(r.params.session_id, alive))
        (sigs_true if i == 1 else sigs_fake)[i] = rep.signature
    b_shares = s_shares = 0
    for i in r.ids:
        if i == victim:
            continue
        if i == 1:
            req = UnmaskRequest(r.params.session_id, true_alive, _ids(), sigs_true)
        else:  # the server claims 3 dropped, backed by the signatures on the fake set
            req = UnmaskRequest(r.params.session_id, fake_alive, _ids(victim), sigs_fake)
        rep = _reply(r, i, req)
        if rep is None:
            continue
        b_shares += victim in rep.self_mask_owners.tolist()
        s_shares += victim in rep.mask_key_owners.tolist()
    t = r.params.threshold
    assert not (b_shares >= t and s_shares >= t)
    assert b_shares < t  # client 1 refused: too few signatures on the set it signed
    assert r.aborted(1) and r.refusal(1) is AbortReason.TOO_FEW_SURVIVORS


def test_unmask_request_with_a_different_set_than_signed_aborts():
    r = Round(n=6, malicious=True)
    r.run_to("unmasking")
    req: UnmaskRequest = r.outgoing[1]
    evil = dataclasses.replace(req, alive=_ids(*[v for v in req.alive.tolist() if v != 4]),
                               dropped=_ids(4))
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) in (AbortReason.INCONSISTENT_DROPOUT_SETS, AbortReason.INVALID_SIGNATURE)


def test_forged_consistency_signature_aborts():
    r = Round(n=6, malicious=True)
    r.run_to("unmasking")
    req: UnmaskRequest = r.outgoing[1]
    sigs = dict(req.signatures)
    sigs[2] = bytes(64)
    assert _reply(r, 1, dataclasses.replace(req, signatures=sigs)) is None
    assert r.refusal(1) is AbortReason.INVALID_SIGNATURE


# ================================================================ keys: substitution, duplicates, signatures

def _keys_with(msg: KeysBroadcast, i: int, *, enc: bytes | None = None, mask: bytes | None = None) -> KeysBroadcast:
    e, m = bytearray(msg.enc_publics), bytearray(msg.mask_publics)
    if enc is not None:
        e[32 * i:32 * (i + 1)] = enc
    if mask is not None:
        m[32 * i:32 * (i + 1)] = mask
    return dataclasses.replace(msg, enc_publics=bytes(e), mask_publics=bytes(m))


def test_duplicate_public_keys_abort():
    """Two parties with one masking key would have pairwise masks that a third
    could predict; the client refuses such a key set."""
    r = Round(n=5, dropout_tolerance=0.2)
    r.advertise()
    msg: KeysBroadcast = r.outgoing[1]
    evil = _keys_with(msg, 3, mask=msg.mask_publics[32 * 2:32 * 3])
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) is AbortReason.DUPLICATE_PUBLIC_KEY


def test_server_rejects_a_second_client_advertising_an_existing_key():
    r = Round(n=5, dropout_tolerance=0.2)
    advs = r.step(hold=True, close=False)
    assert r.release([1]) == {1: True}
    _server_rejects(r, 2, dataclasses.replace(advs[2], mask_public=advs[1].mask_public),
                    AbortReason.DUPLICATE_PUBLIC_KEY)
    # the same attack through the network: client 2 is refused and counts as dropped at advertise_keys
    r = Round(n=5, dropout_tolerance=0.2)
    first = {}

    def copy_key(i, adv):  # type: ignore[no-untyped-def]
        first.setdefault("key", adv.mask_public)
        return dataclasses.replace(adv, mask_public=first["key"]) if i == 2 else adv

    r.step(tamper_reply=copy_key)
    out = r.run()
    assert isinstance(out, ServerResult) and out.dropped == {2: "advertise_keys"}
    assert r.driver.failures[2].startswith("advertise_keys: rejected (duplicate_public_key)")
    assert r.driver.audit_record()["rejected_messages"] == [
        {"sender": 2, "stage": "advertise_keys", "reason": "duplicate_public_key"}]


def test_altered_own_advertisement_aborts():
    r = Round(n=5, dropout_tolerance=0.2)
    r.advertise()
    msg: KeysBroadcast = r.outgoing[1]
    evil = _keys_with(msg, 0, enc=bytes([9]) * 32)  # index 0 is client 1 itself
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) is AbortReason.MALFORMED_MESSAGE


def test_substituted_peer_key_is_caught_by_signatures_in_malicious_mode():
    from secagg.primitives.key_agreement import generate_keypair

    r = Round(n=5, malicious=True, dropout_tolerance=0.2)
    r.advertise()
    msg: KeysBroadcast = r.outgoing[1]
    evil = _keys_with(msg, 2, enc=generate_keypair().public)  # server's own key in place of client 3's
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) is AbortReason.INVALID_SIGNATURE


def test_broadcast_naming_non_neighbours_aborts():
    r = Round(n=60, protocol="secagg+", dropout_tolerance=0.05)
    r.advertise()
    msg: KeysBroadcast = r.outgoing[1]
    stranger = next(v for v in r.ids if v != 1 and v not in r.params.graph.neighbours(1))
    ids = sorted(msg.client_ids.tolist() + [stranger])
    pos = ids.index(stranger)
    ins = lambda col, w: col[:w * pos] + bytes([7 + w]) * w + col[w * pos:]  # noqa: E731
    evil = dataclasses.replace(msg, client_ids=np.array(ids, dtype=np.uint32), enc_publics=ins(msg.enc_publics, 32),
                               mask_publics=ins(msg.mask_publics, 32), commitments=ins(msg.commitments, 32))
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) is AbortReason.UNEXPECTED_SENDER


def test_too_few_keys_in_broadcast_aborts():
    r = Round(n=6)
    r.advertise()
    msg: KeysBroadcast = r.outgoing[1]
    keep = 2  # client 1 + one peer < t
    evil = KeysBroadcast(msg.session_id, msg.client_ids[:keep], msg.enc_publics[:32 * keep],
                         msg.mask_publics[:32 * keep], msg.commitments[:32 * keep], b"")
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) is AbortReason.TOO_FEW_SURVIVORS


# ================================================================ invariant 3: session binding, replay

def test_message_from_another_session_is_refused():
    a, b = Round(n=5, seed=1, dropout_tolerance=0.2), Round(n=5, seed=2, dropout_tolerance=0.2)
    a.advertise()
    b.advertise()
    before = wire.encode(b.record(1))
    # the driver finds no round of that session on this client: a typed refusal, nothing sent
    assert _reply(b, 1, a.outgoing[1]) is None
    assert b.refusal(1) is AbortReason.WRONG_ROUND
    assert wire.encode(b.record(1)) == before  # its own round is untouched
    # the core's own check, for a message of another session reaching it with this session's state
    with pytest.raises(RemoteProtocolError) as info:
        b.client(1).share_keys(a.outgoing[1])
    assert info.value.reason is AbortReason.SESSION_MISMATCH
    assert isinstance(b.step()[1], ShareKeys)  # and client 1 goes on with its round


def test_share_ciphertext_replayed_from_another_session_fails_authentication():
    """Same parties, same keys even: the session id in the AEAD associated data
    and in the key derivation makes an old record useless."""
    a, b = Round(n=5, seed=1, dropout_tolerance=0.2), Round(n=5, seed=2, dropout_tolerance=0.2)
    for r in (a, b):
        r.advertise()
        r.step()
    fa: ForwardedShares = a.outgoing[1]
    fb: ForwardedShares = b.outgoing[1]
    spliced = dataclasses.replace(fb, ciphertexts=fa.ciphertexts[:SHARE_RECORD_SIZE] + fb.ciphertexts[SHARE_RECORD_SIZE:])
    assert _reply(b, 1, spliced) is None
    assert b.refusal(1) is AbortReason.INVALID_CIPHERTEXT


def test_params_differing_only_in_nonce_give_unrelated_session_ids():
    a, b = Round(n=5, seed=1, dropout_tolerance=0.2), Round(n=5, seed=1, dropout_tolerance=0.2)
    assert a.params.session_id == b.params.session_id  # same seed: replayable test vectors
    p2 = dataclasses.replace(a.params, session_nonce=bytes(32))
    assert p2.session_id != a.params.session_id


# ================================================================ forged, misrouted, truncated shares

def test_forged_share_ciphertext_aborts():
    r = Round(n=5, dropout_tolerance=0.2)
    r.advertise()
    r.step()
    msg: ForwardedShares = r.outgoing[1]
    ct = bytearray(msg.ciphertexts)
    ct[40] ^= 1
    assert _reply(r, 1, dataclasses.replace(msg, ciphertexts=bytes(ct))) is None
    assert r.refusal(1) is AbortReason.INVALID_CIPHERTEXT


def test_misrouted_share_ciphertext_aborts():
    """Client 2's share for client 3 delivered to client 1 as if from client 2."""
    r = Round(n=5, dropout_tolerance=0.2)
    r.advertise()
    r.step()
    to1: ForwardedShares = r.outgoing[1]
    to3: ForwardedShares = r.outgoing[3]
    j1 = to1.senders.tolist().index(2)
    j3 = to3.senders.tolist().index(2)
    ct = bytearray(to1.ciphertexts)
    ct[SHARE_RECORD_SIZE * j1:SHARE_RECORD_SIZE * (j1 + 1)] = to3.ciphertexts[SHARE_RECORD_SIZE * j3:SHARE_RECORD_SIZE * (j3 + 1)]
    assert _reply(r, 1, dataclasses.replace(to1, ciphertexts=bytes(ct))) is None
    assert r.refusal(1) is AbortReason.INVALID_CIPHERTEXT


def test_relabelled_sender_aborts():
    r = Round(n=5, dropout_tolerance=0.2)
    r.advertise()
    r.step()
    msg: ForwardedShares = r.outgoing[1]
    senders = msg.senders.copy()
    senders[[0, 1]] = senders[[1, 0]]  # swap who sent which record (still sorted? no: re-sort)
    evil = dataclasses.replace(msg, senders=np.sort(senders),
                               ciphertexts=msg.ciphertexts[SHARE_RECORD_SIZE:2 * SHARE_RECORD_SIZE]
                               + msg.ciphertexts[:SHARE_RECORD_SIZE] + msg.ciphertexts[2 * SHARE_RECORD_SIZE:])
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) is AbortReason.INVALID_CIPHERTEXT


def test_truncated_share_records_abort():
    r = Round(n=5, dropout_tolerance=0.2)
    r.advertise()
    r.step()
    msg: ForwardedShares = r.outgoing[1]
    assert _reply(r, 1, dataclasses.replace(msg, ciphertexts=msg.ciphertexts[:-1])) is None
    assert r.refusal(1) is AbortReason.MALFORMED_MESSAGE


def test_shares_from_a_non_neighbour_abort():
    r = Round(n=5, dropout_tolerance=0.2)
    r.advertise()
    r.step()
    msg: ForwardedShares = r.outgoing[1]
    evil = dataclasses.replace(msg, senders=np.array([1] + msg.senders.tolist()[1:], dtype=np.uint32))
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) in (AbortReason.UNEXPECTED_SENDER, AbortReason.MALFORMED_MESSAGE)


def test_failed_check_leaves_client_state_unchanged():
    r = Round(n=5, dropout_tolerance=0.2)
    r.advertise()
    r.step()
    core = r.client(1)
    before = core.to_bytes()
    msg: ForwardedShares = r.outgoing[1]
    bad = dataclasses.replace(msg, ciphertexts=msg.ciphertexts[:-3])
    with pytest.raises(RemoteProtocolError):
        core.masked_input(bad, r.updates[1])
    assert core.to_bytes() == before  # the core changed nothing
    assert isinstance(core.masked_input(msg, r.updates[1]), MaskedInput)
    # the driver saved nothing either; it drops the state and leaves the round
    assert wire.encode(r.record(1).client) == before
    assert _reply(r, 1, bad) is None and r.aborted(1)
    assert r.record(1) is None


# ================================================================ invariant 7: bad client input at the server

def _reference() -> np.ndarray:
    out = Round(n=6, seed=5).run()
    assert isinstance(out, ServerResult)
    return out.sum_weighted


def _server_rejects(r: Round, sender: int, msg, reason: AbortReason | None = None) -> None:  # type: ignore[no-untyped-def]
    """``msg`` from ``sender`` reaches the server driver (as bytes) and is
    refused with a typed error, reported to the observer and recorded."""
    seen = len(r.watch.errors)
    assert r.driver.receive(sender, wire.encode(msg)) is False
    assert len(r.watch.errors) == seen + 1
    party, error = r.watch.errors[-1]
    assert party == sender and isinstance(error, RemoteProtocolError)
    if reason is not None:
        assert error.reason is reason


def test_sparse_server_refuses_share_keys_for_anyone_but_the_neighbours_that_advertised():
    """SecAgg+: client 2 never advertises. Each ShareKeys must address exactly
    the sender's neighbours that advertised, sorted: naming the silent one, a
    stranger, too few, or the right ones out of order is refused (typed, state
    unchanged), and the honest replies still give the right aggregate."""
    r = Round(n=40, dim=4, protocol="secagg+", degree=8, threshold=6, dropout_tolerance=0.2)
    g = r.params.graph
    sender = next(u for u in r.ids if u != 2 and 2 in g.neighbours(u))
    r.step(skip=[2])
    replies = r.step(hold=True, close=False)
    good = replies[sender]
    want = [v for v in g.neighbours(sender) if v != 2]
    assert good.recipients.tolist() == want
    stranger = next(v for v in r.ids if v not in g.holders(sender))
    rec = SHARE_RECORD_SIZE
    cases = [
        (sorted(want[:-1] + [2]), good.ciphertexts),  # the one that never advertised
        (sorted(want[:-1] + [stranger]), good.ciphertexts),  # not a neighbour
        (want[:-1], good.ciphertexts[:-rec]),  # one short
        (want[::-1], good.ciphertexts),  # out of order
    ]
    for recipients, blob in cases:
        bad = dataclasses.replace(good, recipients=np.array(recipients, dtype=np.uint32), ciphertexts=blob)
        _server_rejects(r, sender, bad, AbortReason.MALFORMED_MESSAGE)
    assert all(r.release().values())
    out = r.run()
    assert isinstance(out, ServerResult) and 2 not in out.included
    included = list(out.included)
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(included))) <= 1e-3 * len(included)


def test_sparse_server_refuses_unmask_shares_for_owners_the_sender_cannot_hold():
    """SecAgg+ unmasking: the owners of a holder's shares must be sorted,
    distinct, among its holders, alive for self-mask shares and dropped for
    mask-key shares. Each violation is refused with its typed reason, state
    unchanged, and the honest replies then give the right aggregate."""
    r = Round(n=40, dim=4, protocol="secagg+", degree=8, threshold=6, dropout_tolerance=0.2)
    g = r.params.graph
    gone = g.neighbours(1)[0]
    r.run_to("unmasking", drop={gone: "masked_input"})
    replies = r.step(hold=True, close=False)
    sender = next(h for h in r.ids if h in replies and gone in g.neighbours(h) and h != 1)
    good = replies[sender]
    own = good.self_mask_owners.tolist()
    assert good.mask_key_owners.tolist() == [gone] and len(own) >= 3
    C = len(good.self_mask_shares) // len(own)
    stranger = next(v for v in r.ids if v not in g.holders(sender) and v != gone)
    alive_holder = next(v for v in own if v != sender)

    def with_self(owners, shares):
        return dataclasses.replace(good, self_mask_owners=np.array(owners, dtype=np.uint32), self_mask_shares=shares)

    sh = good.self_mask_shares
    cases = [
        (with_self(own[::-1], sh), AbortReason.MALFORMED_MESSAGE),  # not sorted
        (with_self([own[0], own[0]] + own[2:], sh), AbortReason.MALFORMED_MESSAGE),  # not distinct
        (with_self(sorted(own[:-1] + [stranger]), sh), AbortReason.UNEXPECTED_SENDER),  # not its holder
        (with_self(sorted(own[:-1] + [gone]), sh), AbortReason.UNEXPECTED_SENDER),  # dropped: no self mask
        (dataclasses.replace(good, mask_key_owners=np.array([alive_holder], dtype=np.uint32)),
         AbortReason.UNEXPECTED_SENDER),  # alive: no mask-key shares
        (dataclasses.replace(good, mask_key_owners=np.array([stranger], dtype=np.uint32)),
         AbortReason.UNEXPECTED_SENDER),
    ]
    assert C * len(own) == sh.size
    for bad, reason in cases:
        _server_rejects(r, sender, bad, reason)
    assert all(r.release().values())
    r.close()
    out = r.server.outcome
    assert isinstance(out, ServerResult) and gone not in out.included
    included = list(out.included)
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(included))) <= 1e-3 * len(included)


def test_server_rejects_duplicate_late_early_misrouted_and_malformed_without_state_change():
    """The network holds each stage's replies; the bad messages reach the
    server driver first, then the honest ones, then some again: every bad one
    is refused with its typed reason, and the round ends with exactly the
    aggregate of a round that never saw them."""
    ref = _reference()
    r = Round(n=6, seed=5)
    advs = r.step(hold=True, close=False)
    assert all(r.release().values())
    _server_rejects(r, 1, advs[1], AbortReason.DUPLICATE_MESSAGE)
    _server_rejects(r, 2, advs[1], AbortReason.UNEXPECTED_SENDER)  # claims to be someone else
    _server_rejects(r, 99, dataclasses.replace(advs[1], client_id=99), AbortReason.UNEXPECTED_SENDER)
    _server_rejects(r, 1, MaskedInput(1, r.params.session_id, np.zeros(r.dim + 1, dtype=np.uint32)),
                    AbortReason.WRONG_ROUND)
    r.close()
    _server_rejects(r, 1, advs[1], AbortReason.WRONG_ROUND)  # late
    # share keys: wrong recipients and truncated records
    replies = r.step(hold=True, close=False)
    bad = dataclasses.replace(replies[1], ciphertexts=replies[1].ciphertexts[:-1])
    _server_rejects(r, 1, bad, AbortReason.MALFORMED_MESSAGE)
    bad = dataclasses.replace(replies[1], recipients=replies[1].recipients[::-1].copy())
    _server_rejects(r, 1, bad, AbortReason.MALFORMED_MESSAGE)
    assert all(r.release().values())
    _server_rejects(r, 1, replies[1], AbortReason.DUPLICATE_MESSAGE)
    r.close()
    # masked inputs: wrong dtype, wrong length, duplicate
    replies = r.step(hold=True, close=False)
    good = replies[1].masked
    sid = r.params.session_id
    _server_rejects(r, 1, MaskedInput(1, sid, good.astype(np.uint64)), AbortReason.MALFORMED_MESSAGE)
    _server_rejects(r, 1, MaskedInput(1, sid, good[:-1].copy()), AbortReason.MALFORMED_MESSAGE)
    _server_rejects(r, 1, dataclasses.replace(replies[1], session_id=bytes(32)), AbortReason.SESSION_MISMATCH)
    assert all(r.release().values())
    _server_rejects(r, 1, replies[1], AbortReason.DUPLICATE_MESSAGE)  # a second add would corrupt the sum
    r.close()
    # unmasking shares for owners the sender cannot hold / out-of-field values
    replies = r.step(hold=True, close=False)
    u = replies[1]
    bad = dataclasses.replace(u, self_mask_shares=np.full_like(u.self_mask_shares, 2**31 - 1))
    _server_rejects(r, 1, bad, AbortReason.MALFORMED_MESSAGE)
    bad = dataclasses.replace(u, mask_key_owners=np.array([3], dtype=np.uint32),
                              mask_key_shares=u.self_mask_shares[:9].copy())
    _server_rejects(r, 1, bad, AbortReason.UNEXPECTED_SENDER)  # 3 is alive: no mask-key shares for it
    assert all(r.release().values())
    assert r.close() is False
    assert isinstance(r.server.outcome, ServerResult)
    assert np.array_equal(r.server.outcome.sum_weighted, ref)  # bad messages changed nothing
    assert len(r.watch.errors) == len(r.server.rejected) == len(r.driver.audit_record()["rejected_messages"]) == 14
    assert r.server.outcome.dropped == {} and r.server.outcome.included == tuple(r.ids)


@pytest.mark.parametrize("cut", [0, 1, 5, 17, -1])
def test_truncated_wire_bytes_raise_wire_format_error(cut):
    r = Round(n=4, dropout_tolerance=0.0)
    data = wire.encode(r.step(hold=True, close=False)[1])
    bad = data[:cut] if cut >= 0 else data + b"\x00"
    with pytest.raises(WireFormatError):
        wire.decode(bad)
    # the server driver decodes it: a typed refusal, recorded, and the honest bytes still count
    assert r.driver.receive(1, bad) is False
    assert isinstance(r.watch.errors[-1][1], WireFormatError)
    assert r.server._got.advertised == {}
    assert r.release() == {1: True, 2: True, 3: True, 4: True}


def _corrupt(u: UnmaskShares, field: str, k: int, delta: int = 1) -> UnmaskShares:
    shares = getattr(u, field).copy()
    shares[k] = (int(shares[k]) + delta) % (2**31 - 1)
    return dataclasses.replace(u, **{field: shares})


@pytest.mark.parametrize("field,drop", [("self_mask_shares", {}), ("mask_key_shares", {4: "masked_input"})])
def test_one_wrong_unmask_share_is_detected_and_routed_around(field, drop):
    """A holder sends a wrong share (of b_v, or of a dropped client's s_v^SK):
    the reconstructed secret fails its round-0 commitment / public key, and the
    server retries without one holder at a time: the right sum, no abort."""
    ref = Round(n=6, dropout_tolerance=0.2)
    ref_out = ref.run(drop=drop)
    r = Round(n=6, dropout_tolerance=0.2)
    r.run_to("unmasking", drop=drop)
    r.step(tamper_reply=lambda i, m: _corrupt(m, field, 0) if i == 1 else m)
    assert isinstance(r.server.outcome, ServerResult)
    assert np.array_equal(r.server.outcome.sum_weighted, ref_out.sum_weighted)


@pytest.mark.parametrize("field,drop", [("self_mask_shares", {}), ("mask_key_shares", {4: "masked_input"})])
def test_wrong_unmask_shares_beyond_repair_abort_not_a_wrong_sum(field, drop):
    """Two holders send wrong shares: no holder set the server tries passes the
    commitment check, and it aborts instead of returning garbage."""
    r = Round(n=6, dropout_tolerance=0.2)
    r.run_to("unmasking", drop=drop)
    # distinct errors (equal ones at two points can cancel at zero for some holder sets)
    delta = {1: 1, 2: 1000}
    r.step(tamper_reply=lambda i, m: _corrupt(m, field, 0, delta=delta[i]) if i in delta else m)
    assert isinstance(r.server.outcome, Abort)
    assert r.server.outcome.reason is AbortReason.RECONSTRUCTION_FAILED



@pytest.mark.parametrize("field,owners_field,drop,owner", [
    ("self_mask_shares", "self_mask_owners", {}, 2),
    ("mask_key_shares", "mask_key_owners", {4: "masked_input"}, 4)])
def test_a_secret_dealt_inconsistently_aborts_naming_its_owner(field, owners_field, drop, owner):
    """A corrupt client deals shares that lie on no polynomial giving what it
    committed to in round 0 (here: every holder's share of it is off by a
    different amount). No holder set reconstructs it, so the round cannot be
    completed without it: the server aborts (never a wrong sum) and names the
    client in ``Abort.culprits`` and the audit record, so the caller can run
    the next round without it; ``simulate``'s driver raises it in
    ``ProtocolAborted.culprits``."""
    from secagg.protocols.masking.messages import SHARE_CHUNKS

    def deal_badly(i: int, m: object) -> object:
        if not isinstance(m, UnmaskShares):
            return m
        owners = getattr(m, owners_field).tolist()
        if owner not in owners:
            return m
        return _corrupt(m, field, owners.index(owner) * SHARE_CHUNKS, delta=1 + 977 * i)

    r = Round(n=6, dropout_tolerance=0.2)
    r.run_to("unmasking", drop=drop)
    r.step(tamper_reply=deal_badly)
    out = r.server.outcome
    assert isinstance(out, Abort) and out.reason is AbortReason.RECONSTRUCTION_FAILED
    assert out.culprits == (owner,)
    assert r.server.audit_record()["abort_culprits"] == [owner]
    from secagg.errors import ProtocolAborted

    with pytest.raises(ProtocolAborted) as info:
        r.driver.result()
    assert info.value.culprits == (owner,)

# ================================================================ reviewer findings: PKI, signers, sparse arcs

def test_malicious_mode_refuses_signing_keys_that_differ_from_the_trusted_ones():
    from secagg.errors import ParameterError
    from secagg.primitives.signatures import generate_signing_keypair
    from secagg.protocols.masking import MaskingClient

    r = Round(n=5, malicious=True, dropout_tolerance=0.2)
    # a server that swaps client 3's verification key for one it holds
    forged = dict(r.params.signing_keys)
    forged[3] = generate_signing_keypair().public
    evil_params = dataclasses.replace(r.params, signing_keys=forged)
    with pytest.raises(ParameterError, match="differ from the trusted"):
        MaskingClient(evil_params, 1, signing_key=r.signing[1].private, trusted_signing_keys=r.trusted)
    with pytest.raises(ParameterError, match="trusted_signing_keys"):
        MaskingClient(r.params, 1, signing_key=r.signing[1].private)
    with pytest.raises(ParameterError, match="different signing key"):
        MaskingClient(r.params, 1, signing_key=r.signing[2].private, trusted_signing_keys=r.trusted)


def test_unknown_signer_in_unmask_request_is_a_typed_abort_not_a_crash():
    r = Round(n=6, malicious=True)
    r.run_to("unmasking")
    req: UnmaskRequest = r.outgoing[1]
    sigs = dict(req.signatures)
    sigs[77] = bytes(64)
    evil = dataclasses.replace(req, alive=_ids(*req.alive.tolist(), 77), signatures=sigs)
    assert _reply(r, 1, evil) is None
    assert r.refusal(1) in (AbortReason.UNEXPECTED_SENDER, AbortReason.INVALID_SIGNATURE)


def test_server_faking_dropouts_cannot_learn_an_arc_of_a_sparse_graph():
    """Remove two runs of k/2 ring positions (claiming they dropped): the
    clients next to the runs keep k/2 + 1 holders < t and refuse to unmask, so
    the server cannot finish with the sum of an arc."""
    r = Round(n=40, dim=3, protocol="secagg+", dropout_tolerance=0.05)
    g = r.params.graph
    half = r.params.degree // 2
    ring = [int(v) for v in g._ring]
    removed = set(ring[0:half]) | set(ring[20:20 + half])
    out = r.run(drop={v: "masked_input" for v in removed})
    assert isinstance(out, Abort)
    assert out.reason is AbortReason.TOO_FEW_SURVIVORS


def test_sparse_threshold_must_be_at_least_half_degree_plus_two():
    from secagg.errors import ParameterError
    from secagg.protocols.masking import MaskingParams

    with pytest.raises(ParameterError, match="needs threshold"):
        MaskingParams.create(range(1, 31), 3, protocol="secagg+", degree=8, threshold=5)
    assert MaskingParams.create(range(1, 31), 3, protocol="secagg+", degree=8, threshold=6).threshold == 6


def test_server_refuses_low_order_public_keys_at_advertisement():
    r = Round(n=5, dropout_tolerance=0.2)
    adv = r.step(hold=True, close=False)[1]
    _server_rejects(r, 1, dataclasses.replace(adv, mask_public=bytes(32)))
    assert r.release() == {i: True for i in r.ids}  # the honest one is still accepted: nothing changed
    assert isinstance(r.run(), ServerResult)



@pytest.mark.parametrize("which", ["enc_public", "mask_public"])
@pytest.mark.parametrize("drop_owner", [False, True])
def test_server_accepts_a_mixed_order_key_and_its_owner_is_included(which, drop_owner):
    """SPEC §4.2: client 1 advertises (and keeps in its own state) its honest
    key moved by the point of order 2 (u -> 1/u). Every neighbour's clamped
    exchange gives the secret it would give with the honest key, so the
    server spends no exchange to refuse it: every share record to and from
    client 1 decrypts, every pairwise mask cancels, client 1 is included and
    the aggregate is exact. With client 1 dropping when its masked input is
    due (``drop_owner``), its mask key is reconstructed and matched against
    the advertised key up to the small-order component, and the round
    completes without it: the key does not let a client stop the round.
    A twist point in its place is still refused."""
    p = 2**255 - 19
    r = Round(n=6, dropout_tolerance=0.2)
    advs = r.step(hold=True, close=False)
    rec = r.record(1)
    assert rec is not None
    honest = getattr(rec.client, which)
    mixed = pow(int.from_bytes(honest, "little"), p - 2, p).to_bytes(32, "little")
    assert mixed != honest
    twist = next(u for u in range(2, 100) if pow(u * (u * u + 486662 * u + 1) % p, (p - 1) // 2, p) == p - 1)
    _server_rejects(r, 1, dataclasses.replace(advs[1], **{which: twist.to_bytes(32, "little")}),
                    AbortReason.MALFORMED_MESSAGE)
    r.stores[1].save(r.params.session_id,
                     dataclasses.replace(rec, client=dataclasses.replace(rec.client, **{which: mixed})))
    assert r.driver.receive(1, wire.encode(dataclasses.replace(advs[1], **{which: mixed}))) is True
    r.held.pop(1)
    assert all(r.release().values())
    out = r.run(drop={1: "masked_input"} if drop_owner else None)
    assert isinstance(out, ServerResult)
    assert set(out.included) == set(r.ids) - ({1} if drop_owner else set())
    bound = r.params.encoding.sum_error_bound(len(out.included)) + 1e-12
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(out.included))) <= bound


def test_a_mixed_order_copy_of_another_clients_mask_key_cannot_be_matched():
    """A client that moves another client's mask key by a point of order 2
    passes the byte-wise duplicate check but holds no private key for it: it
    deals shares of its own key, and when it drops the reconstruction
    matches neither the advertised key nor its prime-order part. The round
    aborts naming it (SPEC §3.5 step 3), as for any key its owner cannot
    open; the victim is not named."""
    p = 2**255 - 19
    r = Round(n=6, dropout_tolerance=0.2)
    advs = r.step(hold=True, close=False)
    victim = advs[2].mask_public
    copy = pow(int.from_bytes(victim, "little"), p - 2, p).to_bytes(32, "little")
    rec = r.record(1)
    assert rec is not None
    r.stores[1].save(r.params.session_id,
                     dataclasses.replace(rec, client=dataclasses.replace(rec.client, mask_public=copy)))
    assert r.driver.receive(1, wire.encode(dataclasses.replace(advs[1], mask_public=copy))) is True
    r.held.pop(1)
    assert all(r.release().values())
    out = r.run(drop={1: "masked_input"})
    assert isinstance(out, Abort)
    assert out.reason is AbortReason.RECONSTRUCTION_FAILED and out.culprits == (1,)


# ================================================================ invariant 4: the mask PRG

def test_masks_are_full_width_keystream_not_a_small_seeded_rng():
    """A masked input of a zero update is indistinguishable from uniform words;
    in particular it is not reproducible from any 32-bit numpy seed of the
    kind a folded key would give (spot check over the seeds it would need)."""
    r = Round(n=4, dim=4096, dropout_tolerance=0.0)
    r.updates = {i: np.zeros(r.dim) for i in r.ids}
    r.advertise()
    r.step()
    replies = r.step(close=False)
    assert r.record(1).update.size == 0  # masked and sent: the update is no longer kept
    y = replies[1].masked[:-1]
    counts = np.bincount((y >> np.uint32(24)).astype(np.int64), minlength=256)
    chi2 = float(((counts - y.size / 256) ** 2 / (y.size / 256)).sum())
    assert chi2 < 400  # 255 degrees of freedom; a zero or low-entropy mask fails by far
    for s in range(256):
        rs = np.random.RandomState(s).randint(0, 2**31, size=4, dtype=np.int64)
        assert not np.array_equal(rs.astype(np.uint32), y[:4])


# ================================================================ second review: encodings, replay-exactness, retry cost

def test_non_canonical_key_encodings_are_refused():
    """X25519 ignores bit 255: the same point under other bytes would dodge the
    duplicate-key checks. Server and clients refuse non-canonical encodings."""
    r = Round(n=5, dropout_tolerance=0.2)
    advs = r.step(hold=True, close=False)
    assert r.release([1]) == {1: True}
    adv1 = advs[1]
    alias = bytes(adv1.mask_public[:31]) + bytes([adv1.mask_public[31] | 0x80])
    _server_rejects(r, 2, dataclasses.replace(advs[2], mask_public=alias), AbortReason.MALFORMED_MESSAGE)
    r2 = Round(n=5, dropout_tolerance=0.2)
    r2.advertise()
    msg: KeysBroadcast = r2.outgoing[1]
    m = bytearray(msg.mask_publics)
    m[32 * 2 + 31] |= 0x80
    assert _reply(r2, 1, dataclasses.replace(msg, mask_publics=bytes(m))) is None
    assert r2.refusal(1) is AbortReason.MALFORMED_MESSAGE


def test_rejected_key_broadcast_consumes_no_randomness():
    """A broadcast with a low-order masking key is refused before any share is
    drawn: the client then answers the honest broadcast exactly as a client
    that never saw the bad one (byte-exact replay)."""
    a, b = Round(n=5, seed=4, dropout_tolerance=0.2), Round(n=5, seed=4, dropout_tolerance=0.2)
    a.advertise()
    b.advertise()
    good: KeysBroadcast = b.outgoing[1]
    bad = _keys_with(good, 2, mask=bytes(32))  # the all-zero point: low order
    core = b.client(1)
    with pytest.raises(RemoteProtocolError):
        core.share_keys(bad)
    assert wire.encode(core.share_keys(good)) == wire.encode(a.step()[1])


def test_one_bad_holder_among_many_owners_is_found_once_and_named():
    r = Round(n=30, dim=4, dropout_tolerance=0.2)
    ref = Round(n=30, dim=4, dropout_tolerance=0.2).run()
    r.run_to("unmasking")
    bad = r.params.threshold  # the t-th holder: inside every first-t holder set

    def wrong_shares(i, u):  # type: ignore[no-untyped-def]
        if i != bad:
            return u
        shares = u.self_mask_shares.reshape(-1, 9).copy()
        shares[:, 0] = (shares[:, 0] + 12345) % (2**31 - 1)  # a wrong share for every owner
        return dataclasses.replace(u, self_mask_shares=shares.ravel())

    r.step(tamper_reply=wrong_shares)
    assert isinstance(r.server.outcome, ServerResult)
    assert np.array_equal(r.server.outcome.sum_weighted, ref.sum_weighted)
    assert r.server.suspected_holders == {bad}
    assert r.server.audit_record()["suspected_holders"] == [bad]
    assert len(r.server._lagrange_cache) <= r.params.threshold + 2  # not one set per owner and try


def _forge_record(r: Round, sender: int, target: int, edit) -> ForwardedShares:
    """The forwarded shares for ``target`` with ``sender``'s record re-encrypted
    under the genuine k_{sender,target} after ``edit`` changed its plaintext:
    what a malicious peer (not the server) can produce."""
    import struct  # noqa: F401  (used by the edits)

    from secagg.primitives import aead
    from secagg.protocols.masking import _crypto as C

    msg = r.outgoing[target]
    peer = r.client(sender)
    ids = peer.state.peers.client_ids.tolist()
    i = ids.index(target)
    key = peer.state.enc_keys[32 * i:32 * (i + 1)]
    sid = r.params.session_id
    j = msg.senders.tolist().index(sender)
    record = msg.ciphertexts[SHARE_RECORD_SIZE * j:SHARE_RECORD_SIZE * (j + 1)]
    plain = bytearray(aead.decrypt(key, record, C.share_associated_data(sid, sender, target)))
    edit(plain)
    forged = aead.encrypt(key, bytes(plain), C.share_associated_data(sid, sender, target))
    return dataclasses.replace(msg, ciphertexts=msg.ciphertexts[:SHARE_RECORD_SIZE * j] + forged
                               + msg.ciphertexts[SHARE_RECORD_SIZE * (j + 1):])


@pytest.mark.parametrize("what", ["names another sender", "names another recipient", "b share = p",
                                  "sk share = 2^32 - 1"])
def test_authentic_share_record_with_wrong_content_aborts(what):
    """A peer encrypts, under the real pairwise key, a record whose header names
    the wrong parties or whose share is not a field element: the recipient
    aborts with INVALID_CIPHERTEXT before masking anything, state unchanged."""
    import struct

    from secagg.protocols.masking.messages import SHARE_CHUNKS

    p = (1 << 31) - 1
    edits = {
        "names another sender": lambda b: b.__setitem__(slice(0, 8), struct.pack(">II", 3, 1)),
        "names another recipient": lambda b: b.__setitem__(slice(0, 8), struct.pack(">II", 2, 4)),
        "b share = p": lambda b: b.__setitem__(slice(8, 12), struct.pack("<I", p)),
        "sk share = 2^32 - 1": lambda b: b.__setitem__(slice(8 + 4 * SHARE_CHUNKS, 12 + 4 * SHARE_CHUNKS),
                                                       struct.pack("<I", 0xFFFFFFFF)),
    }
    r = Round(n=5, dim=4, dropout_tolerance=0.2)
    r.advertise()
    r.step()
    client = r.client(1)
    before = wire.encode(client.state)
    evil = wire.decode(wire.encode(_forge_record(r, 2, 1, edits[what])))
    with pytest.raises(RemoteProtocolError) as info:
        client.masked_input(evil, r.updates[1])
    assert info.value.reason is AbortReason.INVALID_CIPHERTEXT
    assert wire.encode(client.state) == before  # the stage method changed nothing
    assert wire.encode(r.record(1).client) == before
    assert _reply(r, 1, evil) is None  # through the driver: a typed refusal, the client leaves the round
    assert r.refusal(1) is AbortReason.INVALID_CIPHERTEXT and r.aborted(1)
    honest = Round(n=5, dim=4, dropout_tolerance=0.2)
    honest.advertise()
    honest.step()
    assert isinstance(_reply(honest, 1, honest.outgoing[1]), MaskedInput)


def test_a_holder_found_bad_in_one_pass_is_left_out_first_in_the_next(monkeypatch):
    """One holder sends wrong shares of every self-mask seed and of every
    dropped client's mask key. Once found in the first pass, it is the first
    one left out in the second: each failing mask key then costs one more
    reconstruction, not a search (and no set that leaves out a holder beyond
    the first t, which would be the set that failed)."""
    from secagg.primitives import shamir
    from secagg.protocols.masking import server as server_module

    drop = {5: "masked_input", 9: "masked_input", 17: "masked_input"}
    r = Round(n=30, dim=4, dropout_tolerance=0.2)
    ref = Round(n=30, dim=4, dropout_tolerance=0.2).run(drop)
    r.run_to("unmasking", drop)
    t = r.params.threshold
    bad = sorted(r.outgoing)[t - 1]  # the t-th holder: inside every first-t holder set

    def wrong_shares(i, u):  # type: ignore[no-untyped-def]
        if i != bad:
            return u
        b = u.self_mask_shares.reshape(-1, 9).copy()
        b[:, 0] = (b[:, 0] + 12345) % (2**31 - 1)
        sk = u.mask_key_shares.reshape(-1, 9).copy()
        sk[:, 3] = (sk[:, 3] + 777) % (2**31 - 1)
        return dataclasses.replace(u, self_mask_shares=b.ravel(), mask_key_shares=sk.ravel())

    r.step(tamper_reply=wrong_shares, close=False)
    calls = []
    real = shamir.reconstruct_many

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module.shamir, "reconstruct_many", counting)
    r.close()
    assert isinstance(r.server.outcome, ServerResult)
    np.testing.assert_array_equal(r.server.outcome.sum_weighted, ref.sum_weighted)
    assert r.server.suspected_holders == {bad}
    owners = len(r.server.u3) + len(drop)
    # the first failing self-mask owner searches (at most t tries); every other owner, one try
    assert len(calls) <= t + owners - 1
