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

In the signed mode (``PaillierServer(params, client_keys={id: verify_key})``)
every submission must carry its client's Ed25519 signature of its statement
for this session (:func:`~.messages.statement_of`,
:func:`~.messages.verify_statement`); a missing or invalid one is an
:class:`~secagg.errors.InvalidSignature` and changes nothing. The statements
of the included clients go to the key holder with the aggregate.

With a decryption committee (``PaillierServer(params, committee=...)``,
SPEC §8) there is no key holder: closing Submit sends each committee member
that submitted a :class:`~.threshold.DecryptionRequest` for its part of the
aggregate; each answer's proof is checked on intake (a bad one is an
:class:`~secagg.errors.InvalidDecryptionShare` naming the member, and is
not kept); closing Decrypt combines if every ciphertext has ``t`` valid
shares, else asks the members that answered correctly for the rest
(Decrypt recovery), and closing that combines or aborts with
``decryption_failed``.

The server has no clock: the transport calls :meth:`PaillierServer.close`
when the round's deadline passes. Clients that never submitted are simply not
in ``included``; a round with fewer than ``min_clients`` submissions ends in
the ``ABORTED`` state with :attr:`AbortReason.TOO_FEW_SURVIVORS`.

The arithmetic sits behind a small accumulator interface
(:class:`Accumulator`: stage a submission's records, i.e. parse and validate
them; then commit or discard). :class:`LocalAccumulator` does it in this
process and is the default; the server takes any other through
``accumulator=`` (a factory). Processes are the driver layer's business: the
sharded accumulator, which splits the ciphertext positions over worker
processes, is :func:`secagg.drivers.concurrency.sharded_accumulator`. The
protocol logic is the same either way.
"""

from __future__ import annotations

import enum
from typing import Callable, Mapping, Protocol

import numpy as np
from gmpy2 import mpz

from ...encoding.packing import SlotOverflow
from ...errors import (AbortReason, LocalProtocolError, ParameterError, ReconstructionError, RemoteProtocolError,
                       WireFormatError, from_peer)
from ...primitives import paillier as pl
from ..masking.server import DPServerResult
from ..outcome import Abort, ServerResult
from ..stages import Stage
from .messages import (KEY_HOLDER, AggregateCiphertext, AggregateSums, DuplicateSubmission, KeyMismatch,
                       LateSubmission, SessionMismatch, Submission, SubmissionStatement, UnexpectedSender,
                       check_verify_keys, statement_of, verify_statement)
from .params import PaillierParams
from .threshold import CommitteeKey, DecryptionShares, ThresholdCombiner

__all__ = ["ServerState", "PaillierServer", "Accumulator", "AccumulatorFactory", "LocalAccumulator"]


class ServerState(str, enum.Enum):
    COLLECTING = "collecting"
    CLOSED = "closed"
    ABORTED = "aborted"


class Accumulator(Protocol):
    """The running product of accepted submissions, as the server uses it.

    :meth:`stage` parses and validates one submission's records (raising a
    :class:`~secagg.errors.RemoteProtocolError` and keeping nothing if they
    are bad); :meth:`commit` multiplies the staged records in (it cannot
    fail); :meth:`discard` forgets them; :meth:`result` is the product's
    records (``None`` before any commit); :meth:`shutdown` releases it."""

    def stage(self, records: bytes) -> None: ...

    def commit(self) -> None: ...

    def discard(self) -> None: ...

    def result(self) -> bytes | None: ...

    def shutdown(self) -> None: ...


#: Builds the accumulator of a round: ``factory(public_key, count)`` for
#: ``count`` ciphertexts under ``public_key``.
AccumulatorFactory = Callable[[pl.PublicKey, int], Accumulator]


class LocalAccumulator:
    """The running product of accepted submissions, in this process."""

    def __init__(self, public_key: pl.PublicKey, count: int):
        self.public_key, self.count = public_key, count
        self._product: list[mpz] | None = None
        self._staged: list[mpz] | None = None

    def stage(self, records: bytes) -> None:
        """Parse and validate one submission's records; raises and keeps
        nothing if they are not ``count`` elements of ``Z*_{n^2}``."""
        self._staged = None
        with from_peer():  # the records are a client's: a bad length or value is its fault
            self._staged = pl.ciphertexts_from_bytes(self.public_key, records, self.count)

    def commit(self) -> None:
        staged, self._staged = self._staged, None
        if staged is None:
            raise LocalProtocolError("nothing staged")
        if self._product is None:
            self._product = staged
        else:
            pl.multiply_into(self.public_key, self._product, staged)

    def discard(self) -> None:
        self._staged = None

    def result(self) -> bytes | None:
        return None if self._product is None else pl.ciphertexts_to_bytes(self.public_key, self._product)

    def shutdown(self) -> None:
        self._product = self._staged = None


class PaillierServer:
    """The aggregator of one round. ``accumulator`` builds the running product
    (default :class:`LocalAccumulator`, in this process; the driver layer's
    :func:`~secagg.drivers.concurrency.sharded_accumulator` shards it over
    worker processes); the round's end (or :meth:`shutdown`, or leaving the
    server as a context manager) releases it.

    The common server interface (as :class:`~secagg.protocols.masking.MaskingServer`;
    the drivers use nothing else): :meth:`start` sends the parameters to every
    client and to the key holder (party :data:`KEY_HOLDER`); :meth:`receive`
    takes a :class:`Submission` in the Submit stage and the key holder's
    :class:`AggregateSums` in the Decrypt stage; :meth:`close_round` ends a
    stage; :attr:`outcome` is the :class:`ServerResult` or the :class:`Abort`.

    ``client_keys`` (client id -> 32-byte Ed25519 verify key, one for every
    invited client), if given, puts the round in the signed mode (module
    docstring). ``committee`` (a :class:`~.threshold.CommitteeKey` whose
    members are invited clients and whose key is the round's) replaces the
    key holder by threshold decryption; ``spares`` extra members per
    ciphertext in the first decryption request trade work for fewer
    recovery requests."""

    #: every message a client (or the key holder) may send to the server
    CLIENT_MESSAGES: tuple[type, ...] = (Submission, AggregateSums, DecryptionShares)

    def __init__(self, params: PaillierParams, *, accumulator: AccumulatorFactory = LocalAccumulator,
                 client_keys: Mapping[int, bytes] | None = None, committee: CommitteeKey | None = None,
                 spares: int = 0):
        if not isinstance(params, PaillierParams):
            raise LocalProtocolError("the server needs the round's PaillierParams")
        if committee is not None:
            if not isinstance(committee, CommitteeKey):
                raise ParameterError("committee must be a CommitteeKey")
            if committee.public_key != params.key:
                raise ParameterError("the round's key is not the committee's key")
            if not set(committee.holders) <= set(params.client_ids):
                raise ParameterError("committee members must be invited clients of the round")
        if isinstance(spares, bool) or not isinstance(spares, int) or spares < 0:
            raise ParameterError("spares must be an integer >= 0")
        self.committee = committee
        self.spares = spares
        self._submissions: dict[int, bytes] = {}  # signed committee mode only
        self._combiner: ThresholdCombiner | None = None
        self._client_keys = None if client_keys is None else check_verify_keys(client_keys, params.client_ids)
        self._statements: dict[int, SubmissionStatement] = {}
        self.params = params
        self.public_key: pl.PublicKey = params.key
        self.session_id = params.session_id
        self.state = ServerState.COLLECTING
        self.stage = Stage.SUBMIT
        self.abort_reason: AbortReason | None = None
        self.outcome: ServerResult | Abort | None = None
        self.rejected: list[tuple[int, str, str]] = []  # (sender, stage, reason) for the audit log
        self.replies_expected: frozenset[int] = frozenset()
        self._invited = frozenset(params.client_ids)
        self._included: set[int] = set()
        self._accumulator: Accumulator = accumulator(self.public_key, params.n_ciphertexts)
        self._aggregate: AggregateCiphertext | None = None
        self._sums: AggregateSums | None = None

    def __enter__(self) -> "PaillierServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Release the accumulator (and its worker processes, if any)."""
        self._accumulator.shutdown()

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def included(self) -> tuple[int, ...]:
        return tuple(sorted(self._included))

    @property
    def missing(self) -> tuple[int, ...]:
        """Invited clients with no accepted submission (so far)."""
        return tuple(sorted(self._invited - self._included))

    @property
    def max_message_bytes(self) -> int:
        """The largest message the current stage can take (wire limit)."""
        if self.stage in (Stage.DECRYPT, Stage.DECRYPT_RECOVERY) and self.committee is not None:
            return self.params.submission_bytes + 8192  # at most one share per ciphertext, and the proof
        if self.stage is Stage.DECRYPT:
            return 9 * self.params.entries + 4096 + 5 * len(self._included)
        return self.params.submission_bytes + 4096

    def start(self) -> dict[int, object]:
        """The Submit stage opens: the parameters to every invited client (who
        answers with its :class:`Submission`) and to the key holder (who
        registers the session and answers only in the Decrypt stage)."""
        if self.stage is not Stage.SUBMIT or self._included or self.replies_expected:
            raise LocalProtocolError("the round has already started")
        self.replies_expected = self._invited
        out: dict[int, object] = {} if self.committee is not None else {KEY_HOLDER: self.params}
        out.update((cid, self.params) for cid in self.params.client_ids)
        return out

    # ------------------------------------------------------------------ intake
    def receive(self, sender: int, msg: object) -> None:
        """Take one message from the (transport-authenticated) ``sender``;
        raises a typed :class:`RemoteProtocolError` and changes nothing if it
        is not acceptable."""
        try:
            if type(sender) is not int:  # not True, 1.0 or np.uint32(1)
                raise UnexpectedSender(f"sender id must be an int, got {type(sender).__name__}")
            if self.stage in (Stage.DECRYPT, Stage.DECRYPT_RECOVERY) and self._combiner is not None:
                self._receive_shares(sender, msg)
            elif self.stage is Stage.DECRYPT:
                self._receive_sums(sender, msg)
            else:
                self.receive_submission(sender, msg)
        except RemoteProtocolError as exc:
            self.rejected.append((sender if type(sender) is int else -1, self.stage.value, exc.reason.value))
            raise

    def receive_submission(self, sender: int, msg: object) -> None:
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
        statement = None
        if self._client_keys is not None:  # signed mode: bound to this session and this client
            statement = statement_of(msg, self.public_key.ciphertext_bytes)
            verify_statement(self._client_keys[sender], self.session_id, statement)
        self._accumulator.stage(msg.ciphertexts)  # length, range, Z*_{n^2}: raises and keeps nothing
        # -- all checks passed: commit (cannot fail from here on)
        self._accumulator.commit()
        self._included.add(sender)
        if statement is not None:
            self._statements[sender] = statement
            if self.committee is not None:  # the members check the product against these (SPEC §8)
                self._submissions[sender] = bytes(msg.ciphertexts)

    def _receive_sums(self, sender: int, msg: object) -> None:
        if isinstance(msg, Submission):
            raise LateSubmission()
        if sender != KEY_HOLDER:
            raise UnexpectedSender(f"only the key holder answers the Decrypt stage, not {sender}")
        if not isinstance(msg, AggregateSums):
            raise UnexpectedSender("the key holder must answer with AggregateSums")
        if self._sums is not None:
            raise DuplicateSubmission("the key holder already answered")
        if msg.session_id != self.session_id:
            raise SessionMismatch()
        if tuple(msg.included) != self.included:
            raise UnexpectedSender("the decrypted sums are for another set of clients")
        if msg.sums.shape != (self.params.entries,):
            raise WireFormatError(f"expected {self.params.entries} sums, got {msg.sums.size}")
        self._sums = msg

    def _receive_shares(self, sender: int, msg: object) -> None:
        if isinstance(msg, Submission):
            raise LateSubmission()
        if not isinstance(msg, DecryptionShares):
            raise UnexpectedSender("a committee member must answer with DecryptionShares")
        assert self._combiner is not None
        self._combiner.receive(sender, msg)  # proof checked; raises naming the member, keeps nothing

    # ------------------------------------------------------------------ close
    def close(self) -> AggregateCiphertext | None:
        """End the Submit stage (the transport's deadline). Returns the
        aggregate for the key holder, or ``None`` with ``state == ABORTED``
        (and an :class:`Abort` outcome) if too few clients submitted."""
        if self.state is ServerState.CLOSED:
            raise LocalProtocolError("round already closed")
        if self.state is ServerState.ABORTED:
            return None
        product = self._accumulator.result() if self._included else None
        self._accumulator.shutdown()
        if len(self._included) < self.params.min_clients or product is None:
            self._abort(AbortReason.TOO_FEW_SURVIVORS,
                        f"{len(self._included)} of {self.params.n} clients submitted, {self.params.min_clients} "
                        "needed")
            return None
        self._aggregate = AggregateCiphertext(
            session_id=self.session_id, key_id=self.public_key.key_id, included=self.included,
            ciphertexts=product, statements=tuple(self._statements[c] for c in self.included)
            if self._client_keys is not None else ())
        self.state = ServerState.CLOSED
        self.stage = Stage.DECRYPT
        return self._aggregate

    def close_round(self) -> dict[int, object]:
        """End the current stage. Submit: the aggregate ciphertext goes to the
        key holder, or the committee's decryption requests go out (or the
        round aborts with too few submissions). Decrypt: the round ends with
        the decrypted sums, or aborts with ``decryption_failed`` if the key
        holder gave none; with a committee, ciphertexts that lack ``t`` valid
        shares go to a recovery request (Decrypt recovery), after which the
        round ends or aborts."""
        if self.done:
            raise LocalProtocolError("the round is already over")
        out: dict[int, object] = {}
        if self.stage is Stage.SUBMIT:
            aggregate = self.close()
            if aggregate is not None and self.committee is None:
                out = {KEY_HOLDER: aggregate}
            elif aggregate is not None:
                out = self._open_committee(aggregate)
        elif self._combiner is not None:
            out = self._close_committee_stage()
        elif self._sums is None:
            self._abort(AbortReason.DECRYPTION_FAILED, "the key holder returned no decrypted aggregate")
        else:
            self._finish(self._sums.sums)
        self.replies_expected = frozenset(out)
        return out

    def _open_committee(self, aggregate: AggregateCiphertext) -> dict[int, object]:
        assert self.committee is not None
        self._combiner = ThresholdCombiner(self.committee, self.params, aggregate.included,
                                           aggregate.ciphertexts, statements=aggregate.statements,
                                           spares=self.spares,
                                           submissions=self._submissions if self._client_keys is not None else None)
        # members that submitted are alive; if fewer than t did, ask every member
        live = [h for h in self.committee.holders if h in self._included]
        if len(live) < self.committee.threshold:
            live = list(self.committee.holders)
        return dict(self._combiner.requests(live))

    def _close_committee_stage(self) -> dict[int, object]:
        comb = self._combiner
        assert comb is not None and self.committee is not None
        for holder in comb.awaiting:
            comb.give_up(holder)
        if comb.lacking():
            if self.stage is Stage.DECRYPT:
                try:
                    requests = comb.recovery_requests()
                except ReconstructionError as exc:
                    self._abort(AbortReason.DECRYPTION_FAILED, f"{exc}; {self._committee_failures()}")
                    return {}
                self.stage = Stage.DECRYPT_RECOVERY
                return dict(requests)
            self._abort(AbortReason.DECRYPTION_FAILED,
                        f"{len(comb.lacking())} ciphertexts lack {self.committee.threshold} valid decryption "
                        f"shares after recovery; {self._committee_failures()}")
            return {}
        plaintexts = comb.combine()
        try:
            sums = self.params.layout.unpack(plaintexts, self.params.entries, len(self._included))
            if self.params.rule in ("sum", "mean") and int(sums[-1]) != len(self._included) << self.params.frac_bits:
                raise SlotOverflow("weight slot does not equal the number of included clients")
        except SlotOverflow as exc:
            self._abort(AbortReason.CONSISTENCY_CHECK_FAILED, f"the combined aggregate is not a sum of valid "
                        f"inputs: {exc}")
            return {}
        self._finish(sums)
        return {}

    def _committee_failures(self) -> str:
        comb = self._combiner
        bad = ", ".join(f"{h} ({why})" for h, why in sorted(comb.failed.items())) if comb else ""
        return f"members whose shares failed: {bad or 'none'}"

    def _finish(self, sums: np.ndarray) -> None:
        dropped = {c: Stage.SUBMIT.value for c in self.missing}
        dp = self.params.dp
        if dp is not None:
            # protocols/dp/SPEC.md §9: slot sums + n_included 2^(b-1), modulo 2^b, are the DP ring sum
            n_in = len(self.included)
            s = np.asarray(sums, dtype=np.int64)
            if int(s[-1]) != n_in:
                self._abort(AbortReason.CONSISTENCY_CHECK_FAILED, "the count slot does not equal the number of "
                            "included clients")
                return
            try:
                total, count = dp.decode_sum(s[:-1] + np.int64(n_in << (dp.bits - 1)))
                report = dp.report(n_in, count)
            except Exception as exc:  # e.g. the accountant missing: no aggregate rather than one without its report
                self._abort(AbortReason.INTERNAL_ERROR, f"DP decoding failed ({type(exc).__name__}: {exc})")
                return
            self.outcome = DPServerResult(sum_weighted=total, sum_weights=float(n_in), included=self.included,
                                          dropped=dropped, dp=report)
            self.stage = Stage.DONE
            return
        scaled = np.asarray(sums).astype(np.float64) / self.params.encoding.scale
        self.outcome = ServerResult(sum_weighted=scaled[:-1], sum_weights=float(scaled[-1]),
                                    included=self.included, dropped=dropped)
        self.stage = Stage.DONE

    def _abort(self, reason: AbortReason, detail: str) -> None:
        self._accumulator.shutdown()
        self.outcome = Abort(reason, detail, self.stage.value)
        self.state = ServerState.ABORTED
        self.abort_reason = reason
        self.stage = Stage.ABORTED

    @property
    def aggregate(self) -> AggregateCiphertext | None:
        return self._aggregate

    # ------------------------------------------------------------------ audit
    def audit_record(self) -> dict[str, object]:
        """A value-free structured record of the round (no update values)."""
        rec: dict[str, object] = dict(self.params.summary())
        if self.committee is not None:
            rec["decryption"] = {"committee": list(self.committee.holders), "threshold": self.committee.threshold,
                                 "committee_key_id": self.committee.key_id.hex(),
                                 "failed_members": sorted(self._combiner.failed) if self._combiner else []}
        else:
            rec["decryption"] = {"key_holder": KEY_HOLDER}
        rec.update({"stage": self.stage.value, "included": list(self.included),
                    "rejected_messages": [{"sender": s, "stage": st, "reason": r} for s, st, r in self.rejected]})
        if isinstance(self.outcome, ServerResult):
            rec["outcome"] = "completed"
            rec["dropped"] = {str(k): v for k, v in sorted(self.outcome.dropped.items())}
        elif isinstance(self.outcome, Abort):
            rec.update({"outcome": "aborted", "abort_reason": self.outcome.reason.value,
                        "abort_detail": self.outcome.detail, "abort_stage": self.outcome.stage})
        return rec
