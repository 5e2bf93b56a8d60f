"""Session-bound derivations of the masking protocol (SPEC.md §4): every key,
associated-data field, commitment and signed statement includes the session id
and the party ids, each under its own label."""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from ...primitives.kdf import derive_key, derive_keys

SELF_MASK_TAG = b"masking/self-mask"
PAIR_MASK_TAG = b"masking/pairwise-mask"


def _pair_context(session_id: bytes, u: int, v: int, pub_u: bytes, pub_v: bytes) -> bytes:
    (a, pa), (b, pb) = sorted(((u, pub_u), (v, pub_v)))
    return session_id + struct.pack(">II", a, b) + pa + pb


def share_encryption_key(shared_secret: bytes, session_id: bytes, u: int, v: int, enc_pub_u: bytes,
                         enc_pub_v: bytes) -> bytes:
    """``k_{u,v}``: the AEAD key for shares between u and v (symmetric in u, v)."""
    return derive_key(shared_secret, "masking/share-encryption", _pair_context(session_id, u, v, enc_pub_u, enc_pub_v))


def pairwise_mask_seed(shared_secret: bytes, session_id: bytes, u: int, v: int, mask_pub_u: bytes,
                       mask_pub_v: bytes) -> bytes:
    """``s_{u,v}``: the full 256-bit PRG key of the pairwise mask (symmetric)."""
    return derive_key(shared_secret, "masking/pairwise-mask", _pair_context(session_id, u, v, mask_pub_u, mask_pub_v))


def pair_keys(label: str, shared_secrets: "list[bytes]", session_id: bytes, u: int, pub_u: bytes,
              peers: "list[int]", peer_publics: "list[bytes]") -> list[bytes]:
    """:func:`share_encryption_key` (``label`` "masking/share-encryption") or
    :func:`pairwise_mask_seed` ("masking/pairwise-mask") of ``u`` with every
    peer at once: the same keys, one derivation loop."""
    if label not in ("masking/share-encryption", "masking/pairwise-mask"):
        raise ValueError(f"not a pairwise label: {label!r}")
    if u in peers:
        raise ValueError("a party has no pairwise key with itself")
    pack = struct.Struct(">II").pack
    contexts = [session_id + pack(u, v) + pub_u + pv if u < v else session_id + pack(v, u) + pv + pub_u
                for v, pv in zip(peers, peer_publics)]
    return derive_keys(shared_secrets, label, contexts)


def share_associated_data(session_id: bytes, sender: int, recipient: int) -> bytes:
    return b"secagg/v1/masking/share\x00" + session_id + struct.pack(">II", sender, recipient)


def self_mask_commitment(session_id: bytes, u: int, seed: bytes) -> bytes:
    return hashlib.sha256(b"secagg/v1/masking/commit\x00" + session_id + struct.pack(">I", u) + seed).digest()


def advertise_statement(session_id: bytes, u: int, enc_public: bytes, mask_public: bytes, commitment: bytes) -> bytes:
    return (b"secagg/v1/masking/advertise\x00" + session_id + struct.pack(">I", u) + enc_public + mask_public
            + commitment)


def consistency_statement(session_id: bytes, signer: int, enc_public: bytes, mask_public: bytes,
                          alive: np.ndarray) -> bytes:
    """What a client signs in ConsistencyCheck: U_3, bound to the session and
    to the signer's own per-round public keys (so a signature cannot be reused
    in another run even if a server repeated a session nonce)."""
    return (b"secagg/v1/masking/consistency\x00" + session_id + struct.pack(">I", signer) + enc_public
            + mask_public + np.asarray(alive, dtype=">u4").tobytes())


def mask_sign(u: int, v: int) -> int:
    """The sign of the pairwise mask ``u`` adds for ``v``: + if u < v, - if u > v,
    so that the two cancel in the sum."""
    return 1 if u < v else -1
