"""Ed25519 signatures (RFC 8032), used in the malicious-server mode to bind each
client's key advertisement and its consistency-check reply to the session."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import BadSignature
from .randomness import RandomSource, default_random

__all__ = ["SigningKeyPair", "generate_signing_keypair", "sign", "verify", "public_signing_key"]


@dataclass(frozen=True)
class SigningKeyPair:
    private: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"SigningKeyPair(public={self.public.hex()[:16]}...)"


def generate_signing_keypair(rng: RandomSource | None = None) -> SigningKeyPair:
    seed = default_random(rng).bytes(32)
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return SigningKeyPair(private=seed, public=pub)


def sign(private: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private).sign(message)


def verify(public: bytes, message: bytes, signature: bytes) -> None:
    """Return ``None`` or raise :class:`secagg.errors.BadSignature` (for every
    failure: bad key encoding, bad length, wrong signature)."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public)).verify(bytes(signature), message)
    except (_CryptoInvalidSignature, ValueError, TypeError):
        raise BadSignature() from None


def public_signing_key(private: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte private seed."""
    return Ed25519PrivateKey.from_private_bytes(bytes(private)).public_key().public_bytes_raw()
