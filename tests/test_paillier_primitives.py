"""The Paillier wrapper (secagg/primitives/paillier.py): keys, encryption with
injected randomness, obfuscator pools (standard and DJN short exponent),
interoperability with phe, ciphertext validation. Small keys keep it fast."""

from __future__ import annotations

import pickle
from functools import lru_cache

import gmpy2
import pytest
from phe import paillier as phe_paillier

from secagg.drivers.concurrency import process_executor
from secagg.errors import (AbortReason, BadCiphertext, BadEncoding, InvalidCiphertext, LocalProtocolError,
                          ParameterError, RemoteProtocolError, WireFormatError)
from secagg.primitives import paillier as pl
from secagg.primitives.randomness import DeterministicRandom


@lru_cache(maxsize=None)
def keypair(bits: int = 512, seed: str = "primitives"):
    return pl.generate_keypair(bits, DeterministicRandom(f"{seed}-{bits}"))


def test_keygen_sizes_and_determinism():
    for bits in (512, 1024):
        pk, sk = keypair(bits)
        assert pk.n.bit_length() == bits
        assert pk.ciphertext_bytes == bits // 4
        assert sk.public_key == pk
    pk2, _ = pl.generate_keypair(512, DeterministicRandom("primitives-512"))
    assert pk2 == keypair(512)[0]
    assert keypair(512, "other")[0] != keypair(512)[0]


def test_keygen_through_phe():
    pk, sk = pl.generate_keypair(512)  # phe.generate_paillier_keypair under the hood
    assert pk.key_bits == 512
    assert isinstance(sk.to_phe(), phe_paillier.PaillierPrivateKey)
    assert sk.decrypt(pl.encrypt(pk, 42)) == 42


def test_key_sizes_refused():
    with pytest.raises(ParameterError):
        pl.generate_keypair(500)
    with pytest.raises(ParameterError):
        pl.generate_keypair(256)
    with pytest.raises(ParameterError):
        pl.PublicKey(1 << 511)  # even
    with pytest.raises(ParameterError):
        pl.PublicKey.from_bytes(b"\x00" + keypair()[0].to_bytes())  # leading zero byte


def test_roundtrip_and_homomorphism():
    pk, sk = keypair()
    rng = DeterministicRandom("rt")
    for m in (0, 1, 2, 12345, pk.n - 1):
        assert sk.decrypt(pl.encrypt(pk, m, rng)) == m
    a, b = 1 << 200, 987654321
    ca, cb = pl.encrypt(pk, a, rng), pl.encrypt(pk, b, rng)
    assert sk.decrypt(ca * cb % pk.n_square) == a + b
    with pytest.raises(ParameterError):
        pl.encrypt(pk, pk.n, rng)
    with pytest.raises(ParameterError):
        pl.encrypt(pk, -1, rng)


def test_encryption_matches_phe_raw_encrypt_with_same_r():
    pk, sk = keypair()
    phe_pk = pk.to_phe()
    rs = pl.draw_randomizer_inputs(pk, pl.STANDARD, 5, DeterministicRandom("r"))
    rhos = pl.obfuscators_from_inputs(pk.n, "standard", rs)
    ms = [0, 7, 1 << 100, 31337, pk.n // 5]
    ours = pl.encrypt_with_obfuscators(pk, ms, rhos)
    for m, r, c in zip(ms, rs, ours):
        assert phe_pk.raw_encrypt(m, r_value=r) == c
        assert sk.to_phe().raw_decrypt(int(c)) == m


def test_decrypt_many_matches_phe():
    pk, sk = keypair(1024)
    rng = DeterministicRandom("dm")
    ms = [int.from_bytes(rng.bytes(100), "big") for _ in range(9)]
    cs = pl.encrypt_with_obfuscators(pk, ms, pl.precompute_obfuscators(pk, 9, rng))
    assert sk.decrypt_many(cs) == ms
    assert sk.decrypt_many(cs, threads=3) == ms
    assert [sk.to_phe().raw_decrypt(int(c)) for c in cs] == ms
    assert sk.decrypt_many([]) == []


def test_djn_base_is_public_and_valid():
    pk, sk = keypair()
    h_s = pl.djn_base(pk)
    assert h_s == pl.djn_base(pl.PublicKey(pk.n))  # derived from n alone
    assert 1 < h_s < pk.n_square and gmpy2.gcd(h_s, pk.n) == 1
    # h_s is an n-th residue: it decrypts to 0
    assert sk.decrypt(h_s) == 0


def test_short_exponent_spec():
    assert pl.default_short_exponent_bits(2048) == 448
    assert pl.default_short_exponent_bits(3072) == 512
    spec = pl.short_exponent(2048)
    assert spec.kind == "short_exponent" and spec.exponent_bits == 448
    with pytest.raises(ParameterError):
        pl.RandomizerSpec("short_exponent", 100)
    with pytest.raises(ParameterError):
        pl.RandomizerSpec("bogus")
    with pytest.raises(ParameterError):
        pl.RandomizerSpec("standard", 448)


@pytest.mark.parametrize("spec", [pl.STANDARD, pl.short_exponent(512), pl.RandomizerSpec("short_exponent", 300, 5)])
def test_pool_encrypts_correctly(spec):
    pk, sk = keypair()
    pool = pl.ObfuscatorPool.precompute(pk, 12, DeterministicRandom("pool"), spec)
    assert len(pool) == 12
    ms = list(range(100, 112))
    cs = pl.encrypt_with_obfuscators(pk, ms, pool.take(12))
    assert sk.decrypt_many(cs) == ms
    assert len(set(int(c) for c in cs)) == 12


def test_fixed_base_table_equals_powmod():
    pk, _ = keypair()
    h_s = pl.djn_base(pk)
    rng = DeterministicRandom("fb")
    for spec in (pl.short_exponent(512), pl.RandomizerSpec("short_exponent", 333, 3)):
        exps = pl.draw_randomizer_inputs(pk, spec, 6, rng)
        got = pl.obfuscators_from_inputs(pk.n, spec.kind, exps, h_s=h_s, exponent_bits=spec.exponent_bits,
                                         window=spec.window)
        assert got == [int(gmpy2.powmod(h_s, a, pk.n_square)) for a in exps]
        assert all(a < 1 << spec.exponent_bits for a in exps)


def test_pool_hands_out_each_value_once():
    pk, _ = keypair()
    pool = pl.ObfuscatorPool.precompute(pk, 5, DeterministicRandom("once"))
    first = pool.take(3)
    rest = pool.take(2)
    assert len(pool) == 0 and not set(map(int, first)) & set(map(int, rest))
    with pytest.raises(LocalProtocolError):
        pool.take(1)


def test_parallel_pool_equals_serial():
    pk, _ = keypair()
    for spec in (pl.STANDARD, pl.short_exponent(512)):
        serial = pl.precompute_obfuscators(pk, 7, DeterministicRandom("par"), spec)
        with process_executor(2) as ex:
            parallel = pl.precompute_obfuscators(pk, 7, DeterministicRandom("par"), spec, executor=ex)
            three_tasks = pl.precompute_obfuscators(pk, 7, DeterministicRandom("par"), spec, executor=ex,
                                                    workers=3)
        assert parallel == serial == three_tasks


def test_primitives_start_no_process():
    pk, _ = keypair()
    assert not hasattr(pl, "process_executor")  # process pools live in secagg.drivers.concurrency
    with pytest.raises(ParameterError):
        pl.precompute_obfuscators(pk, 3, DeterministicRandom("np"), workers=2)  # no executor: refused


def test_ciphertext_bytes_roundtrip_and_validation():
    pk, sk = keypair()
    rng = DeterministicRandom("wire")
    cs = [pl.encrypt(pk, m, rng) for m in (1, 2, 3)]
    data = pl.ciphertexts_to_bytes(pk, cs)
    assert len(data) == 3 * pk.ciphertext_bytes
    assert pl.ciphertexts_from_bytes(pk, data, 3) == cs
    # local errors: the primitive does not know whose bytes these are
    for short in (data[:-1], data):
        with pytest.raises(BadEncoding) as info:
            pl.ciphertexts_from_bytes(pk, short, 3 if short is not data else 2)
        assert not isinstance(info.value, RemoteProtocolError)
        assert isinstance(info.value.remote(), WireFormatError)
    p = int(sk.to_phe().p)
    L = pk.ciphertext_bytes
    for bad in (0, pk.n_square, pk.n_square + 5, (1 << (8 * L)) - 1, pk.n, 3 * pk.n, p, 7 * p, p * p):
        blob = data[:L] + bad.to_bytes(L, "big") + data[2 * L:]
        with pytest.raises(BadCiphertext) as bad_info:
            pl.ciphertexts_from_bytes(pk, blob, 3)
        assert not isinstance(bad_info.value, RemoteProtocolError)
        remote = bad_info.value.remote()
        assert isinstance(remote, InvalidCiphertext) and remote.reason is AbortReason.INVALID_CIPHERTEXT


def test_private_key_is_not_picklable_and_repr_is_safe():
    pk, sk = keypair()
    with pytest.raises(TypeError):
        pickle.dumps(sk)
    p = int(sk.to_phe().p)
    assert str(p) not in repr(sk) and hex(p)[2:] not in repr(sk)


# ------------------------------------------------- key holder decryption (CRT)

def _random_units(pk, count, seed):
    """Uniform elements of Z*_{n^2}: not only encryptions made here, any unit."""
    rng = DeterministicRandom(seed)
    out = []
    while len(out) < count:
        c = int(int.from_bytes(rng.bytes(pk.ciphertext_bytes + 16), "big") % pk.n_square)
        if c and gmpy2.gcd(c, pk.n) == 1:
            out.append(c)
    return out


@pytest.mark.parametrize("bits", [512, 1024])
def test_decrypt_many_equals_phe_on_random_units(bits):
    pk, sk = keypair(bits)
    cs = _random_units(pk, 150, f"units-{bits}")
    ref = [int(sk.to_phe().raw_decrypt(c)) for c in cs]
    assert len(set(ref)) == len(ref)
    assert sk.decrypt_many(cs) == ref
    for threads in (2, 3, 7):  # chunks taken from a shared counter: same order, same values
        assert sk.decrypt_many(cs, threads=threads) == ref
    assert sk.decrypt_many(cs[:1], threads=4) == ref[:1]
    assert sk.decrypt_many(tuple(gmpy2.mpz(c) for c in cs[:5])) == ref[:5]
    assert [sk.decrypt(c) for c in cs[:5]] == ref[:5]


def test_decrypt_edge_plaintexts():
    pk, sk = keypair()
    rng = DeterministicRandom("edges")
    ms = [0, 1, 2, pk.n // 2, pk.n - 2, pk.n - 1]
    cs = [pl.encrypt(pk, m, rng) for m in ms]
    assert sk.decrypt_many(cs) == ms == sk.decrypt_many(cs, threads=2)
    assert [sk.decrypt(c) for c in cs] == ms
    # 1 is the encryption of 0 with rho = 1; (1 + n) of 1; 1 - n = (1 + n)^(n-1) of n - 1
    assert sk.decrypt_many([1, 1 + pk.n, pk.n_square + 1 - pk.n]) == [0, 1, pk.n - 1]
    assert sk.decrypt_many(cs + [pk.n_square - 1]) == ms + [sk.to_phe().raw_decrypt(int(pk.n_square) - 1)]


def test_decrypt_refuses_non_units_with_a_typed_error():
    pk, sk = keypair()
    p, q = int(sk.to_phe().p), int(sk.to_phe().q)
    good = _random_units(pk, 40, "refuse")
    for bad in (0, -1, pk.n_square, pk.n_square + 1, pk.n, 5 * pk.n, p, q, 3 * p, p * p, q * q * 7,
                pk.n_square - p):
        for pos in (0, 17, 39):
            batch = good[:pos] + [bad] + good[pos:]
            for threads in (1, 2):
                with pytest.raises(BadCiphertext) as info:
                    sk.decrypt_many(batch, threads=threads)
                assert isinstance(info.value.remote(), InvalidCiphertext)
        with pytest.raises(BadCiphertext):
            sk.decrypt(bad)
    for bad in (1.0, "1", b"\x01", None, True):
        with pytest.raises(BadCiphertext):
            sk.decrypt_many(good[:3] + [bad])
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ParameterError):
            sk.decrypt_many(good, threads=threads)
    # the refusals lost nothing: the same key still decrypts the good ones
    assert sk.decrypt_many(good) == [int(sk.to_phe().raw_decrypt(c)) for c in good]


@pytest.mark.parametrize("s", [2, 3])
def test_damgard_jurik_decrypt_many(s):
    """Single-key CRT decryption of Damgard-Jurik ciphertexts under the same primes,
    checked against encryptions computed here from the definition."""
    pk, sk = keypair()
    n = gmpy2.mpz(pk.n)
    ns, mod = n ** s, n ** (s + 1)
    rng = DeterministicRandom(f"dj-{s}")
    ms = [0, 1, int(ns) - 1, int(ns) // 3] + [int.from_bytes(rng.bytes(70 * s), "big") % int(ns) for _ in range(20)]
    cs = []
    for m in ms:
        r = 1 + int.from_bytes(rng.bytes(80), "big") % (pk.n - 1)
        cs.append(int(gmpy2.powmod(1 + n, m, mod) * gmpy2.powmod(r, ns, mod) % mod))
    assert sk.decrypt_many(cs, s=s) == ms == sk.decrypt_many(cs, threads=2, s=s)
    # additive: the product decrypts to the sum mod n^s
    assert sk.decrypt_many([cs[2] * cs[3] % mod], s=s) == [(ms[2] + ms[3]) % int(ns)]
    p = int(sk.to_phe().p)
    for bad in (0, int(mod), p, p ** (s + 1), int(n)):
        with pytest.raises(BadCiphertext):
            sk.decrypt_many(cs[:4] + [bad], s=s)
    for bad_s in (0, 5, 1.0):
        with pytest.raises(ParameterError):
            sk.decrypt_many(cs, s=bad_s)


def test_run_chunks_covers_each_item_once_and_raises():
    import threading
    seen: list[int] = []
    lock = threading.Lock()

    def work(lo, hi):
        with lock:
            seen.extend(range(lo, hi))

    for count, threads, chunk in ((0, 2, None), (1, 2, None), (1000, 2, None), (997, 3, 10), (5, 8, 1)):
        seen.clear()
        pl.run_chunks(work, count, threads, chunk)
        assert sorted(seen) == list(range(count))

    def boom(lo, hi):
        if lo >= 40:
            raise ValueError("chunk failed")

    with pytest.raises(ValueError, match="chunk failed"):
        pl.run_chunks(boom, 100, 2, 10)
