"""The masking server's fast paths against their reference paths, on random
and adversarial inputs: Lagrange coefficients (one vectorised inversion),
secrets from reconstructed chunks (on bits, all rows at once), the server's
byte comparison of id arrays, and the wire decoder's lookup of a message's
type and its inline read of long ``view`` byte strings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.encoding.wire import decode, encode
from secagg.errors import ReconstructionError, WireFormatError
from secagg.primitives import shamir
from secagg.primitives.shamir import M31, PrimeField, _secrets_or_none, secret_from_chunks, secrets_from_chunk_rows
from secagg.protocols.masking.messages import SHARE_RECORD_SIZE, ForwardedShares, MaskedInput, ShareKeys
from secagg.protocols.masking.server import _same_array


# ------------------------------------------------------------ Lagrange coefficients

def _lagrange_reference(xs: list[int], p: int) -> list[int]:
    """l_i = prod_{j != i} x_j / (x_j - x_i) mod p, one Python integer at a time."""
    out = []
    for i, xi in enumerate(xs):
        num = den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % p
                den = den * (xj - xi) % p
        out.append(num * pow(den, p - 2, p) % p)
    return out


@given(st.lists(st.integers(1, M31.prime - 1), min_size=1, max_size=40, unique=True))
@settings(max_examples=200, deadline=None)
def test_lagrange_at_zero_equals_the_reference(xs: list[int]) -> None:
    assert shamir.lagrange_at_zero(xs).tolist() == _lagrange_reference(xs, M31.prime)


@pytest.mark.parametrize("xs", [
    [1], [M31.prime - 1], [1, M31.prime - 1], list(range(1, 502)),  # the server's usual holder set (t = 501)
    list(range(M31.prime - 600, M31.prime)),  # the largest points, across the 256-row blocks
    [int(x) for x in np.random.default_rng(3).choice(np.arange(1, 10**6), 700, replace=False)],
])
def test_lagrange_at_zero_adversarial_point_sets(xs: list[int]) -> None:
    got = shamir.lagrange_at_zero(xs)
    assert got.dtype == np.uint64
    assert got.tolist() == _lagrange_reference(xs, M31.prime)
    small = PrimeField("p101", 101)
    pts = [x % 100 + 1 for x in xs[:50]]
    if len(set(pts)) == len(pts):
        assert shamir.lagrange_at_zero(pts, small).tolist() == _lagrange_reference(pts, 101)


# ------------------------------------------------------------ secrets from chunk rows

def _rows_of(secrets: list[bytes], field: PrimeField = M31) -> np.ndarray:
    return np.stack([shamir._to_chunks(s, field) for s in secrets])


@pytest.mark.parametrize("field", [M31, PrimeField("p65537", 65537), PrimeField("p251", 251)])
@pytest.mark.parametrize("length", [1, 16, 32, 33, 48])
def test_secrets_from_chunk_rows_equals_row_by_row(field: PrimeField, length: int) -> None:
    rng = np.random.default_rng(length)
    secrets = [bytes(rng.integers(0, 256, length, dtype=np.uint8)) for _ in range(50)]
    secrets += [b"\x00" * length, b"\xff" * length, b"\x80" + b"\x00" * (length - 1)]
    rows = _rows_of(secrets, field)
    assert secrets_from_chunk_rows(rows, length, field) == secrets == _secrets_or_none(rows, length, field)
    c, w = rows.shape[1], field.chunk_bits
    bad = [rows.copy() for _ in range(6)]
    bad[0][:, 0] = 1 << w  # a chunk of w + 1 bits
    bad[1][:, -1] |= np.uint64(1 << (8 * length - w * (c - 1))) if 8 * length < w * c else np.uint64(1 << w)
    bad[2][:, -1] = (1 << w) - 1  # every bit of the top chunk: above the secret's length unless it is exact
    bad[3][:, :] = field.prime - 1
    bad[4] = rng.integers(0, 1 << 40, size=rows.shape, dtype=np.uint64)
    bad[5] = rng.integers(0, field.prime, size=rows.shape, dtype=np.uint64)
    for b in bad:
        assert secrets_from_chunk_rows(b, length, field) == _secrets_or_none(b, length, field)
    for dtype in (np.int64, np.uint32, np.int32):  # other integer dtypes, negative values too
        signed = rng.integers(-(1 << 20), 1 << min(w + 1, 30), size=rows.shape).astype(dtype)
        assert secrets_from_chunk_rows(signed, length, field) == _secrets_or_none(signed, length, field)
        assert secrets_from_chunk_rows(rows.astype(dtype), length, field) == secrets


def test_secrets_from_chunk_rows_matches_secret_from_chunks_on_single_rows() -> None:
    rng = np.random.default_rng(9)
    for _ in range(300):
        row = rng.integers(0, 1 << int(rng.integers(1, 33)), size=9, dtype=np.uint64)
        try:
            want = secret_from_chunks(row, 32)
        except ReconstructionError:
            want = None
        assert secrets_from_chunk_rows(row.reshape(1, -1), 32) == [want]
    assert secrets_from_chunk_rows(np.zeros((0, 9), dtype=np.uint64), 32) == []
    with pytest.raises(ReconstructionError):
        secrets_from_chunk_rows(np.zeros((2, 8), dtype=np.uint64), 32)


# ------------------------------------------------------------ the server's id comparison

def test_same_array_is_array_equal_for_integer_arrays_of_one_shape_and_dtype() -> None:
    rng = np.random.default_rng(1)
    ids = np.arange(1, 1001, dtype=np.uint32)
    cases = [ids.copy(), ids[::-1].copy(), ids[:-1], np.append(ids[:-1], np.uint32(2000)), ids.astype(np.int64),
             ids.astype(np.uint64), ids.astype(np.float64), ids.reshape(2, 500), ids.view(np.int32),
             np.zeros(0, dtype=np.uint32), ids[::2], np.sort(rng.choice(5000, 1000, replace=False)).astype(np.uint32)]
    for a in cases:
        for b in (ids, a, np.ascontiguousarray(a)):
            same = _same_array(a, b)
            if same:
                assert np.array_equal(a, b)
            elif a.shape == b.shape and a.dtype == b.dtype and a.dtype.kind in "iu":
                assert not np.array_equal(a, b)
    nan = np.array([np.nan, 1.0])
    assert not _same_array(nan, nan.copy())  # floats always go to the general path


# ------------------------------------------------------------ the wire decoder's fast paths

def _reference_accepts(data: bytes) -> bool:
    """The rule the decoder implements: msgpack parses it, the schema holds,
    and it re-encodes to exactly these bytes."""
    from secagg.encoding import wire as W

    try:
        msg, _, _ = W._parse(data, None)
        return encode(msg) == data
    except WireFormatError:
        return False


def _long_messages() -> list[object]:
    sid = bytes(range(32))
    ids = np.arange(1, 701, dtype=np.uint32)
    out: list[object] = []
    for records in (3, 9, 10, 607, 700):  # 324 B (bin16 < 1024: a copy), 972, 1080, 65556 (bin32), 75600 bytes
        blob = bytes(np.random.default_rng(records).integers(0, 256, SHARE_RECORD_SIZE * records, dtype=np.uint8))
        out.append(ShareKeys(7, sid, ids[:records], blob))
        out.append(ForwardedShares(sid, ids[:records], blob))
    out.append(MaskedInput(3, sid, np.arange(20000, dtype=np.uint32)))
    return out


@pytest.mark.parametrize("msg", _long_messages(), ids=lambda m: f"{type(m).__name__}")
def test_long_view_fields_decode_as_views_or_copies_like_the_reference(msg: object) -> None:
    data = encode(msg)
    got = decode(data)
    assert encode(got) == data and _reference_accepts(data)
    blob = getattr(got, "ciphertexts", None)
    if blob is not None:
        assert isinstance(blob, memoryview) == (len(blob) >= 1024)  # views from _VIEW_MIN on, else bytes
        if isinstance(blob, memoryview):
            assert blob.readonly
    for arr in (getattr(got, "recipients", None), getattr(got, "senders", None), getattr(got, "masked", None)):
        if arr is not None:
            assert not arr.flags.writeable
    assert type(decode(bytearray(data))) is type(msg) and encode(decode(memoryview(data))) == data


def _header_swap(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1
    return data.replace(old, new)


def test_wider_headers_of_long_view_fields_rejected() -> None:
    sid = bytes(range(32))
    for records in (10, 607):
        blob = bytes(SHARE_RECORD_SIZE * records)
        n = len(blob)
        data = encode(ForwardedShares(sid, np.arange(1, records + 1, dtype=np.uint32), blob))
        head = (b"\xc5" + n.to_bytes(2, "big")) if n < 1 << 16 else (b"\xc6" + n.to_bytes(4, "big"))
        wider = b"\xc6" + n.to_bytes(4, "big")
        variants = [_header_swap(data, head + blob[:4], head[:1] + (n + 1).to_bytes(len(head) - 1, "big") + blob[:4])]
        if head != wider:
            variants.append(_header_swap(data, head + blob[:4], wider + blob[:4]))
        variants.append(data[:-1])  # truncated payload
        variants.append(data + b"\x00")
        for v in variants:
            assert not _reference_accepts(v)
            with pytest.raises(WireFormatError):
                decode(v)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_decoder_equals_the_reference_rule_on_long_masking_messages(data: st.DataObject) -> None:
    """Mutations near the headers (the envelope, its type name, the id
    array, the long byte string's header) of messages with long fields."""
    msg = data.draw(st.sampled_from(_long_messages()[:8]))
    buf = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, min(len(buf) - 1, 3000)))
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "set":
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = bytes([data.draw(st.integers(0, 255))])
        else:
            del buf[pos]
    mutated = bytes(buf)
    try:
        got = decode(mutated)
        accepted = True
    except WireFormatError:
        accepted = False
    assert accepted == _reference_accepts(mutated)
    if accepted:
        assert encode(got) == mutated


def test_type_lookup_refuses_what_the_parse_refuses() -> None:
    sid = bytes(range(32))
    good = encode(MaskedInput(3, sid, np.arange(4, dtype=np.uint32)))
    name = b"\xb3masking.MaskedInput"
    assert good[8:10 + len(name) - 1] == b"\x01" + name
    variants = {
        "version 2": good[:8] + b"\x02" + good[9:],
        "version as uint8": good[:8] + b"\xcc\x01" + good[9:],
        "version True": good[:8] + b"\xc3" + good[9:],
        "name as str8": good[:9] + b"\xd9\x13" + good[10:],
        "unknown name": good.replace(b"masking.MaskedInput", b"masking.MaskedInpuT"),
        "shorter name": good.replace(name, b"\xb2masking.MaskedInpu"),
    }
    for what, v in variants.items():
        assert not _reference_accepts(v), what
        with pytest.raises(WireFormatError):
            decode(v)
    with pytest.raises(WireFormatError, match="unexpected message type"):
        decode(good, ShareKeys)
    assert decode(good, (ShareKeys, MaskedInput)).client_id == 3


@pytest.mark.parametrize("gone_at_keys, gone_at_shares", [((), ()), ((), (2,)), ((3,), (1, 8))])
def test_forwarded_shares_laid_out_in_place_are_their_canonical_encodings(gone_at_keys: tuple[int, ...],
                                                                         gone_at_shares: tuple[int, ...]) -> None:
    """Complete graph: the routing writes each recipient's ForwardedShares
    encoding in place (header, senders, records) and LocalRound sends it as a
    read-only view. Each view must be exactly the canonical encoding of the
    message it decodes to (the decoder takes canonical bytes only), name the
    other members of U_2 as senders, and carry the records each sender made
    for that recipient."""
    from masking_harness import Round

    r = Round(n=8, dim=3, dropout_tolerance=0.375)
    r.step(skip=list(gone_at_keys))
    sent = r.step(skip=list(gone_at_shares))
    assert r.driver.stage.value == "masked_input"
    u2 = sorted(sent)
    assert len(r.network.outbox) == len(u2)
    for u, data in r.network.outbox.items():
        assert isinstance(data, memoryview) and data.readonly
        msg = decode(data, ForwardedShares)
        assert encode(msg) == bytes(data)
        assert msg.senders.tolist() == [v for v in u2 if v != u]
        for j, v in enumerate(msg.senders.tolist()):
            row = sent[v]
            assert isinstance(row, ShareKeys)
            k = row.recipients.tolist().index(u)
            want = bytes(row.ciphertexts[SHARE_RECORD_SIZE * k:SHARE_RECORD_SIZE * (k + 1)])
            assert bytes(msg.ciphertexts[SHARE_RECORD_SIZE * j:SHARE_RECORD_SIZE * (j + 1)]) == want
    out = r.run()
    assert list(out.included) == u2
