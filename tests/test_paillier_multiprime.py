"""The key holder's opt-in three-prime Paillier modulus
(protocols/paillier/SPEC.md §3.4, "Three-prime modulus"): key generation,
CRT decryption over three primes against textbook (non-CRT) decryption, the
unit check, the refusals, and a whole key-holder round through
``secagg.simulate`` and the CLI. 1024-bit keys (the smallest three-prime
modulus the library builds) keep it fast."""

from __future__ import annotations

import json
import math
import pickle
import random
from functools import lru_cache

import gmpy2
import numpy as np
import pytest
from click.testing import CliRunner

import secagg
from secagg.aggregation import reference_aggregate
from secagg.cli import main
from secagg.errors import BadCiphertext, ParameterError
from secagg.primitives import paillier as pl
from secagg.primitives.randomness import DeterministicRandom
from secagg.protocols.paillier import PaillierKeyHolder

BITS = pl.MIN_THREE_PRIME_KEY_BITS  # 1024


@lru_cache(maxsize=None)
def keypair(seed: str = "multiprime", bits: int = BITS):
    return pl.generate_keypair(bits, DeterministicRandom(seed), primes=3)


def primes_of(sk: pl.PrivateKey) -> list[int]:
    return [int(p) for p in sk._primes]


def textbook_decrypt(n: int, primes: list[int], c: int) -> int:
    """Paillier's decryption without CRT: ``L(c^lambda mod n^2) * mu mod n``,
    ``lambda = lcm(p_i - 1)``, ``mu = L((1+n)^lambda mod n^2)^-1 mod n``."""
    n2 = n * n
    lam = 1
    for p in primes:
        lam = lam * (p - 1) // math.gcd(lam, p - 1)
    mu = pow((pow(1 + n, lam, n2) - 1) // n, -1, n)
    return (pow(c, lam, n2) - 1) // n * mu % n


def encrypt_many(pk: pl.PublicKey, ms: list[int], seed: str) -> list[int]:
    rho = pl.precompute_obfuscators(pk, len(ms), DeterministicRandom(seed))
    return [int(c) for c in pl.encrypt_with_obfuscators(pk, ms, rho)]


def plaintexts(pk: pl.PublicKey, count: int, seed: int) -> list[int]:
    gen = random.Random(seed)  # test data only
    return [0, 1, pk.n - 1] + [gen.randrange(pk.n) for _ in range(count - 3)]


# ------------------------------------------------------------------ key generation

def test_generate_three_primes_sizes_and_distinct():
    pk, sk = keypair()
    ps = primes_of(sk)
    assert sk.prime_count == 3 and len(set(ps)) == 3
    assert all(gmpy2.is_prime(p) for p in ps)
    assert sorted(p.bit_length() for p in ps) == [341, 341, 342]  # sizes summing to 1024
    assert ps[0] * ps[1] * ps[2] == pk.n and pk.n.bit_length() == BITS == pk.key_bits
    phi = (ps[0] - 1) * (ps[1] - 1) * (ps[2] - 1)
    assert math.gcd(pk.n, phi) == 1


def test_prime_sizes_at_2048():
    assert pl._three_prime_sizes(2048) == (683, 683, 682)
    assert pl._three_prime_sizes(3072) == (1024, 1024, 1024)
    assert sum(pl._three_prime_sizes(1032)) == 1032


def test_generate_is_reproducible_with_the_same_rng_and_fresh_without():
    assert pl.generate_keypair(BITS, DeterministicRandom("multiprime"), primes=3)[0] == keypair()[0]
    assert keypair("other")[0] != keypair()[0]
    a, sk_a = pl.generate_keypair(BITS, primes=3)  # the OS CSPRNG
    b, _ = pl.generate_keypair(BITS, primes=3)
    assert a != b and a.key_bits == BITS and sk_a.prime_count == 3


def test_two_prime_keys_unchanged():
    pk, sk = pl.generate_keypair(512, DeterministicRandom("primitives-512"))
    pk2, _ = pl.generate_keypair(512, DeterministicRandom("primitives-512"), primes=2)
    assert pk == pk2 and sk.prime_count == 2
    assert sk.to_phe().p * sk.to_phe().q == pk.n


@pytest.mark.parametrize("bad", [1, 4, 0, -3, "3", True, 3.0, None])
def test_generate_refuses_other_prime_counts(bad):
    with pytest.raises(ParameterError, match="2 or 3 primes"):
        pl.generate_keypair(BITS, DeterministicRandom("x"), primes=bad)


def test_three_primes_refused_below_the_minimum_size():
    with pytest.raises(ParameterError, match="at least 1024 bits"):
        pl.generate_keypair(768, DeterministicRandom("small"), primes=3)
    assert pl.generate_keypair(768, DeterministicRandom("small"))[1].prime_count == 2  # two primes still fine


def test_keypair_from_primes_two_and_three():
    pk, sk = keypair()
    ps = primes_of(sk)
    pk3, sk3 = pl.keypair_from_primes(*reversed(ps))
    assert pk3 == pk and sk3.prime_count == 3
    c = encrypt_many(pk, [12345], "kfp")[0]
    assert sk3.decrypt(c) == 12345
    # two primes: the existing call, a phe key
    phe_key = pl.generate_keypair(512, DeterministicRandom("two"))[1].to_phe()
    p2, q2 = int(phe_key.q), int(phe_key.p)
    pk2, sk2 = pl.keypair_from_primes(p2, q2)
    assert pk2.n == p2 * q2 and sk2.prime_count == 2 and sk2.to_phe().p == min(p2, q2)


def test_keypair_from_primes_refusals():
    ps = primes_of(keypair()[1])
    with pytest.raises(ParameterError):
        pl.keypair_from_primes(ps[0])
    with pytest.raises(ParameterError):
        pl.keypair_from_primes(*ps, int(gmpy2.next_prime(ps[0])))
    with pytest.raises(ParameterError, match="distinct"):
        pl.keypair_from_primes(ps[0], ps[0], ps[1])
    with pytest.raises(ParameterError, match="distinct primes"):
        pl.keypair_from_primes(ps[0], ps[1], ps[2] + 1)  # even: not a prime
    with pytest.raises(ParameterError):
        pl.keypair_from_primes(ps[0], ps[1], True)
    small = [int(gmpy2.next_prime(1 << 255)), int(gmpy2.next_prime(3 << 254)), int(gmpy2.next_prime(5 << 253))]
    with pytest.raises(ParameterError, match="at least 1024 bits"):
        pl.keypair_from_primes(*small)
    # unbalanced: a 200-bit factor in a 1032-bit modulus (416 + 417 + 200 bits)
    tiny = int(gmpy2.next_prime(3 << 198))
    big, other = int(gmpy2.next_prime(3 << 414)), int(gmpy2.next_prime(3 << 415))
    assert (tiny * big * other).bit_length() == 1032
    with pytest.raises(ParameterError, match="third"):
        pl.keypair_from_primes(tiny, big, other)


# ------------------------------------------------------------------ decryption

def test_round_trip_and_homomorphic_addition():
    pk, sk = keypair()
    ms = plaintexts(pk, 40, 1)
    cs = encrypt_many(pk, ms, "round trip")
    assert sk.decrypt_many(cs) == ms
    assert all(isinstance(m, int) for m in sk.decrypt_many(cs))
    a, b = ms[5], ms[6]
    total = cs[5] * cs[6] % pk.n_square
    assert sk.decrypt(total) == (a + b) % pk.n
    wrap = cs[2] * cs[1] % pk.n_square  # (n - 1) + 1 wraps to 0
    assert sk.decrypt(wrap) == 0


def test_equals_textbook_decryption_on_any_unit():
    pk, sk = keypair()
    ps = primes_of(sk)
    gen = random.Random(7)
    units = []
    while len(units) < 25:  # any unit of Z*_{n^2}, not only encryptions made here
        c = gen.randrange(1, pk.n_square)
        if math.gcd(c, pk.n) == 1:
            units.append(c)
    assert sk.decrypt_many(units) == [textbook_decrypt(pk.n, ps, c) for c in units]


def test_two_threads_give_the_same_result():
    pk, sk = keypair()
    ms = plaintexts(pk, 300, 2)
    cs = encrypt_many(pk, ms, "threads")
    assert sk.decrypt_many(cs, threads=2) == sk.decrypt_many(cs, threads=1) == ms


@pytest.mark.parametrize("primes,s", [(3, 2), (3, 3), (2, 2), (2, 3)])
def test_damgard_jurik_with_two_and_three_primes(primes, s):
    pk, sk = keypair() if primes == 3 else pl.generate_keypair(512, DeterministicRandom("dj two"))
    n = pk.n
    ns, top = n ** s, n ** (s + 1)
    gen = random.Random(3)
    ms = [0, 1, ns - 1] + [gen.randrange(ns) for _ in range(5)]
    cs = []
    for m in ms:
        r = gen.randrange(2, n)
        assert math.gcd(r, n) == 1
        # (1 + n)^m mod n^(s+1) by the binomial sum, times r^(n^s)
        one_plus = sum(math.comb(m, k) * n ** k for k in range(s + 1)) % top
        cs.append(one_plus * pow(r, ns, top) % top)
    assert sk.decrypt_many(cs, s=s) == ms
    assert sk.decrypt_many(cs, s=s, threads=2) == ms
    factor = primes_of(sk)[1] if primes == 3 else int(sk.to_phe().q)
    with pytest.raises(BadCiphertext):
        sk.decrypt_many(cs + [factor * 5], s=s)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_multiple_of_each_prime_is_refused(which):
    pk, sk = keypair()
    p = primes_of(sk)[which]
    good = encrypt_many(pk, [5, 6, 7], "units")
    for bad in (p, 7 * p, p * p, p * (pk.n // p + 3)):
        assert 0 < bad < pk.n_square
        with pytest.raises(BadCiphertext):
            sk.decrypt_many(good + [bad])
        with pytest.raises(BadCiphertext):
            sk.decrypt_many([bad] + good, threads=2)


@pytest.mark.parametrize("bad", [0, -1, "n^2", "n^2+1"])
def test_out_of_range_is_refused(bad):
    pk, sk = keypair()
    value = {"n^2": pk.n_square, "n^2+1": pk.n_square + 1}.get(bad, bad)
    good = encrypt_many(pk, [1], "range")
    with pytest.raises(BadCiphertext, match="outside"):
        sk.decrypt_many(good + [int(value)])


@pytest.mark.parametrize("bad", [1.0, "12", None, True, b"\x01"])
def test_non_integers_are_refused(bad):
    pk, sk = keypair()
    good = encrypt_many(pk, [1], "types")
    with pytest.raises(BadCiphertext, match="not an integer"):
        sk.decrypt_many(good + [bad])


def test_key_never_pickles_repr_shows_key_id_only_and_no_phe_form():
    pk, sk = keypair()
    with pytest.raises(TypeError):
        pickle.dumps(sk)
    text = repr(sk)
    assert pk.key_id.hex()[:16] in text
    for p in primes_of(sk):
        assert str(p) not in text and hex(p)[2:] not in text
    with pytest.raises(ParameterError, match="phe"):
        sk.to_phe()


# ------------------------------------------------------------------ key holder, simulate, CLI

def test_key_holder_generates_a_three_prime_key_and_validates_key_primes():
    kh = PaillierKeyHolder(BITS, DeterministicRandom("kh"), key_primes=3, threads=1)
    assert kh.key_primes == 3 and kh._private_key.prime_count == 3
    assert kh.public_key.key_bits == BITS and "three-prime" in repr(kh)
    assert PaillierKeyHolder(512, DeterministicRandom("kh2"), threads=1).key_primes == 2
    for bad in (1, 4, "3", True, 3.0, None):
        with pytest.raises(ParameterError, match="key_primes"):
            PaillierKeyHolder(BITS, DeterministicRandom("kh"), key_primes=bad)  # type: ignore[arg-type]


def _updates(n: int, d: int, seed: int) -> list[np.ndarray]:
    gen = np.random.default_rng(seed)
    return [gen.normal(0, 0.3, d) for _ in range(n)]


def test_simulate_key_holder_round_with_three_primes():
    xs = _updates(4, 300, 11)
    res = secagg.simulate(xs, protocol="paillier", decryption="key_holder", key_primes=3, key_bits=BITS, seed=5,
                          rule="sum")
    ref = reference_aggregate("sum", xs, clip=1.0)
    assert res.included == (1, 2, 3, 4)
    assert np.max(np.abs(res.aggregate - ref)) < 4 * 2.0 ** -res.params["frac_bits"] * 2
    assert res.params["decryption"] == "key holder (three-prime key)"
    two = secagg.simulate(xs, protocol="paillier", decryption="key_holder", key_bits=BITS, seed=5, rule="sum")
    assert two.params["decryption"] == "key holder"
    assert np.max(np.abs(two.aggregate - ref)) < 4 * 2.0 ** -two.params["frac_bits"] * 2


def test_simulate_refuses_key_primes_with_the_committee_and_bad_values():
    xs = _updates(3, 8, 12)
    with pytest.raises(ParameterError, match="two safe primes"):
        secagg.simulate(xs, protocol="paillier", key_primes=3, key_bits=BITS, seed=1)  # committee by default
    with pytest.raises(ParameterError, match="two safe primes"):
        secagg.simulate(xs, protocol="paillier", decryption="committee", key_primes=3, key_bits=BITS, seed=1)
    with pytest.raises(ParameterError, match="paillier"):
        secagg.simulate(xs, protocol="secagg", key_primes=3, seed=1)
    for bad in (1, 4, "3", True):
        with pytest.raises(ParameterError, match="key_primes"):
            secagg.simulate(xs, protocol="paillier", decryption="key_holder", key_primes=bad, key_bits=BITS)


def test_cli_key_primes_option():
    res = CliRunner().invoke(main, ["simulate", "--protocol", "paillier", "--clients", "4", "--dim", "16",
                                    "--key-bits", "1024", "--decryption", "key_holder", "--key-primes", "3",
                                    "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["params"]["decryption"] == "key holder (three-prime key)"
    assert summary["max_abs_error_vs_plaintext"] < 1e-3
