"""The mask PRG (AES-256 counter-mode keystream, GCTR layout): spec conformance,
the two OpenSSL backends giving the same bytes, determinism, domain separation,
statistical sanity, argument checks and the output limit."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.primitives import prg
from secagg.primitives.prg import (
    MAX_OUTPUT_BYTES,
    SEED_SIZE,
    prg_bytes,
    prg_field,
    prg_ring,
    prg_ring_add_into,
)
from secagg.primitives.randomness import DeterministicRandom

SEED = hashlib.sha256(b"test seed").digest()


def _reference_keystream(seed: bytes, tag: bytes, n: int) -> bytes:
    """The PRG as the module docstring specifies it, built independently: AES-256
    of each counter block IV(tag) || BE32(i + 2), one block at a time (ECB)."""
    iv = hashlib.sha256(b"secagg/v1/prg\x00" + tag).digest()[:12]
    blocks = b"".join(iv + (i + 2).to_bytes(4, "big") for i in range((n + 15) // 16))
    enc = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    return (enc.update(blocks) + enc.finalize())[:n]


# ------------------------------------------------------------ spec conformance

@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1000, 4096 + 3, 70_000])
def test_prg_bytes_is_the_specified_counter_mode_stream(n: int) -> None:
    assert prg_bytes(SEED, b"mask", n) == _reference_keystream(SEED, b"mask", n)


def test_the_stream_is_the_gctr_keystream_of_gcm(monkeypatch) -> None:
    # McGrew & Viega's GCM test case 14: AES-256, K = 0^256, IV = 0^96, P = 0^128
    # gives C = cea7403d...: the first block of our stream for that key and IV.
    for backend in prg.BACKENDS:
        buf = np.zeros(16 + 15, dtype=np.uint8)
        prg._MAKERS[backend](bytes(32), bytes(12)).update_into(bytes(16), memoryview(buf))
        assert buf[:16].tobytes().hex() == "cea7403d4d606b6e074ec5d3baf39d18"
    # and the GCM encryption of zeros under IV(tag) is the stream the CTR code gives
    monkeypatch.setattr(prg, "_backend", "ctr")
    iv = hashlib.sha256(b"secagg/v1/prg\x00" + b"mask").digest()[:12]
    gcm = Cipher(algorithms.AES(SEED), modes.GCM(iv)).encryptor()
    assert gcm.update(bytes(5000)) == prg_bytes(SEED, b"mask", 5000)


def test_long_outputs_go_through_the_chosen_backend(monkeypatch) -> None:
    """The speed-up must not silently disappear: with ``gcm`` chosen, every
    entry point asks OpenSSL's GCM code for outputs of 4 KiB and more, and
    the CTR code only below that."""
    calls: list[str] = []
    for name in prg.BACKENDS:
        real = prg._MAKERS[name]
        monkeypatch.setitem(prg._MAKERS, name,
                            lambda seed, iv, real=real, name=name: calls.append(name) or real(seed, iv))
    monkeypatch.setattr(prg, "_ctr", prg._MAKERS["ctr"])
    monkeypatch.setattr(prg, "_backend", "gcm")
    acc = np.zeros(300_001, dtype=np.uint32)
    prg_ring(SEED, b"m", 1024)
    prg_ring_add_into(acc[:1024], SEED, b"m")
    prg_ring_add_into(acc, SEED, b"m")  # sliced
    prg.prg_ring_add_many_into(acc, [SEED, SEED[::-1]], b"m")
    prg_field(SEED, b"m", 4096, (1 << 61) - 1)
    assert calls[:6] == ["gcm"] * 6 and set(calls) == {"gcm"}
    calls.clear()
    prg_bytes(SEED, b"m", 4095)
    assert calls == ["ctr"]


@pytest.mark.parametrize("backend", ["ctr", "gcm"])
@pytest.mark.parametrize("length", [1, 1023, 4096, 65_537, 200_003, 300_001])  # the last: > 1 MiB, sliced
def test_both_backends_give_the_same_bytes(monkeypatch, backend: str, length: int) -> None:
    """Parties on different machines may use different backends: every entry
    point must give the same words whichever is in use."""
    monkeypatch.setattr(prg, "_backend", backend)
    want = np.frombuffer(_reference_keystream(SEED, b"m", 4 * length), dtype="<u4")
    assert np.array_equal(prg_ring(SEED, b"m", length), want)
    acc = np.arange(length, dtype=np.uint32)
    prg_ring_add_into(acc, SEED, b"m", -1)
    assert np.array_equal(acc, np.arange(length, dtype=np.uint32) - want)
    seeds = [hashlib.sha256(b"%d" % i).digest() for i in range(3)]
    acc = np.zeros(length, dtype=np.uint32)
    prg.prg_ring_add_many_into(acc, seeds, b"m", [1, -1, 1])
    expect = np.zeros(length, dtype=np.uint32)
    for seed, sign in zip(seeds, [1, -1, 1]):
        words = np.frombuffer(_reference_keystream(seed, b"m", 4 * length), dtype="<u4")
        expect = expect + words if sign == 1 else expect - words
    assert np.array_equal(acc, expect)


def test_backend_choice_from_the_environment(monkeypatch) -> None:
    from secagg.errors import ParameterError

    for value, want in (("ctr", "ctr"), ("GCM", "gcm")):
        monkeypatch.setattr(prg, "_backend", None)
        monkeypatch.setenv("SECAGG_PRG_BACKEND", value)
        assert prg.prg_backend() == want
    monkeypatch.setattr(prg, "_backend", None)
    monkeypatch.setenv("SECAGG_PRG_BACKEND", "auto")
    assert prg.prg_backend() in prg.BACKENDS
    # a bad setting is a typed error at the first PRG call, short outputs included
    monkeypatch.setenv("SECAGG_PRG_BACKEND", "rot13")
    for call in (lambda: prg.prg_backend(), lambda: prg_bytes(SEED, b"t", 16)):
        monkeypatch.setattr(prg, "_backend", None)
        with pytest.raises(ParameterError, match="SECAGG_PRG_BACKEND"):
            call()
    monkeypatch.setattr(prg, "_backend", None)


def test_words_are_little_endian_reads_of_the_stream() -> None:
    raw = _reference_keystream(SEED, b"m", 8 * 100)
    assert np.array_equal(prg_ring(SEED, b"m", 200, 32), np.frombuffer(raw, dtype="<u4"))
    assert np.array_equal(prg_ring(SEED, b"m", 100, 64), np.frombuffer(raw, dtype="<u8"))
    assert prg_ring(SEED, b"m", 10).dtype == np.uint32
    assert prg_ring(SEED, b"m", 10, 64).dtype == np.uint64


def test_str_and_bytes_tags_are_the_same_tag() -> None:
    assert np.array_equal(prg_ring(SEED, "mask/3", 64), prg_ring(SEED, b"mask/3", 64))


# ----------------------------------------------------------------- determinism

def test_deterministic_and_prefix_stable() -> None:
    a = prg_ring(SEED, b"t", 1000)
    assert np.array_equal(a, prg_ring(SEED, b"t", 1000))
    assert np.array_equal(a[:10], prg_ring(SEED, b"t", 10))
    assert prg_bytes(SEED, b"t", 7) == prg_bytes(SEED, b"t", 70)[:7]


def test_outputs_are_fresh_writable_arrays() -> None:
    a = prg_ring(SEED, b"t", 100)
    b = prg_ring(SEED, b"t", 100)
    assert a.flags.writeable
    a[:] = 0
    assert np.array_equal(b, prg_ring(SEED, b"t", 100))


def test_empty_outputs() -> None:
    assert prg_bytes(SEED, b"t", 0) == b""
    assert prg_ring(SEED, b"t", 0).size == 0
    assert prg_field(SEED, b"t", 0, 7).size == 0


# ------------------------------------------------------- domain separation

def test_tags_and_seeds_give_different_streams() -> None:
    streams = [prg_bytes(SEED, tag, 64) for tag in (b"a", b"b", b"a\x00", b"mask", b"self_mask", b"A")]
    streams += [prg_bytes(bytes([i]) * 32, b"a", 64) for i in range(4)]
    assert len(set(streams)) == len(streams)


def test_streams_under_one_key_do_not_overlap() -> None:
    # AES is a permutation: two streams share a 16-byte block only if their
    # counter blocks meet. Sample 64 KiB of each of a few tags.
    n = 1 << 16
    tags = [b"mask/1", b"mask/2", b"self", b"x"]
    blocks: dict[bytes, bytes] = {}
    for tag in tags:
        s = prg_bytes(SEED, tag, n)
        for i in range(0, n, 16):
            blk = s[i:i + 16]
            assert blocks.setdefault(blk, tag) == tag, f"block shared by {blocks[blk]!r} and {tag!r}"
    assert len(blocks) == len(tags) * n // 16


def test_output_limit_matches_the_counter_and_gcm() -> None:
    # IV = 12 bytes of tag hash, then a 32-bit counter from 2: the limit stops
    # the counter at 2^32 - 1 (no GCM wrap, no CTR carry into the IV). It must
    # also be within what cryptography lets one GCM encryption produce, or a
    # long stream could fail half-way, after an accumulator was changed.
    for tag in (b"a", b"b", "mask/7"):
        assert len(prg._iv(tag)) == 12
    assert (MAX_OUTPUT_BYTES // 16 + 2 - 1).bit_length() == 32
    gcm_limit = getattr(modes.GCM, "_MAX_ENCRYPTED_BYTES", None)
    if gcm_limit is not None:
        assert MAX_OUTPUT_BYTES <= gcm_limit
    assert len({prg._iv(b"t%d" % i) for i in range(2000)}) == 2000


def test_field_streams_are_separate_from_ring_streams() -> None:
    # prg_field once drew its words from prg_ring(seed, tag + b"/0", ...) so
    # prg_field(seed, "x") reproduced prg_ring(seed, "x/0"). Its streams now
    # live in their own IV namespace.
    prime = (1 << 61) - 1
    field = prg_field(SEED, b"x", 256, prime)
    words = prg_ring(SEED, b"x/0", 600, 64) & np.uint64((1 << 61) - 1)
    legacy = words[words < np.uint64(prime)][:256]
    assert not np.array_equal(field, legacy)
    assert len(set(field.tolist()) & set(legacy.tolist())) == 0


# --------------------------------------------- not a low-entropy numpy RNG

def test_every_seed_bit_matters() -> None:
    # A mask PRG seeded from a 32-bit fold of the key (np.random.RandomState)
    # would give equal streams for many of these seeds.
    base = prg_bytes(SEED, b"mask", 32)
    outs = {base}
    for byte in range(SEED_SIZE):
        for bit in (0, 7):
            s = bytearray(SEED)
            s[byte] ^= 1 << bit
            outs.add(prg_bytes(bytes(s), b"mask", 32))
    assert len(outs) == 1 + 2 * SEED_SIZE


def test_seeds_with_equal_32_bit_folds_differ() -> None:
    words = np.frombuffer(SEED, dtype="<u4").copy()
    other = words.copy()
    other[0] ^= np.uint32(0xDEADBEEF)
    other[5] ^= np.uint32(0xDEADBEEF)  # the XOR fold of the eight words is unchanged
    assert np.bitwise_xor.reduce(words) == np.bitwise_xor.reduce(other)
    assert not np.array_equal(prg_ring(SEED, b"m", 16), prg_ring(other.tobytes(), b"m", 16))
    high_only = SEED[:4] + bytes(28)
    high_only_2 = SEED[:4] + bytes(27) + b"\x01"
    assert prg_bytes(high_only, b"m", 32) != prg_bytes(high_only_2, b"m", 32)


# ----------------------------------------------------- statistical sanity

def _chi2_bytes(data: bytes) -> float:
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    expected = len(data) / 256
    return float(((counts - expected) ** 2 / expected).sum())


# df = 255: mean 255, sd 22.6. 377 is the 1e-6 upper quantile, 160 the 1e-6
# lower one (a stream "too uniform" is as suspect as a biased one).
CHI2_255_LOW, CHI2_255_HIGH = 160.0, 377.0


def test_byte_histogram_chi_square() -> None:
    data = prg_bytes(SEED, b"chi2", 1 << 20)
    assert CHI2_255_LOW < _chi2_bytes(data) < CHI2_255_HIGH


def test_chi_square_has_power() -> None:
    # The same statistic rejects a stream with a small bias: one byte in 64
    # forced to zero.
    data = bytearray(prg_bytes(SEED, b"chi2", 1 << 20))
    data[::64] = bytes(len(data[::64]))
    assert _chi2_bytes(bytes(data)) > CHI2_255_HIGH


def test_bit_positions_balanced() -> None:
    n = 1 << 17
    for bits in (32, 64):
        words = prg_ring(SEED, b"bits", n, bits)
        ones = np.array([int(np.count_nonzero((words >> np.uint64(b) if bits == 64 else words >> b) & 1))
                         for b in range(bits)])
        z = (ones - n / 2) / np.sqrt(n / 4)
        assert np.all(np.abs(z) < 5.5), z
    # and pairs of adjacent bits are independent: P(b0 == b1) = 1/2
    w = prg_ring(SEED, b"pairs", n)
    same = int(np.count_nonzero((w & 1) == ((w >> 1) & 1)))
    assert abs(same - n / 2) / np.sqrt(n / 4) < 5.5


# ------------------------------------------------------ prg_ring_add_into

@pytest.mark.parametrize("bits", [32, 64])
def test_add_into_matches_modular_add_and_sub(bits: int) -> None:
    dtype = np.uint32 if bits == 32 else np.uint64
    rng = DeterministicRandom(b"acc")
    start = np.frombuffer(rng.bytes(1000 * bits // 8), dtype=dtype).copy()
    mask = prg_ring(SEED, b"pair/1/2", 1000, bits)
    modulus = 1 << bits

    acc = start.copy()
    prg_ring_add_into(acc, SEED, b"pair/1/2")
    expect = [(int(a) + int(m)) % modulus for a, m in zip(start, mask)]
    assert acc.tolist() == expect

    acc2 = start.copy()
    prg_ring_add_into(acc2, SEED, b"pair/1/2", sign=-1)
    expect = [(int(a) - int(m)) % modulus for a, m in zip(start, mask)]
    assert acc2.tolist() == expect

    prg_ring_add_into(acc, SEED, b"pair/1/2", sign=-1)  # the masks cancel
    assert np.array_equal(acc, start)


def test_add_into_sizes_and_scratch_reuse() -> None:
    # Different sizes in turn (the scratch buffer is cached per size).
    for n in (1, 3, 1000, 3, 4097, 1):
        acc = np.zeros(n, dtype=np.uint32)
        prg_ring_add_into(acc, SEED, b"s")
        assert np.array_equal(acc, prg_ring(SEED, b"s", n))


def test_add_into_non_contiguous_accumulator() -> None:
    base = np.zeros(200, dtype=np.uint32)
    view = base[::2]
    prg_ring_add_into(view, SEED, b"s")
    assert np.array_equal(view, prg_ring(SEED, b"s", 100))
    assert not base[1::2].any()


def test_add_into_concurrent_threads() -> None:
    # Concurrent accumulations of the same size must not share a scratch buffer
    # (1.25 MiB each: through the sliced path).
    n, rounds = 5 << 16, 12
    tags = [b"thread/%d" % i for i in range(4)]
    expected = {}
    for tag in tags:
        acc = np.zeros(n, dtype=np.uint32)
        for r in range(rounds):
            acc += prg_ring(SEED, tag + b"/%d" % r, n)
        expected[tag] = acc
    results: dict[bytes, np.ndarray] = {}
    barrier = threading.Barrier(len(tags))

    def work(tag: bytes) -> None:
        acc = np.zeros(n, dtype=np.uint32)
        barrier.wait()
        for r in range(rounds):
            prg_ring_add_into(acc, SEED, tag + b"/%d" % r)
        results[tag] = acc

    threads = [threading.Thread(target=work, args=(t,)) for t in tags]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tag in tags:
        assert np.array_equal(results[tag], expected[tag]), tag


@pytest.mark.parametrize("acc", [
    np.zeros(4, dtype=np.int32), np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.float64),
    np.zeros(4, dtype=np.uint16), np.zeros((2, 2), dtype=np.uint32), np.zeros(4, dtype=">u4"),
])
def test_add_into_refuses_bad_accumulators(acc: np.ndarray) -> None:
    before = acc.copy()
    with pytest.raises(ValueError):
        prg_ring_add_into(acc, SEED, b"t")
    assert np.array_equal(acc, before)


@pytest.mark.parametrize("sign", [0, 2, -2])
def test_add_into_refuses_bad_sign_and_leaves_acc(sign: int) -> None:
    acc = np.arange(8, dtype=np.uint32)
    with pytest.raises(ValueError):
        prg_ring_add_into(acc, SEED, b"t", sign=sign)
    assert np.array_equal(acc, np.arange(8, dtype=np.uint32))


# -------------------------------------------------------------- prg_field

@pytest.mark.parametrize("prime", [2, 7, 251, 65521, (1 << 31) - 1, (1 << 61) - 1])
def test_field_values_in_range_and_deterministic(prime: int) -> None:
    v = prg_field(SEED, b"f", 5000, prime)
    assert v.dtype == np.uint64 and v.size == 5000
    assert int(v.max()) < prime
    assert np.array_equal(v, prg_field(SEED, b"f", 5000, prime))
    assert not np.array_equal(v, prg_field(SEED, b"g", 5000, prime))


@pytest.mark.parametrize("prime", [7, 251])
def test_field_values_uniform(prime: int) -> None:
    n = 200_000
    counts = np.bincount(prg_field(SEED, b"u", n, prime).astype(np.int64), minlength=prime)
    expected = n / prime
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = prime - 1
    # loose: mean df, sd sqrt(2 df); more than 7 sd out fails
    assert abs(chi2 - df) < 7 * np.sqrt(2 * df) + 10, chi2


def test_field_values_large_prime_spread() -> None:
    prime = (1 << 61) - 1
    v = prg_field(SEED, b"spread", 100_000, prime).astype(np.float64) / prime
    # uniform on [0, 1): mean 1/2 (sd 0.29/sqrt(n)), every decile populated evenly
    assert abs(v.mean() - 0.5) < 0.006
    deciles = np.bincount((v * 10).astype(np.int64), minlength=10)
    assert np.all(np.abs(deciles - 10_000) < 600), deciles


@pytest.mark.parametrize("prime", [0, 1, -7, 1 << 63, 1 << 64])
def test_field_prime_out_of_range(prime: int) -> None:
    with pytest.raises(ValueError):
        prg_field(SEED, b"f", 10, prime)


# --------------------------------------------------------- argument checks

@pytest.mark.parametrize("seed", [b"", b"\x01" * 16, b"\x01" * 31, b"\x01" * 33, b"\x01" * 64,
                                  "x" * 32, None, 12345, np.zeros(32, dtype=np.uint8)])
def test_seed_must_be_exactly_32_bytes(seed: object) -> None:
    with pytest.raises(ValueError):
        prg_bytes(seed, b"t", 16)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        prg_ring(seed, b"t", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        prg_ring_add_into(np.zeros(4, dtype=np.uint32), seed, b"t")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        prg_field(seed, b"t", 4, 7)  # type: ignore[arg-type]


def test_bytearray_seed_accepted() -> None:
    assert prg_bytes(bytearray(SEED), b"t", 16) == prg_bytes(SEED, b"t", 16)


@pytest.mark.parametrize("tag", [b"", ""])
def test_empty_tag_refused(tag: bytes | str) -> None:
    with pytest.raises(ValueError):
        prg_bytes(SEED, tag, 16)
    with pytest.raises(ValueError):
        prg_ring(SEED, tag, 4)
    with pytest.raises(ValueError):
        prg_ring_add_into(np.zeros(4, dtype=np.uint32), SEED, tag)
    with pytest.raises(ValueError):
        prg_field(SEED, tag, 4, 7)


@pytest.mark.parametrize("bits", [8, 16, 31, 128])
def test_ring_bits_must_be_32_or_64(bits: int) -> None:
    with pytest.raises(ValueError):
        prg_ring(SEED, b"t", 4, bits)


def test_output_limit_enforced_before_any_work() -> None:
    with pytest.raises(ValueError):
        prg_bytes(SEED, b"t", MAX_OUTPUT_BYTES + 1)
    with pytest.raises(ValueError):
        prg_ring(SEED, b"t", MAX_OUTPUT_BYTES // 4 + 1, 32)
    with pytest.raises(ValueError):
        prg_ring(SEED, b"t", MAX_OUTPUT_BYTES // 8 + 1, 64)
    # A zero-stride view claims a huge size without the memory behind it.
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=np.uint32),
                                           shape=(MAX_OUTPUT_BYTES // 4 + 1,), strides=(0,))
    with pytest.raises(ValueError):
        prg_ring_add_into(huge, SEED, b"t")


@pytest.mark.parametrize("n", [-1, -16])
def test_negative_lengths_refused(n: int) -> None:
    with pytest.raises(ValueError):
        prg_bytes(SEED, b"t", n)
    with pytest.raises(ValueError):
        prg_ring(SEED, b"t", n)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([32, 64]), st.sampled_from([0, 1, 2, 3, 4095, 32768, 32769, 65536, 70001]),
       st.integers(0, 300), st.data())
def test_add_many_equals_one_add_per_seed(bits, length, streams, data):
    """The chunked many-stream form against one prg_ring_add_into per seed,
    across slice boundaries (2^18 bytes), more streams than one group (256)
    and mixed signs."""
    from secagg.primitives.prg import prg_ring_add_into, prg_ring_add_many_into

    dtype = np.uint32 if bits == 32 else np.uint64
    acc = np.frombuffer(DeterministicRandom(b"acc").bytes(length * bits // 8), dtype=dtype).copy()
    seeds = [DeterministicRandom(i).bytes(32) for i in range(streams)]
    signs = data.draw(st.lists(st.sampled_from([1, -1]), min_size=streams, max_size=streams))
    one_by_one = acc.copy()
    for seed, sign in zip(seeds, signs):
        prg_ring_add_into(one_by_one, seed, "t", sign)
    prg_ring_add_many_into(acc, seeds, "t", signs)
    assert np.array_equal(acc, one_by_one)


def test_add_many_checks_everything_before_touching_acc():
    from secagg.primitives.prg import prg_ring_add_many_into

    acc = np.arange(10, dtype=np.uint32)
    before = acc.copy()
    good = b"k" * 32
    for seeds, signs in (([good, b"short"], None), ([good, good], [1, 2]), ([good], [1, 1])):
        with pytest.raises(ValueError):
            prg_ring_add_many_into(acc, seeds, "t", signs)
        assert np.array_equal(acc, before)
    with pytest.raises(ValueError):
        prg_ring_add_many_into(acc.astype(np.int64), [good], "t")
    prg_ring_add_many_into(acc, [], "t")
    assert np.array_equal(acc, before)


def test_add_many_validates_the_tag_even_with_nothing_to_add():
    from secagg.primitives.prg import prg_ring_add_many_into

    for acc in (np.zeros(0, dtype=np.uint32), np.zeros(3, dtype=np.uint32)):
        with pytest.raises((ValueError, TypeError)):
            prg_ring_add_many_into(acc, [], "")
        with pytest.raises((ValueError, TypeError)):
            prg_ring_add_many_into(acc, [], 5)  # type: ignore[arg-type]
