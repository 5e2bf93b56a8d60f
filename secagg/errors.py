"""The secagg exception tree and the typed reasons a protocol round can abort.

Shape after h11: ``LocalProtocolError`` means *you* drove the protocol wrong (a
bug in the caller), ``RemoteProtocolError`` means a *peer* sent something a
correct peer never would. Protocol outcomes, aborts included, are states with an
:class:`AbortReason`; exceptions are for misuse, bad parameters and bad input.

The primitives (:mod:`secagg.primitives`) know nothing of peers: when they
refuse their input they raise a :class:`PrimitiveError` (a local fact about
bytes). The protocol code that handed them a peer's bytes turns it into the
:class:`RemoteProtocolError` it means there, with :func:`from_peer`.

This module is the bottom of the package: it imports nothing from secagg.
"""

from __future__ import annotations

import contextlib
import enum
from types import TracebackType
from typing import ClassVar

__all__ = [
    "AbortReason",
    "SecAggError",
    "ParameterError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "WireFormatError",
    "InvalidCiphertext",
    "InvalidSignature",
    "InvalidDecryptionShare",
    "ReconstructionError",
    "ProtocolAborted",
    "PrimitiveError",
    "BadCiphertext",
    "BadSignature",
    "BadPublicKey",
    "BadEncoding",
    "BadDecryptionShare",
    "from_peer",
]


class AbortReason(str, enum.Enum):
    """Why a round aborted. Values are stable strings for audit logs."""

    TOO_FEW_SURVIVORS = "too_few_survivors"
    INCONSISTENT_DROPOUT_SETS = "inconsistent_dropout_sets"
    SESSION_MISMATCH = "session_mismatch"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_CIPHERTEXT = "invalid_ciphertext"
    MALFORMED_MESSAGE = "malformed_message"
    DUPLICATE_MESSAGE = "duplicate_message"
    UNEXPECTED_SENDER = "unexpected_sender"
    DUPLICATE_PUBLIC_KEY = "duplicate_public_key"
    CONSISTENCY_CHECK_FAILED = "consistency_check_failed"
    RECONSTRUCTION_FAILED = "reconstruction_failed"
    WRONG_ROUND = "wrong_round"
    DECRYPTION_FAILED = "decryption_failed"  # Paillier: no valid decrypted aggregate came back
    INVALID_DECRYPTION_SHARE = "invalid_decryption_share"  # threshold Paillier: a share whose proof fails
    INTERNAL_ERROR = "internal_error"  # the server failed (e.g. out of memory) after releasing round state


class SecAggError(Exception):
    """Base class of every error raised by secagg."""


class ParameterError(SecAggError, ValueError):
    """Parameters that are invalid or cannot be secure (e.g. a threshold too low,
    a ring that could wrap, a weight <= 0, NaN in an update)."""


class LocalProtocolError(SecAggError):
    """The local caller drove the protocol wrong (wrong round, reused state)."""


class RemoteProtocolError(SecAggError):
    """A peer sent something a correct peer never would.

    ``reason`` says what, for the abort state and the audit log.
    """

    def __init__(self, message: str, reason: AbortReason = AbortReason.MALFORMED_MESSAGE):
        super().__init__(message)
        self.reason = reason


class WireFormatError(RemoteProtocolError):
    """Bytes from the network that do not decode to a well-formed message:
    truncated, oversized, wrong types, unknown version or message type."""

    def __init__(self, message: str):
        super().__init__(message, AbortReason.MALFORMED_MESSAGE)


class InvalidCiphertext(RemoteProtocolError):
    """A ciphertext failed to decrypt or is outside its valid range.

    Deliberately opaque (one error for every failure: tag, key, associated data,
    length) so that it is no oracle."""

    def __init__(self, message: str = "invalid ciphertext"):
        super().__init__(message, AbortReason.INVALID_CIPHERTEXT)


class InvalidSignature(RemoteProtocolError):
    """A signature did not verify."""

    def __init__(self, message: str = "invalid signature"):
        super().__init__(message, AbortReason.INVALID_SIGNATURE)


class InvalidDecryptionShare(RemoteProtocolError):
    """A threshold decryption share that is malformed or whose proof of
    correct decryption does not verify (another exponent, another ciphertext,
    another request)."""

    def __init__(self, message: str = "invalid decryption share"):
        super().__init__(message, AbortReason.INVALID_DECRYPTION_SHARE)


class PrimitiveError(SecAggError):
    """A primitive refused its input: a local fact about the bytes it was
    given, with no judgement of who sent them (so never a
    :class:`RemoteProtocolError`). :meth:`remote` is the remote error it means
    when the bytes came from a peer; :func:`from_peer` applies it."""

    reason: ClassVar[AbortReason] = AbortReason.MALFORMED_MESSAGE

    def remote(self) -> RemoteProtocolError:
        """The :class:`RemoteProtocolError` this refusal means for bytes a peer sent."""
        return RemoteProtocolError(str(self), self.reason)


class BadCiphertext(PrimitiveError):
    """A ciphertext failed authentication (AEAD: tag, key, associated data or
    length, one opaque error) or lies outside its group (Paillier: not in
    ``Z*_{n^2}``). Remote form: :class:`InvalidCiphertext`."""

    reason = AbortReason.INVALID_CIPHERTEXT

    def __init__(self, message: str = "invalid ciphertext"):
        super().__init__(message)

    def remote(self) -> RemoteProtocolError:
        return InvalidCiphertext(str(self))


class BadSignature(PrimitiveError):
    """A signature did not verify (or the key or signature is malformed).
    Remote form: :class:`InvalidSignature`."""

    reason = AbortReason.INVALID_SIGNATURE

    def __init__(self, message: str = "invalid signature"):
        super().__init__(message)

    def remote(self) -> RemoteProtocolError:
        return InvalidSignature(str(self))


class BadPublicKey(PrimitiveError):
    """A peer's public key is malformed, non-canonical or of low order (its
    key agreement would give a known secret). Remote form: a
    :class:`RemoteProtocolError` with ``malformed_message``."""


class BadEncoding(PrimitiveError):
    """Bytes of the wrong length or form for the primitive (e.g. a Paillier
    ciphertext string that is not ``count`` records long). Remote form:
    :class:`WireFormatError`."""

    def remote(self) -> RemoteProtocolError:
        return WireFormatError(str(self))


class BadDecryptionShare(PrimitiveError):
    """A threshold decryption share refused by its verification (count,
    range, proof). Remote form: :class:`InvalidDecryptionShare`."""

    reason = AbortReason.INVALID_DECRYPTION_SHARE

    def __init__(self, message: str = "invalid decryption share"):
        super().__init__(message)

    def remote(self) -> RemoteProtocolError:
        return InvalidDecryptionShare(str(self))


class ReconstructionError(PrimitiveError):
    """Shamir reconstruction impossible: too few, duplicate or malformed shares."""

    reason = AbortReason.RECONSTRUCTION_FAILED


class from_peer(contextlib.ContextDecorator):  # noqa: N801 - used like contextlib.suppress
    """The protocol boundary: inside it (``with from_peer():``, or as the
    decorator ``@from_peer()`` of a method that handles a peer's message), a
    :class:`PrimitiveError` becomes the :class:`RemoteProtocolError` it means
    (:meth:`PrimitiveError.remote`), chained to it. Other exceptions pass
    unchanged."""

    def __enter__(self) -> "from_peer":
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if isinstance(exc, PrimitiveError):
            raise exc.remote() from exc


class ProtocolAborted(SecAggError):
    """Raised by the convenience drivers when a round ended in an abort state.

    The sans-I/O core never raises this: it returns an abort state. Drivers that
    promise a result (``secagg.simulate``) raise it instead of returning a partial
    aggregate."""

    def __init__(self, reason: AbortReason, detail: str = "", culprits: "tuple[int, ...]" = ()):
        super().__init__(f"round aborted: {reason.value}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail
        #: the clients the abort is blamed on (see :class:`secagg.protocols.outcome.Abort`): run the
        #: next round without them
        self.culprits = tuple(int(c) for c in culprits)

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuild from (reason, detail, culprits), not from the formatted message, so the
        # error survives pickling (multiprocessing, Ray workers in simulations).
        return (type(self), (self.reason, self.detail, self.culprits))
