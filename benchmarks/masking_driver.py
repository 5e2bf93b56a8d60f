"""Shared driver of the pairwise-masking benchmarks (bench_bonawitz.py,
bench_secaggplus_10k.py, bench_flower_secaggplus.py, bench_bandwidth.py).

It runs one masking round in one process, every message through the canonical
wire format, and times each party separately:

- **server core**: ``MaskingServer.receive`` of every message plus
  ``close_round`` of every round (message validation, share routing, the
  running sum of masked inputs, Shamir reconstruction, mask removal);
- **server wire**: ``wire.decode`` of what the server receives and
  ``wire.encode`` of what it sends (reported apart, and in "core + wire");
- **client core**: key generation (``MaskingClient(...)``) and the handler of
  every round for one client; **client wire**: that client's decodes and
  encodes.

Each figure is taken twice: process CPU time (``time.process_time``: robust on
a busy shared machine, since time the process spends waiting for a core is not
counted) and wall time (``time.perf_counter``). The process is pinned to one
core (``pin_one_core``) and numpy's thread pools are limited to one thread, so
CPU time is single-core compute.

Updates are generated on the fly, one client at a time, outside every timer;
masked inputs go to the server as soon as they are made, so the driver holds
O(d) of vectors, not O(n d). The expected sum is accumulated alongside (also
O(d)) and the server's result is checked against it: a benchmark of a wrong
answer is worthless.

Not a library module: the benchmark scripts put this directory on sys.path.
"""

from __future__ import annotations

import os

# Single thread for numpy's BLAS/OpenMP pools; must be set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import contextlib
import copy
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.encoding import wire
from secagg.encoding.ring import from_ring
from secagg.primitives.key_agreement import agree_many
from secagg.primitives.prg import prg_ring_add_into, prg_ring_add_many_into
from secagg.protocols.masking import MaskingClient, MaskingParams, MaskingServer, ServerResult
from secagg.protocols.masking import _crypto

RESULTS = Path(__file__).resolve().parent / "results"

cpu_clock = time.process_time
wall_clock = time.perf_counter


# ---------------------------------------------------------------------------- environment
def pin_one_core(cpu: int | None = None) -> int | None:
    """Pin this process (and any thread it starts) to one CPU. Returns it."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    os.sched_setaffinity(0, {chosen})
    return chosen


CPU_FLAGS = ("aes", "vaes", "pclmulqdq", "vpclmulqdq", "avx2", "avx512f", "bmi2", "adx")


def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (what
    OpenSSL's AES, GHASH and X25519 code paths depend on)."""
    cpu = platform.processor() or ""
    flags: list[str] = []
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in CPU_FLAGS if f in have]
                break
    return cpu, flags


def machine_info() -> dict[str, Any]:
    import cryptography

    from secagg.primitives.prg import prg_backend

    cpu, flags = cpu_description()
    return {"python": sys.version.split()[0], "numpy": np.__version__, "cryptography": cryptography.__version__,
            "platform": platform.platform(), "cpu": cpu, "cpu_flags": flags, "prg_backend": prg_backend(),
            "cpu_count": os.cpu_count(),
            "pinned_to_cpu": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            **source_version()}


def source_version() -> dict[str, Any]:
    """The commit the library was run from, and whether its files differed
    from it (uncommitted edits in secagg/ at run time)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "secagg"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"secagg_commit": head, "secagg_uncommitted_files": [ln[3:] for ln in dirty if ln.strip()]}


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


@dataclass
class LoadLog:
    """Load averages seen during a run (sampled at each checkpoint)."""

    samples: list[tuple[str, list[float]]] = field(default_factory=list)

    def mark(self, label: str) -> None:
        self.samples.append((label, load_average()))

    def summary(self) -> dict[str, Any]:
        one = [s[1][0] for s in self.samples if s[1]]
        return {"load_1min_min": min(one, default=None), "load_1min_max": max(one, default=None),
                "samples": [{"at": a, "load": b} for a, b in self.samples]}


# ---------------------------------------------------------------------------- timing
@dataclass
class Clock:
    """Accumulated CPU and wall seconds."""

    cpu: float = 0.0
    wall: float = 0.0

    def add(self, cpu: float, wall: float) -> None:
        self.cpu += cpu
        self.wall += wall

    def __iadd__(self, other: "Clock") -> "Clock":
        self.cpu += other.cpu
        self.wall += other.wall
        return self

    def as_dict(self) -> dict[str, float]:
        return {"cpu_s": self.cpu, "wall_s": self.wall}


def timed(clock: Clock, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    c0, w0 = cpu_clock(), wall_clock()
    try:
        return fn(*args, **kwargs)
    finally:
        clock.add(cpu_clock() - c0, wall_clock() - w0)


def describe(values: Iterable[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {}
    return {"mean": statistics.fmean(v), "median": statistics.median(v), "min": v[0], "max": v[-1],
            "p95": v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))], "count": len(v)}


# ---------------------------------------------------------------------------- inputs
def update_of(client_id: int, dim: int, seed: int = 0) -> np.ndarray:
    """Client ``client_id``'s update: uniform in [-1, 1), reproducible, made on demand."""
    return np.random.default_rng([seed, client_id]).uniform(-1.0, 1.0, dim)


# ---------------------------------------------------------------------------- bare keystream
class BareKeystream:
    """The floor under masking: a raw AES-256 keystream for ``nbytes`` written
    with ``update_into`` into a reused buffer (a fresh key per stream, as every
    mask has its own key), no addition. OpenSSL gives that keystream two ways,
    CTR mode or GCM encryption of zeros (on CPUs with VAES the GCM code is
    about twice as fast); the floor uses whichever is faster on this machine,
    timed here (``mode``), independently of the library's own choice. Also the
    bare X25519 exchange (``cryptography``, public key parsed per peer, private
    key loaded once), the other per-peer cost no pairwise-mask scheme can
    avoid."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.zeros = bytes(nbytes)
        self.out = bytearray(nbytes + 16)
        self.keys = [os.urandom(32) for _ in range(8)]
        self.private = X25519PrivateKey.generate()
        self.publics = [X25519PrivateKey.generate().public_key().public_bytes_raw() for _ in range(64)]
        best = {}
        for _ in range(3):
            for mode in ("ctr", "gcm"):
                self.mode = mode
                t0 = cpu_clock()
                self.run(16)
                best[mode] = min(best.get(mode, float("inf")), cpu_clock() - t0)
        self.mode = min(best, key=lambda m: best[m])
        self.calibration_cpu_s = {m: t / 16 for m, t in best.items()}

    def exchanges(self, count: int) -> None:
        key, pubs = self.private, self.publics
        for i in range(count):
            key.exchange(X25519PublicKey.from_public_bytes(pubs[i & 63]))

    def run(self, streams: int) -> None:
        keys, zeros, out = self.keys, self.zeros, self.out
        if self.mode == "gcm":
            iv12 = bytes(12)
            for i in range(streams):
                Cipher(algorithms.AES(keys[i & 7]), modes.GCM(iv12)).encryptor().update_into(zeros, out)
        else:
            iv = bytes(16)
            for i in range(streams):
                Cipher(algorithms.AES(keys[i & 7]), modes.CTR(iv)).encryptor().update_into(zeros, out)

    def time(self, streams: int) -> Clock:
        clock = Clock()
        timed(clock, self.run, streams)
        return clock


# ---------------------------------------------------------------------------- masking step
def masking_step_inputs(params: MaskingParams, state: Any, senders: np.ndarray) -> tuple[list[int], list[bytes]]:
    """The peers a client masks with in ``masked_input`` (the senders of the
    shares it received) and their mask public keys, from its state."""
    assert state.peers is not None
    index = {v: i for i, v in enumerate(state.peers.client_ids.tolist())}
    peers = senders.tolist()
    return peers, [state.peers.mask_publics[32 * index[v]:32 * (index[v] + 1)] for v in peers]


def masking_step(params: MaskingParams, state: Any, peers: list[int], peer_masks: list[bytes],
                 acc: np.ndarray) -> None:
    """All the work that makes a client's masks, called through the same
    library primitives: the self mask, then per peer an X25519 exchange
    (``agree_many``), the KDF (``pairwise_mask_seed``) and the PRG + add
    (``prg_ring_add_many_into``, as the client).
    (The client may do the exchanges and KDF in ShareKeys and only the PRG +
    add loop in ``masked_input``; :func:`prg_add_only` times that loop alone.)
    ``acc`` plays the quantized vector; :func:`probe_masking` checks on a real
    client that this reproduces its mask exactly."""
    u, sid = state.client_id, params.session_id
    prg_ring_add_into(acc, state.self_mask_seed, _crypto.SELF_MASK_TAG)
    seeds = [_crypto.pairwise_mask_seed(shared, sid, u, v, state.mask_public, peer_mask)
             for v, peer_mask, shared in zip(peers, peer_masks, agree_many(state.mask_private, peer_masks))]
    prg_ring_add_many_into(acc, seeds, _crypto.PAIR_MASK_TAG, [_crypto.mask_sign(u, v) for v in peers])


def mask_seeds(params: MaskingParams, state: Any, peers: list[int], peer_masks: list[bytes]) -> list[tuple[bytes, int]]:
    u, sid = state.client_id, params.session_id
    return [(_crypto.pairwise_mask_seed(shared, sid, u, v, state.mask_public, pm), _crypto.mask_sign(u, v))
            for v, pm, shared in zip(peers, peer_masks, agree_many(state.mask_private, peer_masks))]


def prg_add_only(state: Any, seeds: list[tuple[bytes, int]], acc: np.ndarray) -> None:
    """Only the PRG + add part of the masking step (seeds precomputed)."""
    prg_ring_add_into(acc, state.self_mask_seed, _crypto.SELF_MASK_TAG)
    prg_ring_add_many_into(acc, [seed for seed, _ in seeds], _crypto.PAIR_MASK_TAG, [sign for _, sign in seeds])


def probe_masking(params: MaskingParams, state: Any, senders: np.ndarray, real_masked: np.ndarray,
                  x: np.ndarray, bare: "BareKeystream") -> dict[str, float]:
    """Right after a real ``masked_input``: check that :func:`masking_step`
    reproduces that client's mask, then time (CPU, one timer per part, so the
    timer costs nothing per peer) the whole masking step, the PRG + add part
    alone and the bare keystream for as many streams."""
    peers, peer_masks = masking_step_inputs(params, state, senders)
    dtype = real_masked.dtype
    acc = np.zeros(params.entries, dtype=dtype)
    masking_step(params, state, peers, peer_masks, acc)
    # real - mask = the quantized input: w x 2^f within stochastic rounding (< 1)
    unmasked = from_ring(real_masked - acc, params.ring_bits)
    want = np.clip(x, -params.clip, params.clip) * params.encoding.scale
    if not np.all(np.abs(unmasked[:-1] - want) < 1.0 + 1e-9):
        raise RuntimeError("masking_step does not reproduce the client's mask")
    streams = len(peers) + 1
    full, prg_only, floor, x25519 = Clock(), Clock(), Clock(), Clock()
    seeds = mask_seeds(params, state, peers, peer_masks)
    timed(floor, bare.run, streams)
    timed(x25519, bare.exchanges, len(peers))
    timed(full, masking_step, params, state, peers, peer_masks, acc)
    timed(prg_only, prg_add_only, state, seeds, acc)
    timed(floor, bare.run, streams)
    floor.cpu /= 2
    floor.wall /= 2
    return {"peers": len(peers), "streams": streams, "masking_step_cpu_s": full.cpu, "masking_step_wall_s": full.wall,
            "prg_add_cpu_s": prg_only.cpu, "prg_add_wall_s": prg_only.wall, "bare_keystream_cpu_s": floor.cpu,
            "bare_keystream_wall_s": floor.wall, "bare_x25519_cpu_s": x25519.cpu}


# ---------------------------------------------------------------------------- the round
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmasking")


@dataclass
class RoundReport:
    params: dict[str, Any]
    schedule: dict[int, str]
    server_core: dict[str, Clock]
    server_wire: dict[str, Clock]
    client_core: dict[int, Clock]
    client_wire: dict[int, Clock]
    client_stage_core: dict[str, list[float]]  # stage -> CPU seconds per client that ran it
    bytes_sent: dict[int, int]
    bytes_received: dict[int, int]
    message_bytes: dict[str, list[int]]  # client message type -> sizes
    probes: list[dict[str, float]]
    result: ServerResult
    max_abs_error: float
    error_bound: float
    included: int
    total_wall_s: float

    def server_total(self, wire_too: bool = False) -> Clock:
        c = Clock()
        for clk in self.server_core.values():
            c += clk
        if wire_too:
            for clk in self.server_wire.values():
                c += clk
        return c

    def summary(self) -> dict[str, Any]:
        core = self.server_total()
        both = self.server_total(wire_too=True)
        per_client = [c.cpu for c in self.client_core.values()]
        per_client_wall = [c.wall for c in self.client_core.values()]
        per_client_wire = [c.cpu for c in self.client_wire.values()]
        finished = [cid for cid in self.client_core if cid not in self.schedule]
        return {
            "params": self.params,
            "dropped": len(self.schedule),
            "dropped_at": sorted(set(self.schedule.values())),
            "included": self.included,
            "server_core": {"cpu_s": core.cpu, "wall_s": core.wall,
                            "by_stage": {k: v.as_dict() for k, v in self.server_core.items()}},
            "server_wire": {"cpu_s": both.cpu - core.cpu, "wall_s": both.wall - core.wall,
                            "by_stage": {k: v.as_dict() for k, v in self.server_wire.items()}},
            "server_core_plus_wire": {"cpu_s": both.cpu, "wall_s": both.wall},
            # clients that ran every round (dropped clients stop early)
            "client_core_cpu_s": describe(self.client_core[c].cpu for c in finished),
            "client_core_wall_s": describe(self.client_core[c].wall for c in finished),
            "client_wire_cpu_s": describe(self.client_wire[c].cpu for c in finished),
            "client_core_cpu_s_all_clients": describe(per_client),
            "client_core_wall_s_all_clients": describe(per_client_wall),
            "client_wire_cpu_s_all_clients": describe(per_client_wire),
            "client_stage_core_cpu_s": {k: describe(v) for k, v in self.client_stage_core.items()},
            "bytes_sent_per_client": describe(self.bytes_sent[c] for c in finished),
            "bytes_received_per_client": describe(self.bytes_received[c] for c in finished),
            "client_message_bytes": {k: describe(v) for k, v in self.message_bytes.items()},
            "probes": self.probes,
            "max_abs_error": self.max_abs_error,
            "error_bound": self.error_bound,
            "total_wall_s": self.total_wall_s,
        }


@dataclass
class KeyedRound:
    """A round after ``share_keys`` closed: rounds 0-1 done, shares routed. The
    dropout cells of one table share it (dropout happens later, at
    ``masked_input``): ``run_rest`` copies it, so each cell starts from the
    same point."""

    params: MaskingParams
    server: MaskingServer
    client_states: dict[int, Any]
    forwarded: dict[int, bytes]  # encoded ForwardedShares per client
    server_core: dict[str, Clock]
    server_wire: dict[str, Clock]
    client_core: dict[int, Clock]
    client_wire: dict[int, Clock]
    client_stage_core: dict[str, list[float]]
    bytes_sent: dict[int, int]
    bytes_received: dict[int, int]
    message_bytes: dict[str, list[int]]
    wall_s: float


class _ServerTimer:
    """Times server-side calls, optionally under a cProfile.Profile."""

    def __init__(self, profile: Any = None):
        self.profile = profile

    def __call__(self, clock: Clock, fn: Callable[..., Any], *args: Any) -> Any:
        if self.profile is not None:
            self.profile.enable()
        try:
            return timed(clock, fn, *args)
        finally:
            if self.profile is not None:
                self.profile.disable()


def run_keys(params: MaskingParams, *, drop_early: Mapping[int, str] | None = None,
             progress: Callable[[str], None] | None = None, profile_server: Any = None) -> KeyedRound:
    """Rounds 0 (AdvertiseKeys) and 1 (ShareKeys) for every client, closing
    ``share_keys``. ``drop_early`` may drop clients at those two stages."""
    drop_early = dict(drop_early or {})
    t_start = wall_clock()
    ids = params.client_ids
    server_core = {s: Clock() for s in STAGES}
    server_wire = {s: Clock() for s in STAGES}
    client_core = {i: Clock() for i in ids}
    client_wire = {i: Clock() for i in ids}
    stage_core: dict[str, list[float]] = {s: [] for s in ("keygen",) + STAGES}
    sent = {i: 0 for i in ids}
    received = {i: 0 for i in ids}
    sizes: dict[str, list[int]] = {}
    server_call = _ServerTimer(profile_server)
    server = server_call(server_core["advertise_keys"], MaskingServer, params)

    # round 0: key generation and AdvertiseKeys
    clients: dict[int, MaskingClient] = {}
    for i in ids:
        clk = Clock()
        clients[i] = timed(clk, MaskingClient, params, i)
        stage_core["keygen"].append(clk.cpu)
        client_core[i] += clk
        if drop_early.get(i) == "advertise_keys":
            continue
        clk = Clock()
        msg = timed(clk, clients[i].advertise_keys)
        stage_core["advertise_keys"].append(clk.cpu)
        client_core[i] += clk
        data = timed(client_wire[i], wire.encode, msg)
        sent[i] += len(data)
        sizes.setdefault(type(msg).__name__, []).append(len(data))
        msg = server_call(server_wire["advertise_keys"], wire.decode, data)
        server_call(server_core["advertise_keys"], server.receive, i, msg)
    outgoing = server_call(server_core["advertise_keys"], server.close_round)
    if progress:
        progress("advertise_keys closed")

    # round 1: ShareKeys
    encoded: dict[int, bytes] = {}
    for i, msg in outgoing.items():
        data = encoded.get(id(msg))
        if data is None:
            data = encoded[id(msg)] = server_call(server_wire["share_keys"], wire.encode, msg)
        received[i] += len(data)
        if drop_early.get(i) == "share_keys":
            continue
        incoming = timed(client_wire[i], wire.decode, data)
        clk = Clock()
        reply = timed(clk, clients[i].handle, incoming)
        stage_core["share_keys"].append(clk.cpu)
        client_core[i] += clk
        if reply is None:
            raise RuntimeError(f"client {i} aborted at share_keys: {clients[i].abort_reason}")
        data = timed(client_wire[i], wire.encode, reply)
        sent[i] += len(data)
        sizes.setdefault(type(reply).__name__, []).append(len(data))
        msg_in = server_call(server_wire["share_keys"], wire.decode, data)
        server_call(server_core["share_keys"], server.receive, i, msg_in)
    del outgoing, encoded
    outgoing = server_call(server_core["share_keys"], server.close_round)
    if progress:
        progress("share_keys closed")
    forwarded: dict[int, bytes] = {}
    for i in list(outgoing):
        msg = outgoing.pop(i)
        forwarded[i] = server_call(server_wire["masked_input"], wire.encode, msg)
    return KeyedRound(params, server, {i: c.state for i, c in clients.items()}, forwarded, server_core,
                      server_wire, client_core, client_wire, stage_core, sent, received, sizes,
                      wall_clock() - t_start)


def run_rest(keyed: KeyedRound, schedule: Mapping[int, str], *, seed: int = 0, probe_clients: Iterable[int] = (),
             bare: BareKeystream | None = None, progress: Callable[[str], None] | None = None,
             profile_server: Any = None) -> RoundReport:
    """Rounds 2 (MaskedInput) and 4 (Unmasking) from a copy of ``keyed``.
    ``schedule`` drops clients at ``masked_input`` or ``unmasking``.
    ``probe_clients`` get their masking step re-timed right after their real
    ``masked_input`` (:func:`probe_masking`), next to ``bare`` keystreams for
    as many masks, under the same load."""
    t_start = wall_clock()
    params = keyed.params
    d = params.dim
    enc = params.encoding
    server = copy.deepcopy(keyed.server, {id(params): params})
    server_core = copy.deepcopy(keyed.server_core)
    server_wire = copy.deepcopy(keyed.server_wire)
    client_core = copy.deepcopy(keyed.client_core)
    client_wire = copy.deepcopy(keyed.client_wire)
    stage_core = copy.deepcopy(keyed.client_stage_core)
    sent = dict(keyed.bytes_sent)
    received = dict(keyed.bytes_received)
    sizes = copy.deepcopy(keyed.message_bytes)
    probe_set = set(probe_clients)
    probes: list[dict[str, float]] = []
    clients = {i: MaskingClient(params, i, _state=st) for i, st in keyed.client_states.items()}
    expected = np.zeros(d, dtype=np.float64)
    contributed: set[int] = set()

    server_call = _ServerTimer(profile_server)

    # round 2: MaskedInput
    stage = "masked_input"
    for i in sorted(keyed.forwarded):
        data = keyed.forwarded[i]
        received[i] += len(data)
        if schedule.get(i) == stage:
            continue
        x = update_of(i, d, seed)  # outside every timer
        incoming = timed(client_wire[i], wire.decode, data)
        clk = Clock()
        state_before = clients[i].state
        reply = timed(clk, clients[i].handle, incoming, update=x, weight=1.0)
        if i in probe_set and reply is not None and bare is not None:
            probes.append({"client": i, "masked_input_cpu_s": clk.cpu, "masked_input_wall_s": clk.wall,
                           **probe_masking(params, state_before, incoming.senders, reply.masked, x, bare)})
        stage_core[stage].append(clk.cpu)
        client_core[i] += clk
        if reply is None:
            raise RuntimeError(f"client {i} aborted at masked_input: {clients[i].abort_reason}")
        expected += np.clip(x, -enc.clip, enc.clip)
        contributed.add(i)
        del x
        data = timed(client_wire[i], wire.encode, reply)
        sent[i] += len(data)
        sizes.setdefault(type(reply).__name__, []).append(len(data))
        del reply
        msg = server_call(server_wire[stage], wire.decode, data)
        del data
        server_call(server_core[stage], server.receive, i, msg)
        del msg
    if progress:
        progress("masked inputs sent")
    outgoing = server_call(server_core[stage], server.close_round)

    # round 4 (honest-server mode: no consistency check): Unmasking
    stage = "unmasking"
    encoded: dict[int, bytes] = {}
    for i, msg in outgoing.items():
        data = encoded.get(id(msg))
        if data is None:
            data = encoded[id(msg)] = server_call(server_wire[stage], wire.encode, msg)
        received[i] += len(data)
        if schedule.get(i) == stage:
            continue
        incoming = timed(client_wire[i], wire.decode, data)
        clk = Clock()
        reply = timed(clk, clients[i].handle, incoming)
        stage_core[stage].append(clk.cpu)
        client_core[i] += clk
        if reply is None:
            raise RuntimeError(f"client {i} aborted at unmasking: {clients[i].abort_reason}")
        data = timed(client_wire[i], wire.encode, reply)
        sent[i] += len(data)
        sizes.setdefault(type(reply).__name__, []).append(len(data))
        msg_in = server_call(server_wire[stage], wire.decode, data)
        server_call(server_core[stage], server.receive, i, msg_in)
    server_call(server_core[stage], server.close_round)
    if progress:
        progress("unmasked")
    outcome = server.outcome
    if not isinstance(outcome, ServerResult):
        raise RuntimeError(f"round did not complete: {outcome}")
    if set(outcome.included) != contributed:
        raise RuntimeError("server included a different set of clients than sent masked inputs")
    err = float(np.max(np.abs(outcome.sum_weighted - expected))) if d else 0.0
    bound = enc.sum_error_bound(len(contributed))
    if not err <= bound:
        raise RuntimeError(f"wrong aggregate: max error {err} > bound {bound}")
    return RoundReport(params=params.summary(), schedule=dict(schedule), server_core=server_core,
                       server_wire=server_wire, client_core=client_core, client_wire=client_wire,
                       client_stage_core=stage_core, bytes_sent=sent, bytes_received=received,
                       message_bytes=sizes, probes=probes, result=outcome, max_abs_error=err, error_bound=bound,
                       included=len(contributed), total_wall_s=keyed.wall_s + wall_clock() - t_start)


def drop_schedule(ids: tuple[int, ...], rate: float, stage: str = "masked_input", seed: int = 0) -> dict[int, str]:
    """``round(rate * n)`` clients, drawn with ``seed``, vanish at ``stage``."""
    k = int(round(rate * len(ids)))
    rng = np.random.default_rng([seed, 7919])
    chosen = rng.choice(np.asarray(ids), size=k, replace=False) if k else []
    return {int(c): stage for c in sorted(chosen)}


def probe_sample(ids: tuple[int, ...], schedule: Mapping[int, str], count: int, seed: int = 0) -> list[int]:
    """Up to ``count`` clients that send a masked input, spread over the ids."""
    pool = [i for i in ids if schedule.get(i) != "masked_input"]
    if len(pool) <= count:
        return pool
    rng = np.random.default_rng([seed, 104729])
    return sorted(int(x) for x in rng.choice(np.asarray(pool), size=count, replace=False))


def probe_summary(probes: list[dict[str, float]]) -> dict[str, Any]:
    """Masking step vs the bare keystream over the probed clients: ratios are
    taken per client (same moment, same load), then the median. CPU time."""
    if not probes:
        return {}
    rows = []
    for p in probes:
        per_stream = p["bare_keystream_cpu_s"] / p["streams"]
        floor = p["peers"] * per_stream  # neighbours x the PRG time for d words
        rows.append({
            "peers": p["peers"],
            "masked_input_s": p["masked_input_cpu_s"],
            "masking_step_s": p["masking_step_cpu_s"],
            "prg_add_s": p["prg_add_cpu_s"],
            "bare_keystream_per_stream_s": per_stream,
            "floor_s": floor,
            "bare_x25519_per_peer_s": p["bare_x25519_cpu_s"] / max(p["peers"], 1),
            # ... and / (peers x (keystream + X25519 exchange)): the floor with the key agreement
            "ratio_masking_step_vs_keystream_plus_x25519": p["masking_step_cpu_s"] / (floor + p["bare_x25519_cpu_s"]),
            # whole masking step (self mask + per peer X25519 + KDF + PRG + add) / (peers x keystream)
            "ratio_masking_step": p["masking_step_cpu_s"] / floor,
            # PRG + add of every stream (self mask too) / bare keystream of as many streams
            "ratio_prg_add": p["prg_add_cpu_s"] / p["bare_keystream_cpu_s"],
            "masking_share_of_masked_input": p["masking_step_cpu_s"] / p["masked_input_cpu_s"],
        })
    keys = [k for k in rows[0] if k != "peers"]
    return {"clients": len(rows), "peers_median": statistics.median(r["peers"] for r in rows),
            **{k: statistics.median(r[k] for r in rows) for k in keys},
            "ratio_masking_step_max": max(r["ratio_masking_step"] for r in rows),
            "ratio_prg_add_max": max(r["ratio_prg_add"] for r in rows)}


# ---------------------------------------------------------------------------- output
def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def write_results(name: str, result: dict[str, Any], markdown: str, out: Path = RESULTS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Clock):
        return o.as_dict()
    raise TypeError(type(o).__name__)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load_average()}] {msg}", flush=True)


KEEP_HEAP_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


def keep_freed_memory() -> None:
    """Re-execute this benchmark (once) with glibc's malloc told to keep freed
    memory in the process: no mmap'd blocks, no trimming of the heap (see
    :func:`warm_memory`). The scripts' ``--no-keep-memory`` skips this and the
    warm-up, to time the microVM's page costs as well."""
    if os.environ.get("SECAGG_BENCH_KEEP_HEAP") == "1":
        return
    env = dict(os.environ, SECAGG_BENCH_KEEP_HEAP="1")
    env["GLIBC_TUNABLES"] = ":".join(t for t in (os.environ.get("GLIBC_TUNABLES"), KEEP_HEAP_TUNABLES) if t)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def warm_memory(gib: float) -> dict[str, float]:
    """Touch ``gib`` GiB once and free it, before anything is timed.

    This machine is a microVM whose host backs guest memory lazily: the first
    touch of a page the guest never used costs far more than any later touch
    (measured here: about 250 ms per 100 MB the first time, 3-10 ms per 100 MB
    after). The host also takes back pages the guest frees, within seconds
    (a freed and re-allocated GiB was slow again after a 5 s pause), so a run
    that frees and re-allocates times the hypervisor, differently in every run
    (the same routing call took 85 ms or 540 ms), not the protocol. With
    :func:`keep_freed_memory` the process keeps what it frees; touching the
    expected peak first then makes every timed allocation reuse backed memory,
    the steady state of a long-running server (or of a JVM and its heap). The
    first-touch rate measured here goes into the results."""
    import resource

    total = int(gib * (1 << 30))
    chunk = 256 << 20
    t0, f0 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = []
    for _ in range(max(1, total // chunk)):
        blocks.append(np.ones(chunk, dtype=np.uint8))
    cpu = time.process_time() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    del blocks
    return {"gib": gib, "cpu_s": cpu, "ms_per_100mb": cpu * 1e3 / (total / 1e8), "page_faults": faults}


def add_memory_args(ap: Any, default_gib: float = 4.0) -> None:
    """The scripts' memory options (see :func:`keep_freed_memory`, :func:`warm_memory`)."""
    ap.add_argument("--warm-memory", type=float, default=None, metavar="GIB",
                    help=f"GiB touched once before timing (default {default_gib}; 0.5 with --quick; 0 = none)")
    ap.add_argument("--no-keep-memory", action="store_true",
                    help="neither keep freed memory in the process nor warm it (time the microVM's page costs too)")


def prepare_memory(args: Any, default_gib: float = 4.0) -> None:
    """Before anything else in ``main``: re-execute with the allocator setting
    unless ``--no-keep-memory``; settle ``args.warm_memory``."""
    if args.warm_memory is None:
        args.warm_memory = 0.5 if getattr(args, "quick", False) else default_gib
    if args.no_keep_memory:
        args.warm_memory = 0.0
    else:
        keep_freed_memory()


def memory_report(gib: float) -> dict[str, Any]:
    """Warm ``gib`` GiB (if any) and say so; what goes into a result's JSON."""
    warm = warm_memory(gib) if gib else None
    if warm:
        say(f"touched {warm['gib']} GiB first: {warm['ms_per_100mb']:.0f} ms per 100 MB")
    keep = os.environ.get("GLIBC_TUNABLES") if os.environ.get("SECAGG_BENCH_KEEP_HEAP") == "1" else None
    return {"memory_warm_up": warm, "malloc_tunables": keep}


def memory_line(r: dict[str, Any]) -> str:
    """One markdown sentence on how memory was handled in run ``r``."""
    w = r.get("memory_warm_up")
    peak = r.get("peak_rss_mb")
    peak_s = f" Peak RSS {peak / 1024:.1f} GiB." if peak else ""
    keep = r.get("malloc_tunables")
    keep_s = (f" The process kept the memory it freed (`GLIBC_TUNABLES={keep}`)." if keep else
              " Freed memory went back to the system (`--no-keep-memory`).")
    if not w:
        return ("No memory warm-up: first touches of guest memory are timed too (this microVM backs guest "
                "memory lazily and takes freed pages back)." + keep_s + peak_s)
    if peak and keep:
        peak_s = f" Peak RSS {peak / 1024:.1f} GiB, the kept warm-up included (not the run's own need)."
    return (f"Before timing, {w['gib']} GiB were touched once and freed (masking_driver.warm_memory: this microVM "
            f"backs guest memory lazily and takes freed pages back within seconds); that first pass ran at "
            f"{w['ms_per_100mb']:.0f} ms per 100 MB (about 5-10 ms per 100 MB once backed)." + keep_s + peak_s)


PROFILE_DIR = Path("/tmp/bench_masking")


def dump_profile(prof: Any, name: str) -> str:
    """Save a cProfile of the server to PROFILE_DIR and return (and print) its
    top entries. The profiler's clock is wall time: on a busy machine read it
    for proportions, not absolute times."""
    import io
    import pstats

    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    path = PROFILE_DIR / f"{name}.prof"
    prof.dump_stats(path)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
    text = f"--- {name} ({path}; wall-clock profile)\n" + buf.getvalue()
    print(text)
    return text


def add_output_args(ap: Any, memory_gib: float | None = 4.0) -> None:
    """The options every masking benchmark takes: --cpu, the memory options
    (unless ``memory_gib`` is None), --out and --render."""
    ap.add_argument("--cpu", type=int, help="CPU to pin to (default: the last allowed one)")
    if memory_gib is not None:
        add_memory_args(ap, memory_gib)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only re-render the markdown of an earlier run's JSON (written next to it)")


def render_only(args: Any, to_markdown: Callable[[dict[str, Any]], str]) -> bool:
    """``--render JSON``: re-render that run's markdown next to it; True if so."""
    if not args.render:
        return False
    md = to_markdown(json.loads(args.render.read_text()))
    print(md)
    args.render.with_suffix(".md").write_text(md)
    return True


def run_and_write(args: Any, run: Callable[[Any], dict[str, Any]], to_markdown: Callable[[dict[str, Any]], str],
                  name: str, memory_gib: float | None = 4.0) -> None:
    """Settle memory (may re-execute the script once), pin to one core, run,
    print the markdown and write ``results/<name>[_quick].{json,md}``."""
    if memory_gib is not None:
        prepare_memory(args, memory_gib)
    cpu = pin_one_core(args.cpu)
    say(f"pinned to CPU {cpu}")
    result = run(args)
    md = to_markdown(result)
    print(md)
    write_results(name + ("_quick" if getattr(args, "quick", False) else ""), result, md, args.out)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def stage_tables(s: dict[str, Any]) -> list[str]:
    """Markdown tables of one round's server and client time by stage."""
    sc, sw = s["server_core"]["by_stage"], s["server_wire"]["by_stage"]
    stages = ("advertise_keys", "share_keys", "masked_input", "unmasking")
    cs = s["client_stage_core_cpu_s"]

    def row(label: str, by: dict[str, Any], key: str, total: float) -> str:
        return f"| {label} | " + " | ".join(fmt_s(by[k][key]) for k in stages) + f" | {fmt_s(total)} |"

    return [
        "| server | " + " | ".join(stages) + " | total |",
        "| --- | " + " | ".join("---:" for _ in stages) + " | ---: |",
        row("core (CPU)", sc, "cpu_s", s["server_core"]["cpu_s"]),
        row("wire (CPU)", sw, "cpu_s", s["server_wire"]["cpu_s"]),
        row("core (wall)", sc, "wall_s", s["server_core"]["wall_s"]),
        "",
        "| client (CPU, per client) | keygen | " + " | ".join(stages) + " | total | wire |",
        "| --- | ---: | " + " | ".join("---:" for _ in stages) + " | ---: | ---: |",
        "| mean | " + " | ".join(fmt_s(cs[k]["mean"]) if cs.get(k) else "—" for k in ("keygen",) + stages)
        + f" | {fmt_s(s['client_core_cpu_s']['mean'])} | {fmt_s(s['client_wire_cpu_s']['mean'])} |",
        "| median | " + " | ".join(fmt_s(cs[k]["median"]) if cs.get(k) else "—" for k in ("keygen",) + stages)
        + f" | {fmt_s(s['client_core_cpu_s']['median'])} | {fmt_s(s['client_wire_cpu_s']['median'])} |",
        "| p95 | " + " | ".join(fmt_s(cs[k]["p95"]) if cs.get(k) else "—" for k in ("keygen",) + stages)
        + f" | {fmt_s(s['client_core_cpu_s']['p95'])} | {fmt_s(s['client_wire_cpu_s']['p95'])} |",
    ]


def source_line(machine: dict[str, Any]) -> str:
    head = machine.get("secagg_commit") or "unknown"
    dirty = machine.get("secagg_uncommitted_files") or []
    line = f"secagg at commit {head}" + (f" (uncommitted edits: {', '.join(dirty)})" if dirty else "") + "."
    if machine.get("prg_backend"):  # recorded since the PRG has two OpenSSL backends
        line += (f" Mask PRG through OpenSSL's {machine['prg_backend'].upper()} code; CPU flags: "
                 f"{' '.join(machine.get('cpu_flags') or []) or 'not read'}.")
    return line
