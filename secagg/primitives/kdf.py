"""HKDF-SHA256 (RFC 5869) with mandatory domain separation.

Every derivation names its purpose: ``label`` is required and non-empty, and is
prefixed with ``secagg/v1/`` before it becomes HKDF's ``info``. A derivation bound
to a session passes the session id as ``context`` (security invariant 3): keys of
one session are then unrelated to keys of any other.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["hkdf", "derive_key", "derive_keys", "LABEL_PREFIX"]

LABEL_PREFIX = b"secagg/v1/"


def _as_bytes(label: str | bytes) -> bytes:
    if isinstance(label, str):
        return label.encode()
    if isinstance(label, (bytes, bytearray)):
        return bytes(label)
    # bytes(5) would be five zero bytes: a label must be text or bytes.
    raise TypeError(f"hkdf: label must be str or bytes, got {type(label).__name__}")


def hkdf(secret: bytes, *, label: str | bytes, length: int = 32, salt: bytes | None = None,
         raw_info: bool = False) -> bytes:
    """HKDF-SHA256(secret, salt, info) with ``info = "secagg/v1/" + label``.

    ``raw_info=True`` uses ``label`` verbatim as ``info``, and then also accepts
    an empty one (known-answer tests against RFC 5869 only: its test case 3 has
    an empty ``info``). Protocol code never sets it.
    """
    label_b = _as_bytes(label)
    if not label_b and not raw_info:
        raise ValueError("hkdf: a non-empty domain-separation label is required")
    if not isinstance(secret, (bytes, bytearray)) or len(secret) == 0:
        raise ValueError("hkdf: secret must be non-empty bytes")
    if not 1 <= length <= 255 * 32:
        raise ValueError("hkdf: length out of range")
    info = label_b if raw_info else LABEL_PREFIX + label_b
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(bytes(secret))


_CONTEXT_PREFIX = b"secagg/v1/context\x00"
_INFO_BLOCK1: dict[str, bytes] = {}  # label -> HKDF info || 0x01 (one output block)


def derive_key(secret: bytes, label: str, context: bytes, length: int = 32) -> bytes:
    """A key for one purpose (``label``) bound to ``context`` (usually the
    session id, sometimes followed by party ids). ``context`` goes in HKDF's salt
    slot hashed to a fixed length, so distinct contexts give independent keys."""
    if not isinstance(context, (bytes, bytearray)):
        raise TypeError("derive_key: context must be bytes (usually the session id)")
    salt = hashlib.sha256(_CONTEXT_PREFIX + context).digest()
    if length == 32 and isinstance(label, str) and label and isinstance(secret, bytes) and secret:
        # HKDF-SHA256 with one output block, straight on the stdlib's HMAC: the
        # same bytes as hkdf() (a test checks it) at a fraction of the call cost,
        # which matters in the per-peer loops of the masking protocol.
        info = _INFO_BLOCK1.get(label)
        if info is None:
            info = LABEL_PREFIX + label.encode() + b"\x01"
            if len(_INFO_BLOCK1) < 256:  # protocol labels are a few constants; never grow without bound
                _INFO_BLOCK1[label] = info
        return hmac.digest(hmac.digest(salt, secret, "sha256"), info, "sha256")
    return hkdf(secret, label=label, length=length, salt=salt)


def derive_keys(secrets: "Sequence[bytes]", label: str, contexts: "Sequence[bytes]") -> list[bytes]:
    """``[derive_key(s, label, c) for s, c in zip(secrets, contexts)]`` (32-byte
    keys), for the per-peer loops of the masking protocol: the label is
    checked once and each key costs one SHA-256 and two HMACs, with no
    per-call dispatch. Every secret must be non-empty ``bytes``, every
    context ``bytes``."""
    if len(secrets) != len(contexts):
        raise ValueError("derive_keys: one context per secret")
    if not isinstance(label, str) or not label:
        raise ValueError("derive_keys: a non-empty label is required")
    info = LABEL_PREFIX + label.encode() + b"\x01"
    sha256, digest = hashlib.sha256, hmac.digest
    out = []
    for secret, context in zip(secrets, contexts):
        if type(secret) is not bytes or not secret or type(context) is not bytes:
            raise TypeError("derive_keys: secrets must be non-empty bytes and contexts bytes")
        salt = sha256(_CONTEXT_PREFIX + context).digest()
        out.append(digest(digest(salt, secret, "sha256"), info, "sha256"))
    return out
