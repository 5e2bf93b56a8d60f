"""The masking server's state as a wire message: save a round in progress,
restart the process (or hand the round to another worker), and go on.

:meth:`MaskingServer.snapshot` encodes everything the server holds between two
calls (the round's parameters, the stage, the client messages of the stages
not yet closed, the accumulator of masked inputs, the sets ``U_1`` .. ``U_5``,
the refusals and suspected holders of the audit record, who is expected to
answer); :meth:`MaskingServer.restore` rebuilds a server that behaves exactly
as the saved one would have from that point (tests replay rounds cut at every
stage and compare the aggregates bit for bit). Messages the server already
returned from :meth:`~MaskingServer.close_round` are not in the snapshot: the
transport that delivers them keeps them until they are delivered.

What a snapshot holds is what the server's memory holds: the encrypted share
records of a stage not yet closed and, during unmasking, the shares the
survivors revealed (the server is entitled to them, but a copy on disk needs
the protection of the server's own memory). No pickle: a snapshot is a
canonical wire message (``masking.ServerState``), and :meth:`restore` checks
it (types, lengths, the parameters' own validation, sets nested as the
protocol nests them, the accumulator's size) before building anything; a
tampered or truncated snapshot raises a typed error and builds nothing.
A finished round has nothing to resume: its snapshot is refused (keep its
outcome instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ...encoding import wire
from ...encoding.ring import dtype_for
from ...errors import LocalProtocolError, ParameterError
from ..stages import Stage
from .messages import AdvertiseKeys, ShareKeys, UnmaskShares
from .params import PARAMS_TYPES, MaskingParams

if TYPE_CHECKING:  # pragma: no cover
    from .server import MaskingServer

__all__ = ["MaskingServerState", "STATE_VERSION", "snapshot", "restore"]

STATE_VERSION = 1
_IDS = {"dtypes": {"uint32"}}
#: the stages a round can be saved in (a finished or aborted round is not resumed)
_OPEN = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASKING)


@wire.message("masking.ServerState")
@dataclass(frozen=True)
class MaskingServerState:
    """A masking server between two calls (see the module docstring)."""

    version: int
    params: bytes  # the round's parameters as sent (masking.Params or masking.DPParams)
    stage: str
    advertised: tuple[AdvertiseKeys, ...]
    shares: tuple[ShareKeys, ...]
    masked: np.ndarray = field(metadata=_IDS)
    signatures: dict[int, bytes] = field(metadata={"value": {"len": 64}})
    unmask: tuple[UnmaskShares, ...]
    accumulator: np.ndarray = field(metadata={"dtypes": {"uint32", "uint64"}})
    u1: np.ndarray = field(metadata=_IDS)
    u2: np.ndarray = field(metadata=_IDS)
    u3: np.ndarray = field(metadata=_IDS)
    u4: np.ndarray = field(metadata=_IDS)
    replies_expected: np.ndarray = field(metadata=_IDS)
    suspected_holders: np.ndarray = field(metadata=_IDS)
    rejected_senders: np.ndarray = field(metadata={"dtypes": {"int64"}})
    rejected_stages: tuple[str, ...]
    rejected_reasons: tuple[str, ...]


def _ids(values: object) -> np.ndarray:
    return np.array(sorted(values), dtype=np.uint32)  # type: ignore[call-overload]


def snapshot(server: "MaskingServer") -> bytes:
    """The server's state as canonical bytes (``masking.ServerState``)."""
    if server.done or server.stage not in _OPEN:
        raise LocalProtocolError("the round is over: keep its outcome, there is nothing to resume")
    got = server._got
    rej = server.rejected
    state = MaskingServerState(
        version=STATE_VERSION, params=wire.encode(server.params), stage=server.stage.value,
        advertised=tuple(got.advertised[u] for u in sorted(got.advertised)),
        shares=tuple(got.shares[u] for u in sorted(got.shares)),
        masked=_ids(got.masked), signatures=dict(sorted(got.signatures.items())),
        unmask=tuple(got.unmask[u] for u in sorted(got.unmask)),
        accumulator=server._accumulator.copy(),
        u1=_ids(server.u1), u2=_ids(server.u2), u3=_ids(server.u3), u4=_ids(server.u4),
        replies_expected=_ids(server.replies_expected), suspected_holders=_ids(server.suspected_holders),
        rejected_senders=np.array([s for s, _, _ in rej], dtype=np.int64),
        rejected_stages=tuple(st for _, st, _ in rej), rejected_reasons=tuple(r for _, _, r in rej))
    return wire.encode(state)


def _bad(detail: str) -> ParameterError:
    return ParameterError(f"not a valid masking server snapshot: {detail}")


def _params(state: MaskingServerState) -> MaskingParams:
    p: object = wire.decode(state.params)  # validates them as a client would
    if not isinstance(p, PARAMS_TYPES):
        raise _bad(f"its parameters are a {type(p).__name__}, not masking parameters")
    return p  # type: ignore[return-value]


def _check(state: MaskingServerState, p: MaskingParams) -> Stage:
    """Everything :func:`restore` relies on, before anything is built."""
    if state.version != STATE_VERSION:
        raise _bad(f"version {state.version}, this library reads {STATE_VERSION}")
    try:
        stage = Stage(state.stage)
    except ValueError:
        raise _bad(f"unknown stage {state.stage!r}") from None
    if stage not in _OPEN:
        raise _bad(f"a round in stage {stage.value} is not resumed")
    if stage is Stage.CONSISTENCY_CHECK and not p.malicious_server:
        raise _bad("a consistency stage in a round without the malicious-server mode")
    ids = set(p.client_ids)
    order = _OPEN.index(stage)
    sets = {name: getattr(state, name) for name in ("u1", "u2", "u3", "u4", "masked", "replies_expected",
                                                     "suspected_holders")}
    for name, arr in sets.items():
        if arr.size and (np.any(arr[1:] <= arr[:-1]) or not set(arr.tolist()) <= ids):
            raise _bad(f"{name} must be sorted, distinct ids of the round's clients")
    # U_k is fixed when stage k closes: set exactly for the closed stages, nested as the protocol nests them
    closed = {"u1": order >= 1, "u2": order >= 2, "u3": order >= 3,
              "u4": order >= 4 and p.malicious_server}
    for name, is_closed in closed.items():
        if not is_closed and sets[name].size:
            raise _bad(f"{name} is set before its stage closed")
    chain = [ids, set(state.u1.tolist()), set(state.u2.tolist()), set(state.u3.tolist())]
    if p.malicious_server and order >= 4:
        chain.append(set(state.u4.tolist()))
    for outer, inner in zip(chain, chain[1:]):
        if not inner <= outer:
            raise _bad("the sets of survivors must be nested (U_1 ⊇ U_2 ⊇ U_3 ⊇ U_4)")
    # each stage's messages: a subset of the previous survivors while it is open, exactly the set it
    # fixed once closed (the advertisements, masked-input senders and signatures stay in use), none before
    prev = chain + [chain[-1]] * 5
    senders = [("advertised", [m.client_id for m in state.advertised], 0, ids, chain[1] if order >= 1 else None),
               ("shares", [m.client_id for m in state.shares], 1, prev[1], set()),
               ("masked", state.masked.tolist(), 2, prev[2], chain[3] if order >= 3 else None),
               ("signatures", list(state.signatures), 3, prev[3],
                set(state.u4.tolist()) if order >= 4 and p.malicious_server else set()),
               ("unmask", [m.client_id for m in state.unmask], 4, prev[-1], set())]
    for name, who, at, allowed, after in senders:
        if len(set(who)) != len(who):
            raise _bad(f"{name}: a sender twice")
        if order == at:
            if not set(who) <= allowed:
                raise _bad(f"{name}: senders outside the stage's survivors")
        elif order < at:
            if who:
                raise _bad(f"{name} kept before its stage")
        elif set(who) != after:
            raise _bad(f"{name} kept do not match the set their stage fixed")
    sessions = [m.session_id for m in state.advertised] + [m.session_id for m in state.shares] + [
        m.session_id for m in state.unmask]
    for sid in sessions:
        if sid != p.session_id:
            raise _bad("a message of another session")
    acc = state.accumulator
    if acc.dtype != dtype_for(p.ring_bits) or acc.shape != (p.entries,):
        raise _bad(f"the accumulator must be {p.entries} words of the {p.ring_bits}-bit ring")
    if order < 2 and np.any(acc):
        raise _bad("a non-zero accumulator before any masked input")
    if not (state.rejected_senders.size == len(state.rejected_stages) == len(state.rejected_reasons)):
        raise _bad("the refusal columns differ in length")
    return stage


def restore(data: bytes, server_cls: "type[MaskingServer]", **kwargs: object) -> "MaskingServer":
    """A server rebuilt from :func:`snapshot`'s bytes (``kwargs``: the
    server's ``rng`` and ``unmasker``, which a snapshot does not carry)."""
    state: object = wire.decode(data)
    if not isinstance(state, MaskingServerState):
        raise _bad(f"a {type(state).__name__}, not a masking.ServerState")
    params = _params(state)
    stage = _check(state, params)
    server = server_cls(params, **kwargs)  # type: ignore[arg-type]
    got = server._got
    got.advertised = {m.client_id: m for m in state.advertised}
    got.shares = {m.client_id: m for m in state.shares}
    got.masked = set(state.masked.tolist())
    got.signatures = dict(state.signatures)
    got.unmask = {m.client_id: m for m in state.unmask}
    server._used_keys = {k for m in state.advertised for k in (m.enc_public, m.mask_public)}
    acc = state.accumulator.copy()
    acc.flags.writeable = True
    server._accumulator = acc
    server.stage = stage
    server.replies_expected = frozenset(state.replies_expected.tolist())
    server.suspected_holders = set(state.suspected_holders.tolist())
    server.rejected = list(zip(state.rejected_senders.tolist(), state.rejected_stages, state.rejected_reasons))
    server._restore_sets(tuple(state.u1.tolist()), tuple(state.u2.tolist()), tuple(state.u3.tolist()),
                         tuple(state.u4.tolist()))
    return server
