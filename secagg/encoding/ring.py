"""Vectors in the ring Z_{2^k}, k in {32, 64}, and the choice of k.

Signed integers map to the ring by two's complement (numpy's wrapping cast);
a sum maps back *centered*, to ``[-2^(k-1), 2^(k-1))``. This is exact as long as
the true sum lies in that interval, which :func:`choose_ring_bits` guarantees
before a round starts (security invariant 5): with every quantized entry of
magnitude at most ``B`` and ``n`` clients, the sum has magnitude at most ``n*B``,
and we require ``n*B <= 2^(k-1) - 1``. Parameters that could wrap are refused.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from .fixed_point import FixedPoint

__all__ = ["RING_BITS", "dtype_for", "to_ring", "from_ring", "choose_ring_bits", "max_clients"]

RING_BITS = (32, 64)


def dtype_for(bits: int) -> type[np.unsignedinteger]:
    if bits == 32:
        return np.uint32
    if bits == 64:
        return np.uint64
    raise ParameterError(f"ring bits must be one of {RING_BITS}, got {bits!r}")


def to_ring(values: np.ndarray, bits: int) -> np.ndarray:
    """Signed int64 -> Z_{2^bits} (two's complement)."""
    dtype = dtype_for(bits)
    raw = np.asarray(values)
    # Integers only: a float vector here is a caller bug, and the int64 cast
    # would silently truncate it (1.7 -> 1) or wrap it (uint64 >= 2^63).
    if raw.size == 0:
        raw = raw.astype(np.int64)  # np.asarray([]) is float64
    elif raw.dtype.kind not in "iu":
        raise ParameterError(f"expected integers, got dtype {raw.dtype}")
    elif raw.dtype.kind == "u" and int(raw.max()) > np.iinfo(np.int64).max:
        raise ParameterError("value does not fit in int64")
    v = raw.astype(np.int64)
    bound = 1 << (bits - 1)
    if bits < 64 and v.size and (int(v.max()) >= bound or int(v.min()) < -bound):
        raise ParameterError(f"value does not fit in a {bits}-bit ring")
    return v.astype(dtype)


def from_ring(values: np.ndarray, bits: int) -> np.ndarray:
    """Z_{2^bits} -> the centered representative as int64."""
    dtype = dtype_for(bits)
    v = np.asarray(values)
    if v.dtype != dtype:
        raise ParameterError(f"expected a {dtype.__name__} ring vector, got {v.dtype}")
    return v.view(np.int32 if bits == 32 else np.int64).astype(np.int64)


def max_clients(encoding: FixedPoint, bits: int) -> int:
    """Most clients whose sum cannot wrap in a ``bits``-bit ring."""
    return ((1 << (bits - 1)) - 1) // encoding.max_entry_bound()


def choose_ring_bits(n_clients: int, encoding: FixedPoint, bits: int | None = None) -> int:
    """The smallest ring (32, then 64 bits) in which the sum of ``n_clients``
    encoded inputs cannot wrap; or ``bits`` if given and safe. Raises
    :class:`ParameterError` when no ring is safe."""
    if n_clients < 1:
        raise ParameterError("need at least one client")
    candidates = RING_BITS if bits is None else (bits,)
    for k in candidates:
        dtype_for(k)
        if n_clients <= max_clients(encoding, k):
            return k
    worst = n_clients * encoding.max_entry_bound()
    raise ParameterError(
        f"the sum of {n_clients} inputs could reach {worst}, which wraps a "
        f"{candidates[-1]}-bit ring; lower frac_bits, clip or max_weight, or use fewer clients")
