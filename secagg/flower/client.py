"""Client side: a Flower mod that runs secure aggregation (the masking
protocol, or Paillier with a decryption committee) around a ClientApp's
``train`` function.

Add it to an existing ClientApp and keep the train function as it is::

    from secagg.flower import secagg_mod
    app = ClientApp(mods=[secagg_mod])      # or @app.train(mods=[secagg_mod])

The protocol is the shared client driver (:class:`~secagg.drivers.ClientDriver`
with a :class:`~secagg.drivers.MaskingClientRole`); the mod moves its bytes
and adds what is Flower's own. With each ``train`` message from a
:class:`~secagg.flower.SecAggFedAvg` server:

* **advertise_keys** (first message of a round: global model, train config,
  the round's parameters, this node's client id). The mod checks the
  parameters against this node's policy, calls the wrapped train function with
  the global model and config exactly as a plain FedAvg round would, computes
  the update ``local - global`` and the weight (the reply metric the server
  names, ``num-examples`` by default; 1 for rules that do not use weights),
  and hands both to the driver, which makes the round's keys, keeps the
  update in the node's state (it never leaves the node in the clear) and
  answers with public keys only. The train reply's arrays and metrics are
  dropped: per-node metrics would leak what the aggregate hides.
* every later message (key broadcast, forwarded shares, consistency request,
  unmask request): the driver restores the client from the node's state,
  answers and saves the new state. The masked input is computed from the
  stored update, which is deleted right after; after the last message every
  secret of the round is deleted.

The driver answers each stage of a session at most once on this node: it
claims (session, stage) in a ledger directory shared by all of the node's
ClientApp processes after the message passed every check and before the reply
leaves (:class:`NodeStateStore`). Anything wrong (bad parameters, a server
message that fails a protocol check, a stage already answered, a train
function that fails) becomes an error reply: the server then counts this node
as dropped, and a node that caught the server misbehaving leaves the round
(its secrets are deleted) and sends nothing more in it.

Secrets live only in ``context.state``, which Flower keeps on the SuperNode
(it never travels to the SuperLink). Train messages without a secure-aggregation
record are refused unless the mod is built with ``allow_plaintext=True``: a
node that installed the mod never hands its model to a server that skipped the
protocol.

A Paillier round (``secagg-protocol = "paillier"``) runs the same way with a
:class:`~secagg.drivers.CommitteeClientRole`: **identify** (the node tells
its committee holder id and the committee key id it pinned), **submit** (the
round's :class:`~secagg.protocols.paillier.PaillierParams` with the global
model: the node trains, then encrypts and submits its update; its saved state
is the session's :class:`~secagg.protocols.paillier.threshold.DecryptorRecord`,
which holds no secret), **decrypt** and **decrypt_recovery** (its share of the
aggregate's decryption, with a proof). The key share is read from the share
file for each message and never kept in ``context.state``.

Node-local settings (``flower-supernode --node-config``), chosen by the node's
operator, not by the server:

* ``secagg-min-clients``: refuse rounds with fewer participants (default 2);
* ``secagg-audit-dir``: write this node's own update and weight for each round
  to this directory (never sent anywhere; for audits and tests);
* ``secagg-signing-key`` and ``secagg-trusted-keys``: this node's Ed25519 key
  file and the federation's list of verification keys, for the
  malicious-server mode (:mod:`secagg.flower.keys`);
* ``secagg-require-malicious-server``: refuse rounds that are not in the
  malicious-server mode (default false);
* ``secagg-ledger-dir``: where the node's claims live (default a per-user
  directory under the system temp dir); ``secagg-ledger-tombstones`` (4096)
  and ``secagg-ledger-open-sessions`` (8) bound it (:class:`NodeLedger`);
* ``secagg-committee-key`` and ``secagg-key-share``: the Paillier decryption
  committee's public key file (pinned: rounds under another key are refused)
  and this node's share file (:mod:`secagg.flower.keys`);
* ``secagg-min-key-bits``: refuse a committee key smaller than this (2048);
* ``secagg-require-dp``: refuse training rounds without distributed
  differential privacy (default false), so a server cannot switch DP off for
  this node;
* ``secagg-dp-max-round-epsilon``: refuse a training round whose DP
  parameters give more than this epsilon for one round (at the round's own
  survivor floor ``n_min``, the fewest whose sum the server can release, and
  at ``secagg-dp-policy-delta``, default 1e-5), computed by the node itself
  from the round's noise, granularity, clip and bits with
  :func:`secagg.dp.accounting.round_guarantee` (no subsampling credit: the
  node cannot check the server's sampling); a round without DP is refused
  too. Needs ``dp-accounting`` on the node (without it such rounds are
  refused). Private-metrics (evaluation) rounds are not DP rounds and are
  not subject to these two settings.

In a DP training round the node's weight is 1 whatever reply metric the
server names (the round is unweighted: a weight would be released without
noise), and its update is clipped in L2 and noised by the DP encoding before
masking or encryption (protocols/dp/SPEC.md §9).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode

from ..drivers.client import ClientDriver, Contribution
from ..drivers.committee import CommitteeClientRole, DPDecryptorRecord
from ..drivers.masking import MaskingClientRole, MaskingRecord
from ..drivers.store import DirectoryStore, StageAlreadyAnswered, StateStore, check_private_directory
from ..dp.round import DPRoundParams
from ..encoding import wire
from ..encoding.fixed_point import check_finite
from ..errors import AbortReason, LocalProtocolError, ParameterError, RemoteProtocolError, SecAggError
from ..primitives import paillier as pl
from ..primitives import threshold_paillier as tp
from ..protocols.masking import MaskingParams
from ..protocols.masking.params import DPMaskingParams
from ..protocols.paillier.params import DPPaillierParams, PaillierParams
from ..protocols.paillier.threshold import CommitteeKey, DecryptorRecord
from ..protocols.stages import Stage
from .keys import load_committee_key, load_key_share, load_signing_key, load_trusted_keys, verification_key
from .records import RECORD_KEY, STATE_KEY, ModelLayout, bytes_field, pack, unpack

__all__ = ["secagg_mod", "make_secagg_mod", "NodeStateStore", "NodeLedger", "node_store", "SETUP_STAGE", "IDENTIFY_STAGE",
           "PAILLIER_SETUP_STAGE"]

log = logging.getLogger("flwr.secagg")

#: The stage of a round's first message (the global model and the round's parameters).
SETUP_STAGE = Stage.ADVERTISE_KEYS.value
#: Before a round: the server asks for the node's verification key (malicious-server mode) or, in a
#: Paillier round, for the node's committee holder id.
IDENTIFY_STAGE = "identify"
#: The stage of a Paillier round's first message (the global model and the round's parameters).
PAILLIER_SETUP_STAGE = Stage.SUBMIT.value
_PAILLIER_DECRYPT_STAGES = (Stage.DECRYPT.value, Stage.DECRYPT_RECOVERY.value)


class _Refused(ParameterError):
    """This node will not take part (its reason goes into the error reply)."""


class NodeStateStore(StateStore):
    """The client driver's store on a SuperNode: the round's state (a wire
    encoded :class:`~secagg.drivers.MaskingRecord`) in ``state`` (the run's
    ``context.state``, node-local memory that Flower never sends anywhere),
    one session at a time; the once-per-(session, stage) claims in ``ledger``,
    a :class:`~secagg.drivers.DirectoryStore` that every ClientApp process of
    the node shares.

    Saving a new session's state ends the previous session for this node
    (:meth:`retire`): a node takes part in one round of a run at a time, so
    the ledger holds at most one live session per run plus bounded
    tombstones."""

    def __init__(self, state: RecordDict, ledger: DirectoryStore, key: str = STATE_KEY):
        self._state = state
        self.ledger = ledger
        self._key = key

    def current_session(self) -> bytes | None:
        """The session whose state this node holds, if any."""
        rec = self._state.config_records.get(self._key)
        if rec is None:
            return None
        return bytes_field(rec, "session")

    def current(self) -> object | None:
        """The state of the session this node holds, if any."""
        session = self.current_session()
        return None if session is None else self.load(session)

    def load(self, session: bytes) -> object | None:
        rec = self._state.config_records.get(self._key)
        if rec is None or rec.get("session") != session:
            return None
        try:
            return wire.decode(bytes_field(rec, "record"))
        except RemoteProtocolError as exc:  # this node's own memory: damage is a local fault
            raise LocalProtocolError(f"this node's saved round state is damaged: {exc}") from None

    def save(self, session: bytes, state: object) -> None:
        self.retire(session)
        self._state[self._key] = ConfigRecord({"session": session, "record": wire.encode(state)})

    def claim(self, session: bytes, stage: str) -> None:
        self.ledger.claim(session, stage)

    def finish(self, session: bytes) -> None:
        if self.current_session() == session:
            del self._state[self._key]  # the secrets first
        self.ledger.finish(session)

    def retire(self, keep: bytes) -> None:
        """End the session this node holds unless it is ``keep``: its state
        (every secret in it) and its claims go, a tombstone stays."""
        session = self.current_session()
        if session is not None and session != keep:
            self.finish(session)


#: Finished sessions a node's ledger remembers (node config ``secagg-ledger-tombstones``).
LEDGER_TOMBSTONES = 4096
#: Sessions a node's ledger keeps open at once (node config ``secagg-ledger-open-sessions``): rounds of
#: concurrent runs; opening one more finishes the oldest.
LEDGER_OPEN_SESSIONS = 8
_SESSION_BYTES = 32
_HEADER = 8
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


class NodeLedger(DirectoryStore):
    """A SuperNode's claims, bounded on disk.

    Claims are ``O_EXCL`` files in one directory per open session (as in
    :class:`~secagg.drivers.DirectoryStore`), made only after a message
    passed every check; :meth:`finish` removes the session's directory when
    the round ends for the node. Finished sessions are remembered in one
    file of fixed size, ``finished.ring``: a ring of the last ``tombstones``
    session ids, written in place under an exclusive lock, so the ledger
    does not grow round after round. At most ``open_sessions`` sessions are
    open at once: opening one more finishes the oldest (a round left
    unfinished when its run ended, which no later round of that run
    retires)."""

    RING = "finished.ring"

    def __init__(self, directory: str | os.PathLike[str], *, tombstones: int = LEDGER_TOMBSTONES,
                 open_sessions: int = LEDGER_OPEN_SESSIONS):
        if tombstones < 1 or open_sessions < 1:
            raise ParameterError("a node ledger needs room for at least one session of each kind")
        super().__init__(directory, max_tombstones=tombstones)
        self.tombstones = tombstones
        self.open_sessions = open_sessions
        self._ring = self.base / self.RING
        size = _HEADER + tombstones * _SESSION_BYTES
        fd = os.open(self._ring, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            if st.st_size != size:
                if st.st_size:  # another capacity: keep what fits, newest first
                    kept = self._read_ring(fd, st.st_size)[-tombstones:]
                else:
                    kept = []
                os.ftruncate(fd, 0)
                os.ftruncate(fd, size)
                for sid in kept:
                    self._append(fd, sid)
        finally:
            os.close(fd)

    def _read_ring(self, fd: int, size: int) -> list[bytes]:
        """The ring's session ids, oldest first."""
        data = os.pread(fd, size, 0)
        if len(data) < _HEADER:
            return []
        slots = (len(data) - _HEADER) // _SESSION_BYTES
        if slots == 0:
            return []
        head = int.from_bytes(data[:_HEADER], "big") % slots
        ids = [data[_HEADER + i * _SESSION_BYTES:_HEADER + (i + 1) * _SESSION_BYTES] for i in range(slots)]
        ordered = ids[head:] + ids[:head]
        return [sid for sid in ordered if sid != bytes(_SESSION_BYTES)]

    def _append(self, fd: int, sid: bytes) -> None:
        head = int.from_bytes(os.pread(fd, _HEADER, 0), "big") % self.tombstones
        os.pwrite(fd, sid, _HEADER + head * _SESSION_BYTES)
        os.pwrite(fd, ((head + 1) % self.tombstones).to_bytes(_HEADER, "big"), 0)
        os.fsync(fd)

    @staticmethod
    def _sid(session: bytes) -> bytes:
        # fixed-size slots: the session id's hash (session ids are 32 random bytes; any length is accepted)
        return hashlib.sha256(b"secagg ledger session\0" + session).digest()

    def finished(self, session: bytes) -> bool:
        """Whether ``session`` is over for this node (remembered in the ring)."""
        if self._tomb(session).exists():  # a tombstone file of the earlier one-file-per-session ledger
            return True
        sid = self._sid(session)
        fd = os.open(self._ring, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return sid in self._read_ring(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def _check_open(self, session: bytes) -> None:
        if self.finished(session):
            raise StageAlreadyAnswered("this session is over for this client")
        if not self._dir(session).exists():  # a session opens: keep the number of open ones bounded
            live = sorted((p for p in self.base.iterdir() if p.is_dir() and not p.is_symlink()
                           and _HEX.fullmatch(p.name)), key=lambda p: p.stat().st_mtime_ns)
            for old in live[:max(0, len(live) - self.open_sessions + 1)]:
                self.finish(bytes.fromhex(old.name))

    def finish(self, session: bytes) -> None:
        fd = os.open(self._ring, os.O_RDWR | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            sid = self._sid(session)
            if sid not in self._read_ring(fd, os.fstat(fd).st_size):
                self._append(fd, sid)  # the tombstone first: from now on no claim of the session succeeds
        finally:
            os.close(fd)
        d = self._dir(session)
        if d.is_dir() and not d.is_symlink():
            for f in d.iterdir():
                f.unlink(missing_ok=True)
            d.rmdir()

    def files(self) -> list[str]:
        """Every entry of the ledger directory (for tests and operators)."""
        return sorted(p.name for p in self.base.iterdir())


def _ledger_base(context: Context) -> Path:
    directory = context.node_config.get("secagg-ledger-dir")
    return Path(str(directory)) if directory else Path(tempfile.gettempdir()) / f"secagg-ledger-{os.getuid()}"


def node_store(context: Context) -> NodeStateStore:
    """This node's store for the run of ``context``. The ledger directory
    (node config ``secagg-ledger-dir``) must be this user's own, a plain
    directory (not a link) and writable by this user alone: otherwise another
    local user (who could, say, create the default directory under /tmp
    first) could delete claims and let a second answer through. Refusing
    fails closed: the node drops out."""
    base = _ledger_base(context)
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        check_private_directory(base)
        tombstones = _node_int(context, "secagg-ledger-tombstones", LEDGER_TOMBSTONES)
        open_sessions = _node_int(context, "secagg-ledger-open-sessions", LEDGER_OPEN_SESSIONS)
        ledger = NodeLedger(base / str(int(context.node_id)), tombstones=tombstones, open_sessions=open_sessions)
    except (LocalProtocolError, OSError, ParameterError) as exc:
        raise _Refused(f"cannot use the ledger directory {base}: {exc}") from None
    return NodeStateStore(context.state, ledger)


def _error_reply(msg: Message, reason: str, code: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION) -> Message:
    log.warning("secagg: refusing message: %s", reason)
    return Message(Error(code=code, reason=f"secagg: {reason}"), reply_to=msg)


def _node_bool(context: Context, key: str, default: bool) -> bool:
    value = context.node_config.get(key, default)
    if not isinstance(value, bool):
        raise _Refused(f"node config {key} must be true or false")
    return value


def _node_int(context: Context, key: str, default: int) -> int:
    value = context.node_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"node config {key} must be an integer")
    return value


def _node_float(context: Context, key: str) -> float | None:
    """An optional positive number of the node config (``None`` if absent)."""
    value = context.node_config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _Refused(f"node config {key} must be a number > 0, got {value!r}")
    return float(value)


#: The delta at which a node computes a round's epsilon for ``secagg-dp-max-round-epsilon`` (node config
#: ``secagg-dp-policy-delta``).
DP_POLICY_DELTA = 1e-5


def round_epsilon(dp: DPRoundParams, delta: float = DP_POLICY_DELTA) -> float:
    """The epsilon of one round with these DP parameters at ``delta``, for
    ``dp.n_min`` survivors (the fewest whose sum the round can release: more
    survivors only add noise) and no subsampling; computed from the noise,
    granularity, clip and bits alone (needs ``dp-accounting``)."""
    from ..dp.accounting import round_guarantee

    return float(round_guarantee(dp.pipeline, dp.n_min, delta, 1.0).epsilon)


def _dp_policy(context: Context, dp: DPRoundParams | None) -> None:
    """This node's DP rules for a training round (node config
    ``secagg-require-dp``, ``secagg-dp-max-round-epsilon``,
    ``secagg-dp-policy-delta``): raises :class:`_Refused`."""
    require = _node_bool(context, "secagg-require-dp", False)
    max_epsilon = _node_float(context, "secagg-dp-max-round-epsilon")
    if dp is None:
        if require or max_epsilon is not None:
            why = "secagg-require-dp" if require else f"secagg-dp-max-round-epsilon = {max_epsilon:g}"
            raise _Refused(f"this node trains only in rounds with distributed differential privacy (node config "
                           f"{why}); the round has none (the run needs secagg-dp-epsilon > 0)")
        return
    if max_epsilon is None:
        return
    delta = _node_float(context, "secagg-dp-policy-delta") or DP_POLICY_DELTA
    if delta >= 1:
        raise _Refused(f"node config secagg-dp-policy-delta must be in (0, 1), got {delta!r}")
    try:
        epsilon = round_epsilon(dp, delta)
    except ImportError as exc:  # cannot check the round: fail closed
        raise _Refused(f"node config secagg-dp-max-round-epsilon needs the dp-accounting package on this node: "
                       f"{exc}") from None
    if not epsilon <= max_epsilon:
        raise _Refused(f"the round's DP parameters give epsilon {epsilon:.4g} for one round (at delta {delta:g}, "
                       f"{dp.n_min} survivors); this node allows at most {max_epsilon:g} (node config "
                       f"secagg-dp-max-round-epsilon)")


def _node_path(context: Context, key: str, why: str) -> str:
    value = context.node_config.get(key)
    if not isinstance(value, str) or not value:
        raise _Refused(f"{why} needs the node config {key} (a file path)")
    return value


def _signing_key(context: Context) -> bytes:
    return load_signing_key(_node_path(context, "secagg-signing-key", "the malicious-server mode"))


def _identify(msg: Message, rec: ConfigRecord, context: Context) -> Message:
    """Before a round. Malicious-server mode: tell the server this node's
    verification key (which the other nodes find on their trusted lists). A
    Paillier round: this node's committee holder id (its client id in the
    round) and the id of the committee key it pinned."""
    if rec.get("protocol") == "paillier":
        committee, holder, _ = _committee_member(context)
        fields: dict[str, int | bytes] = {"holder-id": holder, "committee-key-id": committee.key_id}
        return Message(pack(IDENTIFY_STAGE, b"", **fields), reply_to=msg)
    key = verification_key(_signing_key(context))
    return Message(pack(IDENTIFY_STAGE, b"", **{"verify-key": key}), reply_to=msg)


def _committee_member(context: Context) -> tuple[CommitteeKey, int, tp.KeyShare]:
    """This node's pinned committee key (node config ``secagg-committee-key``),
    its holder id and its key share (``secagg-key-share``), checked against
    each other. Read from the files for every message: the share is never
    kept in ``context.state``."""
    committee = load_committee_key(_node_path(context, "secagg-committee-key", "a Paillier round"))
    holder, share = load_key_share(_node_path(context, "secagg-key-share", "a Paillier round"), committee)
    return committee, holder, share


def _committee_role(context: Context, committee: CommitteeKey, holder: int, share: tp.KeyShare
                    ) -> CommitteeClientRole:
    """This node's role in Paillier rounds: a client that is also a member of
    the decryption committee, with this node's floors."""
    min_clients = _node_int(context, "secagg-min-clients", 2)
    min_key_bits = _node_int(context, "secagg-min-key-bits", pl.DEFAULT_KEY_BITS)
    if min_clients < 2:
        raise _Refused("node config secagg-min-clients must be at least 2")
    if committee.public_key.key_bits < min_key_bits:
        raise _Refused(f"the committee's key has {committee.public_key.key_bits} bits; this node requires at least "
                       f"{min_key_bits} (node config secagg-min-key-bits)")
    return CommitteeClientRole(holder, committee, share, min_clients=min_clients, min_key_bits=min_key_bits)


def _node_policy(context: Context, client_id: int, training: bool = True) -> Callable[[MaskingParams], None]:
    """This node's operator's rules for a round, as the role's ``check_params``
    (raises :class:`_Refused`, a :class:`~secagg.errors.ParameterError`);
    ``training``: the DP rules apply (not to private-metrics rounds)."""
    min_clients = _node_int(context, "secagg-min-clients", 2)

    def check(params: MaskingParams) -> None:
        if params.n < min_clients:
            raise _Refused(f"round has {params.n} participants; this node requires at least {min_clients}")
        if training:
            _dp_policy(context, params.dp)
        if params.malicious_server:
            own = verification_key(_signing_key(context))
            trusted = load_trusted_keys(_node_path(context, "secagg-trusted-keys", "the malicious-server mode"))
            keys = params.signing_keys
            # the server must not invent parties: every key on the federation's list,
            # one party per key, and this node's own key at its own client id
            if keys.get(client_id) != own:
                raise _Refused("the round does not give this node its own verification key")
            if not set(keys.values()) <= trusted or len(set(keys.values())) != len(keys):
                raise _Refused("the round names verification keys that are not on this node's trusted list")
        elif _node_bool(context, "secagg-require-malicious-server", False):
            raise _Refused("this node requires the malicious-server mode (secagg-malicious-server = true)")

    return check


def _role(context: Context, client_id: int, params: MaskingParams,
          check_params: Callable[[MaskingParams], None] | None = None) -> MaskingClientRole:
    """The masking role of this node in the round of ``params``. In the
    malicious-server mode the node's policy has checked the round's keys
    against the federation's key *set* (client ids are labels the server
    assigns per round); the round's id -> key map is then the trusted map the
    core verifies against. Relabelling keys gains the server nothing: each
    party still proves it holds its key by signing."""
    if not params.malicious_server:
        return MaskingClientRole(client_id, check_params=check_params)
    return MaskingClientRole(client_id, signing_key=_signing_key(context),
                             trusted_signing_keys=dict(params.signing_keys), check_params=check_params)


def _answer(msg: Message, driver: ClientDriver, reply: bytes | None) -> Message:
    if reply is None:
        err = driver.last_error
        if isinstance(err, RemoteProtocolError) and err.reason is AbortReason.WRONG_ROUND:
            raise _Refused(f"message out of place ({err.reason.value}): {err}; ignored, nothing changed")
        if isinstance(err, RemoteProtocolError):
            raise _Refused(f"protocol check failed ({err.reason.value}): {err}; this node answers nothing more "
                           "in that session")
        if isinstance(err, StageAlreadyAnswered):
            raise _Refused(f"{err}: refusing a second answer")
        raise _Refused(str(err) if err is not None else "the message needs no answer")
    assert driver.last_stage is not None
    return Message(pack(driver.last_stage.value, reply), reply_to=msg)


def make_secagg_mod(*, allow_plaintext: bool = False, allow_plaintext_metrics: bool = False) -> Mod:
    """Build the client mod. ``allow_plaintext=True`` lets plain ``train``
    messages (no secure-aggregation record) through to the train function;
    ``allow_plaintext_metrics=True`` (or the node config
    ``secagg-allow-plain-metrics = true``) lets plain ``evaluate`` messages
    through, whose replies carry this node's own metrics to the server."""

    def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        kind = msg.metadata.message_type.split(".")[0]
        if kind not in (MessageType.TRAIN, MessageType.EVALUATE):
            return call_next(msg, context)  # a query: nothing of the round to protect
        if RECORD_KEY not in msg.content.config_records:
            if kind == MessageType.EVALUATE:
                try:
                    allowed = allow_plaintext_metrics or _node_bool(context, "secagg-allow-plain-metrics", False)
                except SecAggError as exc:
                    return _error_reply(msg, str(exc), ErrorCode.MOD_FAILED_PRECONDITION)
                if allowed:
                    return call_next(msg, context)
                return _error_reply(msg, "this node reports evaluation metrics under secure aggregation only; the "
                                         "server sent a plain evaluate message (run with secagg-private-metrics = "
                                         "true, or allow plain metrics on this node with the node config "
                                         "secagg-allow-plain-metrics = true)", ErrorCode.MOD_FAILED_PRECONDITION)
            if allow_plaintext:
                return call_next(msg, context)
            return _error_reply(msg, "this node only trains under secure aggregation; the server sent a plain "
                                     "train message (build the mod with allow_plaintext=True to allow it)",
                                ErrorCode.MOD_FAILED_PRECONDITION)
        try:
            rec = unpack(msg.content)
            if kind == MessageType.EVALUATE:  # a private-metrics round: the masking protocol over the metrics
                if rec["stage"] == SETUP_STAGE:
                    return _setup(msg, rec, context, call_next, metrics=True)
                if rec["stage"] in (IDENTIFY_STAGE, PAILLIER_SETUP_STAGE, *_PAILLIER_DECRYPT_STAGES):
                    raise _Refused(f"stage {rec['stage']!r} has no place in an evaluation round")
                return _step(msg, rec, context)
            if rec["stage"] == IDENTIFY_STAGE:
                return _identify(msg, rec, context)
            if rec["stage"] == SETUP_STAGE:
                return _setup(msg, rec, context, call_next)
            if rec["stage"] == PAILLIER_SETUP_STAGE:
                return _setup_paillier(msg, rec, context, call_next)
            if rec["stage"] in _PAILLIER_DECRYPT_STAGES:
                return _step_paillier(msg, rec, context)
            return _step(msg, rec, context)
        except SecAggError as exc:
            return _error_reply(msg, str(exc))

    return secagg_mod


secagg_mod: Mod = make_secagg_mod()
"""The client mod with the default policy (plain train messages refused)."""


def _setup(msg: Message, rec: ConfigRecord, context: Context, call_next: ClientAppCallable, *,
           metrics: bool = False) -> Message:
    """A masking round's first message: check the round, train (or, with
    ``metrics``, evaluate: a private-metrics round), and advertise keys."""
    payload = bytes_field(rec, "payload")
    # validates the threat model and ring size (a DP round's parameters: the DP parameters' wrap check too)
    params: MaskingParams = wire.decode(payload, (MaskingParams, DPMaskingParams))
    store = node_store(context)
    store.retire(params.session_id)  # a new round: the one before is over for this node, secrets and all
    client_id = rec.get("client-id")
    server_round = rec.get("round")
    arrays_key = rec.get("arrays-key")
    weighted_by = rec.get("weighted-by")
    if not isinstance(client_id, int) or isinstance(client_id, bool) or client_id not in params.client_ids:
        raise _Refused("the server assigned this node a client id outside the round")
    if not isinstance(server_round, int) or not isinstance(arrays_key, str) or not isinstance(weighted_by, str):
        raise _Refused("setup record lacks round, arrays-key or weighted-by")
    names: list[str] = []
    if metrics:
        keys = rec.get("metric-keys")
        names = keys.split(",") if isinstance(keys, str) and keys else []
        if not names or len(set(names)) != len(names) or len(names) != params.dim:
            raise _Refused(f"an evaluation round must name {params.dim} distinct metrics (metric-keys), got {keys!r}")
    policy = _node_policy(context, client_id, training=not metrics)
    policy(params)  # before training: a round this node refuses costs it nothing
    if metrics:
        trained = _evaluate(msg, context, call_next, arrays_key, weighted_by, names)
    else:  # a DP round is unweighted: weight 1, whatever metric the server names
        trained = _train(msg, context, call_next, arrays_key, "" if params.dp is not None else weighted_by,
                         params.dim)
    if isinstance(trained, Message):
        return trained
    update, weight = trained

    # the driver decodes the same parameters, checks them again (the policy included), makes the keys,
    # claims the stage and keeps the update in context.state
    driver = ClientDriver(_role(context, client_id, params, check_params=policy), store)
    answer = _answer(msg, driver, driver.handle(payload, Contribution(update, weight)))
    _audit(context, server_round, params, client_id, update, weight, kind="eval" if metrics else "")
    log.info("secagg: round %d: %s done, %d values, keys advertised as client %d of %d", server_round,
             "evaluation" if metrics else "training", update.size, client_id, params.n)
    return answer


def _evaluate(msg: Message, context: Context, call_next: ClientAppCallable, arrays_key: str, weighted_by: str,
              names: list[str]) -> Message | tuple[np.ndarray, float]:
    """Run the wrapped evaluate function on a private-metrics round's first
    message; returns the named metrics as a vector and the weight, or the
    evaluate function's error reply. The reply itself never leaves the node."""
    if arrays_key not in msg.content.array_records:
        raise _Refused(f"setup message has no ArrayRecord {arrays_key!r}")
    msg.content = RecordDict({k: v for k, v in msg.content.items() if k != RECORD_KEY})
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    found: dict[str, float] = {}
    for record in reply.content.metric_records.values():
        for name in names:
            if name in record and name not in found:
                value = record[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise _Refused(f"metric {name!r} must be a number")
                found[name] = float(value)
    missing = [n for n in names if n not in found]
    if missing:
        raise _Refused(f"the evaluate function's reply has no metric {', '.join(map(repr, missing))}")
    vector = np.array([found[n] for n in names], dtype=np.float64)
    check_finite(vector, "evaluation metrics")
    return vector, _weight(reply, weighted_by)


def _train(msg: Message, context: Context, call_next: ClientAppCallable, arrays_key: str, weighted_by: str,
           dim: int) -> Message | tuple[np.ndarray, float]:
    """Run the wrapped train function on the round's first message; returns
    this node's update (``local - global``) and weight, or the train
    function's error reply."""
    if arrays_key not in msg.content.array_records:
        raise _Refused(f"setup message has no ArrayRecord {arrays_key!r}")
    global_arrays = msg.content.array_records[arrays_key]
    layout = ModelLayout.of(global_arrays)
    if layout.dim != dim:
        raise _Refused(f"parameters aggregate {dim} values but the model has {layout.dim}")

    # the wrapped train function sees a plain FedAvg train message
    msg.content = RecordDict({k: v for k, v in msg.content.items() if k != RECORD_KEY})
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    if arrays_key not in reply.content.array_records:
        raise _Refused(f"the train function's reply has no ArrayRecord {arrays_key!r}")
    local = reply.content.array_records[arrays_key]
    layout.check(local, "the trained model")
    update = layout.to_vector(local) - layout.to_vector(global_arrays)
    check_finite(update, "model update")
    return update, _weight(reply, weighted_by)


def _setup_paillier(msg: Message, rec: ConfigRecord, context: Context, call_next: ClientAppCallable) -> Message:
    """A Paillier round's first message: check the round against this node's
    pinned committee key and floors, train, and hand the update to the
    committee role, which encrypts and submits it and registers the session
    for the decryption request to come."""
    payload = bytes_field(rec, "payload")
    # validates the packing layout against overflow (a DP round's parameters: the DP parameters' too)
    params: PaillierParams = wire.decode(payload, (PaillierParams, DPPaillierParams))
    committee, holder, share = _committee_member(context)
    role = _committee_role(context, committee, holder, share)
    client_id = rec.get("client-id")
    server_round = rec.get("round")
    arrays_key = rec.get("arrays-key")
    weighted_by = rec.get("weighted-by")
    if client_id != holder or isinstance(client_id, bool):
        raise _Refused(f"the server assigned this node client id {client_id!r}; its committee holder id is {holder}")
    floor = role.decryptor.min_clients if role.decryptor is not None else 2
    if holder not in params.client_ids:
        raise _Refused(f"the round does not invite this node's holder id {holder}")
    if not isinstance(server_round, int) or not isinstance(arrays_key, str) or not isinstance(weighted_by, str):
        raise _Refused("setup record lacks round, arrays-key or weighted-by")
    # before training: a round this node refuses costs it nothing (the role checks all of it again)
    if params.key != committee.public_key:
        raise _Refused("protocol check failed (key mismatch): the round's key is not this node's pinned "
                       "committee key")
    if params.min_clients < floor:
        raise _Refused(f"the round would decrypt an aggregate of {params.min_clients} client(s); this node "
                       f"requires at least {floor} (node config secagg-min-clients)")
    _dp_policy(context, params.dp)
    store = node_store(context)
    store.retire(params.session_id)  # a new round this node takes part in: the one before is over for it
    # a DP round is unweighted: weight 1, whatever metric the server names
    trained = _train(msg, context, call_next, arrays_key, "" if params.dp is not None else weighted_by,
                     params.vector_length)
    if isinstance(trained, Message):
        return trained
    update, weight = trained
    # the driver decodes the same parameters, encrypts the update, claims the stage and saves the session's
    # record (the parameters, no secret) in context.state
    driver = ClientDriver(role, store)
    answer = _answer(msg, driver, driver.handle(payload, Contribution(update, weight)))
    _audit(context, server_round, params, holder, update, weight)
    if role.clipped:
        log.warning("secagg: %d update entries were clipped to +/-%g", role.clipped, params.clip)
    log.info("secagg: round %d: training done, %d values encrypted and submitted as committee member %d of %d",
             server_round, update.size, holder, len(committee.holders))
    return answer


def _step_paillier(msg: Message, rec: ConfigRecord, context: Context) -> Message:
    """A decryption request (or the recovery request) of the Paillier round
    this node submitted to: its share of the decryption, with its proof."""
    store = node_store(context)
    saved = store.current()
    if saved is None:
        raise _Refused("no secure-aggregation round in progress on this node (it may have restarted)")
    if not isinstance(saved, (DecryptorRecord, DPDecryptorRecord)):
        raise _Refused("this node's saved round state is not a Paillier committee member's")
    committee, holder, share = _committee_member(context)
    driver = ClientDriver(_committee_role(context, committee, holder, share), store)
    answer = _answer(msg, driver, driver.handle(bytes_field(rec, "payload")))
    log.info("secagg: %s: decryption share sent as committee member %d", rec["stage"], holder)
    return answer


def _weight(reply: Message, weighted_by: str) -> float:
    if weighted_by == "":
        return 1.0
    for metrics in reply.content.metric_records.values():
        if weighted_by in metrics:
            value = metrics[weighted_by]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _Refused(f"metric {weighted_by!r} must be a number")
            return float(value)
    raise _Refused(f"the train function's reply has no metric {weighted_by!r} to weight the update by")


def _step(msg: Message, rec: ConfigRecord, context: Context) -> Message:
    store = node_store(context)
    saved = store.current()
    if saved is None:
        raise _Refused("no secure-aggregation round in progress on this node (it may have restarted)")
    if not isinstance(saved, MaskingRecord):
        raise _Refused("this node's saved round state is not a masking round's")
    # the parameters come back from this node's own state (checked when the round opened), not from the server
    role = _role(context, saved.client.client_id, saved.params)
    driver = ClientDriver(role, store)
    answer = _answer(msg, driver, driver.handle(bytes_field(rec, "payload")))
    if role.clipped:
        log.warning("secagg: %d update entries were clipped to +/-%g", role.clipped, saved.params.clip)
    return answer


def _audit(context: Context, server_round: int, params: MaskingParams | PaillierParams, client_id: int,
           update: np.ndarray, weight: float, kind: str = "") -> None:
    directory = context.node_config.get("secagg-audit-dir")
    if not directory:
        return
    path = Path(str(directory))
    path.mkdir(parents=True, exist_ok=True)
    stem = f"node-{context.node_id}-{kind + '-' if kind else ''}round-{server_round}"
    np.save(path / f"{stem}.npy", update)
    tmp = path / f".{stem}.json.tmp"
    tmp.write_text(json.dumps({"node_id": context.node_id, "round": server_round, "client_id": client_id,
                               "weight": weight, "dim": int(update.size),
                               "session_id": params.session_id.hex()}))
    os.replace(tmp, path / f"{stem}.json")
