"""A step-by-step driver of one masking round for tests: every message goes
through the wire format, and a test can intercept, tamper with or replace any
message between the parties (the dishonest server / network)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from secagg.encoding import wire
from secagg.encoding.fixed_point import FixedPoint
from secagg.primitives.randomness import DeterministicRandom
from secagg.primitives.signatures import generate_signing_keypair
from secagg.protocols.masking import MaskingClient, MaskingParams, MaskingServer


@dataclass
class Round:
    n: int = 6
    dim: int = 8
    protocol: str = "secagg"
    malicious: bool = False
    seed: int = 7
    dropout_tolerance: float = 0.3
    threshold: int | None = None
    degree: int | None = None
    weights: dict[int, float] = field(default_factory=dict)
    encoding: FixedPoint | None = None

    def __post_init__(self) -> None:
        rng = DeterministicRandom(self.seed)
        ids = list(range(1, self.n + 1))
        self.signing = {i: generate_signing_keypair(rng.fork(f"sig{i}")) for i in ids} if self.malicious else {}
        self.params = MaskingParams.create(
            ids, self.dim, protocol=self.protocol, dropout_tolerance=self.dropout_tolerance,
            threshold=self.threshold, degree=self.degree, malicious_server=self.malicious,
            signing_keys={i: k.public for i, k in self.signing.items()}, encoding=self.encoding,
            rng=rng.fork("params"))
        self.server = MaskingServer(self.params, rng.fork("server"))
        self.trusted = {i: k.public for i, k in self.signing.items()} if self.malicious else None
        self.clients = {i: MaskingClient(self.params, i, rng.fork(f"client{i}"),
                                         signing_key=self.signing[i].private if self.malicious else None,
                                         trusted_signing_keys=self.trusted)
                        for i in ids}
        gen = np.random.default_rng(self.seed)
        self.updates = {i: gen.uniform(-0.9, 0.9, self.dim) for i in ids}
        self.outgoing: dict[int, object] = {}
        self.replies: dict[int, object] = {}

    @property
    def ids(self) -> list[int]:
        return list(self.params.client_ids)

    def advertise(self, skip: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        for i, c in self.clients.items():
            if i not in skip:
                self.server.receive(i, wire.decode(wire.encode(c.advertise_keys())))
        self.outgoing = self.server.close_round()

    def step(self, skip: set[int] = frozenset(),  # type: ignore[assignment]
             tamper: Callable[[int, object], object] | None = None, close: bool = True) -> dict[int, object]:
        """Deliver the server's pending messages (optionally tampered), collect
        the replies, hand them to the server, close the round."""
        replies = {}
        for i, msg in self.outgoing.items():
            if i in skip:
                continue
            if tamper is not None:
                msg = tamper(i, msg)
            msg = wire.decode(wire.encode(msg))
            r = self.clients[i].handle(msg, update=self.updates[i], weight=self.weights.get(i, 1.0))
            if r is not None:
                replies[i] = wire.decode(wire.encode(r))
        self.replies = replies
        for i, r in replies.items():
            self.server.receive(i, r)
        if close:
            self.outgoing = self.server.close_round()
        return replies

    def run(self, drop: dict[int, str] | None = None) -> object:
        drop = drop or {}
        self.advertise(skip={i for i, s in drop.items() if s == "advertise_keys"})
        while self.outgoing:
            stage = self.server.stage.value
            self.step(skip={i for i, s in drop.items() if s == stage})
        return self.server.outcome

    def expected_sum(self, included) -> np.ndarray:  # type: ignore[no-untyped-def]
        return np.sum([self.weights.get(i, 1.0) * self.updates[i] for i in included], axis=0)
