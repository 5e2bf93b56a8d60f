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

**Submission statements** (SPEC §3.2-§3.4, the signed mode). A client with an
Ed25519 signing key signs ``SHA-256("secagg/v1/paillier/submission\0" || sid
|| u (4 bytes, big-endian) || SHA-256(ciphertexts))``; the server checks it on
intake and forwards ``(u, SHA-256(ciphertexts), signature)`` for every
included client; a decrypting party checks one statement per included client
for its own session before anything decrypts. The helpers below
(:func:`sign_submission`, :func:`statement_of`, :func:`verify_statement`,
:func:`verify_statements`) are the one implementation of that statement, for
every party that verifies it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ...encoding import wire
from ...errors import (AbortReason, InvalidCiphertext, InvalidSignature, ParameterError, RemoteProtocolError,
                       WireFormatError, from_peer)
from ...primitives import signatures
from .params import MAX_CLIENT_ID, PaillierParams, PublicKeyMessage

__all__ = [
    "PaillierParams", "PublicKeyMessage", "Submission", "SubmissionStatement", "AggregateCiphertext",
    "AggregateSums", "SessionMismatch", "KeyMismatch", "DuplicateSubmission", "LateSubmission", "UnexpectedSender",
    "AlreadyDecrypted", "TooFewClients", "KEY_HOLDER", "SUBMISSION_TAG", "SIGNATURE_BYTES", "ciphertext_digest",
    "statement_message", "sign_submission", "block_hashes", "digest_of_blocks", "DIGEST_BLOCK_RECORDS", "statement_of", "verify_statement", "verify_statements",
    "check_signing_key", "check_verify_keys", "check_floor",
]

#: The key holder's party id in a round's messages (clients are 1..n).
KEY_HOLDER = 0

_ID = {"min": 1, "max": MAX_CLIENT_ID}
_HASH = {"len": 32}

#: Domain separation of the statement a client signs for its submission.
SUBMISSION_TAG = b"secagg/v1/paillier/submission\x00"
#: Length of an Ed25519 signature; of an Ed25519 key (private seed or public key).
SIGNATURE_BYTES = 64
_KEY_BYTES = 32


@wire.message("paillier.Submission")
@dataclass(frozen=True)
class Submission:
    """Client -> server: the packed, encrypted vector ``[w*x, w]``.
    ``signature`` is the client's Ed25519 signature of its statement
    (:func:`statement_message`), or empty when the round is unsigned."""

    session_id: bytes = field(metadata=_HASH)
    key_id: bytes = field(metadata=_HASH)
    client_id: int = field(metadata=_ID)
    ciphertexts: bytes
    signature: bytes = field(default=b"", metadata={"max_len": SIGNATURE_BYTES})

    def __post_init__(self) -> None:
        if len(self.signature) not in (0, SIGNATURE_BYTES):
            raise ParameterError(f"a submission's signature is empty or {SIGNATURE_BYTES} bytes")


@dataclass(frozen=True)
class SubmissionStatement:
    """Client ``client_id``'s signed statement that in a session it submitted
    the ciphertexts whose SHA-256 is ``ciphertext_digest`` (the session is not
    carried: the verifier supplies its own). An item of
    :attr:`AggregateCiphertext.statements`, not a message of its own."""

    client_id: int = field(metadata=_ID)
    ciphertext_digest: bytes = field(metadata=_HASH)
    signature: bytes = field(metadata={"len": SIGNATURE_BYTES})


@wire.message("paillier.AggregateCiphertext")
@dataclass(frozen=True)
class AggregateCiphertext:
    """Server -> key holder: the product of the included clients' ciphertexts
    and the ids of those clients; in the signed mode also each included
    client's :class:`SubmissionStatement`, in the order of ``included``
    (empty otherwise)."""

    session_id: bytes = field(metadata=_HASH)
    key_id: bytes = field(metadata=_HASH)
    included: tuple[int, ...] = field(metadata={"item": _ID})
    ciphertexts: bytes
    statements: tuple[SubmissionStatement, ...] = ()


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
    """An aggregate over fewer than ``min_clients`` clients, or round
    parameters whose ``min_clients`` is below a party's own minimum."""

    def __init__(self, message: str = "fewer clients than min_clients"):
        super().__init__(message, AbortReason.TOO_FEW_SURVIVORS)


def check_floor(params: PaillierParams, floor: int, who: str) -> None:
    """A submitting or decrypting party's refusal (:class:`TooFewClients`) of
    round parameters whose ``min_clients`` is below its own ``floor``."""
    if params.min_clients < floor:
        raise TooFewClients(
            f"round parameters with min_clients={params.min_clients} refused: {who} takes part only in rounds "
            f"whose aggregate covers at least {floor} clients")


# ----------------------------------------------------------------- submission statements

#: Ciphertext records per block of a submission's digest (SPEC §3.2): a
#: decryption committee member checks the blocks it decrypts, not the whole.
DIGEST_BLOCK_RECORDS = 64
_BLOCK_TAG = b"secagg/v1/paillier/block\x00"
_DIGEST_TAG = b"secagg/v1/paillier/digest\x00"


def block_hashes(ciphertexts: bytes, record_bytes: int) -> bytes:
    """``SHA-256(block tag || block)`` of each block of
    :data:`DIGEST_BLOCK_RECORDS` records (the last may be shorter),
    concatenated."""
    if record_bytes < 1 or len(ciphertexts) % record_bytes:
        raise ParameterError("ciphertexts are not a whole number of records")
    step = DIGEST_BLOCK_RECORDS * record_bytes
    view = memoryview(ciphertexts)
    return b"".join(hashlib.sha256(_BLOCK_TAG + view[i:i + step]).digest() for i in range(0, len(view), step))


def digest_of_blocks(hashes: bytes) -> bytes:
    """``SHA-256(digest tag || block hashes)``: a submission's digest."""
    return hashlib.sha256(_DIGEST_TAG + bytes(hashes)).digest()


def ciphertext_digest(ciphertexts: bytes, record_bytes: int) -> bytes:
    """A submission's digest: the hash of its block hashes
    (:func:`block_hashes`), so that any block can be shown to belong to it
    with the block hashes alone."""
    return digest_of_blocks(block_hashes(ciphertexts, record_bytes))


def statement_message(session_id: bytes, client_id: int, digest: bytes) -> bytes:
    """What a client signs: ``SHA-256(SUBMISSION_TAG || sid || u (4 bytes,
    big-endian) || digest)`` with ``digest`` = :func:`ciphertext_digest`."""
    if len(session_id) != 32 or len(digest) != 32 or not 1 <= client_id <= MAX_CLIENT_ID:
        raise ParameterError("a statement binds a 32-byte session id, a client id and a 32-byte digest")
    return hashlib.sha256(SUBMISSION_TAG + bytes(session_id) + int(client_id).to_bytes(4, "big")
                          + bytes(digest)).digest()


def check_signing_key(key: bytes) -> bytes:
    """A client's Ed25519 private seed (32 bytes), or :class:`ParameterError`."""
    if not isinstance(key, (bytes, bytearray)) or len(key) != _KEY_BYTES:
        raise ParameterError(f"signing_key must be a {_KEY_BYTES}-byte Ed25519 private key")
    return bytes(key)


def check_verify_keys(keys: Mapping[int, bytes], required: Sequence[int] = ()) -> dict[int, bytes]:
    """Clients' Ed25519 verify keys by id (32 bytes each), covering every id
    in ``required``; :class:`ParameterError` otherwise."""
    if not isinstance(keys, Mapping):
        raise ParameterError("client_keys must map client ids to 32-byte Ed25519 public keys")
    out: dict[int, bytes] = {}
    for cid, key in keys.items():
        if type(cid) is not int or not 1 <= cid <= MAX_CLIENT_ID:
            raise ParameterError(f"client_keys: client id {cid!r} is not an integer in [1, {MAX_CLIENT_ID}]")
        if not isinstance(key, (bytes, bytearray)) or len(key) != _KEY_BYTES:
            raise ParameterError(f"client_keys: the key of client {cid} is not a {_KEY_BYTES}-byte Ed25519 key")
        out[cid] = bytes(key)
    missing = sorted(set(required) - set(out))
    if missing:
        raise ParameterError(f"client_keys: no verify key for invited clients {missing}")
    return out


def sign_submission(signing_key: bytes, session_id: bytes, client_id: int, ciphertexts: bytes,
                    record_bytes: int) -> bytes:
    """Client ``client_id``'s signature of its ciphertexts (records of
    ``record_bytes``) in session ``session_id``."""
    return signatures.sign(check_signing_key(signing_key),
                           statement_message(session_id, client_id, ciphertext_digest(ciphertexts, record_bytes)))


def statement_of(submission: Submission, record_bytes: int) -> SubmissionStatement:
    """The statement a signed submission carries (raises
    :class:`~secagg.errors.InvalidSignature` if it carries none, and
    :class:`~secagg.errors.WireFormatError` if its ciphertexts are not whole
    records)."""
    if len(submission.signature) != SIGNATURE_BYTES:
        raise InvalidSignature("the submission is not signed")
    if len(submission.ciphertexts) % record_bytes:
        raise WireFormatError("the ciphertexts are not a whole number of records")
    return SubmissionStatement(submission.client_id, ciphertext_digest(submission.ciphertexts, record_bytes),
                               submission.signature)


def verify_statement(verify_key: bytes, session_id: bytes, statement: SubmissionStatement) -> None:
    """Check ``statement`` with its client's ``verify_key`` for ``session_id``:
    :class:`~secagg.errors.InvalidSignature` if it was not signed by that
    key for this session, client and digest."""
    with from_peer():
        signatures.verify(verify_key, statement_message(session_id, statement.client_id,
                                                        statement.ciphertext_digest), statement.signature)


def verify_statements(client_keys: Mapping[int, bytes], session_id: bytes, included: Sequence[int],
                      statements: Sequence[SubmissionStatement]) -> None:
    """A decrypting party's check of an aggregate's statements: exactly one
    per included client, in the order of ``included`` (else
    :class:`UnexpectedSender`), each by a client whose verify key the party
    holds (else :class:`UnexpectedSender`) and each valid for ``session_id``
    (else :class:`~secagg.errors.InvalidSignature`). This binds the named
    clients and the session, not the aggregate: by itself it cannot show that
    the aggregate is their product (SPEC §7; a committee member in the signed
    mode checks that separately, with the request's evidence, SPEC §8.8)."""
    if tuple(s.client_id for s in statements) != tuple(included):
        raise UnexpectedSender("the aggregate does not carry one statement per included client, in order")
    for statement in statements:
        key = client_keys.get(statement.client_id)
        if key is None:
            raise UnexpectedSender(f"client {statement.client_id} is included but has no known verify key")
        verify_statement(key, session_id, statement)
