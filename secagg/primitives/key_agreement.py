"""X25519 key agreement (RFC 7748).

A shared secret of all zeros (the result of a low-order peer public key) is
rejected: an attacker who could force it would know the "shared" key. The raw
shared secret is never used directly; callers pass it through
:func:`secagg.primitives.kdf.derive_key` with a label and the session id.
"""

from __future__ import annotations

from dataclasses import dataclass

import gmpy2
import numpy as np

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import BadPublicKey
from .randomness import RandomSource, default_random

__all__ = ["KeyPair", "generate_keypair", "public_from_private", "agree", "agree_many", "is_canonical_public",
           "canonical_publics", "check_public", "in_prime_order_subgroup", "LOW_ORDER_U", "PUBLIC_KEY_SIZE"]

PUBLIC_KEY_SIZE = 32


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair. ``private`` is the 32-byte scalar (clamped by X25519)."""

    private: bytes
    public: bytes

    def __repr__(self) -> str:  # never print secrets
        return f"KeyPair(public={self.public.hex()[:16]}...)"


def generate_keypair(rng: RandomSource | None = None) -> KeyPair:
    """A fresh key pair from 32 bytes of ``rng``."""
    private = default_random(rng).bytes(32)
    pub = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    return KeyPair(private=private, public=pub)


def public_from_private(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def agree(private: bytes, peer_public: bytes) -> bytes:
    """The 32-byte X25519 shared secret. Raises :class:`~secagg.errors.BadPublicKey`
    for a malformed or low-order peer key (all-zero output)."""
    # Our own key is checked outside the try: a bad private key is a local bug
    # (ValueError), not the peer's fault.
    own = X25519PrivateKey.from_private_bytes(bytes(private))
    if not isinstance(peer_public, (bytes, bytearray)) or len(peer_public) != PUBLIC_KEY_SIZE:
        raise BadPublicKey("X25519 public key must be 32 bytes")
    try:
        shared = own.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))
    except ValueError as exc:  # cryptography refuses all-zero results itself
        raise BadPublicKey(f"X25519 exchange failed: {exc}") from None
    if shared == b"\x00" * 32:
        raise BadPublicKey("X25519 shared secret is all zeros (low-order key)")
    return shared


def agree_many(private: bytes, peer_publics: "list[bytes]") -> "list[bytes]":
    """:func:`agree` with one private key against many peers, loading the
    private key once (loading it computes its public point: as costly as an
    exchange)."""
    key = X25519PrivateKey.from_private_bytes(private)
    out = []
    for peer_public in peer_publics:
        if not isinstance(peer_public, (bytes, bytearray)) or len(peer_public) != PUBLIC_KEY_SIZE:
            raise BadPublicKey("X25519 public key must be 32 bytes")
        try:
            shared = key.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))
        except ValueError as exc:
            raise BadPublicKey(f"X25519 exchange failed: {exc}") from None
        if shared == b"\x00" * 32:
            raise BadPublicKey("X25519 shared secret is all zeros (low-order key)")
        out.append(shared)
    return out


_X25519_P = 2**255 - 19


def is_canonical_public(public: bytes) -> bool:
    """Whether ``public`` is the canonical encoding of an X25519 u-coordinate
    (top bit clear, value below 2^255 - 19). Non-canonical encodings name the
    same point as a canonical one, so a party could present another's key
    under different bytes; protocols refuse them."""
    return (isinstance(public, (bytes, bytearray)) and len(public) == PUBLIC_KEY_SIZE
            and int.from_bytes(public, "little") < _X25519_P)


def canonical_publics(keys: "np.ndarray") -> "np.ndarray":
    """:func:`is_canonical_public` for the rows of an ``(m, 32)`` uint8 array:
    a boolean per row. Non-canonical means the top bit set, or a value in
    ``[2^255 - 19, 2^255)``: top byte 0x7f, bytes 1..30 all 0xff and byte 0 at
    least 0xed."""
    keys = np.asarray(keys, dtype=np.uint8)
    if keys.ndim != 2 or keys.shape[1] != PUBLIC_KEY_SIZE:
        raise ValueError("expected an (m, 32) array of public keys")
    top = keys[:, 31]
    in_gap = (top == 0x7F) & (keys[:, 1:31] == 0xFF).all(axis=1) & (keys[:, 0] >= 0xED)
    return (top < 0x80) & ~in_gap


# The canonical u-coordinates of every point whose X25519 output is all zeros
# for every (clamped) scalar: the points of order 1, 2, 4 and 8 on the curve and
# on its twist (u = 0, 1, p - 1, and the two u of the order-8 points; the same
# list libsodium refuses). Non-canonical encodings (u >= p) are refused before.
LOW_ORDER_U = frozenset({
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    _X25519_P - 1,
})


def check_public(public: bytes) -> None:
    """Refuse a malformed, non-canonical, low-order or mixed-order X25519
    public key with :class:`~secagg.errors.BadPublicKey`: a key is accepted
    only if it is the canonical u-coordinate of a point of the prime-order
    subgroup (what an honest key pair produces). No exchange: the five
    low-order u-coordinates are compared first (tests check the list against an
    exchange with a fixed scalar), then :func:`in_prime_order_subgroup`.

    The server uses it to refuse such a key when it is advertised. A key with
    a small-order component gives the same X25519 outputs as its prime-order
    part (every clamped scalar is a multiple of the cofactor 8), but it is not
    the public key of any private key: a server that reconstructs the key
    pair of a client who dropped would find that the private key does not
    match what was advertised, and could not complete the round. Refused at
    advertisement, the client is simply left out. Clients do not rely on this
    check: their own exchanges refuse an all-zero result."""
    if not is_canonical_public(public):
        raise BadPublicKey("X25519 public key is not canonically encoded")
    u = int.from_bytes(public, "little")
    if u in LOW_ORDER_U:
        raise BadPublicKey("X25519 public key has low order")
    if not in_prime_order_subgroup(u):
        raise BadPublicKey("X25519 public key is not a point of the prime-order subgroup "
                           "(a point of the twist, or one with a small-order component)")


# Curve25519 (RFC 7748): v^2 = u^3 + A u^2 + u over GF(p), p = 2^255 - 19, whose
# group of rational points is cyclic of order 8 l (l prime).
_P = gmpy2.mpz(_X25519_P)
_A = gmpy2.mpz(486662)
_SQRT_M1 = gmpy2.powmod(2, (_X25519_P - 1) // 4, _P)
_SQRT_EXP = (_X25519_P + 3) // 8
_HALF = gmpy2.invert(2, _P)


def _sqrt(a: "gmpy2.mpz") -> "gmpy2.mpz | None":
    """A square root of ``a`` modulo p (p = 5 mod 8), or ``None``."""
    r = gmpy2.powmod(a, _SQRT_EXP, _P)
    if r * r % _P == a:
        return r
    r = r * _SQRT_M1 % _P
    return r if r * r % _P == a else None


def _half_trace(x: "gmpy2.mpz") -> "gmpy2.mpz | None":
    """For ``P`` in ``2E`` with ``u(P) = x``: ``w = u(Q) + 1/u(Q)`` of its
    rational halves ``Q`` (see :func:`in_prime_order_subgroup`), or ``None``."""
    s = _sqrt((x * x + _A * x + 1) % _P)
    if s is None:  # cannot happen for a rational point in 2E; refuse rather than guess
        return None
    w = (2 * x + 2 * s) % _P
    if gmpy2.legendre((w * w - 4) % _P, _P) == -1:  # a Jacobi symbol first: one root, not two
        w = (2 * x - 2 * s) % _P
    return w


def in_prime_order_subgroup(u: int) -> bool:
    """Whether ``u`` (in ``[0, p)``) is the u-coordinate of a point of order
    ``l``, the prime-order subgroup ``8E`` of Curve25519 (so not a point of the
    twist, and no component of order 2, 4 or 8).

    By halving instead of multiplying by ``l`` (three square roots in gmpy2
    instead of a 253-step ladder). The curve's only rational point of
    order 2 is ``(0, 0)`` (``A^2 - 4`` is not a square), so a point
    ``P != (0, 0)`` is in ``2E`` exactly when ``u(P)`` is a square (the
    2-descent map). If it is, a half ``Q`` (``2Q = P``) has
    ``w = u(Q) + 1/u(Q) = 2u +- 2 sqrt(u^2 + A u + 1)`` (the duplication
    formula ``u(2Q) = (x^2 - 1)^2 / (4 x (x^2 + A x + 1))`` is palindromic in
    ``x``), and ``u(Q)`` is a root of ``x^2 - w x + 1``: the sign whose
    discriminant ``w^2 - 4`` is a square gives the rational halves ``Q`` and
    ``Q + (0, 0)`` (the other sign gives halves that differ by a non-rational
    point of order 2). Both lie in ``2E`` or neither, since ``(0, 0)`` is in
    ``4E``. So ``P`` is in ``8E`` iff ``u(P)`` is a square, ``u(Q)`` is a
    square and ``u(R)`` is a square, for halves ``2Q = P``, ``2R = Q``.

    The last test needs no root: the two roots of ``x^2 - w x + 1`` have
    product 1, so the same quadratic character, and a root ``x = y^2`` gives
    ``w + 2 = (y + 1/y)^2``; conversely if ``w + 2 = z^2`` then ``w - 2``
    is a square too (their product ``w^2 - 4`` is), ``y = (z + sqrt(w - 2))/2``
    solves ``y + 1/y = z`` and ``y^2`` is a root. So ``u(R)`` is a square iff
    ``w_Q + 2`` is, with ``w_Q`` the trace of ``Q``'s halves. Tests check the
    result against ``[l] P = O`` with a Montgomery ladder."""
    x = gmpy2.mpz(u)
    if not 0 < x < _P:
        return False
    if gmpy2.legendre(x * (x * x + _A * x + 1) % _P, _P) != 1:
        return False  # a point of the twist (or of order 2)
    if gmpy2.legendre(x, _P) != 1:
        return False  # P not in 2E
    w = _half_trace(x)
    if w is None:
        return False
    r = _sqrt((w * w - 4) % _P)
    if r is None:
        return False
    x = (w + r) * _HALF % _P  # u(Q), a rational half of P
    if x == 0 or gmpy2.legendre(x, _P) != 1:
        return False  # Q not in 2E: P not in 4E
    w = _half_trace(x)
    # u(R) is a square iff w + 2 is (R a half of Q): P in 8E
    return w is not None and gmpy2.legendre((w + 2) % _P, _P) == 1
