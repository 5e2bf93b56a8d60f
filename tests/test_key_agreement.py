"""X25519: RFC 7748 known answers, low-order and malformed peer keys."""

from __future__ import annotations

import pytest

from secagg.errors import AbortReason, BadPublicKey, RemoteProtocolError
from secagg.primitives.key_agreement import (
    PUBLIC_KEY_SIZE,
    KeyPair,
    agree,
    agree_many,
    generate_keypair,
    public_from_private,
)
from secagg.primitives.randomness import DeterministicRandom

# RFC 7748 section 6.1
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

P = 2**255 - 19


def test_rfc7748_section_6_1_public_keys() -> None:
    assert public_from_private(ALICE_PRIVATE) == ALICE_PUBLIC
    assert public_from_private(BOB_PRIVATE) == BOB_PUBLIC


def test_rfc7748_section_6_1_shared_secret() -> None:
    assert agree(ALICE_PRIVATE, BOB_PUBLIC) == SHARED
    assert agree(BOB_PRIVATE, ALICE_PUBLIC) == SHARED


# RFC 7748 section 5.2: (scalar, u-coordinate, output). The second u has its top
# bit set, which X25519 must ignore.
@pytest.mark.parametrize(
    "scalar, u, out",
    [
        ("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
         "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
         "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"),
        ("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
         "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
         "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"),
    ],
)
def test_rfc7748_section_5_2_vectors(scalar: str, u: str, out: str) -> None:
    assert agree(bytes.fromhex(scalar), bytes.fromhex(u)).hex() == out


def test_rfc7748_section_5_2_iterated() -> None:
    # k = u = 9; repeat: (k, u) = (X25519(k, u), k). Values after 1 and 1000 rounds.
    k = u = (9).to_bytes(32, "little")
    after = {}
    for i in range(1, 1001):
        k, u = agree(k, u), k
        if i in (1, 1000):
            after[i] = k.hex()
    assert after[1] == "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
    assert after[1000] == "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"


# Points of small order on Curve25519 (and the non-canonical encodings of 0 and 1):
# every scalar multiple is the point at infinity, encoded u = 0.
LOW_ORDER = [
    pytest.param((0).to_bytes(32, "little"), id="zero"),
    pytest.param((1).to_bytes(32, "little"), id="one"),
    pytest.param(bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), id="order8-a"),
    pytest.param(bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), id="order8-b"),
    pytest.param((P - 1).to_bytes(32, "little"), id="p-1"),
    pytest.param(P.to_bytes(32, "little"), id="p"),
    pytest.param((P + 1).to_bytes(32, "little"), id="p+1"),
]


@pytest.mark.parametrize("peer_public", LOW_ORDER)
def test_low_order_peer_key_rejected(peer_public: bytes) -> None:
    me = generate_keypair(DeterministicRandom(b"low-order"))
    with pytest.raises(BadPublicKey) as info:
        agree(me.private, peer_public)
    assert not isinstance(info.value, RemoteProtocolError)  # local: the protocol makes it remote
    assert info.value.remote().reason is AbortReason.MALFORMED_MESSAGE


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_wrong_length_peer_key_is_bad_public_key(length: int) -> None:
    me = generate_keypair(DeterministicRandom(b"len"))
    with pytest.raises(BadPublicKey):
        agree(me.private, b"\x09" * length)


@pytest.mark.parametrize("peer_public", ["9" * 32, None, 12345, [9] * 32])
def test_non_bytes_peer_key_is_bad_public_key(peer_public: object) -> None:
    me = generate_keypair(DeterministicRandom(b"type"))
    with pytest.raises(BadPublicKey):
        agree(me.private, peer_public)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 31, 33])
def test_wrong_length_private_key_is_local_error(length: int) -> None:
    # Our own key being wrong is our bug, not the peer's: no RemoteProtocolError.
    with pytest.raises(ValueError) as info:
        agree(b"\x01" * length, BOB_PUBLIC)
    assert not isinstance(info.value, RemoteProtocolError)


def test_generated_pairs_agree() -> None:
    rng = DeterministicRandom(b"pairs")
    a, b, c = (generate_keypair(rng) for _ in range(3))
    assert len(a.public) == PUBLIC_KEY_SIZE and len(a.private) == 32
    assert agree(a.private, b.public) == agree(b.private, a.public)
    assert agree(a.private, b.public) != agree(a.private, c.public)
    assert public_from_private(a.private) == a.public


def test_generation_is_replayable_and_uses_the_source() -> None:
    assert generate_keypair(DeterministicRandom(1)) == generate_keypair(DeterministicRandom(1))
    assert generate_keypair(DeterministicRandom(1)) != generate_keypair(DeterministicRandom(2))
    assert generate_keypair() != generate_keypair()  # system randomness


def test_repr_hides_private_key() -> None:
    pair = KeyPair(private=ALICE_PRIVATE, public=ALICE_PUBLIC)
    assert ALICE_PRIVATE.hex() not in repr(pair)
    assert ALICE_PRIVATE.hex()[:8] not in repr(pair)


def test_agree_many_equals_agree() -> None:
    rng = DeterministicRandom(b"many")
    me = generate_keypair(rng)
    peers = [generate_keypair(rng).public for _ in range(6)]
    assert agree_many(me.private, peers) == [agree(me.private, p) for p in peers]
    assert agree_many(me.private, []) == []
    assert agree_many(ALICE_PRIVATE, [BOB_PUBLIC, bytearray(BOB_PUBLIC)]) == [SHARED, SHARED]


@pytest.mark.parametrize("bad", [p.values[0] for p in LOW_ORDER] + [b"\x09" * 31, b"", None, "x" * 32])
def test_agree_many_rejects_any_bad_peer(bad: object) -> None:
    rng = DeterministicRandom(b"many-bad")
    me = generate_keypair(rng)
    good = generate_keypair(rng).public
    with pytest.raises(BadPublicKey):
        agree_many(me.private, [good, bad, good])  # type: ignore[list-item]


def test_agree_many_bad_private_key_is_local_error() -> None:
    with pytest.raises(ValueError) as info:
        agree_many(b"\x01" * 31, [BOB_PUBLIC])
    assert not isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize("bad", [bytes(32), (1).to_bytes(32, "little"), bytes([0xFF] * 31 + [0x7F]),
                                 bytes(31) + b"\x80"])
def test_check_public_refuses_low_order_and_non_canonical_keys(bad):
    from secagg.primitives.key_agreement import check_public, generate_keypair

    with pytest.raises(BadPublicKey):
        check_public(bad)
    check_public(generate_keypair().public)  # an honest key passes


def _refused_by_an_exchange(public: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    probe = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    try:
        return probe.exchange(X25519PublicKey.from_public_bytes(public)) == bytes(32)
    except ValueError:
        return True


def test_low_order_list_is_what_an_exchange_refuses() -> None:
    """check_public's list against the definition (an exchange that yields all
    zeros): every listed u is refused by the exchange, and on the listed values,
    their neighbours and 3000 random canonical values, check_public refuses as
    low-order exactly what the exchange refuses, and everything else exactly
    when it is outside the prime-order subgroup."""
    from secagg.primitives.key_agreement import LOW_ORDER_U, check_public, in_prime_order_subgroup

    assert len(LOW_ORDER_U) == 5
    rng = DeterministicRandom(b"probe")
    candidates = [u + d for u in LOW_ORDER_U for d in (-1, 0, 1) if 0 <= u + d < P]
    candidates += [int.from_bytes(rng.bytes(32), "little") % P for _ in range(3000)]
    for u in candidates:
        public = u.to_bytes(32, "little")
        by_exchange = _refused_by_an_exchange(public)
        assert by_exchange == (u in LOW_ORDER_U), u
        try:
            check_public(public)
            refused = ""
        except BadPublicKey as exc:
            refused = str(exc)
        if by_exchange:
            assert refused == "X25519 public key has low order", u
        else:
            assert (refused != "") == (not in_prime_order_subgroup(u)), u


def test_order_8_points_are_8_torsion() -> None:
    """The two order-8 u-coordinates of the list: x-only doubling (RFC 7748's
    formulas, A = 486662) reaches the point at infinity (Z = 0) after three
    doublings and not before."""
    from secagg.primitives.key_agreement import LOW_ORDER_U

    a24 = (486662 - 2) // 4

    def double(x: int, z: int) -> tuple[int, int]:
        aa, bb = (x + z) ** 2 % P, (x - z) ** 2 % P
        e = (aa - bb) % P
        return aa * bb % P, e * (bb + (a24 + 1) * e) % P  # (x+z)^2 (x-z)^2 ; 4xz((x-z)^2 + (A+2)/4 * 4xz)

    for u in sorted(LOW_ORDER_U - {0, 1, P - 1}):
        x, z = u, 1
        zs = []
        for _ in range(3):
            x, z = double(x, z)
            zs.append(z % P)
        assert zs[-1] == 0 and zs[0] != 0 and zs[1] != 0, u


def test_canonical_publics_matches_the_scalar_check() -> None:
    """The vectorised encoding check against is_canonical_public on the edges
    of the non-canonical range [p, 2^255) and of the top bit, and random keys."""
    import numpy as np

    from secagg.primitives.key_agreement import canonical_publics, is_canonical_public

    values = [0, 1, P - 2, P - 1, P, P + 1, P + 18, 2**255 - 1, 2**255, 2**256 - 1, 2**255 + 5, P - 1 + 2**255]
    rng = DeterministicRandom(b"canon")
    keys = [v.to_bytes(32, "little") for v in values] + [rng.bytes(32) for _ in range(500)]
    keys += [bytes(31) + b"\x7f", b"\xec" + b"\xff" * 30 + b"\x7f", b"\xed" + b"\xff" * 30 + b"\x7f",
             b"\xff" * 31 + b"\x7f", b"\xed" + b"\xff" * 29 + b"\xfe\x7f"]
    arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 32)
    assert canonical_publics(arr).tolist() == [is_canonical_public(k) for k in keys]
    with pytest.raises(ValueError):
        canonical_publics(np.zeros((2, 31), dtype=np.uint8))


# the order of Curve25519's prime-order subgroup
L_ORDER = 2**252 + 27742317777372353535851937790883648493


def _ladder_u(u: int, k: int) -> int | None:
    """u([k] P) by an x-only Montgomery ladder with the unclamped scalar
    ``k`` (RFC 7748's formulas); None for the point at infinity."""
    a24 = (486662 - 2) // 4
    x1, x2, z2, x3, z3, swap = u, 1, 0, u, 1, 0
    for t in range(k.bit_length() - 1, -1, -1):
        bit = (k >> t) & 1
        if swap ^ bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % P, (x2 - z2) % P
        aa, bb = a * a % P, b * b % P
        e = (aa - bb) % P
        c, d = (x3 + z3) % P, (x3 - z3) % P
        da, cb = d * a % P, c * b % P
        x3, z3 = (da + cb) ** 2 % P, x1 * (da - cb) ** 2 % P
        x2, z2 = aa * bb % P, e * (aa + a24 * e) % P
    if swap:
        x2, z2 = x3, z3
    return None if z2 % P == 0 else x2 * pow(z2, P - 2, P) % P


def _times_l_is_infinity(u: int) -> bool:
    """[l] P = O for a point with u-coordinate ``u``, by the x-only ladder
    with the *unclamped* scalar l: the reference for the subgroup check
    (slow: about a millisecond)."""
    return _ladder_u(u, L_ORDER) is None


def _double(u: int) -> int:
    """u(2P) from u(P) (the duplication formula), u != 0."""
    num = (u * u - 1) ** 2 % P
    den = 4 * u * (u * u + 486662 * u + 1) % P
    return num * pow(den, P - 2, P) % P if den else 0


def test_subgroup_check_agrees_with_multiplying_by_the_group_order() -> None:
    """``in_prime_order_subgroup`` against ``[l] P = O`` on honest keys (all in
    the subgroup), on random u-coordinates (on the curve, seven in eight have
    a small-order component; on the twist, none is on the curve), on the
    low-order list, and on honest keys moved by each point of order 2 (u -> 1/u)."""
    from secagg.primitives.key_agreement import LOW_ORDER_U, generate_keypair, in_prime_order_subgroup

    rng = DeterministicRandom(b"subgroup")
    honest = [int.from_bytes(generate_keypair(rng).public, "little") for _ in range(40)]
    # 600 random u: about 300 on the curve, about 37 in each of the 8 cosets of the subgroup, so points
    # with a torsion part of each order (2, 4, 8) are checked
    randoms = [int.from_bytes(rng.bytes(32), "little") % P for _ in range(600)]
    moved = [pow(u, P - 2, P) for u in honest[:20]]  # P + (0, 0): u -> 1/u
    seen = {True: 0, False: 0}
    for u in honest + randoms + moved + sorted(LOW_ORDER_U - {0}):
        expected = _times_l_is_infinity(u)
        on_twist = pow(u * (u * u + 486662 * u + 1) % P, (P - 1) // 2, P) != 1
        if on_twist:
            expected = False  # [l] of a twist point is not the curve's infinity test
        assert in_prime_order_subgroup(u) == expected, u
        seen[expected] += 1
    assert all(in_prime_order_subgroup(u) for u in honest)
    assert not any(in_prime_order_subgroup(u) for u in moved)
    assert seen[True] >= 40 and seen[False] >= 100  # both outcomes exercised
    # points with a torsion part of every order were among them (refused), and torsion-free ones (accepted)
    on_curve = [u for u in randoms if pow(u * (u * u + 486662 * u + 1) % P, (P - 1) // 2, P) == 1]
    # P = P0 + T with P0 in the subgroup and T of order 1, 2, 4 or 8: P is in 2E iff the order of T divides
    # 4, in 4E iff it divides 2; [k l] P = O iff the order of T divides k
    def torsion_order(u: int) -> int:
        return next(k for k, v in ((1, u), (2, _double(u)), (4, _double(_double(u)))) if _times_l_is_infinity(v)) \
            if _times_l_is_infinity(_double(_double(u))) else 8
    orders = [torsion_order(u) for u in on_curve]
    assert all(orders.count(k) >= 10 for k in (1, 2, 4, 8)), [orders.count(k) for k in (1, 2, 4, 8)]


def test_check_public_refuses_mixed_order_keys() -> None:
    """An honest key moved by a point of order 2 (or any random curve point
    outside the subgroup) is refused; an exchange with it would give the same
    secret as with the honest key, which is why only this check sees it."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from secagg.primitives.key_agreement import check_public, generate_keypair

    honest = generate_keypair(DeterministicRandom(b"mixed")).public
    u = int.from_bytes(honest, "little")
    mixed = pow(u, P - 2, P).to_bytes(32, "little")
    probe = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    # the small-order part is invisible to a clamped exchange
    assert (probe.exchange(X25519PublicKey.from_public_bytes(mixed))
            == probe.exchange(X25519PublicKey.from_public_bytes(honest)))
    check_public(honest)
    with pytest.raises(BadPublicKey, match="prime-order subgroup"):
        check_public(mixed)


def test_check_public_without_the_subgroup_step_accepts_mixed_order_and_refuses_the_rest() -> None:
    """``subgroup=False`` (the server's check of an encryption key, masking
    SPEC §4.2): a mixed-order key passes; twist points, low-order points and
    non-canonical encodings are still refused. On random canonical values the
    refusals are exactly the points that are not on the curve, computed here
    with Euler's criterion in plain integers."""
    import random

    from secagg.primitives.key_agreement import LOW_ORDER_U, check_public, generate_keypair, on_curve

    honest = generate_keypair(DeterministicRandom(b"mixed-enc")).public
    mixed = pow(int.from_bytes(honest, "little"), P - 2, P).to_bytes(32, "little")  # + the point of order 2
    check_public(mixed, subgroup=False)
    with pytest.raises(BadPublicKey, match="prime-order subgroup"):
        check_public(mixed)
    for bad in (bytes(32), (1).to_bytes(32, "little"), bytes(31) + b"\x80", bytes([0xFF] * 31 + [0x7F])):
        with pytest.raises(BadPublicKey):
            check_public(bad, subgroup=False)
    gen = random.Random(7)
    seen = {True: 0, False: 0}
    for _ in range(400):
        u = gen.randrange(2, P - 1)
        if u in LOW_ORDER_U:
            continue
        expected = pow(u * (u * u + 486662 * u + 1) % P, (P - 1) // 2, P) == 1
        assert on_curve(u) == expected
        try:
            check_public(u.to_bytes(32, "little"), subgroup=False)
            accepted = True
        except BadPublicKey as exc:
            assert "twist" in str(exc)
            accepted = False
        assert accepted == expected, u
        seen[accepted] += 1
    assert seen[True] >= 150 and seen[False] >= 150  # about half of the values lie on the twist


def test_prime_order_part_is_the_projection_onto_the_subgroup() -> None:
    """``prime_order_part`` (one clamped exchange) against ``[c] P`` computed
    with an unclamped ladder, ``c = 1 mod l`` and ``0 mod 8`` (which keeps
    ``P_l`` and kills the torsion), on random curve points (torsion of every
    order among them), honest keys (unchanged) and honest keys moved by the
    point of order 2; the low-order points raise."""
    from secagg.errors import BadPublicKey
    from secagg.primitives.key_agreement import LOW_ORDER_U, generate_keypair, on_curve, prime_order_part

    c = 8 * pow(8, -1, L_ORDER) % (8 * L_ORDER)
    assert c % 8 == 0 and c % L_ORDER == 1
    rng = DeterministicRandom(b"projection")
    honest = [int.from_bytes(generate_keypair(rng).public, "little") for _ in range(10)]
    randoms = [u for u in (int.from_bytes(rng.bytes(32), "little") % P for _ in range(200)) if on_curve(u)]
    moved = [pow(u, P - 2, P) for u in honest]
    changed = 0
    for u in honest + randoms + moved:
        got = int.from_bytes(prime_order_part(u.to_bytes(32, "little")), "little")
        assert got == _ladder_u(u, c), u
        changed += got != u
    assert all(int.from_bytes(prime_order_part(u.to_bytes(32, "little")), "little") == u for u in honest)
    assert changed >= 80  # seven in eight random curve points carry torsion, and every moved key
    for u in sorted(LOW_ORDER_U - {0}):
        with pytest.raises(BadPublicKey):
            prime_order_part(u.to_bytes(32, "little"))
    with pytest.raises(BadPublicKey, match="32 bytes"):
        prime_order_part(bytes(31))


def test_key_matches_public_up_to_the_small_order_component() -> None:
    """The server's check of a reconstructed mask key (masking SPEC §3.5 step
    2): the private key matches its public key and that key moved by the
    point of order 2, and nothing else: not another key, not that key moved
    off the curve, not a low-order point."""
    from secagg.primitives.key_agreement import generate_keypair, key_matches_public

    rng = DeterministicRandom(b"matches")
    mine, other = generate_keypair(rng), generate_keypair(rng)
    u = int.from_bytes(mine.public, "little")
    moved = pow(u, P - 2, P).to_bytes(32, "little")
    assert key_matches_public(mine.private, mine.public)
    assert key_matches_public(mine.private, moved)
    assert not key_matches_public(mine.private, other.public)
    assert not key_matches_public(other.private, moved)
    twist = next(v for v in range(2, 100) if pow(v * (v * v + 486662 * v + 1) % P, (P - 1) // 2, P) == P - 1)
    assert not key_matches_public(mine.private, twist.to_bytes(32, "little"))
    assert not key_matches_public(mine.private, (1).to_bytes(32, "little"))
