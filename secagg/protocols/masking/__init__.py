"""Pairwise-masking secure aggregation: SecAgg (complete graph) and SecAgg+
(sparse random graph) as one sans-I/O protocol. See protocols/masking/SPEC.md."""

from .client import ClientState, MaskingClient
from .graph import NeighbourGraph, derive_secagg_plus
from .messages import (AdvertiseKeys, ConsistencyRequest, ConsistencySignature, ForwardedShares, KeysBroadcast,
                       MaskedInput, ShareKeys, UnmaskRequest, UnmaskShares)
from .params import PROTOCOL_VERSION, MaskingParams
from .server import Abort, MaskingServer, ServerResult, Stage
from .server_state import MaskingServerState

__all__ = ["Abort", "AdvertiseKeys", "ClientState", "ConsistencyRequest", "ConsistencySignature",
           "ForwardedShares", "KeysBroadcast", "MaskedInput", "MaskingClient", "MaskingParams", "MaskingServer",
           "MaskingServerState",
           "NeighbourGraph", "PROTOCOL_VERSION", "ServerResult", "ShareKeys", "Stage", "UnmaskRequest", "UnmaskShares",
           "derive_secagg_plus"]
