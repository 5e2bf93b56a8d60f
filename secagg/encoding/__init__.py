"""Encoding layer: fixed point, ring vectors, Paillier packing, wire format."""

from .fixed_point import FixedPoint, Quantized, check_finite
from .ring import choose_ring_bits, from_ring, to_ring

__all__ = ["FixedPoint", "Quantized", "check_finite", "choose_ring_bits", "from_ring", "to_ring"]
