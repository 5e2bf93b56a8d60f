"""Distributed DP inside the pairwise-masking protocol (protocols/dp/SPEC.md §9):
the clients' DP encodings are masked instead of fixed-point vectors, the
server releases only their sum modulo 2^b, decoded, with the round's report.
End to end through the drivers and the wire; dropouts down to the survivor
floor; refusals of everything that could weaken the guarantee."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import secagg
from secagg.dp import DPAccountant, DPConfig, DPRoundParams, decode, ring_sum
from secagg.drivers import ClientDriver, Contribution, MaskingClientRole, MaskingRecord
from secagg.encoding import wire
from secagg.errors import AbortReason, ParameterError, ProtocolAborted, RemoteProtocolError, WireFormatError
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.masking import MaskingClient, MaskingParams, MaskingServer
from secagg.protocols.masking.params import PARAMS_TYPES, DPMaskingParams
from secagg.protocols.masking.server import DPServerResult

SEED = bytes(range(32))


def _updates(n: int, d: int, seed: int = 0, scale: float = 0.1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=d) * scale for _ in range(n)]


@pytest.fixture
def captured(monkeypatch):
    """Every DP encoding a client makes, by object identity of its update
    (the values the client then masks)."""
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


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_dp_round_end_to_end_is_the_decoded_ring_sum_bit_for_bit(protocol, mechanism, captured):
    xs = _updates(8, 40)
    cfg = DPConfig(epsilon=4.0, rounds=5, mechanism=mechanism)
    res = secagg.simulate(xs, protocol=protocol, dp=cfg, seed=11, dropouts={3: "masked_input", 5: "unmasking"})
    rep = res.dp
    assert rep is not None and rep.mechanism == mechanism
    # client 5 vanished after sending its masked input: recovered, its noise is in the sum
    assert res.included == (1, 2, 4, 5, 6, 7, 8) and rep.survivors == 7
    assert res.sum_weights == 7.0
    dp = rep.params
    want = decode(ring_sum(_values_of(captured, xs, res.included), dp.bits), dp)
    assert np.array_equal(res.sum_weighted, want)  # bit for bit
    assert np.array_equal(res.aggregate, want / 7)
    # the noise is what the report says (loose: a 40-value check of a stated variance)
    err = res.sum_weighted - np.sum([xs[i - 1] for i in res.included], axis=0)
    assert np.std(err) < 2 * np.sqrt(rep.noise_variance)
    # the report: this round's epsilon for its 7 survivors, at the config's delta
    from secagg.dp.accounting import round_guarantee
    assert rep.epsilon == round_guarantee(dp, 7, cfg.delta).epsilon and rep.delta == cfg.delta
    s = res.summary()["dp"]
    assert s["survivors"] == 7 and s["epsilon"] == rep.epsilon and s["mechanism"] == mechanism
    assert res.params["dp"]["n_min"] == dp.n_min


def test_same_seed_same_round_and_rotation_seed_is_fresh_per_round():
    xs = _updates(5, 12)
    cfg = DPConfig(epsilon=2.0)
    a = secagg.simulate(xs, protocol="secagg", dp=cfg, seed=1)
    b = secagg.simulate(xs, protocol="secagg", dp=cfg, seed=1)
    c = secagg.simulate(xs, protocol="secagg", dp=cfg, seed=2)
    assert np.array_equal(a.aggregate, b.aggregate)
    assert a.dp.params.rotation_seed == b.dp.params.rotation_seed != c.dp.params.rotation_seed
    d = secagg.simulate(xs, protocol="secagg", dp=cfg)  # production: the system's CSPRNG
    assert d.dp.params.rotation_seed not in (a.dp.params.rotation_seed, c.dp.params.rotation_seed)


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_round_with_exactly_n_min_survivors_meets_its_share_of_the_target(protocol):
    n = 10
    cfg = DPConfig(epsilon=3.0, rounds=4)
    xs = _updates(n, 16, seed=3)
    # learn the round's threshold (= n_min) from a round without dropout
    full = secagg.simulate(xs, protocol=protocol, dp=cfg, seed=5)
    n_min = full.dp.params.n_min
    assert n_min < n
    drop = {c: "masked_input" for c in range(1, n - n_min + 1)}
    res = secagg.simulate(xs, protocol=protocol, dp=cfg, seed=5, dropouts=drop)
    assert res.dp.survivors == n_min == len(res.included)
    assert res.dp.epsilon > full.dp.epsilon  # fewer survivors, less noise, a weaker round
    acc = DPAccountant()
    for _ in range(cfg.rounds):
        acc.add_report(res.dp)
    assert acc.epsilon(cfg.delta) <= cfg.epsilon  # the worst round still meets the plan


def test_fewer_survivors_than_n_min_aborts_and_releases_nothing():
    n = 8
    cfg = DPConfig(epsilon=3.0)
    xs = _updates(n, 10)
    full = secagg.simulate(xs, protocol="secagg", dp=cfg, seed=2, dropout_tolerance=0.25)
    n_min = full.dp.params.n_min
    drop = {c: "masked_input" for c in range(1, n - n_min + 2)}  # one more than tolerated
    with pytest.raises(ProtocolAborted) as info:
        secagg.simulate(xs, protocol="secagg", dp=cfg, seed=2, dropouts=drop, dropout_tolerance=0.25)
    assert info.value.reason is AbortReason.TOO_FEW_SURVIVORS
    assert "masked input" in str(info.value)  # before any unmasking


def test_params_whose_n_min_exceeds_the_threshold_or_n_max_the_clients_are_refused():
    cfg = DPConfig(epsilon=2.0)
    ids = list(range(1, 7))
    ok = cfg.round_params(5, n_min=4, n_max=6, rotation_seed=SEED)
    p = MaskingParams.create(ids, 5, protocol="secagg", threshold=4, dp=ok)
    assert isinstance(p, DPMaskingParams) and p.dp is ok and p.entries == 8
    with pytest.raises(ParameterError, match="n_min = 5"):
        MaskingParams.create(ids, 5, protocol="secagg", threshold=4,
                             dp=cfg.round_params(5, n_min=5, n_max=6, rotation_seed=SEED))
    with pytest.raises(ParameterError, match="n_max = 5"):
        MaskingParams.create(ids, 5, protocol="secagg", threshold=4,
                             dp=cfg.round_params(5, n_min=4, n_max=5, rotation_seed=SEED))
    with pytest.raises(ParameterError, match="for 6 values"):
        MaskingParams.create(ids, 5, protocol="secagg", threshold=4,
                             dp=cfg.round_params(6, n_min=4, n_max=6, rotation_seed=SEED))
    with pytest.raises(ParameterError, match="needs 40 bits"):
        MaskingParams.create(ids, 5, protocol="secagg", threshold=4, ring_bits=32,
                             dp=dataclasses.replace(cfg, bits=40).round_params(5, n_min=4, n_max=6,
                                                                                rotation_seed=SEED))
    with pytest.raises(ParameterError, match="need their dp field"):
        dataclasses.replace(p, dp=None)


def test_non_dp_params_keep_their_wire_type_and_dp_params_bind_the_session():
    ids = list(range(1, 6))
    plain = MaskingParams.create(ids, 5, protocol="secagg", rng=DeterministicRandom(1))
    assert type(plain) is MaskingParams and plain.dp is None and plain.entries == 6
    assert wire.encode(plain)[:30].find(b"masking.Params") > 0
    cfg = DPConfig(epsilon=2.0)
    dp1 = cfg.round_params(5, n_min=3, n_max=5, rotation_seed=SEED)
    dp2 = cfg.round_params(5, n_min=3, n_max=5, rotation_seed=bytes(32))
    p1 = MaskingParams.create(ids, 5, protocol="secagg", threshold=3, rng=DeterministicRandom(1), dp=dp1)
    p2 = dataclasses.replace(p1, dp=dp2)
    assert p1.session_id != p2.session_id  # the DP parameters are under the session id
    back = wire.decode(wire.encode(p1), PARAMS_TYPES)
    assert back == p1 and back.session_id == p1.session_id
    # the record a client keeps between messages restores the DP round exactly
    rec = MaskingRecord(p1, MaskingClient(p1, 1, DeterministicRandom(2)).state)
    again = wire.decode(wire.encode(rec), MaskingRecord)
    assert isinstance(again.params, DPMaskingParams) and again.params == p1
    assert again.params.session_id == p1.session_id


def test_a_client_given_other_dp_params_than_the_server_is_refused_both_ways():
    """A dishonest server that hands one client weaker DP parameters (here less
    noise) runs two sessions: neither side accepts the other's messages."""
    ids = list(range(1, 6))
    cfg = DPConfig(epsilon=2.0)
    dp = cfg.round_params(5, n_min=3, n_max=5, rotation_seed=SEED)
    weaker_noise = dp.noise / 4
    weak = dataclasses.replace(dp, noise_numerator=weaker_noise.numerator,
                               noise_denominator=weaker_noise.denominator)
    honest = MaskingParams.create(ids, 5, protocol="secagg", threshold=3, rng=DeterministicRandom(1), dp=dp)
    forged = dataclasses.replace(honest, dp=weak)
    server = MaskingServer(honest, DeterministicRandom(3))
    server.start()
    victim = MaskingClient(forged, 1, DeterministicRandom(4))
    with pytest.raises(RemoteProtocolError):
        server.receive(1, victim.advertise_keys())  # the server refuses the other session's message
    assert server.rejected and 1 not in server._got.advertised
    others = {u: MaskingClient(honest, u, DeterministicRandom(10 + u)) for u in ids[1:]}
    for u, c in others.items():
        server.receive(u, c.advertise_keys())
    broadcast = server.close_round()[2]
    with pytest.raises(RemoteProtocolError):
        victim.share_keys(broadcast)  # and the client refuses the server's
    assert victim.stage == "init" or victim.stage == "advertised"
    # a client with its own plan refuses the forged parameters before making any key
    with pytest.raises(ParameterError, match="not this client's plan"):
        cfg.check_round(forged.dp)
    role = MaskingClientRole(1, rng=DeterministicRandom(5), check_params=lambda p: cfg.check_round(p.dp))
    driver = ClientDriver(role)
    assert driver.handle(wire.encode(forged), Contribution(np.zeros(5), 1.0)) is None
    assert isinstance(driver.last_error, ParameterError) and "plan" in str(driver.last_error)
    assert driver.handle(wire.encode(honest), Contribution(np.zeros(5), 1.0)) is not None  # the plan's round
    # and one without DP at all
    plain = MaskingParams.create(ids, 5, protocol="secagg", threshold=3, rng=DeterministicRandom(1))
    driver = ClientDriver(MaskingClientRole(1, rng=DeterministicRandom(5),
                                            check_params=lambda p: cfg.check_round(p.dp)))
    assert driver.handle(wire.encode(plain), Contribution(np.zeros(5), 1.0)) is None
    assert isinstance(driver.last_error, ParameterError) and "no DP" in str(driver.last_error)


def test_wrapping_dp_params_inside_the_round_params_are_refused_on_decoding():
    ids = list(range(1, 6))
    dp = DPConfig(epsilon=2.0).round_params(5, n_min=3, n_max=5, rotation_seed=SEED)
    p = MaskingParams.create(ids, 5, protocol="secagg", threshold=3, dp=dp)
    forged_dp = dataclasses.replace(dp)  # a copy to forge
    object.__setattr__(forged_dp, "bits", 6)  # could wrap
    forged = dataclasses.replace(p)
    object.__setattr__(forged, "dp", forged_dp)
    forged.__dict__.pop("session_id", None)
    with pytest.raises(WireFormatError, match="could reach"):
        wire.decode(wire.encode(forged), PARAMS_TYPES)


def test_weight_other_than_one_is_refused_in_a_dp_round():
    xs = _updates(5, 6)
    cfg = DPConfig(epsilon=2.0)
    with pytest.raises(ParameterError, match="unweighted"):
        secagg.simulate(xs, [1, 2, 1, 1, 1], protocol="secagg", rule="weighted", dp=cfg)
    with pytest.raises(ParameterError, match="unweighted"):
        secagg.simulate(xs, [2.0] * 5, protocol="secagg", rule="mean", dp=cfg)
    with pytest.raises(ParameterError, match="fixed-point"):
        secagg.simulate(xs, protocol="secagg", dp=cfg, encoding=secagg.encoding.fixed_point.FixedPoint())
    with pytest.raises(ParameterError, match="secure-aggregation"):
        secagg.simulate(xs, protocol="plaintext", dp=cfg)
    res = secagg.simulate(xs, [1.0] * 5, protocol="secagg", rule="sum", dp=cfg, seed=1)
    assert res.dp is not None and res.rule == "sum"
    # the client driver refuses a weighted contribution before making any key
    ids = list(range(1, 6))
    p = MaskingParams.create(ids, 6, protocol="secagg", threshold=3,
                             dp=cfg.round_params(6, n_min=3, n_max=5, rotation_seed=SEED))
    driver = ClientDriver(MaskingClientRole(1, rng=DeterministicRandom(1)))
    assert driver.handle(wire.encode(p), Contribution(np.zeros(6), 3.0)) is None
    assert isinstance(driver.last_error, ParameterError) and "weight must be 1" in str(driver.last_error)
    # and so does the protocol core, at the masked input, leaving its state unchanged
    server = MaskingServer(p, DeterministicRandom(3))
    server.start()
    clients = {u: MaskingClient(p, u, DeterministicRandom(10 + u)) for u in ids}
    for u, c in clients.items():
        server.receive(u, c.advertise_keys())
    for u, msg in server.close_round().items():
        server.receive(u, clients[u].share_keys(msg))
    forwarded = server.close_round()
    before = clients[1].state
    with pytest.raises(ParameterError, match="weight must be 1"):
        clients[1].masked_input(forwarded[1], np.zeros(6), 2.0)
    assert clients[1].state is before
    out = clients[1].masked_input(forwarded[1], np.zeros(6), 1.0)
    assert out.masked.size == p.entries == 8


def test_server_result_names_the_survivors_and_carries_the_report():
    ids = list(range(1, 6))
    cfg = DPConfig(epsilon=2.0)
    p = MaskingParams.create(ids, 4, protocol="secagg", threshold=3,
                             dp=cfg.round_params(4, n_min=3, n_max=5, rotation_seed=SEED), rng=DeterministicRandom(0))
    server = MaskingServer(p, DeterministicRandom(3))
    server.start()
    clients = {u: MaskingClient(p, u, DeterministicRandom(10 + u)) for u in ids}
    for u, c in clients.items():
        server.receive(u, c.advertise_keys())
    for u, msg in server.close_round().items():
        server.receive(u, clients[u].share_keys(msg))
    xs = _updates(5, 4)
    for u, msg in server.close_round().items():
        if u != 2:  # client 2 drops before its masked input
            server.receive(u, clients[u].masked_input(msg, xs[u - 1]))
    for u, msg in server.close_round().items():
        server.receive(u, clients[u].unmask(msg))
    server.close_round()
    out = server.outcome
    assert isinstance(out, DPServerResult)
    assert out.included == (1, 3, 4, 5) and out.dropped == {2: "masked_input"}
    assert out.dp.survivors == 4 and out.dp.epsilon > 0 and out.sum_weights == 4.0
    rec = server.audit_record()
    assert rec["dp_round"]["survivors"] == 4 and "dp" in rec


def test_adaptive_clipping_over_rounds_moves_the_clip_towards_the_target_quantile():
    """The clipped bit is summed inside the masked DP vector: the server sees
    only the noised count, and the caller's next config follows it."""
    n, d = 40, 8
    rng = np.random.default_rng(9)
    norms = np.linspace(0.5, 4.0, n)  # median 2.25
    xs = []
    for r in norms:
        v = rng.normal(size=d)
        xs.append(v / np.linalg.norm(v) * r)
    cfg = DPConfig(epsilon=50.0, rounds=30, adaptive_clip=True, clip=0.25, clip_learning_rate=0.5)
    acc = DPAccountant()
    clips = [cfg.clip]
    for i in range(12):
        res = secagg.simulate(xs, protocol="secagg+", dp=cfg, seed=100 + i)
        rep = res.dp
        true_fraction = float(np.mean(norms > cfg.clip))
        # the count coordinate's noise: the round's noise over the bit's scale s (C'^2 = C^2 + s^2)
        scale = math.sqrt(rep.params.clip ** 2 - rep.clip ** 2)
        sd = math.sqrt(rep.noise_variance) / scale / rep.survivors
        assert 0 < sd < 0.1 and abs(rep.clipped_fraction - true_fraction) < 5 * sd + 0.01
        acc.add_report(rep)
        cfg = cfg.after(rep)
        clips.append(cfg.clip)
    assert clips[-1] > 1.2 and abs(clips[-1] - 2.25) < 1.0  # from 0.25 towards the median norm
    assert acc.epsilon(cfg.delta) <= 50.0  # 12 of the plan's 30 rounds, each with >= n_min survivors
    with pytest.raises(ParameterError):
        DPConfig(epsilon=1.0, adaptive_clip=True).after(dataclasses.replace(rep, next_clip=None))
    fixed = DPConfig(epsilon=1.0)
    assert fixed.after(rep) is fixed


def test_dp_round_in_malicious_server_mode_counts_clients_that_vanish_after_their_input():
    xs = _updates(6, 9)
    res = secagg.simulate(xs, protocol="secagg", malicious_server=True, seed=1,
                          dp=DPConfig(epsilon=3.0, mechanism="skellam"), dropouts={4: "consistency_check"})
    assert res.included == (1, 2, 3, 4, 5, 6) and res.dp.survivors == 6  # 4's masked input is in the sum
    assert res.dropped == {4: "consistency_check"}
