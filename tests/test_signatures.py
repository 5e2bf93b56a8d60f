"""Ed25519: RFC 8032 section 7.1 known answers and rejection of bad signatures."""

from __future__ import annotations

import pytest

from secagg.errors import AbortReason, BadSignature, InvalidSignature, RemoteProtocolError
from secagg.primitives.randomness import DeterministicRandom
from secagg.primitives.signatures import SigningKeyPair, generate_signing_keypair, sign, verify

# RFC 8032 section 7.1, TEST 1-3: (secret key, public key, message, signature)
RFC8032 = [
    pytest.param(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        id="test1-empty",
    ),
    pytest.param(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        id="test2-one-byte",
    ),
    pytest.param(
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        id="test3-two-bytes",
    ),
]


class _Fixed:
    """A random source that returns one fixed value (to inject an RFC key)."""

    def __init__(self, value: bytes):
        self.value = value

    def bytes(self, n: int) -> bytes:
        assert n == len(self.value)
        return self.value


@pytest.mark.parametrize("secret, public, message, signature", RFC8032)
def test_rfc8032_known_answers(secret: str, public: str, message: str, signature: str) -> None:
    pair = generate_signing_keypair(_Fixed(bytes.fromhex(secret)))
    assert pair.public.hex() == public
    sig = sign(pair.private, bytes.fromhex(message))
    assert sig.hex() == signature
    verify(pair.public, bytes.fromhex(message), sig)


@pytest.mark.parametrize("secret, public, message, signature", RFC8032)
def test_rfc8032_tampering_rejected(secret: str, public: str, message: str, signature: str) -> None:
    pk, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    for i in range(len(sig)):
        for bit in (0, 7):
            bad = bytearray(sig)
            bad[i] ^= 1 << bit
            with pytest.raises(BadSignature):
                verify(pk, msg, bytes(bad))
    with pytest.raises(BadSignature):
        verify(pk, msg + b"\x00", sig)
    if msg:
        with pytest.raises(BadSignature):
            verify(pk, msg[:-1], sig)
        with pytest.raises(BadSignature):
            verify(pk, bytes([msg[0] ^ 1]) + msg[1:], sig)


def test_signature_of_other_key_rejected() -> None:
    rng = DeterministicRandom(b"sig")
    a, b = generate_signing_keypair(rng), generate_signing_keypair(rng)
    msg = b"session-id || public keys"
    sig = sign(a.private, msg)
    verify(a.public, msg, sig)
    with pytest.raises(BadSignature):
        verify(b.public, msg, sig)


@pytest.mark.parametrize(
    "public, signature",
    [
        (b"", b"\x00" * 64),
        (b"\x01" * 31, b"\x00" * 64),
        (b"\x01" * 33, b"\x00" * 64),
        (None, b"\x00" * 64),
        ("not bytes", b"\x00" * 64),
        (bytes.fromhex(RFC8032[0].values[1]), b""),
        (bytes.fromhex(RFC8032[0].values[1]), b"\x00" * 63),
        (bytes.fromhex(RFC8032[0].values[1]), b"\x00" * 65),
        (bytes.fromhex(RFC8032[0].values[1]), b"\x00" * 64),
        (bytes.fromhex(RFC8032[0].values[1]), None),
    ],
)
def test_malformed_key_or_signature_is_bad_signature(public: object, signature: object) -> None:
    with pytest.raises(BadSignature) as info:
        verify(public, b"", signature)  # type: ignore[arg-type]
    assert not isinstance(info.value, RemoteProtocolError)  # local: the protocol makes it remote
    remote = info.value.remote()
    assert isinstance(remote, InvalidSignature) and remote.reason is AbortReason.INVALID_SIGNATURE


def test_rfc8032_signature_plus_extra_byte_rejected() -> None:
    _, public, message, signature = RFC8032[1].values
    with pytest.raises(BadSignature):
        verify(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature) + b"\x00")


def test_generation_replayable_and_repr_hides_secret() -> None:
    a = generate_signing_keypair(DeterministicRandom(7))
    assert a == generate_signing_keypair(DeterministicRandom(7))
    assert a != generate_signing_keypair(DeterministicRandom(8))
    assert a.private.hex()[:8] not in repr(a)
    assert isinstance(a, SigningKeyPair)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_signing_key_is_local_error(length: int) -> None:
    with pytest.raises(ValueError):
        sign(b"\x01" * length, b"message")
