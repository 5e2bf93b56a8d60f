"""Parameters of one pairwise-masking round (protocols/masking/SPEC.md §2).

:class:`MaskingParams` is itself a wire message: the server sends it to every
client before the round, and its hash, the **session id**, binds every AEAD
associated-data field, KDF context and signature of the round (security
invariant 3). A fresh 256-bit ``session_nonce`` makes every round's id unique.
Validation refuses parameters that cannot be secure or could wrap the ring.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ...encoding import wire
from ...encoding.fixed_point import FixedPoint
from ...encoding.ring import choose_ring_bits, max_clients
from ...errors import ParameterError
from ...primitives.prg import MAX_OUTPUT_BYTES
from ...primitives.randomness import RandomSource, default_random
from ...primitives.shamir import M31
from .graph import NeighbourGraph, binom_sf_ge, complete_threshold, derive_secagg_plus, SIGMA

__all__ = ["MaskingParams", "PROTOCOL_VERSION", "MAX_CLIENT_ID"]

PROTOCOL_VERSION = 2  # 2: the PRG keystream takes the GCTR counter layout (SPEC §4.9)
MAX_CLIENT_ID = M31.prime - 1  # client ids are Shamir evaluation points in GF(2^31 - 1)


@wire.message("masking.Params")
@dataclass(frozen=True)
class MaskingParams:
    """One round's public parameters.

    ``degree = len(client_ids) - 1`` is SecAgg (complete graph); an even
    ``degree`` below that is SecAgg+ on a permuted Harary graph. ``threshold``
    applies per neighbourhood (``degree + 1`` share holders)."""

    version: int
    session_nonce: bytes = field(metadata={"len": 32})
    client_ids: tuple[int, ...] = field(metadata={"item": {"min": 1, "max": MAX_CLIENT_ID}})
    dim: int = field(metadata={"min": 1, "max": 1 << 34})
    threshold: int = field(metadata={"min": 1})
    degree: int = field(metadata={"min": 1})
    graph_seed: bytes = field(metadata={"len": 32})
    ring_bits: int = field(metadata={"min": 32, "max": 64})
    clip: float
    frac_bits: int = field(metadata={"min": 0, "max": 40})
    max_weight: float
    malicious_server: bool
    dropout_tolerance: float
    corrupt_fraction: float
    signing_keys: dict[int, bytes] = field(default_factory=dict, metadata={"value": {"len": 32}})

    def __post_init__(self) -> None:
        if self.version != PROTOCOL_VERSION:
            raise ParameterError(f"unsupported masking protocol version {self.version}")
        ids = self.client_ids
        n = len(ids)
        if n < 2:
            raise ParameterError("secure aggregation needs at least 2 clients")
        if list(ids) != sorted(set(ids)) or ids[0] < 1 or ids[-1] > MAX_CLIENT_ID:
            raise ParameterError(f"client ids must be distinct, sorted integers in [1, {MAX_CLIENT_ID}]")
        if not 0 <= self.dropout_tolerance < 1 or not 0 <= self.corrupt_fraction < 1:
            raise ParameterError("dropout_tolerance and corrupt_fraction must lie in [0, 1)")
        holders = self.degree + 1
        if self.degree != n - 1 and (self.degree % 2 or not 2 <= self.degree < n - 1):
            raise ParameterError(f"degree must be {n - 1} (complete graph) or even in [2, {n - 2}]")
        # Invariant 2: t > holders / 2 always (a server that lies about who dropped
        # then cannot collect both kinds of share of one client from honest holders).
        if not holders // 2 < self.threshold <= holders:
            raise ParameterError(
                f"threshold {self.threshold} must exceed half of the {holders} share holders and not "
                f"exceed them")
        if self.degree != n - 1 and self.threshold < self.degree // 2 + 2:
            # A sparse graph loses connectivity when two runs of k/2 ring positions
            # are removed; a client next to such a run keeps only k/2 + 1 holders.
            # With t >= k/2 + 2 that client refuses to unmask, so a server faking
            # those dropouts cannot learn the sum of an arc of clients.
            raise ParameterError(
                f"a sparse graph of degree {self.degree} needs threshold >= {self.degree // 2 + 2}, "
                f"got {self.threshold}")
        if self.degree == n - 1:
            c = math.ceil(self.corrupt_fraction * n)
            if 2 * self.threshold <= n + c:
                raise ParameterError(f"threshold {self.threshold} is not secure with {c} corrupt clients "
                                     f"of {n} (need 2t > n + corrupt)")
        elif self.corrupt_fraction > 0 and n * binom_sf_ge(holders, self.corrupt_fraction,
                                                           2 * self.threshold - holders) > 2.0**-SIGMA:
            raise ParameterError("threshold too low for the corrupt fraction in a sparse neighbourhood")
        enc = self.encoding  # validates clip / frac_bits / max_weight
        if self.ring_bits not in (32, 64):
            raise ParameterError("ring_bits must be 32 or 64")
        if n > max_clients(enc, self.ring_bits):
            raise ParameterError(
                f"a {self.ring_bits}-bit ring could wrap with {n} clients at clip={self.clip}, "
                f"frac_bits={self.frac_bits}, max_weight={self.max_weight}")
        if (self.dim + 1) * self.ring_bits // 8 > MAX_OUTPUT_BYTES:
            raise ParameterError("dim exceeds the PRG output limit per key")
        if self.malicious_server:
            if set(self.signing_keys) != set(ids):
                raise ParameterError("malicious-server mode needs an Ed25519 verification key for every client")
        elif self.signing_keys:
            raise ParameterError("signing_keys are only used in malicious-server mode")

    # ------------------------------------------------------------------ derived
    @property
    def encoding(self) -> FixedPoint:
        return FixedPoint(clip=self.clip, frac_bits=self.frac_bits, max_weight=self.max_weight)

    @property
    def n(self) -> int:
        return len(self.client_ids)

    @property
    def vector_length(self) -> int:
        """The model dimension ``d`` (the same as :attr:`dim`; the name the
        Paillier parameters use too)."""
        return self.dim

    @property
    def entries(self) -> int:
        """Entries per masked input: the ``d`` weighted values and the weight
        (``d + 1``; the name the Paillier parameters use too)."""
        return self.dim + 1

    @property
    def is_complete(self) -> bool:
        return self.degree == self.n - 1

    @property
    def protocol_name(self) -> str:
        return "secagg" if self.is_complete else "secagg+"

    @functools.cached_property
    def session_id(self) -> bytes:
        """SHA-256 of the parameters' canonical encoding (SPEC §4.1), computed once."""
        return hashlib.sha256(b"secagg/v1/masking/session\x00" + wire.encode(self)).digest()

    @functools.cached_property
    def graph(self) -> NeighbourGraph:
        """The round's neighbour graph, built once."""
        return NeighbourGraph(self.client_ids, self.degree, self.graph_seed)

    def summary(self) -> dict[str, object]:
        """Value-free description for logs and reports."""
        return {"protocol": self.protocol_name, "n": self.n, "dim": self.dim, "threshold": self.threshold,
                "degree": self.degree, "ring_bits": self.ring_bits, "clip": self.clip,
                "frac_bits": self.frac_bits, "max_weight": self.max_weight,
                "malicious_server": self.malicious_server, "dropout_tolerance": self.dropout_tolerance,
                "corrupt_fraction": self.corrupt_fraction, "session_id": self.session_id.hex()}

    # ------------------------------------------------------------------ factory
    @classmethod
    def create(cls, client_ids: Sequence[int], dim: int, *, protocol: str = "secagg+",
               dropout_tolerance: float = 0.2, corrupt_fraction: float = 0.0, threshold: int | None = None,
               degree: int | None = None, encoding: FixedPoint | None = None, ring_bits: int | None = None,
               malicious_server: bool = False, signing_keys: Mapping[int, bytes] | None = None,
               rng: RandomSource | None = None) -> "MaskingParams":
        """Parameters for a round, deriving what is not given.

        ``protocol="secagg"`` is the complete graph; ``"secagg+"`` derives the
        degree and threshold from ``n``, ``dropout_tolerance`` and
        ``corrupt_fraction`` (graph.py), falling back to the complete graph for
        small ``n``. A user-set ``threshold``/``degree`` is validated."""
        ids = tuple(sorted(int(c) for c in client_ids))
        n = len(ids)
        if n < 2:
            raise ParameterError("secure aggregation needs at least 2 clients")
        if protocol not in ("secagg", "secagg+"):
            raise ParameterError(f"unknown masking protocol {protocol!r}")
        enc = encoding or FixedPoint()
        if degree is None:
            if protocol == "secagg":
                degree = n - 1
            else:
                degree, derived_t = derive_secagg_plus(n, float(dropout_tolerance), float(corrupt_fraction))
                if threshold is None:
                    threshold = derived_t
        if threshold is None:
            if degree == n - 1:
                threshold = complete_threshold(n, float(dropout_tolerance), float(corrupt_fraction))
            else:
                threshold = degree // 2 + 2
        if degree == n - 1:
            survivors = n - math.ceil(dropout_tolerance * n)
            if survivors < threshold:
                raise ParameterError(
                    f"threshold {threshold} with {n} clients cannot tolerate a dropout of "
                    f"{dropout_tolerance:.0%} (only {survivors} would remain)")
        bits = choose_ring_bits(n, enc, ring_bits)
        r = default_random(rng)
        return cls(version=PROTOCOL_VERSION, session_nonce=r.bytes(32), client_ids=ids, dim=int(dim),
                   threshold=int(threshold), degree=int(degree), graph_seed=r.bytes(32), ring_bits=bits,
                   clip=float(enc.clip), frac_bits=enc.frac_bits, max_weight=float(enc.max_weight),
                   malicious_server=bool(malicious_server), dropout_tolerance=float(dropout_tolerance),
                   corrupt_fraction=float(corrupt_fraction), signing_keys=dict(signing_keys or {}))
