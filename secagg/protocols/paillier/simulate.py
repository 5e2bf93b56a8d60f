"""In-process driver for one Paillier round: key holder + server + ``n``
clients, every message through :func:`secagg.encoding.wire.encode` /
``decode`` exactly as on a network (protocols/paillier/SPEC.md §4).

``simulate_paillier`` is the hook behind ``secagg.simulate(...,
protocol="paillier")`` and ``secagg simulate --protocol paillier``.
"""

from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import numpy as np

from ...aggregation import Rule, finalize, get_rule
from ...encoding import wire
from ...encoding.fixed_point import FixedPoint
from ...encoding.packing import PackingLayout
from ...errors import AbortReason, ParameterError, ProtocolAborted, RemoteProtocolError
from ...primitives import paillier as pl
from ...primitives.randomness import RandomSource, SystemRandom
from ...result import AggregationResult
from .client import PaillierClient
from .keyholder import PaillierKeyHolder
from .messages import AggregateCiphertext, AggregateSums
from .params import PaillierParams, PublicKeyMessage
from .server import PaillierServer

__all__ = ["simulate_paillier", "default_encoding", "DROPOUT_STAGES", "TARGET_SLOT_BITS"]

#: The only point at which a Paillier client can vanish: before its submission.
DROPOUT_STAGES = ("submit",)
#: Default precision targets slots of at most this many bits (93 values per
#: 2048-bit plaintext, about 5.5 bytes per parameter on the wire).
TARGET_SLOT_BITS = 22


def default_encoding(n_clients: int, key_bits: int = pl.DEFAULT_KEY_BITS, max_weight: float = 1.0,
                     clip: float = 1.0) -> FixedPoint:
    """``clip`` (1.0), ``max_weight`` rounded up to a power of two (the round's
    ``max_weight`` is public: a power of two reveals only the order of magnitude
    of the largest weight), and the largest ``frac_bits`` in [8, 16] whose slot
    fits :data:`TARGET_SLOT_BITS` bits for ``n_clients`` (8 if none does; the
    layout then simply uses wider slots)."""
    if max_weight > 1:
        max_weight = float(2.0 ** math.ceil(math.log2(max_weight)))
    else:
        max_weight = 1.0
    for frac_bits in range(16, 7, -1):
        enc = FixedPoint(clip=clip, frac_bits=frac_bits, max_weight=max_weight)
        if PackingLayout.derive(enc, n_clients, key_bits).slot_bits <= TARGET_SLOT_BITS:
            return enc
    return FixedPoint(clip=clip, frac_bits=8, max_weight=max_weight)


def _fork(rng: RandomSource, label: str) -> RandomSource:
    fork = getattr(rng, "fork", None)
    return fork(label) if callable(fork) else rng


RANDOMIZERS = ("standard", "djn", "djn-short")


def randomizer_for(name: str | None, key_bits: int, short_exponent: bool = False) -> pl.RandomizerSpec:
    """The obfuscator of a named randomizer (:data:`RANDOMIZERS`)."""
    if name is None:
        name = "djn-short" if short_exponent else "standard"
    elif short_exponent and name != "djn-short":
        raise ParameterError(f"short_exponent=True contradicts randomizer={name!r}")
    if name == "standard":
        return pl.STANDARD
    if name == "djn":
        return pl.short_exponent(key_bits, key_bits + 128)  # statistically close to uniform over <h_s>
    if name == "djn-short":
        return pl.short_exponent(key_bits)
    raise ParameterError(f"unknown randomizer {name!r}; choose one of {RANDOMIZERS}")


def simulate_paillier(updates: Sequence[np.ndarray], weights: Sequence[float] | None, *,
                      rule: "str | Rule", encoding: FixedPoint | None, dropouts: Mapping[int, str],
                      rng: RandomSource, key_bits: int = pl.DEFAULT_KEY_BITS, workers: int = 1,
                      short_exponent: bool = False, progress: bool = False,
                      min_clients: int = 1, randomizer: str | None = None) -> AggregationResult:
    """Run one Paillier round in-process.

    ``updates[i]`` belongs to client ``i + 1``; ``weights`` are used by the
    weighted rules (``None``: all 1) and ignored by ``sum``/``mean``.
    ``dropouts`` maps a client id to ``"submit"`` (it never submits).
    ``workers`` > 1 precomputes obfuscators in that many processes, shards the
    server's combine over that many processes and decrypts with that many
    threads. ``randomizer`` is ``"standard"`` (``r^n``, the default),
    ``"djn"`` (DJN base with a full-length exponent) or ``"djn-short"`` (DJN
    short exponent; also ``short_exponent=True``); SPEC.md §6 states what each
    rests on. Raises :class:`ProtocolAborted` if the round aborts (e.g. no
    client submitted, or fewer than ``min_clients`` did: the key holder then
    refuses to decrypt)."""
    r = get_rule(rule)
    n = len(updates)
    if n < 1:
        raise ParameterError("need at least one client update")
    xs = [np.asarray(u, dtype=np.float64).ravel() for u in updates]
    d = xs[0].size
    if d < 1 or any(x.size != d for x in xs):
        raise ParameterError("all updates must be non-empty and of the same length")
    if r.uses_weights and weights is not None:
        if len(weights) != n:
            raise ParameterError(f"{len(weights)} weights for {n} updates")
        ws = [float(w) for w in weights]
    else:
        ws = [1.0] * n
    schedule: dict[int, str] = {}
    for cid, stage in dropouts.items():
        if isinstance(cid, bool) or not (isinstance(cid, (int, np.integer)) and 1 <= cid <= n):
            raise ParameterError(f"dropout client id {cid!r} is not in 1..{n}")
        if stage not in DROPOUT_STAGES:
            raise ParameterError(f"Paillier clients can only drop at {DROPOUT_STAGES}, got {stage!r}")
        schedule[int(cid)] = stage
    if not isinstance(workers, int) or workers < 1:
        raise ParameterError("workers must be an integer >= 1")
    enc = encoding if encoding is not None else default_encoding(n, key_bits, max(ws))
    for w in ws:
        enc.check_weight(w)
    randomizer_spec = randomizer_for(randomizer, key_bits, short_exponent)

    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    # -- key holder: key pair, public key to everyone
    t = time.perf_counter()
    key_rng = None if isinstance(rng, SystemRandom) else _fork(rng, "keyholder")
    keyholder = PaillierKeyHolder(key_bits, key_rng, threads=workers)
    timings["keygen"] = time.perf_counter() - t
    public_key_bytes = wire.encode(keyholder.public_key_message())

    # -- server: round parameters to the clients and the key holder
    t = time.perf_counter()
    server_key = wire.decode(public_key_bytes, PublicKeyMessage)
    params = PaillierParams.create(server_key, range(1, n + 1), d, encoding=enc, rule=r,
                                   min_clients=min_clients, rng=_fork(rng, "server"))
    params_bytes = wire.encode(params)
    keyholder.accept_params(params_bytes)
    server = PaillierServer(wire.decode(params_bytes, PaillierParams), workers=workers)
    timings["setup"] = time.perf_counter() - t

    bytes_sent: dict[int, int] = {}
    bytes_received: dict[int, int] = {}
    clients: dict[int, PaillierClient] = {}
    for cid in range(1, n + 1):
        client = PaillierClient(cid, wire.decode(public_key_bytes, PublicKeyMessage), rng=_fork(rng, f"client-{cid}"),
                                randomizer=randomizer_spec, min_key_bits=min(key_bits, pl.DEFAULT_KEY_BITS))
        client.receive_params(params_bytes)
        bytes_received[cid] = len(public_key_bytes) + len(params_bytes)
        bytes_sent[cid] = 0
        clients[cid] = client
    submitting = [cid for cid in clients if cid not in schedule]

    iterator = submitting
    if progress:
        try:
            from tqdm import tqdm

            iterator = tqdm(submitting, desc="paillier clients", unit="client")
        except ImportError:  # pragma: no cover
            pass

    executor = pl.process_executor(workers) if workers > 1 else None
    offline = online = combine = 0.0
    try:
        for cid in iterator:
            client = clients[cid]
            t = time.perf_counter()
            client.precompute(params.n_ciphertexts, executor=executor)
            offline += time.perf_counter() - t
            t = time.perf_counter()
            data = wire.encode(client.submit(xs[cid - 1], ws[cid - 1]))
            online += time.perf_counter() - t
            bytes_sent[cid] = len(data)
            t = time.perf_counter()
            server.receive(cid, data)
            combine += time.perf_counter() - t
    except BaseException:
        server.shutdown()
        raise
    finally:
        if executor is not None:
            executor.shutdown()
    n_sub = max(1, len(submitting))
    timings.update({"offline_precompute": offline, "offline_precompute_per_client": offline / n_sub,
                    "online_encrypt": online, "online_encrypt_per_client": online / n_sub,
                    "combine": combine})

    # -- close: the aggregate ciphertext to the key holder
    t = time.perf_counter()
    aggregate_msg = server.close()
    timings["close"] = time.perf_counter() - t
    if aggregate_msg is None:
        reason = server.abort_reason or AbortReason.TOO_FEW_SURVIVORS  # None only after an abort, which sets it
        raise ProtocolAborted(reason, f"{len(server.included)} of {n} clients submitted, "
                                                   f"{params.min_clients} needed")
    aggregate_bytes = wire.encode(aggregate_msg)
    t = time.perf_counter()
    try:
        sums_msg = keyholder.decrypt_aggregate(wire.decode(aggregate_bytes, AggregateCiphertext))
    except RemoteProtocolError as exc:
        raise ProtocolAborted(exc.reason, str(exc)) from exc
    timings["decrypt"] = time.perf_counter() - t
    sums = wire.decode(wire.encode(sums_msg), AggregateSums)
    timings["total"] = time.perf_counter() - t_start

    scaled = sums.sums.astype(np.float64) / enc.scale
    sum_weighted, sum_weights = scaled[:-1], float(scaled[-1])
    aggregate = finalize(r, sum_weighted, sum_weights)
    included = tuple(sums.included)
    submission_bytes = [bytes_sent[c] for c in included]
    summary = params.summary()
    summary.update({
        "randomizer": randomizer_spec.describe(),
        "workers": workers,
        "bytes_per_parameter": float(np.mean(submission_bytes)) / d,
        "aggregate_ciphertext_bytes": len(aggregate_bytes),
        "clipped_entries": int(sum(clients[c].clipped for c in included)),
        "online_exponentiations": int(sum(clients[c].online_exponentiations for c in included)),
        "sum_error_bound": enc.sum_error_bound(len(included)),
    })
    return AggregationResult(
        protocol="paillier", rule=r.name, aggregate=aggregate, sum_weighted=sum_weighted,
        sum_weights=sum_weights, included=included,
        dropped=dict(sorted(schedule.items())), session_id=params.session_id.hex(),
        bytes_sent=bytes_sent, bytes_received=bytes_received, timings=timings, params=summary)

