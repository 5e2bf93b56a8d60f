"""Injected randomness: the system source, the replayable deterministic source
(the basis of every test vector) and uniform floats."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from secagg.primitives.randomness import (
    DeterministicRandom,
    RandomSource,
    SYSTEM_EXPAND_ABOVE,
    SystemRandom,
    default_random,
    uniform_floats,
)


def _reference(seed: bytes, n: int) -> bytes:
    """DeterministicRandom as its docstring specifies it, built independently."""
    key = hashlib.sha256(b"secagg/v1/deterministic-random\x00" + seed).digest()
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(n))


def test_deterministic_stream_is_the_specified_chacha20_stream() -> None:
    assert DeterministicRandom(b"vector-1").bytes(100) == _reference(b"vector-1", 100)
    assert DeterministicRandom("vector-1").bytes(10) == _reference(b"vector-1", 10)
    assert DeterministicRandom(7).bytes(10) == _reference((7).to_bytes(16, "big", signed=True), 10)
    assert DeterministicRandom(-7).bytes(10) == _reference((-7).to_bytes(16, "big", signed=True), 10)


def test_deterministic_stream_continues_across_calls() -> None:
    a = DeterministicRandom(b"s")
    chunks = a.bytes(3) + a.bytes(0) + a.bytes(61) + a.bytes(1000)
    assert chunks == DeterministicRandom(b"s").bytes(1064)


def test_seeds_give_distinct_streams() -> None:
    outs = {DeterministicRandom(s).bytes(32) for s in (b"a", b"b", "c", 0, 1, -1, b"", b"\x00")}
    assert len(outs) == 8


def test_fork_is_deterministic_independent_and_order_free() -> None:
    parent = DeterministicRandom(b"root")
    a1 = parent.fork("client/1").bytes(32)
    parent.bytes(500)  # drawing from the parent does not move its children
    assert parent.fork("client/1").bytes(32) == a1
    assert parent.fork(b"client/1").bytes(32) == a1
    assert parent.fork("client/2").bytes(32) != a1
    assert DeterministicRandom(b"root2").fork("client/1").bytes(32) != a1
    assert parent.fork("client/1").fork("x").bytes(32) != a1
    assert a1 != DeterministicRandom(b"root").bytes(32)


def test_negative_length_refused() -> None:
    with pytest.raises(ValueError):
        DeterministicRandom(b"x").bytes(-1)


def test_repr_does_not_print_the_whole_seed() -> None:
    seed = bytes(range(32))
    assert seed.hex() not in repr(DeterministicRandom(seed))


def test_system_random() -> None:
    s = SystemRandom()
    assert len(s.bytes(0)) == 0 and len(s.bytes(33)) == 33
    assert s.bytes(32) != s.bytes(32)
    assert isinstance(s, RandomSource) and isinstance(DeterministicRandom(1), RandomSource)


def test_system_random_long_requests_are_fresh_and_unbiased() -> None:
    """Past SYSTEM_EXPAND_ABOVE bytes the OS key is expanded with ChaCha20:
    every request gets a fresh key (two requests never share a keystream, not
    even a prefix), and the bytes look uniform (a mean and a bit count far
    outside what a biased or zero stream would give)."""
    s = SystemRandom()
    n = SYSTEM_EXPAND_ABOVE + 1
    a, b = s.bytes(n), s.bytes(n)
    assert len(a) == n and type(a) is bytes and a[:32] != b[:32] and a[-32:] != b[-32:]
    big = np.frombuffer(s.bytes(1 << 20), dtype=np.uint8)
    assert abs(big.mean() - 127.5) < 1.0  # sd of the mean ~ 0.07
    ones = int(np.unpackbits(big).sum())
    assert abs(ones - 4 * (1 << 20)) < 10_000  # sd ~ 1450
    assert len(s.bytes(SYSTEM_EXPAND_ABOVE)) == SYSTEM_EXPAND_ABOVE  # the boundary: os.urandom's own


def test_system_random_long_requests_are_chacha20_under_an_os_key(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import secagg.primitives.randomness as R
    asked = []
    monkeypatch.setattr(R.os, "urandom", lambda k: asked.append(k) or bytes(range(k)))
    got = SystemRandom().bytes(SYSTEM_EXPAND_ABOVE + 100)
    assert asked == [32] and got == _reference_chacha(bytes(range(32)), SYSTEM_EXPAND_ABOVE + 100)
    assert SystemRandom().bytes(10) == bytes(range(10)) and asked == [32, 10]


def _reference_chacha(key: bytes, n: int) -> bytes:
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(n))


def test_default_random() -> None:
    assert isinstance(default_random(None), SystemRandom)
    d = DeterministicRandom(1)
    assert default_random(d) is d


def test_uniform_floats() -> None:
    v = uniform_floats(DeterministicRandom(b"u"), 200_000)
    assert v.dtype == np.float64 and v.shape == (200_000,)
    assert v.min() >= 0.0 and v.max() < 1.0
    # 53-bit grid
    assert np.all(v * 2.0**53 == np.floor(v * 2.0**53))
    # mean 1/2 (sd 0.289/sqrt(n)) and every tenth of [0, 1) equally full
    assert abs(v.mean() - 0.5) < 5 * 0.289 / np.sqrt(v.size)
    counts = np.bincount((v * 10).astype(np.int64), minlength=10)
    chi2 = float(((counts - v.size / 10) ** 2 / (v.size / 10)).sum())
    assert chi2 < 40, counts  # 9 df: mean 9, 1e-6 tail near 40
    assert np.array_equal(v[:10], uniform_floats(DeterministicRandom(b"u"), 10))
    assert uniform_floats(DeterministicRandom(b"u"), 0).size == 0


def test_uniform_floats_extremes() -> None:
    class Const:
        def __init__(self, byte: int):
            self.byte = byte

        def bytes(self, n: int) -> bytes:
            return bytes([self.byte]) * n

    assert uniform_floats(Const(0), 3).tolist() == [0.0] * 3
    top = uniform_floats(Const(255), 2)
    assert np.all(top < 1.0) and np.all(top == 1.0 - 2.0**-53)
