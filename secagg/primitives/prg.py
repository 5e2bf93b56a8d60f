"""Pseudorandom generator for masks: an AES-256 counter-mode keystream.

Security invariant 4 (protocols/masking/SPEC.md): masks come from a
cryptographic PRG keyed with the *full* 256-bit secret. The key is the 32-byte
seed itself. Each use of the PRG names a domain-separation ``tag``, hashed to a
12-byte ``IV(tag) = SHA-256("secagg/v1/prg" || 0x00 || tag)[:12]``; keystream
block ``i`` (from 0) is ``AES-256(seed, IV(tag) || BE32(i + 2))``. This is the
GCTR keystream of NIST SP 800-38D for the 96-bit IV ``IV(tag)`` (the counter
blocks GCM encrypts its plaintext with), and equally AES-256-CTR from the
initial counter block ``IV(tag) || 0x00000002``. Streams under one key with
different tags never overlap.

Output limit: at most :data:`MAX_OUTPUT_BYTES` (``2^36 - 32`` bytes, just under
64 GiB) per ``(seed, tag)``: the 32-bit counter runs from 2 to ``2^32 - 1`` and
never wraps, so no carry reaches the IV (the same limit SP 800-38D sets for
one GCM plaintext).

Words are read from the keystream little-endian on every host, so a mask is
the same on every machine.

Two ways to the same bytes (see :func:`prg_backend`): OpenSSL's CTR mode from
that counter block, or its GCM encryption of zero bytes (whose tag is never
finalized or used). On CPUs with vector AES (VAES with AVX-512) OpenSSL's GCM
code runs about twice as fast as its CTR code; elsewhere CTR may be the faster.
The module times both once, on first use, and takes the faster; the bytes are
the same either way, so parties on different machines still agree (tests check
the two against each other and against an independent construction).

Speed: the keystream is written with ``update_into`` into a buffer of the
caller's array (no per-call allocation of the output), encrypting a cached
all-zero buffer. ``prg_ring_add_into`` reuses a per-thread scratch buffer
(threads never share one, so concurrent clients in one process cannot corrupt
each other's masks).

:func:`prg_field` draws from its own IV namespace (``secagg/v1/prg-field``), so
its streams never coincide with a ``prg_ring``/``prg_bytes`` stream under any tag.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from ..errors import ParameterError

__all__ = ["prg_bytes", "prg_ring", "prg_ring_add_into", "prg_ring_add_many_into", "prg_field", "prg_backend",
           "MAX_OUTPUT_BYTES", "SEED_SIZE", "BACKENDS"]

SEED_SIZE = 32
_FIRST_COUNTER = 2  # GCTR's first counter for a 96-bit IV: inc32(IV || 0x00000001)
MAX_OUTPUT_BYTES = ((1 << 32) - _FIRST_COUNTER) * 16  # 2^36 - 32: the 32-bit counter never wraps
BACKENDS = ("ctr", "gcm")
_BLOCK = 16

_WORD: dict[int, np.dtype[Any]] = {32: np.dtype("<u4"), 64: np.dtype("<u8")}  # keystream words are little-endian
_LITTLE_ENDIAN_HOST = sys.byteorder == "little"
_ACC_DTYPES = frozenset({np.dtype(np.uint32), np.dtype(np.uint64)})  # native byte order only
_zeros = np.zeros(0, dtype=np.uint8)
_local = threading.local()  # per-thread scratch buffers of prg_ring_add_into


def _zero_bytes(n: int) -> memoryview:
    global _zeros
    zeros = _zeros
    if zeros.size < n:
        zeros = np.zeros(max(n, 2 * zeros.size), dtype=np.uint8)
        zeros.setflags(write=False)  # only ever read: the plaintext of the keystream
        _zeros = zeros
    return zeros.data[:n]


def _scratch(nbytes: int) -> np.ndarray:
    cache: dict[int, np.ndarray] | None = getattr(_local, "scratch", None)
    if cache is None:
        cache = _local.scratch = {}
    buf = cache.get(nbytes)
    if buf is None:
        if len(cache) > 8:
            cache.clear()
        buf = cache[nbytes] = np.empty(nbytes + _BLOCK, dtype=np.uint8)
    return buf


def _tag_bytes(tag: bytes | str) -> bytes:
    if isinstance(tag, str):
        tag = tag.encode()
    if not isinstance(tag, (bytes, bytearray)):
        raise TypeError("prg: tag must be str or bytes")
    if not tag:
        raise ValueError("prg: a non-empty domain-separation tag is required")
    return bytes(tag)


def _iv(tag: bytes | str, domain: bytes = b"prg") -> bytes:
    return _iv_cached(_tag_bytes(tag), domain)


@functools.lru_cache(maxsize=4096)
def _iv_cached(tag: bytes, domain: bytes) -> bytes:
    # Protocols reuse a handful of constant tags (the per-pair separation is in
    # the seed), so the hash is computed once per tag, not once per call.
    return hashlib.sha256(b"secagg/v1/" + domain + b"\x00" + tag).digest()[:12]


# ------------------------------------------------------------------ backends
_MIN_GCM_BYTES = 4096  # below this the two cost the same (object set-up); CTR is used
_backend: str | None = None


def _ctr(seed: bytes, iv: bytes) -> CipherContext:
    return Cipher(algorithms.AES(bytes(seed)), modes.CTR(iv + _FIRST_COUNTER.to_bytes(4, "big"))).encryptor()


def _gcm(seed: bytes, iv: bytes) -> CipherContext:
    # GCM's ciphertext is its plaintext XOR the GCTR keystream from IV || 2;
    # of zeros, it is that keystream. The tag is never finalized.
    return Cipher(algorithms.AES(bytes(seed)), modes.GCM(iv)).encryptor()


_MAKERS = {"ctr": _ctr, "gcm": _gcm}


def _calibrate() -> str:
    """Time both backends on a 256 KiB stream (a few rounds, interleaved) and
    return the faster; a few milliseconds, once per process."""
    nbytes = 1 << 18
    zeros = _zero_bytes(nbytes)
    out = memoryview(bytearray(nbytes + _BLOCK))
    seed, iv = bytes(range(32)), bytes(12)
    best = {name: float("inf") for name in BACKENDS}
    for _ in range(3):
        for name in BACKENDS:
            t0 = time.perf_counter()
            _MAKERS[name](seed, iv).update_into(zeros, out)
            best[name] = min(best[name], time.perf_counter() - t0)
    return min(BACKENDS, key=lambda name: best[name])


def prg_backend() -> str:
    """The way this process asks OpenSSL for long keystreams: ``"ctr"`` or
    ``"gcm"`` (the same bytes either way). The environment variable
    ``SECAGG_PRG_BACKEND`` (``ctr``, ``gcm`` or ``auto``, the default) fixes it;
    ``auto`` times both once and takes the faster. Read on the first PRG call
    of any length; another value raises :class:`~secagg.errors.ParameterError`.

    Forcing ``gcm`` on a CPU without a carry-less multiply instruction
    (PCLMULQDQ, PMULL) makes OpenSSL hash the keystream with table-based GHASH,
    whose memory accesses depend on the data; ``auto`` does not pick it there
    in practice, as it is then the slower of the two."""
    global _backend
    if _backend is None:
        want = os.environ.get("SECAGG_PRG_BACKEND", "auto").strip().lower()
        if want not in BACKENDS + ("auto", ""):
            raise ParameterError(f"SECAGG_PRG_BACKEND must be one of ctr, gcm, auto; got {want!r}")
        _backend = want if want in BACKENDS else _calibrate()
    return _backend


def _encryptor(seed: bytes, iv: bytes, nbytes: int) -> CipherContext:
    """An OpenSSL context whose ``update_into`` of zeros writes the keystream
    of ``(seed, iv)`` from its start, ``nbytes`` of it in all."""
    backend = prg_backend()  # also for short outputs, so that a bad setting shows at once
    if nbytes < _MIN_GCM_BYTES:
        return _ctr(seed, iv)
    return _MAKERS[backend](seed, iv)


def _check(seed: bytes, nbytes: int) -> None:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_SIZE:
        raise ValueError("prg: seed must be exactly 32 bytes (the full 256-bit secret)")
    if nbytes < 0 or nbytes > MAX_OUTPUT_BYTES:
        raise ValueError(f"prg: output of {nbytes} bytes exceeds the per-key limit of {MAX_OUTPUT_BYTES}")


def _keystream_into(seed: bytes, iv: bytes, buf: np.ndarray, nbytes: int) -> None:
    """Write ``nbytes`` of keystream into the uint8 array ``buf`` (which must hold
    ``nbytes + 15`` bytes: ``update_into`` needs a block of slack)."""
    written = _encryptor(seed, iv, nbytes).update_into(_zero_bytes(nbytes), buf.data)
    assert written == nbytes


def prg_bytes(seed: bytes, tag: bytes | str, n: int) -> bytes:
    """``n`` pseudorandom bytes."""
    _check(seed, n)
    buf = np.empty(n + _BLOCK, dtype=np.uint8)
    _keystream_into(seed, _iv(tag), buf, n)
    return buf[:n].tobytes()


def _dtype(bits: int) -> type[np.unsignedinteger]:
    if bits == 32:
        return np.uint32
    if bits == 64:
        return np.uint64
    raise ValueError("ring bits must be 32 or 64")


def prg_ring(seed: bytes, tag: bytes | str, length: int, bits: int = 32) -> np.ndarray:
    """A vector of ``length`` elements uniform in Z_{2^bits} (bits = 32 or 64).

    Every bit pattern of a word is equally likely, so no rejection is needed."""
    return _ring_words(seed, _iv(tag), length, bits)


def _ring_words(seed: bytes, iv: bytes, length: int, bits: int) -> np.ndarray:
    dtype = _dtype(bits)
    nbytes = length * (bits // 8)
    _check(seed, nbytes)
    buf = np.empty(nbytes + _BLOCK, dtype=np.uint8)
    _keystream_into(seed, iv, buf, nbytes)
    words = buf[:nbytes].view(_WORD[bits])
    # On a little-endian host these are already native words; elsewhere, swap once.
    return words if _LITTLE_ENDIAN_HOST else words.astype(dtype)


def prg_ring_add_into(acc: np.ndarray, seed: bytes, tag: bytes | str, sign: int = 1) -> None:
    """``acc += sign * prg_ring(seed, tag, len(acc))`` in place, modulo 2^bits,
    reusing one scratch buffer per thread (the server's hot loop)."""
    if acc.dtype not in _ACC_DTYPES or acc.ndim != 1:
        raise ValueError("acc must be a 1-D uint32 or uint64 array")
    if sign not in (1, -1):
        raise ValueError("sign must be +1 or -1")
    nbytes = acc.nbytes
    _check(seed, nbytes)
    if nbytes > _SINGLE_STREAM_CHUNKED_ABOVE:  # a slice at a time: the keystream is added while still in cache
        prg_ring_add_many_into(acc, [seed], tag, [sign])
        return
    buf = _scratch(nbytes)
    _keystream_into(seed, _iv(tag), buf, nbytes)
    stream = buf[:nbytes].view(_WORD[8 * acc.itemsize])
    if sign == 1:
        np.add(acc, stream, out=acc)
    else:
        np.subtract(acc, stream, out=acc)


# prg_ring_add_many_into: bytes of each stream per pass (a multiple of the AES
# block and of both word sizes), and streams kept open at once
_CHUNK_BYTES = 1 << 18
# prg_ring_add_into: one stream in one piece up to this size (it stays in L2);
# longer ones go through prg_ring_add_many_into's slices
_SINGLE_STREAM_CHUNKED_ABOVE = 1 << 20
_STREAMS_PER_GROUP = 256


def prg_ring_add_many_into(acc: np.ndarray, seeds: "Sequence[bytes]", tag: bytes | str,
                           signs: "Sequence[int] | None" = None) -> None:
    """``acc += sum_i signs[i] * prg_ring(seeds[i], tag, len(acc))`` in place,
    modulo 2^bits (every sign +1 when ``signs`` is None): the same result as
    one :func:`prg_ring_add_into` per seed, computed a slice of ``acc`` at a
    time across up to 256 open keystreams, so the slice and the scratch buffer
    stay in cache (the client's and the server's mask loops). Every seed and
    sign is checked before ``acc`` is touched."""
    if acc.dtype not in _ACC_DTYPES or acc.ndim != 1:
        raise ValueError("acc must be a 1-D uint32 or uint64 array")
    seeds = list(seeds)
    signs = [1] * len(seeds) if signs is None else list(signs)
    if len(signs) != len(seeds):
        raise ValueError("one sign per seed")
    if any(sg not in (1, -1) for sg in signs):
        raise ValueError("sign must be +1 or -1")
    nbytes = acc.nbytes
    for seed in seeds:
        _check(seed, nbytes)
    iv = _iv(tag)  # validates the tag even when there is nothing to add
    if not seeds or not nbytes:
        return
    word = _WORD[8 * acc.itemsize]
    chunk = min(_CHUNK_BYTES, nbytes)
    buf = _scratch(chunk)
    out = buf.data
    zeros = _zero_bytes(chunk)
    step = chunk // acc.itemsize
    for g in range(0, len(seeds), _STREAMS_PER_GROUP):
        streams = [(_encryptor(seed, iv, nbytes), sg)
                   for seed, sg in zip(seeds[g:g + _STREAMS_PER_GROUP], signs[g:g + _STREAMS_PER_GROUP])]
        for start in range(0, acc.size, step):
            part = acc[start:start + step]
            length = part.nbytes
            plain = zeros[:length]
            stream = buf[:length].view(word)
            for enc, sg in streams:  # each stream's counter carries over from one slice to the next
                enc.update_into(plain, out)
                if sg == 1:
                    np.add(part, stream, out=part)
                else:
                    np.subtract(part, stream, out=part)


def prg_field(seed: bytes, tag: bytes | str, length: int, prime: int) -> np.ndarray:
    """A vector of ``length`` elements uniform in GF(prime), 2 <= prime < 2^63,
    by rejection sampling: draw words of bit_length(prime) bits, keep those below
    ``prime``. The expected number of draws per element is below 2."""
    if not 2 <= prime < (1 << 63):
        raise ValueError("prg_field supports primes below 2^63")
    tag_b = _tag_bytes(tag)
    nbits = prime.bit_length()
    mask = np.uint64((1 << nbits) - 1)
    out = np.empty(length, dtype=np.uint64)
    filled = 0
    counter = 0
    while filled < length:
        want = max(16, int((length - filled) * 2.2))
        iv = _iv(tag_b + b"\x00" + counter.to_bytes(8, "big"), domain=b"prg-field")
        words = _ring_words(seed, iv, want, 64) & mask
        counter += 1
        keep = words[words < np.uint64(prime)]
        take = min(keep.size, length - filled)
        out[filled:filled + take] = keep[:take]
        filled += take
    return out
