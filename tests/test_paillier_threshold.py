"""Threshold decryption of the Paillier aggregate by a committee of clients
(secagg.protocols.paillier.threshold): what a committee member refuses, what
the server's combiner refuses and names, recovery after a member vanishes,
and that nothing decrypts with fewer than t valid shares."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest

from secagg.encoding import wire
from secagg.errors import (AbortReason, InvalidDecryptionShare, ParameterError, ReconstructionError,
                           RemoteProtocolError, WireFormatError)
from secagg.primitives import paillier as pl
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.paillier.client import PaillierClient
from secagg.protocols.paillier.messages import (AlreadyDecrypted, KeyMismatch, LateSubmission, SessionMismatch,
                                               TooFewClients, UnexpectedSender)
from secagg.protocols.paillier.params import PaillierParams
from secagg.protocols.paillier.threshold import (CommitteeKey, DecryptionRequest, DecryptionShares,
                                                 ThresholdCombiner, ThresholdDecryptor, assign_blocks,
                                                 deal_committee)

N = 5
D = 300


@cache
def committee(seed: int = 1):
    return deal_committee(range(1, N + 1), key_bits=512, rng=DeterministicRandom(seed))


def make_round(seed: int = 3, min_clients: int = 3, clients=range(1, N + 1)):
    ck, _ = committee()
    rng = DeterministicRandom(seed)
    params = PaillierParams.create(ck.public_key, range(1, N + 1), D, min_clients=min_clients, rng=rng)
    xs = {c: np.linspace(-0.5, 0.5, D) * c / N for c in clients}
    subs = {}
    for c in clients:
        cl = PaillierClient(c, ck.public_key, rng=rng.fork(str(c)), min_key_bits=512)
        cl.receive_params(params)
        subs[c] = pl.ciphertexts_from_bytes(ck.public_key, cl.submit(xs[c], 1.0).ciphertexts,
                                            params.n_ciphertexts)
    prod = [c for c in next(iter(subs.values()))]
    for c in list(subs)[1:]:
        pl.multiply_into(ck.public_key, prod, subs[c])
    aggregate = pl.ciphertexts_to_bytes(ck.public_key, prod)
    return params, xs, subs, aggregate


def members(params):
    ck, shares = committee()
    decs = {h: ThresholdDecryptor(h, ck, shares[h], rng=DeterministicRandom(h)) for h in ck.holders}
    # every member submitted in these rounds (the role records it after its submission)
    return decs, {h: dataclasses.replace(d.register(params), submitted=True) for h, d in decs.items()}


def run(params, aggregate, included, *, skip=(), tamper=None):
    ck, _ = committee()
    decs, recs = members(params)
    comb = ThresholdCombiner(ck, params, included, aggregate)
    for attempt in (0, 1):
        reqs = comb.requests(list(ck.holders)) if attempt == 0 else comb.recovery_requests()
        for h, req in reqs.items():
            if h in skip:
                comb.give_up(h)
                continue
            ans, recs[h] = decs[h].decrypt(wire.decode(wire.encode(req), DecryptionRequest), recs[h])
            if tamper and h in tamper:
                ans = tamper[h](ans)
            comb.receive(h, wire.decode(wire.encode(ans), DecryptionShares))
        if not comb.lacking():
            break
    return comb


def decoded(params, plaintexts, k):
    sums = params.layout.unpack(plaintexts, params.entries, k)
    return sums.astype(np.float64) / 2**params.frac_bits


def test_committee_round_with_a_member_gone_decrypts_the_sum():
    params, xs, _, agg = make_round()
    comb = run(params, agg, tuple(range(1, N + 1)), skip={2})
    got = decoded(params, comb.combine(), N)
    assert np.allclose(got[:-1], sum(xs.values()), atol=N * 2.0**-params.frac_bits)
    assert got[-1] == N


def test_blocks_are_spread_over_the_committee():
    plan = assign_blocks(10753, list(range(1, 13)), 4)
    sizes = [len(v) for v in plan.values()]
    assert max(sizes) - min(sizes) <= 4 and sum(sizes) == 4 * 10753
    counts = np.zeros(10753, int)
    for ix in plan.values():
        counts[ix] += 1
    assert (counts == 4).all()
    with pytest.raises(ReconstructionError):
        assign_blocks(10, [1, 2], 3)


def test_a_bad_share_is_refused_naming_its_holder_and_the_honest_t_finish():
    params, xs, _, agg = make_round()

    def corrupt(ans):
        v = bytearray(ans.values)
        v[-1] ^= 1
        return dataclasses.replace(ans, values=bytes(v))

    ck, _ = committee()
    decs, recs = members(params)
    comb = ThresholdCombiner(ck, params, tuple(range(1, N + 1)), agg)
    reqs = comb.requests(list(ck.holders))
    for h, req in reqs.items():
        ans, recs[h] = decs[h].decrypt(req, recs[h])
        if h == 4:
            with pytest.raises(InvalidDecryptionShare, match="holder 4") as info:
                comb.receive(h, corrupt(ans))
            assert info.value.reason is AbortReason.INVALID_DECRYPTION_SHARE
        else:
            comb.receive(h, ans)
    assert 4 in comb.failed and comb.lacking()
    with pytest.raises(ReconstructionError):
        comb.combine()  # nothing decrypts while some ciphertext lacks t valid shares
    for h, req in comb.recovery_requests().items():
        assert h != 4  # the holder whose share failed is not asked again
        ans, recs[h] = decs[h].decrypt(req, recs[h])
        comb.receive(h, ans)
    got = decoded(params, comb.combine(), N)
    assert np.allclose(got[:-1], sum(xs.values()), atol=N * 2.0**-params.frac_bits)


def test_combiner_refusals():
    """Each refusal names the holder, is recorded in ``failed`` and uses up its
    answer for the attempt (a fresh combiner per case)."""
    params, _, _, agg = make_round()
    ck, _ = committee()
    decs, recs = members(params)

    def fresh():
        comb = ThresholdCombiner(ck, params, tuple(range(1, N + 1)), agg)
        return comb, comb.requests(list(ck.holders))

    comb, reqs = fresh()
    answers = {}
    for h, req in reqs.items():
        answers[h], recs[h] = decs[h].decrypt(req, recs[h])
    a1, a2 = answers[1], answers[2]
    cases = [
        (a2, UnexpectedSender),  # holder 2's answer sent by 1
        (dataclasses.replace(a1, holder=2), UnexpectedSender),  # claims to be another holder
        (dataclasses.replace(a1, session_id=bytes(32)), SessionMismatch),
        (dataclasses.replace(a1, aggregate_digest=bytes(32)), InvalidDecryptionShare),  # another aggregate
        (dataclasses.replace(a1, values=a2.values[:len(a1.values)]), InvalidDecryptionShare),  # 2's values
        (dataclasses.replace(a1, values=a1.values[:-1]), WireFormatError),
    ]
    for bad, error in cases:
        comb, _ = fresh()
        with pytest.raises(error):
            comb.receive(1, bad)
        assert 1 in comb.failed and 1 not in comb.awaiting
        with pytest.raises(UnexpectedSender):  # one answer per attempt: the good one comes too late
            comb.receive(1, a1)
    comb, _ = fresh()
    with pytest.raises(LateSubmission):  # an answer to another attempt is out of place, not a failure
        comb.receive(1, dataclasses.replace(a1, attempt=1))
    assert 1 not in comb.failed and 1 in comb.awaiting
    comb.receive(1, a1)
    comb.receive(2, a2)
    with pytest.raises(UnexpectedSender):  # duplicate
        comb.receive(2, a2)


def test_too_few_members_nothing_decrypts():
    params, _, _, agg = make_round()
    ck, _ = committee()
    decs, recs = members(params)
    comb = ThresholdCombiner(ck, params, tuple(range(1, N + 1)), agg)
    for h, req in comb.requests(list(ck.holders)).items():
        if h in (1, 2, 3):  # three of five vanish: two valid holders remain, t = 3
            comb.give_up(h)
            continue
        ans, recs[h] = decs[h].decrypt(req, recs[h])
        comb.receive(h, ans)
    with pytest.raises(ReconstructionError):
        comb.combine()
    with pytest.raises(ReconstructionError, match="needed"):
        comb.recovery_requests()


def test_three_of_five_recover_every_ciphertext():
    params, xs, _, agg = make_round()
    comb = run(params, agg, tuple(range(1, N + 1)), skip={2, 3})
    assert comb.attempt == 1
    got = decoded(params, comb.combine(), N)
    assert np.allclose(got[:-1], sum(xs.values()), atol=N * 2.0**-params.frac_bits)


def test_member_refusals():
    params, _, subs, agg = make_round()
    ck, shares = committee()
    dec = ThresholdDecryptor(1, ck, shares[1])
    registered_only = dec.register(params)
    rec = dataclasses.replace(registered_only, submitted=True)
    req = DecryptionRequest(session_id=params.session_id, key_id=ck.key_id, attempt=0,
                            included=tuple(range(1, N + 1)), statements=(), ranges=(0, 3), aggregate=agg)
    with pytest.raises(SessionMismatch):  # a session it never registered
        dec.decrypt(req, None)
    with pytest.raises(RemoteProtocolError, match="did not submit"):  # names this member, which never submitted
        dec.decrypt(req, registered_only)
    dec.decrypt(dataclasses.replace(req, included=(2, 3, 4)), registered_only)  # not named: it may decrypt
    with pytest.raises(KeyMismatch):
        dec.decrypt(dataclasses.replace(req, key_id=bytes(32)), rec)
    with pytest.raises(TooFewClients):  # fewer than min_clients
        dec.decrypt(dataclasses.replace(req, included=(1, 2)), rec)
    with pytest.raises(RemoteProtocolError):  # not invited ids
        dec.decrypt(dataclasses.replace(req, included=(1, 2, 99)), rec)
    with pytest.raises(WireFormatError):
        dec.decrypt(dataclasses.replace(req, ranges=(3, 3)), rec)
    with pytest.raises(WireFormatError):
        dec.decrypt(dataclasses.replace(req, ranges=(0, params.n_ciphertexts + 1)), rec)
    ans, rec2 = dec.decrypt(req, rec)
    assert rec2.aggregate_digest == ans.aggregate_digest
    # the same session, another aggregate: one client's ciphertext passed off as the aggregate
    single = pl.ciphertexts_to_bytes(ck.public_key, subs[1])
    with pytest.raises(AlreadyDecrypted):
        dec.decrypt(dataclasses.replace(req, aggregate=single, attempt=1), rec2)
    # the same aggregate again (a recovery request) is answered
    dec.decrypt(dataclasses.replace(req, attempt=1, ranges=(5, 6)), rec2)


def test_member_policy_floor():
    ck, shares = committee()
    dec = ThresholdDecryptor(1, ck, shares[1], min_clients=4)
    params, *_ = make_round(min_clients=3)
    with pytest.raises(TooFewClients):
        dec.register(params)
    with pytest.raises(ParameterError, match="unsafe_allow_single_client"):
        ThresholdDecryptor(1, ck, shares[1], min_clients=1)
    ThresholdDecryptor(1, ck, shares[1], min_clients=1, unsafe_allow_single_client=True)
    with pytest.raises(ParameterError):  # share of another holder
        ThresholdDecryptor(2, ck, shares[1])
    with pytest.raises(ParameterError):
        deal_committee([1, 2, 3], threshold=1, key_bits=512, rng=DeterministicRandom(1))


def test_committee_key_wire_checks():
    ck, _ = committee()
    data = wire.encode(ck)
    assert wire.decode(data, CommitteeKey) == ck
    with pytest.raises(ParameterError):
        CommitteeKey(ck.modulus, ck.threshold, (2, 1, 3, 4, 5), ck.base, ck.verification_keys)
    with pytest.raises(ParameterError):
        CommitteeKey(ck.modulus, 6, ck.holders, ck.base, ck.verification_keys)
    with pytest.raises(ParameterError):
        CommitteeKey(ck.modulus, ck.threshold, ck.holders, ck.base, ck.verification_keys[:-1])
