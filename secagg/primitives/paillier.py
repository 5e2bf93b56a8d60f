"""Paillier encryption with ``g = n + 1`` (Paillier, EUROCRYPT'99), a narrow
wrapper over python-paillier (``phe``) and gmpy2. This is the only module that
imports ``phe`` (protocols/paillier/SPEC.md, "Primitives").

What it offers, and nothing more:

* key generation (``phe``'s, or from an injected random source for tests and
  vectors; opt-in, a modulus of three primes for the single key holder,
  protocols/paillier/SPEC.md §3.4), :class:`PublicKey` (``n``) and
  :class:`PrivateKey` (CRT decryption over two or three primes);
* raw encryption of an integer ``0 <= m < n`` with *injected* randomness:
  ``E(m) = (1 + m*n) * rho mod n^2`` where the *obfuscator* ``rho`` is either
  ``r^n`` for ``r`` uniform in ``Z*_n`` (standard Paillier) or, as an option,
  ``h_s^a`` for a fixed public ``h_s = (-x^2)^n`` and a short random exponent
  ``a`` (Damgard, Jurik, Nielsen, "A generalization of Paillier's public-key
  system with applications to electronic voting", IJIS 2010). Either way the
  obfuscator is independent of the message, so it can be computed before the
  round (:class:`ObfuscatorPool`) and online encryption is one multiplication;
* a pool precompute that can run on any ``concurrent.futures`` executor (its
  tasks take and return integers only; the process pools themselves belong to
  the driver layer, :mod:`secagg.drivers.concurrency`);
* ciphertext (de)serialization at a fixed length and validation that a
  ciphertext lies in ``Z*_{n^2}`` (one batched gcd per submission).

Security notes. ``(1 + n)^m = 1 + m*n mod n^2`` is exact, so the message part
needs no exponentiation. An obfuscator must never be used twice: two
ciphertexts under one ``rho`` reveal the difference of their plaintexts, so the
pool hands each value out once and forgets it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import operator
import os
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from itertools import repeat
from typing import Callable, Iterable, Sequence

import gmpy2
from gmpy2 import mpz
from phe import paillier as _phe

from ..errors import BadCiphertext, BadEncoding, LocalProtocolError, ParameterError
from .randomness import RandomSource, default_random

__all__ = [
    "DEFAULT_KEY_BITS",
    "MIN_KEY_BITS",
    "MIN_THREE_PRIME_KEY_BITS",
    "KEY_PRIMES",
    "PublicKey",
    "PrivateKey",
    "generate_keypair",
    "keypair_from_primes",
    "RandomizerSpec",
    "STANDARD",
    "short_exponent",
    "default_short_exponent_bits",
    "djn_base",
    "encrypt",
    "encrypt_with_obfuscators",
    "draw_randomizer_inputs",
    "obfuscators_from_inputs",
    "precompute_obfuscators",
    "ObfuscatorPool",
    "ciphertexts_to_bytes",
    "ciphertexts_from_bytes",
    "check_units",
    "multiply_into",
    "run_chunks",
]

DEFAULT_KEY_BITS = 2048
#: Smallest modulus the library will build at all (test keys); protocols refuse
#: anything below 2048 bits unless a test explicitly lowers their bound.
MIN_KEY_BITS = 512
MAX_KEY_BITS = 8192
#: Smallest modulus of three primes (protocols/paillier/SPEC.md §3.4): each
#: factor then has at least 341 bits, beyond the elliptic-curve method's
#: records; OpenSSL's multi-prime RSA allows a third prime from the same size.
MIN_THREE_PRIME_KEY_BITS = 1024
KEY_PRIMES = (2, 3)

_KEY_ID_TAG = b"secagg/v1/paillier/key-id\x00"
_DJN_TAG = b"secagg/v1/paillier/djn-base\x00"
_EXTRA_BITS = 128  # statistical distance 2^-128 when reducing random bytes mod n


def _check_key_bits(bits: int) -> int:
    if not (isinstance(bits, int) and not isinstance(bits, bool)
            and MIN_KEY_BITS <= bits <= MAX_KEY_BITS and bits % 8 == 0):
        raise ParameterError(
            f"Paillier key size must be a multiple of 8 in [{MIN_KEY_BITS}, {MAX_KEY_BITS}] bits "
            f"(2048 default, 3072 available), got {bits!r}")
    return bits


def _to_bytes(x: mpz, length: int) -> bytes:
    return x.to_bytes(length, "big") if hasattr(x, "to_bytes") else int(x).to_bytes(length, "big")


if hasattr(mpz, "from_bytes"):
    def _from_bytes(b: bytes | memoryview) -> mpz:
        return mpz.from_bytes(b, "big")
else:  # gmpy2 < 2.2
    def _from_bytes(b: bytes | memoryview) -> mpz:
        return mpz(int.from_bytes(b, "big"))


_INTEGERS = (int, type(mpz(0)))


# ---------------------------------------------------------------------- keys

class PublicKey:
    """A Paillier public key: the modulus ``n`` (``g = n + 1`` implicitly).

    ``key_id`` is ``SHA-256("secagg/v1/paillier/key-id" || n)``, the fingerprint
    bound into every submission. ``ciphertext_bytes`` is the fixed wire length
    of one ciphertext (an element of ``Z_{n^2}``)."""

    __slots__ = ("n", "n_square", "key_bits", "modulus_bytes", "ciphertext_bytes", "key_id", "_n_mpz")

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) and not isinstance(n, type(mpz(0))):
            raise ParameterError("a Paillier modulus must be an integer")
        n = int(n)
        bits = n.bit_length()
        _check_key_bits(bits)
        if n % 2 == 0 or gmpy2.is_square(n):
            raise ParameterError("not a Paillier modulus (even or a perfect square)")
        self.n = n
        self._n_mpz = mpz(n)
        self.n_square = self._n_mpz * self._n_mpz
        self.key_bits = bits
        self.modulus_bytes = bits // 8
        self.ciphertext_bytes = (2 * bits + 7) // 8
        self.key_id = hashlib.sha256(_KEY_ID_TAG + n.to_bytes(self.modulus_bytes, "big")).digest()

    # Paper names: n, g = n + 1.
    @property
    def g(self) -> int:
        return self.n + 1

    def to_bytes(self) -> bytes:
        return self.n.to_bytes(self.modulus_bytes, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> "PublicKey":
        if not data or data[0] == 0:
            raise ParameterError("a Paillier modulus is encoded big-endian with no leading zero byte")
        return cls(int.from_bytes(data, "big"))

    def to_phe(self) -> _phe.PaillierPublicKey:
        """The same key as a ``phe`` object (for interoperability)."""
        return _phe.PaillierPublicKey(self.n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.key_bits}, key_id={self.key_id.hex()[:16]})"


class PrivateKey:
    """The decryption key, with every constant CRT decryption needs computed
    once here, behind a deliberately small interface.

    Two primes (the default): ``phe``'s private key (primes ``p < q``), with
    ``p - 1``, ``q - 1``, ``p^2``, ``q^2``, ``h_p``, ``h_q`` and the
    recombination constant ``p^-1 mod q`` taken from it. Three primes (the key
    holder's opt-in, protocols/paillier/SPEC.md §3.4 "Three-prime modulus"):
    built by :func:`keypair_from_primes` / :func:`generate_keypair` with
    ``primes=3``; per prime ``p_i``: ``p_i - 1``, ``p_i^2``,
    ``h_i = L_i((1+n)^(p_i-1) mod p_i^2)^-1 mod p_i``, and Garner's constants
    ``P_i = p_1...p_(i-1)``, ``P_i^-1 mod p_i``. ``prime_count`` says which.

    Decryption is done here with gmpy2, not by ``phe`` (whose per-call path is
    Python arithmetic per ciphertext); the result is the same integer (tested).
    It never pickles (so it cannot be sent to a worker process or written to a
    cache by accident) and its ``repr`` shows only the key id."""

    __slots__ = ("public_key", "prime_count", "_key", "_p", "_q", "_p2", "_q2", "_pm1", "_qm1", "_hp", "_hq",
                 "_p_inv", "_primes", "_moduli", "_hs", "_garner", "_dj", "_dj_lock")

    def __init__(self, phe_private_key: _phe.PaillierPrivateKey):
        if not isinstance(phe_private_key, _phe.PaillierPrivateKey):
            raise ParameterError("expected a phe PaillierPrivateKey")
        self._key: _phe.PaillierPrivateKey | None = phe_private_key
        self.public_key = PublicKey(phe_private_key.public_key.n)
        k = phe_private_key
        self._p, self._q = mpz(k.p), mpz(k.q)
        self._p2, self._q2 = mpz(k.psquare), mpz(k.qsquare)
        self._pm1, self._qm1 = self._p - 1, self._q - 1
        self._hp, self._hq, self._p_inv = mpz(k.hp), mpz(k.hq), mpz(k.p_inverse)
        self._set_primes((self._p, self._q), (self._hp, self._hq))

    @classmethod
    def _from_three_primes(cls, primes: Sequence[int]) -> "PrivateKey":
        """A three-prime key (checked by :func:`keypair_from_primes`)."""
        sk = cls.__new__(cls)
        ps = tuple(sorted(mpz(p) for p in primes))
        n = ps[0] * ps[1] * ps[2]
        sk._key = None
        sk.public_key = PublicKey(int(n))
        # h_i = L_i((1 + n)^(p_i - 1) mod p_i^2)^-1 mod p_i
        hs = tuple(gmpy2.invert((gmpy2.powmod(1 + n, p - 1, p * p) - 1) // p, p) for p in ps)
        sk._set_primes(ps, hs)
        return sk

    def _set_primes(self, primes: tuple[mpz, ...], hs: tuple[mpz, ...]) -> None:
        self.prime_count = len(primes)
        self._primes = primes
        self._moduli = tuple((p - 1, p * p) for p in primes)  # (exponent, modulus) of each u_i
        self._hs = hs
        garner = []
        prefix = primes[0]
        for p in primes[1:]:
            garner.append((prefix, gmpy2.invert(prefix, p)))
            prefix *= p
        self._garner = tuple(garner)
        self._dj: dict[int, _DJConstants] = {}
        self._dj_lock = threading.Lock()

    def to_phe(self) -> _phe.PaillierPrivateKey:
        """The underlying ``phe`` key (interoperability tests). A three-prime
        key has none: :class:`~secagg.errors.ParameterError`."""
        if self._key is None:
            raise ParameterError(f"a {self.prime_count}-prime Paillier key has no phe form (phe keys have two primes)")
        return self._key

    def decrypt(self, ciphertext: int) -> int:
        """The plaintext in ``[0, n)`` of one ciphertext: :meth:`decrypt_many`
        of one (same checks, same error)."""
        return self.decrypt_many([ciphertext])[0]

    def decrypt_many(self, ciphertexts: Sequence[int], threads: int = 1, *, s: int = 1) -> list[int]:
        """CRT decryption of many ciphertexts (protocols/paillier/SPEC.md §3.4):
        for every prime ``p_i`` of ``n``, ``u_i = c^(p_i-1) mod p_i^2``,
        ``m_i = L_i(u_i) h_i mod p_i``, then Garner's recombination; with two
        primes ``m = m_p + ((m_q - m_p) p^-1 mod q) p`` (the arithmetic of
        ``phe``'s ``raw_decrypt``, tested equal), with three
        ``x = m_1 + ((m_2 - m_1) p_1^-1 mod p_2) p_1``,
        ``m = x + ((m_3 - x) (p_1 p_2)^-1 mod p_3) p_1 p_2``.

        The exponentiations run in ``gmpy2.powmod_base_list``, which releases
        the GIL: with ``threads > 1`` that many threads take chunks of the
        ciphertexts from a shared counter (a busy core simply takes fewer), so
        several cores work without the key leaving the process.

        Every ciphertext must lie in ``Z*_{n^2}``; anything else raises
        :class:`~secagg.errors.BadCiphertext` and nothing is returned: out of
        ``[1, n^2)`` is checked first, a multiple of a prime ``p_i`` shows as
        ``u_i != 1 mod p_i`` (Fermat: ``c^(p_i-1) = 1 mod p_i`` for every
        unit), a remainder the decryption computes anyway.

        ``s > 1``: Damgard-Jurik ciphertexts ``(1 + n)^m r^(n^s) mod n^(s+1)``
        under the same primes, plaintexts in ``[0, n^s)``: ``c^(p_i-1)`` mod
        ``p_i^(s+1)``, the discrete logarithm to base ``1 + p_i`` by Damgard
        and Jurik's recursion, the same recombination mod the ``p_i^s``."""
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 4:
            raise ParameterError(f"s must be an integer in [1, 4], got {s!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ParameterError(f"threads must be an integer >= 1, got {threads!r}")
        items = list(ciphertexts)
        if not all(isinstance(c, _INTEGERS) and not isinstance(c, bool) for c in items):
            raise BadCiphertext("a ciphertext is not an integer")
        cs = list(map(mpz, items))
        if not cs:
            return []
        modulus = self.public_key.n_square if s == 1 else self.public_key._n_mpz ** (s + 1)
        if not (min(cs) > 0 and max(cs) < modulus):
            raise BadCiphertext("ciphertext outside Z*_{n^(s+1)}" if s > 1 else "ciphertext outside Z*_{n^2}")
        finish: Callable[[list, list[int], int], bool]
        if s == 1:
            moduli = self._moduli
            finish = self._finish if self.prime_count == 2 else self._finish_multi
        else:
            dj = self._dj_constants(s)
            moduli = tuple((p - 1, m) for p, m in zip(self._primes, dj.mods))
            finish = dj.finish
        out: list[int] = [0] * len(cs)
        bad = [False]

        def work(lo: int, hi: int) -> None:
            chunk = cs[lo:hi]
            us = [gmpy2.powmod_base_list(chunk, e, m) for e, m in moduli]  # each releases the GIL
            if not finish(us, out, lo):
                bad[0] = True

        run_chunks(work, len(cs), threads)
        if bad[0]:
            raise BadCiphertext("ciphertext outside Z*_{n^(s+1)}" if s > 1 else "ciphertext outside Z*_{n^2}")
        return out

    def _finish(self, us: list, out: list[int], lo: int) -> bool:
        """Two primes: ``out[lo + j] = m_j`` from ``u_p``, ``u_q``; False if some ``u`` is not 1 mod its prime."""
        p, q, hp, hq, p_inv = self._p, self._q, self._hp, self._hq, self._p_inv
        ok = True
        for j, (up, uq) in enumerate(zip(*us), start=lo):
            lp, rp = divmod(up - 1, p)
            lq, rq = divmod(uq - 1, q)
            if rp or rq:
                ok = False
                continue
            mp = lp * hp % p
            out[j] = int(mp + ((lq * hq - mp) * p_inv % q) * p)
        return ok

    def _finish_multi(self, us: list, out: list[int], lo: int) -> bool:
        """Any number of primes: ``m_i`` per prime, Garner's recombination;
        False if some ``u_i`` is not 1 mod ``p_i``."""
        primes, hs, garner = self._primes, self._hs, self._garner
        p1, h1 = primes[0], hs[0]
        rest = tuple(zip(primes[1:], hs[1:], garner))
        ok = True
        for j, row in enumerate(zip(*us), start=lo):
            l1, r1 = divmod(row[0] - 1, p1)
            if r1:
                ok = False
                continue
            x = l1 * h1 % p1
            for u, (p, h, (prefix, inv)) in zip(row[1:], rest):
                li, ri = divmod(u - 1, p)
                if ri:
                    ok = False
                    break
                x += ((li * h - x) * inv % p) * prefix
            else:
                out[j] = int(x)
        return ok

    def _dj_constants(self, s: int) -> "_DJConstants":
        with self._dj_lock:
            got = self._dj.get(s)
            if got is None:
                got = self._dj[s] = _DJConstants(self._primes, s)
            return got

    def __reduce__(self):  # noqa: D105 - never serialize a private key
        raise TypeError("a Paillier private key is never pickled")

    def __repr__(self) -> str:
        return f"PrivateKey(key_id={self.public_key.key_id.hex()[:16]})"


def _dlog_one_plus(a: mpz, base: mpz, s: int) -> mpz:
    """``i mod base^s`` from ``a = (1 + base)^i mod base^(s+1)`` (Damgard and
    Jurik's recursive extraction, PKC 2001 §3; for ``s = 1`` it is ``(a - 1) / base``)."""
    i = mpz(0)
    for j in range(1, s + 1):
        nj = base ** j
        t1 = (a % (nj * base) - 1) // base
        t2 = i
        for k in range(2, j + 1):
            i -= 1
            t2 = t2 * i % nj
            t1 = (t1 - t2 * base ** (k - 1) * gmpy2.invert(math.factorial(k), nj)) % nj
        i = t1 % nj
    return i


class _DJConstants:
    """CRT constants of Damgard-Jurik decryption with ``s > 1`` for one key of
    two or three primes: per prime ``p_i`` the modulus ``p_i^(s+1)``, ``p_i^s``
    and ``h_i = ((p_i-1) dlog_(1+p_i)(1+n))^-1 mod p_i^s``; Garner's constants
    ``P_i = p_1^s...p_(i-1)^s`` and ``P_i^-1 mod p_i^s`` (two primes: ``(p^s)^-1 mod q^s``)."""

    __slots__ = ("s", "primes", "mods", "powers", "hs", "garner")

    def __init__(self, primes: Sequence[mpz], s: int):
        self.s, self.primes = s, tuple(primes)
        self.powers = tuple(p ** s for p in self.primes)
        self.mods = tuple(ps * p for ps, p in zip(self.powers, self.primes))
        n = mpz(1)
        for p in self.primes:
            n *= p
        self.hs = tuple(gmpy2.invert((p - 1) * _dlog_one_plus((1 + n) % m, p, s), ps)
                        for p, m, ps in zip(self.primes, self.mods, self.powers))
        garner = []
        prefix = self.powers[0]
        for ps in self.powers[1:]:
            garner.append((prefix, gmpy2.invert(prefix, ps)))
            prefix *= ps
        self.garner = tuple(garner)

    def finish(self, us: list, out: list[int], lo: int) -> bool:
        s = self.s
        rows = tuple(zip(self.primes, self.powers, self.hs))
        ok = True
        for j, row in enumerate(zip(*us), start=lo):
            if any(u % p != 1 for u, (p, _, _) in zip(row, rows)):
                ok = False
                continue
            ms = [_dlog_one_plus(u, p, s) * h % ps for u, (p, ps, h) in zip(row, rows)]
            x = ms[0]
            for m_i, (p_s, (prefix, inv)) in zip(ms[1:], zip(self.powers[1:], self.garner)):
                x += ((m_i - x) * inv % p_s) * prefix
            out[j] = int(x)
        return ok


def run_chunks(work: Callable[[int, int], None], count: int, threads: int, chunk: int | None = None) -> None:
    """Call ``work(lo, hi)`` over ``[0, count)`` cut into chunks, on ``threads``
    threads that take the next chunk from a shared counter until none is left.

    Meant for work whose bulk releases the GIL (gmpy2's list functions): a
    thread on a busy core takes fewer chunks instead of holding the others up.
    The first exception a thread raises is raised here once all have stopped."""
    if count <= 0:
        return
    if chunk is None:  # about 8 chunks per thread, at most 64 items each
        chunk = max(1, min(64, math.ceil(count / (8 * threads))))
    bounds = [(lo, min(lo + chunk, count)) for lo in range(0, count, chunk)]
    if threads <= 1 or len(bounds) == 1:
        for lo, hi in bounds:
            work(lo, hi)
        return
    ticket = itertools.count()  # next() on it is atomic under the GIL
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not errors:
                k = next(ticket)
                if k >= len(bounds):
                    return
                work(*bounds[k])
        except BaseException as exc:  # raised again in the calling thread
            errors.append(exc)

    workers = [threading.Thread(target=loop, name=f"secagg-chunks-{i}") for i in range(min(threads, len(bounds)))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def _random_prime(bits: int, rng: RandomSource) -> int:
    nbytes = (bits + 7) // 8
    while True:
        x = int.from_bytes(rng.bytes(nbytes), "big") >> (8 * nbytes - bits)
        x |= (3 << (bits - 2)) | 1  # top two bits set: the product has exactly 2*bits bits
        p = int(gmpy2.next_prime(x))
        if p.bit_length() == bits:
            return p


def _check_prime_count(primes: object) -> int:
    if isinstance(primes, bool) or not isinstance(primes, int) or primes not in (2, 3):
        raise ParameterError(f"a Paillier modulus has 2 or 3 primes, got {primes!r}")
    return primes


def _three_prime_sizes(key_bits: int) -> tuple[int, int, int]:
    """Prime sizes summing to ``key_bits``, the larger first (683/683/682 at 2048)."""
    base, extra = divmod(key_bits, 3)
    return (base + (extra >= 1), base + (extra >= 2), base)


def keypair_from_primes(*primes: int) -> tuple[PublicKey, PrivateKey]:
    """A key pair from two or three known primes (test vectors use fixed small
    primes). Two primes give ``phe``'s key, as always; three give the key
    holder's three-prime key (protocols/paillier/SPEC.md §3.4), refused under
    :data:`MIN_THREE_PRIME_KEY_BITS` or with a factor of fewer than
    ``bits(n)/3 - 16`` bits."""
    if len(primes) not in (2, 3):
        raise ParameterError(f"a Paillier modulus has 2 or 3 primes, got {len(primes)}")
    if not all(isinstance(x, _INTEGERS) and not isinstance(x, bool) and x > 1 for x in primes):
        raise ParameterError("the primes must be integers > 1")
    if len(primes) == 2:
        p, q = primes
        if not (gmpy2.is_prime(p) and gmpy2.is_prime(q)) or p == q:
            raise ParameterError("p and q must be two distinct primes")
        n = int(p) * int(q)
        _check_key_bits(n.bit_length())
        if math.gcd(n, (p - 1) * (q - 1)) != 1:
            raise ParameterError("gcd(n, phi(n)) != 1")
        sk = PrivateKey(_phe.PaillierPrivateKey(_phe.PaillierPublicKey(n), int(p), int(q)))
        return sk.public_key, sk
    ps = [int(x) for x in primes]
    if not all(gmpy2.is_prime(x) for x in ps) or len(set(ps)) != 3:
        raise ParameterError("the three factors must be three distinct primes")
    n = ps[0] * ps[1] * ps[2]
    bits = n.bit_length()
    if bits < MIN_THREE_PRIME_KEY_BITS:
        raise ParameterError(f"a three-prime Paillier modulus needs at least {MIN_THREE_PRIME_KEY_BITS} bits "
                             f"(smaller factors come within reach of the elliptic-curve method), got {bits}")
    _check_key_bits(bits)
    if min(x.bit_length() for x in ps) < bits // 3 - 16:
        raise ParameterError("the three primes must be of about a third of the modulus each")
    if math.gcd(n, (ps[0] - 1) * (ps[1] - 1) * (ps[2] - 1)) != 1:
        raise ParameterError("gcd(n, phi(n)) != 1")
    sk = PrivateKey._from_three_primes(ps)
    return sk.public_key, sk


def generate_keypair(key_bits: int = DEFAULT_KEY_BITS, rng: RandomSource | None = None, *,
                     primes: int = 2) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair with an ``n`` of exactly ``key_bits`` bits.

    Two primes (the default): without ``rng``, ``phe.generate_paillier_keypair``
    (the OS CSPRNG); with an injected ``rng`` (tests, simulations, vectors):
    primes are the next primes after ``key_bits/2``-bit numbers drawn from
    ``rng`` (top two bits set), so a run is reproducible; the key objects are
    ``phe``'s either way.

    ``primes=3`` (the key holder's opt-in, protocols/paillier/SPEC.md §3.4):
    three distinct primes of sizes summing to ``key_bits`` (683/683/682 at
    2048), drawn the same way from ``rng`` or, without one, from the OS
    CSPRNG, redrawn until ``n`` has exactly ``key_bits`` bits and
    ``gcd(n, phi(n)) = 1``. Refused under :data:`MIN_THREE_PRIME_KEY_BITS`."""
    _check_prime_count(primes)
    _check_key_bits(key_bits)
    if primes == 3:
        if key_bits < MIN_THREE_PRIME_KEY_BITS:
            raise ParameterError(f"a three-prime Paillier modulus needs at least {MIN_THREE_PRIME_KEY_BITS} bits "
                                 f"(smaller factors come within reach of the elliptic-curve method), got {key_bits}")
        source = default_random(rng)
        sizes = _three_prime_sizes(key_bits)
        while True:
            ps = [_random_prime(size, source) for size in sizes]
            n = ps[0] * ps[1] * ps[2]
            if (len(set(ps)) == 3 and n.bit_length() == key_bits
                    and math.gcd(n, (ps[0] - 1) * (ps[1] - 1) * (ps[2] - 1)) == 1):
                return keypair_from_primes(*ps)
    if rng is None:
        pub, priv = _phe.generate_paillier_keypair(n_length=key_bits)
        sk = PrivateKey(priv)
        return sk.public_key, sk
    half = key_bits // 2
    while True:
        p = _random_prime(half, rng)
        q = _random_prime(half, rng)
        if p != q and (p * q).bit_length() == key_bits:
            return keypair_from_primes(p, q)


# ------------------------------------------------------------- randomizers

@dataclass(frozen=True)
class RandomizerSpec:
    """How obfuscators are made.

    ``standard``: ``rho = r^n mod n^2``, ``r`` uniform in ``Z*_n`` (Paillier's
    scheme; security = DCR). ``short_exponent``: ``rho = h_s^a mod n^2`` with
    the public base :func:`djn_base` and ``a`` uniform in ``[0, 2^exponent_bits)``
    (DJN 2010; security additionally needs the short-exponent assumption stated
    in protocols/paillier/SPEC.md). The base is fixed, so exponentiation uses a
    precomputed table (``window`` bits per digit)."""

    kind: str = "standard"
    exponent_bits: int = 0
    window: int = 8

    def __post_init__(self) -> None:
        if self.kind not in ("standard", "short_exponent"):
            raise ParameterError(f"randomizer must be 'standard' or 'short_exponent', got {self.kind!r}")
        if self.kind == "short_exponent" and not (isinstance(self.exponent_bits, int) and
                                                  256 <= self.exponent_bits <= MAX_KEY_BITS + _EXTRA_BITS):
            raise ParameterError("a short exponent needs exponent_bits in [256, key bits + 128]")
        if self.kind == "standard" and self.exponent_bits:
            raise ParameterError("the standard randomizer takes no exponent length")
        if not (isinstance(self.window, int) and 1 <= self.window <= 12):
            raise ParameterError("window must be in [1, 12]")

    def describe(self) -> str:
        if self.kind == "standard":
            return "standard r^n"
        return f"DJN base, {self.exponent_bits}-bit exponent"


STANDARD = RandomizerSpec("standard")


def default_short_exponent_bits(key_bits: int) -> int:
    """``4 * kappa`` for the modulus' security level ``kappa`` (NIST SP 800-57:
    112 bits for 2048, 128 for 3072, 192 for 7680): generic attacks on an
    ``l``-bit exponent cost about ``2^(l/2)``, so this keeps a factor-two margin
    in the exponent over the modulus' own level (448 bits at 2048, 512 at 3072)."""
    kappa = 112 if key_bits < 3072 else 128 if key_bits < 7680 else 192
    return 4 * kappa


def short_exponent(key_bits: int = DEFAULT_KEY_BITS, exponent_bits: int | None = None) -> RandomizerSpec:
    return RandomizerSpec("short_exponent", exponent_bits or default_short_exponent_bits(key_bits))


def djn_base(public_key: PublicKey) -> int:
    """The public DJN base ``h_s = h^n mod n^2`` with ``h = -x^2 mod n``.

    ``x`` is derived from ``n`` alone (SHAKE-256 under a domain tag, reduced
    mod ``n``), so every party computes the same base and nobody chooses it."""
    n = public_key.n
    counter = 0
    while True:
        seed = _DJN_TAG + public_key.to_bytes() + counter.to_bytes(4, "big")
        x = int.from_bytes(hashlib.shake_256(seed).digest(public_key.modulus_bytes + 16), "big") % n
        counter += 1
        if x > 1 and math.gcd(x, n) == 1:
            break
    h = (-x * x) % n
    h_s = gmpy2.powmod(mpz(h), public_key._n_mpz, public_key.n_square)
    if h_s == 1:  # pragma: no cover - would need x of tiny order
        raise ParameterError("degenerate DJN base")
    return int(h_s)


def draw_randomizer_inputs(public_key: PublicKey, spec: RandomizerSpec, count: int,
                           rng: RandomSource | None = None) -> list[int]:
    """The random integers behind ``count`` obfuscators, drawn from ``rng``.

    ``standard``: ``r = 1 + (R mod (n - 1))`` for ``R`` of ``key_bits + 128``
    random bits (bias below 2^-128), redrawn in the negligible case
    ``gcd(r, n) != 1``. ``short_exponent``: ``a`` = ``exponent_bits`` random bits."""
    rng = default_random(rng)
    out: list[int] = []
    if spec.kind == "standard":
        nbytes = public_key.modulus_bytes + _EXTRA_BITS // 8
        n = public_key.n
        while len(out) < count:
            r = 1 + int.from_bytes(rng.bytes(nbytes), "big") % (n - 1)
            if math.gcd(r, n) == 1:
                out.append(r)
        return out
    nbytes = (spec.exponent_bits + 7) // 8
    mask = (1 << spec.exponent_bits) - 1
    return [int.from_bytes(rng.bytes(nbytes), "big") & mask for _ in range(count)]


class _FixedBase:
    """``base^a mod m`` for a fixed base by a table of ``base^(d * 2^(w*i))``:
    one multiplication per nonzero ``w``-bit digit of ``a``, no squarings."""

    def __init__(self, base: int, modulus: mpz, exponent_bits: int, window: int):
        self.modulus = modulus
        self.window = window
        self.mask = (1 << window) - 1
        rows = math.ceil(exponent_bits / window)
        table = []
        b = mpz(base)
        for _ in range(rows):
            row = [mpz(1), b]
            for _d in range(2, 1 << window):
                row.append(row[-1] * b % modulus)
            table.append(row)
            b = row[-1] * b % modulus
        self.table = table

    def pow(self, a: int) -> mpz:
        acc = mpz(1)
        m, w, mask = self.modulus, self.window, self.mask
        a = mpz(a)
        for row in self.table:
            if not a:
                break
            d = int(a & mask)
            if d:
                acc = acc * row[d] % m
            a >>= w
        return acc


_TABLES: dict[tuple[int, int, int, int], _FixedBase] = {}
_TABLES_LOCK = threading.Lock()


def _fixed_base(n: int, h_s: int, exponent_bits: int, window: int) -> _FixedBase:
    key = (n, h_s, exponent_bits, window)
    with _TABLES_LOCK:
        table = _TABLES.get(key)
        if table is None:
            if len(_TABLES) >= 4:
                _TABLES.clear()
            table = _TABLES[key] = _FixedBase(h_s, mpz(n) * mpz(n), exponent_bits, window)
        return table


def obfuscators_from_inputs(n: int, kind: str, inputs: Sequence[int], h_s: int = 0,
                            exponent_bits: int = 0, window: int = 8) -> list[int]:
    """Obfuscators from the integers of :func:`draw_randomizer_inputs`.

    A module-level function of integers only, so it runs unchanged in a worker
    process (nothing but integers and a kind string crosses the boundary)."""
    n_m = mpz(n)
    n2 = n_m * n_m
    if kind == "standard":
        return [int(v) for v in gmpy2.powmod_base_list([mpz(r) for r in inputs], n_m, n2)]
    if kind == "short_exponent":
        table = _fixed_base(n, h_s, exponent_bits, window)
        return [int(table.pow(a)) for a in inputs]
    raise ParameterError(f"unknown randomizer kind {kind!r}")


def precompute_obfuscators(public_key: PublicKey, count: int, rng: RandomSource | None = None,
                           spec: RandomizerSpec = STANDARD, *, executor: Executor | None = None,
                           workers: int | None = None) -> list[mpz]:
    """``count`` fresh obfuscators (the offline phase).

    The random inputs are always drawn here, in the calling process, from
    ``rng``: a run on an executor gives the same pool as a run without one.
    Without ``executor`` the exponentiations run here; with one (e.g. the
    process pool of :func:`secagg.drivers.concurrency.process_executor`) they
    are cut into ``workers`` tasks (default: one per CPU) of
    :func:`obfuscators_from_inputs`, which take and return integers only. This
    module starts no process itself."""
    if count < 0:
        raise ParameterError("count must be >= 0")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ParameterError("workers must be an integer >= 1")
    if executor is None and workers not in (None, 1):
        raise ParameterError("workers > 1 needs an executor (process pools belong to the driver layer: "
                             "secagg.drivers.concurrency.process_executor)")
    inputs = draw_randomizer_inputs(public_key, spec, count, rng)
    h_s = djn_base(public_key) if spec.kind == "short_exponent" else 0
    args = dict(h_s=h_s, exponent_bits=spec.exponent_bits, window=spec.window)
    if count == 0:
        return []
    if executor is None:
        return [mpz(v) for v in obfuscators_from_inputs(public_key.n, spec.kind, inputs, **args)]
    tasks = workers if workers is not None else (os.cpu_count() or 1)
    step = max(1, math.ceil(count / tasks))
    futures = [executor.submit(obfuscators_from_inputs, public_key.n, spec.kind, inputs[i:i + step], **args)
               for i in range(0, count, step)]
    out: list[mpz] = []
    for f in futures:
        out.extend(mpz(v) for v in f.result())
    return out


class ObfuscatorPool:
    """Precomputed obfuscators for one public key, each handed out once.

    ``take`` removes what it returns: a value can never be used for two
    ciphertexts (that would reveal the difference of their plaintexts)."""

    def __init__(self, public_key: PublicKey, values: Iterable[int] = ()):
        self.public_key = public_key
        self._values: list[mpz] = [mpz(v) for v in values]
        self._lock = threading.Lock()

    @classmethod
    def precompute(cls, public_key: PublicKey, count: int, rng: RandomSource | None = None,
                   spec: RandomizerSpec = STANDARD, *, executor: Executor | None = None,
                   workers: int | None = None) -> "ObfuscatorPool":
        return cls(public_key, precompute_obfuscators(public_key, count, rng, spec, executor=executor,
                                                      workers=workers))

    def extend(self, values: Iterable[int]) -> None:
        with self._lock:
            self._values.extend(mpz(v) for v in values)

    def take(self, count: int) -> list[mpz]:
        with self._lock:
            if count > len(self._values):
                raise LocalProtocolError(f"obfuscator pool has {len(self._values)} values, {count} needed")
            out, self._values = self._values[:count], self._values[count:]
            return out

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ObfuscatorPool({len(self)} values, key_id={self.public_key.key_id.hex()[:16]})"


# ---------------------------------------------------------------- encryption

def encrypt_with_obfuscators(public_key: PublicKey, plaintexts: Sequence[int],
                             obfuscators: Sequence[int]) -> list[mpz]:
    """``c_i = (1 + m_i*n) * rho_i mod n^2``: the online phase, one modular
    multiplication per ciphertext. Each ``m_i`` must lie in ``[0, n)``."""
    if len(plaintexts) != len(obfuscators):
        raise ParameterError("one obfuscator per plaintext")
    n, n2 = public_key._n_mpz, public_key.n_square
    out = []
    for m, rho in zip(plaintexts, obfuscators):
        if not 0 <= m < public_key.n:
            raise ParameterError("Paillier plaintext outside [0, n)")
        out.append((1 + mpz(m) * n) * rho % n2)
    return out


def encrypt(public_key: PublicKey, plaintext: int, rng: RandomSource | None = None,
            spec: RandomizerSpec = STANDARD) -> int:
    """One complete encryption (offline and online phase together)."""
    rho = precompute_obfuscators(public_key, 1, rng, spec)
    return int(encrypt_with_obfuscators(public_key, [plaintext], rho)[0])


# ------------------------------------------------------- wire and validation

def ciphertexts_to_bytes(public_key: PublicKey, ciphertexts: Sequence[int]) -> bytes:
    """Big-endian, each exactly ``public_key.ciphertext_bytes`` long, concatenated."""
    length = public_key.ciphertext_bytes
    return b"".join(_to_bytes(mpz(c), length) for c in ciphertexts)


def ciphertexts_from_bytes(public_key: PublicKey, data: bytes, count: int) -> list[mpz]:
    """Parse ``count`` fixed-length ciphertexts and check each lies in
    ``Z*_{n^2}``: range ``0 < c < n^2`` here, coprimality with ``n`` by one
    batched gcd (:func:`check_units`).

    A wrong total length raises :class:`~secagg.errors.BadEncoding`; a value
    outside ``Z*_{n^2}`` raises :class:`~secagg.errors.BadCiphertext` (one
    opaque error). Both are local errors: the protocol code that parses a
    peer's ciphertexts turns them into ``WireFormatError`` and
    ``InvalidCiphertext``."""
    length = public_key.ciphertext_bytes
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) != count * length:
        raise BadEncoding(f"expected {count} ciphertexts of {length} bytes "
                              f"({count * length} bytes), got {len(data) if hasattr(data, '__len__') else '?'}")
    view = memoryview(data)
    n2 = public_key.n_square
    cs = list(map(_from_bytes, [view[i:i + length] for i in range(0, count * length, length)]))
    if cs and not (min(cs) > 0 and max(cs) < n2):
        raise BadCiphertext("ciphertext outside Z*_{n^2}")
    check_units(public_key, cs)
    return cs


def check_units(public_key: PublicKey, ciphertexts: Sequence[mpz]) -> None:
    """Raise :class:`~secagg.errors.BadCiphertext` unless every ciphertext is coprime to ``n``.

    One gcd for the whole batch: ``gcd(prod c_i mod n, n) = 1`` exactly when no
    ``c_i`` shares a factor with ``n`` (a prime ``p | n`` divides the product
    mod ``n`` iff it divides one of the factors)."""
    n = public_key._n_mpz
    # A product tree mod n; the maps keep the per-element loop in C.
    level = list(map(operator.mod, ciphertexts, repeat(n)))
    while len(level) > 1:
        odd = [level[-1]] if len(level) % 2 else []
        level = list(map(operator.mod, map(operator.mul, level[0::2], level[1::2]), repeat(n))) + odd
    if level and gmpy2.gcd(level[0], n) != 1:
        raise BadCiphertext("ciphertext outside Z*_{n^2}")


def multiply_into(public_key: PublicKey, accumulator: list[mpz], ciphertexts: Sequence[mpz]) -> None:
    """``accumulator[i] *= ciphertexts[i] mod n^2`` in place: the homomorphic
    addition of the plaintexts. Never fails on validated input."""
    if len(accumulator) != len(ciphertexts):
        raise ParameterError("ciphertext vectors of different lengths")
    accumulator[:] = map(operator.mod, map(operator.mul, accumulator, ciphertexts), repeat(public_key.n_square))
