"""X25519 key agreement (RFC 7748).

A shared secret of all zeros (the result of a low-order peer public key) is
rejected: an attacker who could force it would know the "shared" key. The raw
shared secret is never used directly; callers pass it through
:func:`secagg.primitives.kdf.derive_key` with a label and the session id.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import gmpy2
import numpy as np

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import BadPublicKey
from .randomness import RandomSource, default_random

__all__ = ["KeyPair", "generate_keypair", "public_from_private", "agree", "agree_many", "is_canonical_public",
           "canonical_publics", "check_public", "in_prime_order_subgroup", "on_curve", "prime_order_part",
           "key_matches_public", "LOW_ORDER_U", "PUBLIC_KEY_SIZE"]

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
    exchange, load = key.exchange, X25519PublicKey.from_public_bytes
    out = []
    for peer_public in peer_publics:
        if type(peer_public) is not bytes:
            if not isinstance(peer_public, (bytes, bytearray)):
                raise BadPublicKey("X25519 public key must be 32 bytes")
            peer_public = bytes(peer_public)
        if len(peer_public) != PUBLIC_KEY_SIZE:
            raise BadPublicKey("X25519 public key must be 32 bytes")
        try:
            shared = exchange(load(peer_public))
        except ValueError as exc:
            raise BadPublicKey(f"X25519 exchange failed: {exc}") from None
        if shared == _ZERO_SECRET:
            raise BadPublicKey("X25519 shared secret is all zeros (low-order key)")
        out.append(shared)
    return out


_ZERO_SECRET = bytes(PUBLIC_KEY_SIZE)


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


def check_public(public: bytes, *, subgroup: bool = True) -> None:
    """Refuse a malformed, non-canonical, low-order, twist or (with
    ``subgroup``, the default) mixed-order X25519 public key with
    :class:`~secagg.errors.BadPublicKey`. The five low-order u-coordinates
    are compared first (tests check the list against an exchange with a
    fixed scalar), then the point must be on the curve (one Legendre symbol),
    then, with ``subgroup``, in the prime-order subgroup
    (:func:`in_prime_order_subgroup`, one exchange): what an honest key pair
    produces.

    The masking server checks advertised keys with ``subgroup=False``: a key
    with a small-order component gives the same X25519 outputs as its
    prime-order part (every clamped scalar is a multiple of the cofactor 8),
    and the server matches a reconstructed mask key against it up to that
    component (:func:`key_matches_public`), so such a key harms nobody and
    the exchange is saved (masking SPEC §4.2). Clients do not rely on this
    check: their own exchanges refuse an all-zero result."""
    if not is_canonical_public(public):
        raise BadPublicKey("X25519 public key is not canonically encoded")
    u = int.from_bytes(public, "little")
    if u in LOW_ORDER_U:
        raise BadPublicKey("X25519 public key has low order")
    if not on_curve(u):
        raise BadPublicKey("X25519 public key is not a point of the curve (a point of the twist)")
    if subgroup and not _probe_gives_back(u):
        raise BadPublicKey("X25519 public key is not a point of the prime-order subgroup "
                           "(it has a small-order component)")


# Curve25519 (RFC 7748): v^2 = u^3 + A u^2 + u over GF(p), p = 2^255 - 19, whose
# group of rational points is cyclic of order 8 l (l prime).
_P = gmpy2.mpz(_X25519_P)
_A = gmpy2.mpz(486662)
_L = 2**252 + 27742317777372353535851937790883648493
# The scalar k = -1 mod l, 0 mod 8, in [2^254, 2^255): a clamped X25519 scalar
# (RFC 7748 leaves it as it is), so OpenSSL's exchange computes u([k] P) with it.
_SUBGROUP_SCALAR = 8 * _L - 8 * pow(8, -1, _L) % (8 * _L)
assert _SUBGROUP_SCALAR % 8 == 0 and _SUBGROUP_SCALAR % _L == _L - 1 and 2**254 <= _SUBGROUP_SCALAR < 2**255
_subgroup_probe: "X25519PrivateKey | None" = None


def on_curve(u: int) -> bool:
    """Whether ``u`` (in ``[0, p)``) is the u-coordinate of a point of
    Curve25519 other than ``O`` and the point of order 2 at ``u = 0``, not of
    its twist: ``u^3 + A u^2 + u`` is a nonzero square (one Legendre symbol)."""
    x = gmpy2.mpz(u)
    if not 0 < x < _P:
        return False
    return bool(gmpy2.legendre(x * (x * x + _A * x + 1) % _P, _P) == 1)


def in_prime_order_subgroup(u: int) -> bool:
    """Whether ``u`` (in ``[0, p)``) is the u-coordinate of a point of order
    ``l``, the prime-order subgroup ``8E`` of Curve25519 (so not a point of the
    twist, and no component of order 2, 4 or 8).

    One Legendre symbol and one X25519 exchange (OpenSSL's ladder), instead of
    a ladder by the unclamped ``l``. ``u`` is on the curve, not its twist,
    exactly when ``u^3 + A u^2 + u`` is a nonzero square. A curve point is
    ``P = P_l + T`` with ``P_l`` in the subgroup and ``T`` of order dividing
    8 (the group is cyclic of order ``8 l``). The scalar ``k`` with
    ``k = -1 mod l`` and ``k = 0 mod 8`` lies in ``[2^254, 2^255)``, so
    X25519 takes it unchanged and returns ``u([k] P) = u(-P_l) = u(P_l)``:
    ``[k]`` kills ``T`` and negates ``P_l``. That equals ``u(P)`` iff
    ``P_l + T = +-P_l``, i.e. ``T = O`` or ``2 P_l = -T``; the latter puts
    ``P_l`` of order dividing 16 in a group of prime order ``l``, so
    ``P_l = O``: a low-order point, whose exchange gives all zeros (refused,
    and listed in :data:`LOW_ORDER_U` besides). So ``P`` is in the subgroup iff
    the exchange gives ``u`` back. Tests check the result against
    ``[l] P = O`` with a Montgomery ladder, on points with every torsion
    order."""
    return on_curve(u) and _probe_gives_back(u)  # not on the curve: a point of the twist (or of order 2)


def _probe_gives_back(u: int) -> bool:
    """The exchange step of :func:`in_prime_order_subgroup`, for a ``u`` known
    to be on the curve."""
    public = int(u).to_bytes(32, "little")
    try:
        return prime_order_part(public) == public
    except BadPublicKey:  # all zeros: a point of low order
        return False


def prime_order_part(public: bytes) -> bytes:
    """The u-coordinate of ``P_l``, the prime-order part of the curve point
    ``P = P_l + T`` named by ``public`` (``T`` of order dividing 8): one
    X25519 exchange with the clamped scalar that is ``-1 mod l``, which kills
    ``T`` and negates ``P_l`` (the u-coordinate ignores the sign). Equals
    ``public`` for every honest key. Raises
    :class:`~secagg.errors.BadPublicKey` if the exchange gives all zeros (a
    low-order point, ``P_l = O``). Meaningful for keys on the curve
    (:func:`on_curve`)."""
    global _subgroup_probe
    if not isinstance(public, (bytes, bytearray)) or len(public) != PUBLIC_KEY_SIZE:
        raise BadPublicKey("X25519 public key must be 32 bytes")
    if _subgroup_probe is None:  # loading the key computes its public point: once per process
        _subgroup_probe = X25519PrivateKey.from_private_bytes(_SUBGROUP_SCALAR.to_bytes(32, "little"))
    try:
        image = _subgroup_probe.exchange(X25519PublicKey.from_public_bytes(bytes(public)))
    except ValueError:
        raise BadPublicKey("X25519 public key has low order") from None
    return image


def key_matches_public(private: bytes, public: bytes) -> bool:
    """Whether ``private`` is the private key behind the advertised
    ``public``, up to a small-order component: its public key equals
    ``public`` or the prime-order part of it (:func:`prime_order_part`, one
    exchange, paid only when the first comparison fails). A key ``P_l + T``
    gives every clamped exchange what ``P_l`` gives, so its owner holds the
    private key of ``P_l`` (masking SPEC §4.2). ``public`` is a key the
    caller checked with :func:`check_public` (canonical, not low-order, on
    the curve)."""
    mine = public_from_private(private)
    if mine == public:
        return True
    try:
        return mine == _prime_order_part_cached(bytes(public))
    except BadPublicKey:
        return False


# a server retrying the reconstruction of one key matches each candidate against the same public key
_prime_order_part_cached = functools.lru_cache(maxsize=1024)(prime_order_part)
