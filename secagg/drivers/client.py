"""The client driver: one I/O-free object that answers a server's messages
for any protocol family and any transport.

::

    driver = ClientDriver(MaskingClientRole(client_id=3), store=MemoryStore())
    reply = driver.handle(first_message, Contribution(update, weight))   # the round's parameters
    reply = driver.handle(next_message)                                   # every later message
    # reply is the answer's wire bytes, or None: nothing to send (see driver.last_error)

For every message the driver decodes it (only the role's server messages),
finds its session, loads the saved state from the :class:`~secagg.drivers.store.StateStore`,
lets the role compute the answer, then **claims (session, stage) in the
store** and only then saves the new state and releases the reply: a client
answers each stage of a session at most once, whatever copies of its state
exist (security invariant 1). The claim comes after every check of the
message, so a malformed message cannot burn a stage. A message that fails a
protocol check ends the session for this client: its state (and every secret
in it) is dropped and nothing is sent.

Roles (the protocol-specific part) live beside this module:
:class:`~secagg.drivers.masking.MaskingClientRole`,
:class:`~secagg.drivers.paillier.PaillierClientRole` and
:class:`~secagg.drivers.paillier.KeyHolderRole`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..encoding import wire
from ..errors import AbortReason, LocalProtocolError, ParameterError, RemoteProtocolError, SecAggError
from ..protocols.stages import Stage
from .observer import CLIENT, TO_CLIENT, TO_SERVER, Observer
from .store import MemoryStore, StateStore

__all__ = ["ClientDriver", "ClientRole", "Contribution", "Step"]


@dataclass(frozen=True)
class Contribution:
    """What a client brings to a round: its update and its weight (> 0; 1 for
    the unweighted rules)."""

    update: np.ndarray
    weight: float = 1.0

    def __repr__(self) -> str:  # the update is private
        return f"Contribution(<{np.size(self.update)} values>, weight=<hidden>)"


@dataclass(frozen=True)
class Step:
    """A role's answer to one message: the reply message (or ``None``), the
    state to save (or ``None``), and whether the round is over for it."""

    reply: object | None
    state: object | None = None
    finished: bool = False


class ClientRole(Protocol):
    """The protocol-specific part of a client."""

    party: int
    SERVER_MESSAGES: tuple[type, ...]

    def session_of(self, msg: Any) -> bytes: ...

    def stage_of(self, msg: Any) -> Stage: ...

    def step(self, msg: Any, saved: Any, contribution: Contribution | None) -> Step: ...


class ClientDriver:
    """Answers one party's messages, round after round, through ``store``."""

    def __init__(self, role: ClientRole, store: StateStore | None = None, *, observer: Observer | None = None,
                 max_message_bytes: int = wire.MAX_MESSAGE_BYTES):
        self.role = role
        self.store = store if store is not None else MemoryStore()
        self.observer = observer or Observer()
        self.max_message_bytes = max_message_bytes
        self.last_error: SecAggError | None = None  # why the last message got no reply
        self.last_stage: Stage | None = None

    @property
    def party(self) -> int:
        return self.role.party

    def handle(self, data: "bytes | memoryview", contribution: Contribution | None = None) -> bytes | None:
        """Answer one server message (wire bytes). Returns the reply's bytes,
        or ``None`` when there is nothing to send: the message needs no answer
        (:attr:`last_error` is ``None``), or it was refused (:attr:`last_error`
        says why: a :class:`~secagg.errors.RemoteProtocolError` is a protocol
        check the server's message failed, which also ends the session for
        this client, except ``wrong_round`` (a message out of place: a
        duplicate delivery, a stage out of order, an unknown session), which
        is ignored; a :class:`~secagg.errors.LocalProtocolError` or
        :class:`~secagg.errors.ParameterError` is a stage already answered, a
        round this party's policy refuses or a contribution that does not fit
        the round, and changes nothing). It never raises for anything a
        message causes. ``contribution`` goes with the first message of a
        round. Not thread-safe per driver; the store's claims are safe across
        drivers, threads and (for :class:`DirectoryStore`) processes."""
        self.last_error = None
        party = self.role.party
        obs = self.observer
        try:
            with obs.span(CLIENT, self.last_stage or Stage.ADVERTISE_KEYS, "wire", party):
                msg: Any = wire.decode(data, self.role.SERVER_MESSAGES, max_size=self.max_message_bytes)
        except RemoteProtocolError as exc:
            obs.message(self.last_stage or Stage.ADVERTISE_KEYS, TO_CLIENT, party, data)
            self._refuse(exc, None, self.last_stage or Stage.ADVERTISE_KEYS)
            return None
        stage = self.role.stage_of(msg)
        self.last_stage = stage
        obs.message(stage, TO_CLIENT, party, data)
        with obs.span(CLIENT, stage, "core", party):  # protocol work too (for the parameters, a hash of them)
            session = self.role.session_of(msg)
        try:
            with obs.span(CLIENT, stage, "core", party):
                step = self.role.step(msg, self.store.load(session), contribution)
            self.store.claim(session, stage.value)  # after every check, before anything leaves
        except RemoteProtocolError as exc:
            # out of place (a duplicate delivery, a stage out of order, a session
            # this client does not know): ignored, the round goes on; any other
            # failed check ends the session for this client
            self._refuse(exc, None if exc.reason is AbortReason.WRONG_ROUND else session, stage)
            return None
        except (LocalProtocolError, ParameterError) as exc:
            # answered already, a round this party's policy refuses, or a
            # contribution that does not fit the round: nothing changes
            self._refuse(exc, None, stage)
            return None
        if step.finished:
            self.store.finish(session)
        elif step.state is not None:
            self.store.save(session, step.state)
        if step.reply is None:
            return None
        with obs.span(CLIENT, stage, "wire", party):
            out = wire.encode(step.reply)
        obs.message(stage, TO_SERVER, party, out)
        return out

    def _refuse(self, exc: SecAggError, session: bytes | None, stage: Stage) -> None:
        self.last_error = exc
        if isinstance(exc, RemoteProtocolError):
            self.observer.rejected(CLIENT, stage, self.role.party, exc)
            if session is not None:  # a server that failed a check: leave the round, drop its secrets
                self.store.finish(session)
