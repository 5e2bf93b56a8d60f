"""Paillier rounds decrypted by a committee of the clients, on the round
drivers and the in-process transport: the honest round, a member vanishing
or cheating during decryption, and a dishonest server trying to get more
than the one aggregate of a session decrypted."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest

from secagg.drivers import ClientDriver, CommitteeClientRole, Contribution, ServerDriver
from secagg.encoding import wire
from secagg.errors import AbortReason, InvalidSignature, ProtocolAborted
from secagg.primitives import paillier as pl
from secagg.primitives import signatures
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.paillier import PaillierParams, PaillierServer, Submission
from secagg.protocols.paillier.messages import TooFewClients, UnexpectedSender
from secagg.protocols.paillier.threshold import DecryptionRequest, DecryptionShares, deal_committee
from secagg.protocols.stages import Stage
from secagg.transports.inprocess import LocalRound

N, D = 4, 200
KEY_BITS = 512


@cache
def committee():
    return deal_committee(range(1, N + 1), key_bits=KEY_BITS, rng=DeterministicRandom("committee"))


@cache
def signing_keys():
    return {c: signatures.generate_signing_keypair(DeterministicRandom(f"sign-{c}")) for c in range(1, N + 1)}


def updates():
    return {c: np.linspace(-0.9, 0.9, D) * (c / N) ** 2 for c in range(1, N + 1)}


def make_member(c: int, signed: bool, seed: str) -> CommitteeClientRole:
    ck, shares = committee()
    keys = signing_keys()
    return CommitteeClientRole(c, ck, shares[c], rng=DeterministicRandom(f"{seed}-{c}"), min_key_bits=KEY_BITS,
                               signing_key=keys[c].private if signed else None,
                               client_keys={i: k.public for i, k in keys.items()} if signed else None)


def run_round(*, dropouts=None, tamper=None, signed=False, seed="round", params=None):
    ck, _ = committee()
    keys = signing_keys()
    params = params or PaillierParams.create(pl.PublicKey(ck.public_key.n), range(1, N + 1), D,
                                             rng=DeterministicRandom(seed))
    server = ServerDriver(PaillierServer(params, committee=ck,
                                         client_keys={c: k.public for c, k in keys.items()} if signed else None),
                          "mean")
    clients = {c: ClientDriver(make_member(c, signed, seed)) for c in range(1, N + 1)}
    xs = updates()
    net = LocalRound(server, clients, {c: Contribution(xs[c]) for c in clients}, dropouts=dropouts, tamper=tamper)
    net.run()
    return server, net, params


def expected(included):
    xs = updates()
    return np.mean([xs[c] for c in included], axis=0)


def test_committee_round_equals_the_plain_mean():
    server, net, params = run_round()
    res = server.result()
    assert res.included == (1, 2, 3, 4)
    np.testing.assert_allclose(res.aggregate, expected(res.included), atol=N * 2.0**-params.frac_bits)
    rec = server.audit_record()
    assert rec["decryption"]["committee"] == [1, 2, 3, 4] and rec["decryption"]["threshold"] == 3


@pytest.mark.parametrize("dropouts", [{2: "decrypt"}, {4: "submit"}, {3: "decrypt_recovery"}])
def test_members_vanishing_before_or_during_decryption(dropouts):
    server, net, params = run_round(dropouts=dropouts)
    res = server.result()
    assert set(res.included) == {c for c in range(1, N + 1) if dropouts.get(c) != "submit"}
    np.testing.assert_allclose(res.aggregate, expected(res.included), atol=N * 2.0**-params.frac_bits)


@pytest.mark.parametrize("dropouts", [{1: "decrypt", 2: "decrypt"}, {1: "submit", 3: "decrypt"},
                                      {1: "decrypt", 2: "decrypt_recovery"}])
def test_too_many_members_gone_aborts_without_a_result(dropouts):
    server, net, _ = run_round(dropouts=dropouts)
    assert server.outcome.reason is AbortReason.DECRYPTION_FAILED
    with pytest.raises(ProtocolAborted):
        server.result()


def test_a_member_sending_a_bad_share_is_named_and_the_round_completes():
    def corrupt(direction, stage, party, data):
        if direction == "to_server" and stage is Stage.DECRYPT and party == 2:
            msg = wire.decode(data, DecryptionShares)
            values = bytearray(msg.values)
            values[10] ^= 0x40
            return wire.encode(dataclasses.replace(msg, values=bytes(values)))
        return data

    server, net, params = run_round(tamper=corrupt)
    res = server.result()
    np.testing.assert_allclose(res.aggregate, expected(res.included), atol=N * 2.0**-params.frac_bits)
    assert (2, "decrypt", AbortReason.INVALID_DECRYPTION_SHARE.value) in server.rejected
    assert server.audit_record()["decryption"]["failed_members"] == [2]
    assert "2" in server.audit_record()["failures"]


def test_no_party_alone_and_no_coalition_below_t_gets_a_plaintext():
    """The server's view of a round: the aggregate and t shares of it. A
    coalition of t - 1 members pooling their shares of ONE client's
    ciphertext learns nothing (the combine refuses; the formula gives
    garbage)."""
    from secagg.primitives import threshold_paillier as tp
    ck, shares = committee()
    captured = {}

    def grab(direction, stage, party, data):
        if direction == "to_server" and stage is Stage.SUBMIT:
            captured[party] = wire.decode(data, Submission)
        return data

    server, net, params = run_round(tamper=grab)
    cts = pl.ciphertexts_from_bytes(ck.public_key, captured[1].ciphertexts, params.n_ciphertexts)[:2]
    for coalition in ([1], [2, 3], [1, 4]):
        parts = [tp.partial_decrypt(shares[c], cts) for c in coalition]
        with pytest.raises(Exception):
            tp.combine(ck.key, parts)


# ---------------------------------------------------------------- a dishonest server

def _submissions_of_a_round(signed: bool):
    captured: dict[int, bytes] = {}

    def grab(direction, stage, party, data):
        if direction == "to_server" and stage is Stage.SUBMIT:
            captured[party] = data
        return data

    server, _, params = run_round(tamper=grab, signed=signed)
    return params, {c: wire.decode(b, Submission) for c, b in captured.items()}


def _fresh_session_members(signed: bool, min_clients: int = 3):
    """A new session minted by the server; the members register it (and do
    not submit: the server only wants them to decrypt)."""
    ck, _ = committee()
    params = PaillierParams.create(pl.PublicKey(ck.public_key.n), range(1, N + 1), D, min_clients=min_clients,
                                   rng=DeterministicRandom("fresh"))
    drivers = {c: ClientDriver(make_member(c, signed, "fresh")) for c in range(1, N + 1)}
    for drv in drivers.values():
        assert drv.handle(wire.encode(params), None) is None and drv.last_error is None  # registered only
    return params, drivers


def _request(params, included, aggregate, statements=(), attempt=0, ranges=None):
    ck, _ = committee()
    return DecryptionRequest(session_id=params.session_id, key_id=ck.key_id, attempt=attempt,
                             included=tuple(included), statements=tuple(statements),
                             ranges=ranges or (0, params.n_ciphertexts), aggregate=aggregate)


def test_fresh_session_replaying_one_submission_is_refused_by_the_members_it_names():
    old_params, subs = _submissions_of_a_round(signed=False)
    params, drivers = _fresh_session_members(signed=False)
    # the server passes client 1's old ciphertext off as the aggregate of clients 1, 2, 3
    req = wire.encode(_request(params, (1, 2, 3), subs[1].ciphertexts))
    answers = {c: drv.handle(req) for c, drv in drivers.items()}
    for c in (1, 2, 3):  # named, but they did not submit in this session
        assert answers[c] is None and isinstance(drivers[c].last_error, UnexpectedSender)
    # only member 4 answers: fewer than t = 3 shares, nothing can be combined
    assert sum(a is not None for a in answers.values()) < committee()[0].threshold


def test_signed_mode_refuses_a_replayed_submission_and_made_up_statements():
    old_params, subs = _submissions_of_a_round(signed=True)
    params, drivers = _fresh_session_members(signed=True)
    from secagg.protocols.paillier.messages import statement_of
    stolen = [statement_of(subs[c], committee()[0].public_key.ciphertext_bytes) for c in (1, 2, 3)]  # valid for the OLD session only
    req = wire.encode(_request(params, (1, 2, 3), subs[1].ciphertexts, stolen))
    for c, drv in drivers.items():
        assert drv.handle(req) is None
        assert isinstance(drv.last_error, (InvalidSignature, UnexpectedSender)), drv.last_error


def test_single_client_round_and_a_refused_request_consumes_the_session():
    _, subs = _submissions_of_a_round(signed=False)
    params, drivers = _fresh_session_members(signed=False, min_clients=2)
    member = drivers[4]
    # one client's ciphertext as an "aggregate" of one: below every floor
    assert member.handle(wire.encode(_request(params, (1,), subs[1].ciphertexts))) is None
    assert isinstance(member.last_error, TooFewClients)
    # the refused request ended the session for this member: a well-formed request is not answered
    assert member.handle(wire.encode(_request(params, (1, 2), subs[1].ciphertexts))) is None
    assert member.last_error is not None


def test_members_refuse_parameters_below_their_floor():
    ck, _ = committee()
    params = PaillierParams.create(pl.PublicKey(ck.public_key.n), range(1, N + 1), D, min_clients=1,
                                   unsafe_allow_single_client=True, rng=DeterministicRandom("one"))
    drv = ClientDriver(make_member(1, False, "one"))
    assert drv.handle(wire.encode(params), Contribution(updates()[1])) is None
    assert isinstance(drv.last_error, TooFewClients)


def test_a_second_aggregate_in_the_same_session_is_refused():
    old_params, subs = _submissions_of_a_round(signed=False)
    params, drivers = _fresh_session_members(signed=False)
    member = drivers[4]
    first = _request(params, (1, 2, 3), subs[2].ciphertexts, ranges=(0, 1))
    member.handle(wire.encode(first))  # (the members named refuse; member 4 binds this aggregate)
    assert member.last_error is None
    second = _request(params, (1, 2, 3), subs[3].ciphertexts, attempt=1, ranges=(0, 1))
    assert member.handle(wire.encode(second)) is None
    assert member.last_error is not None and "another aggregate" in str(member.last_error)


# ---------------------------------------------------------------- signed mode: the product is checked

def test_signed_committee_round_checks_the_product_and_completes():
    server, net, params = run_round(signed=True, dropouts={3: "submit"})
    res = server.result()
    assert res.included == (1, 2, 4)
    np.testing.assert_allclose(res.aggregate, expected(res.included), atol=N * 2.0**-params.frac_bits)


def _swap_aggregate(make_fake):
    """A dishonest server: every decryption request carries ``make_fake``'s
    aggregate (the same for every member, so the members agree on it)."""
    seen: dict[int, Submission] = {}

    def tamper(direction, stage, party, data):
        if direction == "to_server" and stage is Stage.SUBMIT:
            seen[party] = wire.decode(data, Submission)
        if direction == "to_client" and stage is Stage.DECRYPT:
            req = wire.decode(data, DecryptionRequest)
            return wire.encode(dataclasses.replace(req, aggregate=make_fake(req, seen)))
        return data

    return tamper


def test_signed_mode_one_clients_ciphertext_passed_off_as_the_aggregate_is_refused():
    ck, _ = committee()

    def only_client_1(req, seen):  # the product over a single client's submission (times E(0) = 1)
        return seen[1].ciphertexts

    server, net, _ = run_round(signed=True, tamper=_swap_aggregate(only_client_1))
    assert server.outcome.reason is AbortReason.DECRYPTION_FAILED
    assert len(net.refusals) == N and all("product" in why for why in net.refusals.values())


def test_signed_mode_aggregate_shifted_by_known_values_is_refused():
    ck, _ = committee()
    pk = ck.public_key

    def shifted(req, seen):  # the real product times an encryption of a value the server knows
        cts = pl.ciphertexts_from_bytes(pk, req.aggregate, len(req.aggregate) // pk.ciphertext_bytes)
        cts[0] = cts[0] * pl.encrypt(pk, 12345, DeterministicRandom("shift")) % pk.n_square
        return pl.ciphertexts_to_bytes(pk, cts)

    server, net, _ = run_round(signed=True, tamper=_swap_aggregate(shifted))
    assert server.outcome.reason is AbortReason.DECRYPTION_FAILED
    # members whose ranges do not cover the changed ciphertext may answer; those that do refuse,
    # and nothing is combined from fewer than t valid shares of it
    assert any("product" in why for why in net.refusals.values())


def test_signed_mode_tampered_evidence_is_refused():
    def tamper(direction, stage, party, data):
        if direction == "to_client" and stage is Stage.DECRYPT and party == 2:
            req = wire.decode(data, DecryptionRequest)
            ev = list(req.evidence)
            recs = bytearray(ev[0].records)
            recs[5] ^= 1
            ev[0] = dataclasses.replace(ev[0], records=bytes(recs))
            return wire.encode(dataclasses.replace(req, evidence=tuple(ev)))
        return data

    server, net, params = run_round(signed=True, tamper=tamper)
    assert "signed" in net.refusals[2] or "product" in net.refusals[2]
    res = server.result()  # the others (and the recovery attempt) still decrypt the real aggregate
    np.testing.assert_allclose(res.aggregate, expected(res.included), atol=N * 2.0**-params.frac_bits)
