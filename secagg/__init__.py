"""secagg: secure aggregation for federated learning.

Pairwise masking (SecAgg, SecAgg+) with dropout recovery, and packed Paillier
encryption, as sans-I/O protocol cores with an in-process simulator, a torch
integration and a Flower adapter. See README.md and protocols/.
"""

from .aggregation import Rule, client_weight, fedavg_apply, hybrid_weight
from .encoding.fixed_point import FixedPoint
from .errors import (
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
from .primitives.randomness import DeterministicRandom, SystemRandom
from .result import AggregationResult
from .simulation import simulate

__version__ = "0.1.0"

__all__ = [
    "AbortReason",
    "AggregationResult",
    "DeterministicRandom",
    "FixedPoint",
    "InvalidCiphertext",
    "InvalidSignature",
    "LocalProtocolError",
    "ParameterError",
    "ProtocolAborted",
    "ReconstructionError",
    "RemoteProtocolError",
    "Rule",
    "SecAggError",
    "SystemRandom",
    "WireFormatError",
    "client_weight",
    "fedavg_apply",
    "hybrid_weight",
    "simulate",
    "__version__",
]
