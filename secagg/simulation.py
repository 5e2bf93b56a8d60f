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

import json
import logging
import math
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .aggregation import Rule, finalize, get_rule
from .encoding import wire
from .encoding.fixed_point import FixedPoint, check_finite
from .errors import AbortReason, ParameterError, ProtocolAborted, RemoteProtocolError
from .primitives.randomness import DeterministicRandom, RandomSource, SystemRandom
from .result import AggregationResult

__all__ = ["simulate", "PROTOCOLS", "MASKING_STAGES", "audit_logger"]

PROTOCOLS = ("plaintext", "secagg", "secagg+", "paillier")
MASKING_STAGES = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking")
_ALIASES = {"advertise": "advertise_keys", "keys": "advertise_keys", "shares": "share_keys",
            "input": "masked_input", "masked": "masked_input", "consistency": "consistency_check",
            "unmask": "unmasking"}

audit_logger = logging.getLogger("secagg.audit")


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
    if dropouts is None:
        return {}
    if isinstance(dropouts, Mapping):
        out = {}
        for cid, stage in dropouts.items():
            stage = _ALIASES.get(stage, stage)
            if not isinstance(cid, (int, np.integer)) or not 1 <= int(cid) <= n:
                raise ParameterError(f"dropout schedule names client {cid!r}; clients are 1..{n}")
            if stage not in stages:
                raise ParameterError(f"unknown dropout stage {stage!r}; choose from {tuple(stages)}")
            out[int(cid)] = stage
        return out
    rate = float(dropouts)
    if not 0 <= rate < 1:
        raise ParameterError(f"dropout rate must lie in [0, 1), got {dropouts!r}")
    k = int(round(rate * n))
    keys = np.frombuffer(rng.bytes(8 * n), dtype="<u8")
    chosen = sorted(int(i) + 1 for i in np.argsort(keys, kind="stable")[:k])
    return {cid: stages[j % len(stages)] for j, cid in enumerate(chosen)}


def simulate(updates: Sequence[Any], weights: Sequence[float] | None = None, *, protocol: str = "secagg+",
             rule: "str | Rule" = "mean", dropouts: float | Mapping[int, str] | None = None,
             seed: int | None = None, encoding: FixedPoint | None = None, threshold: int | None = None,
             degree: int | None = None, dropout_tolerance: float | None = None, corrupt_fraction: float = 0.0,
             malicious_server: bool = False, key_bits: int = 2048, workers: int = 1,
             short_exponent: bool = False, progress: bool = False,
             trace: list[tuple[str, str, int, bytes]] | None = None,
             randomizer: str | None = None) -> AggregationResult:
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
    ``"djn"``, ``"djn-short"``; protocols/paillier/SPEC.md §6)."""
    if protocol not in PROTOCOLS:
        raise ParameterError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if protocol != "paillier" and (randomizer is not None or short_exponent):
        raise ParameterError("randomizer and short_exponent apply to protocol='paillier' only")
    r = get_rule(rule)
    xs = _as_vectors(updates)
    n = len(xs)
    ws = _weights(r, weights, n)
    if encoding is not None:
        for i, w in enumerate(ws):
            if w > encoding.max_weight:
                raise ParameterError(
                    f"weight of client {i + 1} ({w}) exceeds the round's max_weight {encoding.max_weight}")
    rng: RandomSource = DeterministicRandom(seed) if seed is not None else SystemRandom()
    if protocol == "paillier":
        from .protocols.paillier.simulate import simulate_paillier

        schedule = _schedule(dropouts, n, ("submit",), _fork(rng, "dropouts"))
        # encoding=None lets Paillier size its fixed point for its packed slots
        result = simulate_paillier(xs, ws, rule=r, encoding=encoding, dropouts=schedule,
                                   rng=_fork(rng, "paillier"), key_bits=key_bits, workers=workers,
                                   short_exponent=short_exponent, progress=progress,
                                   min_clients=threshold if threshold is not None else 1, randomizer=randomizer)
        _audit(result.summary())
        return result
    enc = encoding or _default_encoding(ws)
    stages = [s for s in MASKING_STAGES if malicious_server or s != "consistency_check"]
    schedule = _schedule(dropouts, n, stages, _fork(rng, "dropouts"))
    if protocol == "plaintext":
        return _plaintext(xs, ws, r, schedule)
    return _masking(xs, ws, r, enc, schedule, rng, protocol=protocol, threshold=threshold, degree=degree,
                    dropout_tolerance=dropout_tolerance, corrupt_fraction=corrupt_fraction,
                    malicious_server=malicious_server, progress=progress, trace=trace)


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


def _masking(xs: list[np.ndarray], ws: list[float], rule: Rule, enc: FixedPoint, schedule: Mapping[int, str],
             rng: RandomSource, *, protocol: str, threshold: int | None, degree: int | None,
             dropout_tolerance: float | None, corrupt_fraction: float, malicious_server: bool,
             progress: bool, trace: list[tuple[str, str, int, bytes]] | None) -> AggregationResult:
    from .primitives.signatures import generate_signing_keypair
    from .protocols.masking import Abort, MaskingClient, MaskingParams, MaskingServer

    n = len(xs)
    ids = list(range(1, n + 1))
    if dropout_tolerance is None:
        planned = len(schedule) / n
        dropout_tolerance = max(0.1, planned) if protocol == "secagg+" else min(planned, 0.49)
    signing = {i: generate_signing_keypair(_fork(rng, f"signing/{i}")) for i in ids} if malicious_server else {}
    params = MaskingParams.create(ids, xs[0].size, protocol=protocol, dropout_tolerance=dropout_tolerance,
                                  corrupt_fraction=corrupt_fraction, threshold=threshold, degree=degree,
                                  encoding=enc, malicious_server=malicious_server,
                                  signing_keys={i: k.public for i, k in signing.items()}, rng=_fork(rng, "params"))
    timings: dict[str, float] = {}
    sent = {i: 0 for i in ids}
    recv = {i: 0 for i in ids}
    params_wire = wire.encode(params)
    params_bytes = len(params_wire)
    if trace is not None:
        trace.append(("params", "to_client", 0, params_wire))
    server = MaskingServer(params, _fork(rng, "server"))
    t0 = time.perf_counter()
    clients = {i: MaskingClient(wire.decode(wire.encode(params), MaskingParams) if i == 1 else params, i,
                                _fork(rng, f"client/{i}"),
                                signing_key=signing[i].private if malicious_server else None,
                                # the simulator is the PKI: it made the keys
                                trusted_signing_keys={v: k.public for v, k in signing.items()}
                                if malicious_server else None) for i in ids}
    timings["setup.clients"] = time.perf_counter() - t0
    for i in ids:
        recv[i] += params_bytes
    bar = _progress(progress, n)

    def deliver(sender: int, msg: object) -> None:
        data = wire.encode(msg)
        sent[sender] += len(data)
        if trace is not None:
            trace.append((stage, "to_server", sender, data))
        t = time.perf_counter()
        try:
            server.receive(sender, wire.decode(data))
        except RemoteProtocolError:
            pass  # rejected: that client is treated as dropped (the audit record lists it)
        timings[f"{stage}.server"] = timings.get(f"{stage}.server", 0.0) + time.perf_counter() - t

    stage = "advertise_keys"
    t = time.perf_counter()
    adverts = {i: c.advertise_keys() for i, c in clients.items() if schedule.get(i) != stage}
    timings[f"{stage}.clients"] = time.perf_counter() - t
    for i, advert in adverts.items():
        deliver(i, advert)
    t = time.perf_counter()
    outgoing = server.close_round()
    timings[f"{stage}.server"] += time.perf_counter() - t
    clipped = 0
    while outgoing:
        stage = server.stage.value
        encoded: dict[int, bytes] = {}  # one encoding per distinct message object
        replies: dict[int, object] = {}
        t_clients = 0.0
        for i, msg in outgoing.items():
            data = encoded.get(id(msg))
            if data is None:
                data = encoded[id(msg)] = wire.encode(msg)
            recv[i] += len(data)
            if trace is not None:
                trace.append((stage, "to_client", i, data))
            if schedule.get(i) == stage:
                continue
            incoming: object = wire.decode(data)
            t = time.perf_counter()
            reply = clients[i].handle(incoming, update=xs[i - 1], weight=ws[i - 1])
            t_clients += time.perf_counter() - t
            clipped += getattr(clients[i], "last_clipped", 0) if stage == "masked_input" else 0
            if reply is not None:
                replies[i] = reply
            if bar is not None:
                bar.update(1)
        timings[f"{stage}.clients"] = t_clients
        for i, reply in replies.items():
            deliver(i, reply)
        t = time.perf_counter()
        outgoing = server.close_round()
        timings[f"{stage}.server"] = timings.get(f"{stage}.server", 0.0) + time.perf_counter() - t
    if bar is not None:
        bar.close()
    record = server.audit_record()
    record["bytes_sent_per_client_mean"] = float(np.mean(list(sent.values())))
    record["timings_s"] = {k: round(v, 6) for k, v in timings.items()}
    record["clients_aborted"] = {str(i): c.state.abort_reason for i, c in clients.items() if c.aborted}
    record["entries_clipped"] = clipped
    _audit(record)
    outcome = server.outcome
    if isinstance(outcome, Abort):
        raise ProtocolAborted(outcome.reason, f"at {outcome.stage}: {outcome.detail}")
    assert outcome is not None
    timings["server_total"] = sum(v for k, v in timings.items() if k.endswith(".server"))
    timings["clients_total"] = sum(v for k, v in timings.items() if k.endswith(".clients"))
    timings["client_mean"] = timings["clients_total"] / n
    summary = params.summary()
    summary["entries_clipped"] = clipped
    return AggregationResult(
        protocol=params.protocol_name, rule=rule.name,
        aggregate=finalize(rule, outcome.sum_weighted, outcome.sum_weights),
        sum_weighted=outcome.sum_weighted, sum_weights=outcome.sum_weights, included=outcome.included,
        dropped=dict(outcome.dropped), session_id=params.session_id.hex(), bytes_sent=sent, bytes_received=recv,
        timings=timings, params=summary)


def _progress(enabled: bool, n: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=None, desc=f"secure aggregation, {n} clients", unit="msg", leave=False)
