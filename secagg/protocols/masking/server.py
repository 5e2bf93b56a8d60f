"""The server of the pairwise-masking protocol (SPEC.md §3), sans I/O.

The server has no clock and no sockets: the transport hands it each client
message with :meth:`MaskingServer.receive` and tells it that a round is over
with :meth:`MaskingServer.close_round`, which returns the messages to deliver.
A message that fails validation raises a :class:`~secagg.errors.RemoteProtocolError`
and changes nothing (that client is then simply treated as dropped). A round
with too few survivors ends in an :class:`Abort` outcome with a typed reason,
never in a wrong or partial aggregate.

Masked inputs are added into one accumulator as they arrive: memory O(d), not
O(n d). Unmasking reconstructs all secrets of one holder set with a single set
of Lagrange coefficients (a dot product per secret).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, cast

import numpy as np

from ...dp.round import DPRoundReport
from ...encoding.ring import dtype_for, from_ring
from ...errors import AbortReason, LocalProtocolError, RemoteProtocolError
from ...primitives import shamir
from ...primitives.key_agreement import check_public, key_matches_public
from ...primitives.randomness import RandomSource, default_random
from ...primitives.signatures import verify
from ...errors import BadSignature, from_peer
from . import _crypto as C
from ...encoding import wire
from .messages import (CLIENT_MESSAGES, SHARE_CHUNKS, SHARE_RECORD_SIZE, AdvertiseKeys, ConsistencyRequest, ConsistencySignature,
                       ForwardedShares, KeysBroadcast, MaskedInput, ShareKeys, UnmaskRequest, UnmaskShares)
from .params import MaskingParams
from .unmask import MaskJob, Unmasker, run_local
from ..outcome import Abort, ServerResult
from ..stages import Stage

__all__ = ["MaskingServer", "ServerResult", "DPServerResult", "Abort", "Stage"]


@dataclass(frozen=True)
class DPServerResult(ServerResult):
    """The outcome of a distributed-DP round (protocols/dp/SPEC.md §9): the
    noised sum of the clipped updates of exactly ``included`` (each counted
    once: ``sum_weights`` is their number) and the round's privacy report
    (survivors, epsilon at the configured delta, adaptive clipping's noised
    count and next clip)."""

    dp: DPRoundReport | None = None



# the client message each stage accepts
_ACCEPTS = {Stage.ADVERTISE_KEYS: AdvertiseKeys, Stage.SHARE_KEYS: ShareKeys, Stage.MASKED_INPUT: MaskedInput,
            Stage.CONSISTENCY_CHECK: ConsistencySignature, Stage.UNMASKING: UnmaskShares}


def _err(reason: AbortReason, detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(detail, reason)


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal(a, b)`` for integer arrays of one shape and dtype,
    compared as bytes (a few times faster on id arrays); ``False`` for any
    other pair (another shape or dtype, floats), for which callers take
    their general path."""
    return a.shape == b.shape and a.dtype == b.dtype and a.dtype.kind in "iu" and a.tobytes() == b.tobytes()


@dataclass
class _Collected:
    advertised: dict[int, AdvertiseKeys] = field(default_factory=dict)
    shares: dict[int, ShareKeys] = field(default_factory=dict)
    masked: set[int] = field(default_factory=set)
    signatures: dict[int, bytes] = field(default_factory=dict)
    unmask: dict[int, UnmaskShares] = field(default_factory=dict)


class MaskingServer:
    """The server of one round.

    The common server interface (the drivers in :mod:`secagg.drivers` use
    nothing else): :meth:`start` gives the round's first messages,
    :meth:`receive` takes one client message, :meth:`close_round` ends the
    current stage, :attr:`stage`, :attr:`replies_expected` and
    :attr:`outcome` tell where the round is.

    ``unmasker`` runs the mask removal of the last stage (the survivors'
    self masks, the dropped clients' pairwise masks: X25519 exchanges and
    keystreams, most of the server's work when clients drop), given as
    :class:`~secagg.protocols.masking.unmask.MaskJob` s; the default runs
    them in this process, :func:`secagg.drivers.concurrency.process_unmasker`
    on several cores."""

    #: every message a client may send to the server
    CLIENT_MESSAGES: tuple[type, ...] = CLIENT_MESSAGES

    def __init__(self, params: MaskingParams, rng: RandomSource | None = None, *,
                 unmasker: Unmasker = run_local):
        self.params = params
        # runs the mask removal (self masks, dropped clients' pairwise masks): in this process by
        # default; secagg.drivers.concurrency.process_unmasker runs it on several cores
        self._unmasker = unmasker
        self._rng = default_random(rng)
        self.stage = Stage.ADVERTISE_KEYS
        self._got = _Collected()
        self._accumulator = np.zeros(params.entries, dtype=dtype_for(params.ring_bits))
        self.u1: tuple[int, ...] = ()
        self.u2: tuple[int, ...] = ()
        self.u3: tuple[int, ...] = ()
        self.u4: tuple[int, ...] = ()
        self.u5: tuple[int, ...] = ()
        self.outcome: ServerResult | Abort | None = None
        self.rejected: list[tuple[int, str, str]] = []  # (sender, stage, reason) for the audit log
        self.suspected_holders: set[int] = set()  # holders whose unmasking shares failed a check
        self._lagrange_cache: dict[tuple[int, ...], np.ndarray] = {}  # first t + 1 holders -> coefficients (_retry)
        # U_1 .. U_4 as sets (O(1) membership) and, where vector checks need them, as sorted id arrays;
        # each is filled when its stage closes
        self._u1_set: frozenset[int] = frozenset()
        self._u1_arr = np.zeros(0, dtype=np.uint32)
        self._u1_bytes = b""
        self._u1_pos: dict[int, int] = {}
        self._u2_set: frozenset[int] = frozenset()
        self._u3_set: frozenset[int] = frozenset()
        self._u3_arr = np.zeros(0, dtype=np.uint32)
        self._u4_set: frozenset[int] = frozenset()
        self._dropped_set: frozenset[int] = frozenset()  # U_2 without U_3: their mask keys are reconstructed
        self._dropped_arr = np.zeros(0, dtype=np.uint32)
        self._used_keys: set[bytes] = set()
        self.replies_expected: frozenset[int] = frozenset()  # who is sent a message it must answer

    @property
    def done(self) -> bool:
        return self.outcome is not None

    # ---------------------------------------------------------------- save / restore
    def snapshot(self) -> bytes:
        """The round's state as canonical bytes (``masking.ServerState``,
        :mod:`.server_state`): :meth:`restore` rebuilds a server that goes on
        exactly as this one would. Refused once the round is over."""
        from .server_state import snapshot
        return snapshot(self)

    @classmethod
    def restore(cls, data: bytes, rng: RandomSource | None = None, *,
                unmasker: Unmasker = run_local) -> "MaskingServer":
        """A server rebuilt from :meth:`snapshot`'s bytes; a typed error
        (:class:`~secagg.errors.WireFormatError`, :class:`~secagg.errors.ParameterError`)
        for bytes that are not a consistent snapshot, and nothing built."""
        from .server_state import restore
        return restore(data, cls, rng=rng, unmasker=unmasker)

    def _restore_sets(self, u1: tuple[int, ...], u2: tuple[int, ...], u3: tuple[int, ...],
                      u4: tuple[int, ...]) -> None:
        """U_1 .. U_4 and the views the handlers use, as the closes set them."""
        self.u1, self.u2, self.u3, self.u4 = u1, u2, u3, u4
        self._u1_set = frozenset(u1)
        self._u1_arr = np.array(u1, dtype=np.uint32)
        self._u1_bytes = self._u1_arr.tobytes()
        self._u1_pos = {u: i for i, u in enumerate(u1)}
        self._u2_set = frozenset(u2)
        self._u3_set = frozenset(u3)
        self._u3_arr = np.array(u3, dtype=np.uint32)
        self._u4_set = frozenset(u4)
        if self.stage in (Stage.CONSISTENCY_CHECK, Stage.UNMASKING):
            self._dropped_set = self._u2_set - self._u3_set
            self._dropped_arr = np.array(sorted(self._dropped_set), dtype=np.uint32)

    @property
    def max_message_bytes(self) -> int:
        """The largest client message the current stage can take (wire limit)."""
        return wire.MAX_MESSAGE_BYTES

    def start(self) -> dict[int, object]:
        """Round 0 opens: the round's parameters to every participant, who
        answers with its :class:`AdvertiseKeys`."""
        if self.stage is not Stage.ADVERTISE_KEYS or self._got.advertised or self.replies_expected:
            raise LocalProtocolError("the round has already started")
        self.replies_expected = frozenset(self.params.client_ids)
        return {u: self.params for u in self.params.client_ids}

    # ---------------------------------------------------------------- receive
    def receive(self, sender: int, msg: object) -> None:
        """Take one client message for the current round. Raises
        :class:`RemoteProtocolError` (state unchanged) if it is out of place,
        duplicated, misrouted or malformed."""
        try:
            self._receive(sender, msg)
        except RemoteProtocolError as exc:
            self.rejected.append((sender if type(sender) is int else -1, self.stage.value, exc.reason.value))
            raise

    @from_peer()  # a primitive's refusal of the sender's bytes (e.g. a low-order key) is the sender's fault
    def _receive(self, sender: int, msg: object) -> None:
        if type(sender) is not int:  # not True, 1.0 or np.uint32(1): ids are exact ints
            raise _err(AbortReason.UNEXPECTED_SENDER, f"sender id must be an int, got {type(sender).__name__}")
        if self.done:
            raise _err(AbortReason.WRONG_ROUND, "the round is over")
        expected = _ACCEPTS.get(self.stage)
        if expected is None or not isinstance(msg, expected):
            raise _err(AbortReason.WRONG_ROUND,
                       f"{type(msg).__name__} is not accepted in stage {self.stage.value} (late or early)")
        if getattr(msg, "client_id", None) != sender:
            raise _err(AbortReason.UNEXPECTED_SENDER, "message names a different sender")
        if getattr(msg, "session_id", None) != self.params.session_id:
            raise _err(AbortReason.SESSION_MISMATCH, "message belongs to another session")
        if sender not in self.params.graph:
            raise _err(AbortReason.UNEXPECTED_SENDER, f"client {sender} is not in this round")
        handler = getattr(self, f"_on_{self.stage.value}")
        handler(sender, msg)

    def _require_previous(self, sender: int, previous: frozenset[int], already: object) -> None:
        if sender in already:  # type: ignore[operator]
            raise _err(AbortReason.DUPLICATE_MESSAGE, f"second message from client {sender} in this round")
        if sender not in previous:
            raise _err(AbortReason.UNEXPECTED_SENDER, f"client {sender} dropped out in an earlier round")

    def _on_advertise_keys(self, sender: int, msg: AdvertiseKeys) -> None:
        if sender in self._got.advertised:
            raise _err(AbortReason.DUPLICATE_MESSAGE, f"second advertisement from client {sender}")
        if msg.enc_public in self._used_keys or msg.mask_public in self._used_keys:
            raise _err(AbortReason.DUPLICATE_PUBLIC_KEY, "public key already advertised by another client")
        if msg.enc_public == msg.mask_public:
            raise _err(AbortReason.DUPLICATE_PUBLIC_KEY, "encryption and masking keys must differ")
        # a low-order, malformed, non-canonical or twist X25519 key would make
        # every neighbour abort later (or alias another's key): refuse it now.
        # A small-order component is harmless (SPEC §4.2): exchanges ignore
        # it and a reconstructed mask key is matched up to it (round 4)
        check_public(msg.enc_public, subgroup=False)
        check_public(msg.mask_public, subgroup=False)
        if self.params.malicious_server:
            try:
                verify(self.params.signing_keys[sender], C.advertise_statement(
                    self.params.session_id, sender, msg.enc_public, msg.mask_public, msg.self_mask_commitment),
                    msg.signature)
            except BadSignature:
                raise _err(AbortReason.INVALID_SIGNATURE, "advertisement signature does not verify") from None
        elif msg.signature:
            raise _err(AbortReason.MALFORMED_MESSAGE, "unexpected signature in honest-server mode")
        self._got.advertised[sender] = msg
        self._used_keys.update((msg.enc_public, msg.mask_public))

    def _on_share_keys(self, sender: int, msg: ShareKeys) -> None:
        self._require_previous(sender, self._u1_set, self._got.shares)
        rec = np.asarray(msg.recipients)
        if self.params.is_complete:  # U_1 without the sender, in order: two slice comparisons
            u1 = self._u1_arr
            count = u1.size - 1
            if rec.dtype == np.uint32 and rec.ndim == 1 and rec.flags.c_contiguous:
                # compared as bytes (a 4n-byte copy and two memcmp, no array dispatch): native uint32 both sides
                k = 4 * self._u1_pos[sender]
                got, want = rec.tobytes(), self._u1_bytes
                ok = rec.size == count and got[:k] == want[:k] and got[k:] == want[k + 4:]
            else:
                k = int(np.searchsorted(u1, sender))
                ok = rec.shape == (count,) and bool((rec[:k] == u1[:k]).all()) and bool((rec[k:] == u1[k + 1:]).all())
        else:
            expected = self.params.graph.neighbours(sender)
            if len(self.u1) < self.params.n:  # some never advertised: only those that did
                expected = tuple(v for v in expected if v in self._u1_set)
            count = len(expected)
            ok = rec.shape == (count,) and rec.tolist() == list(expected)
        if not ok:
            raise _err(AbortReason.MALFORMED_MESSAGE, "shares must go to exactly the neighbours in U1, sorted")
        if len(msg.ciphertexts) != SHARE_RECORD_SIZE * count:
            raise _err(AbortReason.MALFORMED_MESSAGE, "share records have the wrong length")
        self._got.shares[sender] = msg

    def _on_masked_input(self, sender: int, msg: MaskedInput) -> None:
        self._require_previous(sender, self._u2_set, self._got.masked)
        vec = msg.masked
        if vec.dtype != self._accumulator.dtype or vec.shape != self._accumulator.shape:
            raise _err(AbortReason.MALFORMED_MESSAGE,
                       f"masked input must be {self.params.entries} {self._accumulator.dtype} entries")
        np.add(self._accumulator, vec, out=self._accumulator)
        self._got.masked.add(sender)

    def _on_consistency_check(self, sender: int, msg: ConsistencySignature) -> None:
        self._require_previous(sender, self._u3_set, self._got.signatures)
        try:
            adv = self._got.advertised[sender]
            verify(self.params.signing_keys[sender],
                   C.consistency_statement(self.params.session_id, sender, adv.enc_public, adv.mask_public,
                                           np.array(self.u3, dtype=np.uint32)),
                   msg.signature)
        except BadSignature:
            raise _err(AbortReason.INVALID_SIGNATURE, "consistency signature does not verify") from None
        self._got.signatures[sender] = msg.signature

    def _on_unmasking(self, sender: int, msg: UnmaskShares) -> None:
        previous = self._u4_set if self.params.malicious_server else self._u3_set
        self._require_previous(sender, previous, self._got.unmask)
        complete = self.params.is_complete
        for owners, shares, allowed, allowed_arr, what in (
                (msg.self_mask_owners, msg.self_mask_shares, self._u3_set, self._u3_arr, "self-mask"),
                (msg.mask_key_owners, msg.mask_key_shares, self._dropped_set, self._dropped_arr, "mask-key")):
            if shares.size != owners.size * SHARE_CHUNKS:
                raise _err(AbortReason.MALFORMED_MESSAGE, f"{what} shares have the wrong length")
            if shares.size and int(shares.max()) >= shamir.M31.prime:
                raise _err(AbortReason.MALFORMED_MESSAGE, f"{what} share outside the field")
            if not owners.size or (complete and _same_array(owners, allowed_arr)):
                continue  # the complete graph's usual answer: exactly U_3 / exactly the dropped, in order
            if complete:  # every client holds shares of every client: only alive/dropped matters
                if np.any(owners[1:] <= owners[:-1]):
                    raise _err(AbortReason.MALFORMED_MESSAGE, f"{what} owners must be sorted and distinct")
                pos = np.searchsorted(allowed_arr, owners)
                ok = bool(allowed_arr.size and pos.max() < allowed_arr.size and np.array_equal(allowed_arr[pos], owners))
            else:  # sender holds shares of its neighbours and itself: a few dozen ids, checked as a list
                ids = owners.tolist()
                if any(a >= b for a, b in zip(ids, ids[1:])):
                    raise _err(AbortReason.MALFORMED_MESSAGE, f"{what} owners must be sorted and distinct")
                ok = allowed.issuperset(ids) and self.params.graph.holder_set(sender).issuperset(ids)
            if not ok:
                raise _err(AbortReason.UNEXPECTED_SENDER, f"{what} shares for clients this sender cannot hold")
        self._got.unmask[sender] = msg

    # ---------------------------------------------------------------- close
    def close_round(self) -> dict[int, object]:
        """The transport says the current round is over: move on and return the
        messages to deliver, by client id (empty when the round ended; see
        :attr:`outcome`)."""
        if self.done:
            raise LocalProtocolError("the round is already over")
        try:
            out = getattr(self, f"_close_{self.stage.value}")()
        except _AbortNow as stop:
            self.outcome = Abort(stop.reason, stop.detail, self.stage.value, stop.culprits)
            self.stage = Stage.ABORTED
            self._accumulator = np.zeros(0, dtype=self._accumulator.dtype)
            out = {}
        self.replies_expected = frozenset(out)
        return out

    def _need(self, count: int, what: str) -> None:
        if count < self.params.threshold:
            raise _AbortNow(AbortReason.TOO_FEW_SURVIVORS,
                            f"{count} clients {what}; threshold is {self.params.threshold}")

    def _close_advertise_keys(self) -> dict[int, object]:
        got = self._got.advertised
        self.u1 = tuple(sorted(got))
        self._u1_set = frozenset(self.u1)
        self._u1_arr = np.array(self.u1, dtype=np.uint32)
        self._u1_bytes = self._u1_arr.tobytes()
        self._u1_pos = {u: i for i, u in enumerate(self.u1)}
        self._need(len(self.u1), "advertised keys")
        p = self.params
        ents = [got[v] for v in self.u1]
        columns = [b"".join(e.enc_public for e in ents), b"".join(e.mask_public for e in ents),
                   b"".join(e.self_mask_commitment for e in ents), b"".join(e.signature for e in ents)]
        if p.is_complete:  # everyone gets the same broadcast (built and encoded once)
            msg = KeysBroadcast(p.session_id, self._u1_arr.copy(), *columns)
            out: dict[int, object] = {u: msg for u in self.u1}
        else:  # each client gets the rows of its holders in U_1: one gather per column for all clients
            m, u1 = len(self.u1), self._u1_arr
            tables = [np.frombuffer(col, dtype=np.uint8).reshape(m, -1) for col in columns]
            holders = p.graph.holders_of(u1)  # (m, k + 1), rows in U_1 order
            rows = np.minimum(np.searchsorted(u1, holders), m - 1)  # U_1 position of each holder...
            present = u1[rows] == holders  # ...where it advertised
            whole = present.all(axis=1)
            gathered = [t[rows] for t in tables]  # (m, k + 1, width): every client's rows, one copy per column
            out = {}
            for j, u in enumerate(self.u1):
                if whole[j]:  # every holder advertised (the usual case): row j as it is
                    out[u] = KeysBroadcast(p.session_id, holders[j].copy(), *(g[j].tobytes() for g in gathered))
                else:
                    keep = present[j]
                    out[u] = KeysBroadcast(p.session_id, holders[j][keep],
                                           *(g[j][keep].tobytes() for g in gathered))
        self.stage = Stage.SHARE_KEYS
        return out

    def _close_share_keys(self) -> dict[int, object]:
        got = self._got.shares
        self.u2 = tuple(sorted(got))
        self._u2_set = frozenset(self.u2)
        u2 = np.array(self.u2, dtype=np.uint32)
        self._need(len(self.u2), "shared their keys")
        try:
            out = self._route_complete(got, u2) if self.params.is_complete else self._route_graph(got, u2)
        except Exception as exc:  # the received shares are already released: end the round, closed
            raise _AbortNow(AbortReason.INTERNAL_ERROR,
                            f"share routing failed ({type(exc).__name__}); the round cannot continue") from None
        self.stage = Stage.MASKED_INPUT
        return out

    def _route_complete(self, got: dict[int, ShareKeys], u2: np.ndarray) -> dict[int, object]:
        """Complete graph: one transpose of the (sender x recipient) table of
        records into a preallocated (recipient x sender) buffer, each record
        copied once, straight from the received message (a view of its bytes).

        Sender ``i`` (U_2 position) addressed every other member of U_1 in id
        order. In the buffer, recipient ``j``'s row holds the records of the
        other members of U_2 in id order, so sender ``i`` writes column
        ``i - 1`` of the rows above it and column ``i`` of the rows below.
        Each row of the buffer is its recipient's whole encoded
        :class:`ForwardedShares` (header and senders first, then the records),
        and the message carries its row as its attached encoding
        (:func:`~secagg.encoding.wire.attach_encoding`): nothing is joined,
        sliced out, deleted or copied per recipient, not even to encode it.
        The received messages are released as soon as their records are
        copied."""
        rec = SHARE_RECORD_SIZE
        m1, m2 = self._u1_arr.size, u2.size
        sid = self.params.session_id
        senders = np.broadcast_to(u2, (m2, m2))[~np.eye(m2, dtype=bool)].reshape(m2, m2 - 1)
        senders.flags.writeable = False
        # Row j of `big` is recipient j's whole ForwardedShares encoding: the
        # header (the same for every row but the senders' bytes), then its
        # records, which the transpose below writes in place. The message is
        # sent as a view of its row: nothing is copied to encode it.
        width = (m2 - 1) * rec
        parts = wire.pieces(ForwardedShares(sid, senders[0], cast(bytes, np.empty(width, dtype=np.uint8).data)))
        head = b"".join(parts[:-1])  # every piece but the last: the records' payload
        ids_at = len(b"".join(parts[:-3]))  # the senders' bytes: the piece before the records' header
        ids_len = 4 * (m2 - 1)
        if (len(parts[-1]) != width or len(parts[-3]) != ids_len
                or head[ids_at:ids_at + ids_len] != senders[0].astype("<u4").tobytes()):
            raise AssertionError("unexpected ForwardedShares layout")
        big = np.empty((m2, len(head) + width), dtype=np.uint8)
        big[:, :len(head)] = np.frombuffer(head, dtype=np.uint8)
        big[:, ids_at:ids_at + ids_len] = senders.astype("<u4").view(np.uint8).reshape(m2, ids_len)
        buf = big[:, len(head):]  # the records of every row
        cells = buf.view(f"V{rec}")  # (m2, m2 - 1): one item per record
        same = m1 == m2  # nobody dropped after advertising: sender rows are the buffer's columns as they are
        pos = np.searchsorted(self._u1_arr, u2).astype(np.int64)  # U_1 position of each member of U_2
        for i, u in enumerate(self.u2):
            row = np.frombuffer(got.pop(u).ciphertexts, dtype=f"V{rec}")  # sender i's records, U_1 order
            if same:
                above, below = row[:i], row[i:]
            else:  # U_1 position q sits at column q - [q > pos(i)] of sender i's row
                cols = pos - (pos > pos[i])
                above, below = row[cols[:i]], row[cols[i + 1:]]
            if i:
                cells[:i, i - 1] = above
            if i + 1 < m2:
                cells[i + 1:, i] = below
        got.clear()  # this dict is self._got.shares: the server keeps no ciphertexts once they are copied
        buf.flags.writeable = False
        big.flags.writeable = False
        out: dict[int, object] = {}
        for j, u in enumerate(self.u2):
            msg = ForwardedShares(sid, senders[j], cast(bytes, buf[j].data))  # a read-only view of its records
            wire.attach_encoding(msg, big[j].data)
            out[u] = msg
        return out

    def _route_graph(self, got: dict[int, ShareKeys], u2: np.ndarray) -> dict[int, object]:
        """Any graph: every record of a member of U_2 for a member of U_2 is
        scattered once, from the received message, to its place in one
        preallocated buffer sorted by (recipient, sender); each recipient's
        :class:`ForwardedShares` is a view of its run."""
        rec = SHARE_RECORD_SIZE
        sid = self.params.session_id
        if not got:
            return {}
        counts = np.array([got[u].recipients.size for u in self.u2], dtype=np.int64)
        senders = np.repeat(u2, counts)
        recipients = np.concatenate([got[u].recipients for u in self.u2])
        keep = np.isin(recipients, u2)
        # senders are already increasing: a stable sort on recipients gives (recipient, sender) order
        sel = np.flatnonzero(keep)
        order = sel[np.argsort(recipients[sel], kind="stable")]
        dest = np.empty(recipients.size, dtype=np.int64)  # where each kept record goes
        dest[order] = np.arange(order.size)
        buf = np.empty((order.size, rec), dtype=np.uint8)
        cells = buf.reshape(-1).view(f"V{rec}")
        start = 0
        for u, c in zip(self.u2, counts.tolist()):
            row = np.frombuffer(got.pop(u).ciphertexts, dtype=f"V{rec}")
            k = keep[start:start + c]
            cells[dest[start:start + c][k]] = row[k]
            start += c
        got.clear()
        buf.flags.writeable = False
        senders, recipients = senders[order], recipients[order]
        senders.flags.writeable = False
        lo, hi = np.searchsorted(recipients, u2, side="left"), np.searchsorted(recipients, u2, side="right")
        flat = buf.reshape(-1)
        return {u: ForwardedShares(sid, senders[a:b], cast(bytes, flat[a * rec:b * rec].data))
                for u, a, b in zip(self.u2, lo.tolist(), hi.tolist())}

    def _close_masked_input(self) -> dict[int, object]:
        self.u3 = tuple(sorted(self._got.masked))
        self._u3_set = frozenset(self.u3)
        self._dropped_set = self._u2_set - self._u3_set
        self._u3_arr = np.array(self.u3, dtype=np.uint32)
        self._dropped_arr = np.array(sorted(self._dropped_set), dtype=np.uint32)
        self._need(len(self.u3), "sent masked inputs")
        dp = self.params.dp
        if dp is not None and len(self.u3) < dp.n_min:  # implied by threshold >= n_min; kept explicit
            raise _AbortNow(AbortReason.TOO_FEW_SURVIVORS,
                            f"{len(self.u3)} clients sent masked inputs; the DP noise needs n_min = {dp.n_min}")
        # every included client needs t surviving holders (complete graph: its
        # holders are all of U_3, just checked)
        if not self.params.is_complete:
            holders = self.params.graph.holders_of(self._u3_arr)
            alive = np.isin(holders, self._u3_arr).sum(axis=1)
            short = np.flatnonzero(alive < self.params.threshold)
            if short.size:
                u = self.u3[int(short[0])]
                self._need(int(alive[short[0]]), f"among the holders of client {u} survive")
        alive = np.array(self.u3, dtype=np.uint32)
        if self.params.malicious_server:
            req = ConsistencyRequest(self.params.session_id, alive)
            self.stage = Stage.CONSISTENCY_CHECK
            return {u: req for u in self.u3}
        self.stage = Stage.UNMASKING
        return self._unmask_requests(self.u3, {})

    def _unmask_requests(self, to: tuple[int, ...], signatures: dict[int, bytes]) -> dict[int, object]:
        req = UnmaskRequest(self.params.session_id, np.array(self.u3, dtype=np.uint32),
                            np.array(sorted(self._dropped_set), dtype=np.uint32), signatures)
        return {u: req for u in to}

    def _close_consistency_check(self) -> dict[int, object]:
        self.u4 = tuple(sorted(self._got.signatures))
        self._u4_set = frozenset(self.u4)
        self._need(len(self.u4), "signed the alive set")
        self.stage = Stage.UNMASKING
        return self._unmask_requests(self.u4, dict(self._got.signatures))

    def _close_unmasking(self) -> dict[int, object]:
        p = self.params
        got = self._got.unmask
        self.u5 = tuple(sorted(got))
        self._need(len(self.u5), "sent unmasking shares")
        adv = self._got.advertised
        sid = p.session_id
        self_masks = self._reconstruct(
            [(h, got[h].self_mask_owners, got[h].self_mask_shares) for h in self.u5], "self-mask seed",
            lambda v, seed: C.self_mask_commitment(sid, v, seed) == adv[v].self_mask_commitment)
        mask_keys = self._reconstruct(
            [(h, got[h].mask_key_owners, got[h].mask_key_shares) for h in self.u5], "mask key",
            lambda v, key: key_matches_public(key, adv[v].mask_public))
        missing = (self._u3_set - set(self_masks)) or (self._dropped_set - set(mask_keys))
        if missing:
            raise _AbortNow(AbortReason.TOO_FEW_SURVIVORS,
                            f"no shares at all for client {min(missing)}; need {p.threshold}")
        acc = self._accumulator
        jobs = [MaskJob(p.entries, p.ring_bits, sid, seeds=tuple(self_masks[v] for v in self.u3))]
        for v in sorted(mask_keys):
            peers = tuple(w for w in p.graph.neighbours(v) if w in self._u3_set)
            jobs.append(MaskJob(p.entries, p.ring_bits, sid, v, secret=mask_keys[v],
                                owner_public=adv[v].mask_public, peers=peers,
                                peer_publics=tuple(adv[w].mask_public for w in peers)))
        try:
            amount = self._unmasker(jobs)
        except Exception as exc:  # e.g. a worker process gone: no aggregate rather than a wrong one
            raise _AbortNow(AbortReason.INTERNAL_ERROR,
                            f"mask removal failed ({type(exc).__name__}); the round cannot complete") from None
        if amount.dtype != acc.dtype or amount.shape != acc.shape:
            raise _AbortNow(AbortReason.INTERNAL_ERROR, "mask removal returned a vector of the wrong shape")
        np.add(acc, amount, out=acc)
        total = from_ring(acc, p.ring_bits) if p.dp is None else acc
        enc = p.encoding
        dropped: dict[int, str] = {}
        for u in p.client_ids:
            if u not in adv:
                dropped[u] = Stage.ADVERTISE_KEYS.value
            elif u not in self._u2_set:
                dropped[u] = Stage.SHARE_KEYS.value
            elif u not in self._u3_set:
                dropped[u] = Stage.MASKED_INPUT.value
            elif p.malicious_server and u not in self._u4_set:
                dropped[u] = Stage.CONSISTENCY_CHECK.value
            elif u not in got:
                dropped[u] = Stage.UNMASKING.value
        if p.dp is not None:
            # protocols/dp/SPEC.md §9: the ring sum modulo 2^b is the survivors' DP sum
            try:
                dp_sum, count = p.dp.decode_sum(acc)
                report = p.dp.report(len(self.u3), count)
            except Exception as exc:  # e.g. the accountant missing: no aggregate rather than one without its report
                raise _AbortNow(AbortReason.INTERNAL_ERROR,
                                f"DP decoding failed ({type(exc).__name__}: {exc})") from None
            self.outcome = DPServerResult(sum_weighted=dp_sum, sum_weights=float(len(self.u3)),
                                          included=self.u3, dropped=dropped, dp=report)
        else:
            self.outcome = ServerResult(sum_weighted=enc.decode(total[:-1]),
                                        sum_weights=float(enc.decode(total[-1])), included=self.u3, dropped=dropped)
        self.stage = Stage.DONE
        return {}

    def _reconstruct(self, revealed: list[tuple[int, np.ndarray, np.ndarray]], what: str,
                     check: "Callable[[int, bytes], bool]") -> dict[int, bytes]:
        """Reconstruct every owner's secret from the first ``t`` holders (by id)
        who revealed a share of it, and ``check`` it against what the owner
        committed to in round 0. All shares are sorted by (owner, holder) in one
        array pass; owners with the same ``t`` holders share one set of Lagrange
        coefficients, so each secret costs a dot product. A secret that fails
        its check is retried without one holder at a time (a single holder
        sending a wrong share cannot block the round when spare shares exist);
        if none passes, the round aborts: never a wrong aggregate."""
        t = self.params.threshold
        fast = self._reconstruct_common_holders(revealed, check)
        if fast is not None:
            return fast
        kept = [(h, o, s) for h, o, s in revealed if o.size]
        if not kept:
            return {}
        # one concatenation per column (a SecAgg+ server has one short message per holder)
        sizes = np.fromiter((o.size for _, o, _ in kept), dtype=np.int64, count=len(kept))
        holder = np.repeat(np.fromiter((h for h, _, _ in kept), dtype=np.int64, count=len(kept)), sizes)
        owner = np.concatenate([o for _, o, _ in kept]).astype(np.int64)
        rows = np.concatenate([s.reshape(-1) for _, _, s in kept]).reshape(-1, SHARE_CHUNKS)
        order = np.lexsort((holder, owner))
        holder, owner, rows = holder[order], owner[order], rows[order]
        owners, start, count = np.unique(owner, return_index=True, return_counts=True)
        if np.any(count < t):
            bad = int(owners[np.argmax(count < t)])
            raise _AbortNow(AbortReason.TOO_FEW_SURVIVORS,
                            f"only {int(count[np.argmax(count < t)])} shares of the {what} of client {bad}; need {t}")
        take = (start.reshape(-1, 1) + np.arange(t).reshape(1, -1))  # first t holders of each owner
        holder_sets = holder[take]
        shares = rows[take].astype(np.uint64)
        if (holder_sets == holder_sets[:1]).all():  # complete graph: one holder set for every owner
            coeffs = np.broadcast_to(shamir.lagrange_at_zero(holder_sets[0].tolist()), holder_sets.shape)
        else:
            groups, inverse = np.unique(holder_sets, axis=0, return_inverse=True)
            if groups.shape[0] * t * t <= 20_000_000:  # small sets (SecAgg+): all at once
                table = shamir.lagrange_at_zero_batch(groups)
            else:  # large differing sets: one at a time, bounded memory
                table = np.stack([shamir.lagrange_at_zero(g.tolist()) for g in groups])
            coeffs = table[inverse.reshape(-1)]
        secrets = shamir.reconstruct_rows(coeffs, shares, 32)
        out: dict[int, bytes] = {}
        failed: list[int] = []
        for i, (v, secret) in enumerate(zip(owners.tolist(), secrets)):
            if secret is not None and check(v, secret):
                out[v] = secret
            else:
                failed.append(i)
        # holders whose share made a secret fail (in this pass or an earlier one), tried first for the next owner
        suspects: list[int] = sorted(self.suspected_holders)
        for i in failed:  # slow path
            v = int(owners[i])
            lo, hi = int(start[i]), int(start[i] + count[i])
            secret = self._retry(holder[lo:hi], rows[lo:hi], functools.partial(check, v), suspects)
            if secret is None:
                raise _AbortNow(AbortReason.RECONSTRUCTION_FAILED,
                                f"the {what} of client {v} fails its round-0 commitment with every holder set tried",
                                culprits=(v,))
            out[v] = secret
        if suspects:
            self.suspected_holders.update(suspects)
        return out

    def _reconstruct_common_holders(self, revealed: list[tuple[int, np.ndarray, np.ndarray]],
                                    check: "Callable[[int, bytes], bool]") -> dict[int, bytes] | None:
        """The common case of the complete graph: every holder revealed shares
        of the same owners. Then the first ``t`` holders serve every owner, and
        reconstruction is ``t`` vector operations over all owners at once, with
        no sorting. Returns ``None`` (use the general path) otherwise, or if any
        secret fails its check (the general path retries)."""
        t = self.params.threshold
        with_shares = [(h, o, s) for h, o, s in revealed if o.size]
        if len(with_shares) < t:
            return None
        owners = with_shares[0][1]
        if not all(_same_array(o, owners) for _, o, _ in with_shares[1:]):
            return None
        first = with_shares[:t]  # revealed is in holder-id order
        coeffs = shamir.lagrange_at_zero([h for h, _, _ in first])
        # one Lagrange matrix product over the t holders: every owner's chunks at once
        chunks = shamir.combine_at_zero(coeffs, [s for _, _, s in first]).reshape(owners.size, SHARE_CHUNKS)
        out: dict[int, bytes] = {}
        for v, secret in zip(owners.tolist(), shamir.secrets_from_chunk_rows(chunks, 32)):
            if secret is None or not check(v, secret):
                return None
            out[v] = secret
        return out

    def _retry(self, holders: np.ndarray, rows: np.ndarray, ok: "Callable[[bytes], bool]",
               suspects: list[int]) -> bytes | None:
        """Reconstruct from ``t`` of the given holders, leaving out one of the
        first ``t`` at a time (leaving out any later one gives back the set
        that failed): known suspects first, then in id order. Lagrange
        coefficients are cached per holder set across owners."""
        t = self.params.threshold
        if holders.size <= t:
            return None
        ids = holders.tolist()
        first = ids[:t]
        order = [first.index(h) for h in suspects if h in first] + list(range(t))
        # every set tried is the first t + 1 holders less one of the first t:
        # all of them at once, one Lagrange computation (shamir.reconstruct_without_each)
        key = tuple(ids[:t + 1])
        mu = self._lagrange_cache.get(key)
        if mu is None:
            mu = shamir.lagrange_at_zero(list(key))
            if len(self._lagrange_cache) < 64:  # owners sharing holders share them (complete graph: one set)
                self._lagrange_cache[key] = mu
        secrets = shamir.reconstruct_without_each(key, rows[:t + 1].astype(np.uint64), 32, coefficients=mu)
        seen: set[int] = set()
        for skip in order:
            if skip in seen:
                continue
            seen.add(skip)
            secret = secrets[skip]  # the first t + 1 holders but ids[skip]
            if secret is not None and ok(secret):
                if ids[skip] not in suspects:
                    suspects.append(ids[skip])
                return secret
        return None

    # ---------------------------------------------------------------- audit
    def audit_record(self) -> dict[str, object]:
        """A value-free structured record of the round (no update values)."""
        rec: dict[str, object] = dict(self.params.summary())
        rec.update({"stage": self.stage.value, "advertised": len(self.u1), "shared": len(self.u2),
                    "included": list(self.u3), "suspected_holders": sorted(self.suspected_holders),
                    "rejected_messages": [
                        {"sender": s, "stage": st, "reason": r} for s, st, r in self.rejected]})
        if isinstance(self.outcome, ServerResult):
            rec["dropped"] = {str(k): v for k, v in sorted(self.outcome.dropped.items())}
            if isinstance(self.outcome, DPServerResult) and self.outcome.dp is not None:
                rec["dp_round"] = self.outcome.dp.summary()
            rec["outcome"] = "completed"
        elif isinstance(self.outcome, Abort):
            rec["outcome"] = "aborted"
            rec["abort_reason"] = self.outcome.reason.value
            rec["abort_detail"] = self.outcome.detail
            rec["abort_stage"] = self.outcome.stage
            if self.outcome.culprits:
                rec["abort_culprits"] = list(self.outcome.culprits)
        return rec


class _AbortNow(Exception):
    def __init__(self, reason: AbortReason, detail: str, culprits: tuple[int, ...] = ()):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.culprits = culprits
