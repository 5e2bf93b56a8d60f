"""A masking round for tests: the configuration of :class:`round_harness.Network`
for SecAgg / SecAgg+ (a :class:`MaskingServer` under a server driver, a
:class:`MaskingClientRole` driver per client, each with its own state store),
plus views of a client's saved state.

Every message goes through the wire format and the drivers; a test steps the
round stage by stage and can tamper with, hold, reorder or replace any message
between the parties (the dishonest server / network)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import numpy as np

from secagg.drivers import ClientDriver, Contribution, MaskingClientRole, MaskingRecord, MemoryStore, StateStore
from secagg.drivers.store import StageAlreadyAnswered
from secagg.encoding.fixed_point import FixedPoint
from secagg.primitives.randomness import DeterministicRandom
from secagg.primitives.signatures import generate_signing_keypair
from secagg.protocols.masking import MaskingClient, MaskingParams, MaskingServer

from round_harness import Network


class _Contributions(Mapping[int, Contribution]):
    """Each client's contribution, read when its first message is delivered
    (a test may change ``updates`` until then)."""

    def __init__(self, r: "Round"):
        self._r = r

    def __getitem__(self, party: int) -> Contribution:
        return Contribution(self._r.updates[party], self._r.weights.get(party, 1.0))

    def __iter__(self) -> Iterator[int]:
        return iter(self._r.updates)

    def __len__(self) -> int:
        return len(self._r.updates)


@dataclass(eq=False)
class Round(Network):
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
    store: Callable[[int], StateStore] | None = None  # each client's store (default: a MemoryStore)

    def __post_init__(self) -> None:
        rng = DeterministicRandom(self.seed)
        ids = list(range(1, self.n + 1))
        self.signing = {i: generate_signing_keypair(rng.fork(f"sig{i}")) for i in ids} if self.malicious else {}
        self.params = MaskingParams.create(
            ids, self.dim, protocol=self.protocol, dropout_tolerance=self.dropout_tolerance,
            threshold=self.threshold, degree=self.degree, malicious_server=self.malicious,
            signing_keys={i: k.public for i, k in self.signing.items()}, encoding=self.encoding,
            rng=rng.fork("params"))
        self.trusted = {i: k.public for i, k in self.signing.items()} if self.malicious else None
        self.rngs = {i: rng.fork(f"client{i}") for i in ids}
        self.roles = {i: MaskingClientRole(i, rng=self.rngs[i],
                                           signing_key=self.signing[i].private if self.malicious else None,
                                           trusted_signing_keys=self.trusted) for i in ids}
        self.stores = {i: self.store(i) if self.store is not None else MemoryStore() for i in ids}
        gen = np.random.default_rng(self.seed)
        self.updates = {i: gen.uniform(-0.9, 0.9, self.dim) for i in ids}
        Network.__init__(self, MaskingServer(self.params, rng.fork("server")), "weighted" if self.weights else "sum",
                         {i: ClientDriver(self.roles[i], self.stores[i]) for i in ids}, _Contributions(self))

    @property
    def ids(self) -> list[int]:
        return list(self.params.client_ids)

    def advertise(self, skip: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        """Round 0: deliver the parameters; every client not skipped advertises its keys."""
        assert self.stage.value == "advertise_keys"
        self.step(skip=skip)

    def expected_sum(self, included) -> np.ndarray:  # type: ignore[no-untyped-def]
        return np.sum([self.weights.get(i, 1.0) * self.updates[i] for i in included], axis=0)

    # ------------------------------------------------------------ a client's saved state
    def record(self, i: int) -> MaskingRecord | None:
        """What client ``i``'s store holds for this round (``None`` once it is over for it)."""
        return self.stores[i].load(self.params.session_id)  # type: ignore[return-value]

    def client(self, i: int) -> MaskingClient:
        """The protocol core of client ``i`` over its saved state (same random
        source as its driver), for checks of the core itself."""
        rec = self.record(i)
        assert rec is not None, f"client {i} has no saved state"
        return MaskingClient(rec.params, i, self.rngs[i], self.signing[i].private if self.malicious else None,
                             trusted_signing_keys=self.trusted, state=rec.client)

    def reload_clients(self) -> None:
        """Every client driver afresh, over a new store instance from the
        ``store`` factory (a restarted node: only what the store persisted survives)."""
        assert self.store is not None
        self.stores = {i: self.store(i) for i in self.ids}
        for i in self.ids:
            self.network.clients[i] = ClientDriver(self.roles[i], self.stores[i])

    def ended(self, i: int) -> bool:
        """The round is over for client ``i``: its state is gone and its store
        refuses every further claim for the session."""
        sid = self.params.session_id
        if self.stores[i].load(sid) is not None:
            return False
        try:
            self.stores[i].claim(sid, "probe")
        except StageAlreadyAnswered:
            return True
        return False

    def aborted(self, i: int) -> bool:
        """Client ``i`` refused a message (a failed check) and left the round."""
        return self.refusal(i) is not None and self.ended(i)
