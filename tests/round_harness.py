"""The one test harness for rounds: a thin layer over the in-process
transport (:class:`~secagg.transports.inprocess.LocalRound`) and the round
drivers, for both protocol families, stepped stage by stage.

Every message goes through the canonical wire format and the drivers; the
harness adds only what a test needs to play the network or a dishonest
server:

* ``step(skip=, tamper=, tamper_reply=, hold=, parties=, close=)``: deliver the
  pending messages (to ``parties`` only, in that order, if given), with the
  ``skip``ped parties vanishing at this stage, messages to clients and replies
  rewritten or lost (``tamper(party, msg)``/``tamper_reply(party, msg)`` return
  the message, its bytes, or ``None``), replies ``hold``-en back by the network
  (:meth:`release` hands them on later, in any order), and the stage closed
  or left open;
* ``send(party, msg)``: the server sends one message of its own making to a
  client driver and gets the answer (or ``None``; :meth:`refusal` says why);
* ``outgoing`` / ``replies``: the pending server messages and the last replies,
  decoded; ``driver`` and ``server``: the server driver and its protocol core;
  ``watch``: what the server driver reported (bytes, typed rejections).

The round-driving loop itself is LocalRound's; the only loops here are
:meth:`run` and :meth:`run_to` (step until done or until a stage).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from secagg.drivers import ClientDriver, Contribution, Recorder, ServerDriver
from secagg.drivers.observer import TO_CLIENT
from secagg.encoding import wire
from secagg.errors import AbortReason, RemoteProtocolError, SecAggError, WireFormatError
from secagg.protocols.stages import Stage
from secagg.transports.inprocess import LocalRound

#: ``(party, message) -> message | bytes | None``: rewrite a message, or lose it.
Rewrite = Callable[[int, Any], Any]


def _decoded(data: bytes) -> Any:
    """The message in ``data``, or the bytes themselves if they are not one (a reply tampered into junk)."""
    try:
        return wire.decode(data)
    except WireFormatError:
        return data


class Watch(Recorder):
    """The server driver's observer in tests: a :class:`Recorder` that also
    keeps every refused message's typed error."""

    def __init__(self) -> None:
        super().__init__(transcript=True)
        self.errors: list[tuple[int, RemoteProtocolError]] = []

    def rejected(self, role: str, stage: Stage, party: int, error: RemoteProtocolError) -> None:
        super().rejected(role, stage, party, error)
        self.errors.append((party, error))


class Network:
    """A round between ``core`` (a protocol's server, driven by a
    :class:`ServerDriver` with ``rule``) and ``clients`` (party -> client
    driver); ``contributions`` go with each client's first message. The
    round's first messages are pending once this is built."""

    def __init__(self, core: Any, rule: str, clients: Mapping[int, ClientDriver],
                 contributions: Mapping[int, Contribution], *, protocol: str | None = None):
        self.watch = Watch()
        self.driver = ServerDriver(core, rule, observer=self.watch, protocol=protocol)
        self.server = core
        self.network = LocalRound(self.driver, clients, contributions, tamper=self._hook)
        self.held: dict[int, bytes] = {}
        self.replies: dict[int, Any] = {}
        self._rewrite_out: Rewrite | None = None
        self._rewrite_in: Rewrite | None = None
        self._hold = False
        self._sent: dict[int, bytes] = {}
        self._decoded: tuple[int, dict[int, Any]] | None = None
        self.network.start()

    # ------------------------------------------------------------ views
    @property
    def clients(self) -> dict[int, ClientDriver]:
        return self.network.clients

    @property
    def outgoing(self) -> dict[int, Any]:
        """The pending server messages, decoded (each distinct encoding decoded once)."""
        box = self.network.outbox
        if self._decoded is None or self._decoded[0] != id(box) or len(self._decoded[1]) != len(box):
            cache: dict[int, Any] = {}  # by id: views of the server's buffers are unhashable
            self._decoded = (id(box), {p: cache[id(d)] if id(d) in cache else cache.setdefault(id(d), wire.decode(d))
                                       for p, d in box.items()})
        return self._decoded[1]

    @property
    def stage(self) -> Stage:
        return self.driver.stage

    @property
    def outcome(self) -> Any:
        return self.driver.outcome

    # ------------------------------------------------------------ stepping
    def _hook(self, direction: str, stage: Stage, party: int, data: "bytes | memoryview") -> "bytes | memoryview | None":
        rewrite = self._rewrite_out if direction == TO_CLIENT else self._rewrite_in
        if rewrite is not None:
            out = rewrite(party, wire.decode(data))
            if out is None:
                return None
            data = out if isinstance(out, (bytes, memoryview)) else wire.encode(out)
        if direction != TO_CLIENT:
            self._sent[party] = data
            if self._hold:
                self.held[party] = data
                return None
        return data

    def step(self, skip: Iterable[int] = (), tamper: Rewrite | None = None, tamper_reply: Rewrite | None = None,
             *, hold: bool = False, parties: Iterable[int] | None = None, close: bool = True) -> dict[int, Any]:
        """Deliver this stage's pending messages (see the module docstring).
        Returns the replies the clients sent, decoded (after ``tamper_reply``;
        bytes that are no message stay bytes)."""
        stage = self.driver.stage
        for party in skip:
            self.network.dropouts[party] = stage
        self._rewrite_out, self._rewrite_in, self._hold = tamper, tamper_reply, hold
        self._sent = {}
        try:
            self.network.deliver(parties)
        finally:
            self._rewrite_out = self._rewrite_in = None
            self._hold = False
        self.replies = {p: _decoded(d) for p, d in self._sent.items()}
        if close:
            self.close()
        return self.replies

    def release(self, parties: Iterable[int] | None = None) -> dict[int, bool]:
        """Hand held replies to the server driver (all, or ``parties`` in that
        order). Returns whether each was accepted."""
        order = list(self.held) if parties is None else list(parties)
        return {p: self.driver.receive(p, self.held.pop(p)) for p in order}

    def close(self) -> bool:
        """Close the stage (held replies are lost). Returns whether the round goes on."""
        self.held.clear()
        return self.network.close()

    def run(self, drop: Mapping[int, "Stage | str"] | None = None) -> Any:
        """Step to the end; ``drop`` maps parties to the stage at which they vanish."""
        self.network.dropouts.update({p: Stage(s) for p, s in (drop or {}).items()})
        while not self.driver.done:
            self.step()
        return self.driver.outcome

    def run_to(self, stage: "Stage | str", drop: Mapping[int, "Stage | str"] | None = None) -> None:
        """Step until ``stage``'s messages are pending."""
        stage = Stage(stage)
        self.network.dropouts.update({p: Stage(s) for p, s in (drop or {}).items()})
        while self.driver.stage is not stage:
            assert not self.driver.done, f"the round ended ({self.driver.outcome}) before {stage.value}"
            self.step()

    # ------------------------------------------------------------ a dishonest server
    def send(self, party: int, msg: Any, contribution: Contribution | None = None) -> Any:
        """The server sends ``msg`` (a message, its bytes or a view of them) to ``party``'s
        driver; returns the decoded answer, or ``None``."""
        data = msg if isinstance(msg, (bytes, memoryview)) else wire.encode(msg)
        out = self.network.clients[party].handle(data, contribution)
        return None if out is None else wire.decode(out)

    def error(self, party: int) -> SecAggError | None:
        """Why ``party``'s driver sent nothing for the last message it handled."""
        return self.network.clients[party].last_error

    def refusal(self, party: int) -> AbortReason | None:
        """The typed reason of ``party``'s last refusal (a failed protocol check), if any."""
        err = self.error(party)
        return err.reason if isinstance(err, RemoteProtocolError) else None

    def server_refusals(self) -> list[tuple[int, str, str]]:
        """Messages the server driver refused: (party, stage, reason)."""
        return [(party, stage, reason) for _, stage, party, reason in self.watch.rejections]
