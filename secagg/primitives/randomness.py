"""Injected randomness.

Every function that needs randomness takes a :class:`RandomSource` argument
(after the IETF VDAF reference code): production code uses :class:`SystemRandom`
(``os.urandom``), tests and test vectors use :class:`DeterministicRandom`, so a
whole protocol run can be replayed byte for byte.
"""

from __future__ import annotations

import builtins
import hashlib
import os
from typing import Protocol, runtime_checkable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["RandomSource", "SystemRandom", "SYSTEM_EXPAND_ABOVE", "DeterministicRandom", "default_random", "uniform_floats"]


@runtime_checkable
class RandomSource(Protocol):
    """Anything that returns ``n`` random bytes."""

    def bytes(self, n: int) -> bytes: ...


#: SystemRandom: requests longer than this are expanded from a 32-byte ``os.urandom`` key
SYSTEM_EXPAND_ABOVE = 4096


class SystemRandom:
    """The operating system's CSPRNG. The default everywhere.

    A request of up to :data:`SYSTEM_EXPAND_ABOVE` bytes (every key and
    seed) is ``os.urandom``'s own bytes. A longer one (a client's batch of
    nonces or Shamir coefficients at large n; stochastic rounding, 8 bytes
    per entry of an update) is the ChaCha20 keystream under a fresh 256-bit
    key from ``os.urandom``, used for that request only: unpredictable to
    anyone without the key, and cheaper than asking the kernel for every
    byte (``benchmarks/bench_primitives.py`` times both)."""

    def bytes(self, n: int) -> bytes:
        if n <= SYSTEM_EXPAND_ABOVE:
            return os.urandom(n)
        key = os.urandom(32)  # one key per request, so the all-zero nonce is never reused under a key
        return Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor().update(b"\x00" * n)

    def __repr__(self) -> str:
        return "SystemRandom()"


class DeterministicRandom:
    """A reproducible random source: the ChaCha20 keystream under
    ``SHA-256("secagg/v1/deterministic-random" || seed)``.

    For tests, benchmarks and test vectors only: two sources with the same seed
    return the same bytes. ``fork(label)`` gives an independent child stream (one
    per simulated party) so that the order in which parties draw does not matter.
    """

    def __init__(self, seed: bytes | str | int):
        if isinstance(seed, int):
            seed = seed.to_bytes(16, "big", signed=True)
        elif isinstance(seed, str):
            seed = seed.encode()
        self._seed = bytes(seed)
        key = hashlib.sha256(b"secagg/v1/deterministic-random\x00" + self._seed).digest()
        self._enc = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()

    def bytes(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be >= 0")
        return self._enc.update(b"\x00" * n)

    def fork(self, label: "str | builtins.bytes") -> "DeterministicRandom":
        if isinstance(label, str):
            label = label.encode()
        return DeterministicRandom(hashlib.sha256(self._seed + b"\x00fork\x00" + label).digest())

    def __repr__(self) -> str:  # the seed determines every key drawn from it
        return "DeterministicRandom(<seed hidden>)"


_SYSTEM = SystemRandom()


def default_random(rng: RandomSource | None) -> RandomSource:
    """``rng`` if given, else the system CSPRNG."""
    return _SYSTEM if rng is None else rng


def uniform_floats(rng: RandomSource, n: int) -> np.ndarray:
    """``n`` floats uniform in [0, 1) with 53 random bits each, drawn from ``rng``."""
    words = np.frombuffer(rng.bytes(8 * n), dtype="<u8").astype(np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * (2.0**-53)
