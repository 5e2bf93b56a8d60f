"""Pairwise masking (SecAgg / SecAgg+): correct aggregates, dropout recovery at
every stage, aborts with typed reasons, parameters and client-state persistence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg import simulate
from secagg.drivers import DirectoryStore
from secagg.encoding import wire
from secagg.encoding.fixed_point import FixedPoint
from secagg.errors import AbortReason, LocalProtocolError, ParameterError, ProtocolAborted, RemoteProtocolError
from secagg.protocols.masking import (Abort, ForwardedShares, MaskingClient, MaskingParams, MaskingServer,
                                      ServerResult, UnmaskRequest, derive_secagg_plus)
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.masking.graph import NeighbourGraph, binom_cdf_lt, binom_sf_ge

from masking_harness import Round

STAGES = ["advertise_keys", "share_keys", "masked_input", "unmasking"]


def _bound(r: Round, count: int) -> float:
    enc = r.params.encoding
    return enc.sum_error_bound(count) * max(1.0, max(r.weights.values(), default=1.0)) + 1e-12


def test_no_dropout_complete_graph_matches_plaintext_sum():
    r = Round(n=6)
    out = r.run()
    assert isinstance(out, ServerResult)
    assert out.included == tuple(r.ids) and out.dropped == {}
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(r.ids))) <= _bound(r, 6)
    assert out.sum_weights == pytest.approx(6.0, abs=6 / 2**16)


@pytest.mark.parametrize("stage", STAGES)
def test_dropout_at_each_stage_gives_exactly_the_included_aggregate(stage):
    r = Round(n=7)
    out = r.run(drop={3: stage, 5: stage})
    assert isinstance(out, ServerResult)
    expected_included = [i for i in r.ids if stage == "unmasking" or i not in (3, 5)]
    assert list(out.included) == expected_included
    assert out.dropped == {3: stage, 5: stage}
    err = np.max(np.abs(out.sum_weighted - r.expected_sum(expected_included)))
    assert err <= _bound(r, len(expected_included))
    # and it is NOT the sum over everyone (the dropped clients' inputs are really out)
    if stage != "unmasking":
        assert np.max(np.abs(out.sum_weighted - r.expected_sum(r.ids))) > 10 * _bound(r, 7)


def test_dropouts_at_several_stages_at_once():
    r = Round(n=10, dropout_tolerance=0.4)
    out = r.run(drop={2: "advertise_keys", 4: "share_keys", 6: "masked_input", 8: "unmasking"})
    assert isinstance(out, ServerResult)
    included = [i for i in r.ids if i not in (2, 4, 6)]
    assert list(out.included) == included
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(included))) <= _bound(r, len(included))


def test_secagg_plus_sparse_graph_with_dropout():
    r = Round(n=60, dim=5, protocol="secagg+", dropout_tolerance=0.05)
    assert not r.params.is_complete and r.params.degree < 59
    out = r.run(drop={5: "share_keys", 17: "masked_input", 33: "unmasking"})
    assert isinstance(out, ServerResult)
    included = [i for i in r.ids if i not in (5, 17)]
    assert list(out.included) == included
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(included))) <= _bound(r, len(included))


def test_malicious_server_mode_with_consistency_round_and_dropouts():
    r = Round(n=7, malicious=True)
    out = r.run(drop={2: "masked_input", 4: "consistency_check", 6: "unmasking"})
    assert isinstance(out, ServerResult)
    included = [i for i in r.ids if i != 2]
    assert list(out.included) == included
    assert out.dropped == {2: "masked_input", 4: "consistency_check", 6: "unmasking"}
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(included))) <= _bound(r, len(included))


@pytest.mark.parametrize("stage", STAGES)
def test_too_few_survivors_aborts_with_typed_reason_never_a_sum(stage):
    r = Round(n=6)  # t = 4
    drop = {i: stage for i in (1, 2, 3)}
    out = r.run(drop=drop)
    assert isinstance(out, Abort)
    assert out.reason is AbortReason.TOO_FEW_SURVIVORS
    assert r.server.done and not isinstance(r.server.outcome, ServerResult)
    with pytest.raises(ProtocolAborted) as info:  # the driver's result: typed, never a partial aggregate
        r.driver.result()
    assert info.value.reason is AbortReason.TOO_FEW_SURVIVORS


def test_sparse_round_aborts_when_one_clients_holders_fall_below_threshold():
    """Enough masked inputs overall, but client 1 keeps fewer than t live
    holders: its self mask could not be removed, so the server aborts at the
    masked-input close and names the first such client, never a sum."""
    r = Round(n=40, dim=4, protocol="secagg+", degree=8, threshold=6, dropout_tolerance=0.2)
    g, t = r.params.graph, r.params.threshold
    drop = {v: "masked_input" for v in g.neighbours(1)[:4]}  # 1 keeps itself + 4 of 8 neighbours: 5 < 6
    out = r.run(drop=drop)
    assert isinstance(out, Abort) and out.reason is AbortReason.TOO_FEW_SURVIVORS
    alive = [u for u in r.ids if u not in drop]
    short = [u for u in alive if len([v for v in g.holders(u) if v not in drop]) < t]
    assert 1 in short and f"holders of client {short[0]} survive" in out.detail


def test_weights_are_aggregated_privately_as_two_sums():
    w = {1: 3.0, 2: 1.5, 3: 7.0, 4: 2.0, 5: 0.5}
    r = Round(n=5, weights=w, encoding=FixedPoint(clip=1.0, frac_bits=16, max_weight=8.0),
              dropout_tolerance=0.2)
    out = r.run(drop={3: "masked_input"})
    inc = [1, 2, 4, 5]
    assert out.sum_weights == pytest.approx(sum(w[i] for i in inc), abs=4 / 2**16)
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(inc))) <= 4 * 8 / 2**16


def test_clipping_bounds_the_ring_and_is_reported():
    r = Round(n=4, dropout_tolerance=0.0)
    r.updates[1][:] = 50.0  # far beyond clip = 1
    out = r.run()
    assert isinstance(out, ServerResult)
    assert r.roles[1].clipped == r.dim
    expected = r.expected_sum(r.ids) - r.updates[1] + 1.0
    assert np.max(np.abs(out.sum_weighted - expected)) <= _bound(r, 4)


def test_server_memory_is_one_accumulator_not_n_vectors():
    r = Round(n=6)
    r.advertise()
    r.step()
    r.step()  # masked inputs arrive and are summed
    held = [v for v in vars(r.server).values() if isinstance(v, np.ndarray) and v.size >= r.dim]
    assert len(held) == 1 and held[0].shape == (r.dim + 1,)
    assert r.server._got.masked == set(r.ids)  # ids only, no vectors kept


def test_client_state_survives_serialization_between_rounds(tmp_path):
    """Every client keeps its state in a directory and is rebuilt from it
    (new driver, new store instance) before every stage, as a node that
    restarts between messages: the round gives exactly the in-memory result."""
    r = Round(n=5, dropout_tolerance=0.2, store=lambda i: DirectoryStore(tmp_path / str(i)))
    while not r.driver.done:
        r.reload_clients()
        r.step()
    assert isinstance(r.server.outcome, ServerResult)
    assert np.max(np.abs(r.server.outcome.sum_weighted - r.expected_sum(r.ids))) <= _bound(r, 5)
    in_memory = Round(n=5, dropout_tolerance=0.2).run()
    assert np.array_equal(r.server.outcome.sum_weighted, in_memory.sum_weighted)
    assert all(r.stores[i].sessions() == [] for i in r.ids)  # the round is over: states and claims gone


def test_client_driven_in_the_wrong_order_refuses_with_typed_errors():
    # the core: a second advertisement from the same state is the caller's error
    c = MaskingClient(Round(n=4, dropout_tolerance=0.0).params, 1)
    c.advertise_keys()
    with pytest.raises(LocalProtocolError):
        c.advertise_keys()
    # through the driver: a message of a later stage, or the parameters again, is a typed refusal
    # that changes nothing: nothing is sent, and the client answers the right message when it comes
    r = Round(n=6)  # t = 4
    r.advertise()
    early = UnmaskRequest(r.params.session_id, np.array(r.ids, dtype=np.uint32), np.zeros(0, dtype=np.uint32), {})
    before = {i: wire.encode(r.stores[i].load(r.params.session_id)) for i in (1, 2)}
    assert r.send(1, early) is None
    assert r.refusal(1) is AbortReason.WRONG_ROUND and not r.ended(1)
    assert r.send(2, r.params) is None
    assert r.refusal(2) is AbortReason.WRONG_ROUND and not r.ended(2)
    assert {i: wire.encode(r.stores[i].load(r.params.session_id)) for i in (1, 2)} == before
    r.step()  # everyone answers the key broadcast, 1 and 2 included
    assert sorted(r.outgoing) == r.ids and isinstance(r.outgoing[3], ForwardedShares)
    assert r.driver.failures == {}
    # a message of another kind that fails a real check ends the session for that client
    fwd = r.outgoing[1]
    bad = dataclasses.replace(fwd, ciphertexts=bytes([fwd.ciphertexts[0] ^ 1]) + fwd.ciphertexts[1:])
    assert r.send(1, bad) is None
    assert r.refusal(1) is not AbortReason.WRONG_ROUND and r.ended(1)


def test_server_close_after_done_is_local_error():
    r = Round(n=4, dropout_tolerance=0.0)
    r.run()
    with pytest.raises(LocalProtocolError):
        r.server.close_round()
    with pytest.raises(LocalProtocolError):
        r.driver.close_stage()
    with pytest.raises(LocalProtocolError):
        r.driver.start()
    with pytest.raises(RemoteProtocolError) as e:
        r.server.receive(1, r.replies[1])
    assert e.value.reason is AbortReason.WRONG_ROUND
    assert r.driver.receive(1, wire.encode(r.replies[1])) is False  # and through the driver: recorded
    assert r.server_refusals()[-1] == (1, "done", "wrong_round")


# ----------------------------------------------------------------- parameters

def test_threshold_must_exceed_half_of_the_holders():
    with pytest.raises(ParameterError):
        MaskingParams.create(range(1, 11), 4, protocol="secagg", threshold=5)
    p = MaskingParams.create(range(1, 11), 4, protocol="secagg", threshold=6, dropout_tolerance=0.4)
    assert p.threshold == 6


def test_threshold_accounts_for_corrupt_clients():
    with pytest.raises(ParameterError):
        MaskingParams.create(range(1, 11), 4, protocol="secagg", threshold=6, corrupt_fraction=0.2)
    p = MaskingParams.create(range(1, 11), 4, protocol="secagg", corrupt_fraction=0.2, dropout_tolerance=0.1)
    assert 2 * p.threshold > 10 + 2


def test_dropout_that_leaves_fewer_than_threshold_is_refused_up_front():
    with pytest.raises(ParameterError, match="cannot tolerate"):
        MaskingParams.create(range(1, 11), 4, protocol="secagg", dropout_tolerance=0.6)


def test_ring_that_could_wrap_is_refused():
    enc = FixedPoint(clip=1000.0, frac_bits=30, max_weight=1000.0)
    with pytest.raises(ParameterError, match="wrap"):
        MaskingParams.create(range(1, 40000), 4, protocol="secagg+", encoding=enc)


def test_ring_grows_to_64_bits_when_32_could_wrap():
    enc = FixedPoint(clip=1.0, frac_bits=16, max_weight=1000.0)
    p = MaskingParams.create(range(1, 101), 4, protocol="secagg", encoding=enc, dropout_tolerance=0.1)
    assert p.ring_bits == 64
    with pytest.raises(ParameterError):
        MaskingParams(**{**p.__dict__, "ring_bits": 32})


def test_malicious_mode_requires_signing_keys_for_everyone():
    with pytest.raises(ParameterError):
        MaskingParams.create(range(1, 6), 4, protocol="secagg", malicious_server=True, signing_keys={1: b"\0" * 32})


def test_params_are_a_canonical_wire_message_and_bind_the_session():
    p = MaskingParams.create(range(1, 8), 4, protocol="secagg", dropout_tolerance=0.2)
    q = wire.decode(wire.encode(p), MaskingParams)
    assert q == p and q.session_id == p.session_id
    other = MaskingParams.create(range(1, 8), 4, protocol="secagg", dropout_tolerance=0.2)
    assert other.session_id != p.session_id  # fresh nonce per round


def test_parameters_of_another_protocol_version_are_refused():
    """Version 1 masked with another PRG counter layout: its masks would not
    cancel against this version's, so a mixed round must fail loudly, not
    return a wrong sum. Both sides refuse the other's parameters."""
    import dataclasses

    import msgpack

    from secagg.errors import WireFormatError
    from secagg.protocols.masking import PROTOCOL_VERSION

    p = MaskingParams.create(range(1, 8), 4, protocol="secagg")
    assert p.version == PROTOCOL_VERSION == 2
    with pytest.raises(ParameterError, match="version 1"):
        dataclasses.replace(p, version=1)
    magic, wire_version, name, fields = msgpack.unpackb(wire.encode(p))
    fields[0] = 1
    with pytest.raises(WireFormatError):
        wire.decode(msgpack.packb([magic, wire_version, name, fields], use_bin_type=True), MaskingParams)


@pytest.mark.parametrize("n,dropout,corrupt", [(1000, 0.05, 0.0), (10000, 0.05, 0.0), (10000, 0.2, 0.0),
                                               (1000, 0.1, 0.1), (500, 0.3, 0.0)])
def test_secagg_plus_derivation_meets_its_three_bounds(n, dropout, corrupt):
    k, t = derive_secagg_plus(n, dropout, corrupt)
    m = k + 1
    assert 2 * t > m
    if k < n - 1:
        assert n * (dropout + corrupt) ** (k / 2) <= 2.0**-40
        assert n * binom_sf_ge(m, corrupt, 2 * t - m) <= 2.0**-40
        assert n * binom_cdf_lt(m, 1 - dropout, t) <= 2.0**-30
        # and it is the smallest such even degree
        if k > 2:
            from secagg.protocols.masking.graph import _sparse_ok
            assert _sparse_ok(n, k - 2, dropout, corrupt, 40, 30) is None


def test_harary_graph_is_regular_symmetric_and_seeded():
    ids = tuple(range(1, 41))
    g = NeighbourGraph(ids, 6, b"\x01" * 32)
    for u in ids:
        nb = g.neighbours(u)
        assert len(nb) == 6 and u not in nb
        assert all(u in g.neighbours(v) for v in nb)
        assert all(g.are_neighbours(u, v) == (v in nb) for v in ids)
    g2 = NeighbourGraph(ids, 6, b"\x02" * 32)
    assert any(g.neighbours(u) != g2.neighbours(u) for u in ids)


@pytest.mark.parametrize("n, degree", [(9, 2), (40, 6), (41, 10), (101, 36)])
def test_holders_table_lists_every_clients_holders(n, degree):
    ids = tuple(range(3, 3 + 2 * n, 2))  # not 1..n: rows follow client_ids, values are ids
    g = NeighbourGraph(ids, degree, bytes(range(32)))
    table = g.holders_table()
    assert table.shape == (n, degree + 1) and table.dtype == np.uint32 and not table.flags.writeable
    for r, u in enumerate(ids):
        assert tuple(table[r].tolist()) == g.holders(u) == tuple(sorted(g.neighbours(u) + (u,)))
    assert g.holders_table() is table
    pick = np.array([ids[-1], ids[0], ids[2]])
    assert np.array_equal(g.holders_of(pick), table[[n - 1, 0, 2]])
    with pytest.raises(ParameterError):
        g.holders_of(np.array([ids[0], ids[0] + 1]))  # ids are odd: an even one is not a participant
    with pytest.raises(ParameterError):
        NeighbourGraph(ids, n - 1, bytes(32)).holders_table()


@pytest.mark.parametrize("missing", [(), (7,), (2, 3, 4, 31)])
def test_sparse_key_broadcasts_carry_exactly_the_holders_that_advertised(missing):
    """The server's key broadcasts of a sparse graph, built for every client at
    once, against the definition taken client by client: the holders of u that
    advertised, in id order, each column their advertised values."""
    params = MaskingParams.create(list(range(1, 41)), 4, protocol="secagg+", dropout_tolerance=0.2,
                                  degree=8, threshold=6, rng=DeterministicRandom(4))
    assert not params.is_complete
    server = MaskingServer(params, DeterministicRandom(5))
    server.start()
    adverts = {}
    for u in params.client_ids:
        if u not in missing:
            adverts[u] = MaskingClient(params, u, DeterministicRandom(100 + u)).advertise_keys()
            server.receive(u, adverts[u])
    out = server.close_round()
    assert set(out) == set(adverts)
    for u, msg in out.items():
        want = [v for v in params.graph.holders(u) if v in adverts]
        assert msg.client_ids.dtype == np.uint32 and msg.client_ids.tolist() == want
        assert msg.enc_publics == b"".join(adverts[v].enc_public for v in want)
        assert msg.mask_publics == b"".join(adverts[v].mask_public for v in want)
        assert msg.commitments == b"".join(adverts[v].self_mask_commitment for v in want)
        assert msg.signatures == b""
        again = wire.decode(wire.encode(msg), type(msg))
        assert again.client_ids.tolist() == want and again.enc_publics == msg.enc_publics


# ----------------------------------------------------------------- simulator

def test_simulate_reports_included_bytes_and_timings():
    xs = [np.full(16, 0.01 * i) for i in range(1, 9)]
    res = simulate(xs, protocol="secagg", dropouts={2: "share_keys", 5: "unmasking"}, seed=3)
    assert 2 not in res.included and 5 in res.included
    assert res.dropped == {2: "share_keys", 5: "unmasking"}
    inc = [xs[i - 1] for i in res.included]
    assert np.allclose(res.aggregate, np.mean(inc, axis=0), atol=1e-4)
    assert all(res.bytes_sent[i] > 16 * 4 for i in res.included)
    assert res.bytes_sent[2] < res.bytes_sent[1]
    assert {"share_keys.clients", "masked_input.server", "server_total"} <= set(res.timings)


def test_simulate_is_reproducible_with_a_seed():
    xs = [np.linspace(-0.5, 0.5, 10) * i / 7 for i in range(1, 8)]
    t1, t2 = [], []
    a = simulate(xs, protocol="secagg+", dropouts=0.3, seed=11, trace=t1)
    b = simulate(xs, protocol="secagg+", dropouts=0.3, seed=11, trace=t2)
    assert a.session_id == b.session_id and np.array_equal(a.aggregate, b.aggregate)
    assert t1 == t2 and len(t1) > 20


def test_simulate_abort_raises_protocol_aborted_not_partial_result():
    xs = [np.ones(4) * 0.1 for _ in range(6)]
    with pytest.raises(ProtocolAborted) as e:
        simulate(xs, protocol="secagg", dropouts={1: "masked_input", 2: "masked_input", 3: "unmasking"},
                 dropout_tolerance=0.3, seed=1)
    assert e.value.reason is AbortReason.TOO_FEW_SURVIVORS


@pytest.mark.parametrize("rule,weights", [("sum", None), ("mean", None), ("weighted", [1, 2, 3, 4, 5]),
                                          ("fedavg", [10, 20, 30, 40, 50]), ("hybrid", [0.5, 1.5, 2.5, 3.5, 4.5])])
def test_simulate_rules_match_float_reference(rule, weights):
    from secagg.aggregation import reference_aggregate

    gen = np.random.default_rng(0)
    xs = [gen.uniform(-1, 1, 12) for _ in range(5)]
    res = simulate(xs, weights, protocol="secagg", rule=rule, seed=2, dropout_tolerance=0.2)
    ref = reference_aggregate(rule, xs, weights)
    assert np.max(np.abs(res.aggregate - ref)) < 5 * 64 / 2**16


@pytest.mark.parametrize("bad,match", [
    (dict(updates=[np.ones(3), np.ones(4)]), "entries"),
    (dict(updates=[np.ones(3), np.array([1, np.nan, 0])]), "NaN"),
    (dict(updates=[np.ones(3), np.array([1, np.inf, 0])]), "NaN or infinite"),
    (dict(updates=[np.ones(3)] * 3, weights=[1, 0, 2], rule="weighted"), "weight"),
    (dict(updates=[np.ones(3)] * 3, weights=[1, -1, 2], rule="fedavg"), "weight"),
    (dict(updates=[np.ones(3)] * 3, weights=[1, 2, 2], rule="mean"), "takes no weights"),
    (dict(updates=[np.ones(3)] * 3, rule="fedavg"), "needs one weight"),
    (dict(updates=[np.ones(3)] * 3, protocol="nope"), "unknown protocol"),
    (dict(updates=[np.ones(3)] * 3, dropouts={9: "share_keys"}), "names client"),
    (dict(updates=[np.ones(3)] * 3, dropouts={1: "later"}), "unknown dropout stage"),
    (dict(updates=[np.ones(3)] * 10, protocol="secagg", dropouts=0.7), "cannot tolerate"),
])
def test_simulate_bad_input_gives_clear_parameter_errors(bad, match):
    kw = dict(bad)
    updates = kw.pop("updates")
    weights = kw.pop("weights", None)
    with pytest.raises(ParameterError, match=match):
        simulate(updates, weights, seed=0, **kw)


def _route_fixture(m1: int, senders: list[int]):
    """A server at the end of ShareKeys on the complete graph over ids 1..m1,
    where ``senders`` sent shares whose records name (sender, recipient) in
    their first 8 bytes (routing never decrypts, so any bytes do)."""
    from secagg.protocols.masking.messages import SHARE_RECORD_SIZE, ShareKeys

    ids = tuple(range(1, m1 + 1))
    params = MaskingParams.create(ids, 4, protocol="secagg", threshold=m1 // 2 + 1, dropout_tolerance=0.0)
    server = MaskingServer(params)
    u1 = np.array(ids, dtype=np.uint32)
    server.u1, server._u1_set, server._u1_arr = ids, set(ids), u1
    got = {}
    for u in senders:
        rec = u1[u1 != u]
        body = np.zeros((rec.size, SHARE_RECORD_SIZE), dtype=np.uint8)
        body[:, :4] = np.frombuffer(np.uint32(u).tobytes(), np.uint8)
        body[:, 4:8] = rec.view(np.uint8).reshape(-1, 4)
        body[:, 8:] = (u * 7 + rec.reshape(-1, 1)) % 251  # a distinct payload per (sender, recipient)
        got[u] = ShareKeys(u, params.session_id, rec, body.tobytes())
    server.u2 = tuple(senders)
    return server, got


@pytest.mark.parametrize("m1, senders", [
    (2, [1, 2]), (3, [1, 3]), (4, [2, 3, 4]), (33, list(range(1, 34))), (40, [i for i in range(1, 41) if i % 5]),
    (70, list(range(2, 71))), (70, list(range(1, 70))), (97, [i for i in range(1, 98) if i not in (32, 33, 64, 65)]),
    (129, [i for i in range(1, 130) if i % 9])])
def test_complete_graph_routing_across_blocks(m1, senders):
    """The blocked transpose of the share routing (blocks of 32 recipients):
    every surviving recipient gets, from every other survivor and in sender
    order, exactly the record addressed to it, for U_2 with gaps at the start,
    middle and end and block boundaries."""
    from secagg.protocols.masking.messages import SHARE_RECORD_SIZE

    server, got = _route_fixture(m1, senders)
    u2 = np.array(senders, dtype=np.uint32)
    out = server._route_complete(got, u2)
    assert sorted(out) == senders and not got
    for v, msg in out.items():
        others = [u for u in senders if u != v]
        assert msg.senders.tolist() == others
        recs = np.frombuffer(msg.ciphertexts, dtype=np.uint8).reshape(-1, SHARE_RECORD_SIZE)
        assert recs[:, :4].copy().view(np.uint32).ravel().tolist() == others
        assert np.all(recs[:, 4:8].copy().view(np.uint32) == v)
        assert np.all(recs[:, 8:] == ((np.array(others).reshape(-1, 1) * 7 + v) % 251))


def test_complete_graph_rounds_at_block_sizes_with_dropouts():
    """Whole rounds on the complete graph beyond one routing block, with
    clients vanishing at ShareKeys (U_2 smaller than U_1) and later."""
    drop = {3: "share_keys", 34: "share_keys", 40: "masked_input", 41: "unmasking"}
    r = Round(n=45, dim=6, dropout_tolerance=0.3)
    outcome = r.run(drop)
    assert isinstance(outcome, ServerResult)
    included = [i for i in r.ids if drop.get(i) not in ("share_keys", "masked_input")]
    assert list(outcome.included) == included
    np.testing.assert_allclose(outcome.sum_weighted, r.expected_sum(included), atol=1e-3)


def test_routing_failure_ends_the_round_instead_of_continuing_without_shares(monkeypatch):
    """The received shares are released while they are copied; if routing then
    fails (say, out of memory), the round aborts with INTERNAL_ERROR and takes
    no more messages, rather than stay in ShareKeys with no shares."""
    from secagg.protocols.masking import server as server_module

    r = Round(n=5, dim=4)
    r.advertise()
    r.step(close=False)

    def boom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(server_module, "ForwardedShares", boom)
    assert r.close() is False and r.outgoing == {}
    outcome = r.server.outcome
    assert isinstance(outcome, Abort) and outcome.reason is AbortReason.INTERNAL_ERROR
    with pytest.raises(RemoteProtocolError):
        r.server.receive(1, r.replies[1])


@pytest.mark.parametrize("protocol", ["secagg", "secagg+", "plaintext"])
def test_paillier_only_options_are_refused_for_other_protocols(protocol):
    xs = [np.zeros(3) for _ in range(4)]
    for kwargs in ({"randomizer": "djn"}, {"randomizer": "no-such"}, {"short_exponent": True}):
        with pytest.raises(ParameterError, match="paillier"):
            simulate(xs, protocol=protocol, seed=1, **kwargs)
