"""What do the masking protocol's defences against a corrupt client cost?
(protocols/masking/SPEC.md §3.1 and §3.5 step 3; the adversarial tests in
tests/test_masking_adversarial.py show that they work, this script what they
cost.)

Two defences keep one corrupt client from spoiling a round for the others:

- **the key check at advertisement**: the server refuses a malformed,
  low-order or twist X25519 public key (``key_agreement.check_public(key,
  subgroup=False)``: the five low-order points by a set lookup, twist keys
  by a Legendre symbol; no exchange). A mixed-order key is accepted: clamped
  exchanges ignore its small-order component and a reconstructed mask key is
  matched up to it (masking SPEC §4.2). The client with a refused key is
  left out; the round goes on over the rest;
- **the reconstruction checks at unmasking**: every reconstructed self-mask
  seed is hashed and compared with the owner's round-0 commitment, every
  reconstructed mask secret key is turned into its public key and compared
  with the advertised one. A secret no holder set reconstructs correctly
  aborts the round naming its owner (``Abort.culprits``); the training runner
  and the Flower strategy leave that client out of later rounds.

Measured in one run, one pinned core, process CPU time (wall alongside in the
JSON), every comparison from figures taken in the same run, interleaved:

1. **The key check** per key (honest keys, a mixed-order key (accepted), a twist key, a
   low-order point) beside one bare X25519 exchange (``cryptography``'s
   ``X25519PrivateKey.exchange``) and the base-point multiplication, in
   interleaved repetitions; and, per honest round (n = 100, 500, 1000,
   d = 10K, complete graph, no dropout), ``check_public`` on the round's 2n
   advertised keys timed in the same process (right after the advertise
   stage closes and again after the round; their mean) against the server's
   ``advertise_keys`` stage and its whole round (core). The round "without
   the check" is the round minus those measured checks (the server has no
   switch to turn the check off). As a cross-check in place, the advertise
   stage alone, repeated with the server module's ``check_public`` and with
   it replaced by a no-op (in this process only; order alternating).
2. **The reconstruction checks** at unmasking with dropouts (n = 500,
   d = 100K, 10 % and 30 % dropping before their masked input): the server's
   unmasking stage, beside the commitment hashes of |U_3| seeds, the public
   keys of |D| mask keys (and the comparisons), the Shamir reconstruction of
   as many secrets from t holders (the server's path: one Lagrange
   combination, ``shamir.combine_at_zero``) and the mask recomputation (the
   server's mask jobs, ``unmask.run_local``, on as many seeds and keys),
   each timed bare right after the cell.
3. **The cost of a corrupt client to the honest ones** (n = 100, 500,
   d = 10K), interleaved repetitions of: an honest round; a round where one
   client advertised a twist point as its mask key, refused at
   advertisement;
   a round where one client's self-mask seed was dealt inconsistently (every
   holder's share of it off by a different amount, as in the adversarial
   test: no holder set reconstructs it), which aborts at unmasking naming
   it, followed by the rerun without it (as the training runner does: the
   same clients, the culprit absent from advertisement on). Server core CPU
   per round, its ratio to the honest round of the same repetition (median
   over repetitions), and each honest client's CPU.

Every completed round is checked against the plaintext sum
(``masking_driver.run_rest``); the refused key must be refused as malformed
and its sender left out; the aborted round must abort with
``reconstruction_failed`` naming exactly the corrupt client.

    .venv/bin/python benchmarks/bench_corrupt_clients.py --quick   # small n, seconds; writes results/corrupt_clients_quick.*
    .venv/bin/python benchmarks/bench_corrupt_clients.py           # the recorded run (about 12 min of CPU)
    .venv/bin/python benchmarks/bench_corrupt_clients.py --recon-dim 10000 --large-n   # shorter: part 2 at d = 10K, no n = 1000

Results: benchmarks/results/corrupt_clients.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))

import masking_driver as D  # noqa: E402  (sets the thread env before numpy loads)

import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey  # noqa: E402

from secagg.drivers import ClientDriver, MaskingClientRole, ServerDriver  # noqa: E402
from secagg.drivers.observer import SERVER  # noqa: E402
from secagg.encoding import wire  # noqa: E402
from secagg.errors import AbortReason, BadPublicKey, ProtocolAborted  # noqa: E402
from secagg.primitives import shamir  # noqa: E402
from secagg.primitives.key_agreement import LOW_ORDER_U, check_public, generate_keypair, public_from_private  # noqa: E402
from secagg.protocols.masking import Abort, AdvertiseKeys, MaskingParams, MaskingServer, UnmaskShares  # noqa: E402
from secagg.protocols.masking import _crypto as C  # noqa: E402
from secagg.protocols.masking import server as masking_server  # noqa: E402
from secagg.protocols.masking.messages import SHARE_CHUNKS  # noqa: E402
from secagg.protocols.masking.unmask import MaskJob, run_local  # noqa: E402
from secagg.protocols.stages import Stage  # noqa: E402
from secagg.transports.inprocess import LocalRound, Tamper  # noqa: E402

P25519 = 2**255 - 19
A25519 = 486662
cpu = time.process_time


# ---------------------------------------------------------------------------- corrupt keys
def mixed_order(public: bytes) -> bytes:
    """An honest X25519 public key moved by the point of order 2: u -> 1/u
    (as the adversarial test builds it). Every clamped exchange with it gives
    the same secret as with the honest key, but it is nobody's public key."""
    return pow(int.from_bytes(public, "little"), P25519 - 2, P25519).to_bytes(32, "little")


def twist_key(rng: np.random.Generator) -> bytes:
    """A canonical u-coordinate of a point of the quadratic twist (u^3 + A u^2 + u
    not a square mod p)."""
    while True:
        u = int.from_bytes(rng.bytes(32), "little") % P25519
        if u > 1 and pow((u * u * u + A25519 * u * u + u) % P25519, (P25519 - 1) // 2, P25519) == P25519 - 1:
            return u.to_bytes(32, "little")


# a point of order 8 (the smallest listed u above 1)
LOW_ORDER_POINT = min(u for u in LOW_ORDER_U if u > 1).to_bytes(32, "little")


def server_check(key: bytes) -> None:
    """``check_public`` as the masking server calls it on an advertised key
    (no subgroup step: masking SPEC §4.2)."""
    check_public(key, subgroup=False)


def refuse_all(keys: list[bytes]) -> int:
    """The server's check on each key; returns how many were refused."""
    refused = 0
    for k in keys:
        try:
            server_check(k)
        except BadPublicKey:
            refused += 1
    return refused


def check_all(keys: Iterable[bytes]) -> None:
    for k in keys:
        server_check(k)


# ---------------------------------------------------------------------------- 1a. bare primitives
def primitives(args: argparse.Namespace) -> dict[str, Any]:
    """Per-call CPU time of the key check (honest, mixed-order, twist, low-order
    keys) and of the bare X25519 operations, in ``args.key_reps`` interleaved
    repetitions over a pool of ``args.key_pool`` keys; the check's multiple of
    an exchange is taken per repetition, then the median."""
    k = args.key_pool
    rng = np.random.default_rng([args.seed, 25519])
    pairs = [generate_keypair() for _ in range(k)]
    honest = [p.public for p in pairs]
    mixed = [mixed_order(h) for h in honest]
    twist = [twist_key(rng) for _ in range(k)]
    low = [LOW_ORDER_POINT] * k
    privates = [p.private for p in pairs]
    own = X25519PrivateKey.generate()
    loaded = [X25519PublicKey.from_public_bytes(h) for h in honest]
    sid = bytes(32)
    seeds = [rng.bytes(32) for _ in range(k)]
    commits = [C.self_mask_commitment(sid, i, s) for i, s in enumerate(seeds)]
    # correctness, outside the timers
    check_all(honest)
    assert refuse_all(mixed) == 0 and refuse_all(twist) == k and refuse_all(low) == k

    def exchange() -> None:
        for pk in loaded:
            own.exchange(pk)

    def exchange_parsed() -> None:
        for h in honest:
            own.exchange(X25519PublicKey.from_public_bytes(h))

    def derive() -> None:
        for sk, pk in zip(privates, honest):
            if public_from_private(sk) != pk:
                raise RuntimeError("public key derivation")

    def commit() -> None:
        for i, (s, c) in enumerate(zip(seeds, commits)):
            if C.self_mask_commitment(sid, i, s) != c:
                raise RuntimeError("commitment")

    parts: dict[str, Callable[[], Any]] = {
        "check_honest": lambda: check_all(honest),
        "accept_mixed_order": lambda: refuse_all(mixed),
        "refuse_twist": lambda: refuse_all(twist),
        "refuse_low_order": lambda: refuse_all(low),
        "x25519_exchange": exchange,
        "x25519_exchange_with_parse": exchange_parsed,
        "public_from_private_and_compare": derive,
        "commitment_hash_and_compare": commit,
    }
    samples: dict[str, list[float]] = {name: [] for name in parts}
    ratios: dict[str, list[float]] = {"check_over_exchange": [], "mixed_over_exchange": [], "twist_over_exchange": [],
                                      "check_over_exchange_with_parse": [], "check_over_public_from_private": []}
    names = list(parts)
    for rep in range(args.key_reps):
        order = names[rep % len(names):] + names[:rep % len(names)]  # rotated: no part always first
        got = {}
        for name in order:
            c0 = cpu()
            parts[name]()
            got[name] = (cpu() - c0) / k
            samples[name].append(got[name])
        ratios["check_over_exchange"].append(got["check_honest"] / got["x25519_exchange"])
        ratios["mixed_over_exchange"].append(got["accept_mixed_order"] / got["x25519_exchange"])
        ratios["twist_over_exchange"].append(got["refuse_twist"] / got["x25519_exchange"])
        ratios["check_over_exchange_with_parse"].append(got["check_honest"] / got["x25519_exchange_with_parse"])
        ratios["check_over_public_from_private"].append(got["check_honest"] / got["public_from_private_and_compare"])
    return {"keys_per_sample": k, "repetitions": args.key_reps,
            "per_call_cpu_s": {name: D.describe(v) for name, v in samples.items()},
            "ratios": {name: D.describe(v) for name, v in ratios.items()}}


# ---------------------------------------------------------------------------- rounds

def _start_round(params, seed: int, obs, **round_options):  # type: ignore[no-untyped-def]
    """The server (its set-up timed as its round 0) and every client on the
    round drivers, moved by a LocalRound through the advertise stage:
    (masking server, server driver, client drivers, their stores, the round)."""
    with obs.span(SERVER, Stage.ADVERTISE_KEYS, "core"):
        core = MaskingServer(params)
    server = ServerDriver(core, "sum", observer=obs)
    shared = {params.session_id: params}
    stores = {i: D.BenchStore(shared) for i in params.client_ids}
    view = obs.client_view()
    clients = {i: ClientDriver(MaskingClientRole(i), stores[i], observer=view) for i in params.client_ids}
    network = LocalRound(server, clients, D.Updates(params.client_ids, params.dim, seed), **round_options)
    network.start()
    network.step()
    return core, server, clients, stores, network

def keys_round(params: MaskingParams, seed: int, *, tamper: Tamper | None = None,
               vanish: Mapping[int, str] | None = None, refused: Mapping[int, str] | None = None,
               after_advertise: Callable[[], None] | None = None) -> D.MaskingRun:
    """``masking_driver.run_keys`` (rounds 0 and 1 on the drivers, the same
    observer and stores), with a ``tamper`` hook on the wire (the corrupt
    client) and ``refused``: the parties whose message the server must
    refuse (party -> abort reason); anything else refused is an error. The
    refusals are checked, kept in the run's record and taken off the
    observer's books, so that ``run_rest`` checks the rest of the round clean.
    ``after_advertise`` runs between the two stages, outside every span."""
    t_start = D.wall_clock()
    obs = D.ClockObserver()
    _, server, clients, stores, network = _start_round(params, seed, obs, dropouts=vanish, tamper=tamper)
    if after_advertise is not None:
        after_advertise()
    network.step()
    refused = dict(refused or {})
    got = {(party, reason.split(":")[0]) for _, _, party, reason in obs.rejections}
    if got != set(refused.items()) or len(obs.rejections) != len(refused):
        raise RuntimeError(f"server refusals {obs.rejections}, expected {refused}")
    failed = {p for p in server.failures if p not in network.dropouts and p not in refused}
    if network.refusals or failed:
        raise RuntimeError(f"refusals in the round: clients {network.refusals}, missing {failed}")
    obs.rejections.clear()
    return D.MaskingRun(params, seed, server, clients, stores, obs, network.outbox, D.wall_clock() - t_start)


def key_recorder(into: list[bytes], corrupt: int | None = None) -> Tamper:
    """A wire hook that records every advertised public key; if ``corrupt`` is
    a party, replaces its mask key by a twist point first."""
    def tamper(direction: str, stage: Stage, party: int, data: bytes) -> bytes | None:
        if direction != "to_server" or stage is not Stage.ADVERTISE_KEYS:
            return data
        msg = wire.decode(data, AdvertiseKeys)
        if party == corrupt:
            msg = dataclasses.replace(msg, mask_public=twist_key(np.random.default_rng([party, 25519])))
            data = wire.encode(msg)
        into.extend((msg.enc_public, msg.mask_public))
        return data
    return tamper


def inconsistent_dealer(owner: int) -> Tamper:
    """A wire hook that makes ``owner``'s self-mask seed unreconstructable:
    every holder's revealed share of it off by a different amount (1 + 977 *
    holder id, mod p), as if the owner had dealt shares on no polynomial
    giving its committed seed (the adversarial test's construction)."""
    p = shamir.M31.prime

    def tamper(direction: str, stage: Stage, party: int, data: bytes) -> bytes | None:
        if direction != "to_server" or stage is not Stage.UNMASKING:
            return data
        msg = wire.decode(data, UnmaskShares)
        owners = msg.self_mask_owners
        k = int(np.searchsorted(owners, owner))
        if k >= owners.size or int(owners[k]) != owner:
            return data
        shares = np.array(msg.self_mask_shares, copy=True)
        j = k * SHARE_CHUNKS
        shares[j] = (int(shares[j]) + 1 + 977 * party) % p
        return wire.encode(dataclasses.replace(msg, self_mask_shares=shares))
    return tamper


def figures(server_core: Mapping[str, D.Clock], server_wire: Mapping[str, D.Clock],
            client_core: Mapping[int, D.Clock], client_wire: Mapping[int, D.Clock],
            honest_clients: Iterable[int]) -> dict[str, Any]:
    """One round's server figures by stage and its honest clients' CPU."""
    core, wire_ = D.Clock(), D.Clock()
    for c in server_core.values():
        core += c
    for c in server_wire.values():
        wire_ += c
    zero = D.Clock()
    per_client = [client_core.get(i, zero).cpu + client_wire.get(i, zero).cpu for i in honest_clients]
    return {"server_core_cpu_s": core.cpu, "server_core_wall_s": core.wall, "server_wire_cpu_s": wire_.cpu,
            "server_core_by_stage_cpu_s": {k: v.cpu for k, v in server_core.items()},
            "server_wire_by_stage_cpu_s": {k: v.cpu for k, v in server_wire.items()},
            "honest_client_cpu_s_mean": statistics.fmean(per_client) if per_client else 0.0,
            "honest_clients_cpu_s_total": float(sum(per_client))}


def report_figures(report: D.MaskingRunReport, honest_clients: Iterable[int]) -> dict[str, Any]:
    out = figures(report.server_core, report.server_wire, report.client_core, report.client_wire, honest_clients)
    out.update(included=report.included, max_abs_error=report.max_abs_error, error_bound=report.error_bound,
               total_wall_s=report.total_wall_s)
    return out


def honest_round(n: int, args: argparse.Namespace, *, corrupt: int | None = None) -> dict[str, Any]:
    """A round over n clients; with ``corrupt``, that client advertises a
    twist point as its mask key and must be refused and left out. The check_public
    time of the round's advertised keys is measured twice in the same
    process, right after the advertise stage and after the round."""
    ids = tuple(range(1, n + 1))
    params = MaskingParams.create(ids, args.dim, protocol="secagg", dropout_tolerance=args.tolerance)
    keys: list[bytes] = []
    checks: list[tuple[float, int]] = []  # (CPU seconds, keys checked)

    def time_checks() -> None:
        good = [k for k in keys if _is_good(k)]  # the keys the server accepted (outside the timer)
        c0 = cpu()
        check_all(good)
        checks.append((cpu() - c0, len(good)))

    t0 = D.wall_clock()
    refused = {corrupt: AbortReason.MALFORMED_MESSAGE.value} if corrupt is not None else None
    keyed = keys_round(params, args.seed, tamper=key_recorder(keys, corrupt), refused=refused,
                       after_advertise=time_checks)
    schedule = {corrupt: Stage.ADVERTISE_KEYS.value} if corrupt is not None else {}
    report = D.run_rest(keyed, schedule)
    wall = D.wall_clock() - t0
    if corrupt is not None and (corrupt in report.result.included
                                or report.result.dropped.get(corrupt) != Stage.ADVERTISE_KEYS.value):
        raise RuntimeError("the client with the twist key was not left out at advertisement")
    time_checks()
    out = report_figures(report, [i for i in ids if i != corrupt])
    out.update(n=n, kind="twist_key" if corrupt is not None else "honest", corrupt=corrupt,
               keys_checked=checks[0][1], check_public_cpu_s=statistics.fmean(c for c, _ in checks),
               check_public_cpu_s_samples=[c for c, _ in checks], round_wall_s=wall)
    return out


def _is_good(key: bytes) -> bool:
    try:
        server_check(key)
    except BadPublicKey:
        return False
    return True


def abort_and_rerun(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """A round where client ``owner`` dealt its self-mask seed inconsistently:
    it aborts at unmasking naming the owner; then the rerun over the same
    clients with the owner absent from advertisement on (what the training
    runner does with ``ProtocolAborted.culprits``)."""
    ids = tuple(range(1, n + 1))
    owner = ids[len(ids) // 2]
    honest = [i for i in ids if i != owner]
    params = MaskingParams.create(ids, args.dim, protocol="secagg", dropout_tolerance=args.tolerance)
    t0 = D.wall_clock()
    keyed = keys_round(params, args.seed)
    run = keyed.fork()
    network = run.network({})
    network.tamper = inconsistent_dealer(owner)
    sid = params.session_id
    for i in list(network.outbox):  # masked inputs, one client at a time, updates made on the fly
        run.stores[i].supply(sid, D.update_of(i, params.dim, run.seed))
        network.deliver([i])
    network.close()
    network.step()  # unmasking: the server aborts at its close
    wall = D.wall_clock() - t0
    outcome = run.server.outcome
    if not (isinstance(outcome, Abort) and outcome.reason is AbortReason.RECONSTRUCTION_FAILED
            and outcome.culprits == (owner,)):
        raise RuntimeError(f"expected an abort naming client {owner}, got {outcome}")
    try:
        run.server.result()
        raise RuntimeError("an aborted round gave a result")
    except ProtocolAborted as exc:
        if exc.culprits != (owner,):
            raise RuntimeError(f"ProtocolAborted names {exc.culprits}, not {owner}") from None
    if network.refusals or run.observer.rejections or run.server.failures:
        raise RuntimeError(f"unexpected refusals in the aborted round: {network.refusals} "
                           f"{run.observer.rejections} {run.server.failures}")
    obs = run.observer
    aborted = figures(obs.server_core_by_stage(), obs.server_wire_by_stage(), obs.client_totals("core"),
                      obs.client_totals("wire"), honest)
    aborted.update(round_wall_s=wall, abort_reason=outcome.reason.value, culprits=list(outcome.culprits))
    del keyed, run, network
    # the rerun: the same clients, the culprit never advertises (runner's EXCLUDED_STAGE)
    params2 = MaskingParams.create(ids, args.dim, protocol="secagg", dropout_tolerance=args.tolerance)
    gone = {owner: Stage.ADVERTISE_KEYS.value}
    t0 = D.wall_clock()
    keyed2 = keys_round(params2, args.seed, vanish=gone)
    report = D.run_rest(keyed2, gone)
    rerun = report_figures(report, honest)
    rerun.update(round_wall_s=D.wall_clock() - t0)
    if owner in report.result.included:
        raise RuntimeError("the culprit was included in the rerun")
    return {"n": n, "kind": "inconsistent_shares", "culprit": owner, "aborted": aborted, "rerun": rerun,
            "server_core_cpu_s": aborted["server_core_cpu_s"] + rerun["server_core_cpu_s"],
            "honest_client_cpu_s_mean": aborted["honest_client_cpu_s_mean"] + rerun["honest_client_cpu_s_mean"],
            "round_wall_s": aborted["round_wall_s"] + rerun["round_wall_s"]}


def corrupt_rounds(n: int, args: argparse.Namespace, load: D.LoadLog) -> dict[str, Any]:
    """``args.reps`` interleaved repetitions of (honest, twist key,
    inconsistent shares + rerun), the order rotated per repetition."""
    kinds: dict[str, Callable[[], dict[str, Any]]] = {
        "honest": lambda: honest_round(n, args),
        "twist_key": lambda: honest_round(n, args, corrupt=1),
        "inconsistent_shares": lambda: abort_and_rerun(n, args),
    }
    names = list(kinds)
    reps = []
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        got = {}
        for name in order:
            got[name] = kinds[name]()
            D.say(f"n={n} rep {rep + 1}/{args.reps} {name}: server core {D.fmt_s(got[name]['server_core_cpu_s'])}")
        load.mark(f"n={n} rep {rep + 1}")
        h, m, a = got["honest"], got["twist_key"], got["inconsistent_shares"]
        got["ratios"] = {
            "twist_over_honest_server": m["server_core_cpu_s"] / h["server_core_cpu_s"],
            "abort_over_honest_server": a["aborted"]["server_core_cpu_s"] / h["server_core_cpu_s"],
            "abort_unmasking_over_honest_unmasking": (a["aborted"]["server_core_by_stage_cpu_s"]["unmasking"]
                                                      / h["server_core_by_stage_cpu_s"]["unmasking"]),
            "rerun_over_honest_server": a["rerun"]["server_core_cpu_s"] / h["server_core_cpu_s"],
            "abort_plus_rerun_over_honest_server": a["server_core_cpu_s"] / h["server_core_cpu_s"],
            "twist_over_honest_client": m["honest_client_cpu_s_mean"] / h["honest_client_cpu_s_mean"],
            "abort_plus_rerun_over_honest_client": a["honest_client_cpu_s_mean"] / h["honest_client_cpu_s_mean"],
            "abort_plus_rerun_over_honest_wall": a["round_wall_s"] / h["round_wall_s"],
            "check_share_of_advertise": h["check_public_cpu_s"] / h["server_core_by_stage_cpu_s"]["advertise_keys"],
            "check_share_of_round": h["check_public_cpu_s"] / h["server_core_cpu_s"],
        }
        got["order"] = order
        reps.append(got)
    med = {k: statistics.median(r["ratios"][k] for r in reps) for k in reps[0]["ratios"]}
    return {"n": n, "dim": args.dim, "repetitions": reps, "median_ratios": med,
            "median_server_core_cpu_s": {
                "honest": statistics.median(r["honest"]["server_core_cpu_s"] for r in reps),
                "twist_key": statistics.median(r["twist_key"]["server_core_cpu_s"] for r in reps),
                "aborted": statistics.median(r["inconsistent_shares"]["aborted"]["server_core_cpu_s"] for r in reps),
                "rerun": statistics.median(r["inconsistent_shares"]["rerun"]["server_core_cpu_s"] for r in reps),
                "abort_plus_rerun": statistics.median(r["inconsistent_shares"]["server_core_cpu_s"] for r in reps)},
            "median_honest_client_cpu_s": {
                "honest": statistics.median(r["honest"]["honest_client_cpu_s_mean"] for r in reps),
                "twist_key": statistics.median(r["twist_key"]["honest_client_cpu_s_mean"] for r in reps),
                "abort_plus_rerun": statistics.median(r["inconsistent_shares"]["honest_client_cpu_s_mean"]
                                                      for r in reps)}}


def key_check_rows(honest: list[dict[str, Any]]) -> dict[str, Any]:
    """Part 1 at one n, from honest rounds: the measured check time against the
    server's advertise stage and its round (ratios per round, then median)."""
    def med(f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(f(h) for h in honest)

    return {
        "n": honest[0]["n"], "rounds": len(honest), "keys_checked": honest[0]["keys_checked"],
        "check_public_cpu_s": med(lambda h: h["check_public_cpu_s"]),
        "check_public_per_key_cpu_s": med(lambda h: h["check_public_cpu_s"] / h["keys_checked"]),
        "advertise_core_cpu_s": med(lambda h: h["server_core_by_stage_cpu_s"]["advertise_keys"]),
        "advertise_core_per_client_cpu_s": med(lambda h: h["server_core_by_stage_cpu_s"]["advertise_keys"] / h["n"]),
        "advertise_core_plus_wire_per_client_cpu_s": med(
            lambda h: (h["server_core_by_stage_cpu_s"]["advertise_keys"]
                       + h["server_wire_by_stage_cpu_s"]["advertise_keys"]) / h["n"]),
        "server_core_cpu_s": med(lambda h: h["server_core_cpu_s"]),
        "server_core_without_check_cpu_s": med(lambda h: h["server_core_cpu_s"] - h["check_public_cpu_s"]),
        "check_share_of_advertise": med(lambda h: h["check_public_cpu_s"]
                                        / h["server_core_by_stage_cpu_s"]["advertise_keys"]),
        "check_share_of_round": med(lambda h: h["check_public_cpu_s"] / h["server_core_cpu_s"]),
        "round_with_over_without_check": med(lambda h: h["server_core_cpu_s"]
                                             / (h["server_core_cpu_s"] - h["check_public_cpu_s"])),
    }


# ---------------------------------------------------------------------------- 1b. the check in its place
def _no_check(public: bytes, *, subgroup: bool = True) -> None:
    """Stands in for ``check_public`` in the server module (this process only)."""


def advertise_stage(params: MaskingParams, seed: int, *, check: bool) -> dict[str, float]:
    """The advertise stage alone on the drivers (server set-up, every client's
    parameters and keys, the server's receive and close): its server core and
    wire CPU. ``check=False`` runs it with the server's ``check_public``
    replaced by a no-op, for this stage only."""
    obs = D.ClockObserver()
    saved = masking_server.check_public
    if not check:
        masking_server.check_public = _no_check
    try:
        core, server, _, _, network = _start_round(params, seed, obs)
    finally:
        masking_server.check_public = saved
    if network.refusals or obs.rejections or server.failures or len(core.u1) != len(params.client_ids):
        raise RuntimeError("the advertise stage did not run clean")
    return {"core_cpu_s": obs.server_core_by_stage()["advertise_keys"].cpu,
            "wire_cpu_s": obs.server_wire_by_stage()["advertise_keys"].cpu}


def check_in_place(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The server's advertise stage with and without the check, ``args.stage_reps``
    repetitions, the two orders alternating (same parameters within a
    repetition); the difference, per key, is the check as the server runs it."""
    ids = tuple(range(1, n + 1))
    reps = []
    for rep in range(args.stage_reps):
        params = MaskingParams.create(ids, args.dim, protocol="secagg", dropout_tolerance=args.tolerance)
        order = (True, False) if rep % 2 == 0 else (False, True)
        got = {flag: advertise_stage(params, args.seed, check=flag) for flag in order}
        w, wo = got[True]["core_cpu_s"], got[False]["core_cpu_s"]
        reps.append({"with_check": got[True], "without_check": got[False], "check_first": order[0],
                     "ratio": w / wo, "difference_cpu_s": w - wo, "difference_per_key_cpu_s": (w - wo) / (2 * n),
                     "share_of_stage": (w - wo) / w})
    return {"n": n, "repetitions": reps,
            "with_check_core_cpu_s": statistics.median(r["with_check"]["core_cpu_s"] for r in reps),
            "without_check_core_cpu_s": statistics.median(r["without_check"]["core_cpu_s"] for r in reps),
            "with_check_wire_cpu_s": statistics.median(r["with_check"]["wire_cpu_s"] for r in reps),
            "ratio": statistics.median(r["ratio"] for r in reps),
            "difference_per_key_cpu_s": statistics.median(r["difference_per_key_cpu_s"] for r in reps),
            "share_of_stage": statistics.median(r["share_of_stage"] for r in reps)}


# ---------------------------------------------------------------------------- 2. reconstruction checks
def reconstruction(args: argparse.Namespace, load: D.LoadLog) -> list[dict[str, Any]]:
    """At n = ``recon_n``, d = ``recon_dim``: the server's unmasking stage with
    each dropout rate, and right after each cell, bare on as many secrets: the
    checks, Shamir reconstruction (the server's path) and the mask
    recomputation."""
    n = args.recon_n
    ids = tuple(range(1, n + 1))
    params = MaskingParams.create(ids, args.recon_dim, protocol="secagg", dropout_tolerance=max(args.dropout))
    D.say(f"reconstruction: n={n}, d={args.recon_dim}, t={params.threshold}; rounds 0-1")
    keyed = D.run_keys(params, seed=args.seed)
    load.mark("reconstruction keys")
    pairs = {i: generate_keypair() for i in ids}  # stand-ins for the clients' mask keys, for the bare parts
    rng = np.random.default_rng([args.seed, 35])
    cells = []
    for rate in args.dropout:
        schedule = D.drop_schedule(ids, rate, "masked_input", seed=args.seed)
        report = D.run_rest(keyed, schedule)
        s = report.summary()
        survivors = sorted(report.result.included)
        dropped = sorted(schedule)
        unmask = s["server_core"]["by_stage"]["unmasking"]
        bare = bare_unmasking(params, survivors, dropped, pairs, rng, args.recon_reps)
        cell = {"n": n, "dim": args.recon_dim, "dropout": rate, "threshold": params.threshold,
                "survivors": len(survivors), "dropped": len(dropped),
                "unmasking_core_cpu_s": unmask["cpu_s"], "unmasking_core_wall_s": unmask["wall_s"],
                "unmasking_wire_cpu_s": s["server_wire"]["by_stage"]["unmasking"]["cpu_s"],
                "server_core_cpu_s": s["server_core"]["cpu_s"], "max_abs_error": report.max_abs_error,
                "error_bound": report.error_bound, **bare}
        checks = bare["checks_cpu_s"]
        cell["checks_share_of_unmasking"] = checks / unmask["cpu_s"]
        cell["shamir_share_of_unmasking"] = bare["shamir_cpu_s"] / unmask["cpu_s"]
        cell["masks_share_of_unmasking"] = bare["mask_recomputation_cpu_s"] / unmask["cpu_s"]
        cell["checks_over_shamir"] = checks / bare["shamir_cpu_s"]
        cell["checks_over_masks"] = checks / bare["mask_recomputation_cpu_s"]
        cell["rest_of_unmasking_cpu_s"] = unmask["cpu_s"] - checks - bare["shamir_cpu_s"] - bare[
            "mask_recomputation_cpu_s"]
        cells.append(cell)
        load.mark(f"reconstruction dropout={rate}")
        D.say(f"  dropout {rate:.0%}: unmasking {D.fmt_s(unmask['cpu_s'])}; checks {D.fmt_s(checks)} "
              f"({cell['checks_share_of_unmasking']:.2%}), Shamir {D.fmt_s(bare['shamir_cpu_s'])}, "
              f"masks {D.fmt_s(bare['mask_recomputation_cpu_s'])}")
        del report
    return cells


def bare_unmasking(params: MaskingParams, survivors: list[int], dropped: list[int], pairs: dict[int, Any],
                   rng: np.random.Generator, reps: int) -> dict[str, Any]:
    """The server's unmasking work, bare, on as many secrets as the cell: the
    checks (commitment hash + compare per survivor's seed, public key +
    compare per dropped client's mask key), the Shamir reconstruction of both
    kinds from the first t survivors (Lagrange coefficients, one
    ``combine_at_zero``, the secrets from their chunks), each ``reps`` times
    interleaved (median); and the mask recomputation (``run_local`` on the
    same mask jobs the server makes) twice (mean)."""
    sid, t = params.session_id, params.threshold
    seeds = [rng.bytes(32) for _ in survivors]
    commits = {v: C.self_mask_commitment(sid, v, s) for v, s in zip(survivors, seeds)}
    keys = [pairs[v].private for v in dropped]
    publics = {v: pairs[v].public for v in dropped}
    holders = survivors[:t]

    def rows_of(secrets: list[bytes]) -> list[np.ndarray]:
        if not secrets:
            return []
        per = shamir.split_many(secrets, t, holders)  # one (t, chunks) array per secret
        table = np.concatenate(per, axis=1)  # row j: holder j's shares of every owner, as it reveals them
        return [table[j].astype(np.uint32) for j in range(t)]

    rows_seeds, rows_keys = rows_of(seeds), rows_of(keys)

    def shamir_pass(rows: list[np.ndarray], m: int) -> list[Any]:
        if not m:
            return []
        coeffs = shamir.lagrange_at_zero(holders)
        chunks = shamir.combine_at_zero(coeffs, rows).reshape(m, SHARE_CHUNKS)
        return shamir.secrets_from_chunk_rows(chunks, 32)

    def check_pass() -> bool:
        ok = all(C.self_mask_commitment(sid, v, s) == commits[v] for v, s in zip(survivors, seeds))
        return ok and all(public_from_private(k) == publics[v] for v, k in zip(dropped, keys))

    if shamir_pass(rows_seeds, len(seeds)) != seeds or shamir_pass(rows_keys, len(keys)) != keys:
        raise RuntimeError("bare Shamir reconstruction gave other secrets")
    checks, recon, hashes, derives = [], [], [], []
    for _ in range(reps):
        c0 = cpu()
        shamir_pass(rows_seeds, len(seeds))
        shamir_pass(rows_keys, len(keys))
        recon.append(cpu() - c0)
        c0 = cpu()
        if not check_pass():
            raise RuntimeError("bare checks failed")
        checks.append(cpu() - c0)
        c0 = cpu()
        all(C.self_mask_commitment(sid, v, s) == commits[v] for v, s in zip(survivors, seeds))
        c1 = cpu()
        all(public_from_private(k) == publics[v] for v, k in zip(dropped, keys))
        c2 = cpu()
        hashes.append(c1 - c0)
        derives.append(c2 - c1)
    alive = set(survivors)
    jobs = [MaskJob(params.entries, params.ring_bits, sid, seeds=tuple(seeds))]
    for v, k in zip(dropped, keys):
        peers = tuple(w for w in params.graph.neighbours(v) if w in alive)
        jobs.append(MaskJob(params.entries, params.ring_bits, sid, v, secret=k, owner_public=publics[v],
                            peers=peers, peer_publics=tuple(pairs[w].public for w in peers)))
    masks = []
    for _ in range(2):
        c0 = cpu()
        run_local(jobs)
        masks.append(cpu() - c0)
    return {"checks_cpu_s": statistics.median(checks), "checks_cpu_s_samples": checks,
            "commitment_checks_cpu_s": statistics.median(hashes), "key_checks_cpu_s": statistics.median(derives),
            "shamir_cpu_s": statistics.median(recon), "shamir_cpu_s_samples": recon,
            "mask_recomputation_cpu_s": statistics.fmean(masks), "mask_recomputation_cpu_s_samples": masks,
            "mask_streams": sum(j.streams for j in jobs), "bare_repetitions": reps}


# ---------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    c_start, w_start = cpu(), D.wall_clock()
    machine = D.machine_info()
    memory = D.memory_report(args.warm_memory)
    load = D.LoadLog()
    load.mark("start")
    D.say("bare primitives")
    prims = primitives(args)
    load.mark("primitives")
    pc = prims["per_call_cpu_s"]
    D.say(f"  check_public {D.fmt_s(pc['check_honest']['median'])}, X25519 exchange "
          f"{D.fmt_s(pc['x25519_exchange']['median'])}: {prims['ratios']['check_over_exchange']['median']:.2f}x")
    corrupt = []
    for n in args.n:
        corrupt.append(corrupt_rounds(n, args, load))
    key_rows = [key_check_rows([r["honest"] for r in c["repetitions"]]) for c in corrupt]
    for n in args.large_n:
        rounds = []
        for rep in range(args.large_reps):
            rounds.append(honest_round(n, args))
            D.say(f"n={n} honest round {rep + 1}/{args.large_reps}: server core "
                  f"{D.fmt_s(rounds[-1]['server_core_cpu_s'])}")
            load.mark(f"n={n} honest {rep + 1}")
        key_rows.append(key_check_rows(rounds) | {"rounds_detail": rounds})
    in_place = []
    for n in [*args.n, *args.large_n]:
        in_place.append(check_in_place(n, args))
        c = in_place[-1]
        D.say(f"n={n} advertise stage with / without the check: {D.fmt_s(c['with_check_core_cpu_s'])} / "
              f"{D.fmt_s(c['without_check_core_cpu_s'])} ({c['ratio']:.2f}x)")
        load.mark(f"n={n} advertise with/without")
    recon = reconstruction(args, load) if args.recon_n else []
    prims_after = primitives(argparse.Namespace(**{**vars(args), "key_reps": max(3, args.key_reps // 3)}))
    load.mark("end")
    x = prims["per_call_cpu_s"]["x25519_exchange"]["median"]
    for row in key_rows:
        row["check_per_key_over_exchange"] = row["check_public_per_key_cpu_s"] / x
    for row in in_place:
        row["difference_per_key_over_exchange"] = row["difference_per_key_cpu_s"] / x
    return {"benchmark": "corrupt_clients", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick,
            "dim": args.dim, "recon_dim": args.recon_dim, "tolerance": args.tolerance, "machine": machine,
            "load": load.summary(), "timer": "process CPU time on one pinned core (wall time alongside)",
            "primitives": prims, "primitives_at_end": prims_after, "key_check_rounds": key_rows,
            "advertise_with_without_check": in_place,
            "corrupt_rounds": corrupt, "reconstruction": recon, **memory, "peak_rss_mb": D.peak_rss_mb(),
            "run_cpu_s": cpu() - c_start, "run_wall_s": D.wall_clock() - w_start}


# ---------------------------------------------------------------------------- markdown
def _s(v: float) -> str:
    """Seconds, as masking_driver.fmt_s, negative ones too."""
    return "−" + D.fmt_s(-v) if v < 0 else D.fmt_s(v)


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %" if v >= 0.0001 else f"{100 * v:.4f} %"


def to_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lo, hi = r["load"]["load_1min_min"], r["load"]["load_1min_max"]
    samples = r["load"]["samples"]
    first = samples[0]["load"] if samples else []
    last = samples[-1]["load"] if samples else []
    pr = r["primitives"]
    pc, ra = pr["per_call_cpu_s"], pr["ratios"]
    end = r.get("primitives_at_end", {}).get("per_call_cpu_s", {})
    lines = [
        "# What the corrupt-client defences cost" + (" — quick smoke run" if r["quick"] else ""),
        "",
        f"Generated by `benchmarks/bench_corrupt_clients.py` on {r['date']}; {m['cpu']}, pinned to CPU "
        f"{m['pinned_to_cpu']} of {m['cpu_count']}; Python {m['python']}, numpy {m['numpy']}, cryptography "
        f"{m['cryptography']}. " + D.source_line(m),
        f"Load average (1, 5, 15 min) {first} at the start, {last} at the end; 1-min load {lo}–{hi} during the "
        "run (other jobs shared the host). Figures are process CPU seconds on one pinned core (time waiting for "
        "the core is not counted); every comparison is between figures taken in this run, interleaved, and "
        "ratios are taken per repetition before the median. Wall seconds in the JSON.",
        D.memory_line(r)
        + (f" The whole run took {D.fmt_s(r['run_cpu_s'])} of process CPU, {D.fmt_s(r['run_wall_s'])} wall."
           if "run_cpu_s" in r else ""),
        "",
        "## 1. The key check at advertisement (`key_agreement.check_public`)",
        "",
        f"Per call, median of {pr['repetitions']} interleaved repetitions over {pr['keys_per_sample']} keys "
        "(min–max in brackets):",
        "",
        "| operation | per call | multiple of one X25519 exchange |",
        "| --- | ---: | ---: |",
    ]
    labels = [("check_honest", "`check_public(key, subgroup=False)`, honest key (accepted)", "check_over_exchange"),
              ("accept_mixed_order", "`check_public` accepting a mixed-order key (honest key + order-2 point)",
               "mixed_over_exchange"),
              ("refuse_twist", "`check_public` refusing a twist key", "twist_over_exchange"),
              ("refuse_low_order", "`check_public` refusing a low-order point (order 8)", None),
              ("x25519_exchange", "X25519 exchange (`X25519PrivateKey.exchange`, peer key loaded)", None),
              ("x25519_exchange_with_parse", "X25519 exchange, peer key parsed from bytes", None),
              ("public_from_private_and_compare", "public key from a private key, compared", None),
              ("commitment_hash_and_compare", "self-mask commitment (SHA-256), compared", None)]
    x = pc["x25519_exchange"]["median"]
    for key, label, ratio in labels:
        d = pc[key]
        mult = _x(ra[ratio]["median"]) if ratio else _x(d["median"] / x)
        lines.append(f"| {label} | {D.fmt_s(d['median'])} ({D.fmt_s(d['min'])}–{D.fmt_s(d['max'])}) | {mult} |")
    if end:
        lines += ["", f"Again at the end of the run: `check_public` {D.fmt_s(end['check_honest']['median'])}, "
                  f"X25519 exchange {D.fmt_s(end['x25519_exchange']['median'])} "
                  f"({_x(r['primitives_at_end']['ratios']['check_over_exchange']['median'])})."]
    lines += [
        "",
        f"In honest rounds (complete graph, d = {r['dim']:,}, no dropout): the server checks two keys per client "
        "(each canonical, not low-order, on the curve; no subgroup exchange since a small-order component is "
        "accepted: masking SPEC §4.2; records at 5bf4391 and before spent one exchange per key). `check_public` on "
        "the round's 2n advertised keys, as the server calls it, was timed in the same process "
        "right after the advertise stage closed and again after the round (their mean); the round \"without the "
        "check\" is the measured round minus those measured checks. Medians over the rounds, ratios per round:",
        "",
        "| n | rounds | keys | check, all keys | per key | per key / X25519 | server advertise_keys (core) "
        "| per client (core) | per client (core + wire) | check / advertise | server round (core) "
        "| round without check | check / round |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in r["key_check_rounds"]:
        lines.append(
            f"| {k['n']} | {k['rounds']} | {k['keys_checked']} | {D.fmt_s(k['check_public_cpu_s'])} | "
            f"{D.fmt_s(k['check_public_per_key_cpu_s'])} | {_x(k['check_per_key_over_exchange'])} | "
            f"{D.fmt_s(k['advertise_core_cpu_s'])} | {D.fmt_s(k['advertise_core_per_client_cpu_s'])} | "
            f"{D.fmt_s(k['advertise_core_plus_wire_per_client_cpu_s'])} | {_pct(k['check_share_of_advertise'])} | "
            f"{D.fmt_s(k['server_core_cpu_s'])} | {D.fmt_s(k['server_core_without_check_cpu_s'])} | "
            f"{_pct(k['check_share_of_round'])} |")
    lines += ["", "The server's advertise_keys core includes building the server (`MaskingServer(params)`) and "
              "the stage's close (the keys broadcast); wire = decoding the `AdvertiseKeys` messages and encoding "
              "the broadcast."]
    situ = r.get("advertise_with_without_check") or []
    if situ:
        lines += ["", "The check in its place: the advertise stage alone (server set-up, every client's keys, the "
                  "server's receives and close), run with the server's `check_public` and with it replaced by a "
                  f"no-op in this process, {len(situ[0]['repetitions'])} repetitions per n, the order alternating; "
                  "medians of the per-repetition figures:", "",
                  "| n | advertise stage (core), with check | without | with / without | check's share of the stage "
                  "| difference per key | per key / X25519 | per client, with check (core) | (core + wire) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in situ:
            lines.append(f"| {c['n']} | {D.fmt_s(c['with_check_core_cpu_s'])} | {D.fmt_s(c['without_check_core_cpu_s'])} | "
                         f"{_x(c['ratio'])} | {_pct(c['share_of_stage'])} | {D.fmt_s(c['difference_per_key_cpu_s'])} | "
                         f"{_x(c['difference_per_key_over_exchange'])} | "
                         f"{D.fmt_s(c['with_check_core_cpu_s'] / c['n'])} | "
                         f"{D.fmt_s((c['with_check_core_cpu_s'] + c['with_check_wire_cpu_s']) / c['n'])} |")
    rec = r["reconstruction"]
    if rec:
        lines += [
            "",
            "## 2. The reconstruction checks at unmasking",
            "",
            f"n = {rec[0]['n']}, d = {rec[0]['dim']:,}, t = {rec[0]['threshold']}, clients dropping before their "
            "masked input. The server's unmasking stage (core: receiving the `UnmaskShares`, reconstruction, checks, "
            "mask removal) beside, timed bare right after the cell on as many secrets: the checks (one commitment "
            "hash per survivor's seed, one public key derivation per dropped client's mask key, each compared), "
            "Shamir reconstruction of both kinds from t holders (median of "
            f"{rec[0]['bare_repetitions']}), and the mask recomputation (mean of two runs of `unmask.run_local` on the same jobs: "
            "per dropped client and survivor an X25519 exchange, a KDF and a keystream of d words; per survivor "
            "its self-mask keystream):",
            "",
            "| dropout | survivors | dropped | unmasking stage | checks | of which hashes | of which key derivations "
            "| Shamir | mask recomputation | rest | checks / unmasking | checks / Shamir | checks / masks |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c in rec:
            lines.append(
                f"| {c['dropout']:.0%} | {c['survivors']} | {c['dropped']} | {D.fmt_s(c['unmasking_core_cpu_s'])} | "
                f"{D.fmt_s(c['checks_cpu_s'])} | {D.fmt_s(c['commitment_checks_cpu_s'])} | "
                f"{D.fmt_s(c['key_checks_cpu_s'])} | {D.fmt_s(c['shamir_cpu_s'])} | "
                f"{D.fmt_s(c['mask_recomputation_cpu_s'])} | {_s(c['rest_of_unmasking_cpu_s'])} | "
                f"{_pct(c['checks_share_of_unmasking'])} | {_x(c['checks_over_shamir'])} | "
                f"{_pct(c['checks_over_masks'])} |")
        lines += ["", "Rest = the stage minus the three bare parts: validating the received share messages, "
                  "sorting and bookkeeping, and the difference between bare and in-round timings (it may be "
                  "negative when the bare mask recomputation ran slower than the server's own)."]
    lines += [
        "",
        "## 3. What a corrupt client costs the honest ones",
        "",
        f"Complete graph, d = {r['dim']:,}, no dropout. Per repetition, in rotated order: an honest round; a round "
        "where client 1 advertised a twist point as its mask key (refused at advertisement as malformed, the round "
        "completes over the other n − 1); a round where the middle client's self-mask seed was dealt "
        "inconsistently (the round aborts at unmasking with `reconstruction_failed` naming it), then the rerun "
        "over the same clients with it absent from advertisement on (as the training runner does). Server core "
        "CPU; honest client = mean CPU (core + wire) of the clients other than the corrupt one; ratios per "
        "repetition, then the median:",
        "",
        "| n | reps | honest round | twist-key round | ratio | aborted round | of which unmasking (honest) "
        "| rerun | abort + rerun | ratio | honest client: honest round | abort + rerun | ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in r["corrupt_rounds"]:
        s, q, cl = c["median_server_core_cpu_s"], c["median_ratios"], c["median_honest_client_cpu_s"]
        un = statistics.median(x["inconsistent_shares"]["aborted"]["server_core_by_stage_cpu_s"]["unmasking"]
                               for x in c["repetitions"])
        hun = statistics.median(x["honest"]["server_core_by_stage_cpu_s"]["unmasking"] for x in c["repetitions"])
        lines.append(
            f"| {c['n']} | {len(c['repetitions'])} | {D.fmt_s(s['honest'])} | {D.fmt_s(s['twist_key'])} | "
            f"{_x(q['twist_over_honest_server'])} | {D.fmt_s(s['aborted'])} | {D.fmt_s(un)} ({D.fmt_s(hun)}) | "
            f"{D.fmt_s(s['rerun'])} | {D.fmt_s(s['abort_plus_rerun'])} | "
            f"{_x(q['abort_plus_rerun_over_honest_server'])} | {D.fmt_s(cl['honest'])} | "
            f"{D.fmt_s(cl['abort_plus_rerun'])} | {_x(q['abort_plus_rerun_over_honest_client'])} |")
    lines += ["", "Per repetition (server core CPU; ratio to that repetition's honest round):", "",
              "| n | rep | order | honest | twist key | ratio | aborted | rerun | abort + rerun | ratio |",
              "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in r["corrupt_rounds"]:
        for i, x in enumerate(c["repetitions"]):
            q = x["ratios"]
            a = x["inconsistent_shares"]
            lines.append(f"| {c['n']} | {i + 1} | {', '.join(x['order'])} | {D.fmt_s(x['honest']['server_core_cpu_s'])} | "
                         f"{D.fmt_s(x['twist_key']['server_core_cpu_s'])} | {_x(q['twist_over_honest_server'])} | "
                         f"{D.fmt_s(a['aborted']['server_core_cpu_s'])} | {D.fmt_s(a['rerun']['server_core_cpu_s'])} | "
                         f"{D.fmt_s(a['server_core_cpu_s'])} | {_x(q['abort_plus_rerun_over_honest_server'])} |")
    lines += ["", "## 4. What each defence costs, and why", ""] + account(r)
    errs = [x[k]["max_abs_error"] for c in r["corrupt_rounds"] for x in c["repetitions"]
            for k in ("honest", "twist_key")]
    errs += [x["inconsistent_shares"]["rerun"]["max_abs_error"] for c in r["corrupt_rounds"] for x in c["repetitions"]]
    errs += [c["max_abs_error"] for c in rec]
    lines += ["", f"Every completed round's aggregate was checked against the plaintext sum of its included "
              f"clients (max error {max(errs):.1e}); every refused key was refused as malformed and its sender "
              "left out; every aborted round named exactly the corrupt client.", ""]
    return "\n".join(lines)


def account(r: dict[str, Any]) -> list[str]:
    """The written account, its figures read from the run."""
    pr = r["primitives"]
    pc, ra = pr["per_call_cpu_s"], pr["ratios"]
    keys = r["key_check_rounds"]
    share_adv = [k["check_share_of_advertise"] for k in keys]
    share_round = [k["check_share_of_round"] for k in keys]
    situ = r.get("advertise_with_without_check") or []
    out = [
        f"- **Key check: {_x(ra['check_over_exchange']['median'])} one X25519 exchange per key "
        f"({D.fmt_s(pc['check_honest']['median'])} against {D.fmt_s(pc['x25519_exchange']['median'])}), "
        f"{_pct(min(share_adv))}–{_pct(max(share_adv))} of the server's advertise stage and "
        f"{_pct(min(share_round))}–{_pct(max(share_round))} of its round (n = "
        f"{', '.join(str(k['n']) for k in keys)})"
        + (f"; in place, the check is {_pct(min(c['share_of_stage'] for c in situ))}–"
           f"{_pct(max(c['share_of_stage'] for c in situ))} of the advertise stage" if situ else "")
        + ".** The check is the canonical encoding, a set lookup for the five low-order points and one "
        "Legendre symbol (gmpy2) for the curve: no exchange. A small-order component is not refused (masking "
        "SPEC §4.2): clamped exchanges ignore it, and the server matches a reconstructed mask key against the "
        "advertised key up to it (one exchange, paid only when the key differs from its advertisement). Until "
        "2026-12-04 the server refused such keys with one exchange per key (two per client). It is paid "
        "once per advertised key: O(n) per round, where the rest of the server's round "
        "is O(n^2) (share routing) plus O(n d) (the sum), so its share of the round falls as n grows. A "
        "mixed-order key costs what an honest key does "
        f"({D.fmt_s(pc['accept_mixed_order']['median'])}); a twist key "
        f"fails the symbol ({D.fmt_s(pc['refuse_twist']['median'])}); a low-order point is a set lookup "
        f"({D.fmt_s(pc['refuse_low_order']['median'])}).",
    ]
    rec = r["reconstruction"]
    if rec:
        shares = ", ".join(f"{_pct(c['checks_share_of_unmasking'])} at {c['dropout']:.0%}" for c in rec)
        out.append(
            f"- **Reconstruction checks: {shares} of the server's unmasking stage** (n = {rec[0]['n']}, "
            f"d = {rec[0]['dim']:,}). They are one SHA-256 per survivor's seed "
            f"({D.fmt_s(pc['commitment_hash_and_compare']['median'])}) and one base-point multiplication per "
            f"dropped client's key ({D.fmt_s(pc['public_from_private_and_compare']['median'])}): "
            "O(|U_3| + |D|) work, the key derivations dominating. Shamir reconstruction, O(t (|U_3| + |D|)) "
            "field operations in one matrix product, took "
            + ", ".join(f"{D.fmt_s(c['shamir_cpu_s'])} at {c['dropout']:.0%} (the checks: "
                        f"{_x(c['checks_over_shamir'])} that)" for c in rec)
            + "; the mask recomputation, |D| |U_3| X25519 exchanges and d-word keystreams, "
            + ", ".join(f"{D.fmt_s(c['mask_recomputation_cpu_s'])}" for c in rec)
            + ". The checks are what turns a wrong share into a retry or an abort instead of a wrong sum; "
            "their cost grows with the dropped clients as the mask recomputation does, but one base-point "
            "multiplication per dropped client against |U_3| exchanges and keystreams.")
    for c in r["corrupt_rounds"]:
        s, q = c["median_server_core_cpu_s"], c["median_ratios"]
        out.append(
            f"- **n = {c['n']}: a twist key costs the others {_x(q['twist_over_honest_server'])} an honest "
            f"round on the server ({D.fmt_s(s['twist_key'])} against {D.fmt_s(s['honest'])}; their own "
            f"CPU {_x(q['twist_over_honest_client'])}).** The key is refused with one check and the round goes "
            "on over n − 1 clients (one client fewer: about (n − 1)/n of the work, within the run's noise). "
            "**Inconsistent shares cost "
            f"{_x(q['abort_plus_rerun_over_honest_server'])} an honest round on the server "
            f"({D.fmt_s(s['aborted'])} to the abort + {D.fmt_s(s['rerun'])} for the rerun) and "
            f"{_x(q['abort_plus_rerun_over_honest_client'])} for each honest client.** A client that dealt bad "
            "shares is already inside every survivor's masks when its secret fails, so the server cannot leave "
            "it out: the round is lost (the honest clients do all their work for nothing), the next one runs "
            "without it. Before aborting, the server tries the secret with each of the first t holders left out "
            "in turn (one bad holder could be routed around): all t sets at once, from one Lagrange "
            "computation over t + 1 holders (`shamir.reconstruct_without_each`, since a512b02; before it, t "
            "Lagrange computations); the aborted round's unmasking stage measured "
            f"{_x(q['abort_unmasking_over_honest_unmasking'])} an honest one's.")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run (seconds): n = 20, 40, 60; d = 2000")
    ap.add_argument("--n", type=int, nargs="+", help="clients of the corrupt-client rounds (default 100 500)")
    ap.add_argument("--large-n", type=int, nargs="*", help="more honest rounds for the key check only (default 1000)")
    ap.add_argument("--large-reps", type=int, default=1, help="honest rounds per --large-n (default 1)")
    ap.add_argument("--dim", type=int, help="entries per update in parts 1 and 3 (default 10000)")
    ap.add_argument("--reps", type=int, help="interleaved repetitions of the corrupt-client rounds (default 3)")
    ap.add_argument("--recon-n", type=int, help="clients of the reconstruction cells (default 500; 0: skip)")
    ap.add_argument("--recon-dim", type=int, help="entries per update there (default 100000)")
    ap.add_argument("--recon-reps", type=int, default=5, help="repetitions of the bare checks and Shamir")
    ap.add_argument("--dropout", type=float, nargs="+", default=[0.1, 0.3], help="dropout rates of part 2")
    ap.add_argument("--stage-reps", type=int, help="advertise stages with and without the check, per n (default 6)")
    ap.add_argument("--key-reps", type=int, help="repetitions of the bare key-check timings (default 15)")
    ap.add_argument("--key-pool", type=int, help="keys per bare timing (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    D.add_output_args(ap, memory_gib=1.0)
    args = ap.parse_args()
    if D.render_only(args, to_markdown):
        return
    q = args.quick
    args.n = args.n or ([20, 40] if q else [100, 500])
    args.large_n = args.large_n if args.large_n is not None else ([60] if q else [1000])
    args.dim = args.dim or (2_000 if q else 10_000)
    args.reps = args.reps or (2 if q else 3)
    args.recon_n = args.recon_n if args.recon_n is not None else (40 if q else 500)
    args.recon_dim = args.recon_dim or (2_000 if q else 100_000)
    args.key_reps = args.key_reps or (5 if q else 15)
    args.stage_reps = args.stage_reps or (2 if q else 6)
    args.key_pool = args.key_pool or (50 if q else 200)
    args.tolerance = max(args.dropout)
    D.run_and_write(args, run, to_markdown, "corrupt_clients", memory_gib=1.0)


if __name__ == "__main__":
    main()
