"""The observer hook of the round drivers: timings, byte counts, transcripts
and rejections reach a transport, a benchmark or an audit log through here,
never through code inside a loop.

A driver calls its observer at fixed points (every method has a default that
does nothing, so an observer overrides only what it needs):

* :meth:`Observer.message` for every message a driver hands out or takes in,
  as wire bytes, with its direction (``"to_client"`` / ``"to_server"``);
* :meth:`Observer.span` around every piece of work, as a context manager, so
  the observer picks the clock (wall, CPU, both) and what to add it to.
  ``part`` is ``"core"`` (the protocol's own work) or ``"wire"`` (encoding
  and decoding);
* :meth:`Observer.rejected` for every message refused, with the typed error;
* :meth:`Observer.stage_closed` when a stage ends.

:class:`Recorder` is the ready-made observer of the simulator and the tests.
"""

from __future__ import annotations

import contextlib
import time
from typing import ContextManager, Iterable

from ..errors import RemoteProtocolError
from ..protocols.stages import Stage

__all__ = ["Observer", "Recorder", "Observers", "TO_CLIENT", "TO_SERVER", "SERVER", "CLIENT"]

TO_CLIENT = "to_client"
TO_SERVER = "to_server"
SERVER = "server"
CLIENT = "client"

_NOTHING: ContextManager[None] = contextlib.nullcontext()


class Observer:
    """Receives what the drivers report. Subclass and override what you need."""

    def message(self, stage: Stage, direction: str, party: int, data: "bytes | memoryview") -> None:
        """A message on the wire: ``party`` is the client it goes to or comes from."""

    def span(self, role: str, stage: Stage, part: str, party: int | None = None) -> ContextManager[None]:
        """A context manager around work of ``role`` (``"server"``/``"client"``)
        in ``stage``; ``part`` is ``"core"`` or ``"wire"``."""
        return _NOTHING

    def rejected(self, role: str, stage: Stage, party: int, error: RemoteProtocolError) -> None:
        """A message from ``party`` was refused (the receiver's state is unchanged)."""

    def stage_closed(self, stage: Stage, answered: frozenset[int], missing: frozenset[int]) -> None:
        """The server closed ``stage``: who answered it and who did not."""


class Observers(Observer):
    """Several observers as one."""

    def __init__(self, observers: Iterable[Observer]):
        self._observers = tuple(observers)

    def message(self, stage: Stage, direction: str, party: int, data: "bytes | memoryview") -> None:
        for o in self._observers:
            o.message(stage, direction, party, data)

    def span(self, role: str, stage: Stage, part: str, party: int | None = None) -> ContextManager[None]:
        stack = contextlib.ExitStack()
        for o in self._observers:
            stack.enter_context(o.span(role, stage, part, party))
        return stack  # type: ignore[return-value]  # ExitStack's __exit__ returns a bool

    def rejected(self, role: str, stage: Stage, party: int, error: RemoteProtocolError) -> None:
        for o in self._observers:
            o.rejected(role, stage, party, error)

    def stage_closed(self, stage: Stage, answered: frozenset[int], missing: frozenset[int]) -> None:
        for o in self._observers:
            o.stage_closed(stage, answered, missing)


class _Timer:
    __slots__ = ("_sink", "_key", "_t0")

    def __init__(self, sink: dict[str, float], key: str):
        self._sink, self._key, self._t0 = sink, key, 0.0

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._sink[self._key] = self._sink.get(self._key, 0.0) + time.perf_counter() - self._t0


class Recorder(Observer):
    """Bytes per client, wall-clock seconds per ``"{stage}.{role}s"`` (server
    work as ``"{stage}.server"``, all clients' work as ``"{stage}.clients"``),
    the transcript (if ``transcript=True``) and the rejections."""

    def __init__(self, *, transcript: bool = False):
        self.bytes_sent: dict[int, int] = {}  # by each client, to the server
        self.bytes_received: dict[int, int] = {}  # by each client, from the server
        self.timings: dict[str, float] = {}
        self.transcript: list[tuple[str, str, int, bytes]] | None = [] if transcript else None
        self.rejections: list[tuple[str, str, int, str]] = []  # (role, stage, party, reason)

    def message(self, stage: Stage, direction: str, party: int, data: "bytes | memoryview") -> None:
        book = self.bytes_sent if direction == TO_SERVER else self.bytes_received
        book[party] = book.get(party, 0) + len(data)
        if self.transcript is not None:
            self.transcript.append((stage.value, direction, party, data if type(data) is bytes else bytes(data)))

    def span(self, role: str, stage: Stage, part: str, party: int | None = None) -> ContextManager[None]:
        return _Timer(self.timings, f"{stage.value}.{'server' if role == SERVER else 'clients'}")

    def rejected(self, role: str, stage: Stage, party: int, error: RemoteProtocolError) -> None:
        self.rejections.append((role, stage.value, party, error.reason.value))

    def timer(self) -> Observer:
        """An observer that adds only its spans to these timings (for client
        drivers, whose messages the server's observer already counts)."""
        return _SpansOnly(self)


class _SpansOnly(Observer):
    def __init__(self, target: Observer):
        self._target = target

    def span(self, role: str, stage: Stage, part: str, party: int | None = None) -> ContextManager[None]:
        return self._target.span(role, stage, part, party)
