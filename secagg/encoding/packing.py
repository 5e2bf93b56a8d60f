"""Packing many quantized values into one Paillier plaintext (after BatchCrypt,
Zhang et al., USENIX ATC'20), with the slot layout derived so that a sum over
every client can never carry from one slot into the next
(protocols/paillier/SPEC.md, "Packing").

Layout. Every quantized entry (a weighted value ``q = round(w * clip(x) * 2^f)``
or a weight ``round(w * 2^f)``) satisfies ``|q| <= B`` with
``B = FixedPoint.max_entry_bound()``. Signs are handled by an *offset*: slot
value ``v = q + B`` lies in ``[0, 2B]``. With at most ``N`` clients the slot sum
lies in ``[0, 2NB]``, so a slot of

    s = bit_length(2 * N * B)    bits  (i.e. 2NB <= 2^s - 1)

holds it with no carry. A plaintext packs ``k = floor((key_bits - 1) / s)``
slots, slot ``j`` at bits ``[j*s, (j+1)*s)``; every packed value, and every sum
of at most ``N`` of them, is below ``2^(k*s) <= 2^(key_bits-1) <= n``, so the
Paillier sum (taken mod ``n``) is the integer sum, and the integer sum of packed
values is the packing of the slot sums. After decryption the key holder
subtracts ``n_included * B`` from each slot. Layouts where ``s`` would exceed
62 bits (sums must stay exact in int64) or ``k < 1`` are refused with
:class:`ParameterError`.

Padding slots (past the end of the vector) hold 0; on unpacking they must still
be 0 and every slot sum must be at most ``2 * n_included * B``; anything else
means a ciphertext that was not produced by honest clients (:class:`SlotOverflow`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import AbortReason, ParameterError, RemoteProtocolError
from .fixed_point import FixedPoint

__all__ = ["PackingLayout", "SlotOverflow", "MAX_SLOT_BITS"]

MAX_SLOT_BITS = 62


class SlotOverflow(RemoteProtocolError):
    """A decrypted aggregate whose slots cannot come from honest inputs (a
    slot sum out of range, a nonzero padding slot or bits above the last slot)."""

    def __init__(self, message: str = "decrypted aggregate is inconsistent with the packing layout"):
        super().__init__(message, AbortReason.CONSISTENCY_CHECK_FAILED)


@dataclass(frozen=True)
class PackingLayout:
    """The slot layout for ``max_clients`` clients, entries bounded by ``bound``
    in magnitude, and a ``key_bits``-bit Paillier modulus. Build it with
    :meth:`derive`; the constructor checks every derived field."""

    key_bits: int
    max_clients: int
    bound: int
    slot_bits: int
    slots: int

    def __post_init__(self) -> None:
        for name in ("key_bits", "max_clients", "bound", "slot_bits", "slots"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"{name} must be a positive integer, got {v!r}")
        worst = 2 * self.max_clients * self.bound
        if self.slot_bits != worst.bit_length():
            raise ParameterError(f"slot_bits must be bit_length(2*N*B) = {worst.bit_length()}")
        if self.slots != (self.key_bits - 1) // self.slot_bits:
            raise ParameterError("slots must be floor((key_bits - 1) / slot_bits)")

    @classmethod
    def for_bound(cls, bound: int, max_clients: int, key_bits: int) -> "PackingLayout":
        """The layout for entries in ``[-bound, bound]``, or :class:`ParameterError`."""
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ParameterError(f"need at least one client, got {max_clients!r}")
        if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
            raise ParameterError(f"entry bound must be a positive integer, got {bound!r}")
        if isinstance(key_bits, bool) or not isinstance(key_bits, int) or key_bits < 16:
            raise ParameterError(f"key_bits must be an integer >= 16, got {key_bits!r}")
        worst = 2 * max_clients * bound
        slot_bits = worst.bit_length()
        if slot_bits > MAX_SLOT_BITS:
            raise ParameterError(
                f"a slot would need {slot_bits} bits to hold the sum of {max_clients} clients with "
                f"entries up to {bound} (limit {MAX_SLOT_BITS}); lower frac_bits, clip or max_weight, "
                "or use fewer clients per round")
        slots = (key_bits - 1) // slot_bits
        if slots < 1:
            raise ParameterError(f"a {slot_bits}-bit slot does not fit a {key_bits}-bit Paillier plaintext")
        return cls(key_bits, max_clients, bound, slot_bits, slots)

    @classmethod
    def for_ring(cls, bits: int, max_clients: int, key_bits: int) -> "PackingLayout":
        """The layout for values of the ring ``Z_{2^bits}`` fed as signed entries
        ``q = v - 2^(bits-1)`` in ``[-2^(bits-1), 2^(bits-1))`` (a distributed-DP
        vector, protocols/dp/SPEC.md §9): ``B = 2^(bits-1)``, slots of
        ``bits + bit_length(max_clients)`` bits, which must stay within
        :data:`MAX_SLOT_BITS`. The slot sums plus ``n_included * 2^(bits-1)``,
        reduced modulo ``2^bits``, are the ring sum."""
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= MAX_SLOT_BITS:
            raise ParameterError(f"ring bits must be an integer in [2, {MAX_SLOT_BITS}], got {bits!r}")
        return cls.for_bound(1 << (bits - 1), max_clients, key_bits)

    @classmethod
    def derive(cls, encoding: FixedPoint, max_clients: int, key_bits: int) -> "PackingLayout":
        """The layout for ``encoding`` (clip, frac_bits, max_weight), ``max_clients``
        and the key size, or :class:`ParameterError` if no slot can hold the sum."""
        return cls.for_bound(encoding.max_entry_bound(), max_clients, key_bits)

    # ------------------------------------------------------------ derived
    @property
    def offset(self) -> int:
        """Added to each signed entry so every slot value is non-negative."""
        return self.bound

    @property
    def packed_bits(self) -> int:
        return self.slots * self.slot_bits

    @property
    def _packed_bytes(self) -> int:
        return (self.packed_bits + 7) // 8

    def ciphertexts(self, length: int) -> int:
        """Number of plaintexts (ciphertexts) for a vector of ``length`` entries."""
        if length < 1:
            raise ParameterError("vector length must be >= 1")
        return math.ceil(length / self.slots)

    def bytes_per_value(self, ciphertext_bytes: int) -> float:
        return ciphertext_bytes / self.slots

    def describe(self) -> dict[str, int]:
        return {"key_bits": self.key_bits, "max_clients": self.max_clients, "bound": self.bound,
                "offset": self.offset, "slot_bits": self.slot_bits, "slots_per_ciphertext": self.slots}

    # ------------------------------------------------------------ packing
    def pack(self, values: np.ndarray) -> list[int]:
        """Signed entries (each in ``[-B, B]``) -> one packed integer per plaintext."""
        q = np.asarray(values)
        if q.ndim != 1 or q.size == 0 or not np.issubdtype(q.dtype, np.integer):
            raise ParameterError("pack expects a non-empty 1-D integer vector")
        q = q.astype(np.int64)
        if int(q.max()) > self.bound or int(q.min()) < -self.bound:
            raise ParameterError(f"entry outside [-{self.bound}, {self.bound}] for this layout")
        count = self.ciphertexts(q.size)
        v = np.zeros(count * self.slots, dtype=np.uint64)
        v[: q.size] = (q + self.bound).astype(np.uint64)
        return self._pack_unsigned(v, count)

    def _pack_unsigned(self, v: np.ndarray, count: int) -> list[int]:
        s = self.slot_bits
        bits = np.empty((v.size, s), dtype=np.uint8)
        for b in range(s):
            bits[:, b] = (v >> np.uint64(b)) & np.uint64(1)
        rows = np.packbits(bits.reshape(count, self.packed_bits), axis=1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in rows]

    def pack_sums(self, sums: np.ndarray, n_clients: int) -> list[int]:
        """The packed plaintexts an honest aggregate of ``n_clients`` with these
        slot sums decrypts to (the inverse of :meth:`unpack`; tests and vectors)."""
        s = np.asarray(sums, dtype=np.int64)
        self._check_clients(n_clients)
        count = self.ciphertexts(s.size)
        v = np.zeros(count * self.slots, dtype=np.uint64)
        v[: s.size] = (s + n_clients * self.bound).astype(np.uint64)
        return self._pack_unsigned(v, count)

    def _check_clients(self, n_clients: int) -> None:
        if not 1 <= n_clients <= self.max_clients:
            raise ParameterError(f"n_clients must be in [1, {self.max_clients}], got {n_clients}")

    def unpack(self, packed: Sequence[int], length: int, n_clients: int) -> np.ndarray:
        """Packed sums of ``n_clients`` clients -> the signed slot sums (int64).

        Raises :class:`SlotOverflow` if a value has bits above the last slot, a
        padding slot is nonzero or a slot sum exceeds ``2 * n_clients * B``."""
        self._check_clients(n_clients)
        count = self.ciphertexts(length)
        if len(packed) != count:
            raise ParameterError(f"expected {count} packed plaintexts for {length} entries, got {len(packed)}")
        limit = 1 << self.packed_bits
        nbytes = self._packed_bytes
        chunks = []
        for m in packed:
            m = int(m)
            if not 0 <= m < limit:
                raise SlotOverflow()
            chunks.append(m.to_bytes(nbytes, "little"))
        raw = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(count, nbytes)
        bits = np.unpackbits(raw, axis=1, bitorder="little")[:, : self.packed_bits]
        bits = bits.reshape(count * self.slots, self.slot_bits)
        v = np.zeros(count * self.slots, dtype=np.uint64)
        for b in range(self.slot_bits):
            v |= bits[:, b].astype(np.uint64) << np.uint64(b)
        if np.any(v[length:]):
            raise SlotOverflow()
        v = v[:length]
        if v.size and int(v.max()) > 2 * n_clients * self.bound:
            raise SlotOverflow()
        return v.astype(np.int64) - np.int64(n_clients * self.bound)
