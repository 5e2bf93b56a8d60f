"""Canonical, versioned wire encoding for protocol messages (msgpack, no pickle).

A message is a frozen dataclass registered with :func:`message`. On the wire it
is the msgpack array ``["secagg", VERSION, type_name, [field values in declared
order]]``. Decoding is schema-driven: every field is checked against its type
annotation (exact types: a bool is not an int, a str is not bytes), declared
byte lengths and integer ranges (``field(metadata=...)``), and array dtypes and
shapes. Anything else (truncated or trailing bytes, oversize input, an unknown
version or type, a missing or extra field, a wrong type, a non-canonical
encoding of a valid message) raises :class:`secagg.errors.WireFormatError` and
builds no object. Decoding is canonical: ``encode(decode(b)) == b``.

Supported field types: ``int``, ``bool``, ``float``, ``str``, ``bytes``,
``np.ndarray`` (1-D, little-endian on the wire, dtype from metadata), ``tuple[T, ...]``, ``dict[K, V]``,
``T | None``, ``enum.Enum`` subclasses and other registered messages.
Big integers (Paillier ciphertexts) travel as ``bytes``.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import types
import typing
from typing import Any, TypeVar

import msgpack
import numpy as np

from ..errors import WireFormatError

__all__ = ["message", "encode", "decode", "WIRE_VERSION", "MAX_MESSAGE_BYTES", "registered"]

WIRE_VERSION = 1
MAGIC = "secagg"
MAX_MESSAGE_BYTES = 1 << 30
_INT64 = (-(1 << 63), (1 << 64) - 1)
_ALLOWED_DTYPES = {"uint8", "uint32", "uint64", "int32", "int64", "float32", "float64"}

_REGISTRY: dict[str, type] = {}
T = TypeVar("T")


def message(name: str) -> typing.Callable[[type[T]], type[T]]:
    """Class decorator: register a frozen dataclass as a wire message type."""

    def wrap(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError("wire messages must be dataclasses")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise TypeError(f"wire message name {name!r} registered twice")
        existing = cls.__dict__.get("__wire_name__")
        if existing is not None and existing != name:  # one name per class, one class per name
            raise TypeError(f"{cls.__name__} is already registered as {existing!r}")
        _REGISTRY[name] = cls
        cls.__wire_name__ = name  # type: ignore[attr-defined]
        return cls

    return wrap


def registered() -> dict[str, type]:
    return dict(_REGISTRY)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = _HINTS[cls] = typing.get_type_hints(cls)
    return h


# ---------------------------------------------------------------- encoding

def _to_plain(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is np.ndarray:
        arr = np.asarray(value)
        name = arr.dtype.name  # "uint32" whatever the byte order
        if arr.ndim != 1:
            raise ValueError(f"wire arrays are 1-D, got shape {arr.shape}")
        if name not in _ALLOWED_DTYPES:
            raise ValueError(f"dtype {name} cannot go on the wire; allowed: {sorted(_ALLOWED_DTYPES)}")
        # Little-endian on the wire, whatever the host: the decoder reads "<".
        # msgpack packs a byte view as bin: no intermediate copy of a long vector
        return [name, np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).data.cast("B")]
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return _to_plain(value, inner)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if inner is int or inner is float or inner is str:  # plain values go out as they are
            return list(value)
        return [_to_plain(v, inner) for v in value]
    if origin is dict:
        kt, vt = typing.get_args(tp)
        return [[_to_plain(k, kt), _to_plain(v, vt)] for k, v in sorted(value.items())]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return value.value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return [_to_plain(getattr(value, f.name), _hints(tp)[f.name]) for f in dataclasses.fields(tp)]
    if tp is bytes:
        return bytes(value)
    return value


def encode(msg: Any) -> bytes:
    """Canonical bytes of a registered message."""
    cls = type(msg)
    name = getattr(cls, "__wire_name__", None)
    if name is None:
        raise TypeError(f"{cls.__name__} is not a registered wire message")
    return msgpack.packb([MAGIC, WIRE_VERSION, name, _to_plain(msg, cls)], use_bin_type=True)


# ---------------------------------------------------------------- decoding

def _fail(path: str, what: str) -> typing.NoReturn:
    raise WireFormatError(f"{path}: {what}")


def _from_plain(raw: Any, tp: Any, meta: typing.Mapping[str, Any], path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if raw is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return _from_plain(raw, inner, meta, path)
    if tp is bool:
        if type(raw) is not bool:
            _fail(path, "expected a bool")
        return raw
    if tp is int:
        if type(raw) is not int:
            _fail(path, "expected an integer")
        lo, hi = meta.get("min", _INT64[0]), meta.get("max", _INT64[1])
        if not lo <= raw <= hi:
            _fail(path, f"integer {raw} outside [{lo}, {hi}]")
        return raw
    if tp is float:
        if type(raw) is not float:
            _fail(path, "expected a float")
        return raw
    if tp is str:
        if type(raw) is not str:
            _fail(path, "expected a string")
        if len(raw) > meta.get("max_len", 1 << 16):
            _fail(path, "string too long")
        return raw
    if tp is bytes:
        if type(raw) is not bytes:
            _fail(path, "expected bytes")
        if "len" in meta and len(raw) != meta["len"]:
            _fail(path, f"expected {meta['len']} bytes, got {len(raw)}")
        if len(raw) > meta.get("max_len", MAX_MESSAGE_BYTES):
            _fail(path, "byte string too long")
        return raw
    if tp is np.ndarray:
        if not (isinstance(raw, list) and len(raw) == 2 and type(raw[0]) is str and type(raw[1]) is bytes):
            _fail(path, "expected an array [dtype, bytes]")
        dtype_name, data = raw
        if dtype_name not in _ALLOWED_DTYPES:
            _fail(path, f"dtype {dtype_name!r} not allowed")
        allowed = meta.get("dtypes")
        if allowed is not None and dtype_name not in allowed:
            _fail(path, f"dtype {dtype_name} not one of {sorted(allowed)}")
        itemsize = np.dtype(dtype_name).itemsize
        if len(data) % itemsize:
            _fail(path, "array byte length is not a multiple of the item size")
        arr = np.frombuffer(data, dtype=np.dtype(dtype_name).newbyteorder("<")).astype(dtype_name)
        if "max_size" in meta and arr.size > meta["max_size"]:
            _fail(path, "array too long")
        return arr
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(raw, list):
            _fail(path, "expected a list")
        if len(raw) > meta.get("max_items", 1 << 20):
            _fail(path, "too many items")
        item_meta = meta.get("item", {})
        if inner is int and raw and set(map(type, raw)) == {int}:  # all exact ints: one range check
            lo, hi = item_meta.get("min", _INT64[0]), item_meta.get("max", _INT64[1])
            if lo <= min(raw) and max(raw) <= hi:
                return tuple(raw)
        # the general path (and the precise error for a bad item)
        return tuple(_from_plain(v, inner, item_meta, f"{path}[{i}]") for i, v in enumerate(raw))
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(raw, list):
            _fail(path, "expected a list of pairs")
        if len(raw) > meta.get("max_items", 1 << 20):
            _fail(path, "too many items")
        out: dict[Any, Any] = {}
        prev = None
        for i, pair in enumerate(raw):
            if not (isinstance(pair, list) and len(pair) == 2):
                _fail(f"{path}[{i}]", "expected a [key, value] pair")
            k = _from_plain(pair[0], kt, meta.get("key", {}), f"{path}[{i}].key")
            if prev is not None and not prev < k:
                _fail(f"{path}[{i}]", "keys not strictly increasing (duplicate or non-canonical)")
            prev = k
            out[k] = _from_plain(pair[1], vt, meta.get("value", {}), f"{path}[{k}]")
        return out
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            member = tp(raw)
        except ValueError:
            _fail(path, f"not a valid {tp.__name__}")
        if type(member.value) is not type(raw):  # True for 1, 1.0 for 1: not the canonical value
            _fail(path, f"not a valid {tp.__name__}")
        return member
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        fields = dataclasses.fields(tp)
        if not isinstance(raw, list) or len(raw) != len(fields):
            _fail(path, f"expected {len(fields)} fields for {tp.__name__}")
        hints = _hints(tp)
        kwargs = {f.name: _from_plain(v, hints[f.name], f.metadata, f"{path}.{f.name}")
                  for f, v in zip(fields, raw)}
        try:
            return tp(**kwargs)
        except Exception as exc:  # a message's own validation: still only WireFormatError
            _fail(path, f"invalid {tp.__name__}: {type(exc).__name__}: {exc}")
    _fail(path, f"unsupported field type {tp!r}")


def decode(data: bytes, expected: type[T] | tuple[type, ...] | None = None,
           max_size: int = MAX_MESSAGE_BYTES) -> T:
    """Parse and validate ``data``. ``expected`` restricts the message type(s)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError("expected bytes")
    size = data.nbytes if isinstance(data, memoryview) else len(data)  # a typed view counts items, not bytes
    if size > max_size:
        raise WireFormatError(f"message of {size} bytes exceeds the limit of {max_size}")
    data = bytes(data)
    msg, obj, name = _parse(data, expected)
    # Canonical form: msgpack admits several encodings of one value (an int in
    # a wider format than needed, a float32, a long string header, True for
    # 1 in the envelope). Only the one ``encode`` produces is accepted, so that
    # equal messages are equal bytes (signatures, hashes and replay checks
    # over the bytes cannot be sidestepped by a re-encoding).
    # Two steps give encode(msg) == data: the bytes are msgpack's canonical
    # packing of what it parsed, and the message converts back to exactly that
    # parse (types included), so a message class whose validation normalised a
    # value could not make two byte strings decode to equal messages.
    if _canonical_end(memoryview(data), 0, obj) != len(data):
        raise WireFormatError(f"{name}: non-canonical encoding")
    try:
        plain = _to_plain(msg, type(msg))
    except Exception:
        _fail(name, "message does not re-encode")
    if not _same_plain(plain, obj[3]):
        raise WireFormatError(f"{name}: the message does not re-encode to these bytes")
    return typing.cast(T, msg)


def _same_plain(ours: Any, parsed: Any) -> bool:
    """``ours`` (from :func:`_to_plain`) equals ``parsed`` (from msgpack), with
    exact types: True is not 1, 1.0 is not 1; a byte view equals the bytes it
    shows. Long byte strings compare by content (memcmp)."""
    if isinstance(ours, memoryview):  # bytes(view) == parsed is a copy and a memcmp; view == bytes is per item
        return type(parsed) is bytes and ours.nbytes == len(parsed) and bytes(ours) == parsed
    if type(ours) is not type(parsed):
        return False
    if type(ours) is list:
        if len(ours) != len(parsed):
            return False
        if ours and set(map(type, ours)) == {int} == set(map(type, parsed)):  # ints: one C-level compare
            return ours == parsed
        return all(_same_plain(a, b) for a, b in zip(ours, parsed))
    if type(ours) is float:  # bit for bit: NaN payloads, -0.0
        return struct.pack(">d", ours) == struct.pack(">d", parsed)
    return bool(ours == parsed)


def _parse(data: bytes, expected: type[T] | tuple[type, ...] | None) -> tuple[Any, Any, str]:
    """The message in ``data`` (bytes, size already checked) and msgpack's
    parse of it, schema-checked but not yet checked for canonical form."""
    try:
        # unpackb sizes its own limits from len(data), already bounded by max_size.
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireFormatError(f"undecodable message ({type(exc).__name__})") from None
    if not (isinstance(obj, list) and len(obj) == 4):
        raise WireFormatError("not a secagg message envelope")
    magic, version, name, body = obj
    if type(magic) is not type(MAGIC) or magic != MAGIC:
        raise WireFormatError("not a secagg message envelope")
    if type(version) is not int or version != WIRE_VERSION:
        raise WireFormatError(f"unsupported wire version {version!r}")
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None or getattr(cls, "__wire_name__", None) != name:
        raise WireFormatError(f"unknown message type {name!r}")
    if expected is not None:
        allowed = expected if isinstance(expected, tuple) else (expected,)
        if cls not in allowed:
            raise WireFormatError(f"unexpected message type {name!r}")
    return _from_plain(body, cls, {}, name), obj, name


_BIG = 1024  # byte strings at least this long: their header is checked, their body is not re-packed


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    return b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdd" + n.to_bytes(4, "big")


def _canonical_end(data: memoryview, pos: int, obj: Any) -> int:
    """Where the canonical packing of ``obj`` (the value msgpack parsed from
    ``data`` at ``pos``) ends, or :class:`WireFormatError` if ``data`` holds
    any other packing of it there.

    This is ``packb(obj) == data[pos:end]`` without re-packing large byte
    strings: once the bytes before a long byte string are canonical and its
    header is the canonical (shortest) one, the parser read its body from
    exactly those positions, so the body is equal by construction. Everything
    else (ints, floats, strings, short bytes, lists without long bytes inside)
    is re-packed with msgpack and compared. Decoding a masked input of
    10^5 entries thus costs one parse instead of a parse plus a re-encoding."""
    if type(obj) is bytes and len(obj) >= _BIG:
        n = len(obj)
        head = b"\xc5" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xc6" + n.to_bytes(4, "big")
        end = pos + len(head)
        if data[pos:end] != head:
            raise WireFormatError("non-canonical encoding")
        return end + n
    if type(obj) is list and any(type(x) is list or (type(x) is bytes and len(x) >= _BIG) for x in obj):
        head = _array_header(len(obj))
        end = pos + len(head)
        if data[pos:end] != head:
            raise WireFormatError("non-canonical encoding")
        for x in obj:
            end = _canonical_end(data, end, x)
        return end
    packed = msgpack.packb(obj, use_bin_type=True)
    end = pos + len(packed)
    if data[pos:end] != packed:
        raise WireFormatError("non-canonical encoding")
    return end
