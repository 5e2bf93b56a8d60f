"""The Paillier server (protocols/paillier/SPEC.md §3.3): validate each
submission, multiply it into a running product, close, hand the product to
the key holder.

The server holds the public key only; nothing in this module can decrypt. It
keeps one accumulator per ciphertext position (``O(ciphertexts)`` memory,
independent of the number of clients) and multiplies every accepted
submission in as it arrives. Every check runs *before* the accumulator is
touched, and the multiplication cannot fail, so a rejected message (typed
:class:`~secagg.errors.RemoteProtocolError`) leaves the state exactly as it
was (security invariant 7).

The server has no clock: the transport calls :meth:`PaillierServer.close`
when the round's deadline passes. Clients that never submitted are simply not
in ``included``; a round with fewer than ``min_clients`` submissions ends in
the ``ABORTED`` state with :attr:`AbortReason.TOO_FEW_SURVIVORS`.
"""

from __future__ import annotations

import enum

from gmpy2 import mpz

from ...encoding import wire
from ...errors import AbortReason, LocalProtocolError
from ...primitives import paillier as pl
from .messages import (AggregateCiphertext, DuplicateSubmission, KeyMismatch, LateSubmission, SessionMismatch,
                       Submission, UnexpectedSender)
from .params import PaillierParams

__all__ = ["ServerState", "PaillierServer"]


class ServerState(str, enum.Enum):
    COLLECTING = "collecting"
    CLOSED = "closed"
    ABORTED = "aborted"


class PaillierServer:
    """The aggregator of one round."""

    def __init__(self, params: PaillierParams):
        if not isinstance(params, PaillierParams):
            raise LocalProtocolError("the server needs the round's PaillierParams")
        self.params = params
        self.public_key: pl.PublicKey = params.key
        self.session_id = params.session_id
        self.state = ServerState.COLLECTING
        self.abort_reason: AbortReason | None = None
        self._invited = frozenset(params.client_ids)
        self._included: set[int] = set()
        self._accumulator: list[mpz] | None = None
        self._aggregate: AggregateCiphertext | None = None

    @property
    def included(self) -> tuple[int, ...]:
        return tuple(sorted(self._included))

    @property
    def missing(self) -> tuple[int, ...]:
        """Invited clients with no accepted submission (so far)."""
        return tuple(sorted(self._invited - self._included))

    # ------------------------------------------------------------------ intake
    def receive(self, sender: int, data: bytes) -> None:
        """Decode and accept one submission from the (transport-authenticated)
        ``sender``; raises a typed :class:`RemoteProtocolError` and changes
        nothing if it is not acceptable."""
        if self.state is not ServerState.COLLECTING:
            raise LateSubmission()
        msg = wire.decode(data, Submission, max_size=self.params.submission_bytes + 4096)
        self.receive_submission(sender, msg)

    def receive_submission(self, sender: int, msg: Submission) -> None:
        if self.state is not ServerState.COLLECTING:
            raise LateSubmission()
        if not isinstance(msg, Submission):
            raise UnexpectedSender("not a submission")
        if sender not in self._invited:
            raise UnexpectedSender(f"sender {sender} is not invited to this round")
        if msg.client_id != sender:
            raise UnexpectedSender(f"sender {sender} submitted as client {msg.client_id}")
        if msg.key_id != self.public_key.key_id:
            raise KeyMismatch()
        if msg.session_id != self.session_id:
            raise SessionMismatch()
        if sender in self._included:
            raise DuplicateSubmission(f"client {sender} already submitted")
        cts = pl.ciphertexts_from_bytes(self.public_key, msg.ciphertexts, self.params.n_ciphertexts)
        # -- all checks passed: commit (cannot fail from here on)
        if self._accumulator is None:
            self._accumulator = cts
        else:
            pl.multiply_into(self.public_key, self._accumulator, cts)
        self._included.add(sender)

    # ------------------------------------------------------------------ close
    def close(self) -> AggregateCiphertext | None:
        """End intake (the transport's deadline). Returns the aggregate for the
        key holder, or ``None`` with ``state == ABORTED`` if too few clients
        submitted."""
        if self.state is ServerState.CLOSED:
            raise LocalProtocolError("round already closed")
        if self.state is ServerState.ABORTED:
            return None
        if len(self._included) < self.params.min_clients or self._accumulator is None:
            self.state = ServerState.ABORTED
            self.abort_reason = AbortReason.TOO_FEW_SURVIVORS
            self._accumulator = None
            return None
        self._aggregate = AggregateCiphertext(
            session_id=self.session_id, key_id=self.public_key.key_id, included=self.included,
            ciphertexts=pl.ciphertexts_to_bytes(self.public_key, self._accumulator))
        self._accumulator = None
        self.state = ServerState.CLOSED
        return self._aggregate

    @property
    def aggregate(self) -> AggregateCiphertext | None:
        return self._aggregate
