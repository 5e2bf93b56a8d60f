"""The canonical wire codec: round trips, canonical bytes, and every kind of
malformed input raising WireFormatError (and nothing else)."""

from __future__ import annotations

import dataclasses
import enum
import pickle
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional

import msgpack
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from secagg.errors import (
    AbortReason,
    InvalidCiphertext,
    InvalidSignature,
    LocalProtocolError,
    ParameterError,
    ProtocolAborted,
    ReconstructionError,
    RemoteProtocolError,
    SecAggError,
    WireFormatError,
)
from secagg.encoding import wire
from secagg.encoding.wire import MAX_MESSAGE_BYTES, WIRE_VERSION, decode, encode, message, registered


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Stage(str, enum.Enum):
    SHARE = "share"
    UNMASK = "unmask"


@message("test.Inner")
@dataclass(frozen=True)
class Inner:
    party: int
    blob: bytes


@message("test.Everything")
@dataclass(frozen=True, eq=False)
class Everything:
    count: int = field(metadata={"min": 0, "max": 1000})
    big: int
    flag: bool
    ratio: float
    name: str = field(metadata={"max_len": 64})
    key: bytes = field(metadata={"len": 32})
    vec: np.ndarray = field(metadata={"dtypes": ("uint32", "uint64"), "max_size": 1000})
    floats: np.ndarray
    ids: tuple[int, ...] = field(metadata={"max_items": 10, "item": {"min": 1}})
    shares: dict[int, bytes]
    labels: dict[str, int]
    note: str | None
    maybe: Optional[int]
    color: Color
    stage: Stage
    inner: Inner
    inners: tuple[Inner, ...]


@message("test.Checked")
@dataclass(frozen=True)
class Checked:
    """A message whose own validation can fail (as protocol messages' does)."""

    value: int

    def __post_init__(self) -> None:
        if self.value == 13:
            raise ParameterError("unlucky")
        if self.value == 14:
            raise RuntimeError("a bug in a message's validation")


FIELDS = [f.name for f in dataclasses.fields(Everything)]


def sample(**changes: Any) -> Everything:
    base = dict(
        count=7, big=-(2**63), flag=True, ratio=0.25, name="héllo ✓", key=bytes(range(32)),
        vec=np.array([0, 1, 2**32 - 1], dtype=np.uint32), floats=np.array([1.5, -0.0, np.inf]),
        ids=(1, 2, 3), shares={3: b"c", 1: b"a", 2: b""}, labels={"b": 2, "a": 1},
        note=None, maybe=5, color=Color.GREEN, stage=Stage.UNMASK,
        inner=Inner(9, b"\x00\x01"), inners=(Inner(1, b""), Inner(2, b"x" * 300)),
    )
    base.update(changes)
    return Everything(**base)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def envelope(msg: Any) -> list[Any]:
    return msgpack.unpackb(encode(msg), raw=False)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def with_field(name: str, raw: Any, msg: Everything | None = None) -> bytes:
    env = envelope(msg or sample())
    env[3][FIELDS.index(name)] = raw
    return pack(env)


def assert_rejected(data: Any, **kwargs: Any) -> WireFormatError:
    with pytest.raises(WireFormatError) as info:
        decode(data, **kwargs)
    assert info.value.reason is AbortReason.MALFORMED_MESSAGE
    return info.value


# ------------------------------------------------------------- round trips

@pytest.mark.parametrize("msg", [
    sample(),
    sample(note="n", maybe=None, ids=(), shares={}, labels={}, inners=(),
           vec=np.zeros(0, dtype=np.uint64), floats=np.zeros(0)),
    sample(count=0, big=2**64 - 1, flag=False, ratio=-1e300, name=""),
    sample(count=1000, ratio=float("inf"), vec=np.arange(1000, dtype=np.uint64)),
])
def test_round_trip(msg: Everything) -> None:
    data = encode(msg)
    back = decode(data)
    assert same(back, msg)
    assert isinstance(back.ids, tuple) and isinstance(back.color, Color)
    assert not back.vec.flags.writeable and back.vec.dtype == msg.vec.dtype  # a read-only view of the bytes
    # canonical: decoding then encoding gives the same bytes
    assert encode(back) == data


def test_decoded_dicts_are_sorted_and_encoding_ignores_insertion_order() -> None:
    a = sample(shares={3: b"c", 1: b"a", 2: b""})
    b = sample(shares={1: b"a", 2: b"", 3: b"c"})
    assert encode(a) == encode(b)
    assert list(decode(encode(a)).shares) == [1, 2, 3]


def test_nan_round_trips() -> None:
    back = decode(encode(sample(ratio=float("nan"))))
    assert np.isnan(back.ratio)


def test_expected_type_filter() -> None:
    data = encode(Inner(1, b"x"))
    assert decode(data, expected=Inner) == Inner(1, b"x")
    assert decode(data, expected=(Everything, Inner)) == Inner(1, b"x")
    assert_rejected(data, expected=Everything)
    assert_rejected(data, expected=(Everything, Checked))


def test_accepts_bytes_like_input() -> None:
    data = encode(Inner(1, b"x"))
    assert decode(bytearray(data)) == Inner(1, b"x")
    assert decode(memoryview(data)) == Inner(1, b"x")


def test_envelope_layout() -> None:
    env = envelope(Inner(5, b"ab"))
    assert env == ["secagg", WIRE_VERSION, "test.Inner", [5, b"ab"]]
    assert registered()["test.Everything"] is Everything


def test_arrays_travel_little_endian() -> None:
    native = np.array([1, 2**31, 7], dtype=np.uint32)
    big = native.astype(">u4")
    assert encode(sample(vec=big)) == encode(sample(vec=native))
    raw = envelope(sample(vec=native))[3][FIELDS.index("vec")]
    assert raw == ["uint32", b"\x01\x00\x00\x00\x00\x00\x00\x80\x07\x00\x00\x00"]
    back = decode(encode(sample(vec=big))).vec
    assert back.dtype == np.uint32 and back.tolist() == native.tolist()


def test_non_contiguous_arrays_encode_their_values() -> None:
    base = np.arange(10, dtype=np.uint32)
    assert decode(encode(sample(vec=base[::3]))).vec.tolist() == [0, 3, 6, 9]


@given(
    count=st.integers(0, 1000),
    big=st.integers(-(2**63), 2**64 - 1),
    flag=st.booleans(),
    ratio=st.floats(allow_nan=False),
    name=st.text(max_size=64),
    key=st.binary(min_size=32, max_size=32),
    vec=st.lists(st.integers(0, 2**64 - 1), max_size=20),
    ids=st.lists(st.integers(1, 2**40), max_size=10).map(tuple),
    shares=st.dictionaries(st.integers(-5, 2**40), st.binary(max_size=20), max_size=8),
    labels=st.dictionaries(st.text(max_size=5), st.integers(-10, 10), max_size=5),
    note=st.none() | st.text(max_size=10),
    maybe=st.none() | st.integers(-(2**63), 2**63 - 1),
    color=st.sampled_from(Color),
    stage=st.sampled_from(Stage),
    inners=st.lists(st.builds(Inner, st.integers(0, 100), st.binary(max_size=8)), max_size=4).map(tuple),
)
def test_round_trip_property(**kw: Any) -> None:
    kw["vec"] = np.array(kw["vec"], dtype=np.uint64)
    msg = sample(**kw)
    data = encode(msg)
    back = decode(data, expected=Everything)
    assert same(back, msg)
    assert encode(back) == data


def test_pieces_join_to_the_encoding_and_hold_payloads_uncopied() -> None:
    msg = sample(count=1000, vec=np.arange(1000, dtype=np.uint64))
    parts = wire.pieces(msg)
    assert b"".join(parts) == encode(msg)
    views = [p for p in parts if isinstance(p, memoryview)]
    assert any(np.shares_memory(np.frombuffer(v, dtype=np.uint8), msg.vec) for v in views)


def test_an_attached_encoding_is_sent_as_it_is_and_checked_for_shape() -> None:
    msg = sample()
    data = encode(msg)
    assert wire.encoded(msg) == data and type(wire.encoded(msg)) is bytes  # none attached: encode
    view = memoryview(bytearray(data)).toreadonly()
    wire.attach_encoding(msg, view)
    assert wire.encoded(msg) is view and encode(msg) == data  # encode still builds from the fields
    other = sample()
    for bad, err in ((memoryview(bytearray(data)), TypeError),  # writable
                     (data, TypeError),  # not a view
                     (memoryview(np.frombuffer(data[:8], dtype=np.uint32)), TypeError),  # not bytes
                     (memoryview(b"\x00" * len(data)), ValueError)):  # no envelope
        with pytest.raises(err):
            wire.attach_encoding(other, bad)  # type: ignore[arg-type]
    assert type(wire.encoded(other)) is bytes
    with pytest.raises(TypeError):
        wire.attach_encoding(object(), view)


# --------------------------------------------------------- encoding misuse

def test_encode_refuses_unregistered_objects() -> None:
    @dataclass(frozen=True)
    class Unregistered:
        x: int

    with pytest.raises(TypeError):
        encode(Unregistered(1))
    with pytest.raises(TypeError):
        encode({"x": 1})


@pytest.mark.parametrize("vec", [np.zeros((2, 2), dtype=np.uint32), np.zeros(3, dtype=np.float16),
                                 np.zeros(3, dtype=bool), np.array([1, "a"], dtype=object)])
def test_encode_refuses_arrays_the_decoder_would_refuse(vec: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode(sample(floats=vec))


def test_registration_rules() -> None:
    with pytest.raises(TypeError):
        message("test.NotADataclass")(type("X", (), {}))

    with pytest.raises(TypeError):
        @message("test.Inner")
        @dataclass(frozen=True)
        class Clash:
            party: int

    assert registered()["test.Inner"] is Inner


# ---------------------------------------------------------- malformed input

def test_every_truncation_rejected() -> None:
    data = encode(sample())
    for n in range(len(data)):
        assert_rejected(data[:n])


@pytest.mark.parametrize("suffix", [b"\x00", b"\xc0", b"\x90", encode(Inner(1, b""))])
def test_trailing_bytes_rejected(suffix: bytes) -> None:
    assert_rejected(encode(sample()) + suffix)


def test_oversize_rejected() -> None:
    data = encode(sample())
    assert same(decode(data, max_size=len(data)), sample())
    assert_rejected(data, max_size=len(data) - 1)
    assert_rejected(data, max_size=0)
    assert MAX_MESSAGE_BYTES == 1 << 30


@pytest.mark.parametrize("data", [None, "text", 5, [1, 2], {"a": 1}])
def test_non_bytes_rejected(data: Any) -> None:
    assert_rejected(data)


@pytest.mark.parametrize("env", [
    ["secagX", 1, "test.Inner", [1, b""]],
    ["", 1, "test.Inner", [1, b""]],
    [b"secagg", 1, "test.Inner", [1, b""]],
    [["secagg"], 1, "test.Inner", [1, b""]],
    ["secagg", 1, "test.Inner"],
    ["secagg", 1, "test.Inner", [1, b""], None],
    [],
    {"secagg": 1},
    "secagg",
    42,
    None,
])
def test_bad_envelope_rejected(env: Any) -> None:
    assert_rejected(pack(env))


@pytest.mark.parametrize("version", [0, 2, -1, 2**32, "1", b"\x01", None, 1.0, True, [1]])
def test_wrong_version_rejected(version: Any) -> None:
    assert_rejected(pack(["secagg", version, "test.Inner", [1, b""]]))


@pytest.mark.parametrize("name", ["test.Nope", "", "TEST.INNER", b"test.Inner", 3, None, ["test.Inner"]])
def test_unknown_type_rejected(name: Any) -> None:
    assert_rejected(pack(["secagg", 1, name, [1, b""]]))


@pytest.mark.parametrize("body", [[], [1], [1, b"", 2], None, {"party": 1}, 1, b"\x01"])
def test_wrong_field_count_or_body_rejected(body: Any) -> None:
    assert_rejected(pack(["secagg", 1, "test.Inner", body]))


def test_nested_message_wrong_field_count_rejected() -> None:
    assert_rejected(with_field("inner", [9]))
    assert_rejected(with_field("inner", [9, b"", 0]))
    assert_rejected(with_field("inners", [[1, b""], [2]]))


@pytest.mark.parametrize("name, raw", [
    ("count", True), ("count", 1.0), ("count", "7"), ("count", None), ("count", b"\x07"),
    ("big", False), ("big", 2.5),
    ("flag", 1), ("flag", 0), ("flag", "true"), ("flag", None),
    ("ratio", 1), ("ratio", True), ("ratio", "0.25"), ("ratio", None),
    ("name", b"bytes"), ("name", 5), ("name", None), ("name", ["h"]),
    ("key", "x" * 32), ("key", list(range(32))), ("key", None), ("key", 0),
    ("vec", b"\x00" * 4), ("vec", ["uint32"]), ("vec", ["uint32", b"", 0]), ("vec", [b"uint32", b""]),
    ("vec", ["uint32", "abcd"]), ("vec", None),
    ("ids", 1), ("ids", b"\x01"), ("ids", [1, True]), ("ids", [1, None]), ("ids", {"a": 1}),
    ("shares", {1: b"a"}), ("shares", [[1]]), ("shares", [[1, b"a", 2]]), ("shares", [1]),
    ("shares", [["1", b"a"]]), ("shares", [[1, "a"]]), ("shares", [[True, b"a"]]),
    ("labels", [[b"a", 1]]), ("labels", [["a", 1.0]]),
    ("note", 5), ("note", b"x"), ("maybe", "5"), ("maybe", True),
    ("color", 3), ("color", 0), ("color", "RED"), ("color", True), ("color", 1.0), ("color", None),
    ("color", [1]),
    ("stage", "SHARE"), ("stage", "other"), ("stage", 1),
    ("inner", None), ("inner", [True, b""]), ("inner", [1, "x"]), ("inner", 5),
    ("inners", [None]), ("inners", None),
])
def test_wrong_field_types_rejected(name: str, raw: Any) -> None:
    assert_rejected(with_field(name, raw))


@pytest.mark.parametrize("name, raw", [
    ("count", -1), ("count", 1001), ("count", 2**64 - 1), ("count", -(2**63)),
    ("key", b"\x00" * 31), ("key", b"\x00" * 33), ("key", b""),
    ("name", "x" * 65),
    ("ids", list(range(1, 12))), ("ids", [1, 0]),
])
def test_metadata_limits_enforced(name: str, raw: Any) -> None:
    assert_rejected(with_field(name, raw))


@pytest.mark.parametrize("pairs", [
    [[2, b"b"], [1, b"a"]],
    [[1, b"a"], [1, b"b"]],
    [[1, b"a"], [1, b"a"]],
    [[1, b"a"], [3, b"c"], [2, b"b"]],
])
def test_dict_keys_must_strictly_increase(pairs: list[Any]) -> None:
    assert_rejected(with_field("shares", pairs))


def test_dict_keys_strictly_increasing_for_strings() -> None:
    assert_rejected(with_field("labels", [["b", 1], ["a", 2]]))
    assert_rejected(with_field("labels", [["a", 1], ["a", 1]]))


@pytest.mark.parametrize("dtype", ["float16", "object", "bool", "<u4", "uint16", "int8", "complex128",
                                   "U4", "V4", "", "uint32 ", "datetime64"])
def test_disallowed_dtypes_rejected(dtype: str) -> None:
    assert_rejected(with_field("floats", [dtype, b"\x00" * 16]))


@pytest.mark.parametrize("dtype", ["int64", "float64", "uint8", "int32", "float32"])
def test_dtype_outside_the_fields_allowance_rejected(dtype: str) -> None:
    assert_rejected(with_field("vec", [dtype, b"\x00" * 8]))


@pytest.mark.parametrize("dtype, nbytes", [("uint32", 5), ("uint32", 1), ("uint64", 12), ("uint64", 7)])
def test_array_length_not_multiple_of_itemsize_rejected(dtype: str, nbytes: int) -> None:
    assert_rejected(with_field("vec", [dtype, b"\x00" * nbytes]))


def test_array_longer_than_max_size_rejected() -> None:
    assert_rejected(with_field("vec", ["uint32", b"\x00" * 4 * 1001]))
    assert decode(with_field("vec", ["uint32", b"\x00" * 4 * 1000])).vec.size == 1000


def test_message_validation_errors_become_wire_errors() -> None:
    assert decode(encode(Checked(12))) == Checked(12)
    for bad in (13, 14):
        assert_rejected(pack(["secagg", 1, "test.Checked", [bad]]))


# ---------------------------------------------------------- canonical form

def _header_swap(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1
    return data.replace(old, new)


def test_non_canonical_encodings_rejected() -> None:
    good = encode(Inner(5, b"ab"))
    assert decode(good) == Inner(5, b"ab")
    variants = {
        # 5 as uint8 / uint64 / int8 instead of a positive fixint
        "wide int": _header_swap(good, b"\x92\x05\xc4", b"\x92\xcc\x05\xc4"),
        "uint64 int": _header_swap(good, b"\x92\x05\xc4", b"\x92\xcf" + (5).to_bytes(8, "big") + b"\xc4"),
        "int8 int": _header_swap(good, b"\x92\x05\xc4", b"\x92\xd0\x05\xc4"),
        # bin 16 header for a 2-byte string
        "wide bin": _header_swap(good, b"\xc4\x02ab", b"\xc5\x00\x02ab"),
        # str 8 header for the type name, array 16 header for the body
        "wide str": _header_swap(good, b"\xaatest.Inner", b"\xd9\x0atest.Inner"),
        "wide array": _header_swap(good, b"\x92\x05", b"\xdc\x00\x02\x05"),
        # version as uint8
        "wide version": _header_swap(good, b"secagg\x01", b"secagg\xcc\x01"),
    }
    for name, data in variants.items():
        assert msgpack.unpackb(data) == msgpack.unpackb(good), name  # same value, other bytes
        assert_rejected(data)


def test_float32_encoding_of_a_float_rejected() -> None:
    good = encode(sample(ratio=0.25))
    f64 = b"\xcb" + struct.pack(">d", 0.25)
    f32 = b"\xca" + struct.pack(">f", 0.25)
    assert_rejected(_header_swap(good, f64, f32))


def test_boolean_versions_and_enum_aliases_rejected() -> None:
    # True == 1 and Color(True) is Color.RED in Python; neither is the canonical form.
    assert_rejected(pack(["secagg", True, "test.Inner", [1, b""]]))
    assert_rejected(with_field("color", True))
    assert_rejected(with_field("color", 2.0))


def test_utf8_string_type_name_required() -> None:
    good = encode(Inner(5, b"ab"))
    assert_rejected(_header_swap(good, b"\xaatest.Inner", b"\xc4\x0atest.Inner"))  # bin, not str
    assert_rejected(_header_swap(good, b"secagg", b"secag\xff"))  # invalid UTF-8


# ------------------------------------------------------------------- fuzzing

@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_fuzz_random_bytes_only_raise_wire_format_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except WireFormatError:
        return
    assert encode(msg) == data  # anything accepted is canonical


PREFIXES = [b"\x94\xa6secagg\x01\xaatest.Inner", b"\x94\xa6secagg\x01\xaftest.Everything",
            b"\x94\xa6secagg\x01\xactest.Checked"]


@given(st.sampled_from(PREFIXES), st.binary(max_size=200))
@settings(max_examples=400)
def test_fuzz_valid_envelope_random_body(prefix: bytes, body: bytes) -> None:
    try:
        msg = decode(prefix + body)
    except WireFormatError:
        return
    assert encode(msg) == prefix + body


@given(st.data())
@settings(max_examples=300)
def test_fuzz_mutated_valid_messages(data: st.DataObject) -> None:
    original = encode(data.draw(st.sampled_from([sample(), sample(note="x", maybe=None),
                                                 Inner(3, b"abc"), Checked(12)])))
    buf = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        i = data.draw(st.integers(0, len(buf) - 1)) if buf else 0
        if op == "flip" and buf:
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf.insert(i, data.draw(st.integers(0, 255)))
        elif op == "delete" and buf:
            del buf[i]
    mutated = bytes(buf)
    try:
        msg = decode(mutated)
    except WireFormatError:
        return
    assert encode(msg) == mutated


STRUCTURE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)


@lru_cache(maxsize=None)
def corpus() -> dict[str, Any]:
    """One valid message of every registered wire type, by name: this
    module's test messages, and the library's, as they go over the wire in
    real rounds on the drivers (a malicious-server masking round, with a
    client's saved state mid-round; a Paillier round's messages with a
    512-bit test key)."""
    import secagg.drivers  # noqa: F401  (registers the library's messages)
    from secagg.primitives import paillier as pl
    from secagg.primitives.randomness import DeterministicRandom
    from secagg.protocols.paillier import (AggregateCiphertext, AggregateSums, PaillierClient, PaillierParams,
                                           PublicKeyMessage)

    from masking_harness import Round

    out: dict[str, Any] = {"test.Inner": Inner(3, b"abc"), "test.Everything": sample(), "test.Checked": Checked(12),
                           "test.Normalising": Normalising("abc")}
    r = Round(n=4, dim=3, malicious=True, dropout_tolerance=0.0)
    r.run_to("unmasking")
    record = r.record(1)
    out["drivers.MaskingRecord"] = dataclasses.replace(record, update=np.array([0.5, -0.25, 1.0]))
    out["masking.ClientState"] = record.client
    out["masking.ServerState"] = decode(r.driver.core.snapshot())  # the server saved mid-round
    r.run()
    for _, _, _, data in r.watch.transcript:
        msg = decode(data)
        out.setdefault(type(msg).__wire_name__, msg)
    pk, _ = pl.generate_keypair(512, DeterministicRandom("wire corpus"))
    params = PaillierParams.create(pk, [1, 2, 3], 4, rng=DeterministicRandom("wire params"))
    client = PaillierClient(2, pk, rng=DeterministicRandom("wire client"), min_key_bits=512)
    client.receive_params(params)
    sub = client.submit(np.array([0.1, -0.2, 0.3, 0.0]))
    out.update({"paillier.PublicKey": PublicKeyMessage.from_key(pk), "paillier.Params": params,
                "paillier.Submission": sub,
                "paillier.AggregateCiphertext": AggregateCiphertext(params.session_id, pk.key_id, (2,),
                                                                    sub.ciphertexts),
                "paillier.AggregateSums": AggregateSums(params.session_id, (2,),
                                                        np.array([5, -3, 0, 7, 4096], dtype=np.int64))})
    out.update(_committee_messages())
    out.update(_dp_messages())
    return out


def _dp_messages() -> dict[str, Any]:
    """A distributed-DP round's parameters (adaptive clipping on, so every
    field is in use), a DP masking round's and a DP Paillier round's
    parameters, and a committee member's saved record of the latter."""
    from secagg.dp import DPConfig
    from secagg.drivers.committee import DPDecryptorRecord
    from secagg.primitives import paillier as pl
    from secagg.primitives.randomness import DeterministicRandom
    from secagg.protocols.masking import MaskingParams
    from secagg.protocols.paillier import PaillierParams
    from secagg.protocols.paillier.threshold import DecryptorRecord

    dp = DPConfig(epsilon=2.0, rounds=3, adaptive_clip=True).round_params(3, n_min=3, n_max=4,
                                                                           rotation_seed=bytes(range(32)))
    params = MaskingParams.create([1, 2, 3, 4], 3, protocol="secagg", threshold=3, dp=dp,
                                  rng=DeterministicRandom("wire dp"))
    pk, _ = pl.generate_keypair(512, DeterministicRandom("wire corpus"))
    paillier = PaillierParams.create(pk, [1, 2, 3, 4], 3, min_clients=3, dp=dp, rng=DeterministicRandom("wire dp"))
    record = DPDecryptorRecord(DecryptorRecord(params=paillier, aggregate_digest=b""), dp)
    return {"dp.RoundParams": dp, "masking.DPParams": params, "paillier.DPParams": paillier,
            "drivers.DPDecryptorRecord": record}


def _committee_messages() -> dict[str, Any]:
    """A Paillier committee round's own messages (a 2-of-3 committee, 512-bit
    test key): the committee key, a decryption request, a member's answer
    and saved record, and, when the Flower adapter is importable, a share file."""
    from secagg.primitives import paillier as pl
    from secagg.primitives.randomness import DeterministicRandom
    from secagg.protocols.paillier import PaillierClient, PaillierParams
    from secagg.protocols.paillier.threshold import ThresholdCombiner, ThresholdDecryptor, deal_committee

    ck, shares = deal_committee([1, 2, 3], key_bits=512, rng=DeterministicRandom("wire committee"))
    params = PaillierParams.create(ck.public_key, [1, 2, 3], 4, rng=DeterministicRandom("wire committee params"))
    cts = []
    for c in (1, 2):
        client = PaillierClient(c, ck.public_key, rng=DeterministicRandom(f"wire committee {c}"), min_key_bits=512)
        client.receive_params(params)
        cts.append(pl.ciphertexts_from_bytes(ck.public_key, client.submit(np.array([0.1, -0.2, 0.3, 0.0])).ciphertexts,
                                             params.n_ciphertexts))
    pl.multiply_into(ck.public_key, cts[0], cts[1])
    comb = ThresholdCombiner(ck, params, (1, 2), pl.ciphertexts_to_bytes(ck.public_key, cts[0]))
    request = comb.requests([1, 2, 3])[1]
    member = ThresholdDecryptor(1, ck, shares[1])
    answer, record = member.decrypt(request, dataclasses.replace(member.register(params), submitted=True))
    out: dict[str, Any] = {"paillier.CommitteeKey": ck, "paillier.DecryptionRequest": request,
                           "paillier.DecryptionShares": answer, "paillier.DecryptorRecord": record}
    try:
        from secagg.flower.keys import KeyShareFile
    except ImportError:  # the Flower extra is not installed: its message is not registered either
        return out
    out["flower.KeyShareFile"] = KeyShareFile(holder=1, index=shares[1].index, key_id=ck.key_id,
                                              secret=shares[1].secret_bytes())
    return out


def _field_values() -> list[Any]:
    """Every field value (in its plain wire form) of every corpus message:
    replacements that often have the right type but the wrong size, dtype,
    range or meaning."""
    values = []
    for msg in corpus().values():
        values.extend(msgpack.unpackb(encode(msg), raw=False)[3])
    return values


def test_every_registered_message_is_in_the_fuzz_corpus() -> None:
    """The structured fuzz below covers every registered message type (a new
    one must be added to the corpus), and each sample is a canonical message."""
    names = set(corpus())
    library = {n for n in registered() if not n.startswith("test.")}
    assert library <= names, library - names
    assert {"drivers.MaskingRecord", "masking.Params", "masking.UnmaskShares", "masking.ConsistencySignature",
            "paillier.Params", "paillier.AggregateSums"} <= library  # the registry is really populated
    for name, msg in corpus().items():
        data = encode(msg)
        back = decode(data, registered()[name])
        assert type(back) is registered()[name] and encode(back) == data and same(back, msg), name


@given(st.data())
@settings(max_examples=500, deadline=None)
def test_fuzz_structured_bodies(data: st.DataObject) -> None:
    """A registered message's body with one field replaced (by a random
    structure, or by a field value of some message), a field dropped or
    added, or the whole body random: the decoder either refuses it with a
    WireFormatError (malformed_message), nothing else, or returns a message
    of exactly that type whose encoding is the input, whose other fields are
    the original's, and which the type filter accepts."""
    name = data.draw(st.sampled_from(sorted(corpus())), label="message")
    cls, original = registered()[name], corpus()[name]
    body = msgpack.unpackb(encode(original), raw=False)[3]
    how = data.draw(st.sampled_from(["replace", "replace", "borrow", "drop", "add", "whole"]), label="how")
    k = data.draw(st.integers(0, len(body) - 1), label="field")
    if how == "replace":
        body[k] = data.draw(STRUCTURE | st.just(body[k]), label="value")
    elif how == "borrow":
        body[k] = data.draw(st.sampled_from(_field_values()), label="value")
    elif how == "drop":
        del body[k]
    elif how == "add":
        body.append(data.draw(STRUCTURE, label="value"))
    else:
        body = data.draw(STRUCTURE, label="body")
    raw = pack(["secagg", WIRE_VERSION, name, body])
    try:
        msg = decode(raw)
    except WireFormatError as exc:
        event(f"refused ({how})")
        assert exc.reason is AbortReason.MALFORMED_MESSAGE
        assert raw != encode(original), "the original message was refused"
        return
    event(f"accepted ({how})")
    assert how in ("replace", "borrow", "whole"), "a wrong number of fields was accepted"
    assert type(msg) is cls and encode(msg) == raw
    assert same(decode(raw, cls), msg)
    with pytest.raises(WireFormatError):
        decode(raw, Inner if cls is not Inner else Checked)
    if how != "whole":
        fields = dataclasses.fields(cls)
        for j, f in enumerate(fields):
            if j != k:
                assert same(getattr(msg, f.name), getattr(original, f.name)), f.name


def test_sample_fields_cover_every_supported_kind() -> None:
    # guards this file: the sample message keeps one field of each supported type
    hints = {f.name: f.type for f in dataclasses.fields(Everything)}
    text = " ".join(str(v) for v in hints.values())
    for kind in ("int", "bool", "float", "str", "bytes", "np.ndarray", "tuple[", "dict[", "| None",
                 "Optional[", "Color", "Stage", "Inner"):
        assert kind in text, kind


# ------------------------------------------- errors across process boundaries

@pytest.mark.parametrize("error", [
    WireFormatError("bad bytes"),
    RemoteProtocolError("peer sent junk", AbortReason.SESSION_MISMATCH),
    InvalidCiphertext(),
    InvalidSignature(),
    ProtocolAborted(AbortReason.TOO_FEW_SURVIVORS, "2 of 5 left"),
    ProtocolAborted(AbortReason.INCONSISTENT_DROPOUT_SETS),
])
def test_errors_survive_pickling(error: Exception) -> None:
    # Errors cross process boundaries (multiprocessing, Ray workers in Flower
    # simulations) pickled: type, message and reason must come back intact.
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert getattr(back, "reason", None) == getattr(error, "reason", None)
    assert getattr(back, "detail", None) == getattr(error, "detail", None)


def test_error_tree() -> None:
    assert issubclass(WireFormatError, RemoteProtocolError)
    assert issubclass(InvalidCiphertext, RemoteProtocolError) and issubclass(InvalidSignature, RemoteProtocolError)
    assert issubclass(ParameterError, ValueError) and issubclass(ParameterError, SecAggError)
    for cls in (RemoteProtocolError, ReconstructionError, ProtocolAborted, LocalProtocolError):
        assert issubclass(cls, SecAggError) and not issubclass(cls, ValueError)
    assert str(ProtocolAborted(AbortReason.WRONG_ROUND)) == "round aborted: wrong_round"
    assert AbortReason("malformed_message") is AbortReason.MALFORMED_MESSAGE


# ------------------------------------- canonical check on long byte strings

def _old_rule_accepts(data: bytes) -> bool:
    """The definition the decoder's structural check implements: the message
    parses, passes its schema and re-encodes to exactly ``data``."""
    from secagg.encoding import wire as W

    try:
        msg, _, _ = W._parse(data, None)
        return encode(msg) == data
    except WireFormatError:
        return False


def _big_samples() -> list[Any]:
    return [Inner(7, bytes(range(256)) * 8), Inner(2**40, b"\xc5" * 70_000),
            sample(inners=(Inner(1, b"y" * 1024), Inner(2, b"z" * 1023)), vec=np.arange(1000, dtype=np.uint64),
                   floats=np.linspace(0, 1, 5000))]


@pytest.mark.parametrize("msg", _big_samples())
def test_long_byte_strings_round_trip(msg: Any) -> None:
    data = encode(msg)
    assert same(decode(data), msg)
    assert encode(decode(data)) == data


def test_wider_headers_around_long_byte_strings_rejected() -> None:
    blob = bytes(range(256)) * 8  # 2048 bytes: canonical header bin16
    good = encode(Inner(7, blob))
    variants = {
        "bin32 header": _header_swap(good, b"\xc5\x08\x00" + blob[:8], b"\xc6\x00\x00\x08\x00" + blob[:8]),
        "array16 body header": _header_swap(good, b"\x92\x07\xc5", b"\xdc\x00\x02\x07\xc5"),
        "uint16 party": _header_swap(good, b"\x92\x07\xc5", b"\x92\xcd\x00\x07\xc5"),
    }
    for name, data in variants.items():
        assert msgpack.unpackb(data) == msgpack.unpackb(good), name
        assert not _old_rule_accepts(data), name
        assert_rejected(data)
    # a long array body: its [dtype, bytes] pair with a bin32 header
    arr_msg = sample(vec=np.arange(1000, dtype=np.uint64))
    good = encode(arr_msg)
    raw = np.arange(1000, dtype="<u8").tobytes()
    assert_rejected(_header_swap(good, b"\xc5\x1f\x40" + raw[:16], b"\xc6\x00\x00\x1f\x40" + raw[:16]))


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_structural_check_equals_reencoding_on_mutations(data: st.DataObject) -> None:
    """Flip, insert or delete bytes of messages that carry long byte strings:
    the decoder accepts exactly what parses and re-encodes to the same bytes."""
    original = bytearray(encode(data.draw(st.sampled_from(_big_samples()[:1] + [
        Inner(3, b"q" * 1500), sample(inners=(Inner(1, b"y" * 1024),))]))))
    for _ in range(data.draw(st.integers(1, 3))):
        # mutate near the headers (the first 64 bytes) most of the time
        hi = len(original) - 1 if data.draw(st.booleans()) else min(64, len(original) - 1)
        pos = data.draw(st.integers(0, hi))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            original[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            original[pos:pos] = bytes([data.draw(st.integers(0, 255))])
        elif len(original) > 1:
            del original[pos]
    mutated = bytes(original)
    try:
        decode(mutated)
        accepted = True
    except WireFormatError:
        accepted = False
    assert accepted == _old_rule_accepts(mutated)


@message("test.Normalising")
@dataclass(frozen=True)
class Normalising:
    """A message whose validation normalises a field (none of ours does; the
    decoder must not rely on that)."""

    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name.lower())


def test_a_normalising_message_cannot_make_two_encodings_decode_equal() -> None:
    assert decode(encode(Normalising("abc"))) == Normalising("abc")
    upper = pack(["secagg", WIRE_VERSION, "test.Normalising", ["ABC"]])  # canonical msgpack, not encode()'s
    assert_rejected(upper)


def test_one_name_per_class_and_the_name_must_match() -> None:
    @message("test.Once")
    @dataclass(frozen=True)
    class Once:
        n: int

    with pytest.raises(TypeError):
        message("test.OnceAgain")(Once)
    assert "test.OnceAgain" not in registered()
    assert decode(encode(Once(7))) == Once(7)
    assert_rejected(pack(["secagg", WIRE_VERSION, "test.OnceAgain", [7]]))


def test_typed_memoryview_size_is_counted_in_bytes() -> None:
    data = encode(Inner(1, b"x" * 2000))
    padded = data + b"\x00" * (-len(data) % 4)
    view = memoryview(padded).cast("I")  # len() counts 4-byte items
    assert len(view) < 1020 < view.nbytes
    with pytest.raises(WireFormatError, match="exceeds"):
        decode(view, max_size=1020)


# ------------------------------------------- the structural decoder: no copies, no re-encoding

def _reference_encode(msg: Any) -> bytes:
    from secagg.encoding import wire as W

    return pack(["secagg", WIRE_VERSION, type(msg).__wire_name__, W._to_plain(msg, type(msg))])


def test_encode_is_byte_identical_to_msgpack_of_the_plain_form() -> None:
    for name, msg in corpus().items():
        assert encode(msg) == _reference_encode(msg), name
    for msg in _big_samples():
        assert encode(msg) == _reference_encode(msg)


@given(st.data())
@settings(max_examples=400, deadline=None)
def test_structural_decoder_equals_the_reference_rule_on_every_message_type(data: st.DataObject) -> None:
    """Mutations of every corpus message: the decoder accepts exactly what
    msgpack parses, passes the schema and re-encodes to the same bytes."""
    name = data.draw(st.sampled_from(sorted(corpus())), label="message")
    buf = bytearray(encode(corpus()[name]))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(buf) - 1)) if buf else 0
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "set" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = bytes([data.draw(st.integers(0, 255))])
        elif buf:
            del buf[pos]
    mutated = bytes(buf)
    try:
        msg = decode(mutated)
        accepted = True
    except WireFormatError as exc:
        assert exc.reason is AbortReason.MALFORMED_MESSAGE
        accepted = False
    assert accepted == _old_rule_accepts(mutated)
    if accepted:
        assert encode(msg) == mutated


def test_more_non_canonical_headers_rejected() -> None:
    good = encode(sample(count=5, big=-5, vec=np.array([1, 2], dtype=np.uint32)))
    assert decode(good).count == 5
    raw_vec = np.array([1, 2], dtype="<u4").tobytes()
    variants = {
        # a positive int in a signed format, a negative one wider than needed
        "int8 positive": _header_swap(good, b"\x05\xfb", b"\xd0\x05\xfb"),
        "int16 negative": _header_swap(good, b"\x05\xfb", b"\x05\xd1\xff\xfb"),
        "int64 negative": _header_swap(good, b"\x05\xfb", b"\x05\xd3" + (-5).to_bytes(8, "big", signed=True)),
        "uint16 positive": _header_swap(good, b"\x05\xfb", b"\xcd\x00\x05\xfb"),
        "uint32 positive": _header_swap(good, b"\x05\xfb", b"\xce\x00\x00\x00\x05\xfb"),
        # an array's payload: bin16 and bin32 headers for 8 bytes; its dtype name as str8
        "bin16 array": _header_swap(good, b"\xc4\x08" + raw_vec, b"\xc5\x00\x08" + raw_vec),
        "bin32 array": _header_swap(good, b"\xc4\x08" + raw_vec, b"\xc6\x00\x00\x00\x08" + raw_vec),
        "str8 dtype": _header_swap(good, b"\xa6uint32\xc4\x08", b"\xd9\x06uint32\xc4\x08"),
        # the [dtype, bytes] pair and the 32-byte key with wider headers
        "array16 pair": _header_swap(good, b"\x92\xa6uint32\xc4\x08", b"\xdc\x00\x02\xa6uint32\xc4\x08"),
        "bin32 key": _header_swap(good, b"\xc4\x20" + bytes(range(32)), b"\xc6\x00\x00\x00\x20" + bytes(range(32))),
        "bin16 key": _header_swap(good, b"\xc4\x20" + bytes(range(32)), b"\xc5\x00\x20" + bytes(range(32))),
        # the envelope's array header, and the body's
        "array16 envelope": b"\xdc\x00\x04" + good[1:],
    }
    for name, data in variants.items():
        assert msgpack.unpackb(data) == msgpack.unpackb(good), name
        assert not _old_rule_accepts(data), name
        assert_rejected(data)
    short = encode(Inner(1, b"abc"))
    assert_rejected(_header_swap(short, b"\xc4\x03abc", b"\xc6\x00\x00\x00\x03abc"))  # bin32 for 3 bytes
    for suffix in (b"\x00", b"\xc4\x00", short):
        assert_rejected(short + suffix)
        assert_rejected(bytearray(short + suffix))
        assert_rejected(memoryview(short + suffix))


def test_large_payloads_decode_as_read_only_views_of_the_input() -> None:
    from secagg.protocols.masking.messages import SHARE_RECORD_SIZE, ForwardedShares, MaskedInput, ShareKeys

    vec = np.arange(100_000, dtype=np.uint32)
    data = encode(MaskedInput(3, b"s" * 32, vec))
    back = decode(data)
    assert np.shares_memory(back.masked, np.frombuffer(data, dtype=np.uint8))
    assert not back.masked.flags.writeable and back.masked.dtype == np.uint32
    assert np.array_equal(back.masked, vec)
    for cls in (ShareKeys, ForwardedShares):
        ids = np.arange(2, 50, dtype=np.uint32)
        records = bytes(range(256)) * (SHARE_RECORD_SIZE * ids.size // 256 + 1)
        records = records[:SHARE_RECORD_SIZE * ids.size]
        msg = cls(1, b"s" * 32, ids, records) if cls is ShareKeys else cls(b"s" * 32, ids, records)
        data = encode(msg)
        back = decode(data)
        assert isinstance(back.ciphertexts, memoryview) and back.ciphertexts.readonly
        assert back.ciphertexts == records and encode(back) == data
    # a bytearray's view is read-only too
    back = decode(bytearray(encode(MaskedInput(3, b"s" * 32, vec))))
    assert not back.masked.flags.writeable
    # short byte fields and fields not marked as views stay bytes
    assert type(decode(encode(Inner(7, bytes(range(256)) * 8))).blob) is bytes


def test_messages_built_without_their_init_are_the_objects_init_builds() -> None:
    """The compiled reader fills the ``__dict__`` of a frozen dataclass whose
    ``__init__`` only stores its fields; a class with its own validation (a
    ``__post_init__``) is still built through ``__init__``, so its checks run."""
    from secagg.protocols.masking.messages import AdvertiseKeys, UnmaskShares

    ids = np.arange(1, 5, dtype=np.uint32)
    for msg in (AdvertiseKeys(7, b"s" * 32, b"e" * 32, b"m" * 32, b"c" * 32),
                UnmaskShares(7, b"s" * 32, ids, np.arange(36, dtype=np.uint32), ids[:0], ids[:0]), Inner(3, b"x")):
        back = decode(encode(msg))
        assert type(back) is type(msg) and repr(back) == repr(msg) and encode(back) == encode(msg)
        assert list(vars(back)) == list(vars(msg))  # the same fields, in the same order
        if type(msg) is not UnmaskShares:  # (arrays have no truth value: its == cannot be used)
            assert back == msg and hash(back) == hash(msg)
        with pytest.raises(dataclasses.FrozenInstanceError):
            object.__getattribute__(back, "__setattr__")(dataclasses.fields(msg)[0].name, 8)
    assert wire._dataclass_init_only(AdvertiseKeys, True) and wire._dataclass_init_only(Inner, True)
    assert not wire._dataclass_init_only(Checked, True) and not wire._dataclass_init_only(Normalising, True)
    with pytest.raises(WireFormatError, match="unlucky"):
        decode(pack(["secagg", WIRE_VERSION, "test.Checked", [13]]))


def test_arrays_decoded_from_a_writable_buffer_cannot_be_made_writable() -> None:
    from secagg.protocols.masking.messages import MaskedInput

    vec = np.arange(1000, dtype=np.uint32)
    for data in (encode(MaskedInput(3, b"s" * 32, vec)), bytearray(encode(MaskedInput(3, b"s" * 32, vec)))):
        back = decode(data)
        with pytest.raises(ValueError):
            back.masked.flags.writeable = True
        assert np.array_equal(back.masked, vec)
