"""Concurrency owned by the driver layer: the process pools that speed up
the offline phase and the server's arithmetic. The protocol cores and the
primitives start no process: they take an executor or an accumulator
factory, and whoever drives a round decides how many processes run them.

* :func:`process_executor`: a pool for
  :func:`secagg.primitives.paillier.precompute_obfuscators` (clients'
  offline phase);
* :func:`sharded_accumulator`: the Paillier server's running product split
  by ciphertext position over worker processes
  (``PaillierServer(params, accumulator=sharded_accumulator(workers))``).

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

__all__ = ["process_executor", "sharded_accumulator", "ShardedAccumulator"]


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
