"""The server driver: one I/O-free object that runs a round of any protocol
family for any transport.

A transport moves bytes and owns the clock; the driver does everything else
the same way for all of them::

    driver = ServerDriver(MaskingServer(params), rule="fedavg")
    outbox = driver.start()                      # {party: bytes} to deliver
    while not driver.done:
        ...deliver outbox, then for each reply that arrives:
        driver.receive(party, data)              # refused ones are recorded
        ...a party known to be dead:  driver.gone(party)
        ...when driver.ready (everyone answered or gone) or the deadline passed:
        outbox = driver.close_stage()
    result = driver.result()                     # AggregationResult, or ProtocolAborted

What the driver owns, so no transport writes it again: decoding with the
stage's size limit, the reject policy (a refused message changes nothing, is
recorded for the audit log with its typed reason and reported to the
observer; the sender then counts as dropped at that stage), who is still
awaited (for an early close), encoding each distinct outgoing message once,
the rule that turns the two sums into the result, and the audit record.

Both protocol cores (:class:`~secagg.protocols.masking.MaskingServer`,
:class:`~secagg.protocols.paillier.PaillierServer`) present the same
interface: ``start``, ``receive(sender, message)``, ``close_round``,
``stage``, ``replies_expected``, ``outcome``, ``audit_record``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any, Mapping, Protocol

from ..aggregation import Rule, get_rule
from ..encoding import wire
from ..errors import AbortReason, LocalProtocolError, ProtocolAborted, RemoteProtocolError
from ..protocols.outcome import Abort, ServerResult
from ..protocols.stages import Stage
from ..result import AggregationResult
from .observer import SERVER, TO_CLIENT, TO_SERVER, Observer

__all__ = ["ServerDriver", "ServerCore", "audit_logger"]

audit_logger = logging.getLogger("secagg.audit")
_NO_SPAN = contextlib.nullcontext()


class ServerCore(Protocol):
    """What a protocol's sans-I/O server offers the driver."""

    CLIENT_MESSAGES: tuple[type, ...]
    stage: Stage
    replies_expected: frozenset[int]
    outcome: ServerResult | Abort | None
    rejected: list[tuple[int, str, str]]

    @property
    def max_message_bytes(self) -> int: ...

    def start(self) -> dict[int, object]: ...

    def receive(self, sender: int, msg: object) -> None: ...

    def close_round(self) -> dict[int, object]: ...

    def audit_record(self) -> dict[str, object]: ...


class ServerDriver:
    """Drives one round of ``core`` (a protocol's server) with ``rule``.

    Not thread-safe: call it from one thread (a transport with many
    connections queues their events to one loop, as the HTTP example does).
    Use it as a context manager, or call :meth:`close`, to release what the
    core holds (worker processes of a sharded Paillier accumulator)."""

    def __init__(self, core: ServerCore, rule: "str | Rule" = "mean", *, observer: Observer | None = None,
                 protocol: str | None = None):
        self.core = core
        self.rule = get_rule(rule)
        self.observer = observer or Observer()
        params: Any = getattr(core, "params", None)
        self.protocol = protocol or getattr(params, "protocol_name", None) or "paillier"
        self._awaiting: set[int] = set()
        self._answered: set[int] = set()
        self._gone: dict[int, str] = {}  # party -> why (reported gone or refused) in this stage
        self._left: dict[int, str] = {}  # party -> why it left the round for good
        self.failures: dict[int, str] = {}  # party -> "stage: why", over the whole round
        self.rejected: list[tuple[int, str, str]] = []  # (party, stage, reason): every refused message
        self._started = False

    # ---------------------------------------------------------------- state
    @property
    def stage(self) -> Stage:
        return self.core.stage

    @property
    def done(self) -> bool:
        return self.core.outcome is not None

    @property
    def outcome(self) -> ServerResult | Abort | None:
        return self.core.outcome

    @property
    def awaiting(self) -> frozenset[int]:
        """Parties whose answer to this stage has neither arrived nor been given up."""
        return frozenset(self._awaiting)

    @property
    def ready(self) -> bool:
        """Every party of this stage answered or is gone: the stage can close now."""
        return self._started and not self.done and not self._awaiting

    def __enter__(self) -> "ServerDriver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the core's resources (idempotent); the outcome stays readable."""
        shutdown = getattr(self.core, "shutdown", None)
        if callable(shutdown):
            shutdown()

    # ---------------------------------------------------------------- round
    def start(self, *, views: bool = False) -> dict[int, wire.Encoded]:
        """The round's first messages, by party (``views``: as for
        :meth:`close_stage`)."""
        if self._started:
            raise LocalProtocolError("the round has already started")
        self._started = True
        with self.observer.span(SERVER, self.stage, "core"):
            out = self.core.start()
        return self._outbox(out, views)

    def receive(self, party: int, data: wire.Encoded, *, stage: Stage | None = None) -> bool:
        """Take ``party``'s reply (wire bytes). Returns whether it was accepted.
        A refused reply changes nothing but the record, and its sender is
        dropped at this stage, unless it was refused as out of place
        (``wrong_round``: a late answer to an earlier stage is no failure of
        this one). A transport that knows which stage a reply answers passes
        ``stage``: a reply to another stage is then ignored (returns False,
        recorded nowhere)."""
        if not self._started:
            raise LocalProtocolError("start the round first")
        if stage is not None and stage != self.stage:
            return False
        stage = self.stage
        self.observer.message(stage, TO_SERVER, party, data)
        try:
            if party in self._left:  # gone for the rest of the round: a later answer is not taken
                raise RemoteProtocolError(f"party {party} left the round", AbortReason.UNEXPECTED_SENDER)
            with self.observer.span(SERVER, stage, "wire", party):
                msg: object = wire.decode(data, self.core.CLIENT_MESSAGES, max_size=self.core.max_message_bytes)
            with self.observer.span(SERVER, stage, "core", party):
                self.core.receive(party, msg)
        except RemoteProtocolError as exc:
            if not isinstance(party, int) or isinstance(party, bool):
                party = -1
            self.rejected.append((party, stage.value, exc.reason.value))
            if exc.reason is not AbortReason.WRONG_ROUND:
                self._drop(party, f"rejected ({exc.reason.value}): {exc}")
            self.observer.rejected(SERVER, stage, party, exc)
            return False
        self._awaiting.discard(party)
        self._answered.add(party)
        if self._gone.pop(party, None) is not None:  # given up earlier in this stage, answered after all
            self.failures.pop(party, None)
        return True

    def gone(self, party: int, why: str = "gone") -> None:
        """The transport knows ``party`` will not answer this stage (an error
        reply, a closed connection, a missed heartbeat)."""
        if party in self._awaiting:
            self._drop(party, why)

    def left(self, party: int, why: str = "left the round") -> None:
        """``party`` is gone for the rest of the round (a crashed process, a
        closed session): it is given up in this stage and is not awaited in
        any later one."""
        self._left.setdefault(party, why)
        self.gone(party, why)

    def _drop(self, party: int, why: str) -> None:
        if party in self._awaiting:  # an awaited party that failed counts as dropped at this stage
            self._awaiting.discard(party)
            self._gone[party] = why
            self.failures[party] = f"{self.stage.value}: {why}"

    def close_stage(self, *, views: bool = False) -> dict[int, wire.Encoded]:
        """The stage is over (everyone answered, or the deadline passed): the
        next stage's messages by party (empty when the round ended), as
        ``bytes``. With ``views=True``, a message the core laid out in place
        (the complete graph's ForwardedShares, written by the share routing
        into one buffer) comes as a read-only ``memoryview`` of that buffer,
        not copied: for a transport that can send a buffer view (in-process,
        or a writer that takes memoryviews); otherwise it is copied into
        ``bytes`` here, inside the wire span."""
        if not self._started:
            raise LocalProtocolError("start the round first")
        if self.done:
            raise LocalProtocolError("the round is already over")
        stage = self.stage
        for party in self._awaiting:
            self.failures[party] = f"{stage.value}: no reply before the deadline"
        self.observer.stage_closed(stage, frozenset(self._answered), frozenset(self._awaiting | set(self._gone)))
        with self.observer.span(SERVER, stage, "core"):
            out = self.core.close_round()
        return self._outbox(out, views)

    def _outbox(self, out: Mapping[int, object], views: bool = False) -> dict[int, wire.Encoded]:
        stage = self.stage
        encoded: dict[int, tuple[object, wire.Encoded]] = {}  # id -> (message, bytes): objects held, so ids stay unique
        box: dict[int, wire.Encoded] = {}
        with self.observer.span(SERVER, stage, "wire") if out else _NO_SPAN:
            for party, msg in out.items():
                hit = encoded.get(id(msg))
                if hit is None:  # bytes, or a read-only view where the core laid the message out in place
                    data = wire.encoded(msg)
                    hit = encoded[id(msg)] = (msg, data if views or type(data) is bytes else bytes(data))
                box[party] = hit[1]
        for party, data in box.items():
            self.observer.message(stage, TO_CLIENT, party, data)
        self._awaiting = set(self.core.replies_expected) - set(self._left)
        self._answered = set()
        self._gone = {p: why for p, why in self._left.items() if p in self.core.replies_expected}
        for party, why in self._gone.items():
            self.failures.setdefault(party, f"{stage.value}: {why}")
        if self.done:
            audit_logger.info(json.dumps(self.audit_record(), sort_keys=True, default=str))
        return box

    # ---------------------------------------------------------------- outcome
    def result(self, **extra: Any) -> AggregationResult:
        """The rule's result over the included clients; raises
        :class:`ProtocolAborted` if the round aborted (never a partial
        aggregate) and :class:`LocalProtocolError` if it is not over."""
        outcome = self.core.outcome
        if outcome is None:
            raise LocalProtocolError("the round is not over")
        if isinstance(outcome, Abort):
            raise ProtocolAborted(outcome.reason, f"at {outcome.stage}: {outcome.detail}",
                                  culprits=outcome.culprits)
        params: Any = getattr(self.core, "params", None)
        summary = dict(params.summary()) if params is not None else {}
        fields: dict[str, Any] = dict(
            protocol=self.protocol, rule=self.rule.name, aggregate=self.rule.finalize(outcome.sum_weighted,
                                                                                     outcome.sum_weights),
            sum_weighted=outcome.sum_weighted, sum_weights=outcome.sum_weights, included=outcome.included,
            dropped=dict(outcome.dropped), session_id=params.session_id.hex() if params is not None else "",
            bytes_sent={}, bytes_received={}, timings={}, params=summary,
            dp=getattr(outcome, "dp", None))  # a DP round's report (DPServerResult)
        fields.update(extra)
        return AggregationResult(**fields)

    def audit_record(self) -> dict[str, object]:
        """A value-free record of the round: the core's, the rule and the
        transport-level failures by party."""
        rec = dict(self.core.audit_record())
        rec["rule"] = self.rule.name
        # every refusal, the driver's (undecodable bytes, a party given up) and the core's
        rec["rejected_messages"] = [{"sender": p, "stage": st, "reason": r} for p, st, r in self.rejected]
        rec["failures"] = {str(k): v for k, v in sorted(self.failures.items())}
        return rec
