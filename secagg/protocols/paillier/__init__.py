"""Packed Paillier secure aggregation (protocols/paillier/SPEC.md).

Roles: :class:`PaillierKeyHolder` (the key authority: holds the private key,
decrypts only the aggregate), :class:`PaillierServer` (multiplies ciphertexts,
never decrypts), :class:`PaillierClient` (quantizes, packs, encrypts with a
precomputed obfuscator pool). ``secagg.simulate(..., protocol="paillier")``
runs a whole round in-process on the round drivers.
"""

from .client import ClientState, PaillierClient, encode_update
from .keyholder import PaillierKeyHolder
from .messages import (KEY_HOLDER, AggregateCiphertext, AggregateSums, AlreadyDecrypted, DuplicateSubmission, KeyMismatch,
                       LateSubmission, SessionMismatch, Submission, TooFewClients, UnexpectedSender)
from .params import PROTOCOL_VERSION, RANDOMIZERS, PaillierParams, PublicKeyMessage, default_encoding, randomizer_for
from .server import PaillierServer, ServerState

__all__ = [
    "AggregateCiphertext", "AggregateSums", "AlreadyDecrypted", "ClientState", "DuplicateSubmission",
    "KeyMismatch", "LateSubmission", "PROTOCOL_VERSION", "PaillierClient", "PaillierKeyHolder",
    "PaillierParams", "PaillierServer", "PublicKeyMessage", "ServerState", "SessionMismatch", "Submission",
    "TooFewClients", "UnexpectedSender", "default_encoding", "encode_update", "randomizer_for", "RANDOMIZERS", "KEY_HOLDER",
]
