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

from ...dp.round import DPRoundParams
from ...encoding import wire
from ...encoding.fixed_point import FixedPoint
from ...encoding.ring import choose_ring_bits, max_clients
from ...errors import ParameterError
from ...primitives.prg import MAX_OUTPUT_BYTES
from ...primitives.randomness import RandomSource, default_random
from ...primitives.shamir import M31
from .graph import NeighbourGraph, binom_sf_ge, complete_threshold, derive_secagg_plus, SIGMA

__all__ = ["MaskingParams", "DPMaskingParams", "PARAMS_TYPES", "PROTOCOL_VERSION", "MAX_CLIENT_ID"]

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
        if self.dp is not None:
            self._check_dp(self.dp)
        elif type(self) is not MaskingParams:
            raise ParameterError("a DP round's parameters need their dp field")
        elif n > max_clients(enc, self.ring_bits):
            raise ParameterError(
                f"a {self.ring_bits}-bit ring could wrap with {n} clients at clip={self.clip}, "
                f"frac_bits={self.frac_bits}, max_weight={self.max_weight}")
        if self.entries * self.ring_bits // 8 > MAX_OUTPUT_BYTES:
            raise ParameterError("dim exceeds the PRG output limit per key")
        if self.malicious_server:
            if set(self.signing_keys) != set(ids):
                raise ParameterError("malicious-server mode needs an Ed25519 verification key for every client")
        elif self.signing_keys:
            raise ParameterError("signing_keys are only used in malicious-server mode")

    def _check_dp(self, dp: DPRoundParams) -> None:
        """A DP round (protocols/dp/SPEC.md §9): the DP vector replaces the
        fixed-point one, its sum modulo ``2^b`` is read from the ring's."""
        if not isinstance(dp, DPRoundParams):
            raise ParameterError("dp must be a DPRoundParams")
        if dp.dim != self.dim:
            raise ParameterError(f"the DP parameters are for {dp.dim} values; this round aggregates {self.dim}")
        if dp.bits > self.ring_bits:
            raise ParameterError(f"the DP sum needs {dp.bits} bits per value; the ring has {self.ring_bits}")
        if dp.n_min > self.threshold:
            # the server releases a sum of at least `threshold` survivors (U_3): the noise must be
            # calibrated for no more than that many
            raise ParameterError(f"the DP noise is calibrated for n_min = {dp.n_min} survivors, more than the "
                                 f"round's threshold {self.threshold}: a sum of fewer could be released")
        if dp.n_max < self.n:
            raise ParameterError(f"the DP wrap check covers n_max = {dp.n_max} clients; the round has {self.n}")

    # ------------------------------------------------------------------ derived
    @property
    def dp(self) -> DPRoundParams | None:
        """The round's distributed-DP parameters (:class:`DPMaskingParams`), else ``None``."""
        return None

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
        (``d + 1``; the name the Paillier parameters use too); in a DP round
        the ``d'`` values of the DP encoding (no weight)."""
        dp = self.dp
        return dp.padded_dim if dp is not None else self.dim + 1

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
                "corrupt_fraction": self.corrupt_fraction, "session_id": self.session_id.hex(),
                **({"dp": self.dp.summary()} if self.dp is not None else {})}

    # ------------------------------------------------------------------ factory
    @classmethod
    def create(cls, client_ids: Sequence[int], dim: int, *, protocol: str = "secagg+",
               dropout_tolerance: float = 0.2, corrupt_fraction: float = 0.0, threshold: int | None = None,
               degree: int | None = None, encoding: FixedPoint | None = None, ring_bits: int | None = None,
               malicious_server: bool = False, signing_keys: Mapping[int, bytes] | None = None,
               rng: RandomSource | None = None, dp: DPRoundParams | None = None) -> "MaskingParams":
        """Parameters for a round, deriving what is not given.

        ``protocol="secagg"`` is the complete graph; ``"secagg+"`` derives the
        degree and threshold from ``n``, ``dropout_tolerance`` and
        ``corrupt_fraction`` (graph.py), falling back to the complete graph for
        small ``n``. A user-set ``threshold``/``degree`` is validated.

        ``dp`` (a :class:`~secagg.dp.DPRoundParams`, e.g. from
        :meth:`secagg.dp.DPConfig.round_params` with ``n_min`` = this
        round's threshold and ``n_max`` = its number of clients) makes a DP
        round (:class:`DPMaskingParams`): the clients send their DP encodings
        instead of fixed-point vectors, ``encoding`` is unused (its fields
        are fixed to the clip, 0 fractional bits and weight 1) and the ring is
        the smallest of 32 or 64 bits that holds ``dp.bits``."""
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
        r = default_random(rng)
        if dp is not None:
            if encoding is not None:
                raise ParameterError("a DP round encodes with its DP parameters: give no fixed-point encoding")
            bits = ring_bits if ring_bits is not None else (32 if dp.bits <= 32 else 64)
            return DPMaskingParams(
                version=PROTOCOL_VERSION, session_nonce=r.bytes(32), client_ids=ids, dim=int(dim),
                threshold=int(threshold), degree=int(degree), graph_seed=r.bytes(32), ring_bits=bits,
                clip=float(dp.clip), frac_bits=0, max_weight=1.0, malicious_server=bool(malicious_server),
                dropout_tolerance=float(dropout_tolerance), corrupt_fraction=float(corrupt_fraction),
                signing_keys=dict(signing_keys or {}), dp=dp)
        bits = choose_ring_bits(n, enc, ring_bits)
        return cls(version=PROTOCOL_VERSION, session_nonce=r.bytes(32), client_ids=ids, dim=int(dim),
                   threshold=int(threshold), degree=int(degree), graph_seed=r.bytes(32), ring_bits=bits,
                   clip=float(enc.clip), frac_bits=enc.frac_bits, max_weight=float(enc.max_weight),
                   malicious_server=bool(malicious_server), dropout_tolerance=float(dropout_tolerance),
                   corrupt_fraction=float(corrupt_fraction), signing_keys=dict(signing_keys or {}))


@wire.message("masking.DPParams")
@dataclass(frozen=True)
class DPMaskingParams(MaskingParams):
    """The parameters of a distributed-DP masking round: :class:`MaskingParams`
    and its ``dp`` field (protocols/dp/SPEC.md §9), all under the session id.
    A separate wire type, so that the parameters of a round without DP keep
    their encoding (and their session id) byte for byte."""

    dp: DPRoundParams | None = None  # required: checked on construction


#: The wire types a client accepts as a masking round's parameters.
PARAMS_TYPES: tuple[type, ...] = (MaskingParams, DPMaskingParams)
