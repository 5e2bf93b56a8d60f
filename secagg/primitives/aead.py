"""Authenticated encryption: ChaCha20-Poly1305 (RFC 8439) with associated data.

Wire layout: ``nonce (12 bytes) || ciphertext || tag (16 bytes)``. Nonces are
random (from the injected source); each key encrypts few messages (one per peer
per round), far below the random-nonce collision bound. Every failure to decrypt
(short input, wrong key, wrong associated data, flipped bit) raises the same
:class:`secagg.errors.BadCiphertext`, after pyca's ``InvalidToken`` (a local
error: the protocol code that decrypts a peer's record turns it into
:class:`~secagg.errors.InvalidCiphertext`).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import BadCiphertext
from .randomness import RandomSource, default_random

__all__ = ["encrypt", "encrypt_many", "decrypt", "NONCE_SIZE", "TAG_SIZE", "OVERHEAD"]

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE


def encrypt(key: bytes, plaintext: bytes, associated_data: bytes, rng: RandomSource | None = None) -> bytes:
    if len(key) != 32:
        raise ValueError("AEAD key must be 32 bytes")
    nonce = default_random(rng).bytes(NONCE_SIZE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)


def encrypt_many(keys: "list[bytes]", plaintexts: "list[bytes]", associated_data: "list[bytes]",
                 rng: RandomSource | None = None) -> "list[bytes]":
    """:func:`encrypt` of many messages, each under its own key; the nonces are
    drawn in one call (the same bytes, in the same order, as one draw per
    message from a stream source)."""
    if not len(keys) == len(plaintexts) == len(associated_data):
        raise ValueError("encrypt_many needs one key and one associated data per plaintext")
    if any(len(k) != 32 for k in keys):
        raise ValueError("AEAD key must be 32 bytes")
    nonces = default_random(rng).bytes(NONCE_SIZE * len(keys))
    out = []
    for i, (key, plaintext, ad) in enumerate(zip(keys, plaintexts, associated_data)):
        nonce = nonces[NONCE_SIZE * i:NONCE_SIZE * (i + 1)]
        out.append(nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad))
    return out


def decrypt(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    if len(key) != 32:
        raise ValueError("AEAD key must be 32 bytes")
    if not isinstance(ciphertext, (bytes, bytearray)) or len(ciphertext) < OVERHEAD:
        raise BadCiphertext()
    try:
        return ChaCha20Poly1305(key).decrypt(bytes(ciphertext[:NONCE_SIZE]), bytes(ciphertext[NONCE_SIZE:]),
                                             associated_data)
    except (InvalidTag, ValueError, OverflowError):
        raise BadCiphertext() from None
