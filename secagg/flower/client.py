"""Client side: a Flower mod that runs the masking protocol around a ClientApp's
``train`` function.

Add it to an existing ClientApp and keep the train function as it is::

    from secagg.flower import secagg_mod
    app = ClientApp(mods=[secagg_mod])      # or @app.train(mods=[secagg_mod])

What the mod does with each ``train`` message from a
:class:`~secagg.flower.SecAggFedAvg` server:

* **setup** (first message of a round: global model, train config, protocol
  parameters, this node's client id). The mod validates the parameters, calls
  the wrapped train function with the global model and config exactly as a plain
  FedAvg round would, computes the update ``local - global`` and the weight
  (the reply metric the server names, ``num-examples`` by default), keeps both
  in ``context.state`` (they never leave the node in the clear), generates the
  round's key pairs and replies with its public keys only. The reply's arrays
  and metrics are dropped: per-node metrics would leak what the aggregate hides.
* every later message (key broadcast, forwarded shares, unmask request): the mod
  restores the protocol client from ``context.state``, lets it handle the
  server message, stores the new state and replies. The masked input is
  computed here from the stored update; the update is deleted right after.
  After the last message, every secret of the round is deleted.

Anything wrong (bad parameters, a server message that fails a protocol check,
a train function that fails) becomes an error reply: the server then counts
this node as dropped for the round, and a node that caught the server
misbehaving sends nothing more in that round.

Secrets live only in ``context.state``, which Flower keeps on the SuperNode
(it never travels to the SuperLink). Train messages without a secure-aggregation
record are refused unless the mod is built with ``allow_plaintext=True``: a
node that installed the mod never hands its model to a server that skipped the
protocol.

Node-local settings (``flower-supernode --node-config``), chosen by the node's
operator, not by the server:

* ``secagg-min-clients``: refuse rounds with fewer participants (default 2);
* ``secagg-audit-dir``: write this node's own update and weight for each round
  to this directory (never sent anywhere; for audits and tests);
* ``secagg-signing-key`` and ``secagg-trusted-keys``: this node's Ed25519 key
  file and the federation's list of verification keys, for the
  malicious-server mode (:mod:`secagg.flower.keys`);
* ``secagg-require-malicious-server``: refuse rounds that are not in the
  malicious-server mode (default false).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode

from ..encoding import wire
from ..encoding.fixed_point import check_finite
from ..errors import SecAggError
from ..protocols.masking import MaskingClient, MaskingParams
from ..protocols.masking.messages import SERVER_MESSAGES, MaskedInput, UnmaskShares
from .keys import load_signing_key, load_trusted_keys, verification_key
from .records import RECORD_KEY, STATE_KEY, ModelLayout, bytes_field, pack, unpack

__all__ = ["secagg_mod", "make_secagg_mod", "SETUP_STAGE", "IDENTIFY_STAGE"]

log = logging.getLogger("flwr.secagg")

SETUP_STAGE = "setup"
IDENTIFY_STAGE = "identify"


class _Refused(Exception):
    """This node will not take part (its reason goes into the error reply)."""


def _error_reply(msg: Message, reason: str, code: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION) -> Message:
    log.warning("secagg: refusing message: %s", reason)
    return Message(Error(code=code, reason=f"secagg: {reason}"), reply_to=msg)


def _node_bool(context: Context, key: str, default: bool) -> bool:
    value = context.node_config.get(key, default)
    if not isinstance(value, bool):
        raise _Refused(f"node config {key} must be true or false")
    return value


def _node_path(context: Context, key: str, why: str) -> str:
    value = context.node_config.get(key)
    if not isinstance(value, str) or not value:
        raise _Refused(f"{why} needs the node config {key} (a file path)")
    return value


def _signing_key(context: Context) -> bytes:
    return load_signing_key(_node_path(context, "secagg-signing-key", "the malicious-server mode"))


def _identify(msg: Message, context: Context) -> Message:
    """Malicious-server mode, before a round: tell the server this node's
    verification key (which the other nodes find on their trusted lists)."""
    key = verification_key(_signing_key(context))
    return Message(pack(IDENTIFY_STAGE, b"", **{"verify-key": key}), reply_to=msg)


def _node_int(context: Context, key: str, default: int) -> int:
    value = context.node_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"node config {key} must be an integer")
    return value


def _check_private(base: Path) -> None:
    """The ledger directory must be this user's own, not a symbolic link and
    not writable by anyone else: otherwise another local user (who could, say,
    create the default directory under /tmp first) could delete claims and
    let a second answer through. Refusing fails closed: the node drops out."""
    st = os.lstat(base)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise _Refused(f"ledger directory {base} is not a plain directory")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise _Refused(f"ledger directory {base} must belong to this user and be writable by it alone")


def _claim(context: Context, session: bytes, stage: str) -> None:
    """Answer each stage of a session at most once on this node.

    A SuperNode may run several tasks of one run at once, each starting from
    the same ``context.state``: a dishonest server could send two requests of
    one stage (say two different alive sets to sign, or two unmask requests)
    and get an answer to both from forks of the same state. The claim is a
    file created with ``O_EXCL`` in a node-local ledger directory
    (node config ``secagg-ledger-dir``, default a per-user directory under the
    system temp dir), so only the first task of a (session, stage) proceeds."""
    directory = context.node_config.get("secagg-ledger-dir")
    base = Path(str(directory)) if directory else Path(tempfile.gettempdir()) / f"secagg-ledger-{os.getuid()}"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_private(base)
    path = base / str(context.node_id) / session.hex()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path / stage, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise _Refused(f"this node already answered {stage} in this session: refusing a second answer") from None
    os.close(fd)


def _clear_state(context: Context) -> None:
    if STATE_KEY in context.state.config_records:
        del context.state[STATE_KEY]


def make_secagg_mod(*, allow_plaintext: bool = False) -> Mod:
    """Build the client mod. ``allow_plaintext=True`` lets plain ``train``
    messages (no secure-aggregation record) through to the train function."""

    def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, context)  # evaluate / query: the global model only, nothing to protect
        if RECORD_KEY not in msg.content.config_records:
            if allow_plaintext:
                return call_next(msg, context)
            return _error_reply(msg, "this node only trains under secure aggregation; the server sent a plain "
                                     "train message (build the mod with allow_plaintext=True to allow it)",
                                ErrorCode.MOD_FAILED_PRECONDITION)
        try:
            rec = unpack(msg.content)
            if rec["stage"] == SETUP_STAGE:
                return _setup(msg, rec, context, call_next)
            if rec["stage"] == IDENTIFY_STAGE:
                return _identify(msg, context)
            return _step(msg, rec, context)
        except (_Refused, SecAggError) as exc:
            _clear_state(context)
            return _error_reply(msg, str(exc))

    return secagg_mod


secagg_mod: Mod = make_secagg_mod()
"""The client mod with the default policy (plain train messages refused)."""


def _setup(msg: Message, rec: ConfigRecord, context: Context, call_next: ClientAppCallable) -> Message:
    _clear_state(context)  # a new round: forget anything left from an earlier one
    params_bytes = bytes_field(rec, "params")
    params = wire.decode(params_bytes, MaskingParams)  # validates the threat model and ring size
    client_id = rec.get("client-id")
    server_round = rec.get("round")
    arrays_key = rec.get("arrays-key")
    weighted_by = rec.get("weighted-by")
    if not isinstance(client_id, int) or client_id not in params.client_ids:
        raise _Refused("the server assigned this node a client id outside the round")
    if not isinstance(server_round, int) or not isinstance(arrays_key, str) or not isinstance(weighted_by, str):
        raise _Refused("setup record lacks round, arrays-key or weighted-by")
    min_clients = _node_int(context, "secagg-min-clients", 2)
    if params.n < min_clients:
        raise _Refused(f"round has {params.n} participants; this node requires at least {min_clients}")
    signing_key = None
    if params.malicious_server:
        signing_key = _signing_key(context)
        trusted = load_trusted_keys(_node_path(context, "secagg-trusted-keys", "the malicious-server mode"))
        keys = params.signing_keys
        # the server must not invent parties: every key on the federation's list,
        # one party per key, and this node's own key at its own client id
        if keys.get(client_id) != verification_key(signing_key):
            raise _Refused("the round does not give this node its own verification key")
        if not set(keys.values()) <= trusted or len(set(keys.values())) != len(keys):
            raise _Refused("the round names verification keys that are not on this node's trusted list")
        # Client ids are labels the server assigns per round, so the trusted
        # source here is the federation's key *set*; having checked that every
        # key of the round is on it (once), the round's id -> key map is the
        # trusted map the core verifies against. Relabelling keys gains the
        # server nothing: each party still proves it holds its key by signing.
        trusted_map: dict[int, bytes] | None = dict(keys)
    else:
        trusted_map = None
    if not params.malicious_server and _node_bool(context, "secagg-require-malicious-server", False):
        raise _Refused("this node requires the malicious-server mode (secagg-malicious-server = true)")
    if arrays_key not in msg.content.array_records:
        raise _Refused(f"setup message has no ArrayRecord {arrays_key!r}")
    global_arrays = msg.content.array_records[arrays_key]
    layout = ModelLayout.of(global_arrays)
    if layout.dim != params.dim:
        raise _Refused(f"parameters aggregate {params.dim} values but the model has {layout.dim}")

    # the wrapped train function sees a plain FedAvg train message
    inner = RecordDict({k: v for k, v in msg.content.items() if k != RECORD_KEY})
    msg.content = inner
    reply = call_next(msg, context)
    if reply.has_error():
        _clear_state(context)
        return reply
    if arrays_key not in reply.content.array_records:
        raise _Refused(f"the train function's reply has no ArrayRecord {arrays_key!r}")
    local = reply.content.array_records[arrays_key]
    layout.check(local, "the trained model")
    update = layout.to_vector(local) - layout.to_vector(global_arrays)
    check_finite(update, "model update")
    weight = _weight(reply, weighted_by)
    params.encoding.check_weight(weight)  # clear error before any key is sent

    client = MaskingClient(params, client_id, signing_key=signing_key, trusted_signing_keys=trusted_map)
    _claim(context, params.session_id, "setup")
    advertise = client.advertise_keys()
    context.state[STATE_KEY] = ConfigRecord({
        "round": server_round, "session": params.session_id, "params": params_bytes,
        "client": _persist(client), "update": update.astype("<f8").tobytes(), "weight": float(weight)})
    _audit(context, server_round, params, client_id, update, weight)
    log.info("secagg: round %d: training done, %d values, keys advertised as client %d of %d",
             server_round, update.size, client_id, params.n)
    return Message(pack(type(advertise).__name__, wire.encode(advertise)), reply_to=msg)


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
    state = context.state.config_records.get(STATE_KEY)
    if state is None:
        raise _Refused("no secure-aggregation round in progress on this node (it may have restarted)")
    if rec.get("round") != state["round"] or rec.get("session") != state["session"]:
        raise _Refused("message belongs to another round or session")
    params = wire.decode(bytes_field(state, "params"), MaskingParams)
    client = _restore(params, bytes_field(state, "client"), _signing_key(context) if params.malicious_server else None)
    server_msg: object = wire.decode(bytes_field(rec, "payload"), SERVER_MESSAGES)
    _claim(context, params.session_id, type(server_msg).__name__)
    update = None
    if "update" in state:
        update = np.frombuffer(bytes_field(state, "update"), dtype="<f8")
    weight = state.get("weight")
    if not isinstance(weight, float):
        raise _Refused("this node's saved round state has no weight (it may be damaged)")
    out = client.handle(server_msg, update=update, weight=weight)
    if out is None:
        reason = client.abort_reason.value if client.abort_reason else "unknown"
        raise _Refused(f"protocol check failed ({reason}): {client.state.abort_detail}; "
                       "this node leaves the round")
    if isinstance(out, UnmaskShares):
        _clear_state(context)  # the round is over for this node: drop every secret
    else:
        new_state = ConfigRecord({k: v for k, v in state.items() if k != "update" or not isinstance(out, MaskedInput)})
        new_state["client"] = _persist(client)
        context.state[STATE_KEY] = new_state
        clipped = getattr(client, "last_clipped", 0)
        if isinstance(out, MaskedInput) and clipped:
            log.warning("secagg: round %s: %d update entries were clipped to +/-%g", state["round"], clipped,
                        params.clip)
    return Message(pack(type(out).__name__, wire.encode(out)), reply_to=msg)


def _persist(client: MaskingClient) -> bytes:
    return client.to_bytes()


def _restore(params: MaskingParams, data: bytes, signing_key: bytes | None) -> MaskingClient:
    # the keys were checked against the trusted list in the setup stage; params
    # come back from this node's own state, not from the server
    trusted = dict(params.signing_keys) if params.malicious_server else None
    return MaskingClient.from_bytes(params, data, signing_key=signing_key, trusted_signing_keys=trusted)


def _audit(context: Context, server_round: int, params: MaskingParams, client_id: int, update: np.ndarray,
           weight: float) -> None:
    directory = context.node_config.get("secagg-audit-dir")
    if not directory:
        return
    path = Path(str(directory))
    path.mkdir(parents=True, exist_ok=True)
    stem = f"node-{context.node_id}-round-{server_round}"
    np.save(path / f"{stem}.npy", update)
    tmp = path / f".{stem}.json.tmp"
    tmp.write_text(json.dumps({"node_id": context.node_id, "round": server_round, "client_id": client_id,
                               "weight": weight, "dim": int(update.size),
                               "session_id": params.session_id.hex()}))
    os.replace(tmp, path / f"{stem}.json")
