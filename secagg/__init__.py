"""secagg: secure aggregation for federated learning.

Pairwise masking (SecAgg, SecAgg+) with dropout recovery, and packed Paillier
encryption, as sans-I/O protocol cores driven by one round driver per role,
with an in-process simulator, a torch integration and a Flower adapter. See
README.md, docs/architecture.md and protocols/.

The package is layered (docs/architecture.md): importing a low layer, e.g.
``secagg.primitives.kdf``, must not load the simulator, the drivers, the
transports, Flower or torch. So this module imports only the error types
eagerly; every other public name is loaded on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from .aggregation import Rule, client_weight, fedavg_apply, hybrid_weight
    from .dp.plan import DPConfig
    from .encoding.fixed_point import FixedPoint
    from .primitives.randomness import DeterministicRandom, SystemRandom
    from .result import AggregationResult
    from .simulation import simulate

__version__ = "0.1.0"

__all__ = [
    "AbortReason",
    "AggregationResult",
    "DPConfig",
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

# public name -> the module that defines it, imported on first access
_LAZY = {
    "Rule": ".aggregation",
    "client_weight": ".aggregation",
    "fedavg_apply": ".aggregation",
    "hybrid_weight": ".aggregation",
    "FixedPoint": ".encoding.fixed_point",
    "DPConfig": ".dp.plan",
    "DeterministicRandom": ".primitives.randomness",
    "SystemRandom": ".primitives.randomness",
    "AggregationResult": ".result",
    "simulate": ".simulation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
