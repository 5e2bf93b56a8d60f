"""The client of the pairwise-masking protocol (SPEC.md §3), sans I/O.

A :class:`MaskingClient` holds one round's :class:`ClientState`. Each round
method takes the server's message, *validates everything first*, computes a new
state and the reply, and only then commits the new state: a message that fails
a check raises :class:`~secagg.errors.RemoteProtocolError` with a typed reason
and leaves the client unchanged. :meth:`MaskingClient.handle` is the driver's
entry point: it turns such an error into the ``aborted`` state (a client that
sees a dishonest server stops talking to it) and returns ``None``.

Named checks (the security invariants of protocols/THREAT_MODEL.md):

* ``_check_session`` — every server message carries this round's session id;
* ``_check_keys`` — no two parties share a public key, my own advertisement is
  echoed unchanged, signatures verify (malicious-server mode);
* ``_check_enough`` — at least ``t`` share holders remain at every round;
* ``_check_unmask_sets`` — alive and dropped are disjoint, consistent with what
  this client saw, and each peer gets **one** kind of share, never both.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from ...dp.pipeline import unwrap
from ...encoding import wire
from ...encoding.ring import dtype_for, to_ring
from ...errors import AbortReason, LocalProtocolError, ParameterError, RemoteProtocolError, from_peer
from ...primitives import aead, shamir
from ...primitives.key_agreement import agree_many, canonical_publics, generate_keypair
from ...primitives.prg import prg_ring_add_into, prg_ring_add_many_into
from ...primitives.randomness import RandomSource, default_random
from ...primitives.signatures import public_signing_key, sign, verify
from . import _crypto as C
from .messages import (SHARE_CHUNKS, SHARE_RECORD_PLAINTEXT, SHARE_RECORD_SIZE, ConsistencyRequest,
                       ConsistencySignature, ForwardedShares, KeysBroadcast, MaskedInput, ShareKeys, UnmaskRequest,
                       UnmaskShares, AdvertiseKeys)
from .params import MaskingParams

__all__ = ["MaskingClient", "ClientState"]

_EMPTY_IDS = np.zeros(0, dtype=np.uint32)


@wire.message("masking.ClientState")
@dataclass(frozen=True)
class ClientState:
    """Everything a client keeps between rounds (secrets included: store it
    only where the client's own secrets may live)."""

    client_id: int
    stage: str
    enc_private: bytes
    enc_public: bytes
    mask_private: bytes
    mask_public: bytes
    self_mask_seed: bytes
    commitment: bytes
    peers: KeysBroadcast | None = None
    enc_keys: bytes = b""  # k_{u,v} for each peer in `peers` order (own slot zeros)
    mask_seeds: bytes = b""  # s_{u,v} for each peer in `peers` order (own slot zeros)
    held_owners: np.ndarray = field(default_factory=lambda: _EMPTY_IDS)
    held_self_mask: np.ndarray = field(default_factory=lambda: _EMPTY_IDS)  # rows of SHARE_CHUNKS, flattened
    held_mask_key: np.ndarray = field(default_factory=lambda: _EMPTY_IDS)
    masked_with: np.ndarray = field(default_factory=lambda: _EMPTY_IDS)
    signed_alive: np.ndarray | None = None
    abort_reason: str = ""
    abort_detail: str = ""

    def __repr__(self) -> str:  # never print the private keys, seeds, pairwise keys or held shares
        aborted = f", aborted: {self.abort_reason}" if self.abort_reason else ""
        return f"ClientState(client {self.client_id}, stage {self.stage!r}{aborted}, <secrets hidden>)"


def _fail(reason: AbortReason, detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(detail, reason)


class MaskingClient:
    """One client in one round. ``rng`` is the injected random source.

    Malicious-server mode needs ``signing_key`` (this client's Ed25519 private
    key) and ``trusted_signing_keys``: every participant's Ed25519 public key
    as obtained from a source the server does not control (a PKI, a registry
    distributed out of band). The round's parameters come from the server, so
    their ``signing_keys`` are only accepted if they equal the trusted ones:
    otherwise a server could swap in keys it holds and impersonate peers."""

    def __init__(self, params: MaskingParams, client_id: int, rng: RandomSource | None = None,
                 signing_key: bytes | None = None, *, trusted_signing_keys: Mapping[int, bytes] | None = None,
                 state: ClientState | None = None):
        if client_id not in params.graph:
            raise ParameterError(f"client {client_id} is not a participant of this round")
        if params.malicious_server:
            if signing_key is None:
                raise ParameterError("malicious-server mode needs the client's Ed25519 signing key")
            if trusted_signing_keys is None:
                raise ParameterError(
                    "malicious-server mode needs trusted_signing_keys: the participants' Ed25519 public keys "
                    "from a source the server does not control (the round's parameters come from the server)")
            if public_signing_key(signing_key) != params.signing_keys.get(client_id):
                raise ParameterError("the round's parameters carry a different signing key for this client")
            if any(trusted_signing_keys.get(v) != k for v, k in params.signing_keys.items()):
                raise ParameterError("the round's signing keys differ from the trusted ones: refusing the round")
        self.params = params
        self.client_id = client_id
        self._rng = default_random(rng)
        self._signing_key = signing_key
        if state is not None and (state.client_id != client_id or not isinstance(state, ClientState)):
            raise ParameterError("the saved state belongs to another client")
        if state is None:
            enc = generate_keypair(self._rng)
            mask = generate_keypair(self._rng)
            seed = self._rng.bytes(32)
            state = ClientState(client_id=client_id, stage="init", enc_private=enc.private,
                                 enc_public=enc.public, mask_private=mask.private, mask_public=mask.public,
                                 self_mask_seed=seed,
                                 commitment=C.self_mask_commitment(params.session_id, client_id, seed))
        self.state = state
        self.last_clipped = 0  # update entries clipped by the last masked input

    def __repr__(self) -> str:  # the state and the signing key stay out of it
        return (f"MaskingClient(client {self.client_id}, stage {self.state.stage!r}, "
                f"session {self.params.session_id.hex()[:16]})")

    # ---------------------------------------------------------------- persistence
    def to_bytes(self) -> bytes:
        """The client's state (with its secrets) in the canonical wire form."""
        return wire.encode(self.state)

    @classmethod
    def from_bytes(cls, params: MaskingParams, data: bytes, rng: RandomSource | None = None,
                   signing_key: bytes | None = None, *,
                   trusted_signing_keys: Mapping[int, bytes] | None = None) -> "MaskingClient":
        state = wire.decode(data, ClientState)
        return cls(params, state.client_id, rng, signing_key, trusted_signing_keys=trusted_signing_keys,
                   state=state)

    # ---------------------------------------------------------------- introspection
    @property
    def stage(self) -> str:
        return self.state.stage

    @property
    def aborted(self) -> bool:
        return self.state.stage == "aborted"

    @property
    def abort_reason(self) -> AbortReason | None:
        return AbortReason(self.state.abort_reason) if self.state.abort_reason else None

    # ---------------------------------------------------------------- checks
    def _expect(self, stage: str, *more: str) -> None:
        if self.state.stage not in (stage, *more):
            if self.state.stage == "aborted":
                raise LocalProtocolError("this client has aborted the round")
            raise _fail(AbortReason.WRONG_ROUND, f"message not expected in stage {self.state.stage!r}")

    def _check_session(self, session_id: bytes) -> None:
        if session_id != self.params.session_id:
            raise _fail(AbortReason.SESSION_MISMATCH, "message belongs to another session")

    def _check_enough(self, count: int, what: str) -> None:
        if count < self.params.threshold:
            raise _fail(AbortReason.TOO_FEW_SURVIVORS,
                        f"only {count} share holders {what}; threshold is {self.params.threshold}")

    @staticmethod
    def _check_ids(ids: np.ndarray, what: str) -> None:
        if ids.size and (np.any(ids[1:] <= ids[:-1])):
            raise _fail(AbortReason.MALFORMED_MESSAGE, f"{what} must be sorted and distinct")

    def _check_keys(self, msg: KeysBroadcast) -> None:
        u = self.client_id
        m = msg.client_ids.size
        if (len(msg.enc_publics) != 32 * m or len(msg.mask_publics) != 32 * m or len(msg.commitments) != 32 * m
                or len(msg.signatures) not in ((64 * m,) if self.params.malicious_server else (0,))):
            raise _fail(AbortReason.MALFORMED_MESSAGE, "key broadcast columns have the wrong length")
        self._check_ids(msg.client_ids, "key broadcast ids")
        holders = set(self.params.graph.holders(u))
        ids = msg.client_ids.tolist()
        if not set(ids) <= holders:
            raise _fail(AbortReason.UNEXPECTED_SENDER, "key broadcast names clients that are not my neighbours")
        if u not in ids:
            raise _fail(AbortReason.MALFORMED_MESSAGE, "key broadcast omits my own advertisement")
        mine = msg.entry(ids.index(u))
        if (mine.enc_public, mine.mask_public, mine.self_mask_commitment) != (
                self.state.enc_public, self.state.mask_public, self.state.commitment):
            raise _fail(AbortReason.MALFORMED_MESSAGE, "key broadcast altered my own advertisement")
        enc_keys = np.frombuffer(msg.enc_publics, dtype=np.uint8).reshape(m, 32)
        mask_keys = np.frombuffer(msg.mask_publics, dtype=np.uint8).reshape(m, 32)
        if not (canonical_publics(enc_keys).all() and canonical_publics(mask_keys).all()):
            raise _fail(AbortReason.MALFORMED_MESSAGE, "a public key is not canonically encoded")
        for keys in (enc_keys, mask_keys):
            if np.unique(keys.view("V32").ravel()).size != m:
                raise _fail(AbortReason.DUPLICATE_PUBLIC_KEY, "two parties advertise the same public key")
        if np.unique(np.concatenate([enc_keys, mask_keys]).view("V32").ravel()).size != 2 * m:
            raise _fail(AbortReason.DUPLICATE_PUBLIC_KEY, "an encryption key is reused as a masking key")
        if self.params.malicious_server:
            sid = self.params.session_id
            for i, v in enumerate(ids):
                e = msg.entry(i)
                verify(self.params.signing_keys[v],
                       C.advertise_statement(sid, v, e.enc_public, e.mask_public, e.self_mask_commitment),
                       e.signature)
        self._check_enough(m, "advertised keys")

    # ---------------------------------------------------------------- round 0
    def advertise_keys(self) -> AdvertiseKeys:
        """Round 0 (AdvertiseKeys): send ``c_u^PK``, ``s_u^PK`` and the
        commitment to ``b_u``, signed in malicious-server mode."""
        if self.state.stage != "init":
            raise LocalProtocolError("keys were already advertised in this round")
        st = self.state
        signature = b""
        if self.params.malicious_server:
            assert self._signing_key is not None
            signature = sign(self._signing_key, C.advertise_statement(
                self.params.session_id, self.client_id, st.enc_public, st.mask_public, st.commitment))
        self.state = replace(st, stage="advertised")
        return AdvertiseKeys(self.client_id, self.params.session_id, st.enc_public, st.mask_public, st.commitment,
                             signature)

    # ---------------------------------------------------------------- round 1
    # Rounds 1 to 4 work on the server's message: a primitive's refusal of its
    # bytes (a low-order key, a record that fails to decrypt, a signature that
    # does not verify) is a RemoteProtocolError here (from_peer).
    @from_peer()
    def share_keys(self, msg: KeysBroadcast) -> ShareKeys:
        """Round 1 (ShareKeys): Shamir-share ``b_u`` and ``s_u^SK`` among the
        holders present, encrypt each peer's pair of shares under ``k_{u,v}``."""
        self._expect("advertised")
        self._check_session(msg.session_id)
        self._check_keys(msg)
        st, p, u = self.state, self.params, self.client_id
        ids = msg.client_ids.tolist()
        sid = p.session_id
        # both key agreements with every peer first: a low-order key aborts here,
        # before any randomness is drawn for this message
        peers = [(i, v) for i, v in enumerate(ids) if v != u]
        peer_encs = [msg.enc_publics[32 * i:32 * (i + 1)] for i, _ in peers]
        peer_masks = [msg.mask_publics[32 * i:32 * (i + 1)] for i, _ in peers]
        enc_secrets = agree_many(st.enc_private, peer_encs)
        mask_secrets = agree_many(st.mask_private, peer_masks)
        recipients = [v for _, v in peers]
        peer_keys = C.pair_keys("masking/share-encryption", enc_secrets, sid, u, st.enc_public, recipients, peer_encs)
        seeds = C.pair_keys("masking/pairwise-mask", mask_secrets, sid, u, st.mask_public, recipients, peer_masks)
        me = ids.index(u)  # own slot: 32 zero bytes in both tables
        enc_keys = b"".join(peer_keys[:me]) + bytes(32) + b"".join(peer_keys[me:])
        mask_seeds = b"".join(seeds[:me]) + bytes(32) + b"".join(seeds[me:])
        share_b, share_sk = shamir.split_many([st.self_mask_seed, st.mask_private], p.threshold, ids, self._rng)
        # plaintext of the record for v: (u, v) then v's share of b_u, then of s_u^SK
        bodies = np.concatenate([share_b, share_sk], axis=1).astype("<u4")
        records = aead.encrypt_many(
            peer_keys, [struct.pack(">II", u, v) + bodies[i].tobytes() for i, v in peers],
            [C.share_associated_data(sid, u, v) for v in recipients], self._rng)
        self.state = replace(
            st, stage="shared", peers=msg, enc_keys=enc_keys, mask_seeds=mask_seeds,
            held_owners=np.array([u], dtype=np.uint32),
            held_self_mask=share_b[me].astype(np.uint32), held_mask_key=share_sk[me].astype(np.uint32))
        return ShareKeys(u, sid, np.array(recipients, dtype=np.uint32), b"".join(records))

    # ---------------------------------------------------------------- round 2
    @from_peer()
    def masked_input(self, msg: ForwardedShares, update: np.ndarray, weight: float = 1.0) -> MaskedInput:
        """Round 2 (MaskedInputCollection): decrypt and check the shares
        received, then send ``y_u = [w x_u, w] + PRG(b_u) + sum_v ±PRG(s_{u,v})``
        over the peers ``v`` whose shares arrived (this client's view of U_2)."""
        self._expect("shared")
        self._check_session(msg.session_id)
        p, st, u = self.params, self.state, self.client_id
        x = np.asarray(update, dtype=np.float64).ravel()
        if x.size != p.dim:
            raise ParameterError(f"update has {x.size} entries; this round aggregates {p.dim}")
        dp = p.dp
        enc = p.encoding
        if dp is not None:
            if type(weight) not in (int, float) or weight != 1:
                # a private weight would change the sensitivity, and its slot would be released unnoised
                raise ParameterError(f"a DP round is unweighted: the weight must be 1, got {weight!r}")
        else:
            enc.check_weight(weight)

        # decrypt and check every forwarded share before using any
        senders = msg.senders
        self._check_ids(senders, "senders")
        assert st.peers is not None
        peer_ids = st.peers.client_ids.tolist()
        index = {v: i for i, v in enumerate(peer_ids)}
        if len(msg.ciphertexts) != SHARE_RECORD_SIZE * senders.size:
            raise _fail(AbortReason.MALFORMED_MESSAGE, "forwarded share records have the wrong length")
        sid = p.session_id
        sender_list = senders.tolist()
        plains = []
        for j, v in enumerate(sender_list):
            if v == u or v not in index:
                raise _fail(AbortReason.UNEXPECTED_SENDER, f"share from {v}, who is not an advertised neighbour")
            i = index[v]
            record = bytes(msg.ciphertexts[SHARE_RECORD_SIZE * j:SHARE_RECORD_SIZE * (j + 1)])  # from a view
            plain = aead.decrypt(st.enc_keys[32 * i:32 * (i + 1)], record, C.share_associated_data(sid, v, u))
            if len(plain) != SHARE_RECORD_PLAINTEXT:
                raise _fail(AbortReason.INVALID_CIPHERTEXT, "share record has the wrong length")
            plains.append(plain)
        # all records decrypted: check their headers (sender, me) and field range at once
        table = np.frombuffer(b"".join(plains), dtype=np.uint8).reshape(len(plains), SHARE_RECORD_PLAINTEXT)
        header = table[:, :8].copy().view(">u4").reshape(-1, 2)
        if not (np.array_equal(header[:, 0], senders) and bool(np.all(header[:, 1] == u))):
            raise _fail(AbortReason.INVALID_CIPHERTEXT, "share record names the wrong parties")
        body = table[:, 8:].copy().view("<u4").astype(np.uint32).reshape(-1, 2, SHARE_CHUNKS)
        if np.any(body >= shamir.M31.prime):
            raise _fail(AbortReason.INVALID_CIPHERTEXT, "share value outside the field")
        owners = [u] + sender_list
        got_b = [st.held_self_mask.reshape(1, SHARE_CHUNKS), body[:, 0]]
        got_sk = [st.held_mask_key.reshape(1, SHARE_CHUNKS), body[:, 1]]
        self._check_enough(len(owners), "sent their shares")

        # encode [w x, w] (or the DP vector) only once the server's message has passed every check
        if dp is not None:
            # protocols/dp/SPEC.md §9: the noised vector in Z_{2^b}, centered; 2^b divides the ring's
            # modulus, so the ring sum reduced modulo 2^b is the DP sum
            encoded = dp.encode_update(x, self._rng)
            vector = unwrap(encoded.values, dp.bits)
            self.last_clipped = int(encoded.clipped)
        else:
            quantized = enc.quantize(x, weight, self._rng)
            vector = np.empty(p.entries, dtype=np.int64)
            vector[:-1] = quantized.values
            vector[-1] = enc.quantize_weight(weight, self._rng)
            self.last_clipped = quantized.clipped

        # mask: self mask from b_u, one pairwise mask per peer in U_2
        masked = to_ring(vector, p.ring_bits)
        prg_ring_add_into(masked, st.self_mask_seed, C.SELF_MASK_TAG)
        seeds = st.mask_seeds  # s_{u,v}, agreed in ShareKeys
        prg_ring_add_many_into(masked, [seeds[32 * index[v]:32 * (index[v] + 1)] for v in sender_list],
                               C.PAIR_MASK_TAG, [C.mask_sign(u, v) for v in sender_list])
        order = np.argsort(np.array(owners, dtype=np.int64))
        self.state = replace(
            st, stage="masked",
            held_owners=np.array(owners, dtype=np.uint32)[order],
            held_self_mask=np.concatenate(got_b)[order].astype(np.uint32).ravel(),
            held_mask_key=np.concatenate(got_sk)[order].astype(np.uint32).ravel(),
            masked_with=np.array(sorted(senders.tolist()), dtype=np.uint32))
        assert masked.dtype == dtype_for(p.ring_bits)
        return MaskedInput(u, sid, masked)

    # ---------------------------------------------------------------- round 3
    @from_peer()
    def consistency_check(self, msg: ConsistencyRequest) -> ConsistencySignature:
        """Round 3 (ConsistencyCheck, malicious-server mode): sign U_3."""
        self._expect("masked")
        if not self.params.malicious_server:
            raise _fail(AbortReason.WRONG_ROUND, "no consistency check in honest-server mode")
        self._check_session(msg.session_id)
        alive = msg.alive
        self._check_ids(alive, "alive")
        alive_set = set(alive.tolist())
        self._check_alive(alive_set)
        st = self.state
        sig = sign(self._signing_key, C.consistency_statement(  # type: ignore[arg-type]
            self.params.session_id, self.client_id, st.enc_public, st.mask_public, alive))
        self.state = replace(self.state, stage="checked", signed_alive=alive.copy())
        return ConsistencySignature(self.client_id, self.params.session_id, sig)

    def _check_alive(self, alive: set[int]) -> None:
        u = self.client_id
        if u not in alive:
            raise _fail(AbortReason.INCONSISTENT_DROPOUT_SETS, "server lists me as not alive")
        if not alive <= set(self.params.client_ids):
            raise _fail(AbortReason.UNEXPECTED_SENDER, "alive set names unknown clients")
        my_view = set(self.state.masked_with.tolist())
        neighbours = set(self.params.graph.neighbours(u))
        if (alive & neighbours) - my_view:
            raise _fail(AbortReason.INCONSISTENT_DROPOUT_SETS,
                        "alive set names neighbours whose shares never reached me")
        self._check_enough(len(alive & set(self.params.graph.holders(u))), "alive")

    # ---------------------------------------------------------------- round 4
    def _check_unmask_sets(self, msg: UnmaskRequest) -> tuple[list[int], list[int]]:
        """Invariant 1: for each peer, reveal the b-share (alive) or the
        s^SK-share (dropped), never both, and only for lists consistent with
        everything this client has seen."""
        u = self.client_id
        self._check_ids(msg.alive, "alive")
        self._check_ids(msg.dropped, "dropped")
        alive, dropped = set(msg.alive.tolist()), set(msg.dropped.tolist())
        if alive & dropped:
            raise _fail(AbortReason.INCONSISTENT_DROPOUT_SETS, "a client is listed both alive and dropped")
        if not dropped <= set(self.params.client_ids):
            raise _fail(AbortReason.UNEXPECTED_SENDER, "dropped set names unknown clients")
        self._check_alive(alive)
        if self.state.signed_alive is not None and not np.array_equal(self.state.signed_alive, msg.alive):
            raise _fail(AbortReason.INCONSISTENT_DROPOUT_SETS, "alive set differs from the one I signed")
        my_view = set(self.state.masked_with.tolist())
        neighbours = set(self.params.graph.neighbours(u))
        missing = my_view - alive - dropped
        if missing:
            raise _fail(AbortReason.INCONSISTENT_DROPOUT_SETS,
                        f"{len(missing)} peer(s) I masked with are neither alive nor dropped")
        if (dropped & neighbours) - my_view:
            raise _fail(AbortReason.INCONSISTENT_DROPOUT_SETS, "dropped set names peers I never masked with")
        reveal_b = sorted((alive & my_view) | {u})
        reveal_sk = sorted(dropped & my_view)
        assert not set(reveal_b) & set(reveal_sk)
        return reveal_b, reveal_sk

    def _check_consistency_signatures(self, msg: UnmaskRequest) -> None:
        if not self.params.malicious_server:
            if msg.signatures:
                raise _fail(AbortReason.MALFORMED_MESSAGE, "unexpected signatures in honest-server mode")
            return
        if self.state.signed_alive is None:
            raise _fail(AbortReason.WRONG_ROUND, "unmask request before the consistency check")
        alive = set(msg.alive.tolist())
        if not alive <= set(self.params.client_ids):
            raise _fail(AbortReason.UNEXPECTED_SENDER, "alive set names unknown clients")
        peers = self.state.peers
        assert peers is not None
        keys_of = {v: peers.entry(i) for i, v in enumerate(peers.client_ids.tolist())}
        counted = 0
        for v, s in msg.signatures.items():
            if v not in alive:
                raise _fail(AbortReason.INVALID_SIGNATURE, "consistency signature from a client not alive")
            entry = keys_of.get(v)
            if entry is None:
                continue  # not a share holder of mine: its keys are unknown here and it does not count
            verify(self.params.signing_keys[v], C.consistency_statement(
                self.params.session_id, v, entry.enc_public, entry.mask_public, msg.alive), s)
            counted += 1
        self._check_enough(counted, "signed the alive set")

    @from_peer()
    def unmask(self, msg: UnmaskRequest) -> UnmaskShares:
        """Round 4 (Unmasking): reveal ``b_v`` shares for alive peers and
        ``s_v^SK`` shares for dropped ones."""
        self._expect("checked" if self.params.malicious_server else "masked")
        self._check_session(msg.session_id)
        self._check_consistency_signatures(msg)
        reveal_b, reveal_sk = self._check_unmask_sets(msg)
        st = self.state
        row = {v: i for i, v in enumerate(st.held_owners.tolist())}
        b_rows = [row[v] for v in reveal_b]
        sk_rows = [row[v] for v in reveal_sk]
        self.state = replace(st, stage="done")
        held_b = st.held_self_mask.reshape(-1, SHARE_CHUNKS)
        held_sk = st.held_mask_key.reshape(-1, SHARE_CHUNKS)
        return UnmaskShares(self.client_id, self.params.session_id, np.array(reveal_b, dtype=np.uint32),
                            held_b[b_rows].ravel().astype(np.uint32),
                            np.array(reveal_sk, dtype=np.uint32),
                            held_sk[sk_rows].ravel().astype(np.uint32))

    # ---------------------------------------------------------------- driver
    def respond(self, msg: object, update: np.ndarray | None = None, weight: float = 1.0) -> object:
        """Answer a server message of rounds 1 to 4 (round 0 is
        :meth:`advertise_keys`). Raises :class:`RemoteProtocolError` (state
        unchanged) if the message fails a check."""
        if isinstance(msg, KeysBroadcast):
            return self.share_keys(msg)
        if isinstance(msg, ForwardedShares):
            if update is None:
                raise LocalProtocolError("the masked-input round needs the client's update")
            return self.masked_input(msg, update, weight)
        if isinstance(msg, ConsistencyRequest):
            return self.consistency_check(msg)
        if isinstance(msg, UnmaskRequest):
            return self.unmask(msg)
        raise _fail(AbortReason.MALFORMED_MESSAGE, f"not a server message: {type(msg).__name__}")

    def handle(self, msg: object, update: np.ndarray | None = None, weight: float = 1.0) -> object | None:
        """:meth:`respond`, except that a check that fails moves the client to
        the ``aborted`` state (reason in :attr:`abort_reason`) and returns
        ``None``: it sends nothing more this round."""
        try:
            return self.respond(msg, update, weight)
        except RemoteProtocolError as exc:
            self.state = replace(self.state, stage="aborted", abort_reason=exc.reason.value, abort_detail=str(exc))
            return None
