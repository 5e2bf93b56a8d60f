"""Where a client keeps its round state between messages, and the
once-per-(session, stage) claim (security invariant 1).

A client answers each stage of a session at most once. A transport that
keeps several copies of a client's state (Flower runs tasks of one node from
the same saved state; a process may restart from a snapshot) would otherwise
let a dishonest server ask the same stage twice, say two different alive sets
to sign, or two unmask requests with different dropped sets, and collect
both kinds of share of one peer. The client driver claims (session, stage) in
the store *after* the message passed every check and *before* the reply
leaves: only the first claim succeeds.

:class:`MemoryStore` keeps everything in this process; :class:`DirectoryStore`
makes claims as files created with ``O_EXCL`` in a private directory (shared
by every process of one node) and keeps states in memory or in files. A
transport may bring its own (the Flower adapter keeps states in Flower's
node-local ``context.state`` and claims in a :class:`DirectoryStore`).

When a round ends for a client, :meth:`StateStore.finish` drops its state and
its stage claims and keeps one tombstone, so the session cannot be started
again; tombstones are bounded (the oldest go first).
"""

from __future__ import annotations

import abc
import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path

from ..encoding import wire
from ..errors import LocalProtocolError

__all__ = ["StateStore", "MemoryStore", "DirectoryStore", "StageAlreadyAnswered", "MAX_TOMBSTONES",
           "check_private_directory"]

#: Finished sessions remembered per store.
MAX_TOMBSTONES = 4096


class StageAlreadyAnswered(LocalProtocolError):
    """This client already answered this stage of this session (or the session
    is over): a second answer is refused."""


class StateStore(abc.ABC):
    """The interface the client driver uses."""

    @abc.abstractmethod
    def load(self, session: bytes) -> object | None:
        """The saved state of ``session`` (a wire message of the role), or ``None``."""

    @abc.abstractmethod
    def save(self, session: bytes, state: object) -> None:
        """Replace the saved state of ``session``."""

    @abc.abstractmethod
    def claim(self, session: bytes, stage: str) -> None:
        """Claim ``stage`` of ``session``; raises :class:`StageAlreadyAnswered`
        if it was claimed before or the session is finished."""

    @abc.abstractmethod
    def finish(self, session: bytes) -> None:
        """The round is over for this client: drop its state and claims, keep a tombstone."""


class _Tombstones:
    def __init__(self, limit: int):
        self._limit = limit
        self._done: OrderedDict[bytes, None] = OrderedDict()

    def add(self, session: bytes) -> None:
        self._done[session] = None
        self._done.move_to_end(session)
        while len(self._done) > self._limit:
            self._done.popitem(last=False)

    def __contains__(self, session: bytes) -> bool:
        return session in self._done


class MemoryStore(StateStore):
    """States (as the immutable objects they are) and claims in this process
    (thread-safe)."""

    def __init__(self, *, max_tombstones: int = MAX_TOMBSTONES):
        self._lock = threading.Lock()
        self._states: dict[bytes, object] = {}
        self._claims: dict[bytes, set[str]] = {}
        self._finished = _Tombstones(max_tombstones)

    def load(self, session: bytes) -> object | None:
        with self._lock:
            return self._states.get(session)

    def save(self, session: bytes, state: object) -> None:
        with self._lock:
            if session in self._finished:
                raise StageAlreadyAnswered("this session is over for this client")
            self._states[session] = state

    def claim(self, session: bytes, stage: str) -> None:
        with self._lock:
            if session in self._finished:
                raise StageAlreadyAnswered("this session is over for this client")
            claimed = self._claims.setdefault(session, set())
            if stage in claimed:
                raise StageAlreadyAnswered(f"stage {stage} of this session was already answered")
            claimed.add(stage)

    def finish(self, session: bytes) -> None:
        with self._lock:
            self._states.pop(session, None)
            self._claims.pop(session, None)
            self._finished.add(session)

    def __len__(self) -> int:
        """Sessions with a live state or claims (tombstones not counted)."""
        with self._lock:
            return len(set(self._states) | set(self._claims))


_STAGE = re.compile(r"^[a-z_]{1,32}$")


def check_private_directory(base: Path) -> None:
    """The directory must be this user's own, not a symbolic link and not
    writable by anyone else: otherwise another local user could delete claims
    and let a second answer through. Raises :class:`LocalProtocolError` (fail
    closed)."""
    st = os.lstat(base)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise LocalProtocolError(f"state directory {base} is not a plain directory")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise LocalProtocolError(f"state directory {base} must belong to this user and be writable by it alone")


class DirectoryStore(StateStore):
    """Claims as ``O_EXCL`` files under a private directory, so that every
    process of one node sees the same claims; states in files (mode 0600)
    beside them, in the canonical wire form. ``finish`` removes the session's directory and leaves an
    empty tombstone file; at most ``max_tombstones`` are kept (oldest removed
    first), so the directory stays bounded."""

    def __init__(self, directory: str | os.PathLike[str], *, max_tombstones: int = MAX_TOMBSTONES):
        self.base = Path(directory)
        self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        check_private_directory(self.base)
        self._max_tombstones = max_tombstones

    def _dir(self, session: bytes) -> Path:
        return self.base / session.hex()

    def _tomb(self, session: bytes) -> Path:
        return self.base / f"{session.hex()}.done"

    def _check_open(self, session: bytes) -> None:
        if self._tomb(session).exists():
            raise StageAlreadyAnswered("this session is over for this client")

    def load(self, session: bytes) -> object | None:
        try:
            data = (self._dir(session) / "state").read_bytes()
        except FileNotFoundError:
            return None
        return wire.decode(data)

    def save(self, session: bytes, state: object) -> None:
        self._check_open(session)
        d = self._dir(session)
        d.mkdir(exist_ok=True, mode=0o700)
        tmp = d / "state.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(wire.encode(state))
        os.replace(tmp, d / "state")

    def claim(self, session: bytes, stage: str) -> None:
        if not _STAGE.match(stage):
            raise LocalProtocolError(f"bad stage name {stage!r}")
        self._check_open(session)
        d = self._dir(session)
        d.mkdir(exist_ok=True, mode=0o700)
        try:
            fd = os.open(d / f"claim.{stage}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            raise StageAlreadyAnswered(f"stage {stage} of this session was already answered") from None
        os.close(fd)

    def finish(self, session: bytes) -> None:
        fd = os.open(self._tomb(session), os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        d = self._dir(session)
        if d.exists():
            for f in d.iterdir():
                f.unlink(missing_ok=True)
            d.rmdir()
        tombs = sorted(self.base.glob("*.done"), key=lambda p: p.stat().st_mtime_ns)
        for old in tombs[:max(0, len(tombs) - self._max_tombstones)]:
            old.unlink(missing_ok=True)

    def sessions(self) -> list[str]:
        """Hex ids of sessions with a live state or claims (for tests and operators)."""
        return sorted(p.name for p in self.base.iterdir() if p.is_dir())
