"""The secagg exception tree and the typed reasons a protocol round can abort.

Shape after h11: ``LocalProtocolError`` means *you* drove the protocol wrong (a
bug in the caller), ``RemoteProtocolError`` means a *peer* sent something a
correct peer never would. Protocol outcomes, aborts included, are states with an
:class:`AbortReason`; exceptions are for misuse, bad parameters and bad input.
"""

from __future__ import annotations

import enum

__all__ = [
    "AbortReason",
    "SecAggError",
    "ParameterError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "WireFormatError",
    "InvalidCiphertext",
    "InvalidSignature",
    "ReconstructionError",
    "ProtocolAborted",
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


class ReconstructionError(SecAggError):
    """Shamir reconstruction impossible: too few, duplicate or malformed shares."""


class ProtocolAborted(SecAggError):
    """Raised by the convenience drivers when a round ended in an abort state.

    The sans-I/O core never raises this: it returns an abort state. Drivers that
    promise a result (``secagg.simulate``) raise it instead of returning a partial
    aggregate."""

    def __init__(self, reason: AbortReason, detail: str = ""):
        super().__init__(f"round aborted: {reason.value}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuild from (reason, detail), not from the formatted message, so the
        # error survives pickling (multiprocessing, Ray workers in simulations).
        return (type(self), (self.reason, self.detail))
