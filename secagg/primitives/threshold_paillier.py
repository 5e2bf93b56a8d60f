"""Threshold Paillier / Damgard-Jurik decryption (Shoup-style), on gmpy2.

After Damgard and Jurik, "A generalisation, a simplification and some
applications of Paillier's probabilistic public-key system" (PKC 2001, §4),
which applies Shoup's threshold RSA ("Practical threshold signatures",
EUROCRYPT 2000) to Paillier. No single party holds a decryption key: any
``t`` of ``l`` share holders decrypt together, fewer learn nothing.

Notation (protocols/paillier/SPEC.md §8): ``n = p q`` with safe primes
``p = 2p' + 1``, ``q = 2q' + 1``; ``m = p' q'``; plaintexts live in
``Z_{n^s}``, ciphertexts in ``Z*_{n^{s+1}}`` (``s = 1`` is Paillier, with the
same ciphertexts as :mod:`secagg.primitives.paillier`). ``Delta = l!``.

* **Dealing** (:func:`deal`): a dealer draws the safe primes, sets
  ``d = 0 mod m``, ``d = 1 mod n^s``, shares ``d`` with a random polynomial
  ``f`` of degree ``t - 1`` over ``Z_{n^s m}`` (``s_i = f(i)``), publishes a
  random square ``v`` and the verification keys ``v_i = v^(Delta s_i)``, and
  returns. ``p``, ``q``, ``m``, ``d`` and ``f`` exist only inside
  :func:`deal` (the dealer forgets them: nothing keeps a reference).
* **Partial decryption** (:func:`partial_decrypt`): ``c_i = c^(2 Delta s_i)``
  for each ciphertext, with one *batched* Chaum-Pedersen proof that every
  ``c_i`` used the exponent committed to by ``v_i``: with public 128-bit
  weights ``rho_j`` drawn by hashing the request and the answer (Fiat-Shamir),
  ``X = prod c_j^rho_j``, ``Y = prod c_{i,j}^rho_j``, and a proof that
  ``log_{X^4} Y^2 = log_v v_i`` (Shoup's proof of equality of discrete logs
  in the squares of ``Z*_{n^{s+1}}``). One wrong ``c_{i,j}`` passes only if
  the weights hit a relation, probability about ``2^-128`` per hash query
  (the squares have no small-order elements with safe primes).
* **Combining** (:func:`combine`): any ``t`` verified shares ``S``:
  ``c' = prod_{i in S} c_i^(2 D L_i)`` with ``L_i`` the Lagrange coefficients
  at 0 and ``D`` their common denominator, so ``c' = c^(4 Delta D d) =
  (1 + n)^(4 Delta D M)`` and ``M = dlog(c') / (4 Delta D) mod n^s``.

Everything is integers: ``mpz`` arithmetic, exact Lagrange coefficients, no
floating point. Local refusals are :class:`~secagg.errors.PrimitiveError`
subclasses (:class:`BadDecryptionShare`, :class:`~secagg.errors.ReconstructionError`);
the protocol layer names the party.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from ..errors import BadDecryptionShare, BadEncoding, ParameterError, ReconstructionError
from .paillier import MAX_KEY_BITS, MIN_KEY_BITS, PublicKey, _dlog_one_plus, run_chunks
from .randomness import RandomSource, default_random

__all__ = [
    "ThresholdKey", "KeyShare", "PartialDecryption", "deal", "safe_prime", "partial_decrypt",
    "verify_partial", "combine", "encrypt", "decrypt_with_shares", "lagrange_at_zero", "MAX_PARTIES",
    "CHALLENGE_BITS",
]

#: Most share holders of one key (``Delta = l!`` grows with ``l``).
MAX_PARTIES = 1000
#: Bits of the batch weights and of the Chaum-Pedersen challenge.
CHALLENGE_BITS = 128
_ZK_SLACK_BITS = 128  # statistical zero knowledge of z = r + e * Delta * s_i

_KEY_TAG = b"secagg/v1/threshold-paillier/key\x00"
_RHO_TAG = b"secagg/v1/threshold-paillier/batch-weights\x00"
_CHALLENGE_TAG = b"secagg/v1/threshold-paillier/challenge\x00"


# ---------------------------------------------------------------- key types

class ThresholdKey:
    """The public side of a dealt key: ``n``, ``s``, the threshold ``t``, the
    number of shares ``l``, ``v`` and the verification keys ``v_1..v_l``.

    ``public_key`` is the Paillier key of the same ``n`` (encryption for
    ``s = 1`` is plain Paillier, :mod:`secagg.primitives.paillier`).
    ``key_id`` hashes every public value."""

    __slots__ = ("n", "s", "threshold", "parties", "v", "verification_keys", "n_s", "modulus", "delta",
                 "element_bytes", "key_id", "public_key")

    def __init__(self, n: int, s: int, threshold: int, parties: int, v: int, verification_keys: Sequence[int]):
        for name, x in (("n", n), ("s", s), ("threshold", threshold), ("parties", parties), ("v", v)):
            if isinstance(x, bool) or not isinstance(x, (int, type(mpz(0)))):
                raise ParameterError(f"{name} must be an integer")
        self.public_key = PublicKey(int(n))  # exact bit length, odd, not a square
        if not 1 <= int(s) <= 4:
            raise ParameterError(f"s must be in [1, 4], got {s}")
        if not 2 <= int(parties) <= MAX_PARTIES:
            raise ParameterError(f"the number of share holders must be in [2, {MAX_PARTIES}], got {parties}")
        if not 1 <= int(threshold) <= int(parties):
            raise ParameterError(f"threshold must be in [1, {parties}], got {threshold}")
        self.n = mpz(n)
        self.s = int(s)
        self.threshold = int(threshold)
        self.parties = int(parties)
        self.n_s = self.n ** self.s
        self.modulus = self.n_s * self.n
        self.element_bytes = (int(self.modulus).bit_length() + 7) // 8
        vks = tuple(mpz(x) for x in verification_keys)
        if len(vks) != self.parties:
            raise ParameterError(f"{len(vks)} verification keys for {self.parties} share holders")
        for x in (mpz(v),) + vks:
            if not 0 < x < self.modulus or gmpy2.gcd(x, self.n) != 1:
                raise ParameterError("a verification key is not in Z*_{n^(s+1)}")
        self.v = mpz(v)
        self.verification_keys = vks
        self.delta = mpz(math.factorial(self.parties))
        h = hashlib.sha256(_KEY_TAG)
        for x in (self.n, self.s, self.threshold, self.parties, self.v) + vks:
            b = int(x).to_bytes((int(x).bit_length() + 7) // 8 or 1, "big")
            h.update(len(b).to_bytes(4, "big") + b)
        self.key_id = h.digest()

    @property
    def key_bits(self) -> int:
        return self.public_key.key_bits

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThresholdKey) and other.key_id == self.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return (f"ThresholdKey(bits={self.key_bits}, s={self.s}, t={self.threshold} of {self.parties}, "
                f"key_id={self.key_id.hex()[:16]})")


class KeyShare:
    """Share ``i`` (1-based) of the decryption exponent: ``s_i = f(i)``.

    Secret: its ``repr`` hides the value and it never pickles (store it with
    :meth:`secret_bytes` in a file only its holder can read)."""

    __slots__ = ("index", "key", "_secret")

    def __init__(self, key: ThresholdKey, index: int, secret: int):
        if not isinstance(key, ThresholdKey):
            raise ParameterError("a key share needs its ThresholdKey")
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= key.parties:
            raise ParameterError(f"share index must be in [1, {key.parties}], got {index!r}")
        secret = mpz(secret)
        if not 0 <= secret < key.n_s * key.n ** 2:  # s_i < n^s m < n^(s+2)
            raise ParameterError("share value out of range")
        # the share must match its published verification key
        if gmpy2.powmod(key.v, key.delta * secret, key.modulus) != key.verification_keys[index - 1]:
            raise ParameterError(f"share {index} does not match its verification key")
        self.key = key
        self.index = index
        self._secret = secret

    @classmethod
    def _dealt(cls, key: ThresholdKey, index: int, secret: mpz) -> "KeyShare":
        """A share made by :func:`deal` itself, whose verification key was
        just computed from it (no second exponentiation)."""
        share = cls.__new__(cls)
        share.key, share.index, share._secret = key, index, mpz(secret)
        return share

    def secret_bytes(self) -> bytes:
        """The share value, big-endian (for the holder's own storage only)."""
        v = int(self._secret)
        return v.to_bytes((v.bit_length() + 7) // 8 or 1, "big")

    @classmethod
    def from_secret_bytes(cls, key: ThresholdKey, index: int, data: bytes) -> "KeyShare":
        return cls(key, index, int.from_bytes(bytes(data), "big"))

    def __reduce__(self):  # noqa: D105 - never serialize a key share by accident
        raise TypeError("a key share is never pickled")

    def __repr__(self) -> str:
        return f"KeyShare({self.index} of {self.key.parties}, key_id={self.key.key_id.hex()[:16]})"


@dataclass(frozen=True, eq=False)
class PartialDecryption:
    """Holder ``index``'s shares ``c_j^(2 Delta s_i)`` of a list of ciphertexts
    and the batched proof ``(e, z)`` that they are correct."""

    index: int
    values: tuple[mpz, ...]
    challenge: int
    response: int

    def __repr__(self) -> str:
        return f"PartialDecryption(index={self.index}, {len(self.values)} values)"


# ---------------------------------------------------------------- dealing

_SMALL_PRIMES = np.array([p for p in range(3, 1 << 16, 2) if gmpy2.is_prime(p)], dtype=np.int64)
_SIEVE_WINDOW = 1 << 16


def safe_prime(bits: int, rng: RandomSource | None = None) -> int:
    """A safe prime ``p = 2p' + 1`` of exactly ``bits`` bits with its top two
    bits set (``p'`` prime too), from ``rng``: random start, a sieve of both
    ``p'`` and ``2p' + 1`` by the primes below 2^16 over a window of odd
    candidates, then probable-prime tests (Fermat base 2 first, then
    ``gmpy2.is_prime`` with 32 Miller-Rabin rounds on both)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 16:
        raise ParameterError("safe primes need at least 16 bits")
    rng = default_random(rng)
    qbits = bits - 1
    nbytes = (qbits + 7) // 8
    small = _SMALL_PRIMES
    two_inv = (small + 1) // 2  # 2^-1 mod r
    four_inv = np.array([pow(4, -1, int(r)) for r in small], dtype=np.int64)
    while True:
        start = int.from_bytes(rng.bytes(nbytes), "big") >> (8 * nbytes - qbits)
        start |= (3 << (qbits - 2)) | 1  # p' odd, top two bits set (so p has them too)
        # candidate k is p' = start + 2k; strike k where r | p' or r | 2p' + 1
        b = np.array([start % int(r) for r in small], dtype=np.int64)
        alive = np.ones(_SIEVE_WINDOW, dtype=bool)
        k1 = (-b * two_inv) % small
        k2 = (-(2 * b + 1) * four_inv) % small
        for r, a1, a2 in zip(small.tolist(), k1.tolist(), k2.tolist()):
            alive[a1::r] = False
            alive[a2::r] = False
        for k in np.flatnonzero(alive).tolist():
            q = mpz(start + 2 * k)
            p = 2 * q + 1
            if p.bit_length() != bits:
                break
            if gmpy2.powmod(2, p - 1, p) != 1 or gmpy2.powmod(2, q - 1, q) != 1:
                continue
            if gmpy2.is_prime(q, 32) and gmpy2.is_prime(p, 32):
                return int(p)


def _random_below(bound: int, rng: RandomSource) -> mpz:
    nbytes = (int(bound).bit_length() + _ZK_SLACK_BITS + 7) // 8
    return mpz(int.from_bytes(rng.bytes(nbytes), "big")) % bound


def deal(key_bits: int, threshold: int, parties: int, *, s: int = 1,
         rng: RandomSource | None = None) -> tuple[ThresholdKey, list[KeyShare]]:
    """A fresh ``threshold``-of-``parties`` key with an ``n`` of exactly
    ``key_bits`` bits (two ``key_bits/2``-bit safe primes) and the ``parties``
    shares, share ``i`` at position ``i - 1``.

    The dealer is this call: it keeps nothing once it returns. With an injected
    ``rng`` (tests, vectors) the whole key is reproducible."""
    if isinstance(key_bits, bool) or not isinstance(key_bits, int) or not (
            MIN_KEY_BITS <= key_bits <= MAX_KEY_BITS and key_bits % 16 == 0):
        raise ParameterError(f"key_bits must be a multiple of 16 in [{MIN_KEY_BITS}, {MAX_KEY_BITS}], "
                             f"got {key_bits!r}")
    for name, x in (("threshold", threshold), ("parties", parties), ("s", s)):
        if isinstance(x, bool) or not isinstance(x, int):
            raise ParameterError(f"{name} must be an integer")
    if not 2 <= parties <= MAX_PARTIES or not 1 <= threshold <= parties:
        raise ParameterError(f"need 1 <= threshold <= parties, 2 <= parties <= {MAX_PARTIES}; "
                             f"got {threshold} of {parties}")
    if not 1 <= s <= 4:
        raise ParameterError(f"s must be in [1, 4], got {s}")
    rng = default_random(rng)
    half = key_bits // 2
    while True:
        p = mpz(safe_prime(half, rng))
        q = mpz(safe_prime(half, rng))
        if p != q and (p * q).bit_length() == key_bits:
            break
    n = p * q
    m = ((p - 1) // 2) * ((q - 1) // 2)
    n_s = n ** s
    nsm = n_s * m
    d = m * gmpy2.invert(m, n_s)  # d = 0 mod m, d = 1 mod n^s
    coeffs = [d] + [_random_below(nsm, rng) for _ in range(threshold - 1)]
    secrets = []
    for i in range(1, parties + 1):
        acc = mpz(0)
        for c in reversed(coeffs):  # Horner
            acc = (acc * i + c) % nsm
        secrets.append(acc)
    modulus = n_s * n
    while True:
        r = _random_below(modulus, rng)
        if r > 1 and gmpy2.gcd(r, n) == 1:
            break
    v = r * r % modulus
    delta = mpz(math.factorial(parties))
    vks = [gmpy2.powmod(v, delta * si, modulus) for si in secrets]
    key = ThresholdKey(int(n), s, threshold, parties, int(v), [int(x) for x in vks])
    shares = [KeyShare._dealt(key, i + 1, si) for i, si in enumerate(secrets)]
    del p, q, m, d, coeffs, secrets  # the dealer forgets the factorisation and the polynomial
    return key, shares


# ---------------------------------------------------------------- encryption (s >= 1)

def _one_plus_n_pow(key: ThresholdKey, message: int) -> mpz:
    """``(1 + n)^M mod n^(s+1)`` by the binomial sum ``sum_k C(M, k) n^k``."""
    out, term, binom = mpz(1), mpz(1), mpz(1)
    for k in range(1, key.s + 1):
        binom = binom * (message - k + 1) // k
        term = term * key.n
        out += binom * term
    return out % key.modulus


def encrypt(key: ThresholdKey, message: int, rng: RandomSource | None = None) -> int:
    """Damgard-Jurik encryption ``(1 + n)^M r^(n^s) mod n^(s+1)`` of
    ``0 <= M < n^s`` (for ``s = 1`` the same ciphertexts as Paillier's)."""
    if not 0 <= message < key.n_s:
        raise ParameterError("plaintext out of range [0, n^s)")
    rng = default_random(rng)
    while True:
        r = _random_below(key.n, rng)
        if r > 0 and gmpy2.gcd(r, key.n) == 1:
            break
    return int(_one_plus_n_pow(key, message) * gmpy2.powmod(r, key.n_s, key.modulus) % key.modulus)


def _dlog(key: ThresholdKey, a: mpz) -> mpz:
    """``i mod n^s`` from ``a = (1 + n)^i mod n^(s+1)`` (Damgard-Jurik's
    recursive extraction; for ``s = 1`` it is ``L(a) = (a - 1) / n``)."""
    return _dlog_one_plus(a, key.n, key.s)


# ---------------------------------------------------------------- partial decryption

def _check_ciphertexts(key: ThresholdKey, ciphertexts: Sequence[int]) -> list[mpz]:
    cs = [mpz(c) for c in ciphertexts]
    mod = key.modulus
    if cs and not (min(cs) > 0 and max(cs) < mod):
        raise BadEncoding("ciphertext outside [1, n^(s+1))")
    return cs


def _int_bytes(x: int, length: int) -> bytes:
    return int(x).to_bytes(length, "big")


def _digest_list(key: ThresholdKey, xs: Sequence[mpz]) -> bytes:
    h = hashlib.sha256()
    length = key.element_bytes
    for x in xs:
        h.update(_int_bytes(x, length))
    return h.digest()


def _batch_weights(key: ThresholdKey, context: bytes, index: int, cs_digest: bytes,
                   values: Sequence[mpz]) -> np.ndarray:
    """``rho_j``: 128-bit weights, big-endian 16-byte rows, from the key, the
    context, the holder, the ciphertexts and the answer (Fiat-Shamir)."""
    seed = (_RHO_TAG + key.key_id + len(context).to_bytes(4, "big") + context + index.to_bytes(4, "big")
            + cs_digest + _digest_list(key, values))
    stream = hashlib.shake_256(seed).digest(16 * len(values))
    return np.frombuffer(stream, dtype=np.uint8).reshape(len(values), 16)


def _multiexp(bases: Sequence[mpz], weights: np.ndarray, modulus: mpz) -> mpz:
    """``prod b_j^rho_j mod modulus`` for 128-bit ``rho_j`` (rows of
    ``weights``, big-endian bytes): Pippenger's bucket method with 8-bit
    windows, one multiplication per base and window."""
    out = mpz(1)
    if not len(bases):
        return out
    for col in range(weights.shape[1]):  # most significant byte first
        if col:
            out = gmpy2.powmod(out, 256, modulus)
        digits = weights[:, col].tolist()
        buckets = [mpz(1)] * 256
        for b, dgt in zip(bases, digits):
            if dgt:
                buckets[dgt] = buckets[dgt] * b % modulus
        running, acc = mpz(1), mpz(1)
        for dgt in range(255, 0, -1):
            running = running * buckets[dgt] % modulus
            acc = acc * running % modulus
        out = out * acc % modulus
    return out


def _product_mod(xs: Sequence[mpz], modulus: mpz) -> mpz:
    acc = mpz(1)
    for x in xs:
        acc = acc * x % modulus
    return acc


def _challenge(key: ThresholdKey, context: bytes, index: int, x4: mpz, y2: mpz, a: mpz, b: mpz) -> int:
    length = key.element_bytes
    h = hashlib.sha256(_CHALLENGE_TAG + key.key_id + len(context).to_bytes(4, "big") + context
                       + index.to_bytes(4, "big"))
    for x in (x4, y2, key.v, key.verification_keys[index - 1], a, b):
        h.update(_int_bytes(x, length))
    return int.from_bytes(h.digest()[:CHALLENGE_BITS // 8], "big")


def _response_bound(key: ThresholdKey) -> int:
    """``z = r + e Delta s_i < 2^bound``: ``r`` has this many bits."""
    return int(key.delta).bit_length() + int(key.modulus).bit_length() + CHALLENGE_BITS + _ZK_SLACK_BITS


def _powmod_all(bases: list[mpz], exponent: mpz, modulus: mpz, threads: int) -> list[mpz]:
    """``b^exponent mod modulus`` for every base: gmpy2's list function, which
    releases the GIL; with ``threads > 1`` the threads take chunks of the
    bases from a shared counter (:func:`~secagg.primitives.paillier.run_chunks`),
    so a thread on a busy core takes fewer."""
    if threads <= 1 or len(bases) < 2 * threads:
        return list(gmpy2.powmod_base_list(bases, exponent, modulus))
    out: list[mpz] = [mpz(0)] * len(bases)

    def work(lo: int, hi: int) -> None:
        out[lo:hi] = gmpy2.powmod_base_list(bases[lo:hi], exponent, modulus)

    run_chunks(work, len(bases), threads)
    return out


def partial_decrypt(share: KeyShare, ciphertexts: Sequence[int], context: bytes = b"", *,
                    rng: RandomSource | None = None, threads: int = 1) -> PartialDecryption:
    """Holder ``share.index``'s decryption shares of ``ciphertexts`` with the
    batched proof, bound to ``context`` (the protocol's session and request:
    a proof made for one request does not verify for another)."""
    key = share.key
    cs = _check_ciphertexts(key, ciphertexts)
    mod = key.modulus
    exponent = 2 * key.delta * share._secret
    values = _powmod_all(cs, exponent, mod, max(1, int(threads)))
    weights = _batch_weights(key, bytes(context), share.index, _digest_list(key, cs), values)
    x4 = gmpy2.powmod(_multiexp(cs, weights, mod), 4, mod)
    y2 = gmpy2.powmod(_multiexp(values, weights, mod), 2, mod)
    r = mpz(int.from_bytes(default_random(rng).bytes((_response_bound(key) + 7) // 8), "big"))
    r >>= (8 * ((_response_bound(key) + 7) // 8) - _response_bound(key))
    a = gmpy2.powmod(x4, r, mod)
    b = gmpy2.powmod(key.v, r, mod)
    e = _challenge(key, bytes(context), share.index, x4, y2, a, b)
    z = r + e * key.delta * share._secret
    return PartialDecryption(share.index, tuple(values), e, int(z))


def verify_partial(key: ThresholdKey, ciphertexts: Sequence[int], partial: PartialDecryption,
                   context: bytes = b"") -> None:
    """Return ``None`` or raise :class:`~secagg.errors.BadDecryptionShare`
    (wrong count, values out of range, a proof that does not verify: one
    share of another ciphertext, another exponent, another context)."""
    if not isinstance(partial, PartialDecryption):
        raise BadDecryptionShare("not a PartialDecryption")
    i = partial.index
    if isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= key.parties:
        raise BadDecryptionShare(f"share index {i!r} out of range [1, {key.parties}]")
    cs = _check_ciphertexts(key, ciphertexts)
    if len(partial.values) != len(cs):
        raise BadDecryptionShare(f"{len(partial.values)} decryption shares for {len(cs)} ciphertexts")
    mod = key.modulus
    values = [mpz(x) for x in partial.values]
    if values and not (min(values) > 0 and max(values) < mod):
        raise BadDecryptionShare("decryption share outside [1, n^(s+1))")
    if values and gmpy2.gcd(_product_mod(values, key.n), key.n) != 1:
        raise BadDecryptionShare("decryption share not in Z*_{n^(s+1)}")
    e, z = partial.challenge, partial.response
    if not (isinstance(e, int) and 0 <= e < 1 << CHALLENGE_BITS and isinstance(z, int)
            and 0 <= z < 1 << (_response_bound(key) + 1)):
        raise BadDecryptionShare("proof values out of range")
    weights = _batch_weights(key, bytes(context), i, _digest_list(key, cs), values)
    x4 = gmpy2.powmod(_multiexp(cs, weights, mod), 4, mod)
    y2 = gmpy2.powmod(_multiexp(values, weights, mod), 2, mod)
    vi = key.verification_keys[i - 1]
    try:
        a = gmpy2.powmod(x4, z, mod) * gmpy2.powmod(y2, -e, mod) % mod
        b = gmpy2.powmod(key.v, z, mod) * gmpy2.powmod(vi, -e, mod) % mod
    except (ZeroDivisionError, ValueError):  # not invertible (checked above; kept as a guard)
        raise BadDecryptionShare("decryption share not in Z*_{n^(s+1)}") from None
    if _challenge(key, bytes(context), i, x4, y2, a, b) != e:
        raise BadDecryptionShare(f"the proof of decryption share holder {i} does not verify")


# ---------------------------------------------------------------- combining

def lagrange_at_zero(indices: Sequence[int]) -> dict[int, Fraction]:
    """Exact Lagrange coefficients at 0 for the points ``indices``."""
    out: dict[int, Fraction] = {}
    for i in indices:
        num, den = 1, 1
        for j in indices:
            if j != i:
                num *= j
                den *= j - i
        out[i] = Fraction(num, den)
    return out


def combine(key: ThresholdKey, partials: Sequence[PartialDecryption] | Mapping[int, Sequence[int]],
            count: int | None = None) -> list[int]:
    """The plaintexts ``M_j`` (in ``[0, n^s)``) from verified decryption shares
    of the same ciphertexts by at least ``t`` distinct holders (the first ``t``
    by index are used; the others are not needed). Raises
    :class:`~secagg.errors.ReconstructionError` with fewer than ``t`` distinct
    holders, a duplicate index or shares of different lengths.

    Verify each share first (:func:`verify_partial`): this function trusts
    its input."""
    if isinstance(partials, Mapping):
        items = [(int(i), list(v)) for i, v in partials.items()]
    else:
        items = [(p.index, list(p.values)) for p in partials]
    idx = [i for i, _ in items]
    if len(set(idx)) != len(idx):
        raise ReconstructionError("duplicate decryption share index")
    if any(not 1 <= i <= key.parties for i in idx):
        raise ReconstructionError("decryption share index out of range")
    if len(items) < key.threshold:
        raise ReconstructionError(f"{len(items)} decryption shares, {key.threshold} needed")
    lengths = {len(v) for _, v in items}
    if len(lengths) != 1 or (count is not None and lengths != {count}):
        raise ReconstructionError("decryption shares of different lengths")
    chosen = sorted(items)[:key.threshold]
    lam = lagrange_at_zero([i for i, _ in chosen])
    denom = math.lcm(*(f.denominator for f in lam.values()))
    mod = key.modulus
    size = lengths.pop()
    exps = [int(2 * denom * lam[i]) for i, _ in chosen]  # integers: denom clears every denominator
    pos = [(e, [mpz(x) for x in vals]) for e, (_, vals) in zip(exps, chosen) if e > 0]
    neg = [(-e, [mpz(x) for x in vals]) for e, (_, vals) in zip(exps, chosen) if e < 0]
    num = _interleaved(pos, size, mod)
    den = _interleaved(neg, size, mod)
    if neg:
        num = [a * b % mod for a, b in zip(num, _batch_invert(den, mod))]
    scale_inv = gmpy2.invert(4 * key.delta * denom, key.n_s)
    return [int(_dlog(key, c) * scale_inv % key.n_s) for c in num]


def _interleaved(terms: Sequence[tuple[int, Sequence[mpz]]], size: int, mod: mpz) -> list[mpz]:
    """``prod_i b_{i,j}^{e_i} mod mod`` for every ``j``: the exponents are
    small (Lagrange coefficients), so the t powers of one ciphertext share
    their squarings (left-to-right, bit by bit)."""
    if not terms:
        return [mpz(1)] * size
    top = max(e for e, _ in terms).bit_length()
    out = []
    for j in range(size):
        acc = mpz(1)
        for bit in range(top - 1, -1, -1):
            acc = acc * acc % mod
            for e, vals in terms:
                if e >> bit & 1:
                    acc = acc * vals[j] % mod
        out.append(acc)
    return out


def _batch_invert(xs: Sequence[mpz], mod: mpz) -> list[mpz]:
    """Every ``x^-1 mod mod`` with one inversion (Montgomery's trick)."""
    prefix = []
    acc = mpz(1)
    for x in xs:
        acc = acc * x % mod
        prefix.append(acc)
    inv = gmpy2.invert(acc, mod)
    out = [mpz(0)] * len(xs)
    for k in range(len(xs) - 1, 0, -1):
        out[k] = inv * prefix[k - 1] % mod
        inv = inv * xs[k] % mod
    if xs:
        out[0] = inv
    return out


def decrypt_with_shares(shares: Sequence[KeyShare], ciphertexts: Sequence[int], context: bytes = b"") -> list[int]:
    """Every step in one place (tests, vectors): each share decrypts, each
    proof is verified, ``t`` shares combine."""
    if not shares:
        raise ReconstructionError("no key shares")
    key = shares[0].key
    partials = [partial_decrypt(sh, ciphertexts, context) for sh in shares]
    for p in partials:
        verify_partial(key, ciphertexts, p, context)
    return combine(key, partials, len(ciphertexts))
