"""Authenticated encryption: ChaCha20-Poly1305 (RFC 8439) with associated data.

Wire layout: ``nonce (12 bytes) || ciphertext || tag (16 bytes)``. Nonces are
random (from the injected source); each key encrypts few messages (one per peer
per round), far below the random-nonce collision bound. Every failure to decrypt
(short input, wrong key, wrong associated data, flipped bit) raises the same
:class:`secagg.errors.InvalidCiphertext`, after pyca's ``InvalidToken``.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import InvalidCiphertext
from .randomness import RandomSource, default_random

__all__ = ["encrypt", "decrypt", "NONCE_SIZE", "TAG_SIZE", "OVERHEAD"]

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE


def encrypt(key: bytes, plaintext: bytes, associated_data: bytes, rng: RandomSource | None = None) -> bytes:
    if len(key) != 32:
        raise ValueError("AEAD key must be 32 bytes")
    nonce = default_random(rng).bytes(NONCE_SIZE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)


def decrypt(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    if len(key) != 32:
        raise ValueError("AEAD key must be 32 bytes")
    if not isinstance(ciphertext, (bytes, bytearray)) or len(ciphertext) < OVERHEAD:
        raise InvalidCiphertext()
    try:
        return ChaCha20Poly1305(key).decrypt(bytes(ciphertext[:NONCE_SIZE]), bytes(ciphertext[NONCE_SIZE:]),
                                             associated_data)
    except (InvalidTag, ValueError, OverflowError):
        raise InvalidCiphertext() from None
