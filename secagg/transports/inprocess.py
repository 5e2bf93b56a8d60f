"""The in-process transport: a server driver and its client drivers in one
process, every message through the canonical wire format.

This is the one loop that runs in-process rounds for the simulator, the
benchmarks, the test harness and the test vectors. A dropout schedule names,
per party, the stage at which it vanishes (it never answers that stage's
message, nor any later one); a ``tamper`` hook sees every message on the wire
and may replace it or drop it (the dishonest server or network of the
adversarial tests).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..drivers.client import ClientDriver, Contribution
from ..drivers.server import ServerDriver
from ..encoding import wire
from ..errors import LocalProtocolError, ParameterError
from ..primitives.randomness import RandomSource
from ..protocols.stages import Stage

__all__ = ["LocalRound", "Tamper", "dropout_schedule", "dropout_count"]

#: ``tamper(direction, stage, party, data)`` returns the bytes to deliver, or
#: ``None`` to lose the message; ``direction`` is ``"to_client"`` or ``"to_server"``.
Tamper = Callable[[str, Stage, int, "bytes | memoryview"], "bytes | memoryview | None"]


class LocalRound:
    """One round between ``server`` and ``clients`` (party id -> driver).
    ``contributions`` go with each client's first message; ``dropouts`` maps a
    party to the stage (or its value) at which it vanishes.

    By default each reply goes to the server as soon as its client made it
    (client, server, client, server...). With ``server_last=True`` every
    client of a delivery answers first and the server then receives the
    replies back to back, in the same order: what a server on its own
    machine sees, and what a benchmark times when it must not charge the
    server for the caches its in-process clients evicted. The round is the
    same either way (same messages, same order at the server)."""

    def __init__(self, server: ServerDriver, clients: Mapping[int, ClientDriver],
                 contributions: Mapping[int, Contribution], *, dropouts: Mapping[int, "Stage | str"] | None = None,
                 tamper: Tamper | None = None, server_last: bool = False):
        self.server = server
        self.clients = dict(clients)
        self.contributions = contributions
        self.dropouts = {p: Stage(s) for p, s in (dropouts or {}).items()}
        self.tamper = tamper
        self.server_last = server_last
        self.held: dict[int, wire.Encoded] = {}  # replies made and not yet handed to the server (deliver(hold=True))
        self.outbox: dict[int, wire.Encoded] = {}  # bytes, or read-only views of the server's buffers
        self._vanished: set[int] = set()
        self._started: set[int] = set()  # parties that got their first message (and contribution)
        self.refusals: dict[int, str] = {}  # party -> why its driver sent nothing

    def start(self) -> None:
        self.outbox = self.server.start(views=True)

    def deliver(self, parties: Iterable[int] | None = None, *, hold: bool = False) -> dict[int, wire.Encoded]:
        """Deliver the pending messages and hand the replies to the server,
        without closing the stage. ``parties``, if given, picks whose messages
        go now, in that order (the others stay pending; naming a party with no
        pending message is a :class:`LocalProtocolError`). Returns the replies
        the server was handed (after tampering), by party. With ``hold=True``
        the replies are kept in :attr:`held` instead, for :meth:`hand_held`
        (and returned all the same)."""
        if self.server.done:
            raise LocalProtocolError("the round is over")
        if parties is None:
            order = list(self.outbox)
        else:
            order = list(parties)
            missing = [p for p in order if p not in self.outbox]
            if missing or len(set(order)) != len(order):
                raise LocalProtocolError(f"no pending message (or named twice) for parties {missing or order}")
        stage = self.server.stage
        handed: dict[int, wire.Encoded] = {}
        for party in order:
            data = self.outbox.pop(party)
            if party in self._vanished or self.dropouts.get(party) == stage:
                self._vanished.add(party)
                continue
            if self.tamper is not None:
                got = self.tamper("to_client", stage, party, data)
                if got is None:
                    continue
                data = got
            driver = self.clients[party]
            first = party not in self._started
            self._started.add(party)
            reply: wire.Encoded | None = driver.handle(data, self.contributions.get(party) if first else None)
            if reply is None:
                if driver.last_error is not None:
                    self.refusals[party] = f"{type(driver.last_error).__name__}: {driver.last_error}"
                    self.server.gone(party, f"refused: {driver.last_error}")
                continue
            if self.tamper is not None:
                reply = self.tamper("to_server", stage, party, reply)
                if reply is None:
                    continue
            if hold or self.server_last:
                self.held[party] = reply
            else:
                self.server.receive(party, reply)
            handed[party] = reply
        if self.server_last and not hold:
            self.hand_held()
        return handed

    def hand_held(self) -> dict[int, wire.Encoded]:
        """Hand the :attr:`held` replies to the server, back to back, in the
        order their clients made them; returns them."""
        held, self.held = self.held, {}
        for party, reply in held.items():
            self.server.receive(party, reply)
        return held

    def close(self) -> bool:
        """Close the stage (messages still pending are lost): the next stage's
        messages become pending. Returns whether the round goes on. Replies
        still held are handed to the server first."""
        self.hand_held()
        self.outbox = self.server.close_stage(views=True)
        return not self.server.done

    def step(self) -> bool:
        """Deliver the pending messages, hand the replies to the server, close
        the stage. Returns whether the round goes on."""
        self.deliver()
        return self.close()

    def run(self) -> None:
        """The whole round."""
        self.start()
        while self.step():
            pass


def dropout_schedule(dropouts: "float | Mapping[int, str] | None", ids: Iterable[int], stages: Sequence[str],
                     rng: RandomSource, *, aliases: Mapping[str, str] | None = None) -> dict[int, str]:
    """The one dropout schedule of in-process rounds: party id -> the stage at
    which it vanishes.

    A mapping is checked (ids among ``ids``, exact ints; stages among
    ``stages``, or an alias of one). A float is a rate: that fraction of the
    parties (rounded) is drawn with ``rng`` and spread evenly over
    ``stages`` in order. ``None`` is no dropout."""
    members = list(ids)
    known = set(members)
    if dropouts is None:
        return {}
    if isinstance(dropouts, Mapping):
        out = {}
        for cid, stage in dropouts.items():
            stage = (aliases or {}).get(stage, stage)
            if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)) or int(cid) not in known:
                raise ParameterError(f"dropout schedule names client {cid!r}; clients are "
                                     f"{min(members)}..{max(members)}")
            if stage not in stages:
                raise ParameterError(f"unknown dropout stage {stage!r}; choose from {tuple(stages)}")
            out[int(cid)] = stage
        return out
    if isinstance(dropouts, bool) or not isinstance(dropouts, (int, float)):
        raise ParameterError(f"dropouts must be a rate in [0, 1) or a mapping, got {dropouts!r}")
    rate = float(dropouts)
    if not 0 <= rate < 1:
        raise ParameterError(f"dropout rate must lie in [0, 1), got {dropouts!r}")
    n = len(members)
    k = dropout_count(n, rate)
    keys = np.frombuffer(rng.bytes(8 * n), dtype="<u8")
    chosen = sorted(members[int(i)] for i in np.argsort(keys, kind="stable")[:k])
    return {cid: stages[j % len(stages)] for j, cid in enumerate(chosen)}


def dropout_count(n: int, rate: float) -> int:
    """How many of ``n`` parties a dropout ``rate`` drops: ``rate * n`` rounded half up."""
    return int(math.floor(rate * n + 0.5))
