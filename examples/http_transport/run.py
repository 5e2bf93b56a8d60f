"""Two rounds over HTTP on 127.0.0.1, each with a client that dies mid-round:

* a masking round (SecAgg+ on a sparse graph, or SecAgg): client 3 is killed
  on receiving the forwarded shares, before it sends its masked input (it just
  stops polling: the server notices the silence and the survivors' shares
  remove its pairwise masks); client 7 crashes on receiving the unmasking
  request, after its masked input went in (its transport says it leaves; it
  stays included);
* a Paillier round with the key holder as party 0: client 4 is killed before
  it submits.

Everything protocol-specific here is set-up (parameters, roles, data); the
rounds run on :mod:`http_round` and the drivers alone. ::

    .venv/bin/python examples/http_transport/run.py [--protocol secagg] [--key-bits 1024]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from secagg.drivers import (ClientDriver, Contribution, KeyHolderRole, MaskingClientRole, PaillierClientRole,
                            ServerDriver)
from secagg.encoding import wire
from secagg.encoding.fixed_point import FixedPoint
from secagg.primitives import paillier as pl
from secagg.protocols.masking import MaskingParams, MaskingServer
from secagg.protocols.paillier import (PaillierKeyHolder, PaillierParams, PaillierServer, PublicKeyMessage,
                                       default_encoding)
from secagg.result import AggregationResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_round import RoundClient, RoundServer  # noqa: E402  (the transport, beside this file)

#: party -> (the number of the server message it dies on, whether it says so first)
Deaths = Mapping[int, "tuple[int, bool]"]
MASKING_DEATHS: Deaths = {3: (3, False), 7: (4, True)}
PAILLIER_DEATHS: Deaths = {4: (1, False)}


class Crash(Exception):
    """A client's local failure: its transport tells the server it leaves."""


class Killed(BaseException):
    """A hard kill: not an ``Exception``, so the client says nothing and simply stops polling."""


class DiesAt:
    """A client driver that dies on its ``at``-th server message, before answering it."""

    def __init__(self, driver: ClientDriver, at: int, notice: bool):
        self.driver, self.at, self.notice, self.count = driver, at, notice, 0
        self.party = driver.party

    @property
    def last_error(self) -> Any:
        return self.driver.last_error

    def handle(self, data: bytes, contribution: Contribution | None = None) -> bytes | None:
        self.count += 1
        if self.count == self.at:
            if self.notice:
                raise Crash(f"client {self.party} crashed")
            raise Killed()
        return self.driver.handle(data, contribution)


@dataclass
class Round:
    """A finished round, with what is needed to check it."""

    result: AggregationResult
    updates: dict[int, np.ndarray]
    bound: float  # worst-case fixed-point error of each aggregate entry (a mean)
    errors: dict[int, str]  # clients that failed other than by their planned death
    left_running: list[str]  # client threads still alive after the round (should be none)

    def expected(self) -> np.ndarray:
        """The plaintext mean over the included clients."""
        return np.mean([self.updates[i] for i in self.result.included], axis=0)

    def max_error(self) -> float:
        return float(np.max(np.abs(self.result.aggregate - self.expected())))


def serve(server: ServerDriver, drivers: list[Any], contributions: Mapping[int, Contribution],
          **options: Any) -> tuple[AggregationResult, dict[int, str], list[str]]:
    """One round over HTTP: the server and one thread per client driver. Every
    client thread has ended (or is named in the answer) when this returns or raises."""
    errors: dict[int, str] = {}

    def client(url: str, driver: Any) -> None:
        try:
            RoundClient(url, driver).run(contributions.get(driver.party))
        except (Crash, Killed):
            pass
        except Exception as exc:
            errors[driver.party] = f"{type(exc).__name__}: {exc}"

    with RoundServer(server, **options) as srv:
        threads = [threading.Thread(target=client, args=(srv.url, d), daemon=True, name=f"http-party-{d.party}")
                   for d in drivers]
        for t in threads:
            t.start()
        try:
            result = srv.run()
        finally:
            srv.stop()  # every client sees the round is over (also when the server failed)
            _join(threads, 15.0)
    return result, errors, [t.name for t in threads if t.is_alive()]


def _join(threads: list[threading.Thread], timeout: float) -> None:
    end = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))


def _with_deaths(drivers: list[ClientDriver], deaths: Deaths) -> list[Any]:
    return [DiesAt(d, *deaths[d.party]) if d.party in deaths else d for d in drivers]


def masking_round(n: int = 10, dim: int = 64, *, protocol: str = "secagg+", degree: int | None = 6,
                  deaths: Deaths = MASKING_DEATHS, seed: int = 0, **options: Any) -> Round:
    """A masking round of ``n`` clients (``degree`` applies to SecAgg+)."""
    ids = list(range(1, n + 1))
    data = np.random.default_rng(seed).uniform(-1, 1, (n, dim))
    updates = {i: data[i - 1] for i in ids}
    enc = FixedPoint(clip=1.0, frac_bits=16)
    params = MaskingParams.create(ids, dim, protocol=protocol, degree=degree if protocol == "secagg+" else None,
                                  dropout_tolerance=0.3, encoding=enc)
    server = ServerDriver(MaskingServer(params), "mean")
    drivers = _with_deaths([ClientDriver(MaskingClientRole(i)) for i in ids], deaths)
    result, errors, alive = serve(server, drivers, {i: Contribution(updates[i]) for i in ids}, **options)
    return Round(result, updates, enc.sum_error_bound(result.n_included) / result.n_included, errors, alive)


def paillier_round(n: int = 6, dim: int = 64, *, key_bits: int = 2048, deaths: Deaths = PAILLIER_DEATHS,
                   seed: int = 0, **options: Any) -> Round:
    """A Paillier round of ``n`` clients and the key holder (party 0)."""
    ids = list(range(1, n + 1))
    data = np.random.default_rng(seed).uniform(-1, 1, (n, dim))
    updates = {i: data[i - 1] for i in ids}
    keyholder = PaillierKeyHolder(key_bits)
    published = wire.encode(keyholder.public_key_message())  # every client pins this key out of band
    enc = default_encoding(n, key_bits)
    params = PaillierParams.create(wire.decode(published, PublicKeyMessage), ids, dim, encoding=enc, rule="mean")
    roles = [PaillierClientRole(i, wire.decode(published, PublicKeyMessage),
                                min_key_bits=min(key_bits, pl.DEFAULT_KEY_BITS)) for i in ids]
    for role in roles:
        role.precompute(params.n_ciphertexts)  # the offline phase
    drivers = [ClientDriver(KeyHolderRole(keyholder)), *(ClientDriver(role) for role in roles)]
    with PaillierServer(params) as core:
        result, errors, alive = serve(ServerDriver(core, "mean", protocol="paillier"), _with_deaths(drivers, deaths),
                                      {i: Contribution(updates[i]) for i in ids}, **options)
    return Round(result, updates, enc.sum_error_bound(result.n_included) / result.n_included, errors, alive)


def _report(name: str, rnd: Round) -> None:
    r = rnd.result
    print(f"{name}: included {list(r.included)}, dropped {dict(r.dropped)}")
    print(f"  max |aggregate - plaintext mean| = {rnd.max_error():.2e} (bound {rnd.bound:.2e})")
    if rnd.errors or rnd.left_running:
        print(f"  client errors {rnd.errors}, still running {rnd.left_running}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=("secagg+", "secagg"), default="secagg+")
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--liveness", type=float, default=3.0, help="seconds of silence before a party is gone")
    args = ap.parse_args(argv)
    options = {"liveness": args.liveness, "poll_wait": 0.5, "stage_timeout": 60.0}
    t = time.monotonic()
    masking = masking_round(protocol=args.protocol, **options)
    _report(f"{args.protocol} ({time.monotonic() - t:.1f} s)", masking)
    t = time.monotonic()
    paillier = paillier_round(key_bits=args.key_bits, **options)
    _report(f"paillier, {args.key_bits}-bit key ({time.monotonic() - t:.1f} s)", paillier)
    ok = all(r.max_error() <= r.bound and not r.errors and not r.left_running for r in (masking, paillier))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
