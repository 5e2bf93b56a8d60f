"""ChaCha20-Poly1305: the RFC 8439 section 2.8.2 known answer through our wire
layout (nonce || ciphertext || tag), and one opaque error for every failure."""

from __future__ import annotations

import pytest

from secagg.errors import AbortReason, BadCiphertext, InvalidCiphertext, RemoteProtocolError
from secagg.primitives.aead import NONCE_SIZE, OVERHEAD, TAG_SIZE, decrypt, encrypt, encrypt_many
from secagg.primitives.randomness import DeterministicRandom

# RFC 8439 section 2.8.2
KEY = bytes(range(0x80, 0xA0))
NONCE = bytes.fromhex("07000000") + bytes.fromhex("4041424344454647")
AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
PLAINTEXT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
             b"for the future, sunscreen would be it.")
CIPHERTEXT = bytes.fromhex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
    "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
    "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
)
TAG = bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")


class _NonceSource:
    """Returns the RFC nonce when asked for a nonce."""

    def bytes(self, n: int) -> bytes:
        assert n == NONCE_SIZE
        return NONCE


def test_rfc8439_known_answer_encrypt() -> None:
    box = encrypt(KEY, PLAINTEXT, AAD, rng=_NonceSource())
    assert box[:NONCE_SIZE] == NONCE
    assert box[NONCE_SIZE:-TAG_SIZE] == CIPHERTEXT
    assert box[-TAG_SIZE:] == TAG
    assert len(box) == len(PLAINTEXT) + OVERHEAD


def test_rfc8439_known_answer_decrypt() -> None:
    assert decrypt(KEY, NONCE + CIPHERTEXT + TAG, AAD) == PLAINTEXT


def _box() -> tuple[bytes, bytes, bytes, bytes]:
    rng = DeterministicRandom(b"aead")
    key = rng.bytes(32)
    share = rng.bytes(100)  # about the size of a share message
    ad = b"session-id||1||2"
    return key, share, ad, encrypt(key, share, ad, rng)


def test_round_trip_and_random_nonces() -> None:
    key, share, ad, box = _box()
    assert decrypt(key, box, ad) == share
    assert decrypt(key, bytearray(box), ad) == share
    other = encrypt(key, share, ad)
    assert other[:NONCE_SIZE] != box[:NONCE_SIZE]
    assert decrypt(key, other, ad) == share
    assert decrypt(key, encrypt(key, b"", ad), ad) == b""


def _assert_invalid(key: bytes, box: object, ad: bytes) -> None:
    with pytest.raises(BadCiphertext) as info:
        decrypt(key, box, ad)  # type: ignore[arg-type]
    # one opaque error, no detail that could serve as an oracle
    assert str(info.value) == "invalid ciphertext"
    # a local error (the primitive does not know whose record it is); the
    # protocol turns it into the remote one
    assert not isinstance(info.value, RemoteProtocolError)
    remote = info.value.remote()
    assert isinstance(remote, InvalidCiphertext) and str(remote) == "invalid ciphertext"
    assert remote.reason is AbortReason.INVALID_CIPHERTEXT


def test_every_flipped_bit_rejected() -> None:
    key, _, ad, box = _box()
    for i in range(len(box)):  # nonce, ciphertext and tag
        for bit in range(8):
            bad = bytearray(box)
            bad[i] ^= 1 << bit
            _assert_invalid(key, bytes(bad), ad)


def test_wrong_associated_data_rejected() -> None:
    key, _, ad, box = _box()
    for other in (b"", ad[:-1], ad + b"\x00", b"session-id||2||1", bytes([ad[0] ^ 1]) + ad[1:]):
        _assert_invalid(key, box, other)


def test_wrong_key_rejected() -> None:
    key, _, ad, box = _box()
    _assert_invalid(bytes(32), box, ad)
    _assert_invalid(bytes([key[0] ^ 1]) + key[1:], box, ad)
    _assert_invalid(key[::-1], box, ad)


def test_truncated_and_extended_rejected() -> None:
    key, _, ad, box = _box()
    for n in range(len(box)):
        _assert_invalid(key, box[:n], ad)
    for n in range(1, len(box)):
        _assert_invalid(key, box[n:], ad)
    _assert_invalid(key, box + b"\x00", ad)
    _assert_invalid(key, box[:NONCE_SIZE] + box[NONCE_SIZE + 1:], ad)


@pytest.mark.parametrize("box", [b"", b"\x00" * (OVERHEAD - 1), b"\x00" * OVERHEAD, b"\x00" * 200,
                                 None, "text", 12345, [0] * 40])
def test_empty_short_or_not_bytes_rejected(box: object) -> None:
    _assert_invalid(b"k" * 32, box, b"ad")


def test_tag_of_empty_plaintext_is_checked() -> None:
    key, _, ad, _ = _box()
    box = encrypt(key, b"", ad)
    assert len(box) == OVERHEAD
    _assert_invalid(key, box, ad + b"x")
    bad = bytearray(box)
    bad[-1] ^= 0x80
    _assert_invalid(key, bytes(bad), ad)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_wrong_key_length_is_local_error(length: int) -> None:
    _, share, ad, box = _box()
    with pytest.raises(ValueError):
        encrypt(b"k" * length, share, ad)
    with pytest.raises(ValueError):
        decrypt(b"k" * length, box, ad)


def test_encrypt_many_equals_one_encrypt_per_message() -> None:
    """The batched form draws the nonces in one call: with a stream source the
    records are byte-for-byte those of one encrypt() per message, and each
    decrypts under its own key and associated data only."""
    keys = [bytes([i]) * 32 for i in range(1, 6)]
    msgs = [bytes([i]) * (i * 7) for i in range(5)]
    ads = [b"ad-%d" % i for i in range(5)]
    batch = encrypt_many(keys, msgs, ads, DeterministicRandom(b"n"))
    rng = DeterministicRandom(b"n")
    assert batch == [encrypt(k, m, a, rng) for k, m, a in zip(keys, msgs, ads)]
    assert len({r[:NONCE_SIZE] for r in batch}) == 5
    for k, m, a, r in zip(keys, msgs, ads, batch):
        assert decrypt(k, r, a) == m
    with pytest.raises(BadCiphertext):
        decrypt(keys[1], batch[0], ads[0])
    with pytest.raises(BadCiphertext):
        decrypt(keys[0], batch[0], ads[1])


def test_encrypt_many_refuses_mismatched_or_bad_input() -> None:
    with pytest.raises(ValueError):
        encrypt_many([KEY, KEY], [b"a"], [b"", b""])
    with pytest.raises(ValueError):
        encrypt_many([KEY[:31]], [b"a"], [b""])
    assert encrypt_many([], [], []) == []
