"""Distributed DP inside the Paillier protocol (protocols/dp/SPEC.md §9): the
clients pack their DP encodings (``q = v - 2^(b-1)``) and a count slot, the
decrypted slot sums plus ``n_included 2^(b-1)``, modulo 2^b, are decoded,
with the key holder and with committee (threshold) decryption. Small keys
(512 bits) for speed."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest

import secagg
from secagg.dp import DPAccountant, DPConfig, DPRoundParams, decode, ring_sum
from secagg.drivers import ClientDriver, CommitteeClientRole, Contribution, DirectoryStore, ServerDriver
from secagg.drivers.committee import DPDecryptorRecord
from secagg.encoding import wire
from secagg.encoding.packing import PackingLayout
from secagg.errors import AbortReason, ParameterError, ProtocolAborted, RemoteProtocolError, WireFormatError
from secagg.primitives import paillier as pl
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.paillier import PaillierClient, PaillierParams, PaillierServer
from secagg.protocols.paillier.client import encode_update
from secagg.protocols.paillier.params import PARAMS_TYPES, DPPaillierParams
from secagg.protocols.paillier.threshold import deal_committee
from secagg.protocols.masking.server import DPServerResult
from secagg.transports.inprocess import LocalRound

KEY_BITS = 512
SEED = bytes(range(32))


@cache
def keypair():
    return pl.generate_keypair(KEY_BITS, DeterministicRandom("dp paillier key"))


@cache
def committee():
    return deal_committee(range(1, 5), key_bits=KEY_BITS, rng=DeterministicRandom("dp committee"))


def _updates(n: int, d: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=d) * 0.1 for _ in range(n)]


@pytest.fixture
def captured(monkeypatch):
    got: list[tuple[np.ndarray, np.ndarray]] = []
    original = DPRoundParams.encode_update

    def spy(self, x, rng=None):
        enc = original(self, x, rng)
        got.append((np.asarray(x, dtype=np.float64).copy(), enc.values.copy()))
        return enc

    monkeypatch.setattr(DPRoundParams, "encode_update", spy)
    return got


def _values_of(captured, xs, included):
    out = []
    for i in included:
        hits = [v for x, v in captured if np.array_equal(x, xs[i - 1])]
        assert len(hits) == 1
        out.append(hits[0])
    return out


def _dp_params(n=5, d=7, min_clients=3, cfg=None, **kw) -> DPPaillierParams:
    pk, _ = keypair()
    cfg = cfg or DPConfig(epsilon=3.0)
    dp = cfg.round_params(d, n_min=min_clients, n_max=n, rotation_seed=SEED)
    p = PaillierParams.create(pk, range(1, n + 1), d, min_clients=min_clients, dp=dp,
                              rng=DeterministicRandom("dp params"), **kw)
    assert isinstance(p, DPPaillierParams)
    return p


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_key_holder_round_is_the_decoded_ring_sum_bit_for_bit(mechanism, captured):
    xs = _updates(6, 30)
    cfg = DPConfig(epsilon=3.0, rounds=3, mechanism=mechanism)
    res = secagg.simulate(xs, protocol="paillier", decryption="key_holder", key_bits=KEY_BITS, dp=cfg, seed=4,
                          dropouts={2: "submit"})
    rep = res.dp
    assert res.included == (1, 3, 4, 5, 6) and rep.survivors == 5 and rep.mechanism == mechanism
    dp = rep.params
    want = decode(ring_sum(_values_of(captured, xs, res.included), dp.bits), dp)
    assert np.array_equal(res.sum_weighted, want) and np.array_equal(res.aggregate, want / 5)
    assert res.sum_weights == 5.0
    assert res.summary()["dp"]["epsilon"] == rep.epsilon and res.params["dp"]["bits"] == dp.bits


def test_committee_round_with_persisted_member_state_is_the_decoded_ring_sum(tmp_path, captured):
    ck, shares = committee()
    cfg = DPConfig(epsilon=3.0, adaptive_clip=True)
    d = 20
    dp = cfg.round_params(d, n_min=3, n_max=4, rotation_seed=SEED)
    params = PaillierParams.create(pl.PublicKey(ck.public_key.n), range(1, 5), d, min_clients=3, dp=dp,
                                   rng=DeterministicRandom("committee dp"))
    server = ServerDriver(PaillierServer(params, committee=ck), "mean", protocol="paillier")
    clients = {c: ClientDriver(CommitteeClientRole(c, ck, shares[c], rng=DeterministicRandom(f"m{c}"),
                                                   min_key_bits=KEY_BITS,
                                                   check_params=lambda p: cfg.check_round(p.dp)),
                               store=DirectoryStore(tmp_path / f"member-{c}"))
               for c in range(1, 5)}
    xs = _updates(4, d, seed=2)
    xs[0] = xs[0] * 100  # one update above the clip
    net = LocalRound(server, clients, {c: Contribution(xs[c - 1]) for c in clients}, dropouts={4: "decrypt"})
    net.run()
    res = server.result()
    assert res.included == (1, 2, 3, 4)  # member 4 submitted, then vanished before decrypting
    want = decode(ring_sum(_values_of(captured, xs, res.included), dp.bits), dp.pipeline)
    assert np.array_equal(res.sum_weighted, want[:-1])  # the last coordinate is the clipped count
    rep = res.dp
    assert rep.clipped_fraction == pytest.approx(want[-1] / dp.count_scale / 4)
    assert rep.next_clip is not None and rep.next_clip != cfg.clip
    assert isinstance(server.core.outcome, DPServerResult)


def test_committee_record_keeps_the_dp_round_across_the_wire():
    ck, shares = committee()
    dp = DPConfig(epsilon=3.0).round_params(5, n_min=3, n_max=4, rotation_seed=SEED)
    params = PaillierParams.create(pl.PublicKey(ck.public_key.n), range(1, 5), 5, min_clients=3, dp=dp)
    role = CommitteeClientRole(1, ck, shares[1], rng=DeterministicRandom(1), min_key_bits=KEY_BITS)
    step = role.step(params, None, None)
    assert isinstance(step.state, DPDecryptorRecord)
    back = wire.decode(wire.encode(step.state), DPDecryptorRecord)
    restored = back.restored()
    assert restored.params == params and restored.params.session_id == params.session_id
    with pytest.raises(ParameterError, match="differ"):
        dataclasses.replace(back, dp=DPConfig(epsilon=1.0).round_params(5, n_min=3, n_max=4, rotation_seed=SEED))


@pytest.mark.slow
def test_simulate_paillier_dp_defaults_to_committee_decryption():
    xs = _updates(4, 10)
    res = secagg.simulate(xs, protocol="paillier", key_bits=KEY_BITS, dp=DPConfig(epsilon=3.0), seed=1)
    assert res.dp is not None and res.dp.survivors == 4
    assert res.params["decryption"].startswith("committee")


def test_round_with_exactly_min_clients_survivors_meets_the_plan():
    n, cfg = 7, DPConfig(epsilon=2.0, rounds=5)
    xs = _updates(n, 12)
    res = secagg.simulate(xs, protocol="paillier", decryption="key_holder", key_bits=KEY_BITS, dp=cfg, seed=3,
                          dropouts={1: "submit", 2: "submit", 3: "submit"})
    n_min = res.dp.params.n_min
    assert n_min == 4 == res.dp.survivors  # the default min_clients: a majority
    acc = DPAccountant()
    for _ in range(cfg.rounds):
        acc.add_report(res.dp)
    assert acc.epsilon(cfg.delta) <= cfg.epsilon


def test_fewer_survivors_than_min_clients_aborts_and_decrypts_nothing():
    xs = _updates(6, 5)
    with pytest.raises(ProtocolAborted) as info:
        secagg.simulate(xs, protocol="paillier", decryption="key_holder", key_bits=KEY_BITS,
                        dp=DPConfig(epsilon=2.0), dropouts={1: "submit", 2: "submit", 3: "submit", 4: "submit"})
    assert info.value.reason is AbortReason.TOO_FEW_SURVIVORS


def test_dp_params_checks():
    pk, _ = keypair()
    cfg = DPConfig(epsilon=3.0)
    p = _dp_params()
    assert p.entries == p.dp.padded_dim + 1 and p.layout.bound == 1 << (p.dp.bits - 1)
    assert p.layout.slot_bits == p.dp.bits + (5).bit_length()
    with pytest.raises(ParameterError, match="n_min = 4"):
        PaillierParams.create(pk, range(1, 6), 7, min_clients=3,
                              dp=cfg.round_params(7, n_min=4, n_max=5, rotation_seed=SEED))
    with pytest.raises(ParameterError, match="n_max = 4"):
        PaillierParams.create(pk, range(1, 6), 7, min_clients=3,
                              dp=cfg.round_params(7, n_min=3, n_max=4, rotation_seed=SEED))
    with pytest.raises(ParameterError, match="unweighted"):
        _dp_params(rule="weighted")
    with pytest.raises(ParameterError, match="fixed-point"):
        _dp_params(encoding=secagg.FixedPoint())
    with pytest.raises(ParameterError, match="62"):  # 60-bit values of 5 clients do not fit a slot
        _dp_params(cfg=DPConfig(epsilon=3.0, bits=60))
    with pytest.raises(ParameterError, match="need their dp field"):
        dataclasses.replace(p, dp=None)
    with pytest.raises(ParameterError):
        PackingLayout.for_ring(63, 2, 2048)


def test_dp_params_on_the_wire_bind_the_session_and_refuse_wrapping_values():
    p = _dp_params()
    back = wire.decode(wire.encode(p), PARAMS_TYPES)
    assert back == p and back.session_id == p.session_id
    other = dataclasses.replace(p, dp=dataclasses.replace(p.dp, rotation_seed=bytes(32)))
    assert other.session_id != p.session_id
    forged_dp = dataclasses.replace(p.dp)
    object.__setattr__(forged_dp, "bits", 6)
    forged = dataclasses.replace(p)
    object.__setattr__(forged, "dp", forged_dp)
    with pytest.raises(WireFormatError, match="could reach"):
        wire.decode(wire.encode(forged), PARAMS_TYPES)


def test_weight_other_than_one_is_refused():
    p = _dp_params()
    with pytest.raises(ParameterError, match="weight must be 1"):
        encode_update(p, np.zeros(7), 2.0)
    pk, _ = keypair()
    client = PaillierClient(1, pk, rng=DeterministicRandom(1), min_key_bits=KEY_BITS)
    client.receive_params(p)
    with pytest.raises(ParameterError, match="weight must be 1"):
        client.submit(np.zeros(7), 0.5)
    assert client.submit(np.zeros(7), 1.0).ciphertexts  # the state was left as it was
    q, clipped = encode_update(p, np.ones(7), 1.0, DeterministicRandom(2))
    assert q[-1] == 1 and clipped == 1 and q.size == p.entries
    assert int(q[:-1].min()) >= -(1 << (p.dp.bits - 1)) and int(q[:-1].max()) < 1 << (p.dp.bits - 1)


def test_a_submission_under_other_dp_params_is_refused():
    """A dishonest server giving one client weaker DP parameters: that client's
    submission is under another session id, and the honest server refuses it;
    a client with its own plan refuses the parameters outright."""
    pk, _ = keypair()
    honest = _dp_params()
    weak_noise = honest.dp.noise / 4
    forged = dataclasses.replace(honest, dp=dataclasses.replace(honest.dp, noise_numerator=weak_noise.numerator,
                                                                noise_denominator=weak_noise.denominator))
    server = PaillierServer(honest)
    victim = PaillierClient(1, pk, rng=DeterministicRandom(3), min_key_bits=KEY_BITS)
    victim.receive_params(forged)
    with pytest.raises(RemoteProtocolError):
        server.receive(1, victim.submit(np.zeros(7)))
    assert 1 not in server.included
    with pytest.raises(ParameterError, match="not this client's plan"):
        DPConfig(epsilon=3.0).check_round(forged.dp)


def test_a_client_lying_in_its_count_slot_aborts_the_round(monkeypatch):
    import secagg.protocols.paillier.client as client_module

    original = client_module.encode_update

    def liar(params, update, weight, rng=None):
        q, clipped = original(params, update, weight, rng)
        if np.array_equal(update, xs[2]):
            q = q.copy()
            q[-1] = 2  # claims to be two clients
        return q, clipped

    xs = _updates(5, 6)
    monkeypatch.setattr(client_module, "encode_update", liar)
    with pytest.raises(ProtocolAborted, match="slot does not equal the number of included clients"):
        secagg.simulate(xs, protocol="paillier", decryption="key_holder", key_bits=KEY_BITS,
                        dp=DPConfig(epsilon=3.0), seed=2)
