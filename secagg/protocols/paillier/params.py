"""Parameters of one Paillier aggregation round (protocols/paillier/SPEC.md §2).

:class:`PaillierParams` is itself a wire message: the server sends it to every
client and to the key holder before the round. Its hash is the **session id**,
bound into every submission and into the aggregate, so nothing from another
round (another nonce, another key, other clients or encoding) is accepted.
Validation refuses parameters whose packing layout could carry between slots
(security invariant 5) before a round starts.

``min_clients`` is the fewest clients whose aggregate may be decrypted. On
the wire it may be 1 (old encodings still decode), but every party that
submits or decrypts holds a minimum of its own (:func:`min_clients_floor`,
2 unless ``unsafe_allow_single_client=True``) and refuses parameters below
it (:func:`~.messages.check_floor`): the aggregate of one client is that
client's exact update. The default (:func:`default_min_clients`) is a
majority of the invited clients.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

from ...aggregation import RULES, Rule, get_rule
from ...dp.round import DPRoundParams
from ...encoding import wire
from ...encoding.fixed_point import FixedPoint
from ...encoding.packing import PackingLayout
from ...errors import ParameterError
from ...primitives import paillier as pl
from ...primitives.paillier import MAX_KEY_BITS, PublicKey
from ...primitives.randomness import RandomSource, default_random

__all__ = ["PROTOCOL_VERSION", "MAX_CLIENT_ID", "PublicKeyMessage", "PaillierParams", "TARGET_SLOT_BITS",
           "RANDOMIZERS", "default_encoding", "randomizer_for", "default_min_clients", "min_clients_floor",
           "MIN_CLIENTS_FLOOR", "DPPaillierParams", "PARAMS_TYPES"]

PROTOCOL_VERSION = 1
MAX_CLIENT_ID = (1 << 32) - 1
_SESSION_TAG = b"secagg/v1/paillier/session\x00"

#: The smallest ``min_clients`` a party accepts unless told otherwise: an
#: aggregate of one client is that client's exact update.
MIN_CLIENTS_FLOOR = 2
_SINGLE = ("the aggregate of a single client is that client's exact update; pass "
           "unsafe_allow_single_client=True only if releasing it is intended")


def min_clients_floor(floor: int, unsafe_allow_single_client: bool = False) -> int:
    """A party's own minimum of clients per decrypted aggregate, checked: an
    integer >= 2, or 1 with ``unsafe_allow_single_client=True``
    (:class:`ParameterError` otherwise, saying why)."""
    if isinstance(floor, bool) or not isinstance(floor, numbers.Integral) or floor < 1:
        raise ParameterError(f"min_clients must be an integer >= {MIN_CLIENTS_FLOOR}, got {floor!r}")
    if not isinstance(unsafe_allow_single_client, bool):
        raise ParameterError("unsafe_allow_single_client must be True or False")
    if floor < MIN_CLIENTS_FLOOR and not unsafe_allow_single_client:
        raise ParameterError(f"min_clients={int(floor)} refused: {_SINGLE}")
    return int(floor)


def default_min_clients(n_clients: int, unsafe_allow_single_client: bool = False) -> int:
    """``min_clients`` of a round of ``n_clients`` invited clients when none is
    given: the masking protocol's threshold for the complete graph with no
    corrupt clients, ``n // 2 + 1``, and never below 2. A round of one client
    is a :class:`ParameterError` unless ``unsafe_allow_single_client=True``."""
    n = int(n_clients)
    if n == 1 and not unsafe_allow_single_client:
        raise ParameterError(f"a round of 1 client refused: {_SINGLE}")
    return max(n // 2 + 1, 1 if unsafe_allow_single_client else MIN_CLIENTS_FLOOR)


@wire.message("paillier.PublicKey")
@dataclass(frozen=True)
class PublicKeyMessage:
    """Key holder -> everyone: the modulus ``n``, big-endian, ``key_bits / 8``
    bytes with no leading zero byte (``g = n + 1`` is implicit)."""

    modulus: bytes = field(metadata={"max_len": MAX_KEY_BITS // 8})

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", PublicKey.from_bytes(self.modulus))  # validates

    @property
    def key(self) -> PublicKey:
        return self.__dict__["_key"]

    @classmethod
    def from_key(cls, key: PublicKey) -> "PublicKeyMessage":
        return cls(key.to_bytes())


@wire.message("paillier.Params")
@dataclass(frozen=True)
class PaillierParams:
    """One round's public parameters.

    ``client_ids`` are the clients invited to the round (the packing layout is
    sized for all of them); ``min_clients`` is the fewest whose aggregate may be
    decrypted (1 is valid on the wire; every submitting or decrypting party
    refuses values below its own floor, see :func:`min_clients_floor`).
    ``vector_length`` is the model dimension ``d``; clients encode ``d + 1``
    entries, ``[w*x, w]``. ``rule`` is recorded for audit; the key
    holder uses it for one check (with ``sum``/``mean`` every weight is 1, so
    the weight slot must decrypt to exactly the number of included clients)."""

    version: int
    session_nonce: bytes = field(metadata={"len": 32})
    public_key: PublicKeyMessage
    client_ids: tuple[int, ...] = field(metadata={"item": {"min": 1, "max": MAX_CLIENT_ID}})
    min_clients: int = field(metadata={"min": 1})
    vector_length: int = field(metadata={"min": 1, "max": 1 << 34})
    clip: float
    frac_bits: int = field(metadata={"min": 0, "max": 40})
    max_weight: float
    rule: str = field(metadata={"max_len": 16})

    def __post_init__(self) -> None:
        if self.version != PROTOCOL_VERSION:
            raise ParameterError(f"unsupported Paillier protocol version {self.version}")
        ids = self.client_ids
        if not ids:
            raise ParameterError("a round needs at least one client")
        if list(ids) != sorted(set(ids)) or ids[0] < 1 or ids[-1] > MAX_CLIENT_ID:
            raise ParameterError(f"client ids must be distinct, sorted integers in [1, {MAX_CLIENT_ID}]")
        if not 1 <= self.min_clients <= len(ids):
            raise ParameterError(f"min_clients must be in [1, {len(ids)}], got {self.min_clients}")
        if self.rule not in RULES:
            raise ParameterError(f"unknown aggregation rule {self.rule!r}")
        if not isinstance(self.public_key, PublicKeyMessage):
            raise ParameterError("public_key must be a PublicKeyMessage")
        dp = self.dp
        if dp is not None:
            self._check_dp(dp)
            layout = PackingLayout.for_ring(dp.bits, len(ids), self.public_key.key.key_bits)
        elif type(self) is not PaillierParams:
            raise ParameterError("a DP round's parameters need their dp field")
        else:
            layout = PackingLayout.derive(self.encoding, len(ids), self.public_key.key.key_bits)
        object.__setattr__(self, "_layout", layout)

    def _check_dp(self, dp: DPRoundParams) -> None:
        """A DP round (protocols/dp/SPEC.md §9): the packed vector is the DP
        encoding (``q = v - 2^(b-1)``) and a count slot of 1 per client."""
        if not isinstance(dp, DPRoundParams):
            raise ParameterError("dp must be a DPRoundParams")
        if dp.dim != self.vector_length:
            raise ParameterError(f"the DP parameters are for {dp.dim} values; this round aggregates "
                                 f"{self.vector_length}")
        if dp.n_min > self.min_clients:
            raise ParameterError(f"the DP noise is calibrated for n_min = {dp.n_min} survivors, more than the "
                                 f"round's min_clients {self.min_clients}: a sum of fewer could be decrypted")
        if dp.n_max < len(self.client_ids):
            raise ParameterError(f"the DP wrap check covers n_max = {dp.n_max} clients; the round has "
                                 f"{len(self.client_ids)}")
        if self.rule not in ("sum", "mean"):
            raise ParameterError(f"a DP round is unweighted: rule 'sum' or 'mean', not {self.rule!r}")
        if self.frac_bits != 0 or self.max_weight != 1.0:
            raise ParameterError("a DP round's count slot is 1 per client: frac_bits 0 and max_weight 1")

    # ------------------------------------------------------------------ derived
    @property
    def dp(self) -> DPRoundParams | None:
        """The round's distributed-DP parameters (:class:`DPPaillierParams`), else ``None``."""
        return None

    @property
    def encoding(self) -> FixedPoint:
        return FixedPoint(clip=self.clip, frac_bits=self.frac_bits, max_weight=self.max_weight)

    @property
    def key(self) -> PublicKey:
        return self.public_key.key

    @property
    def layout(self) -> PackingLayout:
        return self.__dict__["_layout"]

    @property
    def n(self) -> int:
        return len(self.client_ids)

    @property
    def entries(self) -> int:
        """Entries per client vector: the ``d`` weighted values and the weight;
        in a DP round the ``d'`` values of the DP encoding and a count slot (1)."""
        dp = self.dp
        return (dp.padded_dim if dp is not None else self.vector_length) + 1

    @property
    def n_ciphertexts(self) -> int:
        return self.layout.ciphertexts(self.entries)

    @property
    def submission_bytes(self) -> int:
        """Length of the ciphertext field of one submission."""
        return self.n_ciphertexts * self.key.ciphertext_bytes

    @functools.cached_property
    def session_id(self) -> bytes:
        """SHA-256 of the parameters' canonical encoding, computed once."""
        return hashlib.sha256(_SESSION_TAG + wire.encode(self)).digest()

    def summary(self) -> dict[str, object]:
        """Value-free description for logs and reports."""
        lay = self.layout
        return {"protocol": "paillier", "n": self.n, "min_clients": self.min_clients,
                "dim": self.vector_length, "key_bits": self.key.key_bits, "clip": self.clip,
                "frac_bits": self.frac_bits, "max_weight": self.max_weight, "rule": self.rule,
                "slot_bits": lay.slot_bits, "slots_per_ciphertext": lay.slots, "offset": lay.offset,
                "ciphertexts": self.n_ciphertexts, "ciphertext_bytes": self.key.ciphertext_bytes,
                "key_id": self.key.key_id.hex(), "session_id": self.session_id.hex(),
                **({"dp": self.dp.summary()} if self.dp is not None else {})}

    # ------------------------------------------------------------------ factory
    @classmethod
    def create(cls, public_key: PublicKey | PublicKeyMessage, client_ids: Sequence[int], vector_length: int,
               *, encoding: FixedPoint | None = None, rule: "str | Rule" = "mean", min_clients: int | None = None,
               rng: RandomSource | None = None, unsafe_allow_single_client: bool = False,
               dp: DPRoundParams | None = None) -> "PaillierParams":
        """Parameters for a round with a fresh 256-bit nonce from ``rng``.

        ``min_clients`` defaults to :func:`default_min_clients` (a majority of
        ``client_ids``, at least 2); 1 is a :class:`ParameterError` unless
        ``unsafe_allow_single_client=True``.

        ``dp`` (a :class:`~secagg.dp.DPRoundParams` with ``n_min`` at most
        ``min_clients`` and ``n_max`` at least the number of clients) makes a
        DP round (:class:`DPPaillierParams`): clients pack their DP encodings
        (slots of ``dp.bits + bit_length(n)`` bits) and a count slot of 1;
        ``encoding`` does not apply (fixed to the clip, 0 fractional bits,
        weight 1) and the rule must be ``sum`` or ``mean``."""
        pk = public_key if isinstance(public_key, PublicKeyMessage) else PublicKeyMessage.from_key(public_key)
        ids = tuple(sorted(int(c) for c in client_ids))
        if min_clients is None:
            min_clients = default_min_clients(len(ids), unsafe_allow_single_client) if ids else MIN_CLIENTS_FLOOR
        else:
            min_clients = min_clients_floor(min_clients, unsafe_allow_single_client)
        if dp is not None:
            if encoding is not None:
                raise ParameterError("a DP round encodes with its DP parameters: give no fixed-point encoding")
            return DPPaillierParams(version=PROTOCOL_VERSION, session_nonce=default_random(rng).bytes(32),
                                    public_key=pk, client_ids=ids, min_clients=min_clients,
                                    vector_length=int(vector_length), clip=float(dp.clip), frac_bits=0,
                                    max_weight=1.0, rule=get_rule(rule).name, dp=dp)
        enc = encoding or FixedPoint()
        return cls(version=PROTOCOL_VERSION, session_nonce=default_random(rng).bytes(32), public_key=pk,
                   client_ids=ids, min_clients=min_clients, vector_length=int(vector_length),
                   clip=float(enc.clip), frac_bits=int(enc.frac_bits), max_weight=float(enc.max_weight),
                   rule=get_rule(rule).name)


@wire.message("paillier.DPParams")
@dataclass(frozen=True)
class DPPaillierParams(PaillierParams):
    """The parameters of a distributed-DP Paillier round: :class:`PaillierParams`
    and its ``dp`` field (protocols/dp/SPEC.md §9), all under the session id.
    A separate wire type, so that the parameters of a round without DP keep
    their encoding (and their session id) byte for byte."""

    dp: DPRoundParams | None = None  # required: checked on construction


#: The wire types a party accepts as a Paillier round's parameters.
PARAMS_TYPES: tuple[type, ...] = (PaillierParams, DPPaillierParams)


#: Default precision targets slots of at most this many bits (93 values per
#: 2048-bit plaintext, about 5.5 bytes per parameter on the wire).
TARGET_SLOT_BITS = 22


def default_encoding(n_clients: int, key_bits: int = pl.DEFAULT_KEY_BITS, max_weight: float = 1.0,
                     clip: float = 1.0) -> FixedPoint:
    """``clip`` (1.0), ``max_weight`` rounded up to a power of two (the round's
    ``max_weight`` is public: a power of two reveals only the order of magnitude
    of the largest weight), and the largest ``frac_bits`` in [8, 16] whose slot
    fits :data:`TARGET_SLOT_BITS` bits for ``n_clients`` (8 if none does; the
    layout then simply uses wider slots)."""
    if max_weight > 1:
        max_weight = float(2.0 ** math.ceil(math.log2(max_weight)))
    else:
        max_weight = 1.0
    for frac_bits in range(16, 7, -1):
        enc = FixedPoint(clip=clip, frac_bits=frac_bits, max_weight=max_weight)
        if PackingLayout.derive(enc, n_clients, key_bits).slot_bits <= TARGET_SLOT_BITS:
            return enc
    return FixedPoint(clip=clip, frac_bits=8, max_weight=max_weight)


RANDOMIZERS = ("standard", "djn", "djn-short")


def randomizer_for(name: str | None, key_bits: int, short_exponent: bool = False) -> pl.RandomizerSpec:
    """The obfuscator of a named randomizer (:data:`RANDOMIZERS`)."""
    if name is None:
        name = "djn-short" if short_exponent else "standard"
    elif short_exponent and name != "djn-short":
        raise ParameterError(f"short_exponent=True contradicts randomizer={name!r}")
    if name == "standard":
        return pl.STANDARD
    if name == "djn":
        return pl.short_exponent(key_bits, key_bits + 128)  # statistically close to uniform over <h_s>
    if name == "djn-short":
        return pl.short_exponent(key_bits)
    raise ParameterError(f"unknown randomizer {name!r}; choose one of {RANDOMIZERS}")
