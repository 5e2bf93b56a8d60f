"""Messages of the pairwise-masking protocol, grouped by round (SPEC.md §3).

Every message is a frozen dataclass with a canonical wire form
(:mod:`secagg.encoding.wire`); per-peer material travels as columns (an id array
and one byte string of fixed-size records) so that a server with 1000 clients
routes a million encrypted shares with a few array operations.

Paper names (Bonawitz et al.) ↔ fields: ``c_u^PK`` = ``enc_public``,
``s_u^PK`` = ``mask_public``, ``b_u`` = the self-mask seed (only its commitment
travels in round 0), ``e_{u,v}`` = one record of ``ciphertexts``,
``y_u`` = ``masked``, ``U_3`` = ``alive``, ``U_2 \\ U_3`` = ``dropped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...encoding import wire
from ...primitives.aead import OVERHEAD
from ...primitives.shamir import M31, chunks_for
from .params import MAX_CLIENT_ID

__all__ = [
    "AdvertiseKeys", "KeysBroadcast", "ShareKeys", "ForwardedShares", "MaskedInput",
    "ConsistencyRequest", "ConsistencySignature", "UnmaskRequest", "UnmaskShares",
    "SHARE_CHUNKS", "SHARE_RECORD_PLAINTEXT", "SHARE_RECORD_SIZE", "SERVER_MESSAGES", "CLIENT_MESSAGES",
]

SHARE_CHUNKS = chunks_for(32, M31)  # field elements per share of a 32-byte secret
# plaintext of e_{u,v}: u (4 bytes) || v (4) || share of b_u || share of s_u^SK (uint32 each)
SHARE_RECORD_PLAINTEXT = 8 + 2 * 4 * SHARE_CHUNKS
SHARE_RECORD_SIZE = SHARE_RECORD_PLAINTEXT + OVERHEAD

_ID = {"min": 1, "max": MAX_CLIENT_ID}
_IDS = {"dtypes": {"uint32"}}
_KEY = {"len": 32}
_RECORDS = {"view": True}  # decoded as a read-only view of the received bytes, not a copy


# --------------------------------------------------------------- round 0: AdvertiseKeys
@wire.message("masking.AdvertiseKeys")
@dataclass(frozen=True)
class AdvertiseKeys:
    """Client -> server: ``(c_u^PK, s_u^PK)``, a commitment ``H(session, u, b_u)``
    to the self-mask seed, and (malicious-server mode) an Ed25519 signature."""

    client_id: int = field(metadata=_ID)
    session_id: bytes = field(metadata=_KEY)
    enc_public: bytes = field(metadata=_KEY)
    mask_public: bytes = field(metadata=_KEY)
    self_mask_commitment: bytes = field(metadata=_KEY)
    signature: bytes = field(default=b"", metadata={"max_len": 64})


@wire.message("masking.KeysBroadcast")
@dataclass(frozen=True)
class KeysBroadcast:
    """Server -> client: the advertisements of the recipient's neighbours in U_1
    and its own, as columns sorted by id (32-byte keys concatenated)."""

    session_id: bytes = field(metadata=_KEY)
    client_ids: np.ndarray = field(metadata=_IDS)
    enc_publics: bytes
    mask_publics: bytes
    commitments: bytes
    signatures: bytes  # 64 bytes per entry in malicious-server mode, else empty

    def entry(self, i: int) -> AdvertiseKeys:
        sig = self.signatures[64 * i:64 * (i + 1)]
        return AdvertiseKeys(int(self.client_ids[i]), self.session_id, self.enc_publics[32 * i:32 * (i + 1)],
                             self.mask_publics[32 * i:32 * (i + 1)], self.commitments[32 * i:32 * (i + 1)], sig)


# --------------------------------------------------------------- round 1: ShareKeys
@wire.message("masking.ShareKeys")
@dataclass(frozen=True)
class ShareKeys:
    """Client -> server: one AEAD record ``e_{u,v}`` per neighbour ``v`` in U_1."""

    client_id: int = field(metadata=_ID)
    session_id: bytes = field(metadata=_KEY)
    recipients: np.ndarray = field(metadata=_IDS)
    ciphertexts: bytes = field(metadata=_RECORDS)


@wire.message("masking.ForwardedShares")
@dataclass(frozen=True)
class ForwardedShares:
    """Server -> client ``v``: the records ``e_{u,v}`` addressed to it, by sender."""

    session_id: bytes = field(metadata=_KEY)
    senders: np.ndarray = field(metadata=_IDS)
    ciphertexts: bytes = field(metadata=_RECORDS)


# --------------------------------------------------------------- round 2: MaskedInputCollection
@wire.message("masking.MaskedInput")
@dataclass(frozen=True)
class MaskedInput:
    """Client -> server: ``y_u = x_u + PRG(b_u) + sum_v ±PRG(s_{u,v})`` in Z_{2^k}."""

    client_id: int = field(metadata=_ID)
    session_id: bytes = field(metadata=_KEY)
    masked: np.ndarray = field(metadata={"dtypes": {"uint32", "uint64"}})


# --------------------------------------------------------------- round 3: ConsistencyCheck
@wire.message("masking.ConsistencyRequest")
@dataclass(frozen=True)
class ConsistencyRequest:
    """Server -> client (malicious-server mode): the set U_3 to sign."""

    session_id: bytes = field(metadata=_KEY)
    alive: np.ndarray = field(metadata=_IDS)


@wire.message("masking.ConsistencySignature")
@dataclass(frozen=True)
class ConsistencySignature:
    client_id: int = field(metadata=_ID)
    session_id: bytes = field(metadata=_KEY)
    signature: bytes = field(metadata={"len": 64})


# --------------------------------------------------------------- round 4: Unmasking
@wire.message("masking.UnmaskRequest")
@dataclass(frozen=True)
class UnmaskRequest:
    """Server -> client: who is alive (U_3) and who dropped (U_2 \\ U_3); in
    malicious-server mode with the U_3 signatures collected in round 3."""

    session_id: bytes = field(metadata=_KEY)
    alive: np.ndarray = field(metadata=_IDS)
    dropped: np.ndarray = field(metadata=_IDS)
    signatures: dict[int, bytes] = field(default_factory=dict, metadata={"key": _ID, "value": {"len": 64}})


@wire.message("masking.UnmaskShares")
@dataclass(frozen=True)
class UnmaskShares:
    """Client -> server: shares of ``b_v`` for alive ``v`` and of ``s_v^SK`` for
    dropped ``v`` (rows of SHARE_CHUNKS field elements, flattened)."""

    client_id: int = field(metadata=_ID)
    session_id: bytes = field(metadata=_KEY)
    self_mask_owners: np.ndarray = field(metadata=_IDS)
    self_mask_shares: np.ndarray = field(metadata=_IDS)
    mask_key_owners: np.ndarray = field(metadata=_IDS)
    mask_key_shares: np.ndarray = field(metadata=_IDS)


SERVER_MESSAGES = (KeysBroadcast, ForwardedShares, ConsistencyRequest, UnmaskRequest)
CLIENT_MESSAGES = (AdvertiseKeys, ShareKeys, MaskedInput, ConsistencySignature, UnmaskShares)
