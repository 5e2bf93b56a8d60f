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
