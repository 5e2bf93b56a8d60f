"""Shared driver of the pairwise-masking benchmarks (bench_bonawitz.py,
bench_secaggplus_10k.py, bench_flower_secaggplus.py, bench_bandwidth.py,
bench_retry.py).

It runs masking rounds in one process on the library's round drivers: one
:class:`~secagg.drivers.ServerDriver` around a ``MaskingServer`` and one
:class:`~secagg.drivers.ClientDriver` with a ``MaskingClientRole`` per
client, every message through the canonical wire format, moved by the
in-process transport ``secagg.transports.inprocess.LocalRound`` (in the
masked-input stage one client at a time, ``deliver([i])``, so that its update
is made on the fly and the probes run right after it). Nothing in the loop
times anything: a :class:`ClockObserver` receives every span the drivers
report and books it by role, stage, part and party:

- **server core**: the server driver's ``core`` spans: ``MaskingServer.receive``
  of every message plus ``start``/``close_round`` of every round (message
  validation, share routing, the running sum of masked inputs, Shamir
  reconstruction, mask removal);
- **server wire**: its ``wire`` spans: ``wire.decode`` of what the server
  receives and ``wire.encode`` of what it sends (reported apart, and in
  "core + wire");
- **client core**: a client driver's ``core`` spans: the role's work on every
  message (restoring the client from its saved record, key generation with
  the round's parameters, every round handler); **client wire**: that
  client's decodes (the round's parameters included) and encodes.

Each figure is taken twice: process CPU time (``time.process_time``: robust on
a busy shared machine, since time the process spends waiting for a core is not
counted) and wall time (``time.perf_counter``). The process is pinned to one
core (``pin_one_core``) and numpy's thread pools are limited to one thread, so
CPU time is single-core compute.

Updates are generated on the fly, one client at a time, outside every timer;
clients keep their state in a :class:`BenchStore` (the drivers' claim, minus
the update and a copy of the parameters per client), masked inputs go to the
server as soon as they are made, so the benchmark holds O(d) of vectors, not
O(n d). The expected sum is accumulated alongside (also O(d)) and the
server's result is checked against it: a benchmark of a wrong answer is
worthless.

Not a library module: the benchmark scripts put this directory on sys.path.
"""

from __future__ import annotations

import os

# Single thread for numpy's BLAS/OpenMP pools; must be set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import contextlib
import copy
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.drivers import (ClientDriver, Contribution, MaskingClientRole, MaskingRecord, Observer, ServerDriver,
                            StageAlreadyAnswered, StateStore)
from secagg.drivers.observer import SERVER, TO_SERVER
from secagg.encoding import wire
from secagg.encoding.ring import dtype_for, from_ring
from secagg.primitives.key_agreement import agree_many
from secagg.primitives.prg import prg_ring_add_into, prg_ring_add_many_into
from secagg.primitives.shamir import split_many as shamir_split_many
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.masking import ClientState, MaskingParams, MaskingServer, ServerResult
from secagg.protocols.masking import _crypto
from secagg.protocols.stages import Stage
from secagg.transports.inprocess import LocalRound, dropout_schedule

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

    import secagg

    # the library this process loaded (PYTHONPATH may point at another checkout, e.g. a "before" worktree)
    root = Path(secagg.__file__).resolve().parent.parent
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
    # the Shamir split the client cannot avoid: its two 32-byte secrets into a
    # share per neighbour and itself, at the round's threshold (one call of
    # the library's split, as the client makes it, fresh randomness)
    split = Clock()
    holders = sorted(set(peers) | {state.client_id})
    timed(split, shamir_split_many, [os.urandom(32), os.urandom(32)], params.threshold, holders)
    return {"peers": len(peers), "streams": streams, "masking_step_cpu_s": full.cpu, "masking_step_wall_s": full.wall,
            "prg_add_cpu_s": prg_only.cpu, "prg_add_wall_s": prg_only.wall, "bare_keystream_cpu_s": floor.cpu,
            "bare_keystream_wall_s": floor.wall, "bare_x25519_cpu_s": x25519.cpu, "shamir_split_cpu_s": split.cpu}


# ---------------------------------------------------------------------------- timing: the drivers' observer
STAGES = ("advertise_keys", "share_keys", "masked_input", "unmasking")
# what a client sends in each stage (the names the results use)
CLIENT_MESSAGE = {Stage.ADVERTISE_KEYS: "AdvertiseKeys", Stage.SHARE_KEYS: "ShareKeys",
                  Stage.MASKED_INPUT: "MaskedInput", Stage.CONSISTENCY_CHECK: "ConsistencySignature",
                  Stage.UNMASKING: "UnmaskShares"}


class _Span:
    """Both clocks around one piece of driver work, added to ``clock``; a
    server span may switch a cProfile on for its duration."""

    __slots__ = ("_clock", "_profile", "_c0", "_w0")

    def __init__(self, clock: Clock, profile: Any):
        self._clock, self._profile = clock, profile
        self._c0 = self._w0 = 0.0

    def __enter__(self) -> None:
        if self._profile is not None:
            self._profile.enable()
        self._w0 = wall_clock()
        self._c0 = cpu_clock()

    def __exit__(self, *exc: object) -> None:
        c, w = cpu_clock(), wall_clock()
        self._clock.cpu += c - self._c0
        self._clock.wall += w - self._w0
        if self._profile is not None:
            self._profile.disable()


class ClockObserver(Observer):
    """The benchmarks' observer of the round drivers: every span the drivers
    report, timed with both clocks (process CPU and wall) and booked by role,
    stage, part ("core" = protocol work, "wire" = decode/encode) and party.
    Nothing is timed anywhere else in the round.

    Server books: ``server[(part, stage)]`` for the work on one client's
    message (decode, ``receive``), ``server[("close", stage)]`` for
    ``start``/``close_stage`` (``close_round``), ``server_party[party]`` the
    decode + ``receive`` of that party's messages. Client books:
    ``client[(part, stage, party)]``. (A client driver's decode span carries
    the stage of the message before, the only one it knows before decoding:
    client wire time is used per party, not per stage.) Byte counts come from
    the server driver's messages (:meth:`client_view` gives the client drivers
    the spans only, so nothing is counted twice). ``profile``, a
    ``cProfile.Profile``, runs during the server's spans."""

    def __init__(self, profile: Any = None):
        self.profile = profile
        self.server: dict[tuple[str, str], Clock] = {}
        self.server_party: dict[int, Clock] = {}
        self.client: dict[tuple[str, str, int], Clock] = {}
        self.bytes_sent: dict[int, int] = {}
        self.bytes_received: dict[int, int] = {}
        self.message_bytes: dict[str, list[int]] = {}
        self.rejections: list[tuple[str, str, int, str]] = []

    def span(self, role: str, stage: Stage, part: str, party: int | None = None) -> ContextManager[None]:
        if role == SERVER:
            key = ("close" if party is None and part == "core" else part, stage.value)
            clock = self.server.get(key)
            if clock is None:
                clock = self.server[key] = Clock()
            if party is not None:
                per = self.server_party.get(party)
                if per is None:
                    per = self.server_party[party] = Clock()
                return _TwoBooks(clock, per, self.profile)
            return _Span(clock, self.profile)
        ckey = (part, stage.value, party if party is not None else -1)
        clock = self.client.get(ckey)
        if clock is None:
            clock = self.client[ckey] = Clock()
        return _Span(clock, None)

    def message(self, stage: Stage, direction: str, party: int, data: "bytes | memoryview") -> None:
        if direction == TO_SERVER:
            self.bytes_sent[party] = self.bytes_sent.get(party, 0) + len(data)
            self.message_bytes.setdefault(CLIENT_MESSAGE.get(stage, stage.value), []).append(len(data))
        else:
            self.bytes_received[party] = self.bytes_received.get(party, 0) + len(data)

    def rejected(self, role: str, stage: Stage, party: int, error: Any) -> None:
        self.rejections.append((role, stage.value, party, f"{error.reason.value}: {error}"))

    def client_view(self) -> Observer:
        """The spans of this observer without the byte counts (for client drivers)."""
        return _SpansOf(self)

    def fork(self, profile: Any = None) -> "ClockObserver":
        """A copy of the books so far, to go on from (one per dropout cell)."""
        new = ClockObserver(profile)
        new.server = {k: copy.copy(v) for k, v in self.server.items()}
        new.server_party = {k: copy.copy(v) for k, v in self.server_party.items()}
        new.client = {k: copy.copy(v) for k, v in self.client.items()}
        new.bytes_sent, new.bytes_received = dict(self.bytes_sent), dict(self.bytes_received)
        new.message_bytes = {k: list(v) for k, v in self.message_bytes.items()}
        new.rejections = list(self.rejections)
        return new

    # ---------------------------------------------------------------- reading the books
    def server_core_by_stage(self) -> dict[str, Clock]:
        out = {s: Clock() for s in STAGES}
        for (part, stage), clock in self.server.items():
            if part in ("core", "close"):
                out.setdefault(stage, Clock())
                out[stage] += clock
        return out

    def server_wire_by_stage(self) -> dict[str, Clock]:
        out = {s: Clock() for s in STAGES}
        for (part, stage), clock in self.server.items():
            if part == "wire":
                out.setdefault(stage, Clock())
                out[stage] += clock
        return out

    def client_totals(self, part: str) -> dict[int, Clock]:
        """Per client, all its ``part`` work over the round."""
        out: dict[int, Clock] = {}
        for (p, _stage, party), clock in self.client.items():
            if p == part:
                out.setdefault(party, Clock())
                out[party] += clock
        return out

    def client_stage_core(self) -> dict[str, list[float]]:
        """Stage -> CPU seconds of each client that ran it (its core span)."""
        out: dict[str, list[float]] = {s: [] for s in STAGES}
        for (p, stage, _party), clock in self.client.items():
            if p == "core":
                out.setdefault(stage, []).append(clock.cpu)
        return out


class _TwoBooks(_Span):
    """A span added to two clocks (the stage's and the party's)."""

    __slots__ = ("_other",)

    def __init__(self, clock: Clock, other: Clock, profile: Any):
        super().__init__(clock, profile)
        self._other = other

    def __exit__(self, *exc: object) -> None:
        c, w = cpu_clock(), wall_clock()
        dc, dw = c - self._c0, w - self._w0
        self._clock.cpu += dc
        self._clock.wall += dw
        self._other.cpu += dc
        self._other.wall += dw
        if self._profile is not None:
            self._profile.disable()


class _SpansOf(Observer):
    def __init__(self, target: Observer):
        self._target = target

    def span(self, role: str, stage: Stage, part: str, party: int | None = None) -> ContextManager[None]:
        return self._target.span(role, stage, part, party)

    def rejected(self, role: str, stage: Stage, party: int, error: Any) -> None:
        self._target.rejected(role, stage, party, error)


# ---------------------------------------------------------------------------- clients' state
_NO_UPDATE = np.zeros(0, dtype=np.float64)


class BenchStore(StateStore):
    """One client's state store, for n clients in one process: the claim of
    :class:`~secagg.drivers.MemoryStore` (each stage of a session answered at
    most once, nothing after the round ends), plus two memory savings that
    change no client's work:

    - a record is kept without the client's update; the benchmark makes the
      update again (the same values, :func:`update_of`) and hands it back with
      :meth:`supply` right before the client's masked-input stage, outside
      every timer. n updates of d entries would otherwise sit in memory
      between AdvertiseKeys and MaskedInput: O(n d), where the benchmark
      needs O(d);
    - records of one round share one parameters object (``shared``: session
      id -> params; equal session ids are equal encodings). Each client decoded
      and checked its own copy (in its timed spans); keeping n copies of the n
      client ids would be O(n^2) memory for n clients in one process."""

    def __init__(self, shared: dict[bytes, MaskingParams]):
        self._shared = shared
        self._states: dict[bytes, object] = {}
        self._claims: dict[bytes, set[str]] = {}
        self._finished: set[bytes] = set()

    def load(self, session: bytes) -> object | None:
        return self._states.get(session)

    def save(self, session: bytes, state: object) -> None:
        if session in self._finished:
            raise StageAlreadyAnswered("this session is over for this client")
        if isinstance(state, MaskingRecord):
            params = self._shared.setdefault(state.params.session_id, state.params)
            if state.update.size or params is not state.params:
                state = replace(state, params=params, update=_NO_UPDATE)
        self._states[session] = state

    def supply(self, session: bytes, update: np.ndarray) -> ClientState:
        """Give the saved record its update back (before the masked-input
        stage); returns the client's state as saved (for the probes)."""
        record = self._states[session]
        assert isinstance(record, MaskingRecord)
        self._states[session] = replace(record, update=update)
        return record.client

    def claim(self, session: bytes, stage: str) -> None:
        if session in self._finished:
            raise StageAlreadyAnswered("this session is over for this client")
        claimed = self._claims.setdefault(session, set())
        if stage in claimed:
            raise StageAlreadyAnswered(f"stage {stage} of this session was already answered")
        claimed.add(stage)

    def finish(self, session: bytes) -> None:
        self._states.pop(session, None)
        self._claims.pop(session, None)
        self._finished.add(session)

    def fork(self) -> "BenchStore":
        """An independent copy (records are immutable and shared)."""
        new = BenchStore(self._shared)
        new._states = dict(self._states)
        new._claims = {k: set(v) for k, v in self._claims.items()}
        new._finished = set(self._finished)
        return new


# ---------------------------------------------------------------------------- the round
class Updates(Mapping[int, Contribution]):
    """Every client's contribution (its update, :func:`update_of`, weight 1),
    made when a transport asks for it (once, with the client's first
    message): ``LocalRound(..., contributions=Updates(ids, d, seed))`` holds
    no vector."""

    def __init__(self, ids: Iterable[int], dim: int, seed: int):
        self._ids, self._dim, self._seed = frozenset(ids), dim, seed

    def __getitem__(self, party: int) -> Contribution:
        if party not in self._ids:
            raise KeyError(party)
        return Contribution(update_of(party, self._dim, self._seed), 1.0)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._ids))

    def __len__(self) -> int:
        return len(self._ids)


@dataclass
class MaskingRun:
    """A round in progress on the drivers (in this process): the server
    driver, one client driver and store per client, the observer timing them
    all, and the messages the next stage delivers. After rounds 0-1
    (:func:`run_keys`) the dropout cells of one table share it: :meth:`fork`
    copies it, so each cell goes on from the same point (dropout happens
    later, at ``masked_input``)."""

    params: MaskingParams
    seed: int
    server: ServerDriver
    clients: dict[int, ClientDriver]
    stores: dict[int, BenchStore]
    observer: ClockObserver
    outbox: dict[int, bytes]
    wall_s: float
    server_last: bool = True  # LocalRound(server_last=...): the server receives a stage's replies back to back
    freeze_gc: bool = True  # BenchRound(freeze_gc=...): the clients' objects are not walked in the server's work

    def fork(self, profile: Any = None) -> "MaskingRun":
        obs = self.observer.fork(profile)
        # the server driver and its core deep-copied; the params, the rule and
        # the observer (replaced by its fork) are not
        memo = {id(self.params): self.params, id(self.server.rule): self.server.rule, id(self.observer): obs}
        server = copy.deepcopy(self.server, memo)
        stores = {i: s.fork() for i, s in self.stores.items()}
        view = obs.client_view()
        clients = {i: ClientDriver(c.role, stores[i], observer=view) for i, c in self.clients.items()}
        return MaskingRun(self.params, self.seed, server, clients, stores, obs, dict(self.outbox), self.wall_s,
                          self.server_last, self.freeze_gc)

    def network(self, dropouts: Mapping[int, str] | None = None) -> LocalRound:
        """The in-process transport between these drivers, going on from the
        pending messages (every client has had its first message: no
        contributions)."""
        net = BenchRound(self.server, self.clients, {}, dropouts=dropouts, server_last=self.server_last,
                         freeze_gc=self.freeze_gc)
        net.outbox = dict(self.outbox)
        return net


class BenchRound(LocalRound):
    """:class:`LocalRound` that, with ``freeze_gc``, freezes the garbage
    collector's view of every object alive (``gc.freeze``) when the server
    starts receiving a stage's replies, and thaws it once the stage is
    closed. The in-process clients' objects (10,000 clients' records, keys
    and messages) are then not walked by a collection that the server's work
    happens to trigger: a server on its own machine has no such heap. Without
    it, a full collection over the clients' objects (up to 178 ms at n =
    10,000, seven in a run) lands in whichever span triggers it, server or
    client. Collections the server's own allocations trigger still run and
    are timed; the frozen objects are walked again from the next stage on."""

    def __init__(self, *args: Any, freeze_gc: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.freeze_gc = freeze_gc

    def hand_held(self) -> dict[int, wire.Encoded]:
        if self.freeze_gc and self.held:
            gc.freeze()
        return super().hand_held()

    def close(self) -> bool:
        if self.freeze_gc:
            gc.freeze()
        try:
            return super().close()
        finally:
            if self.freeze_gc:
                gc.unfreeze()


def check_clean(network: LocalRound, observer: ClockObserver) -> None:
    """This benchmark's rounds must run clean: no client refused a message,
    the server refused none, and only the scheduled clients went missing."""
    failed = {p: why for p, why in network.server.failures.items() if p not in network.dropouts}
    if network.refusals or observer.rejections or failed:
        raise RuntimeError(f"refusals in the round: clients {dict(list(network.refusals.items())[:3])}, "
                           f"server {observer.rejections[:3]}, missing {dict(list(failed.items())[:3])}")


def run_keys(params: MaskingParams, *, seed: int = 0, vanish: Mapping[int, str] | None = None,
             progress: Callable[[str], None] | None = None, profile_server: Any = None,
             server_last: bool = True, freeze_gc: bool = True) -> MaskingRun:
    """Rounds 0 (AdvertiseKeys, which opens with the parameters) and 1
    (ShareKeys) for every client, on the drivers through
    :class:`~secagg.transports.inprocess.LocalRound`, closing ``share_keys``.
    ``server_last`` (the default): in each stage every client answers
    before the server receives the replies back to back, as a server on its
    own machine would (its caches not evicted by the in-process clients'
    work between two of its messages); ``False`` interleaves them (client,
    server, client...), charging the server for the clients' cache traffic.
    ``freeze_gc`` (the default): the server's work is not charged for
    garbage collections over the clients' objects (:class:`BenchRound`).
    ``vanish`` may drop clients at those two stages. Each client's update is
    made on the fly for its first message (outside every timer) and not kept
    (:class:`BenchStore`)."""
    t_start = wall_clock()
    obs = ClockObserver(profile_server)
    with obs.span(SERVER, Stage.ADVERTISE_KEYS, "core"):  # the server's set-up counts as its round 0
        core = MaskingServer(params)
    server = ServerDriver(core, "sum", observer=obs)
    shared = {params.session_id: params}
    stores = {i: BenchStore(shared) for i in params.client_ids}
    view = obs.client_view()
    clients = {i: ClientDriver(MaskingClientRole(i), stores[i], observer=view) for i in params.client_ids}
    network = BenchRound(server, clients, Updates(params.client_ids, params.dim, seed), dropouts=vanish,
                         server_last=server_last, freeze_gc=freeze_gc)
    network.start()
    network.step()
    if progress:
        progress("advertise_keys closed")
    network.step()
    if progress:
        progress("share_keys closed")
    check_clean(network, obs)
    return MaskingRun(params, seed, server, clients, stores, obs, network.outbox, wall_clock() - t_start,
                      server_last, freeze_gc)


@dataclass
class MaskingRunReport:
    """What one masking round measured (read from its :class:`ClockObserver`)."""

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
    bytes_copy: Clock = field(default_factory=Clock)  # copying laid-out messages into bytes (not in the wire)

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
        ids = sorted(self.client_core)
        finished = [cid for cid in ids if cid not in self.schedule]
        zero = Clock()
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
            "server_bytes_copy": {"cpu_s": self.bytes_copy.cpu, "wall_s": self.bytes_copy.wall,
                                  "note": "copying the messages LocalRound takes as views into bytes, as a "
                                          "transport that needs bytes would (not in the wire figure)"},
            # clients that ran every round (dropped clients stop early)
            "client_core_cpu_s": describe(self.client_core[c].cpu for c in finished),
            "client_core_wall_s": describe(self.client_core[c].wall for c in finished),
            "client_wire_cpu_s": describe(self.client_wire.get(c, zero).cpu for c in finished),
            "client_core_cpu_s_all_clients": describe(self.client_core[c].cpu for c in ids),
            "client_core_wall_s_all_clients": describe(self.client_core[c].wall for c in ids),
            "client_wire_cpu_s_all_clients": describe(self.client_wire.get(c, zero).cpu for c in ids),
            "client_stage_core_cpu_s": {k: describe(v) for k, v in self.client_stage_core.items()},
            "bytes_sent_per_client": describe(self.bytes_sent.get(c, 0) for c in finished),
            "bytes_received_per_client": describe(self.bytes_received.get(c, 0) for c in finished),
            "client_message_bytes": {k: describe(v) for k, v in self.message_bytes.items()},
            "probes": self.probes,
            "max_abs_error": self.max_abs_error,
            "error_bound": self.error_bound,
            "total_wall_s": self.total_wall_s,
            "timing": "driver observer spans (masking_driver.ClockObserver); client keys are made in its "
                      "advertise_keys span",
        }


def run_rest(keyed: MaskingRun, schedule: Mapping[int, str], *, probe_clients: Iterable[int] = (),
             bare: BareKeystream | None = None, progress: Callable[[str], None] | None = None,
             profile_server: Any = None, unmasker: Any = None,
             unmask_cpus: Iterable[int] | None = None) -> MaskingRunReport:
    """Rounds 2 (MaskedInput) and 4 (Unmasking) on a fork of ``keyed``.
    ``schedule`` (a dropout schedule) drops clients at ``masked_input`` or
    ``unmasking``. Updates are made again on the fly, one client at a time,
    outside every timer; the expected sum is accumulated alongside (O(d))
    and the server's result checked against it. ``probe_clients`` get their
    masking step re-timed right after their real ``masked_input``
    (:func:`probe_masking`), next to ``bare`` keystreams for as many masks,
    under the same load. ``unmasker`` replaces the server core's mask
    removal (e.g. ``process_unmasker(2)``); ``unmask_cpus``: the CPUs this
    process may use during round 4 (its worker processes inherit them; the
    rest of the round stays on the pinned core)."""
    t_start = wall_clock()
    run = keyed.fork(profile_server)
    if unmasker is not None:
        run.server.core._unmasker = unmasker
    params, obs = run.params, run.observer
    d, sid, enc = params.dim, params.session_id, params.encoding
    expected = np.zeros(d, dtype=np.float64)
    contributed: set[int] = set()
    probe_set = set(probe_clients) if bare is not None else set()
    probes: list[dict[str, float]] = []
    network = run.network(schedule)
    # LocalRound takes the messages the server laid out in place (the complete
    # graph's ForwardedShares) as views of its buffer; a transport that needs
    # bytes (a Flower record) copies each once: timed here, apart from the
    # round, with every copy alive at once as a transport's queue would hold them
    views = [data for data in network.outbox.values() if isinstance(data, memoryview)]
    bytes_copy = Clock()
    copies = timed(bytes_copy, list, map(bytes, views))  # (map is lazy: the copies are made inside the timer)
    del copies, views

    # round 2: each client's update made again (outside every timer) and handed
    # back to its store right before it handles its forwarded shares. The
    # benchmark keeps no reference of its own to the update (unless the client
    # is probed): the store drops it once masked. With server_last (the
    # default) the masked inputs are held and the server decodes them all
    # after the last client, back to back (n encoded inputs live at once);
    # interleaved, the server decodes each right after its client
    for i in list(network.outbox):
        if schedule.get(i) == Stage.MASKED_INPUT.value:
            network.deliver([i])  # it vanishes: no answer
            continue
        x = update_of(i, d, run.seed)
        np.add(expected, np.clip(x, -enc.clip, enc.clip), out=expected)
        state = run.stores[i].supply(sid, x)
        probe = (state, x, network.outbox[i]) if i in probe_set else None
        del x
        reply = network.deliver([i], hold=run.server_last).get(i)
        if reply is None:
            continue
        contributed.add(i)
        if probe is not None:
            assert bare is not None
            state, x, incoming = probe
            clock = obs.client[("core", Stage.MASKED_INPUT.value, i)]  # read after the fact, not in the loop
            probes.append({"client": i, "masked_input_cpu_s": clock.cpu, "masked_input_wall_s": clock.wall,
                           **probe_masking(params, state, wire.decode(incoming).senders, wire.decode(reply).masked,
                                           x, bare)})
            del x, incoming
        del reply, probe
    network.hand_held()  # server_last: the server receives the masked inputs now, back to back
    network.close()
    if progress:
        progress("masked inputs sent")
    pinned = os.sched_getaffinity(0) if unmask_cpus is not None else None
    if unmask_cpus is not None:
        os.sched_setaffinity(0, set(unmask_cpus))
    try:
        network.step()  # round 4 (honest-server mode: no consistency check): Unmasking
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)
    if progress:
        progress("unmasked")
    check_clean(network, obs)
    outcome = run.server.outcome
    if not isinstance(outcome, ServerResult):
        raise RuntimeError(f"round did not complete: {outcome}")
    if set(outcome.included) != contributed:
        raise RuntimeError("server included a different set of clients than sent masked inputs")
    err = float(np.max(np.abs(outcome.sum_weighted - expected))) if d else 0.0
    bound = enc.sum_error_bound(len(contributed))
    if not err <= bound:
        raise RuntimeError(f"wrong aggregate: max error {err} > bound {bound}")
    core = obs.client_totals("core")
    return MaskingRunReport(
        params=params.summary(), schedule=dict(schedule), server_core=obs.server_core_by_stage(),
        server_wire=obs.server_wire_by_stage(),
        client_core={i: core.get(i, Clock()) for i in params.client_ids},
        client_wire=obs.client_totals("wire"), client_stage_core=obs.client_stage_core(),
        bytes_sent=obs.bytes_sent, bytes_received=obs.bytes_received, message_bytes=obs.message_bytes,
        probes=probes, result=outcome, max_abs_error=err, error_bound=bound, included=len(contributed),
        total_wall_s=keyed.wall_s + wall_clock() - t_start, bytes_copy=bytes_copy)


# ---------------------------------------------------------------------------- two cores, bare
_WORKER_BARE: "BareKeystream | None" = None


def _bare_worker_start(nbytes: int, mode: str) -> bool:
    """In a worker process: the bare primitives, ready before any timer."""
    global _WORKER_BARE
    _WORKER_BARE = BareKeystream(nbytes)
    _WORKER_BARE.mode = mode
    return True


def _pairs(bare: "BareKeystream", count: int) -> None:
    """``count`` dropped-client pairs' bare work, one X25519 exchange and one
    keystream each, in blocks of 16 pairs (exchanges, then keystreams), so
    that processes running at once are not in the same phase for long (two
    vCPUs may share one core's multipliers or AES units)."""
    for lo in range(0, count, 16):
        k = min(16, count - lo)
        bare.exchanges(k)
        bare.run(k)


def _bare_pairs(count: int) -> float:
    """In a worker process: :func:`_pairs`; returns its CPU seconds."""
    assert _WORKER_BARE is not None
    c0 = cpu_clock()
    _pairs(_WORKER_BARE, count)
    return cpu_clock() - c0


def bare_two_core_ceiling(nbytes: int, workers: int, seconds: float = 0.6, repeats: int = 3) -> dict[str, Any]:
    """What ``workers`` cores give the bare primitives of the server's mask
    removal, right now on this host: dropped-client pairs (one X25519
    exchange and one keystream of ``nbytes`` each; as many as take about
    ``seconds`` on one core) in this process alone, then the same pairs
    split evenly between this process and
    ``workers - 1`` spawned ones running at once, WALL seconds, alternated
    ``repeats`` times (no library code runs here). Their ratio says what a
    second vCPU of this host gave at that moment: on a shared host it is not
    always a second core. It is a measure of the host beside the library's
    figure, not a bound: both move from second to second, and either may come
    out above the other."""
    from secagg.drivers.concurrency import process_executor

    if workers < 2:
        raise ValueError("the bare two-core figure needs workers >= 2")
    every = set(range(os.cpu_count() or 1))
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, every)
    bare = BareKeystream(nbytes)
    pool = process_executor(workers - 1)
    try:
        for f in [pool.submit(_bare_worker_start, nbytes, bare.mode) for _ in range(workers - 1)]:
            f.result()
        w0 = wall_clock()
        _pairs(bare, 200)
        pairs = max(200 * workers, int(200 * seconds / max(wall_clock() - w0, 1e-6)))
        one, many = [], []
        share = pairs // workers
        for _ in range(repeats):
            w0 = wall_clock()
            _pairs(bare, pairs)
            one.append(wall_clock() - w0)
            w0 = wall_clock()
            futures = [pool.submit(_bare_pairs, share) for _ in range(workers - 1)]
            _pairs(bare, pairs - share * (workers - 1))
            for f in futures:
                f.result()
            many.append(wall_clock() - w0)
    finally:
        pool.shutdown(wait=True)
        os.sched_setaffinity(0, pinned)
    return {"pairs": pairs, "workers": workers, "repeats": repeats, "keystream_mode": bare.mode,
            "one_core_wall_s": one, "workers_wall_s": many,
            "speedup": statistics.median(one) / statistics.median(many),
            "speedups": [a / b for a, b in zip(one, many)]}


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave to others while this VM's CPUs wanted
    to run (``/proc/stat``, all CPUs; 0.0 where it is not reported)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def parallel_rest(keyed: Any, schedule: dict[int, str], one_core: Any, workers: int) -> dict[str, Any]:
    """The same cell again with the server's mask removal on ``workers``
    cores (``process_unmasker``): the server process may use every CPU during
    the unmasking round (its workers inherit that), the rest of the round
    stays on the pinned core. Wall time is the measure here (process CPU
    time does not count the workers'); the one-core figures are the cell
    just run, in the same process."""
    from secagg.drivers.concurrency import process_unmasker

    every = set(range(os.cpu_count() or 1))
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, every)
    try:
        unmasker = process_unmasker(workers).start()  # started (and imported) before anything is timed
    finally:
        os.sched_setaffinity(0, pinned)
    nbytes = keyed.params.entries * np.dtype(dtype_for(keyed.params.ring_bits)).itemsize
    before = bare_two_core_ceiling(nbytes, workers)
    steal0, w0 = steal_seconds(), wall_clock()
    try:
        report = run_rest(keyed, schedule, unmasker=unmasker, unmask_cpus=every)
    finally:
        unmasker.shutdown()
    steal, span = steal_seconds() - steal0, wall_clock() - w0
    after = bare_two_core_ceiling(nbytes, workers)
    s, o = report.summary(), one_core.summary()
    un, un1 = s["server_core"]["by_stage"]["unmasking"], o["server_core"]["by_stage"]["unmasking"]
    return {"workers": workers, "cpus": sorted(every), "server_core_wall_s": s["server_core"]["wall_s"],
            "server_core_cpu_s_this_process": s["server_core"]["cpu_s"],
            "one_core_server_core_wall_s": o["server_core"]["wall_s"],
            "unmasking_wall_s": un["wall_s"], "one_core_unmasking_wall_s": un1["wall_s"],
            "unmasking_speedup": un1["wall_s"] / un["wall_s"],
            "server_core_speedup": o["server_core"]["wall_s"] / s["server_core"]["wall_s"],
            "server_wire_wall_s": s["server_wire"]["wall_s"],
            "max_abs_error": report.max_abs_error, "error_bound": report.error_bound,
            "bare_before": before, "bare_after": after,
            "bare_speedup": statistics.median([before["speedup"], after["speedup"]]),
            "steal_s": steal, "steal_span_wall_s": span}


def server_floor(params: MaskingParams, survivors: int, advertised: int, dropped: int,
                 bare: BareKeystream) -> dict[str, float]:
    """The work no masking server can avoid, timed bare in this process (CPU
    seconds): a keystream of d words per survivor's self mask, one vector
    add per masked input (each input its own buffer, read from memory as a
    received input is: the adds cycle over distinct vectors, more than the
    last-level cache holds), one transpose of the (sender x recipient) table
    of encrypted share records into a preallocated buffer, and per dropped
    client and survivor one X25519 exchange and one keystream (its pairwise
    mask).

    Apart (``subgroup_check_cpu_s``, not in ``cpu_s``; the name is kept
    from when the check included the subgroup exchange): the primitives the
    X25519 key check of the 2n advertised keys cannot avoid with the method
    it uses, per key one Legendre symbol in gmpy2 (the curve check; no
    exchange since mixed-order keys are accepted, SPEC §4.2), the cost of
    refusing twist keys at all (SPEC: corrupt clients)."""
    import gmpy2

    from secagg.encoding.ring import dtype_for
    from secagg.primitives import key_agreement as ka
    from secagg.protocols.masking.messages import SHARE_RECORD_SIZE

    d = params.entries
    dt = dtype_for(params.ring_bits)
    acc = np.zeros(d, dtype=dt)
    pool = max(1, min(survivors, (96 << 20) // max(1, d * dt().itemsize)))  # ~96 MB of distinct inputs
    inputs = [np.full(d, i + 1, dtype=dt) for i in range(pool)]  # touched here, before any timer
    m = advertised
    # the records table filled (not zero pages), as the received share records are
    table = np.full((m, max(m - 1, 1) * SHARE_RECORD_SIZE), 7, dtype=np.uint8).view(f"V{SHARE_RECORD_SIZE}")
    out = np.empty((max(m - 1, 1), m), dtype=f"V{SHARE_RECORD_SIZE}")
    out.view(np.uint8).fill(0)  # backed before the timer
    keystream, adds, transpose, exchanges, check = Clock(), Clock(), Clock(), Clock(), Clock()
    timed(keystream, bare.run, survivors)
    timed(adds, lambda: [np.add(acc, inputs[i % pool], out=acc) for i in range(survivors)])
    timed(transpose, np.copyto, out, table.T)
    pairs = dropped * survivors
    if pairs:
        sample = min(pairs, 2000)  # timed on a sample, scaled
        k, x = Clock(), Clock()
        timed(k, bare.run, sample)
        timed(x, bare.exchanges, sample)
        keystream.cpu += k.cpu * pairs / sample
        exchanges.cpu = x.cpu * pairs / sample
    keys = 2 * advertised  # each key: the curve check
    sample_keys = min(keys, 1000)
    elems = [gmpy2.mpz(int.from_bytes(os.urandom(32), "little")) % ka._P for _ in range(sample_keys)]
    legendre, p = gmpy2.legendre, ka._P

    def key_check_primitives() -> None:
        for a in elems:
            legendre(a, p)

    timed(check, key_check_primitives)
    check.cpu *= keys / sample_keys
    inputs.clear()
    del table, out
    total = keystream.cpu + adds.cpu + transpose.cpu + exchanges.cpu
    return {"cpu_s": total, "keystreams_cpu_s": keystream.cpu, "adds_cpu_s": adds.cpu,
            "transpose_cpu_s": transpose.cpu, "x25519_cpu_s": exchanges.cpu,
            "subgroup_check_cpu_s": check.cpu, "subgroup_checked_keys": keys,
            "self_mask_streams": survivors, "pairwise_streams": pairs, "distinct_add_inputs": pool}


def drop_schedule(ids: Iterable[int], rate: float, stage: str = "masked_input", seed: int = 0) -> dict[int, str]:
    """``round(rate * n)`` clients, drawn with ``seed``, vanish at ``stage``:
    :func:`secagg.transports.inprocess.dropout_schedule` with one stage."""
    return dropout_schedule(rate, ids, (stage,), DeterministicRandom(f"benchmarks/dropouts/{seed}"))


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
            "shamir_split_s": p.get("shamir_split_cpu_s", 0.0),
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


def delivery_line(r: dict[str, Any], option: str = "") -> str:
    """How the run's in-process round delivered the replies (``r["delivery"]``;
    runs that did not record it interleaved them). ``option``: the script's
    flag for the other order, named after the sentence."""
    if r.get("delivery") == "server_last":
        gc_s = ""
        if r.get("freeze_gc"):
            gc_s = (" While the server receives a stage's replies and closes the stage, the garbage collector "
                    "does not walk the objects alive before (`gc.freeze`, masking_driver.BenchRound): the "
                    "in-process clients' objects, which a server on its own machine does not have. Earlier records "
                    "(no `freeze_gc` in their JSON) charged a full collection over them (up to 178 ms each at "
                    "n = 10,000) to whichever span triggered it (`--no-freeze-gc`).")
        return ("In each stage every client answers before the server receives the replies back to back "
                "(`LocalRound(server_last=True)`), as a server on its own machine would; runs before 2026-12-04 "
                "interleaved them (client, server, client...), charging the server for caches the in-process "
                "clients evicted" + (f" (`{option}`)" if option else "") + "." + gc_s)
    return "Each reply went to the server as soon as its client made it (client, server, client...)."


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


def client_stages(cs: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The client stage columns of a run's ``client_stage_core_cpu_s`` and their
    headers. Runs on the drivers make the client's keys in its
    ``advertise_keys`` span (the role makes them on receiving the round's
    parameters); earlier runs timed key generation apart ("keygen")."""
    if "keygen" in cs:
        return ("keygen",) + STAGES, ("keygen", "advertise")
    return STAGES, ("advertise_keys (keys made here)",)


def stage_tables(s: dict[str, Any]) -> list[str]:
    """Markdown tables of one round's server and client time by stage."""
    sc, sw = s["server_core"]["by_stage"], s["server_wire"]["by_stage"]
    stages = STAGES
    cs = s["client_stage_core_cpu_s"]
    keys, first = client_stages(cs)
    heads = (("keygen",) + stages) if "keygen" in cs else (first[0],) + stages[1:]

    def row(label: str, by: dict[str, Any], key: str, total: float) -> str:
        return f"| {label} | " + " | ".join(fmt_s(by[k][key]) for k in stages) + f" | {fmt_s(total)} |"

    def client_row(label: str, stat: str) -> str:
        return (f"| {label} | " + " | ".join(fmt_s(cs[k][stat]) if cs.get(k) else "—" for k in keys)
                + f" | {fmt_s(s['client_core_cpu_s'][stat])} | {fmt_s(s['client_wire_cpu_s'][stat])} |")

    return [
        "| server | " + " | ".join(stages) + " | total |",
        "| --- | " + " | ".join("---:" for _ in stages) + " | ---: |",
        row("core (CPU)", sc, "cpu_s", s["server_core"]["cpu_s"]),
        row("wire (CPU)", sw, "cpu_s", s["server_wire"]["cpu_s"]),
        row("core (wall)", sc, "wall_s", s["server_core"]["wall_s"]),
        "",
        "| client (CPU, per client) | " + " | ".join(heads) + " | total | wire |",
        "| --- | " + " | ".join("---:" for _ in keys) + " | ---: | ---: |",
        client_row("mean", "mean"),
        client_row("median", "median"),
        client_row("p95", "p95"),
    ]


def source_line(machine: dict[str, Any]) -> str:
    head = machine.get("secagg_commit") or "unknown"
    dirty = machine.get("secagg_uncommitted_files") or []
    line = f"secagg at commit {head}" + (f" (uncommitted edits: {', '.join(dirty)})" if dirty else "") + "."
    if machine.get("prg_backend"):  # recorded since the PRG has two OpenSSL backends
        line += (f" Mask PRG through OpenSSL's {machine['prg_backend'].upper()} code; CPU flags: "
                 f"{' '.join(machine.get('cpu_flags') or []) or 'not read'}.")
    return line
