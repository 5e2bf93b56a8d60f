"""Your own transport in 50 lines: a masking round between threads that talk
through ``queue.Queue``s, on the round drivers alone (docs/embedding.md walks
through it).

The transport is the two pieces between the ``transport`` markers: the server
loop (:class:`QueueServer`) and the client loop (:func:`serve_client`). The
rest sets a round up: ten clients, SecAgg (the complete graph); client 3
crashes when the forwarded shares reach it (it tells the server it leaves, so
it is not included and the survivors' shares remove its masks); client 7
vanishes without a word when asked to unmask (its masked input is in, so it
stays included; the stage closes at its deadline). ::

    .venv/bin/python examples/own_transport/queue_round.py
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np

from secagg.drivers import ClientDriver, Contribution, MaskingClientRole, MemoryStore, Observer, ServerDriver
from secagg.encoding.fixed_point import FixedPoint
from secagg.protocols.masking import MaskingParams, MaskingServer
from secagg.result import AggregationResult

# --8<-- [start:transport]
class QueueServer:
    """Runs one round of ``driver``: a queue to each party, one queue back."""

    def __init__(self, driver: ServerDriver, parties: list[int], stage_timeout: float = 2.0):
        self.driver, self.stage_timeout = driver, stage_timeout
        self.to_party: dict[int, queue.Queue[Any]] = {p: queue.Queue() for p in parties}  # (stage, bytes); None: over
        # from every party: ("reply", party, stage, bytes) or ("left", party, None, why)
        self.from_parties: queue.Queue[Any] = queue.Queue()

    def run(self) -> AggregationResult:
        driver = self.driver
        outbox = driver.start()
        while not driver.done:
            for party, data in outbox.items():
                self.to_party[party].put((driver.stage, data))
            deadline = time.monotonic() + self.stage_timeout
            while not driver.ready and time.monotonic() < deadline:
                try:
                    kind, party, stage, body = self.from_parties.get(timeout=0.05)
                except queue.Empty:
                    continue
                if kind == "reply":
                    driver.receive(party, body, stage=stage)  # a reply to a closed stage is ignored
                else:
                    driver.left(party, body.decode())  # not awaited in any later stage
            outbox = driver.close_stage()  # everyone answered or gone, or the deadline passed
        for q in self.to_party.values():
            q.put(None)
        return driver.result()  # ProtocolAborted if the round aborted


def serve_client(driver: ClientDriver, contribution: Contribution, inbox: queue.Queue,
                 outbox: queue.Queue) -> None:
    """Answers the server until the round is over; a refusal or a failure makes it leave."""
    first = True
    try:
        while (item := inbox.get()) is not None:
            stage, data = item
            reply = driver.handle(data, contribution if first else None)  # never raises for a bad message
            first = False
            if reply is not None:
                outbox.put(("reply", driver.party, stage, reply))
            elif driver.last_error is not None:
                raise RuntimeError(f"refused: {driver.last_error}")
    except Exception as exc:
        outbox.put(("left", driver.party, None, str(exc).encode()))
# --8<-- [end:transport]


# --8<-- [start:observer]
class StageTimes(Observer):
    """Wall time of the server driver's work, per stage and part ("core" or "wire")."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def span(self, role: str, stage: Any, part: str, party: int | None = None) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[f"{stage.value}.{part}"] += time.perf_counter() - start
# --8<-- [end:observer]


class Crash(Exception):
    """A client's local failure: its loop tells the server it leaves."""


class Vanish(BaseException):
    """A hard stop: not an ``Exception``, so the client loop says nothing."""


class DiesOn:
    """A client driver that dies on its ``at``-th message, before answering it."""

    def __init__(self, driver: ClientDriver, at: int, error: BaseException):
        self.driver, self.at, self.error, self.count = driver, at, error, 0
        self.party = driver.party

    @property
    def last_error(self) -> Any:
        return self.driver.last_error

    def handle(self, data: bytes, contribution: Contribution | None = None) -> bytes | None:
        self.count += 1
        if self.count == self.at:
            raise self.error
        return self.driver.handle(data, contribution)


#: party -> (the number of the server message it dies on, how); masking messages:
#: 1 parameters, 2 key broadcast, 3 forwarded shares, 4 unmasking request
DEATHS = {3: (3, Crash("client 3 crashed")), 7: (4, Vanish())}


def run_round(n: int = 10, dim: int = 100, *, seed: int = 0, stage_timeout: float = 2.0,
              deaths: dict[int, tuple[int, BaseException]] = DEATHS) -> dict[str, Any]:
    """One SecAgg round over queues; returns the result, the updates and what is needed to check it."""
    ids = list(range(1, n + 1))
    data = np.random.default_rng(seed).uniform(-1, 1, (n, dim))
    updates = {i: data[i - 1] for i in ids}
    encoding = FixedPoint(clip=1.0, frac_bits=16)
    # --8<-- [start:setup]
    params = MaskingParams.create(ids, dim, protocol="secagg", dropout_tolerance=0.3, encoding=encoding)
    times = StageTimes()
    server = QueueServer(ServerDriver(MaskingServer(params), "mean", observer=times), ids, stage_timeout)
    drivers = {i: ClientDriver(MaskingClientRole(i), store=MemoryStore()) for i in ids}
    # --8<-- [end:setup]
    clients: dict[int, Any] = {i: DiesOn(d, *deaths[i]) if i in deaths else d for i, d in drivers.items()}

    def client(i: int) -> None:
        with contextlib.suppress(Vanish):
            serve_client(clients[i], Contribution(updates[i]), server.to_party[i], server.from_parties)

    threads = [threading.Thread(target=client, args=(i,), name=f"queue-party-{i}") for i in ids]
    for t in threads:
        t.start()
    try:
        result = server.run()
    finally:
        for q in server.to_party.values():
            q.put(None)  # every client stops, also when the server failed
        for t in threads:
            t.join(10.0)
    bound = encoding.sum_error_bound(result.n_included) / result.n_included
    return {"result": result, "updates": updates, "bound": bound, "times": dict(times.seconds),
            "failures": dict(server.driver.failures), "left_running": [t.name for t in threads if t.is_alive()]}


def main() -> int:
    start = time.monotonic()
    out = run_round()
    result = out["result"]
    expected = np.mean([out["updates"][i] for i in result.included], axis=0)
    error = float(np.max(np.abs(result.aggregate - expected)))
    print(f"secagg over queues ({time.monotonic() - start:.1f} s): included {list(result.included)}, "
          f"dropped {dict(result.dropped)}")
    print(f"  max |aggregate - plaintext mean of the included| = {error:.2e} (bound {out['bound']:.2e})")
    print(f"  failures: {out['failures']}")
    for key, seconds in out["times"].items():
        print(f"  server {key:24s} {seconds * 1000:8.2f} ms")
    return 0 if error <= out["bound"] and not out["left_running"] else 1


if __name__ == "__main__":
    sys.exit(main())
