"""Messages of the Paillier protocol (protocols/paillier/SPEC.md §3) and the
typed errors for a submission a correct peer would never send.

Ciphertexts travel as one byte string of fixed-length records (each
``ceil(2 * key_bits / 8)`` bytes, big-endian), so a million-parameter update is
one ``bytes`` field, not ten thousand msgpack items. No exponent travels
anywhere: the fixed-point exponent is ``-frac_bits``, fixed by the round
parameters for every value (security invariant 6).

Paper names ↔ fields: ``[[m_j]]`` = record ``j`` of ``ciphertexts``;
``U`` (included clients) = ``included``; ``prod_u [[m_{u,j}]]`` = record ``j``
of :class:`AggregateCiphertext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...encoding import wire
from ...errors import AbortReason, InvalidCiphertext, RemoteProtocolError
from .params import MAX_CLIENT_ID, PaillierParams, PublicKeyMessage

__all__ = [
    "PaillierParams", "PublicKeyMessage", "Submission", "AggregateCiphertext", "AggregateSums",
    "SessionMismatch", "KeyMismatch", "DuplicateSubmission", "LateSubmission", "UnexpectedSender",
    "AlreadyDecrypted", "TooFewClients", "KEY_HOLDER",
]

#: The key holder's party id in a round's messages (clients are 1..n).
KEY_HOLDER = 0

_ID = {"min": 1, "max": MAX_CLIENT_ID}
_HASH = {"len": 32}


@wire.message("paillier.Submission")
@dataclass(frozen=True)
class Submission:
    """Client -> server: the packed, encrypted vector ``[w*x, w]``."""

    session_id: bytes = field(metadata=_HASH)
    key_id: bytes = field(metadata=_HASH)
    client_id: int = field(metadata=_ID)
    ciphertexts: bytes


@wire.message("paillier.AggregateCiphertext")
@dataclass(frozen=True)
class AggregateCiphertext:
    """Server -> key holder: the product of the included clients' ciphertexts
    and the ids of those clients, nothing else."""

    session_id: bytes = field(metadata=_HASH)
    key_id: bytes = field(metadata=_HASH)
    included: tuple[int, ...] = field(metadata={"item": _ID})
    ciphertexts: bytes


@wire.message("paillier.AggregateSums")
@dataclass(frozen=True, eq=False)
class AggregateSums:
    """Key holder -> server: the decrypted slot sums (int64, in units of
    ``2^-frac_bits``): ``sums[:-1]`` is ``S_wx``, ``sums[-1]`` is ``S_w``."""

    session_id: bytes = field(metadata=_HASH)
    included: tuple[int, ...] = field(metadata={"item": _ID})
    sums: np.ndarray = field(metadata={"dtypes": {"int64"}})


# ----------------------------------------------------------------- errors

class SessionMismatch(RemoteProtocolError):
    """A message bound to another session (a replay from another round, or a
    peer with other parameters)."""

    def __init__(self, message: str = "message belongs to another session"):
        super().__init__(message, AbortReason.SESSION_MISMATCH)


class KeyMismatch(InvalidCiphertext):
    """Ciphertexts (or parameters) under another Paillier key than the key holder's."""

    def __init__(self, message: str = "ciphertexts are not under this round's Paillier key"):
        super().__init__(message)


class DuplicateSubmission(RemoteProtocolError):
    """A second submission from a client that was already included."""

    def __init__(self, message: str = "client already submitted"):
        super().__init__(message, AbortReason.DUPLICATE_MESSAGE)


class LateSubmission(RemoteProtocolError):
    """A submission after the server closed the round."""

    def __init__(self, message: str = "round already closed"):
        super().__init__(message, AbortReason.WRONG_ROUND)


class UnexpectedSender(RemoteProtocolError):
    """A sender that is not an invited client, or whose message names another client."""

    def __init__(self, message: str = "unexpected sender"):
        super().__init__(message, AbortReason.UNEXPECTED_SENDER)


class AlreadyDecrypted(RemoteProtocolError):
    """A second decryption request for a session: the key holder decrypts one
    aggregate per session and nothing else (no decryption oracle)."""

    def __init__(self, message: str = "this session's aggregate was already decrypted"):
        super().__init__(message, AbortReason.DUPLICATE_MESSAGE)


class TooFewClients(RemoteProtocolError):
    """An aggregate over fewer than ``min_clients`` clients."""

    def __init__(self, message: str = "fewer clients than min_clients"):
        super().__init__(message, AbortReason.TOO_FEW_SURVIVORS)
