"""The single key holder keeps its promise, "only an aggregate over enough
clients is ever decrypted", against a dishonest server
(protocols/paillier/SPEC.md §2, §3.2-§3.4, §7):

* every decrypting or submitting party holds a minimum of its own
  (``min_clients``, 2 unless ``unsafe_allow_single_client=True``) and refuses
  round parameters below it, so a server cannot mint a session of one;
* ``min_clients`` defaults to a majority of the invited clients, never 1;
* a decryption request that names a registered session consumes it, whatever
  happens next, so a refused request cannot be retried;
* in the signed mode, each submission is bound to its session and client by
  the client's Ed25519 signature, checked by the server on intake and, for
  every included client, by the key holder before anything decrypts.

Each test is an attack or a misuse and asserts what must hold: no plaintext
returned, the exact error type, the state unchanged or consumed as stated.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pytest

import secagg
from secagg.drivers import ClientDriver, Contribution, KeyHolderRole, PaillierClientRole
from secagg.encoding import wire
from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.packing import SlotOverflow
from secagg.errors import (AbortReason, InvalidCiphertext, InvalidSignature, ParameterError, ProtocolAborted,
                           WireFormatError)
from secagg.primitives import paillier as pl
from secagg.primitives.randomness import DeterministicRandom
from secagg.primitives.signatures import generate_signing_keypair
from secagg.protocols.outcome import Abort, ServerResult
from secagg.protocols.paillier import (KEY_HOLDER, PROTOCOL_VERSION, AggregateCiphertext, AggregateSums,
                                       AlreadyDecrypted, ClientState, KeyMismatch, PaillierClient, PaillierKeyHolder,
                                       PaillierParams, PaillierServer, PublicKeyMessage, SessionMismatch, Submission,
                                       TooFewClients, UnexpectedSender)
from secagg.simulation import simulate_paillier

from round_harness import Network

KEY_BITS = 512
ENC = FixedPoint(clip=1.0, frac_bits=12, max_weight=4.0)
D = 20  # entries per update: one ciphertext at 512 bits


@lru_cache(maxsize=None)
def private_key(seed: str = "binding") -> pl.PrivateKey:
    return pl.generate_keypair(KEY_BITS, DeterministicRandom(seed))[1]


@lru_cache(maxsize=None)
def signing_key(cid: int):
    return generate_signing_keypair(DeterministicRandom(f"binding/signing/{cid}"))


def verify_keys(ids) -> dict[int, bytes]:
    return {i: signing_key(i).public for i in ids}


def forge_params(ids, min_clients: int, seed: str, rule: str = "mean") -> PaillierParams:
    """Round parameters as a dishonest server mints them: the constructor
    itself (valid on the wire), not ``PaillierParams.create`` and its policy."""
    return PaillierParams(version=PROTOCOL_VERSION, session_nonce=DeterministicRandom(seed).bytes(32),
                          public_key=PublicKeyMessage.from_key(private_key().public_key), client_ids=tuple(ids),
                          min_clients=min_clients, vector_length=D, clip=ENC.clip, frac_bits=ENC.frac_bits,
                          max_weight=ENC.max_weight, rule=rule)


def update(cid: int) -> np.ndarray:
    return np.linspace(-0.5, 0.5, D) * cid / 4


def submit(params: PaillierParams, cid: int, *, signed: bool = False, seed: str = "") -> Submission:
    """Client ``cid``'s submission to ``params`` (signed with its key if ``signed``)."""
    client = PaillierClient(cid, private_key().public_key, rng=DeterministicRandom(f"{seed}/client/{cid}"),
                            min_key_bits=KEY_BITS, **({"signing_key": signing_key(cid).private} if signed else {}))
    client.receive_params(wire.encode(params))
    return wire.decode(wire.encode(client.submit(update(cid))), Submission)


def product(params: PaillierParams, subs) -> bytes:
    """The records of the product of ``subs``' ciphertexts (what an honest server computes)."""
    pk = params.key
    acc = None
    for sub in subs:
        cts = pl.ciphertexts_from_bytes(pk, sub.ciphertexts, params.n_ciphertexts)
        if acc is None:
            acc = cts
        else:
            pl.multiply_into(pk, acc, cts)
    return pl.ciphertexts_to_bytes(pk, acc)


def exact_sums(params: PaillierParams, cids) -> np.ndarray:
    """What the key holder must return for ``cids``: test-only decryption of their product."""
    return params.layout.unpack(private_key().decrypt_many(
        pl.ciphertexts_from_bytes(params.key, product(params, [submit(params, c) for c in cids]),
                                  params.n_ciphertexts)), params.entries, len(cids))


def keyholder(**kw) -> PaillierKeyHolder:
    return PaillierKeyHolder(private_key=private_key(), threads=1, **kw)


# ------------------------------------------------------------------ 1. a decryption oracle across sessions

def test_fresh_session_of_one_replaying_an_earlier_ciphertext_is_refused():
    """A dishonest server runs an honest round, then mints a new session with
    ``min_clients=1`` and hands client 2's ciphertext from the earlier round to
    the key holder as the "aggregate": nothing is decrypted."""
    kh = keyholder()
    honest = PaillierParams.create(private_key().public_key, [1, 2, 3, 4], D, encoding=ENC, rule="mean",
                                   min_clients=3, rng=DeterministicRandom("binding/honest"))
    kh.accept_params(wire.encode(honest))
    victim = submit(honest, 2)
    for forged in (forge_params([2], 1, "binding/forged-1"), forge_params([1, 2, 3, 4], 1, "binding/forged-4")):
        with pytest.raises(TooFewClients, match="at least 2"):
            kh.accept_params(wire.encode(forged))
        assert not kh.is_registered(forged.session_id)
        replay = AggregateCiphertext(forged.session_id, forged.key.key_id, (2,), victim.ciphertexts)
        with pytest.raises(SessionMismatch):  # never registered: refused before anything decrypts
            kh.decrypt_aggregate(wire.encode(replay))
        assert not kh.is_consumed(forged.session_id)
    # the same replay in the honest session is one client, below its minimum: refused, and it consumed the session
    with pytest.raises(TooFewClients):
        kh.decrypt_aggregate(AggregateCiphertext(honest.session_id, honest.key.key_id, (2,), victim.ciphertexts))
    assert kh.is_consumed(honest.session_id)


def test_the_key_holder_role_refuses_a_session_of_one_and_registers_nothing():
    kh = keyholder()
    driver = ClientDriver(KeyHolderRole(kh))
    forged = forge_params([1, 2, 3], 1, "binding/role")
    assert driver.handle(wire.encode(forged)) is None
    assert isinstance(driver.last_error, TooFewClients)
    assert not kh.is_registered(forged.session_id)
    victim = submit(forge_params([1, 2, 3], 2, "binding/role-old"), 1)
    assert driver.handle(wire.encode(AggregateCiphertext(forged.session_id, forged.key.key_id, (1,),
                                                         victim.ciphertexts))) is None
    assert isinstance(driver.last_error, SessionMismatch)


# ------------------------------------------------------------------ 2. min_clients 1 by default

def test_default_min_clients_is_a_majority_and_never_one():
    pk = private_key().public_key
    rng = DeterministicRandom("binding/defaults")
    for n, expect in ((2, 2), (3, 2), (4, 3), (5, 3), (10, 6), (101, 51)):
        assert PaillierParams.create(pk, range(1, n + 1), D, encoding=ENC, rng=rng).min_clients == expect
    with pytest.raises(ParameterError, match="exact update"):
        PaillierParams.create(pk, [1], D, encoding=ENC, rng=rng)
    with pytest.raises(ParameterError, match="unsafe_allow_single_client"):
        PaillierParams.create(pk, [1, 2, 3], D, encoding=ENC, min_clients=1, rng=rng)
    assert PaillierParams.create(pk, [1, 2, 3], D, encoding=ENC, min_clients=2, rng=rng).min_clients == 2


def test_one_submission_of_four_with_an_honest_server_is_not_decrypted():
    xs = [update(c) for c in (1, 2, 3, 4)]
    with pytest.raises(ProtocolAborted) as info:
        secagg.simulate(xs, protocol="paillier", dropouts={2: "submit", 3: "submit", 4: "submit"}, seed=5,
                        key_bits=KEY_BITS)
    assert info.value.reason is AbortReason.TOO_FEW_SURVIVORS
    with pytest.raises(ProtocolAborted) as info:
        simulate_paillier(xs, None, rule="mean", encoding=None, dropouts={1: "submit", 3: "submit", 4: "submit"},
                          rng=DeterministicRandom("binding/sim"), key_bits=KEY_BITS)
    assert info.value.reason is AbortReason.TOO_FEW_SURVIVORS
    # a majority is enough
    res = secagg.simulate(xs, protocol="paillier", dropouts={4: "submit"}, seed=5, key_bits=KEY_BITS)
    assert res.included == (1, 2, 3) and res.params["min_clients"] == 3


def test_a_client_refuses_parameters_that_would_release_its_update_alone():
    pk = private_key().public_key
    client = PaillierClient(1, pk, rng=DeterministicRandom("binding/c1"), min_key_bits=KEY_BITS)
    with pytest.raises(TooFewClients, match="at least 2"):
        client.receive_params(wire.encode(forge_params([1, 2, 3, 4], 1, "binding/c1-forged")))
    assert client.state is ClientState.WAITING_PARAMS and client.params is None  # nothing changed
    strict = PaillierClient(1, pk, min_key_bits=KEY_BITS, min_clients=3)
    with pytest.raises(TooFewClients, match="at least 3"):
        strict.receive_params(forge_params([1, 2, 3, 4], 2, "binding/c1-two"))
    assert strict.state is ClientState.WAITING_PARAMS
    client.receive_params(forge_params([1, 2, 3, 4], 2, "binding/c1-ok"))  # the same client, a realistic round
    assert client.state is ClientState.READY


def test_every_party_refuses_a_round_of_one_on_the_drivers():
    """An honest server with ``min_clients=1``: no client submits, the key
    holder registers nothing, the round ends without an aggregate."""
    kh = keyholder()
    params = forge_params([1, 2, 3], 1, "binding/drivers-one")
    roles = {c: PaillierClientRole(c, kh.public_key_message(), rng=DeterministicRandom(f"r{c}"),
                                   min_key_bits=KEY_BITS) for c in (1, 2, 3)}
    drivers = {c: ClientDriver(r) for c, r in roles.items()}
    drivers[KEY_HOLDER] = ClientDriver(KeyHolderRole(kh))
    net = Network(PaillierServer(params), "mean", drivers, {c: Contribution(update(c)) for c in roles},
                  protocol="paillier")
    replies = net.step(close=False)
    assert replies == {}
    for party in (KEY_HOLDER, 1, 2, 3):
        assert isinstance(net.error(party), TooFewClients)
    assert not kh.is_registered(params.session_id)
    assert net.close() is False
    assert isinstance(net.outcome, Abort) and net.outcome.reason is AbortReason.TOO_FEW_SURVIVORS


# ------------------------------------------------------------------ 3. a failed request consumes the session

@pytest.fixture()
def registered_round():
    """A mean round of 4 (min 3) registered with a fresh key holder, every
    client's submission, and the honest aggregate of all four."""
    kh = keyholder()
    params = PaillierParams.create(private_key().public_key, [1, 2, 3, 4], D, encoding=ENC, rule="mean",
                                   min_clients=3, rng=DeterministicRandom("binding/consume"))
    kh.accept_params(params)
    subs = {c: submit(params, c) for c in (1, 2, 3, 4)}
    honest = AggregateCiphertext(params.session_id, params.key.key_id, (1, 2, 3, 4), product(params, subs.values()))
    return kh, params, subs, honest


def _junk(params: PaillierParams) -> bytes:
    pk = params.key
    return pl.ciphertexts_to_bytes(pk, pl.encrypt_with_obfuscators(
        pk, [pk.n - 1] * params.n_ciphertexts, pl.precompute_obfuscators(pk, params.n_ciphertexts,
                                                                          DeterministicRandom("binding/junk"))))


FAILURES = {
    "too few clients": (lambda p, s, h: dataclasses.replace(h, included=(1, 2)), TooFewClients),
    "uninvited id": (lambda p, s, h: dataclasses.replace(h, included=(1, 2, 3, 9)), UnexpectedSender),
    "repeated id": (lambda p, s, h: dataclasses.replace(h, included=(1, 2, 2, 3)), UnexpectedSender),
    "ciphertext 0": (lambda p, s, h: dataclasses.replace(
        h, ciphertexts=bytes(p.key.ciphertext_bytes) + h.ciphertexts[p.key.ciphertext_bytes:]), InvalidCiphertext),
    "records short": (lambda p, s, h: dataclasses.replace(h, ciphertexts=h.ciphertexts[:-1]), WireFormatError),
    "slot overflow": (lambda p, s, h: dataclasses.replace(h, ciphertexts=_junk(p)), SlotOverflow),
    "weight slot": (lambda p, s, h: dataclasses.replace(h, ciphertexts=product(p, [s[1], s[2], s[3]])),
                    SlotOverflow),
}


@pytest.mark.parametrize("how", sorted(FAILURES))
def test_a_refused_request_consumes_the_session(registered_round, how):
    kh, params, subs, honest = registered_round
    tamper, error = FAILURES[how]
    with pytest.raises(error):
        kh.decrypt_aggregate(wire.encode(tamper(params, subs, honest)))
    # a corrected request (the honest aggregate itself) is refused: nothing is decrypted
    with pytest.raises(AlreadyDecrypted):
        kh.decrypt_aggregate(honest)
    assert kh.is_consumed(params.session_id)
    # registering the same parameters again changes nothing
    assert kh.accept_params(wire.encode(params)) == params.session_id
    with pytest.raises(AlreadyDecrypted):
        kh.decrypt_aggregate(wire.encode(honest))


def test_refusals_before_the_session_is_named_change_nothing(registered_round):
    kh, params, subs, honest = registered_round
    data = wire.encode(honest)
    with pytest.raises(KeyMismatch):
        kh.decrypt_aggregate(dataclasses.replace(honest, key_id=bytes(32)))
    with pytest.raises(SessionMismatch):
        kh.decrypt_aggregate(dataclasses.replace(honest, session_id=bytes(32)))
    for junk in (data[:-3], b"", wire.encode(subs[1]), wire.encode(params)):
        with pytest.raises(WireFormatError):
            kh.decrypt_aggregate(junk)
    assert kh.is_registered(params.session_id) and not kh.is_consumed(params.session_id)
    sums = kh.decrypt_aggregate(data)
    assert sums.included == (1, 2, 3, 4)
    np.testing.assert_array_equal(sums.sums, exact_sums(params, (1, 2, 3, 4)))
    with pytest.raises(AlreadyDecrypted):
        kh.decrypt_aggregate(data)


def test_a_session_is_registered_once():
    kh = keyholder()
    p = forge_params([1, 2, 3], 2, "binding/once")
    sid = kh.accept_params(p)
    assert kh.accept_params(wire.encode(p)) == sid  # identical parameters: idempotent
    assert kh.is_registered(sid) and not kh.is_consumed(sid)
    with pytest.raises(KeyMismatch):  # another key: refused, nothing registered
        PaillierKeyHolder(private_key=private_key("other"), threads=1).accept_params(p)


# ------------------------------------------------------------------ 4. submissions bound by signature

def signed_round(seed: str, ids=(1, 2, 3), min_clients: int = 2):
    params = PaillierParams.create(private_key().public_key, ids, D, encoding=ENC, rule="mean",
                                   min_clients=min_clients, rng=DeterministicRandom(seed))
    subs = {c: submit(params, c, signed=True, seed=seed) for c in ids}
    return params, subs


def server_state(server: PaillierServer):
    return server.included, server.state, server.stage, server._accumulator.result()


def test_a_signed_submission_is_bound_to_its_session_and_client():
    params, subs = signed_round("binding/signed-a")
    assert all(len(s.signature) == 64 for s in subs.values())
    other, _ = signed_round("binding/signed-b")
    server = PaillierServer(other, client_keys=verify_keys(other.client_ids))
    before = server_state(server)
    # as it was sent: another session's envelope
    with pytest.raises(SessionMismatch):
        server.receive(2, subs[2])
    # the envelope moved to this session: the signature no longer verifies
    with pytest.raises(InvalidSignature):
        server.receive(2, dataclasses.replace(subs[2], session_id=other.session_id))
    # unsigned, or signed by another client
    fresh = submit(other, 2, signed=True, seed="binding/signed-b")
    with pytest.raises(InvalidSignature):
        server.receive(2, dataclasses.replace(fresh, signature=b""))
    with pytest.raises(InvalidSignature):
        server.receive(2, dataclasses.replace(fresh, signature=submit(other, 1, signed=True).signature))
    with pytest.raises(InvalidSignature):  # the ciphertexts changed under the signature
        server.receive(2, dataclasses.replace(fresh, ciphertexts=subs[2].ciphertexts))
    assert server_state(server) == before
    assert [r[2] for r in server.rejected] == ["session_mismatch"] + ["invalid_signature"] * 4
    server.receive(2, fresh)
    assert server.included == (2,)


def test_a_replayed_signed_submission_is_refused_by_the_key_holder():
    """The server forwards, for a new session, earlier ciphertexts and the
    statements that came with them: the key holder refuses before decrypting."""
    kh = keyholder(client_keys=verify_keys([1, 2, 3]))
    first, first_subs = signed_round("binding/replay-a")
    kh.accept_params(first)
    server = PaillierServer(first, client_keys=verify_keys([1, 2, 3]))
    for c, s in first_subs.items():
        server.receive(c, s)
    earlier = server.close()
    assert [s.client_id for s in earlier.statements] == [1, 2, 3]
    assert kh.decrypt_aggregate(wire.encode(earlier)).included == (1, 2, 3)

    second, _ = signed_round("binding/replay-b")
    kh.accept_params(second)
    replay = dataclasses.replace(earlier, session_id=second.session_id)
    with pytest.raises(InvalidSignature):
        kh.decrypt_aggregate(wire.encode(replay))
    assert kh.is_consumed(second.session_id)


@pytest.mark.parametrize("how", ["no statements", "statement missing", "made-up client", "forged statement",
                                 "statements out of order", "statement of another client"])
def test_a_made_up_or_unsigned_included_client_is_refused(how):
    ids = (1, 2, 3, 99)  # the server invited 99, a client of its own; the key holder knows 1, 2 and 3
    kh = keyholder(client_keys=verify_keys([1, 2, 3]))
    params = PaillierParams.create(private_key().public_key, ids, D, encoding=ENC, rule="weighted",
                                   min_clients=2, rng=DeterministicRandom("binding/made-up"))
    kh.accept_params(params)
    server = PaillierServer(params, client_keys={**verify_keys([1, 2, 3]), 99: signing_key(99).public})
    subs = {c: submit(params, c, signed=True, seed="binding/made-up") for c in ids}
    for c in (1, 2, 99):
        server.receive(c, subs[c])
    agg = server.close()
    assert agg.included == (1, 2, 99)
    st = list(agg.statements)
    tampered = {
        "no statements": dataclasses.replace(agg, statements=()),
        "statement missing": dataclasses.replace(agg, statements=tuple(st[:2])),
        "made-up client": agg,  # 99 signed, but nobody gave the key holder a key for 99
        "forged statement": dataclasses.replace(agg, included=(1, 2, 3),
                                                statements=(st[0], st[1], dataclasses.replace(st[2], client_id=3))),
        "statements out of order": dataclasses.replace(agg, statements=(st[1], st[0], st[2])),
        "statement of another client": dataclasses.replace(
            agg, statements=(st[0], dataclasses.replace(st[0], client_id=2), st[2])),
    }[how]
    with pytest.raises((InvalidSignature, UnexpectedSender)) as info:
        kh.decrypt_aggregate(wire.encode(tampered))
    assert type(info.value) is (UnexpectedSender if how in ("made-up client", "no statements", "statement missing",
                                                           "statements out of order") else InvalidSignature)
    assert kh.is_consumed(params.session_id)


def test_a_signed_round_on_the_drivers():
    """Clients sign, the server checks and forwards the statements, the key
    holder checks them all and decrypts the one aggregate."""
    ids = (1, 2, 3, 4)
    keys = verify_keys(ids)
    kh = keyholder(client_keys=keys)
    params = PaillierParams.create(private_key().public_key, ids, D, encoding=ENC, rule="mean",
                                   rng=DeterministicRandom("binding/drivers"))
    assert params.min_clients == 3
    roles = {c: PaillierClientRole(c, kh.public_key_message(), rng=DeterministicRandom(f"binding/role/{c}"),
                                   min_key_bits=KEY_BITS, signing_key=signing_key(c).private) for c in ids}
    drivers = {c: ClientDriver(r) for c, r in roles.items()}
    drivers[KEY_HOLDER] = ClientDriver(KeyHolderRole(kh))
    net = Network(PaillierServer(params, client_keys=keys), "mean", drivers,
                  {c: Contribution(update(c)) for c in ids}, protocol="paillier")
    net.step(skip=[4])
    aggregate = net.outgoing[KEY_HOLDER]
    assert [s.client_id for s in aggregate.statements] == [1, 2, 3]
    out = net.run()
    assert isinstance(out, ServerResult) and out.included == (1, 2, 3)
    assert isinstance(net.replies[KEY_HOLDER], AggregateSums)
    assert out.sum_weights == 3.0
    # a semi-honest server forwards no statements; this key holder then refuses
    kh2 = keyholder(client_keys=keys)
    kh2.accept_params(params)
    with pytest.raises(UnexpectedSender):
        kh2.decrypt_aggregate(dataclasses.replace(aggregate, statements=()))


def test_signing_arguments_are_checked():
    pk = private_key().public_key
    with pytest.raises(ParameterError):
        PaillierClient(1, pk, min_key_bits=KEY_BITS, signing_key=b"short")
    with pytest.raises(ParameterError):
        PaillierClientRole(1, pk, min_key_bits=KEY_BITS, signing_key=b"\x00" * 31)
    params = forge_params([1, 2], 2, "binding/args")
    with pytest.raises(ParameterError):  # a key for every invited client
        PaillierServer(params, client_keys={1: signing_key(1).public})
    with pytest.raises(ParameterError):
        PaillierServer(params, client_keys={1: signing_key(1).public, 2: b"\x01" * 31})
    with pytest.raises(ParameterError):
        keyholder(client_keys={1: b"\x01" * 33})
    with pytest.raises(ParameterError):
        Submission(params.session_id, pk.key_id, 1, b"", b"\x00" * 63)


# ------------------------------------------------------------------ 5. the loud option

def test_a_single_client_round_needs_the_loud_option_everywhere():
    pk = private_key().public_key
    rng = DeterministicRandom("binding/loud")
    for make in (lambda **kw: keyholder(min_clients=1, **kw),
                 lambda **kw: PaillierClient(1, pk, min_key_bits=KEY_BITS, min_clients=1, **kw),
                 lambda **kw: PaillierClientRole(1, pk, min_key_bits=KEY_BITS, min_clients=1, **kw),
                 lambda **kw: PaillierParams.create(pk, [1, 2], D, encoding=ENC, min_clients=1, rng=rng, **kw)):
        with pytest.raises(ParameterError, match="unsafe_allow_single_client"):
            make()
        make(unsafe_allow_single_client=True)
    for floor in (0, -1, 1.5, True, "2"):
        with pytest.raises(ParameterError):
            keyholder(min_clients=floor)
    # the option alone lowers no floor: a key holder given it still refuses a round of one by default
    with pytest.raises(TooFewClients):
        keyholder(unsafe_allow_single_client=True).accept_params(forge_params([1, 2], 1, "binding/loud-1"))
    # with the option and a floor of 1, one client's update is decrypted (the unsafe case, as asked)
    kh = keyholder(min_clients=1, unsafe_allow_single_client=True)
    single = PaillierParams.create(pk, [1], D, encoding=ENC, rule="mean", rng=rng, unsafe_allow_single_client=True)
    assert single.min_clients == 1
    kh.accept_params(single)
    client = PaillierClient(1, pk, min_key_bits=KEY_BITS, min_clients=1, unsafe_allow_single_client=True)
    client.receive_params(single)
    sub = client.submit(update(1))
    sums = kh.decrypt_aggregate(AggregateCiphertext(single.session_id, pk.key_id, (1,), sub.ciphertexts))
    assert int(sums.sums[-1]) == 1 << ENC.frac_bits


def test_the_simulators_take_the_loud_option():
    xs = [update(1), update(2)]
    with pytest.raises(ParameterError, match="unsafe_allow_single_client"):
        secagg.simulate(xs, protocol="paillier", threshold=1, seed=1, key_bits=KEY_BITS)
    with pytest.raises(ParameterError, match="unsafe_allow_single_client"):
        simulate_paillier(xs, None, rule="mean", encoding=None, dropouts={}, rng=DeterministicRandom(1),
                          key_bits=KEY_BITS, min_clients=1)
    with pytest.raises(ParameterError):
        secagg.simulate(xs, protocol="secagg", unsafe_allow_single_client=True, seed=1)
    res = secagg.simulate(xs, protocol="paillier", threshold=1, unsafe_allow_single_client=True,
                          dropouts={2: "submit"}, seed=1, key_bits=KEY_BITS, decryption="key_holder")
    assert res.included == (1,) and res.params["min_clients"] == 1
    np.testing.assert_allclose(res.aggregate, update(1), atol=2 / 2 ** res.params["frac_bits"])
