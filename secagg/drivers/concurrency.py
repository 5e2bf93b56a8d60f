"""Concurrency owned by the driver layer: the process pools that speed up
the offline phase and the server's arithmetic. The protocol cores and the
primitives start no process: they take an executor or an accumulator
factory, and whoever drives a round decides how many processes run them.

* :func:`process_executor`: a pool for
  :func:`secagg.primitives.paillier.precompute_obfuscators` (clients'
  offline phase);
* :func:`sharded_accumulator`: the Paillier server's running product split
  by ciphertext position over worker processes
  (``PaillierServer(params, accumulator=sharded_accumulator(workers))``);
* :func:`process_unmasker`: the masking server's mask removal (self masks,
  dropped clients' pairwise masks) over worker processes
  (``MaskingServer(params, unmasker=process_unmasker(workers))``); they get
  seeds and keys, and return vectors.

Worker processes start with ``spawn``: nothing is inherited from the parent,
in particular no key material. They receive and return integers and
ciphertext records only. (The key holder's decryption threads stay inside
its process, with the key: :class:`~secagg.protocols.paillier.PaillierKeyHolder`.)
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ..errors import InvalidCiphertext, LocalProtocolError, ParameterError, WireFormatError
from ..primitives import paillier as pl
from ..protocols.paillier.server import Accumulator, AccumulatorFactory, LocalAccumulator

__all__ = ["process_executor", "sharded_accumulator", "ShardedAccumulator", "process_unmasker", "ProcessUnmasker"]


def process_executor(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` spawned processes (for
    :func:`secagg.primitives.paillier.precompute_obfuscators` and the like)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError("workers must be an integer >= 1")
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def sharded_accumulator(workers: int) -> AccumulatorFactory:
    """The accumulator factory for ``PaillierServer(params, accumulator=...)``:
    a :class:`ShardedAccumulator` over ``workers`` processes, or the
    in-process :class:`~secagg.protocols.paillier.server.LocalAccumulator`
    when ``workers`` is 1 or the round has fewer ciphertexts than workers."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError("workers must be an integer >= 1")

    def build(public_key: pl.PublicKey, count: int) -> Accumulator:
        if workers > 1 and count >= workers:
            return ShardedAccumulator(public_key, count, workers)
        return LocalAccumulator(public_key, count)

    return build


def _shard_worker(conn: Any, n: int, count: int) -> None:
    """One shard of a :class:`ShardedAccumulator`: a loop over
    ``("stage", records) | ("commit",) | ("discard",) | ("result",) | ("stop",)``."""
    acc = LocalAccumulator(pl.PublicKey(n), count)
    conn.send(("ready",))
    while True:
        try:
            op, *args = conn.recv()
        except (EOFError, OSError):  # the server went away without stopping us
            return
        if op == "stage":
            try:
                acc.stage(args[0])
                conn.send(("ok",))
            except (InvalidCiphertext, WireFormatError) as exc:
                conn.send((type(exc).__name__, str(exc)))
        elif op == "commit":
            acc.commit()
        elif op == "discard":
            acc.discard()
        elif op == "result":
            conn.send(acc.result())
        else:
            conn.close()
            return


class ShardedAccumulator:
    """The running product split by ciphertext position over ``workers``
    processes (``spawn``: nothing inherited). Each submission's records are
    cut into contiguous slices; every shard validates its slice (range and a
    batched unit check) and stages its products; the submission is committed
    only if every shard accepted it, otherwise every shard discards it."""

    def __init__(self, public_key: pl.PublicKey, count: int, workers: int = 2):
        if workers < 2:
            raise ParameterError("a sharded accumulator needs at least 2 workers")
        self.public_key, self.count = public_key, count
        step = math.ceil(count / workers)
        self._bounds = [(lo, min(count, lo + step)) for lo in range(0, count, step)]
        ctx = multiprocessing.get_context("spawn")
        self._conns, self._procs = [], []
        for lo, hi in self._bounds:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_shard_worker, args=(child, public_key.n, hi - lo), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for conn in self._conns:  # started and imported: a round never waits for that
            if conn.recv() != ("ready",):  # pragma: no cover
                raise LocalProtocolError("accumulator worker failed to start")
        self._staged = False

    def stage(self, records: bytes) -> None:
        length = self.public_key.ciphertext_bytes
        if len(records) != self.count * length:
            raise WireFormatError(f"expected {self.count} ciphertexts of {length} bytes, got {len(records)} bytes")
        view = memoryview(records)
        for conn, (lo, hi) in zip(self._conns, self._bounds):
            conn.send(("stage", bytes(view[lo * length:hi * length])))
        replies = [conn.recv() for conn in self._conns]
        bad = [r for r in replies if r[0] != "ok"]
        if bad:
            self._send_all(("discard",))
            if bad[0][0] == "WireFormatError":
                raise WireFormatError(bad[0][1])
            raise InvalidCiphertext()
        self._staged = True

    def _send_all(self, msg: tuple) -> None:
        for conn in self._conns:
            conn.send(msg)

    def commit(self) -> None:
        if not self._staged:
            raise LocalProtocolError("nothing staged")
        self._send_all(("commit",))
        self._staged = False

    def discard(self) -> None:
        if self._staged:
            self._send_all(("discard",))
        self._staged = False

    def result(self) -> bytes | None:
        if not self._conns:
            return None
        self._send_all(("result",))
        parts = [conn.recv() for conn in self._conns]
        return None if any(p is None for p in parts) else b"".join(parts)

    def shutdown(self) -> None:
        for conn, proc in zip(self._conns, self._procs):
            try:
                conn.send(("stop",))
                conn.close()
            except (OSError, ValueError):
                pass
            proc.join(timeout=5)
            if proc.is_alive():  # pragma: no cover
                proc.terminate()
        self._conns, self._procs = [], []


# ---------------------------------------------------------------- masking: parallel mask removal

def _run_mask_jobs(jobs: list[Any]) -> Any:
    """One worker's share of the masking server's mask removal: the sum of
    its jobs' amounts (a vector)."""
    from ..protocols.masking.unmask import run_local

    return run_local(jobs)


def _ready() -> bool:
    return True


class ProcessUnmasker:
    """The masking server's mask removal on ``workers`` cores
    (``MaskingServer(params, unmasker=process_unmasker(workers))``): the jobs
    are cut into ``chunks_per_worker`` parts of about equal cost per worker;
    ``workers - 1`` spawned processes take parts from the front of the list
    and this process from the back, until they meet (a busier core does
    fewer parts). The workers receive seeds, mask keys and public keys (the
    reconstructed secrets the server holds at that point, and no other
    state) and return one vector per part, which are added here.

    Where the two ends meet, a worker may hold a part it has not started
    (the pool queues one beyond each running call, and a queued part cannot
    be withdrawn): this process then waits for it. The default of 16 parts
    per worker keeps that tail to about 1/32 of the work on two cores. In
    one run of ``benchmarks/bench_unmask_parallel.py`` (18,000 pairwise
    streams of 100K words), two cores took 1.56 s with 16 parts per worker
    and 1.81 s with 4, the default before.

    The processes start on first use (or :meth:`start`) and are kept for the
    rounds that follow; :meth:`shutdown` ends them. A copy of the server
    (``copy.deepcopy``) shares this pool."""

    def __init__(self, workers: int, chunks_per_worker: int = 16):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ParameterError("workers must be an integer >= 1")
        if isinstance(chunks_per_worker, bool) or not isinstance(chunks_per_worker, int) or chunks_per_worker < 1:
            raise ParameterError("chunks_per_worker must be an integer >= 1")
        self.workers = workers
        self.chunks_per_worker = chunks_per_worker
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> "ProcessUnmasker":
        """Start the worker processes now (and wait until they have imported
        what they need), so that no round waits for that."""
        if self.workers > 1 and self._pool is None:
            self._pool = process_executor(self.workers - 1)
            for f in [self._pool.submit(_ready) for _ in range(self.workers - 1)]:
                f.result()
        return self

    def __call__(self, jobs: Any) -> Any:
        from ..protocols.masking.unmask import run_local, split_jobs

        parts = split_jobs(list(jobs), self.workers * self.chunks_per_worker) if self.workers > 1 else []
        if len(parts) < 2:
            return run_local(jobs)
        self.start()
        assert self._pool is not None
        # Every part is queued for the worker processes, which take them from the front; this process
        # takes them from the back, each one it can still withdraw from the queue (Future.cancel succeeds
        # only for a part no worker has taken). So a core that is slower or busier simply does fewer
        # parts, and the two ends meet in the middle.
        futures = [self._pool.submit(_run_mask_jobs, part) for part in parts]
        acc = None
        for part, future in zip(reversed(parts), reversed(futures)):
            if future.cancel():
                mine = run_local(part)
                acc = mine if acc is None else acc + mine  # mod 2^k: numpy unsigned addition wraps
        for future in futures:
            if not future.cancelled():
                theirs = future.result()
                acc = theirs if acc is None else acc + theirs
        return acc

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "ProcessUnmasker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __deepcopy__(self, memo: dict[int, Any]) -> "ProcessUnmasker":
        return self


def process_unmasker(workers: int, chunks_per_worker: int = 16) -> ProcessUnmasker:
    """The masking server's mask removal over ``workers`` cores, for
    ``MaskingServer(params, unmasker=process_unmasker(workers))``; with 1
    worker it runs in this process (the default's behaviour)."""
    return ProcessUnmasker(workers, chunks_per_worker)
