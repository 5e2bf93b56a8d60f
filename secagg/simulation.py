"""In-process simulator: N clients and a server in one process, a dropout
schedule, every message through the canonical wire format.

This is the embedded default of the library and the CLI's ``simulate``: it
returns the aggregate, the ids of the included clients, bytes sent and received
per client, and timings per stage, and writes one value-free audit record per
round to the ``secagg.audit`` logger.

Dropout schedules name, per client, the stage at which it vanishes (it never
sends that stage's message): for the masking protocols ``advertise_keys``,
``share_keys``, ``masked_input``, ``consistency_check`` (malicious-server mode)
or ``unmasking``; for Paillier ``submit``. A float is a rate: that fraction of
clients (rounded) is drawn with the seed and spread evenly over the stages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from .aggregation import Rule, finalize, get_rule
from .drivers.client import Contribution
from .drivers.observer import TO_CLIENT, Recorder
from .drivers.server import audit_logger
from .encoding import wire
from .encoding.fixed_point import FixedPoint, check_finite
from .errors import AbortReason, ParameterError, ProtocolAborted
from .primitives.randomness import DeterministicRandom, RandomSource, SystemRandom
from .protocols.outcome import Abort
from .protocols.stages import MASKING_STAGES as _MASKING_STAGES
from .protocols.stages import Stage
from .result import AggregationResult
from .transports.inprocess import LocalRound, dropout_schedule

if TYPE_CHECKING:
    from .dp.plan import DPConfig

__all__ = ["simulate", "simulate_paillier", "paillier_min_clients", "PROTOCOLS", "DECRYPTIONS", "MASKING_STAGES",
           "audit_logger"]

PROTOCOLS = ("plaintext", "secagg", "secagg+", "paillier")
#: How a Paillier aggregate is decrypted: by a committee of the clients
#: (threshold decryption, the default) or by one key holder.
DECRYPTIONS = ("committee", "key_holder")
#: The stages a Paillier committee member answers (and so can vanish at).
PAILLIER_COMMITTEE_STAGES = ("submit", "decrypt", "decrypt_recovery")
MASKING_STAGES = tuple(s.value for s in _MASKING_STAGES)
_ALIASES = {"advertise": "advertise_keys", "keys": "advertise_keys", "shares": "share_keys",
            "input": "masked_input", "masked": "masked_input", "consistency": "consistency_check",
            "unmask": "unmasking"}



def _as_vectors(updates: Sequence[Any]) -> list[np.ndarray]:
    if isinstance(updates, np.ndarray) and updates.ndim == 2:
        updates = list(updates)
    as_numpy: Callable[[Any], np.ndarray] | None = None
    if "torch" in sys.modules:  # a tensor or module cannot exist unless torch is loaded
        from .torch import as_numpy as torch_as_numpy
        as_numpy = torch_as_numpy
    out = []
    for i, u in enumerate(updates):
        try:
            if as_numpy is not None and not isinstance(u, np.ndarray):
                v = as_numpy(u)
            else:
                v = np.asarray(u, dtype=np.float64)
            v = np.asarray(v, dtype=np.float64).ravel()
        except ParameterError as exc:
            raise ParameterError(f"update of client {i + 1}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"update of client {i + 1} is not numeric: {exc}") from None
        out.append(v)
    if len(out) < 2:
        raise ParameterError("need updates from at least 2 clients")
    d = out[0].size
    for i, v in enumerate(out):
        if v.size != d:
            raise ParameterError(f"update of client {i + 1} has {v.size} entries; client 1 has {d}")
        if v.size == 0:
            raise ParameterError("updates are empty")
        check_finite(v, f"update of client {i + 1}")
    return out


def _weights(rule: Rule, weights: Sequence[float] | None, n: int) -> list[float]:
    if not rule.uses_weights:
        if weights is not None:
            raise ParameterError(f"rule {rule.name!r} takes no weights; use 'weighted', 'fedavg' or 'hybrid'")
        return [1.0] * n
    if weights is None:
        raise ParameterError(f"rule {rule.name!r} needs one weight per client")
    ws = [float(w) for w in weights]
    if len(ws) != n:
        raise ParameterError(f"{len(ws)} weights for {n} clients")
    for i, w in enumerate(ws):
        if not math.isfinite(w) or w <= 0:
            raise ParameterError(f"weight of client {i + 1} must be a finite number > 0, got {weights[i]!r}")
    return ws


def _default_encoding(ws: list[float]) -> FixedPoint:
    # The round's max_weight is public; a power of two above the largest weight
    # reveals only its order of magnitude.
    top = max(ws)
    return FixedPoint(clip=1.0, frac_bits=16, max_weight=float(2.0 ** math.ceil(math.log2(top))) if top > 1 else 1.0)


def _schedule(dropouts: float | Mapping[int, str] | None, n: int, stages: Sequence[str],
              rng: RandomSource) -> dict[int, str]:
    return dropout_schedule(dropouts, range(1, n + 1), stages, rng, aliases=_ALIASES)


def simulate(updates: Sequence[Any], weights: Sequence[float] | None = None, *, protocol: str = "secagg+",
             rule: "str | Rule" = "mean", dropouts: float | Mapping[int, str] | None = None,
             seed: int | None = None, encoding: FixedPoint | None = None, threshold: int | None = None,
             degree: int | None = None, dropout_tolerance: float | None = None, corrupt_fraction: float = 0.0,
             malicious_server: bool = False, key_bits: int = 2048, workers: int = 1,
             short_exponent: bool = False, progress: bool = False,
             trace: list[tuple[str, str, int, bytes]] | None = None,
             randomizer: str | None = None, unsafe_allow_single_client: bool = False,
             decryption: str = "committee", committee: Sequence[int] | None = None,
             committee_threshold: int | None = None, dp: "DPConfig | None" = None,
             key_primes: int = 2) -> AggregationResult:
    """Run one secure-aggregation round in-process and return its result.

    ``updates[i]`` is the update of client ``i + 1`` (numpy arrays, lists or
    torch tensors). ``weights`` (one per client, > 0) are required by the
    ``weighted``, ``fedavg`` and ``hybrid`` rules. ``protocol`` is
    ``"secagg"`` (complete graph), ``"secagg+"`` (sparse graph, derived from
    ``n``, ``dropout_tolerance`` and ``corrupt_fraction``), ``"paillier"`` or
    ``"plaintext"`` (no protection; the baseline). ``seed`` makes the whole run
    reproducible (keys, masks, rounding); ``None`` uses the system CSPRNG.

    Raises :class:`ParameterError` for bad input and :class:`ProtocolAborted`
    when the round aborts (e.g. fewer than ``t`` survivors): never a partial
    aggregate. ``trace`` (masking protocols), if given, receives every message
    as ``(stage, "to_server" | "to_client", client_id, wire bytes)``: the
    transcripts of protocols/masking/vectors are made this way. Paillier only:
    ``key_bits``, ``workers`` (processes for obfuscators and the server's
    combine, threads for decryption) and ``randomizer`` (``"standard"``,
    ``"djn"``, ``"djn-short"``; protocols/paillier/SPEC.md §6). For Paillier
    ``threshold`` is the round's ``min_clients`` (default: a majority of the
    clients); 1 releases one client's exact update and is refused unless
    ``unsafe_allow_single_client=True``. ``decryption`` is ``"committee"``
    (the default: no party holds the key; ``committee`` clients, all by
    default, decrypt together, any ``committee_threshold`` of them, a
    majority by default; SPEC §8) or ``"key_holder"`` (one key holder).
    ``key_primes`` (2 or 3; ``decryption="key_holder"`` only) is the number
    of primes of the key holder's modulus: 3 roughly halves its decryption
    (SPEC §3.4, "Three-prime modulus"); the committee's key is always two
    safe primes, so 3 with the committee is a :class:`ParameterError`.

    ``dp`` (a :class:`secagg.dp.DPConfig`) runs the round with distributed
    differential privacy (protocols/dp/SPEC.md §9), on ``secagg``,
    ``secagg+`` and ``paillier``: every client clips, rotates, rounds and
    noises its update; the noise is calibrated for the round's survivor
    floor (the masking threshold, Paillier's ``min_clients``), so dropouts
    down to it keep the guarantee. The rule must be unweighted (``"mean"``
    or ``"sum"``) and ``weights`` ``None`` or all 1; ``encoding`` does not
    apply. The result's ``dp`` is the round's :class:`secagg.dp.DPRoundReport`
    (survivors, epsilon at the config's delta, adaptive clipping's next
    clip); compose rounds with :class:`secagg.dp.DPAccountant`. The
    round's rotation seed is fresh (from ``seed`` when given)."""
    if protocol not in PROTOCOLS:
        raise ParameterError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if protocol != "paillier" and (randomizer is not None or short_exponent):
        raise ParameterError("randomizer and short_exponent apply to protocol='paillier' only")
    if protocol != "paillier" and unsafe_allow_single_client:
        raise ParameterError("unsafe_allow_single_client applies to protocol='paillier' only")
    if protocol != "paillier" and (committee is not None or committee_threshold is not None):
        raise ParameterError("committee and committee_threshold apply to protocol='paillier' only")
    if decryption not in DECRYPTIONS:
        raise ParameterError(f"decryption must be one of {DECRYPTIONS}, got {decryption!r}")
    _check_key_primes(key_primes, protocol, decryption)
    r = get_rule(rule)
    xs = _as_vectors(updates)
    n = len(xs)
    if dp is not None:
        _check_dp(dp, r, weights, n, protocol, encoding)
        weights = None
    ws = _weights(r, weights, n)
    if encoding is not None:
        for i, w in enumerate(ws):
            if w > encoding.max_weight:
                raise ParameterError(
                    f"weight of client {i + 1} ({w}) exceeds the round's max_weight {encoding.max_weight}")
    rng: RandomSource = DeterministicRandom(seed) if seed is not None else SystemRandom()
    if protocol == "paillier":
        # a committee of every client: a client may vanish before submitting or before decrypting
        answered = ("submit", "decrypt") if decryption == "committee" and committee is None else ("submit",)
        schedule = _schedule(dropouts, n, answered, _fork(rng, "dropouts"))
        # encoding=None lets Paillier size its fixed point for its packed slots
        return simulate_paillier(xs, ws, rule=r, encoding=encoding, dropouts=schedule,
                                 rng=_fork(rng, "paillier"), key_bits=key_bits, workers=workers,
                                 short_exponent=short_exponent, progress=progress, min_clients=threshold,
                                 randomizer=randomizer, unsafe_allow_single_client=unsafe_allow_single_client,
                                 decryption=decryption, committee=committee,
                                 committee_threshold=committee_threshold, signed=malicious_server, dp=dp,
                                 key_primes=key_primes)
    enc = encoding or _default_encoding(ws)
    stages = [s for s in MASKING_STAGES if malicious_server or s != "consistency_check"]
    schedule = _schedule(dropouts, n, stages, _fork(rng, "dropouts"))
    if protocol == "plaintext":
        return _plaintext(xs, ws, r, schedule)
    return _masking(xs, ws, r, enc, schedule, rng, protocol=protocol, threshold=threshold, degree=degree,
                    dropout_tolerance=dropout_tolerance, corrupt_fraction=corrupt_fraction,
                    malicious_server=malicious_server, progress=progress, trace=trace, dp=dp)


def _check_key_primes(key_primes: Any, protocol: str, decryption: str) -> None:
    """``key_primes`` is 2 or 3, and 3 only for a Paillier key holder."""
    if isinstance(key_primes, bool) or not isinstance(key_primes, int) or key_primes not in (2, 3):
        raise ParameterError(f"key_primes must be 2 or 3, got {key_primes!r}")
    if key_primes == 3 and protocol != "paillier":
        raise ParameterError("key_primes applies to protocol='paillier' only")
    if key_primes == 3 and decryption != "key_holder":
        raise ParameterError("key_primes=3 applies to decryption='key_holder' only: the committee's key is the "
                             "product of two safe primes, which its threshold sharing needs")


def _check_dp(dp: Any, rule: Rule, weights: Sequence[float] | None, n: int, protocol: str,
              encoding: FixedPoint | None) -> None:
    from .dp.plan import DPConfig

    if not isinstance(dp, DPConfig):
        raise ParameterError(f"dp must be a secagg.dp.DPConfig, got {type(dp).__name__}")
    if protocol == "plaintext":
        raise ParameterError("dp needs a secure-aggregation protocol (secagg, secagg+ or paillier)")
    if rule.uses_weights:
        raise ParameterError(f"a DP round is unweighted: use rule 'mean' or 'sum', not {rule.name!r}")
    if weights is not None:
        ws = list(weights)
        if len(ws) != n or any(float(w) != 1.0 for w in ws):
            raise ParameterError("a DP round is unweighted: weights must be None or all 1")
    if encoding is not None:
        raise ParameterError("a DP round encodes with its DP parameters: give no fixed-point encoding")


def _dp_round(dp: Any, dim: int, n_min: int, n: int, rng: RandomSource) -> Any:
    """One round's DP parameters: noise for ``n_min`` survivors, wrap check for
    ``n`` clients, a fresh public rotation seed."""
    return dp.round_params(dim, n_min=n_min, n_max=n, rotation_seed=_fork(rng, "dp/rotation").bytes(32))


def _fork(rng: RandomSource, label: str) -> RandomSource:
    return rng.fork(label) if isinstance(rng, DeterministicRandom) else rng


def _audit(record: Mapping[str, Any]) -> None:
    audit_logger.info(json.dumps(record, sort_keys=True, default=str))


def _plaintext(xs: list[np.ndarray], ws: list[float], rule: Rule, schedule: Mapping[int, str]) -> AggregationResult:
    t0 = time.perf_counter()
    included = tuple(i for i in range(1, len(xs) + 1) if i not in schedule)
    if not included:
        raise ProtocolAborted(AbortReason.TOO_FEW_SURVIVORS, "no client sent its update")
    sw = np.sum([ws[i - 1] * xs[i - 1] for i in included], axis=0)
    sum_w = float(sum(ws[i - 1] for i in included))
    sent = {i: (xs[i - 1].nbytes + 8 if i in included else 0) for i in range(1, len(xs) + 1)}
    return AggregationResult(protocol="plaintext", rule=rule.name, aggregate=finalize(rule, sw, sum_w),
                             sum_weighted=sw, sum_weights=sum_w, included=included, dropped=dict(schedule),
                             session_id="", bytes_sent=sent, bytes_received={i: 0 for i in sent},
                             timings={"aggregate": time.perf_counter() - t0}, params={"n": len(xs)})


def _trace_sink(recorder: Recorder, trace: list[tuple[str, str, int, bytes]] | None) -> None:
    """The recorded transcript in the vectors' form: the round's parameters
    once (as sent to every client), then every protocol message."""
    if trace is None or recorder.transcript is None:
        return
    params_sent = False
    for stage, direction, party, data in recorder.transcript:
        if stage == Stage.ADVERTISE_KEYS.value and direction == TO_CLIENT:
            if not params_sent:
                trace.append(("params", TO_CLIENT, 0, data))
                params_sent = True
            continue
        trace.append((stage, direction, party, data))


def _masking(xs: list[np.ndarray], ws: list[float], rule: Rule, enc: FixedPoint, schedule: Mapping[int, str],
             rng: RandomSource, *, protocol: str, threshold: int | None, degree: int | None,
             dropout_tolerance: float | None, corrupt_fraction: float, malicious_server: bool,
             progress: bool, trace: list[tuple[str, str, int, bytes]] | None,
             dp: Any = None) -> AggregationResult:
    from .drivers import ClientDriver, MaskingClientRole, Recorder, ServerDriver
    from .primitives.signatures import generate_signing_keypair
    from .protocols.masking import MaskingParams, MaskingServer

    n = len(xs)
    ids = list(range(1, n + 1))
    if dropout_tolerance is None:
        planned = len(schedule) / n
        dropout_tolerance = max(0.1, planned) if protocol == "secagg+" else min(planned, 0.49)
    signing = {i: generate_signing_keypair(_fork(rng, f"signing/{i}")) for i in ids} if malicious_server else {}
    dp_round = None
    if dp is not None:  # the noise is calibrated for the round's threshold: first derive it
        shape = MaskingParams.create(ids, xs[0].size, protocol=protocol, dropout_tolerance=dropout_tolerance,
                                     corrupt_fraction=corrupt_fraction, threshold=threshold, degree=degree,
                                     rng=_fork(rng, "dp/shape"))
        threshold, degree = shape.threshold, shape.degree
        dp_round = _dp_round(dp, xs[0].size, threshold, n, rng)
    params = MaskingParams.create(ids, xs[0].size, protocol=protocol, dropout_tolerance=dropout_tolerance,
                                  corrupt_fraction=corrupt_fraction, threshold=threshold, degree=degree,
                                  encoding=enc if dp_round is None else None, malicious_server=malicious_server,
                                  signing_keys={i: k.public for i, k in signing.items()}, rng=_fork(rng, "params"),
                                  dp=dp_round)
    recorder = Recorder(transcript=trace is not None)
    server = ServerDriver(MaskingServer(params, _fork(rng, "server")), rule, observer=recorder)
    # the simulator is the PKI: it made the signing keys
    trusted = {v: k.public for v, k in signing.items()} if malicious_server else None
    roles = {i: MaskingClientRole(i, rng=_fork(rng, f"client/{i}"),
                                  signing_key=signing[i].private if malicious_server else None,
                                  trusted_signing_keys=trusted) for i in ids}
    timer = recorder.timer()
    clients = {i: ClientDriver(role, observer=timer) for i, role in roles.items()}
    contributions = {i: Contribution(xs[i - 1], ws[i - 1]) for i in ids}
    network = LocalRound(server, clients, contributions, dropouts=schedule)
    bar = _progress(progress, n)
    network.start()
    while network.step():
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    _trace_sink(recorder, trace)
    clipped = sum(role.clipped for role in roles.values())
    timings = dict(recorder.timings)
    sent = {i: recorder.bytes_sent.get(i, 0) for i in ids}
    recv = {i: recorder.bytes_received.get(i, 0) for i in ids}
    record = server.audit_record()
    record["bytes_sent_per_client_mean"] = float(np.mean(list(sent.values())))
    record["timings_s"] = {k: round(v, 6) for k, v in timings.items()}
    record["clients_aborted"] = dict(sorted((str(i), why) for i, why in network.refusals.items()))
    record["entries_clipped"] = clipped
    _audit(record)
    timings["server_total"] = sum(v for k, v in timings.items() if k.endswith(".server"))
    timings["clients_total"] = sum(v for k, v in timings.items() if k.endswith(".clients"))
    timings["client_mean"] = timings["clients_total"] / n
    summary = params.summary()
    summary["entries_clipped"] = clipped
    return server.result(bytes_sent=sent, bytes_received=recv, timings=timings, params=summary)


def paillier_min_clients(n_clients: int, threshold: int | None = None,
                         unsafe_allow_single_client: bool = False) -> int:
    """The ``min_clients`` a Paillier round of ``n_clients`` runs with:
    ``threshold`` if given (1 is a :class:`ParameterError` unless
    ``unsafe_allow_single_client=True``), else a majority of the clients, at
    least 2 (protocols/paillier/SPEC.md §2)."""
    from .protocols.paillier.params import default_min_clients, min_clients_floor

    if threshold is None:
        return default_min_clients(n_clients, unsafe_allow_single_client)
    return min_clients_floor(threshold, unsafe_allow_single_client)


def simulate_paillier(updates: Sequence[np.ndarray], weights: Sequence[float] | None, *,
                      rule: "str | Rule", encoding: FixedPoint | None, dropouts: Mapping[int, str],
                      rng: RandomSource, key_bits: int = 2048, workers: int = 1,
                      short_exponent: bool = False, progress: bool = False,
                      min_clients: int | None = None, randomizer: str | None = None,
                      unsafe_allow_single_client: bool = False, decryption: str = "committee",
                      committee: Sequence[int] | None = None, committee_threshold: int | None = None,
                      spares: int = 0, signed: bool = False, dp: Any = None,
                      key_primes: int = 2) -> AggregationResult:
    """Run one Paillier round in-process: server and ``n`` clients on the
    round drivers, every message through the wire format, decrypted by a
    committee of the clients (``decryption="committee"``, the default: a
    dealer shares a fresh key among ``committee`` (default: every client),
    any ``committee_threshold`` of them (default: a majority) decrypt, and
    the dealer keeps nothing) or by a key holder (party 0,
    ``decryption="key_holder"``). ``signed`` (``secagg.simulate``'s
    ``malicious_server=True``): every client signs its submission with a key
    the server and the decrypting parties pin; committee members then check
    that what they decrypt is the product of the named clients' signed
    submissions of the session (SPEC §7, §8). ``key_primes`` (2 or 3) is
    the number of primes of the key holder's modulus (``decryption="key_holder"``
    only; SPEC §3.4, "Three-prime modulus").

    ``updates[i]`` belongs to client ``i + 1``; ``weights`` are used by the
    weighted rules (``None``: all 1) and ignored by ``sum``/``mean``.
    ``dropouts`` maps a client id to ``"submit"`` (it never submits) or, for
    a committee member, ``"decrypt"`` / ``"decrypt_recovery"`` (it submits,
    then vanishes before answering that decryption request).
    ``workers`` > 1 precomputes obfuscators in that many processes, shards the
    server's combine over that many processes and decrypts with that many
    threads. ``randomizer`` is ``"standard"`` (``r^n``, the default),
    ``"djn"`` (DJN base with a full-length exponent) or ``"djn-short"`` (DJN
    short exponent; also ``short_exponent=True``); protocols/paillier/SPEC.md
    §6 states what each rests on. ``dp`` (a :class:`secagg.dp.DPConfig`): a
    distributed-DP round, its noise calibrated for ``min_clients`` survivors
    (``sum``/``mean`` rules, weights all 1; see :func:`simulate`). ``min_clients`` (default: a majority of the
    ``n`` clients, at least 2) is the round's; the key holder and the clients
    hold a minimum of 2 of their own, 1 only with
    ``unsafe_allow_single_client=True`` (a round that may decrypt one
    client's exact update). Raises :class:`ProtocolAborted` if the round
    aborts (e.g. fewer than ``min_clients`` submitted, or the key holder
    refused to decrypt)."""
    from .drivers import ClientDriver, KeyHolderRole, PaillierClientRole, Recorder, ServerDriver
    from .drivers.committee import CommitteeClientRole
    from .drivers.concurrency import process_executor, sharded_accumulator
    from .primitives import paillier as pl
    from .protocols.paillier import (KEY_HOLDER, PaillierKeyHolder, PaillierParams, PaillierServer,
                                     PublicKeyMessage, default_encoding, randomizer_for)
    from .protocols.paillier.params import MIN_CLIENTS_FLOOR
    from .protocols.paillier.threshold import CommitteeKey, deal_committee
    from .primitives.signatures import generate_signing_keypair

    r = get_rule(rule)
    n = len(updates)
    if n < 1:
        raise ParameterError("need at least one client update")
    xs = [np.asarray(u, dtype=np.float64).ravel() for u in updates]
    d = xs[0].size
    if d < 1 or any(x.size != d for x in xs):
        raise ParameterError("all updates must be non-empty and of the same length")
    for i, x in enumerate(xs):
        check_finite(x, f"update of client {i + 1}")
    if r.uses_weights and weights is not None:
        if len(weights) != n:
            raise ParameterError(f"{len(weights)} weights for {n} updates")
        ws = [float(w) for w in weights]
    else:
        ws = [1.0] * n
    if decryption not in DECRYPTIONS:
        raise ParameterError(f"decryption must be one of {DECRYPTIONS}, got {decryption!r}")
    _check_key_primes(key_primes, "paillier", decryption)
    by_committee = decryption == "committee"
    members = tuple(sorted(set(int(c) for c in committee))) if committee is not None else tuple(range(1, n + 1))
    if by_committee and (len(members) < 2 or members[0] < 1 or members[-1] > n):
        raise ParameterError(f"the decryption committee must be at least two of the clients 1..{n}, got "
                             f"{list(members)}")
    if not by_committee and (committee is not None or committee_threshold is not None):
        raise ParameterError("committee and committee_threshold apply to decryption='committee' only")
    stages = PAILLIER_COMMITTEE_STAGES if by_committee else ("submit",)
    schedule = dropout_schedule(dropouts, range(1, n + 1), stages, rng)
    if by_committee and any(st != "submit" and c not in members for c, st in schedule.items()):
        raise ParameterError("only committee members answer the decryption stages")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError("workers must be an integer >= 1")
    if dp is not None:
        _check_dp(dp, r, weights if r.uses_weights else None, n, "paillier", encoding)
        ws = [1.0] * n
    enc = encoding if encoding is not None else default_encoding(n, key_bits, max(ws))
    for w in ws:
        enc.check_weight(w)
    randomizer_spec = randomizer_for(randomizer, key_bits, short_exponent)

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    floor = 1 if unsafe_allow_single_client else MIN_CLIENTS_FLOOR  # each party's own minimum
    min_clients = paillier_min_clients(n, min_clients, unsafe_allow_single_client)  # before the key is made
    t = time.perf_counter()
    key_rng = None if isinstance(rng, SystemRandom) else _fork(rng, "committee" if by_committee else "keyholder")
    committee_key: CommitteeKey | None = None
    keyholder: PaillierKeyHolder | None = None
    signing = {c: generate_signing_keypair(_fork(rng, f"signing/{c}")) for c in range(1, n + 1)} if signed else {}
    client_keys = {c: k.public for c, k in signing.items()} if signed else None
    if by_committee:
        dealt, shares = deal_committee(members, committee_threshold, key_bits, rng=key_rng)  # the dealer forgets
        # the committee's key as published: the server and every client pin it
        committee_bytes = wire.encode(dealt)
        committee_key = wire.decode(committee_bytes, CommitteeKey)
        public_key = PublicKeyMessage.from_key(committee_key.public_key)
        public_key_bytes = committee_bytes
    else:
        keyholder = PaillierKeyHolder(key_bits, key_rng, threads=workers, min_clients=floor,
                                      unsafe_allow_single_client=unsafe_allow_single_client, client_keys=client_keys,
                                      key_primes=key_primes)
        # the key as published: the server and every client pin the key holder's own
        public_key_bytes = wire.encode(keyholder.public_key_message())
        public_key = wire.decode(public_key_bytes, PublicKeyMessage)
    timings["keygen"] = time.perf_counter() - t
    t = time.perf_counter()
    # a DP round: the noise is calibrated for min_clients survivors, the fewest the round decrypts
    dp_round = _dp_round(dp, d, min_clients, n, rng) if dp is not None else None
    params = PaillierParams.create(public_key, range(1, n + 1), d, encoding=enc if dp_round is None else None,
                                   rule=r, min_clients=min_clients, rng=_fork(rng, "server"),
                                   unsafe_allow_single_client=unsafe_allow_single_client, dp=dp_round)
    recorder = Recorder()
    server = ServerDriver(PaillierServer(params, accumulator=sharded_accumulator(workers), committee=committee_key,
                                         spares=spares, client_keys=client_keys), r, observer=recorder,
                          protocol="paillier")
    timings["setup"] = time.perf_counter() - t
    options: dict[str, Any] = dict(randomizer=randomizer_spec, min_key_bits=min(key_bits, pl.DEFAULT_KEY_BITS),
                                   min_clients=floor, unsafe_allow_single_client=unsafe_allow_single_client)
    roles: dict[int, Any]
    if committee_key is not None:
        roles = {cid: CommitteeClientRole(cid, wire.decode(public_key_bytes, CommitteeKey), shares.pop(cid, None),
                                          rng=_fork(rng, f"client-{cid}"), threads=workers, client_keys=client_keys,
                                          signing_key=signing[cid].private if signed else None, **options)
                 for cid in range(1, n + 1)}
    else:
        roles = {cid: PaillierClientRole(cid, wire.decode(public_key_bytes, PublicKeyMessage),
                                         rng=_fork(rng, f"client-{cid}"),
                                         signing_key=signing[cid].private if signed else None, **options)
                 for cid in range(1, n + 1)}
    submitting = [cid for cid in roles if schedule.get(cid) != "submit"]
    executor = process_executor(workers) if workers > 1 else None
    iterator: Any = _progress_over(progress, submitting, "paillier clients (offline)")
    try:
        t = time.perf_counter()
        for cid in iterator:  # the offline phase
            roles[cid].precompute(params.n_ciphertexts, workers=workers, executor=executor)
        offline = time.perf_counter() - t
        timer = recorder.timer()
        clients: dict[int, ClientDriver] = {cid: ClientDriver(role, observer=timer) for cid, role in roles.items()}
        if keyholder is not None:
            clients[KEY_HOLDER] = ClientDriver(KeyHolderRole(keyholder), observer=timer)
        contributions = {cid: Contribution(xs[cid - 1], ws[cid - 1]) for cid in roles}
        network = LocalRound(server, clients, contributions, dropouts=schedule)
        network.run()
    finally:
        server.core.shutdown()  # type: ignore[attr-defined]
        if executor is not None:
            executor.shutdown()
    _audit(server.audit_record())
    n_sub = max(1, len(submitting))
    rt = recorder.timings
    timings.update({"offline_precompute": offline, "offline_precompute_per_client": offline / n_sub,
                    "online_encrypt": rt.get("submit.clients", 0.0),
                    "online_encrypt_per_client": rt.get("submit.clients", 0.0) / n_sub,
                    "combine": rt.get("submit.server", 0.0),
                    "close": rt.get("decrypt.server", 0.0) + rt.get("decrypt_recovery.server", 0.0),
                    "decrypt": rt.get("decrypt.clients", 0.0) + rt.get("decrypt_recovery.clients", 0.0)})
    timings["total"] = time.perf_counter() - t_start
    if isinstance(server.outcome, Abort) and KEY_HOLDER in network.refusals:
        raise ProtocolAborted(server.outcome.reason, f"the key holder refused: {network.refusals[KEY_HOLDER]}")
    if isinstance(server.outcome, Abort) and network.refusals:
        refused = "; ".join(f"client {c}: {why}" for c, why in sorted(network.refusals.items()))
        raise ProtocolAborted(server.outcome.reason, f"{server.outcome.detail} (refusals: {refused})")
    sent = {cid: recorder.bytes_sent.get(cid, 0) for cid in roles}
    received = {cid: recorder.bytes_received.get(cid, 0) + len(public_key_bytes) for cid in roles}
    result = server.result(bytes_sent=sent, bytes_received=received, timings=timings)
    included = result.included
    summary = dict(result.params)
    summary.update({
        "randomizer": randomizer_spec.describe(),
        "workers": workers,
        "bytes_per_parameter": float(np.mean([sent[c] for c in included])) / d,
        "aggregate_ciphertext_bytes": params.submission_bytes,
        "decryption": (f"committee: any {committee_key.threshold} of {len(committee_key.holders)} clients"
                       if committee_key is not None else
                       "key holder" + (" (three-prime key)" if key_primes == 3 else "")),
        "signed_submissions": signed,
        "clipped_entries": int(sum(roles[c].clipped for c in included)),
        "online_exponentiations": int(sum(roles[c].online_exponentiations for c in included)),
        "sum_error_bound": enc.sum_error_bound(len(included)) if dp_round is None else None,
    })
    return dataclasses.replace(result, params=summary, dropped=dict(sorted(schedule.items())))


def _progress(enabled: bool, n: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=None, desc=f"secure aggregation, {n} clients", unit="stage", leave=False)


def _progress_over(enabled: bool, items: list[int], desc: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="client", leave=False)
