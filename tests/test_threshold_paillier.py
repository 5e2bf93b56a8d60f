"""Threshold Paillier / Damgard-Jurik (secagg.primitives.threshold_paillier):
correctness over every t-subset, refusal of fewer than t shares, no single
share or t-1 shares that decrypt, and every kind of bad share caught by its
proof before combining."""

from __future__ import annotations

import itertools
import math
import pickle
from functools import lru_cache

import gmpy2
import pytest
from gmpy2 import mpz

from secagg.errors import BadDecryptionShare, BadEncoding, ParameterError, ReconstructionError
from secagg.primitives import paillier as pl
from secagg.primitives import threshold_paillier as tp
from secagg.primitives.randomness import DeterministicRandom


@lru_cache(maxsize=None)
def dealt(t: int = 3, l: int = 5, s: int = 1, seed: int = 1):
    return tp.deal(512, t, l, s=s, rng=DeterministicRandom(seed))


def ciphertexts(key, messages, seed=7):
    rng = DeterministicRandom(seed)
    return [tp.encrypt(key, m, rng) for m in messages]


def messages_for(key):
    return [0, 1, 2, 123456789, int(key.n_s) - 1, int(key.n_s) // 3]


def test_safe_primes_are_safe_and_sized():
    rng = DeterministicRandom(3)
    for bits in (64, 256, 512):
        p = tp.safe_prime(bits, rng)
        assert p.bit_length() == bits and p >> (bits - 2) == 3
        assert gmpy2.is_prime(p, 40) and gmpy2.is_prime((p - 1) // 2, 40)


def test_deal_is_reproducible_and_public_key_matches_paillier():
    k1, s1 = dealt()
    k2, s2 = tp.deal(512, 3, 5, rng=DeterministicRandom(1))
    assert k1 == k2 and k1.key_id == k2.key_id
    assert [a.secret_bytes() for a in s1] == [b.secret_bytes() for b in s2]
    assert k1.public_key == pl.PublicKey(int(k1.n)) and k1.key_bits == 512
    assert k1.delta == math.factorial(5)
    # for s = 1, Paillier encryption and threshold encryption are the same scheme
    c = pl.encrypt(k1.public_key, 4242, DeterministicRandom(9))
    assert tp.decrypt_with_shares(s1[:3], [c]) == [4242]


@pytest.mark.parametrize("t,l", [(1, 2), (2, 3), (3, 5), (4, 4)])
def test_every_t_subset_decrypts(t, l):
    key, shares = dealt(t, l)
    ms = messages_for(key)
    cs = ciphertexts(key, ms)
    parts = [tp.partial_decrypt(sh, cs, b"ctx", rng=DeterministicRandom(sh.index)) for sh in shares]
    for p in parts:
        tp.verify_partial(key, cs, p, b"ctx")
    for subset in itertools.combinations(parts, t):
        assert tp.combine(key, list(subset), len(cs)) == ms
    # more than t: the first t by index are used, same answer
    assert tp.combine(key, parts, len(cs)) == ms


@pytest.mark.parametrize("s", [2, 3])
def test_damgard_jurik_s_above_one(s):
    key, shares = dealt(2, 3, s)
    assert key.n_s == key.n ** s and key.modulus == key.n ** (s + 1)
    ms = messages_for(key)
    cs = ciphertexts(key, ms)
    assert tp.decrypt_with_shares([shares[2], shares[0]], cs, b"x") == ms
    # additively homomorphic mod n^s
    prod = cs[3] * cs[4] % key.modulus
    assert tp.decrypt_with_shares(shares[:2], [prod]) == [(ms[3] + ms[4]) % int(key.n_s)]


def test_homomorphic_sum_of_paillier_ciphertexts():
    key, shares = dealt()
    pk = key.public_key
    rng = DeterministicRandom(11)
    xs = [5, 17, 2**200, 99]
    acc = mpz(1)
    for x in xs:
        acc = acc * pl.encrypt(pk, x, rng) % pk.n_square
    assert tp.decrypt_with_shares(shares[1:4], [acc]) == [sum(xs)]


def test_fewer_than_t_shares_are_refused():
    key, shares = dealt(3, 5)
    cs = ciphertexts(key, [1, 2])
    parts = [tp.partial_decrypt(sh, cs) for sh in shares]
    for subset in itertools.combinations(parts, 2):
        with pytest.raises(ReconstructionError, match="3 needed"):
            tp.combine(key, list(subset))
    with pytest.raises(ReconstructionError, match="duplicate"):
        tp.combine(key, [parts[0], parts[0], parts[1]])
    with pytest.raises(ReconstructionError, match="lengths"):
        tp.combine(key, {1: parts[0].values, 2: parts[1].values, 3: parts[2].values[:1]})


def _interpolate_anyway(key, partials):
    """What a coalition of fewer than t holders could compute: Lagrange
    interpolation at 0 over their own points, then the decryption formula."""
    lam = tp.lagrange_at_zero([p.index for p in partials])
    den = math.lcm(*(f.denominator for f in lam.values()))
    mod = key.modulus
    out = []
    for j in range(len(partials[0].values)):
        c = mpz(1)
        for p in partials:
            c = c * gmpy2.powmod(p.values[j], int(2 * den * lam[p.index]), mod) % mod
        out.append(int(tp._dlog(key, c) * gmpy2.invert(4 * key.delta * den, key.n_s) % key.n_s))
    return out


def test_no_single_share_and_no_t_minus_one_shares_decrypt():
    key, shares = dealt(3, 5)
    ms = [31337, 2**100 + 7, 5]
    cs = ciphertexts(key, ms)
    parts = [tp.partial_decrypt(sh, cs) for sh in shares]
    for k in (1, 2):  # every single share, every pair (t - 1 = 2)
        for subset in itertools.combinations(parts, k):
            got = _interpolate_anyway(key, list(subset))
            assert all(g != m for g, m in zip(got, ms)), f"{k} shares decrypted"
    # the same computation with t shares does decrypt (the check above can fail)
    assert _interpolate_anyway(key, parts[:3]) == ms


def _tampered(p: tp.PartialDecryption, **kw) -> tp.PartialDecryption:
    d = {"index": p.index, "values": p.values, "challenge": p.challenge, "response": p.response}
    d.update(kw)
    return tp.PartialDecryption(**d)


def test_bad_shares_are_caught_by_the_proof():
    key, shares = dealt(3, 5)
    cs = ciphertexts(key, [1, 2, 3, 4])
    other = ciphertexts(key, [1, 2, 3, 5], seed=8)
    good = tp.partial_decrypt(shares[0], cs, b"session-a")
    tp.verify_partial(key, cs, good, b"session-a")
    mod = key.modulus
    bad = {
        "one value changed": _tampered(good, values=(good.values[0] * 2 % mod,) + good.values[1:]),
        "one value squared": _tampered(good, values=good.values[:3] + (good.values[3] ** 2 % mod,)),
        "values of another ciphertext": tp.partial_decrypt(shares[0], other, b"session-a"),
        "another holder's index": _tampered(good, index=2),
        "proof for another context": tp.partial_decrypt(shares[0], cs, b"session-b"),
        "challenge changed": _tampered(good, challenge=good.challenge ^ 1),
        "response changed": _tampered(good, response=good.response + 1),
        "too few values": _tampered(good, values=good.values[:3]),
        "value zero": _tampered(good, values=(mpz(0),) + good.values[1:]),
        "value out of range": _tampered(good, values=(mod + 1,) + good.values[1:]),
        "value sharing a factor with n": _tampered(good, values=(key.n,) + good.values[1:]),
        "index out of range": _tampered(good, index=6),
        "negative response": _tampered(good, response=-good.response),
        "huge response": _tampered(good, response=1 << 20000),
    }
    for name, p in bad.items():
        with pytest.raises(BadDecryptionShare):
            tp.verify_partial(key, cs, p, b"session-a")
            pytest.fail(name)
    # a share of another key
    key2, shares2 = dealt(3, 5, seed=2)
    foreign = tp.partial_decrypt(shares2[0], [c % key2.modulus or 1 for c in cs])
    with pytest.raises(BadDecryptionShare):
        tp.verify_partial(key, cs, _tampered(foreign, values=tuple(v % mod or 1 for v in foreign.values)))


def test_negating_a_share_does_not_change_the_result():
    """Shares are squared before use: -c_i (an element of order 2 away) is harmless."""
    key, shares = dealt(2, 3)
    cs = ciphertexts(key, [77])
    parts = [tp.partial_decrypt(sh, cs) for sh in shares[:2]]
    neg = _tampered(parts[0], values=(key.modulus - parts[0].values[0],))
    assert tp.combine(key, [neg, parts[1]]) == [77]


def test_ciphertexts_out_of_range_are_refused():
    key, shares = dealt()
    with pytest.raises(BadEncoding):
        tp.partial_decrypt(shares[0], [0])
    with pytest.raises(BadEncoding):
        tp.partial_decrypt(shares[0], [key.modulus])


def test_parameters_refused():
    with pytest.raises(ParameterError):
        tp.deal(512, 4, 3)
    with pytest.raises(ParameterError):
        tp.deal(512, 1, 1)
    with pytest.raises(ParameterError):
        tp.deal(520, 2, 3)  # primes of 260 bits: fine; 520 % 16 != 0 refused
    with pytest.raises(ParameterError):
        tp.deal(512, 2, 3, s=0)
    key, shares = dealt()
    with pytest.raises(ParameterError, match="verification key"):
        tp.KeyShare(key, 1, int.from_bytes(shares[1].secret_bytes(), "big"))
    with pytest.raises(ParameterError):
        tp.KeyShare(key, 0, 1)
    with pytest.raises(ParameterError):
        tp.encrypt(key, int(key.n_s))


def test_share_roundtrip_secrecy_and_no_pickle():
    key, shares = dealt()
    sh = shares[2]
    again = tp.KeyShare.from_secret_bytes(key, 3, sh.secret_bytes())
    assert again.secret_bytes() == sh.secret_bytes()
    assert sh.secret_bytes().hex() not in repr(sh) and str(int.from_bytes(sh.secret_bytes(), "big")) not in repr(sh)
    with pytest.raises(TypeError):
        pickle.dumps(sh)


def test_threads_give_the_same_shares():
    key, shares = dealt()
    cs = ciphertexts(key, list(range(150)))
    a = tp.partial_decrypt(shares[1], cs, b"c", rng=DeterministicRandom(1), threads=1)
    assert a.values == tuple(gmpy2.powmod(c, 2 * key.delta * shares[1]._secret, key.modulus) for c in cs)
    for threads in (2, 3):  # chunks taken from a shared counter: same shares in the same order
        b = tp.partial_decrypt(shares[1], cs, b"c", rng=DeterministicRandom(1), threads=threads)
        assert a.values == b.values and (a.challenge, a.response) == (b.challenge, b.response)


def test_multiexp_matches_powmod():
    key, _ = dealt()
    import numpy as np
    rng = DeterministicRandom(5)
    bases = [mpz(int.from_bytes(rng.bytes(64), "big")) % key.modulus for _ in range(300)]
    w = np.frombuffer(rng.bytes(16 * 300), dtype=np.uint8).reshape(300, 16)
    expect = mpz(1)
    for b, row in zip(bases, w):
        expect = expect * gmpy2.powmod(b, int.from_bytes(row.tobytes(), "big"), key.modulus) % key.modulus
    assert tp._multiexp(bases, w, key.modulus) == expect
