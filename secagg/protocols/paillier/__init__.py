"""Packed Paillier secure aggregation (protocols/paillier/SPEC.md).

Roles: :class:`PaillierKeyHolder` (the key authority: holds the private key,
decrypts only the aggregate), :class:`PaillierServer` (multiplies ciphertexts,
never decrypts), :class:`PaillierClient` (quantizes, packs, encrypts with a
precomputed obfuscator pool). :func:`simulate_paillier` runs a whole round
in-process through the wire format.
"""

from .client import ClientState, PaillierClient, encode_update
from .keyholder import PaillierKeyHolder
from .messages import (AggregateCiphertext, AggregateSums, AlreadyDecrypted, DuplicateSubmission, KeyMismatch,
                       LateSubmission, SessionMismatch, Submission, TooFewClients, UnexpectedSender)
from .params import PROTOCOL_VERSION, PaillierParams, PublicKeyMessage
from .server import PaillierServer, ServerState
from .simulate import default_encoding, simulate_paillier

__all__ = [
    "AggregateCiphertext", "AggregateSums", "AlreadyDecrypted", "ClientState", "DuplicateSubmission",
    "KeyMismatch", "LateSubmission", "PROTOCOL_VERSION", "PaillierClient", "PaillierKeyHolder",
    "PaillierParams", "PaillierServer", "PublicKeyMessage", "ServerState", "SessionMismatch", "Submission",
    "TooFewClients", "UnexpectedSender", "default_encoding", "encode_update", "simulate_paillier",
]
