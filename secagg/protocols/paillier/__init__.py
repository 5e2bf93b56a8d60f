"""Packed Paillier secure aggregation (protocols/paillier/SPEC.md).

Roles: :class:`PaillierServer` (multiplies ciphertexts, never decrypts),
:class:`PaillierClient` (quantizes, packs, encrypts with a precomputed
obfuscator pool), and who decrypts the one aggregate: a committee of the
clients holding shares of a key nobody holds (:class:`ThresholdDecryptor`,
:class:`CommitteeKey`, :func:`deal_committee`; the default, SPEC §8) or a
key holder (:class:`PaillierKeyHolder`, which holds the private key). ``secagg.simulate(..., protocol="paillier")``
runs a whole round in-process on the round drivers.
"""

from .client import ClientState, PaillierClient, encode_update
from .keyholder import PaillierKeyHolder
from .messages import (KEY_HOLDER, AggregateCiphertext, AggregateSums, AlreadyDecrypted, DuplicateSubmission, KeyMismatch,
                       LateSubmission, SessionMismatch, Submission, TooFewClients, UnexpectedSender)
from .params import PROTOCOL_VERSION, RANDOMIZERS, PaillierParams, PublicKeyMessage, default_encoding, randomizer_for
from .server import PaillierServer, ServerState
from .threshold import (CommitteeKey, DecryptionRequest, DecryptionShares, ThresholdCombiner, ThresholdDecryptor,
                        deal_committee)

__all__ = [
    "AggregateCiphertext", "AggregateSums", "AlreadyDecrypted", "ClientState", "CommitteeKey", "DecryptionRequest",
    "DecryptionShares", "DuplicateSubmission", "ThresholdCombiner", "ThresholdDecryptor", "deal_committee",
    "KeyMismatch", "LateSubmission", "PROTOCOL_VERSION", "PaillierClient", "PaillierKeyHolder",
    "PaillierParams", "PaillierServer", "PublicKeyMessage", "ServerState", "SessionMismatch", "Submission",
    "TooFewClients", "UnexpectedSender", "default_encoding", "encode_update", "randomizer_for", "RANDOMIZERS", "KEY_HOLDER",
]
