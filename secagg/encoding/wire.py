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
import operator
import struct
import types
import typing
from typing import Any, TypeVar

import msgpack
import numpy as np

from ..errors import WireFormatError

__all__ = ["message", "encode", "decode", "WIRE_VERSION", "MAX_MESSAGE_BYTES", "registered", "Encoded", "pieces",
           "attach_encoding", "encoded"]

WIRE_VERSION = 1
MAGIC = "secagg"
MAX_MESSAGE_BYTES = 1 << 30
_INT64 = (-(1 << 63), (1 << 64) - 1)
_ALLOWED_DTYPES = {"uint8", "uint32", "uint64", "int32", "int64", "float32", "float64"}

_REGISTRY: dict[str, type] = {}
# the canonical opening of each registered type's messages (envelope, version,
# type name) -> (class, name): decode's lookup for the common case
_HEADS: dict[bytes, tuple[type, str]] = {}
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
        _HEADS[_ENVELOPE + _int_bytes(WIRE_VERSION) + _str_bytes(name)] = (cls, name)
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

_S_U16, _S_U32, _S_U64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_S_I8, _S_I16, _S_I32, _S_I64 = struct.Struct(">b"), struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
_S_F64 = struct.Struct(">d")


def _int_bytes(v: int) -> bytes:
    """msgpack's packing of an int (the shortest form; non-negative values
    always in the unsigned formats)."""
    if 0 <= v < 0x80:
        return _FIXINT[v]
    if -32 <= v < 0:
        return _FIXINT_NEG[v + 32]
    if v > 0:
        if v < 0x100:
            return b"\xcc" + bytes((v,))
        if v < 0x10000:
            return b"\xcd" + _S_U16.pack(v)
        if v < 1 << 32:
            return b"\xce" + _S_U32.pack(v)
        if v < 1 << 64:
            return b"\xcf" + _S_U64.pack(v)
        raise OverflowError("Integer value out of range")
    if v >= -0x80:
        return b"\xd0" + _S_I8.pack(v)
    if v >= -0x8000:
        return b"\xd1" + _S_I16.pack(v)
    if v >= -(1 << 31):
        return b"\xd2" + _S_I32.pack(v)
    if v >= -(1 << 63):
        return b"\xd3" + _S_I64.pack(v)
    raise OverflowError("Integer value out of range")


_FIXINT = [bytes((i,)) for i in range(0x80)]
_FIXINT_NEG = [bytes((0x100 + i,)) for i in range(-32, 0)]


def _array_header(n: int) -> bytes:
    if n < 16:
        return _FIXARRAY[n]
    return b"\xdc" + _S_U16.pack(n) if n < 1 << 16 else b"\xdd" + _S_U32.pack(n)


_FIXARRAY = [bytes((0x90 | i,)) for i in range(16)]


def _bin_header(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + bytes((n,))
    return b"\xc5" + _S_U16.pack(n) if n < 1 << 16 else b"\xc6" + _S_U32.pack(n)


def _str_bytes(s: str) -> bytes:
    b = s.encode("utf-8")
    n = len(b)
    if n < 32:
        return bytes((0xa0 | n,)) + b
    if n < 0x100:
        return b"\xd9" + bytes((n,)) + b
    return (b"\xda" + _S_U16.pack(n) if n < 1 << 16 else b"\xdb" + _S_U32.pack(n)) + b


def _array_view(value: Any) -> tuple[str, memoryview]:
    arr = np.asarray(value)
    name = arr.dtype.name  # "uint32" whatever the byte order
    if arr.ndim != 1:
        raise ValueError(f"wire arrays are 1-D, got shape {arr.shape}")
    if name not in _ALLOWED_DTYPES:
        raise ValueError(f"dtype {name} cannot go on the wire; allowed: {sorted(_ALLOWED_DTYPES)}")
    # Little-endian on the wire, whatever the host: the decoder reads "<".
    return name, np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).data.cast("B")


def _emit(value: Any, tp: Any, out: list[Any]) -> None:
    """Append the canonical msgpack packing of ``value`` (of field type
    ``tp``) to ``out`` as byte strings and buffer views; long payloads
    (arrays, byte strings) are appended as views, not copied."""
    kind = _kind(tp)
    k = kind[0]
    if k == "int":
        if type(value) is bool or not isinstance(value, int):
            out.append(msgpack.packb(value, use_bin_type=True))  # what msgpack would have written
        else:
            out.append(_int_bytes(value))
    elif k == "bytes":
        if isinstance(value, memoryview):
            value = value.cast("B") if value.format != "B" or value.ndim != 1 else value
            n = value.nbytes
        elif isinstance(value, (bytes, bytearray)):
            n = len(value)
        else:
            value = bytes(value)
            n = len(value)
        out.append(_bin_header(n))
        out.append(value)
    elif k == "array":
        name, view = _array_view(value)
        out.append(b"\x92" + _str_bytes(name) + _bin_header(view.nbytes))
        out.append(view)
    elif k == "message":
        _writer(kind[1])(value, out)
    elif k == "optional":
        if value is None:
            out.append(b"\xc0")
        else:
            _emit(value, kind[1], out)
    elif k == "tuple":
        inner = kind[1]
        if _kind(inner)[0] in ("int", "float", "str", "bool"):  # plain values: one msgpack call
            out.append(msgpack.packb(list(value), use_bin_type=True))
        else:
            items = list(value)
            out.append(_array_header(len(items)))
            for v in items:
                _emit(v, inner, out)
    elif k == "dict":
        kt, vt = kind[1], kind[2]
        items = sorted(value.items())
        out.append(_array_header(len(items)))
        for key, v in items:
            out.append(b"\x92")
            _emit(key, kt, out)
            _emit(v, vt, out)
    elif k == "enum":
        out.append(msgpack.packb(value.value, use_bin_type=True))
    else:  # float, str, bool and anything msgpack packs as it is
        out.append(msgpack.packb(value, use_bin_type=True))


# the head of a wire array ([dtype, bytes] pair and the dtype's packed name)
# per dtype that travels as it is (native little-endian)
_ARRAY_HEADS = {np.dtype(d): b"\x92" + _str_bytes(d) for d in sorted(_ALLOWED_DTYPES)
                if np.dtype(d).newbyteorder("<") == np.dtype(d)}


def _emit_array(value: Any, tp: Any, out: list[Any]) -> None:
    """An array field: a 1-D contiguous array of a dtype that travels as it
    is goes out as a view of its memory; anything else through :func:`_emit`."""
    head = _ARRAY_HEADS.get(value.dtype) if type(value) is np.ndarray and value.ndim == 1 else None
    if head is None or not value.flags.c_contiguous:
        _emit(value, tp, out)
        return
    view = value.data.cast("B")
    out.append(head + _bin_header(view.nbytes))
    out.append(view)


_WRITERS: dict[type, typing.Callable[[Any, list[Any]], None]] = {}


def _writer(cls: type) -> typing.Callable[[Any, list[Any]], None]:
    """The writer of one message class: its field-count header, then each
    field as :func:`_emit` writes it, with the common types (an exact int,
    bytes, an array) written inline. Like the reader (:func:`_compile_reader`)
    it is straight-line Python written once per class from the schema."""
    write = _WRITERS.get(cls)
    if write is not None:
        return write
    fields = _kind(cls)[2]
    ns: dict[str, Any] = {"_emit": _emit, "_emit_array": _emit_array, "_int_bytes": _int_bytes,
                          "_bin_header": _bin_header, "HEAD": _array_header(len(fields))}
    src = ["def write(msg, out):", "    out.append(HEAD)"]
    for i, (name, ftp, _) in enumerate(fields):
        ns[f"T{i}"] = ftp
        k = _kind(ftp)[0]
        src.append(f"    v = msg.{name}")
        if k == "int":
            src += ["    if type(v) is int:", "        out.append(_int_bytes(v))",
                    "    else:", f"        _emit(v, T{i}, out)"]
        elif k == "bytes":
            src += ["    if type(v) is bytes:", "        out.append(_bin_header(len(v)))", "        out.append(v)",
                    "    else:", f"        _emit(v, T{i}, out)"]
        elif k == "array":
            src.append(f"    _emit_array(v, T{i}, out)")
        else:
            src.append(f"    _emit(v, T{i}, out)")
    exec("\n".join(src), ns)  # noqa: S102 (source written above from the class's schema)
    write = _WRITERS[cls] = ns["write"]
    return write


_KINDS: dict[Any, tuple[Any, ...]] = {}


def _kind(tp: Any) -> tuple[Any, ...]:
    """How a field type is encoded and decoded (cached per type)."""
    try:
        return _KINDS[tp]
    except (KeyError, TypeError):
        pass
    origin = typing.get_origin(tp)
    if tp is bool:
        kind: tuple[Any, ...] = ("bool",)
    elif tp is int:
        kind = ("int",)
    elif tp is float:
        kind = ("float",)
    elif tp is str:
        kind = ("str",)
    elif tp is bytes:
        kind = ("bytes",)
    elif tp is np.ndarray:
        kind = ("array",)
    elif origin in (typing.Union, types.UnionType):
        kind = ("optional", [a for a in typing.get_args(tp) if a is not type(None)][0])
    elif origin is tuple:
        kind = ("tuple", typing.get_args(tp)[0])
    elif origin is dict:
        kind = ("dict", *typing.get_args(tp))
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        kind = ("enum", tp)
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        kind = ("message", tp, [(f.name, hints[f.name], f.metadata) for f in dataclasses.fields(tp)])
    else:
        kind = ("other",)
    try:
        _KINDS[tp] = kind
    except TypeError:  # pragma: no cover (unhashable annotation)
        pass
    return kind


def encode(msg: Any) -> bytes:
    """Canonical bytes of a registered message, written into one buffer: the
    headers are built first, long payloads (arrays, byte strings) are copied
    once, straight into the result."""
    return b"".join(pieces(msg))


def pieces(msg: Any) -> list[Any]:
    """The canonical encoding of a registered message as the pieces
    :func:`encode` joins, in order: header byte strings, and each long
    payload (an array's bytes, a byte string field) as a buffer of the
    message's own memory, not copied. ``b"".join(pieces(msg)) ==
    encode(msg)``. A protocol core that lays its messages out in place (one
    buffer for many messages, their payloads written there by array work)
    reads the headers and the payloads' lengths from here."""
    cls = type(msg)
    name = getattr(cls, "__wire_name__", None)
    if name is None:
        raise TypeError(f"{cls.__name__} is not a registered wire message")
    out: list[Any] = [b"\x94\xa6secagg" + _int_bytes(WIRE_VERSION) + _str_bytes(name)]
    _writer(cls)(msg, out)
    return out


#: What a sender hands its transport: the canonical bytes, or a read-only
#: view of them where the message was laid out in place (:func:`encoded`).
Encoded = typing.Union[bytes, memoryview]

_ENCODING_ATTR = "_wire_encoding"


def attach_encoding(msg: Any, data: memoryview) -> None:
    """Record that ``data`` (a read-only byte view) already holds the
    canonical encoding of ``msg``, laid out in place by the protocol core
    that made both (one buffer for many messages): :func:`encoded` then
    returns it without copying. The caller guarantees ``bytes(data) ==
    encode(msg)`` (``encode`` itself still builds the bytes from the fields,
    which is how tests check it)."""
    if type(getattr(type(msg), "__wire_name__", None)) is not str:
        raise TypeError(f"{type(msg).__name__} is not a registered wire message")
    if not isinstance(data, memoryview) or not data.readonly or data.format != "B" or data.ndim != 1:
        raise TypeError("an attached encoding must be a read-only 1-D byte memoryview")
    if bytes(data[:8]) != _ENVELOPE:
        raise ValueError("an attached encoding must open with the secagg envelope")
    try:
        object.__setattr__(msg, _ENCODING_ATTR, data)
    except AttributeError:  # a class with __slots__ has no room for it
        raise TypeError(f"{type(msg).__name__} cannot carry an attached encoding") from None


def encoded(msg: Any) -> Encoded:
    """What a sender transmits for ``msg``: the encoding attached by
    :func:`attach_encoding` if there is one (no copy), else :func:`encode`."""
    data = getattr(msg, _ENCODING_ATTR, None)
    return data if data is not None else encode(msg)


# ---------------------------------------------------------------- decoding

def _fail(path: str, what: str) -> typing.NoReturn:
    raise WireFormatError(f"{path}: {what}")


_NONCANON = "non-canonical encoding"
_VIEW_MIN = 1024  # "view" byte fields at least this long are views of the input, not copies


def _read_int(buf: Any, pos: int, path: str) -> tuple[int, int]:
    """An integer at ``pos`` in its canonical (shortest) msgpack form."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    if b >= 0xe0:
        return b - 0x100, pos + 1
    if b == 0xcc:
        v = buf[pos + 1]
        if v < 0x80:
            _fail(path, _NONCANON)
        return v, pos + 2
    if b == 0xcd:
        v = _S_U16.unpack_from(buf, pos + 1)[0]
        if v < 0x100:
            _fail(path, _NONCANON)
        return v, pos + 3
    if b == 0xce:
        v = _S_U32.unpack_from(buf, pos + 1)[0]
        if v < 0x10000:
            _fail(path, _NONCANON)
        return v, pos + 5
    if b == 0xcf:
        v = _S_U64.unpack_from(buf, pos + 1)[0]
        if v < 1 << 32:
            _fail(path, _NONCANON)
        return v, pos + 9
    if b == 0xd0:
        v = _S_I8.unpack_from(buf, pos + 1)[0]
        if v >= -32:
            _fail(path, _NONCANON)
        return v, pos + 2
    if b == 0xd1:
        v = _S_I16.unpack_from(buf, pos + 1)[0]
        if v >= -0x80:
            _fail(path, _NONCANON)
        return v, pos + 3
    if b == 0xd2:
        v = _S_I32.unpack_from(buf, pos + 1)[0]
        if v >= -0x8000:
            _fail(path, _NONCANON)
        return v, pos + 5
    if b == 0xd3:
        v = _S_I64.unpack_from(buf, pos + 1)[0]
        if v >= -(1 << 31):
            _fail(path, _NONCANON)
        return v, pos + 9
    _fail(path, "expected an integer")


def _read_array_header(buf: Any, pos: int, path: str, what: str = "expected a list") -> tuple[int, int]:
    b = buf[pos]
    if 0x90 <= b <= 0x9f:
        return b & 0x0f, pos + 1
    if b == 0xdc:
        n = _S_U16.unpack_from(buf, pos + 1)[0]
        if n < 16:
            _fail(path, _NONCANON)
        return n, pos + 3
    if b == 0xdd:
        n = _S_U32.unpack_from(buf, pos + 1)[0]
        if n < 1 << 16:
            _fail(path, _NONCANON)
        return n, pos + 5
    _fail(path, what)


def _read_bin_header(buf: Any, pos: int, path: str) -> tuple[int, int]:
    b = buf[pos]
    if b == 0xc4:
        return buf[pos + 1], pos + 2
    if b == 0xc5:
        n = _S_U16.unpack_from(buf, pos + 1)[0]
        if n < 0x100:
            _fail(path, _NONCANON)
        return n, pos + 3
    if b == 0xc6:
        n = _S_U32.unpack_from(buf, pos + 1)[0]
        if n < 1 << 16:
            _fail(path, _NONCANON)
        return n, pos + 5
    _fail(path, "expected bytes")


def _read_str(buf: Any, pos: int, path: str) -> tuple[str, int]:
    b = buf[pos]
    if 0xa0 <= b <= 0xbf:
        n, pos = b & 0x1f, pos + 1
    elif b == 0xd9:
        n = buf[pos + 1]
        if n < 32:
            _fail(path, _NONCANON)
        pos += 2
    elif b == 0xda:
        n = _S_U16.unpack_from(buf, pos + 1)[0]
        if n < 0x100:
            _fail(path, _NONCANON)
        pos += 3
    elif b == 0xdb:
        n = _S_U32.unpack_from(buf, pos + 1)[0]
        if n < 1 << 16:
            _fail(path, _NONCANON)
        pos += 5
    else:
        _fail(path, "expected a string")
    end = pos + n
    if end > len(buf):
        raise IndexError
    try:
        return str(buf[pos:end], "utf-8"), end
    except UnicodeDecodeError:
        _fail(path, "invalid UTF-8")


def _read_float(buf: Any, pos: int, path: str) -> tuple[float, int]:
    if buf[pos] != 0xcb:  # a float32 (0xca) is not the canonical form of a Python float
        _fail(path, "expected a float" if buf[pos] != 0xca else _NONCANON)
    return _S_F64.unpack_from(buf, pos + 1)[0], pos + 9


def _read_value(buf: Any, pos: int, path: str) -> tuple[Any, int]:
    """Any scalar a field may hold (for enum values): int, str, float, bool, nil."""
    b = buf[pos]
    if b == 0xc0:
        return None, pos + 1
    if b in (0xc2, 0xc3):
        return b == 0xc3, pos + 1
    if b == 0xcb or b == 0xca:
        return _read_float(buf, pos, path)
    if 0xa0 <= b <= 0xbf or 0xd9 <= b <= 0xdb:
        return _read_str(buf, pos, path)
    if b < 0x80 or b >= 0xe0 or 0xcc <= b <= 0xd3:
        return _read_int(buf, pos, path)
    _fail(path, "unexpected value")


def _plain_list(buf: Any, pos: int, path: str, count: int, item: Any) -> tuple[list[Any], int]:
    """``count`` plain values (ints, floats, strings or bools) from ``pos``:
    msgpack parses them and packs them back, and the packing must be the
    bytes parsed (canonical form)."""
    if not count:
        return [], pos
    bound = {"int": 9, "float": 9, "bool": 1}.get(item)
    end_max = len(buf) if bound is None else min(len(buf), pos + bound * count)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True,
                                max_buffer_size=max(end_max - pos, 1))
    unpacker.feed(buf[pos:end_max])
    try:
        items = [unpacker.unpack() for _ in range(count)]
    except msgpack.OutOfData:
        raise IndexError from None
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        _fail(path, f"undecodable ({type(exc).__name__})")
    end = pos + unpacker.tell()
    packed = b"".join(msgpack.packb(v, use_bin_type=True) for v in items) if item != "int" else \
        msgpack.packb(items, use_bin_type=True)[len(_array_header(count)):]
    if buf[pos:end] != packed:
        _fail(path, _NONCANON)
    return items, end


def _read(buf: Any, view: memoryview, pos: int, tp: Any, meta: typing.Mapping[str, Any],
          path: str) -> tuple[Any, int]:
    """The value of field type ``tp`` at ``pos``, checked against its schema
    and its canonical packing, and where it ends."""
    kind = _kind(tp)
    k = kind[0]
    if k == "int":
        if buf[pos] in (0xc2, 0xc3):
            _fail(path, "expected an integer")
        v, pos = _read_int(buf, pos, path)
        lo, hi = meta.get("min", _INT64[0]), meta.get("max", _INT64[1])
        if not lo <= v <= hi:
            _fail(path, f"integer {v} outside [{lo}, {hi}]")
        return v, pos
    if k == "bytes":
        n, pos = _read_bin_header(buf, pos, path)
        end = pos + n
        if end > len(buf):
            raise IndexError
        if "len" in meta and n != meta["len"]:
            _fail(path, f"expected {meta['len']} bytes, got {n}")
        if n > meta.get("max_len", MAX_MESSAGE_BYTES):
            _fail(path, "byte string too long")
        if meta.get("view") and n >= _VIEW_MIN:
            return view[pos:end], end
        return bytes(view[pos:end]), end
    if k == "array":
        if buf[pos] != 0x92:
            _fail(path, "expected an array [dtype, bytes]")
        dtype_name, pos = _read_str(buf, pos + 1, path)
        n, pos = _read_bin_header(buf, pos, path)
        end = pos + n
        if end > len(buf):
            raise IndexError
        if dtype_name not in _ALLOWED_DTYPES:
            _fail(path, f"dtype {dtype_name!r} not allowed")
        allowed = meta.get("dtypes")
        if allowed is not None and dtype_name not in allowed:
            _fail(path, f"dtype {dtype_name} not one of {sorted(allowed)}")
        dt = _WIRE_DTYPES[dtype_name]
        if n % dt.itemsize:
            _fail(path, "array byte length is not a multiple of the item size")
        if "max_size" in meta and n // dt.itemsize > meta["max_size"]:
            _fail(path, "array too long")
        arr = np.frombuffer(view[pos:end], dtype=dt)  # a read-only view of the input
        if not dt.isnative:  # pragma: no cover (big-endian hosts)
            arr = arr.astype(dtype_name)
        return arr, end
    if k == "message":
        return _read_message(buf, view, pos, kind[1], path)
    if k == "optional":
        if buf[pos] == 0xc0:
            return None, pos + 1
        return _read(buf, view, pos, kind[1], meta, path)
    if k == "tuple":
        inner = kind[1]
        count, pos = _read_array_header(buf, pos, path)
        if count > meta.get("max_items", 1 << 20):
            _fail(path, "too many items")
        item_meta = meta.get("item", {})
        ik = _kind(inner)[0]
        if ik in ("int", "float", "str", "bool"):
            items, end = _plain_list(buf, pos, path, count, ik)
            if ik == "int" and set(map(type, items)) == {int}:  # all exact ints: one range check
                lo, hi = item_meta.get("min", _INT64[0]), item_meta.get("max", _INT64[1])
                if lo <= min(items) and max(items) <= hi:
                    return tuple(items), end
            return tuple(_from_plain(v, inner, item_meta, f"{path}[{i}]") for i, v in enumerate(items)), end
        out_items = []
        for i in range(count):
            v, pos = _read(buf, view, pos, inner, item_meta, f"{path}[{i}]")
            out_items.append(v)
        return tuple(out_items), pos
    if k == "dict":
        kt, vt = kind[1], kind[2]
        count, pos = _read_array_header(buf, pos, path, "expected a list of pairs")
        if count > meta.get("max_items", 1 << 20):
            _fail(path, "too many items")
        kmeta, vmeta = meta.get("key", {}), meta.get("value", {})
        out_dict: dict[Any, Any] = {}
        prev = None
        for i in range(count):
            if buf[pos] != 0x92:
                _fail(f"{path}[{i}]", "expected a [key, value] pair")
            key, pos = _read(buf, view, pos + 1, kt, kmeta, f"{path}[{i}].key")
            if prev is not None and not prev < key:
                _fail(f"{path}[{i}]", "keys not strictly increasing (duplicate or non-canonical)")
            prev = key
            out_dict[key], pos = _read(buf, view, pos, vt, vmeta, f"{path}[{key}]")
        return out_dict, pos
    if k == "bool":
        b = buf[pos]
        if b not in (0xc2, 0xc3):
            _fail(path, "expected a bool")
        return b == 0xc3, pos + 1
    if k == "float":
        return _read_float(buf, pos, path)
    if k == "str":
        s, end = _read_str(buf, pos, path)
        if len(s) > meta.get("max_len", 1 << 16):
            _fail(path, "string too long")
        return s, end
    if k == "enum":
        raw, end = _read_value(buf, pos, path)
        return _from_plain(raw, tp, meta, path), end
    _fail(path, f"unsupported field type {tp!r}")


_Reader = typing.Callable[[Any, memoryview, int, str], tuple[Any, int]]
_READERS: dict[type, _Reader] = {}


def _reader(cls: type) -> _Reader:
    """The reader of one message class (built once per class): its fields
    with a fast-path code (1: a byte string of fixed length below 256, 2: an
    integer with a range, 3: an array, 4: a ``view`` byte string) and whether
    they can be passed by position, written out by :func:`_compile_reader`.
    A field whose bytes take no fast path is read by the general
    :func:`_read` (which also gives every error)."""
    read = _READERS.get(cls)
    if read is None:
        rows = []
        for name, ftp, meta in _kind(cls)[2]:
            k = _kind(ftp)[0]
            if k == "bytes" and "len" in meta and meta["len"] < 0x100 and not meta.get("view"):
                rows.append((name, ftp, meta, 1, meta["len"]))
            elif k == "int":
                rows.append((name, ftp, meta, 2, (meta.get("min", _INT64[0]), meta.get("max", _INT64[1]))))
            elif k == "array":  # the dtypes this field takes, by their packed names
                names = meta.get("dtypes", _ALLOWED_DTYPES)
                kinds = tuple((b"\x92" + _str_bytes(d), _WIRE_DTYPES[d], _WIRE_DTYPES[d].itemsize)
                              for d in sorted(names) if d in _ALLOWED_DTYPES and _WIRE_DTYPES[d].isnative)
                rows.append((name, ftp, meta, 3, (kinds, meta.get("max_size"))))
            elif k == "bytes" and meta.get("view") and "len" not in meta:
                rows.append((name, ftp, meta, 4, meta.get("max_len", MAX_MESSAGE_BYTES)))
            else:
                rows.append((name, ftp, meta, 0, None))
        positional = all(f.init and f.kw_only is not True for f in dataclasses.fields(cls))
        names = tuple(r[0] for r in rows)
        getter = operator.attrgetter(*names) if names else (lambda msg: ())
        held = getter if len(names) != 1 else (lambda msg: (getter(msg),))
        read = _READERS[cls] = _compile_reader(cls, rows, positional, held)
    return read


def _fast_array(buf: Any, view: memoryview, pos: int, arg: Any) -> Any:
    """Fast path 3: ``[fixstr dtype name, bin8/16/32 payload]`` with the
    shortest bin header and a dtype the field takes, as a read-only view of
    the input; None for anything else (the general :func:`_read` then
    decides). ``arg``: the field's ``(opening, dtype, itemsize)`` per dtype
    (opening = the pair's header and the packed name) and its ``max_size``."""
    kinds, max_size = arg
    if type(buf) is bytes:
        for opening, dt, size in kinds:
            if buf.startswith(opening, pos):
                break
        else:
            return None
    else:
        for opening, dt, size in kinds:
            if buf[pos:pos + len(opening)] == opening:
                break
        else:
            return None
    q = pos + len(opening)
    h = buf[q]
    if h == 0xc4:
        n, q = buf[q + 1], q + 2
    elif h == 0xc5:
        n, q = (buf[q + 1] << 8) | buf[q + 2], q + 3
        if n < 0x100:
            return None
    elif h == 0xc6:
        n, q = _S_U32.unpack_from(buf, q + 1)[0], q + 5
        if n < 0x10000:
            return None
    else:
        return None
    count = n // size
    if n % size or (max_size is not None and count > max_size):
        return None
    end = q + n
    if end > len(buf):
        raise IndexError
    # a read-only view of the input, as np.frombuffer(view[q:end], dt). Over
    # bytes, the array constructor does the same at a third of the cost (its
    # base is then the immutable bytes); over anything else its base would be
    # the writable object under the read-only view, so frombuffer keeps the view.
    if type(buf) is bytes:
        return np.ndarray((count,), dt, view, q), end
    return np.frombuffer(view, dtype=dt, count=count, offset=q), end


def _fast_view(buf: Any, view: memoryview, pos: int, max_len: int) -> Any:
    """Fast path 4: a ``view`` byte string of at least ``_VIEW_MIN`` bytes
    with the shortest header (bin16 or bin32), as a view of the input; None
    for anything else."""
    b = buf[pos]
    if b == 0xc5:
        n, q = (buf[pos + 1] << 8) | buf[pos + 2], pos + 3
        if n < _VIEW_MIN:  # (>= 0x100: the shortest header)
            return None
    elif b == 0xc6:
        n, q = _S_U32.unpack_from(buf, pos + 1)[0], pos + 5
        if n < 0x10000:
            return None
    else:
        return None
    if n > max_len:
        return None
    end = q + n
    if end > len(buf):
        raise IndexError
    return view[q:end], end


def _held_as_parsed(rows: list[Any], values: tuple[Any, ...], held_all: tuple[Any, ...], starts: tuple[int, ...],
                    view: memoryview, path: str) -> None:
    """A message holds what was parsed, so it encodes back to these bytes; a
    class whose validation replaced a value must encode that value back to
    the bytes it was parsed from (``starts``: where each field began, then
    where the message ended)."""
    for i, (name, ftp, _, _, _) in enumerate(rows):
        held = held_all[i]
        if held is not values[i]:
            out: list[Any] = []
            try:
                _emit(held, ftp, out)
            except Exception:
                _fail(path, "message does not re-encode")
            if b"".join(out) != view[starts[i]:starts[i + 1]]:
                _fail(path, "the message does not re-encode to these bytes")


def _dataclass_init_only(cls: type, positional: bool) -> bool:
    """Whether building ``cls`` from its field values only stores them: a
    frozen dataclass's generated ``__init__``, every field passed, no
    ``__post_init__``, instances with a ``__dict__``. Such a message is built
    by filling its ``__dict__``: the same object, without the frozen
    ``__init__``'s per-field ``object.__setattr__``."""
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    params = getattr(cls, "__dataclass_params__", None)
    return (positional and code is not None and code.co_filename == "<string>" and params is not None
            and params.init and not hasattr(cls, "__post_init__") and "__slots__" not in cls.__dict__
            and all(f.init for f in dataclasses.fields(cls)))


def _compile_reader(cls: type, rows: list[Any], positional: bool,
                    held_of: typing.Callable[[Any], tuple[Any, ...]]) -> typing.Callable[..., tuple[Any, int]]:
    """The reader of one message class: the fields read in order, each by its
    fast path (the canonical encoding of its common shape, as :func:`_reader`
    codes it) or else by the general :func:`_read`, which accepts and refuses
    exactly as it would on its own. Written out as straight-line Python per
    class (as ``dataclasses`` writes ``__init__``) from the schema alone:
    nothing of any input goes into the source."""
    count = len(rows)
    ns: dict[str, Any] = {"_read": _read, "_fail": _fail, "_read_array_header": _read_array_header,
                          "WireFormatError": WireFormatError, "_fast_array": _fast_array, "_fast_view": _fast_view,
                          "_held_as_parsed": _held_as_parsed, "_is": operator.is_, "cls": cls, "rows": rows,
                          "held_of": held_of, "_new": object.__new__}
    src = ["def read(buf, view, pos, path):"]
    if count < 16:
        src += [f"    if buf[pos] == {0x90 | count}:", "        pos += 1", "    else:"]
    else:
        src += ["    if True:"]
    src += ["        try:", "            got, pos = _read_array_header(buf, pos, path)",
            "        except WireFormatError:", "            got = -1",
            f"        if got != {count}:", f"            _fail(path, {f'expected {count} fields for {cls.__name__}'!r})"]
    for i, (name, ftp, meta, code, arg) in enumerate(rows):
        ns[f"T{i}"], ns[f"M{i}"], ns[f"A{i}"] = ftp, meta, arg
        general = f"v{i}, pos = _read(buf, view, pos, T{i}, M{i}, path + {'.' + name!r})"
        src.append(f"    s{i} = pos")
        if code == 1:  # the canonical header of a short fixed-length byte string: bin8, its length
            src += [f"    if buf[pos] == 0xc4 and buf[pos + 1] == {arg}:",
                    f"        end = pos + {2 + arg}",
                    f"        v{i} = buf[pos + 2:end]",
                    f"        if len(v{i}) != {arg}:", "            raise IndexError",
                    f"        if type(v{i}) is not bytes:", f"            v{i} = bytes(v{i})",
                    "        pos = end",
                    "    else:", f"        {general}"]
        elif code == 2:  # a positive fixint or a canonical uint16, in range
            lo, hi = arg
            src += ["    b = buf[pos]",
                    f"    if b < 0x80 and {lo} <= b <= {hi}:", f"        v{i} = b", "        pos += 1",
                    f"    elif b == 0xcd and 0x100 <= (v := (buf[pos + 1] << 8) | buf[pos + 2]) and {lo} <= v <= {hi}:",
                    f"        v{i} = v", "        pos += 3",
                    "    else:", f"        {general}"]
        elif code in (3, 4):  # an array / a long "view" byte string: its helper, else the general path
            fast = "_fast_array" if code == 3 else "_fast_view"
            src += [f"    got = {fast}(buf, view, pos, A{i})",
                    "    if got is not None:", f"        v{i}, pos = got",
                    "    else:", f"        {general}"]
        else:
            src.append(f"    {general}")
    vals = ", ".join(f"v{i}" for i in range(count)) + ("," if count == 1 else "")
    if _dataclass_init_only(cls, positional):
        src += ["    msg = _new(cls)", "    d = msg.__dict__"]
        src += [f"    d[{name!r}] = v{i}" for i, (name, *_) in enumerate(rows)]
        src.append("    return msg, pos")  # it holds exactly what was parsed
    else:
        build = f"cls({vals})" if positional else \
            "cls(" + ", ".join(f"{name}=v{i}" for i, (name, *_) in enumerate(rows)) + ")"
        src += ["    try:", f"        msg = {build}",
                "    except Exception as exc:  # a message's own validation: still only WireFormatError",
                f"        _fail(path, f'invalid {cls.__name__}: {{type(exc).__name__}}: {{exc}}')",
                f"    values = ({vals})", "    held_all = held_of(msg)",
                "    if not all(map(_is, held_all, values)):  # (the common case: every value held as parsed)",
                "        _held_as_parsed(rows, values, held_all, (" +
                "".join(f"s{i}, " for i in range(count)) + "pos), view, path)",
                "    return msg, pos"]
    exec("\n".join(src), ns)  # noqa: S102 (source written above from the class's schema)
    return typing.cast(typing.Callable[..., tuple[Any, int]], ns["read"])


def _read_message(buf: Any, view: memoryview, pos: int, cls: type, path: str) -> tuple[Any, int]:
    return _reader(cls)(buf, view, pos, path)


_WIRE_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in _ALLOWED_DTYPES}
_ENVELOPE = b"\x94\xa6secagg"


def decode(data: "bytes | bytearray | memoryview", expected: type[T] | tuple[type, ...] | None = None,
           max_size: int = MAX_MESSAGE_BYTES) -> T:
    """Parse and validate ``data``. ``expected`` restricts the message type(s).

    Arrays, and byte fields marked ``view`` of at least ``_VIEW_MIN`` bytes,
    come back as read-only views of ``data``, not copies (a caller that
    passes a bytearray must not change it while the message is in use).

    Canonical form: msgpack admits several encodings of one value (an int in
    a wider format than needed, a float32, a long string header, True for 1
    in the envelope). Only the one :func:`encode` produces is accepted, so
    that equal messages are equal bytes (signatures, hashes and replay checks
    over the bytes cannot be sidestepped by a re-encoding). The decoder
    checks it structurally while it parses, without re-encoding: every header
    (integer, string, byte string, array) must be the shortest form, floats
    64-bit, the field count and order the schema's, each array a
    ``[dtype, bytes]`` pair, plain lists the packing of what they hold, and
    the message must end exactly at the end of ``data``. A message class
    whose validation replaces a parsed value must encode that value back to
    the same bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError("expected bytes")
    size = data.nbytes if isinstance(data, memoryview) else len(data)  # a typed view counts items, not bytes
    if size > max_size:
        raise WireFormatError(f"message of {size} bytes exceeds the limit of {max_size}")
    if isinstance(data, bytes):
        buf: Any = data
        view = memoryview(data)
    else:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        view = view.toreadonly()
        buf = view
    try:
        if buf[:8] != _ENVELOPE:
            # anything else is no message of ours (a wider header for the envelope is not canonical)
            raise WireFormatError("not a secagg message envelope")
        # the common case, bytes opening with the canonical version and a short
        # registered type name: one lookup of that prefix (the same class the
        # parse below finds for it)
        pos = 10 + (buf[9] & 0x1f) if type(buf) is bytes and size > 10 else 0
        known = _HEADS.get(buf[:pos]) if pos else None
        if known is not None and getattr(known[0], "__wire_name__", None) == known[1]:
            cls, name = known
        else:
            version, pos = _read_value(buf, 8, "envelope")
            if type(version) is not int or version != WIRE_VERSION:
                raise WireFormatError(f"unsupported wire version {version!r}")
            b = buf[pos]
            if not (0xa0 <= b <= 0xbf or 0xd9 <= b <= 0xdb):
                raise WireFormatError("unknown message type")
            name, pos = _read_str(buf, pos, "envelope")
            found = _REGISTRY.get(name)
            if found is None or getattr(found, "__wire_name__", None) != name:
                raise WireFormatError(f"unknown message type {name!r}")
            cls = found
        if expected is not None:
            allowed = expected if isinstance(expected, tuple) else (expected,)
            if cls not in allowed:
                raise WireFormatError(f"unexpected message type {name!r}")
        msg, end = _read_message(buf, view, pos, cls, name)  # a registered class is a dataclass
    except (IndexError, struct.error):
        raise WireFormatError("truncated message") from None
    if end != size:
        raise WireFormatError(f"{name}: {size - end} bytes after the message")
    return typing.cast(T, msg)


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



# ------------------------------------------------ the reference rule (tests)
# A message is accepted iff msgpack parses it, it passes its schema and it
# re-encodes to exactly the input: ``_parse`` and ``_to_plain`` below state that
# rule in the simplest way; the tests check the structural decoder against it.

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
