"""How protocol messages and model updates travel in Flower records.

Every secure-aggregation message, both directions, carries one
``ConfigRecord`` under the key :data:`RECORD_KEY` (``"secagg"``) with the
adapter version, the ``stage`` (the protocol stage's name,
:class:`~secagg.protocols.stages.Stage`: ``advertise_keys``, ``share_keys``,
``masked_input``, ``consistency_check``, ``unmasking``; or ``identify``, the
malicious-server mode's key exchange before a round) and a ``payload``: the
canonical wire encoding of one protocol message (:mod:`secagg.encoding.wire`:
msgpack, schema-checked, no pickle), exactly the bytes the round drivers
(:mod:`secagg.drivers`) hand out and take in. Flower allows ``bytes`` values
in a ``ConfigRecord``, so no base64 and no ArrayRecord tricks are needed. The
first message of a round (``advertise_keys``; its payload is the round's
:class:`MaskingParams`) additionally carries the global model
(``ArrayRecord``) and the train config, like a plain FedAvg ``train``
message, plus the node's client id in the protocol, the round number, the
record keys and the reply metric that weighs the update.

Model <-> vector: the floating-point arrays of an ``ArrayRecord``, in record
order, flattened and concatenated, form the vector that is aggregated. Arrays
of other dtypes (integer counters such as BatchNorm's ``num_batches_tracked``)
are not aggregated: they never leave the client, and the global model keeps the
server's values (the same policy as :mod:`secagg.torch`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from ..errors import ParameterError, WireFormatError

__all__ = ["RECORD_KEY", "STATE_KEY", "ADAPTER_VERSION", "ModelLayout", "pack", "unpack"]

RECORD_KEY = "secagg"
STATE_KEY = "secagg"  # key of the client's ConfigRecord in context.state
ADAPTER_VERSION = 2  # 2: stage names of the drivers, the round's parameters as the first payload


def _is_float(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return False


@dataclass(frozen=True)
class ModelLayout:
    """Which entries of an ``ArrayRecord`` are aggregated, their shapes and dtypes."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    aggregated: tuple[bool, ...]

    @classmethod
    def of(cls, record: ArrayRecord) -> "ModelLayout":
        keys, shapes, dtypes, agg = [], [], [], []
        for key, arr in record.items():
            keys.append(key)
            shapes.append(tuple(int(s) for s in arr.shape))
            dtypes.append(str(arr.dtype))
            agg.append(_is_float(arr.dtype))
        if not any(agg):
            raise ParameterError("the model has no floating-point arrays to aggregate")
        return cls(tuple(keys), tuple(shapes), tuple(dtypes), tuple(agg))

    @property
    def dim(self) -> int:
        return int(sum(int(np.prod(s)) for s, a in zip(self.shapes, self.aggregated) if a))

    def check(self, record: ArrayRecord, what: str) -> None:
        other = ModelLayout.of(record)
        if other != self:
            raise ParameterError(f"{what} does not have the layout of the global model "
                                 f"(keys, shapes and dtypes must match)")

    def to_vector(self, record: ArrayRecord) -> np.ndarray:
        """The aggregated arrays of ``record`` as one float64 vector."""
        self.check(record, "the ArrayRecord")
        parts = [record[k].numpy().astype(np.float64, copy=False).ravel()
                 for k, a in zip(self.keys, self.aggregated) if a]
        return np.concatenate(parts) if parts else np.zeros(0)

    def from_vector(self, vector: np.ndarray, base: ArrayRecord) -> ArrayRecord:
        """An ``ArrayRecord`` with ``vector`` in the aggregated entries and
        ``base``'s values in the others."""
        v = np.asarray(vector, dtype=np.float64).ravel()
        if v.size != self.dim:
            raise ParameterError(f"vector has {v.size} entries; the model has {self.dim}")
        out: dict[str, Array] = {}
        offset = 0
        for key, shape, dtype, agg in zip(self.keys, self.shapes, self.dtypes, self.aggregated):
            if agg:
                size = int(np.prod(shape))
                out[key] = Array(v[offset:offset + size].reshape(shape).astype(dtype))
                offset += size
            else:
                out[key] = Array(base[key].numpy())
        return ArrayRecord(out)


def pack(stage: str, payload: "bytes | memoryview", **extra: int | float | str | bytes | bool) -> RecordDict:
    """A RecordDict carrying one protocol message (a Flower record holds
    ``bytes``: a view of a message laid out in place is copied here)."""
    data = bytes(payload) if isinstance(payload, memoryview) else payload
    return RecordDict({RECORD_KEY: ConfigRecord({"version": ADAPTER_VERSION, "stage": stage,
                                                 "payload": data, **extra})})


def bytes_field(rec: ConfigRecord, key: str) -> bytes:
    """``rec[key]`` if it is a byte string; :class:`WireFormatError` if it is
    missing or of another type."""
    value = rec.get(key)
    if not isinstance(value, bytes):
        raise WireFormatError(f"secagg field {key!r} must be a byte string")
    return value


def unpack(content: RecordDict) -> ConfigRecord:
    """The secure-aggregation record of a message; :class:`WireFormatError` if
    it is missing or malformed."""
    records = content.config_records
    if RECORD_KEY not in records:
        raise WireFormatError(f"message has no {RECORD_KEY!r} ConfigRecord")
    rec = records[RECORD_KEY]
    if rec.get("version") != ADAPTER_VERSION:
        raise WireFormatError(f"unsupported secagg Flower adapter version {rec.get('version')!r}")
    if not isinstance(rec.get("stage"), str) or not isinstance(rec.get("payload"), bytes):
        raise WireFormatError("secagg record needs a 'stage' string and a 'payload' byte string")
    return rec
