"""HKDF-SHA256: RFC 5869 known answers and the domain-separation rules."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg.primitives.kdf import LABEL_PREFIX, derive_key, derive_keys, hkdf

# RFC 5869, Appendix A.1-A.3 (the SHA-256 cases).
RFC5869 = [
    pytest.param(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        id="A.1-basic",
    ),
    pytest.param(
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
        id="A.2-long-inputs",
    ),
    pytest.param(
        bytes.fromhex("0b" * 22),
        b"",
        b"",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        id="A.3-empty-salt-and-info",
    ),
]


@pytest.mark.parametrize("ikm, salt, info, length, okm", RFC5869)
def test_rfc5869_known_answers(ikm: bytes, salt: bytes, info: bytes, length: int, okm: str) -> None:
    assert hkdf(ikm, label=info, length=length, salt=salt, raw_info=True).hex() == okm


def test_empty_salt_is_hashlen_zeros() -> None:
    # RFC 5869 section 2.2: a missing salt is HashLen zero bytes.
    ikm = bytes.fromhex("0b" * 22)
    a = hkdf(ikm, label=b"x", salt=None)
    assert a == hkdf(ikm, label=b"x", salt=b"\x00" * 32)


def test_label_is_prefixed() -> None:
    secret = b"s" * 32
    assert hkdf(secret, label="mask") == hkdf(secret, label=LABEL_PREFIX + b"mask", raw_info=True)
    assert hkdf(secret, label="mask") != hkdf(secret, label=b"mask", raw_info=True)
    # str and bytes labels are the same label
    assert hkdf(secret, label="mask") == hkdf(secret, label=b"mask")


def test_missing_label_refused() -> None:
    with pytest.raises(TypeError):
        hkdf(b"secret")  # type: ignore[call-arg]


@pytest.mark.parametrize("label", ["", b"", bytearray()])
def test_empty_label_refused(label: str | bytes) -> None:
    with pytest.raises(ValueError):
        hkdf(b"secret", label=label)


@pytest.mark.parametrize("label", [5, None, 3.0, ["mask"]])
def test_non_text_label_refused(label: object) -> None:
    # bytes(5) would be five zero bytes: an int must not pass as a label.
    with pytest.raises(TypeError):
        hkdf(b"secret", label=label)  # type: ignore[arg-type]


@pytest.mark.parametrize("secret", [b"", "text", None, 123])
def test_bad_secret_refused(secret: object) -> None:
    with pytest.raises(ValueError):
        hkdf(secret, label="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, -1, 255 * 32 + 1])
def test_length_out_of_range(length: int) -> None:
    with pytest.raises(ValueError):
        hkdf(b"secret", label="x", length=length)


def test_length_bounds_accepted() -> None:
    assert len(hkdf(b"secret", label="x", length=1)) == 1
    long = hkdf(b"secret", label="x", length=255 * 32)
    assert len(long) == 255 * 32
    # HKDF output is a prefix-stable stream: a shorter output is a prefix.
    assert hkdf(b"secret", label="x", length=40) == long[:40]


def test_labels_separate_domains() -> None:
    secret = b"k" * 32
    outputs = {hkdf(secret, label=label) for label in ("mask", "share", "enc", "mask2", "Mask")}
    assert len(outputs) == 5


def test_derive_key_binds_label_and_context() -> None:
    secret = b"k" * 32
    session_a, session_b = b"\x01" * 32, b"\x02" * 32
    k = derive_key(secret, "enc", session_a)
    assert len(k) == 32
    assert k == derive_key(secret, "enc", session_a)
    assert k != derive_key(secret, "enc", session_b)
    assert k != derive_key(secret, "mask", session_a)
    assert k != derive_key(b"j" * 32, "enc", session_a)
    assert len(derive_key(secret, "enc", session_a, length=64)) == 64
    # the context is not simply appended to the label: swapping bytes between them changes the key
    assert derive_key(secret, "encA", b"B") != derive_key(secret, "enc", b"AB")


def test_derive_key_empty_context_is_a_context() -> None:
    secret = b"k" * 32
    assert derive_key(secret, "enc", b"") != derive_key(secret, "enc", b"\x00")
    assert derive_key(secret, "enc", b"") != hkdf(secret, label="enc")


@pytest.mark.parametrize("context", ["session", None, 7])
def test_derive_key_context_must_be_bytes(context: object) -> None:
    with pytest.raises(TypeError):
        derive_key(b"k" * 32, "enc", context)  # type: ignore[arg-type]


def test_derive_key_refuses_empty_label() -> None:
    with pytest.raises(ValueError):
        derive_key(b"k" * 32, "", b"ctx")


@given(
    secret=st.binary(min_size=1, max_size=80),
    label=st.text(min_size=1, max_size=20) | st.binary(min_size=1, max_size=20),
    context=st.binary(max_size=80),
    length=st.sampled_from([1, 16, 31, 32, 33, 64, 100]),
)
def test_derive_key_is_hkdf_with_hashed_context_salt(secret: bytes, label: str | bytes, context: bytes,
                                                     length: int) -> None:
    # derive_key takes a shortcut for 32-byte outputs (one HMAC block); every
    # length must give exactly the HKDF of the module docstring.
    salt = hashlib.sha256(b"secagg/v1/context\x00" + context).digest()
    expected = hkdf(secret, label=label, length=length, salt=salt)
    assert derive_key(secret, label, context, length) == expected  # type: ignore[arg-type]
    assert derive_key(bytearray(secret), label, bytearray(context), length) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [32, 64])
def test_derive_key_refuses_what_hkdf_refuses(length: int) -> None:
    with pytest.raises(ValueError):
        derive_key(b"", "enc", b"ctx", length)
    with pytest.raises(TypeError):
        derive_key(b"k", 5, b"ctx", length)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        derive_key(b"k", b"", b"ctx", length)  # type: ignore[arg-type]


@pytest.mark.parametrize("secret", [b"k" * 32, bytearray(b"k" * 32), b"\x01"])
@pytest.mark.parametrize("label", ["masking/pairwise-mask", "x"])
def test_derive_key_fast_path_is_hkdf(secret, label) -> None:
    """derive_key's one-block shortcut on the stdlib HMAC gives HKDF's bytes."""
    import hashlib

    context = b"session" + bytes(range(40))
    salt = hashlib.sha256(b"secagg/v1/context\x00" + context).digest()
    assert derive_key(secret, label, context) == hkdf(bytes(secret), label=label, salt=salt)
    assert derive_key(secret, label, context, length=48)[:32] == hkdf(bytes(secret), label=label, salt=salt)


def test_derive_keys_is_derive_key_per_pair() -> None:
    secrets = [bytes([i]) * 32 for i in range(1, 6)]
    contexts = [b"", b"s", b"session" * 9, bytes(64), b"\xff" * 3]
    assert derive_keys(secrets, "masking/pairwise-mask", contexts) == [
        derive_key(s, "masking/pairwise-mask", c) for s, c in zip(secrets, contexts)]
    assert derive_keys([], "x", []) == []
    with pytest.raises(ValueError):
        derive_keys(secrets, "x", contexts[:-1])
    with pytest.raises(ValueError):
        derive_keys(secrets, "", contexts)
    for bad_secret, bad_context in ((b"", b"c"), (bytearray(32), b"c"), (b"k", "c")):
        with pytest.raises(TypeError):
            derive_keys([b"k" * 32, bad_secret], "x", [b"c", bad_context])


def test_pairwise_keys_in_one_loop_are_the_single_derivations() -> None:
    """The masking protocol's batched pairwise derivation gives, for peers on
    both sides of u (the context orders the pair by id), exactly
    share_encryption_key / pairwise_mask_seed; a party is never its own peer."""
    from secagg.protocols.masking import _crypto as C
    sid, u, pub_u = bytes(range(32)), 7, b"\x11" * 32
    peers = [1, 3, 9, 12]
    pubs = [bytes([p]) * 32 for p in peers]
    shared = [bytes([40 + p]) * 32 for p in peers]
    assert C.pair_keys("masking/share-encryption", shared, sid, u, pub_u, peers, pubs) == [
        C.share_encryption_key(s, sid, u, v, pub_u, pv) for s, v, pv in zip(shared, peers, pubs)]
    assert C.pair_keys("masking/pairwise-mask", shared, sid, u, pub_u, peers, pubs) == [
        C.pairwise_mask_seed(s, sid, u, v, pub_u, pv) for s, v, pv in zip(shared, peers, pubs)]
    # symmetric: v derives the same key with u
    assert C.pair_keys("masking/pairwise-mask", shared[:1], sid, peers[0], pubs[0], [u], [pub_u]) == \
        C.pair_keys("masking/pairwise-mask", shared, sid, u, pub_u, peers, pubs)[:1]
    with pytest.raises(ValueError):
        C.pair_keys("masking/pairwise-mask", shared[:1], sid, u, pub_u, [u], [pub_u])
    with pytest.raises(ValueError):
        C.pair_keys("masking/commit", shared, sid, u, pub_u, peers, pubs)
