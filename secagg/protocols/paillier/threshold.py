"""Threshold decryption of the Paillier aggregate by a committee of clients
(protocols/paillier/SPEC.md §8).

No party holds the decryption key: a dealer shares it among the committee
(:func:`deal_committee`, then forgets it) and any ``t`` members decrypt the
round's aggregate together; the server combines their shares. Each member
decrypts only what it is asked for of ONE aggregate per session, for a
session it registered, over at least its own minimum of included clients.

Pieces:

* :class:`CommitteeKey` (wire ``paillier.CommitteeKey``): the public key,
  the threshold, the holders (client ids; share ``i`` belongs to
  ``holders[i - 1]``) and the verification keys. Every client pins it.
* :func:`assign_blocks`: the aggregate's ciphertexts cut into one group per
  live holder; group ``g`` goes to ``t + spares`` holders in turn, so each
  holder decrypts about ``(t + spares) / c`` of the ciphertexts.
* :class:`DecryptionRequest` (server -> holder) and
  :class:`DecryptionShares` (holder -> server), with the batched proof.
* :class:`ThresholdDecryptor` (the holder's checks and answer) and
  :class:`ThresholdCombiner` (the server's side: requests, verification of
  each answer on intake, a recovery request for groups that lack ``t`` valid
  shares, the combine).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gmpy2 import mpz

from ...encoding import wire
from ...errors import (InvalidCiphertext, InvalidDecryptionShare, LocalProtocolError, ParameterError,
                       ReconstructionError, RemoteProtocolError, WireFormatError, from_peer)
from ...primitives import paillier as pl
from ...primitives import threshold_paillier as tp
from ...primitives.randomness import RandomSource
from .messages import (DIGEST_BLOCK_RECORDS, AlreadyDecrypted, KeyMismatch, LateSubmission, SessionMismatch, SubmissionStatement,
                       TooFewClients, UnexpectedSender, block_hashes, check_verify_keys, digest_of_blocks,
                       verify_statements)
from .params import MAX_CLIENT_ID, PaillierParams

__all__ = ["CommitteeKey", "SubmissionEvidence", "covering_blocks", "DecryptionRequest", "DecryptionShares", "DecryptorRecord", "ThresholdDecryptor",
           "ThresholdCombiner", "assign_blocks", "deal_committee", "default_committee_threshold",
           "aggregate_digest", "check_majority", "MAX_ATTEMPTS"]

_ID = {"min": 1, "max": MAX_CLIENT_ID}
_HASH = {"len": 32}
_CONTEXT_TAG = b"secagg/v1/paillier/threshold-request\x00"
_AGGREGATE_TAG = b"secagg/v1/paillier/aggregate\x00"
#: A request (attempt 0) and one recovery request (attempt 1) per session.
MAX_ATTEMPTS = 2


def aggregate_digest(session_id: bytes, aggregate: bytes) -> bytes:
    """``SHA-256(tag || sid || aggregate ciphertext bytes)``: the one
    aggregate a holder decrypts in a session."""
    return hashlib.sha256(_AGGREGATE_TAG + bytes(session_id) + bytes(aggregate)).digest()


def _elements_to_bytes(values: Sequence[int], length: int) -> bytes:
    return b"".join(int(v).to_bytes(length, "big") for v in values)


def _elements_from_bytes(data: bytes, length: int, what: str) -> list[mpz]:
    if len(data) % length:
        raise WireFormatError(f"{what}: {len(data)} bytes is not a whole number of {length}-byte records")
    view = memoryview(data)
    return [mpz(int.from_bytes(view[i:i + length], "big")) for i in range(0, len(data), length)]


# ---------------------------------------------------------------- the committee's key

@wire.message("paillier.CommitteeKey")
@dataclass(frozen=True)
class CommitteeKey:
    """The committee's public key. ``holders[i - 1]`` holds share ``i``;
    ``verification_keys`` are ``v_1..v_l`` as fixed-length records of
    ``ceil(bits(n^2) / 8)`` bytes."""

    modulus: bytes = field(metadata={"max_len": pl.MAX_KEY_BITS // 8})
    threshold: int = field(metadata={"min": 1})
    holders: tuple[int, ...] = field(metadata={"item": _ID})
    base: bytes
    verification_keys: bytes

    def __post_init__(self) -> None:
        pk = pl.PublicKey.from_bytes(self.modulus)  # exact size, odd, not a square, canonical
        holders = self.holders
        if len(holders) < 2 or list(holders) != sorted(set(holders)):
            raise ParameterError("committee holders must be at least two distinct, sorted client ids")
        length = pk.ciphertext_bytes
        if len(self.base) != length:
            raise ParameterError(f"the base v must be {length} bytes")
        if len(self.verification_keys) != length * len(holders):
            raise ParameterError(f"expected {len(holders)} verification keys of {length} bytes")
        vks = _elements_from_bytes(self.verification_keys, length, "verification keys")
        key = tp.ThresholdKey(pk.n, 1, self.threshold, len(holders), int.from_bytes(self.base, "big"), vks)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_index", {h: i + 1 for i, h in enumerate(holders)})

    @property
    def key(self) -> tp.ThresholdKey:
        return self.__dict__["_key"]

    @property
    def public_key(self) -> pl.PublicKey:
        """The Paillier key clients encrypt under (``s = 1``)."""
        return self.key.public_key

    @property
    def key_id(self) -> bytes:
        return self.key.key_id

    def index_of(self, holder: int) -> int:
        """Share index (1-based) of a committee member."""
        try:
            return self.__dict__["_index"][holder]
        except KeyError:
            raise UnexpectedSender(f"party {holder} is not in the decryption committee") from None

    @classmethod
    def from_key(cls, key: tp.ThresholdKey, holders: Sequence[int]) -> "CommitteeKey":
        if key.s != 1:
            raise ParameterError("the Paillier protocol uses s = 1 (its ciphertexts are Paillier's)")
        length = key.public_key.ciphertext_bytes
        return cls(modulus=key.public_key.to_bytes(), threshold=key.threshold, holders=tuple(holders),
                   base=int(key.v).to_bytes(length, "big"),
                   verification_keys=_elements_to_bytes(key.verification_keys, length))

    def __repr__(self) -> str:
        return (f"CommitteeKey(bits={self.public_key.key_bits}, t={self.threshold} of {len(self.holders)}, "
                f"key_id={self.key_id.hex()[:16]})")


def default_committee_threshold(holders: int) -> int:
    """``t`` for ``l`` holders: a strict majority (``l // 2 + 1``), so that no
    minority coalition decrypts and the round survives ``ceil(l/2) - 1``
    holders dropping out."""
    if holders < 2:
        raise ParameterError("a decryption committee needs at least two members")
    return holders // 2 + 1


def check_majority(threshold: int, holders: int, allow_minority_threshold: bool = False) -> None:
    """Refuse ``2 t <= l`` unless allowed: with a minority threshold two
    disjoint groups of members could each decrypt a different aggregate of
    the same session (each member binds one aggregate, the committee does not)."""
    if 2 * threshold <= holders and not allow_minority_threshold:
        raise ParameterError(f"a threshold of {threshold} of {holders} is not a majority: two disjoint groups "
                             "could each decrypt a different aggregate of one session; pass "
                             "allow_minority_threshold=True to accept it")


def deal_committee(holders: Sequence[int], threshold: int | None = None, key_bits: int = pl.DEFAULT_KEY_BITS,
                   rng: RandomSource | None = None, *, allow_minority_threshold: bool = False
                   ) -> tuple[CommitteeKey, dict[int, tp.KeyShare]]:
    """The dealer: a fresh key shared among ``holders`` (client ids), ``t`` of
    them needed (default :func:`default_committee_threshold`). Returns the
    public :class:`CommitteeKey` and each holder's share; nothing else of the
    key survives the call."""
    ids = tuple(sorted(int(h) for h in holders))
    if len(set(ids)) != len(ids):
        raise ParameterError("committee holders must be distinct")
    t = default_committee_threshold(len(ids)) if threshold is None else int(threshold)
    if t < 2:
        raise ParameterError("a threshold of 1 lets any single holder decrypt; it needs t >= 2")
    check_majority(t, len(ids), allow_minority_threshold)
    key, shares = tp.deal(key_bits, t, len(ids), rng=rng)
    return CommitteeKey.from_key(key, ids), {h: shares[i] for i, h in enumerate(ids)}


# ---------------------------------------------------------------- block assignment

def assign_blocks(count: int, holders: Sequence[int], threshold: int, spares: int = 0) -> dict[int, list[int]]:
    """Which ciphertexts each holder decrypts: ``count`` ciphertexts cut into
    ``c = len(holders)`` contiguous groups; group ``g`` goes to holders
    ``g, g + 1, ..., g + t + spares - 1`` (mod ``c``). Returns, per holder,
    its groups' ciphertext indices in increasing order. Every ciphertext gets
    ``min(c, t + spares)`` holders."""
    c = len(holders)
    if c < threshold:
        raise ReconstructionError(f"{c} live committee members, {threshold} needed to decrypt")
    per = min(c, threshold + max(0, spares))
    bounds = [count * g // c for g in range(c + 1)]
    out: dict[int, list[int]] = {h: [] for h in holders}
    for g in range(c):
        for k in range(per):
            out[holders[(g + k) % c]].append(g)
    return {h: [j for g in sorted(gs) for j in range(bounds[g], bounds[g + 1])] for h, gs in out.items()}


def _ranges(indices: Sequence[int]) -> tuple[int, ...]:
    """Sorted indices as flattened ``(start, stop)`` pairs."""
    out: list[int] = []
    for j in indices:
        if out and out[-1] == j:
            out[-1] = j + 1
        else:
            out += [j, j + 1]
    return tuple(out)


def _indices(ranges: Sequence[int], count: int) -> list[int]:
    if len(ranges) % 2:
        raise WireFormatError("ranges must be (start, stop) pairs")
    out: list[int] = []
    prev: int | None = None
    for a, b in zip(ranges[0::2], ranges[1::2]):
        if not 0 <= a < b <= count or (prev is not None and a <= prev):
            raise WireFormatError("ranges must be increasing, non-empty, disjoint, not adjacent and inside "
                                  "the aggregate")
        out.extend(range(a, b))
        prev = b
    if not out:
        raise WireFormatError("a decryption request names no ciphertext")
    return out


# ---------------------------------------------------------------- evidence (signed mode)

def covering_blocks(indices: Sequence[int]) -> list[int]:
    """The digest blocks (:data:`~.messages.DIGEST_BLOCK_RECORDS` records
    each) that contain the ciphertext ``indices``, sorted."""
    return sorted({j // DIGEST_BLOCK_RECORDS for j in indices})


def block_indices(blocks: Sequence[int], count: int) -> list[int]:
    """Every ciphertext index of ``blocks`` (the last block may be short)."""
    return [j for b in blocks for j in range(b * DIGEST_BLOCK_RECORDS, min(count, (b + 1) * DIGEST_BLOCK_RECORDS))]


@dataclass(frozen=True)
class SubmissionEvidence:
    """What lets a committee member check, in the signed mode, that the
    ciphertexts it decrypts are the product of the named submissions: one
    included client's block hashes (whose hash is the digest it signed) and
    its ciphertext records of the blocks covering the member's ranges, in
    block order. An item of :attr:`DecryptionRequest.evidence`."""

    client_id: int = field(metadata=_ID)
    block_hashes: bytes
    records: bytes


# ---------------------------------------------------------------- messages

@wire.message("paillier.DecryptionRequest")
@dataclass(frozen=True)
class DecryptionRequest:
    """Server -> committee member: the whole aggregate (so that the member
    binds exactly one aggregate to the session) and the ciphertexts it is
    asked to decrypt (``ranges``: flattened ``(start, stop)`` pairs), with the
    included clients' signed statements and their evidence for the blocks
    covering ``ranges`` in the signed mode (both empty otherwise).
    ``attempt`` 0 is the first request, 1 the recovery request for groups
    that lacked ``t`` valid shares."""

    session_id: bytes = field(metadata=_HASH)
    key_id: bytes = field(metadata=_HASH)
    attempt: int = field(metadata={"min": 0, "max": MAX_ATTEMPTS - 1})
    included: tuple[int, ...] = field(metadata={"item": _ID})
    statements: tuple[SubmissionStatement, ...]
    ranges: tuple[int, ...] = field(metadata={"item": {"min": 0, "max": 1 << 40}})
    aggregate: bytes
    evidence: tuple[SubmissionEvidence, ...] = ()


@wire.message("paillier.DecryptionShares")
@dataclass(frozen=True)
class DecryptionShares:
    """Committee member -> server: ``c_j^(2 Delta s_i)`` for the requested
    ciphertexts, in order, and the batched proof ``(challenge, response)``."""

    session_id: bytes = field(metadata=_HASH)
    holder: int = field(metadata=_ID)
    attempt: int = field(metadata={"min": 0, "max": MAX_ATTEMPTS - 1})
    aggregate_digest: bytes = field(metadata=_HASH)
    values: bytes
    challenge: bytes = field(metadata={"len": tp.CHALLENGE_BITS // 8})
    response: bytes = field(metadata={"max_len": 4096})


@wire.message("paillier.DecryptorRecord")
@dataclass(frozen=True)
class DecryptorRecord:
    """A committee member's saved state for one session: the round's
    parameters, whether this member submitted in it, and the digest of the
    aggregate it decrypts (empty until its first decryption request)."""

    params: PaillierParams
    aggregate_digest: bytes = field(metadata={"max_len": 32})
    submitted: bool = False


def request_context(session_id: bytes, digest: bytes, holder: int, attempt: int, ranges: Sequence[int]) -> bytes:
    """What a proof is bound to: the session, the aggregate, the holder, the
    attempt and the ciphertexts asked for."""
    h = hashlib.sha256(_CONTEXT_TAG + bytes(session_id) + bytes(digest) + holder.to_bytes(4, "big")
                       + attempt.to_bytes(1, "big"))
    for r in ranges:
        h.update(int(r).to_bytes(8, "big"))
    return h.digest()


# ---------------------------------------------------------------- a committee member

def check_evidence(params: PaillierParams, request: DecryptionRequest, indices: Sequence[int],
                   aggregate: Sequence[mpz]) -> None:
    """The signed mode's product check (SPEC §8): for every included client,
    its block hashes hash to the digest of its (already verified) statement,
    its records of the blocks covering ``indices`` hash to those block
    hashes, and the product of all included clients' records equals the
    aggregate on those blocks. A server that passes off anything but the
    product of this session's signed submissions is refused here
    (:class:`~secagg.errors.InvalidCiphertext`), before anything decrypts."""
    key = params.key
    length = key.ciphertext_bytes
    count = params.n_ciphertexts
    n_blocks = -(-count // DIGEST_BLOCK_RECORDS)
    blocks = covering_blocks(indices)
    covered = block_indices(blocks, count)
    if tuple(e.client_id for e in request.evidence) != tuple(request.included):
        raise UnexpectedSender("the request does not carry evidence for each included client, in order")
    product = [mpz(1)] * len(covered)
    n2 = key.n_square
    for ev, statement in zip(request.evidence, request.statements):
        if len(ev.block_hashes) != 32 * n_blocks or digest_of_blocks(ev.block_hashes) != statement.ciphertext_digest:
            raise InvalidCiphertext(f"the block hashes of client {ev.client_id} do not match its signed digest")
        if len(ev.records) != len(covered) * length:
            raise WireFormatError(f"evidence of client {ev.client_id}: expected {len(covered)} records")
        pos = 0
        for b in blocks:
            size = min(count, (b + 1) * DIGEST_BLOCK_RECORDS) - b * DIGEST_BLOCK_RECORDS
            chunk = ev.records[pos * length:(pos + size) * length]
            if block_hashes(chunk, length) != ev.block_hashes[32 * b:32 * (b + 1)]:
                raise InvalidCiphertext(f"records of client {ev.client_id} are not the ones it signed")
            pos += size
        with from_peer():
            recs = pl.ciphertexts_from_bytes(key, ev.records, len(covered))
        product = [a * r % n2 for a, r in zip(product, recs)]
    if any(p != aggregate[j] for p, j in zip(product, covered)):
        raise InvalidCiphertext("the aggregate is not the product of the named clients' signed submissions")


class ThresholdDecryptor:
    """Committee member ``client_id``'s decryption: its checks and its answer.

    ``min_clients`` is its own floor on the number of included clients (at
    least 2; 1 only with ``unsafe_allow_single_client=True``). With
    ``client_keys`` (client id -> Ed25519 verify key) it decrypts only an
    aggregate that carries a valid statement of this session from every
    included client (SPEC §3.4, §8)."""

    def __init__(self, client_id: int, committee: CommitteeKey, share: tp.KeyShare, *, min_clients: int = 2,
                 unsafe_allow_single_client: bool = False, rng: RandomSource | None = None, threads: int = 1,
                 client_keys: Mapping[int, bytes] | None = None, allow_minority_threshold: bool = False):
        if not isinstance(committee, CommitteeKey):
            raise ParameterError("committee must be a CommitteeKey")
        if not isinstance(share, tp.KeyShare) or share.key != committee.key:
            raise ParameterError("the key share does not belong to this committee's key")
        if committee.index_of(client_id) != share.index:
            raise ParameterError(f"client {client_id} holds share {committee.index_of(client_id)}, "
                                 f"not {share.index}")
        check_majority(committee.threshold, len(committee.holders), allow_minority_threshold)
        if min_clients < 2 and not unsafe_allow_single_client:
            raise ParameterError("a decryption floor of 1 would release one client's exact update; pass "
                                 "unsafe_allow_single_client=True to allow it")
        self.client_id = client_id
        self.committee = committee
        self._share = share
        self.min_clients = max(1, int(min_clients))
        self._rng = rng
        self.threads = max(1, int(threads))
        self._client_keys = None if client_keys is None else check_verify_keys(client_keys)

    def register(self, params: PaillierParams) -> DecryptorRecord:
        """A round's parameters: they must carry the committee's key."""
        if params.key != self.committee.public_key:
            raise KeyMismatch("round parameters carry a key other than the committee's")
        if params.min_clients < self.min_clients:
            raise TooFewClients(f"the round would decrypt {params.min_clients} client(s); this member's floor "
                                f"is {self.min_clients}")
        return DecryptorRecord(params=params, aggregate_digest=b"")

    def decrypt(self, request: DecryptionRequest, record: DecryptorRecord | None
                ) -> tuple[DecryptionShares, DecryptorRecord]:
        """Check ``request`` against the session's ``record`` and answer it.
        Raises a typed :class:`~secagg.errors.RemoteProtocolError` (nothing is
        decrypted) if any check fails."""
        if record is None or record.params.session_id != request.session_id:
            raise SessionMismatch("no such session registered with this committee member")
        params = record.params
        if request.key_id != self.committee.key_id:
            raise KeyMismatch("the request names another committee key")
        included = request.included
        if list(included) != sorted(set(included)) or not set(included) <= set(params.client_ids):
            raise UnexpectedSender("included clients are not distinct invited ids")
        if self.client_id in included and not record.submitted:
            raise UnexpectedSender(f"the aggregate names client {self.client_id}, which did not submit in this "
                                   "session")
        floor = max(params.min_clients, self.min_clients)
        if len(included) < floor:
            raise TooFewClients(f"{len(included)} included clients, this member decrypts only {floor} or more")
        if self._client_keys is not None:  # signed mode: the named clients submitted in this session
            verify_statements(self._client_keys, request.session_id, included, request.statements)
        digest = aggregate_digest(request.session_id, request.aggregate)
        if record.aggregate_digest and record.aggregate_digest != digest:
            raise AlreadyDecrypted("this member already decrypted another aggregate of this session")
        indices = _indices(request.ranges, params.n_ciphertexts)
        with from_peer():
            cts = pl.ciphertexts_from_bytes(params.key, request.aggregate, params.n_ciphertexts)
        if self._client_keys is not None:  # and what it decrypts is the product of their submissions
            check_evidence(params, request, indices, cts)
        context = request_context(request.session_id, digest, self.client_id, request.attempt, request.ranges)
        part = tp.partial_decrypt(self._share, [cts[j] for j in indices], context, rng=self._rng,
                                  threads=self.threads)
        length = params.key.ciphertext_bytes
        z = int(part.response)
        reply = DecryptionShares(session_id=request.session_id, holder=self.client_id, attempt=request.attempt,
                                 aggregate_digest=digest, values=_elements_to_bytes(part.values, length),
                                 challenge=int(part.challenge).to_bytes(tp.CHALLENGE_BITS // 8, "big"),
                                 response=z.to_bytes((z.bit_length() + 7) // 8 or 1, "big"))
        return reply, DecryptorRecord(params=params, aggregate_digest=digest, submitted=record.submitted)

    def __reduce__(self):  # noqa: D105 - holds a key share
        raise TypeError("a committee member is never pickled")

    def __repr__(self) -> str:
        return f"ThresholdDecryptor(client {self.client_id}, share {self._share.index} of {self.committee!r})"


# ---------------------------------------------------------------- the server's side

class ThresholdCombiner:
    """The server's part of threshold decryption for one aggregate.

    :meth:`requests` makes the first requests (groups over the live holders,
    ``spares`` extra holders per group); :meth:`receive` verifies an answer's
    proof on intake (a bad one raises :class:`InvalidDecryptionShare` naming
    the holder, and is not kept); :meth:`recovery_requests` asks holders that
    answered correctly for the ciphertexts that still lack ``t`` valid
    shares; :meth:`combine` decrypts when every ciphertext has ``t``."""

    def __init__(self, committee: CommitteeKey, params: PaillierParams, included: Sequence[int],
                 aggregate: bytes, *, statements: Sequence[SubmissionStatement] = (), spares: int = 0,
                 submissions: Mapping[int, bytes] | None = None):
        self.committee = committee
        self.params = params
        self.included = tuple(included)
        self.statements = tuple(statements)
        # signed mode: each included client's ciphertexts, for the members' product check
        self._submissions = dict(submissions) if submissions is not None else None
        self._hashes = {c: block_hashes(b, params.key.ciphertext_bytes) for c, b in self._submissions.items()} \
            if self._submissions is not None else {}
        self.aggregate = bytes(aggregate)
        self.digest = aggregate_digest(params.session_id, self.aggregate)
        self.count = params.n_ciphertexts
        self._cts: list[mpz] = pl.ciphertexts_from_bytes(params.key, self.aggregate, self.count)
        self.spares = int(spares)
        self.attempt = -1
        self._asked: dict[int, tuple[int, ...]] = {}  # holder -> ranges of the open attempt
        self._ever_asked: set[int] = set()
        self._shares: dict[int, dict[int, mpz]] = {}  # holder -> {ciphertext index: share}
        self.failed: dict[int, str] = {}  # holder -> why its answer was refused

    def _evidence(self, ranges: tuple[int, ...]) -> tuple[SubmissionEvidence, ...]:
        if self._submissions is None:
            return ()
        length = self.params.key.ciphertext_bytes
        covered = block_indices(covering_blocks(_indices(ranges, self.count)), self.count)
        spans = _ranges(covered)
        out = []
        for c in self.included:
            data = memoryview(self._submissions[c])
            records = b"".join(data[a * length:b * length] for a, b in zip(spans[0::2], spans[1::2]))
            out.append(SubmissionEvidence(client_id=c, block_hashes=self._hashes[c], records=records))
        return tuple(out)

    def _request(self, ranges: tuple[int, ...]) -> DecryptionRequest:
        return DecryptionRequest(session_id=self.params.session_id, key_id=self.committee.key_id,
                                 attempt=self.attempt, included=self.included, statements=self.statements,
                                 ranges=ranges, aggregate=self.aggregate, evidence=self._evidence(ranges))

    def requests(self, live: Sequence[int]) -> dict[int, DecryptionRequest]:
        """Attempt 0: one request per live committee member."""
        if self.attempt != -1:
            raise LocalProtocolError("the first requests were already made")
        self.attempt = 0
        holders = [h for h in self.committee.holders if h in set(live)]
        plan = assign_blocks(self.count, holders, self.committee.threshold, self.spares)
        self._asked = {h: _ranges(ix) for h, ix in plan.items() if ix}
        self._ever_asked.update(self._asked)
        return {h: self._request(r) for h, r in self._asked.items()}

    def receive(self, holder: int, msg: DecryptionShares) -> None:
        """Take one holder's answer to the open attempt; raises and keeps
        nothing if it is not exactly a valid answer."""
        if holder not in self._asked:
            raise UnexpectedSender(f"party {holder} was not asked to decrypt in attempt {self.attempt}")
        if msg.attempt != self.attempt:  # a late answer to the first attempt: out of place, not a failure
            raise LateSubmission(f"decryption shares for attempt {msg.attempt}, attempt {self.attempt} is open")
        try:
            if msg.holder != holder:
                raise UnexpectedSender(f"party {holder} answered as holder {msg.holder}")
            if msg.session_id != self.params.session_id:
                raise SessionMismatch("decryption shares for another session")
            if msg.aggregate_digest != self.digest:
                raise InvalidDecryptionShare(f"holder {holder} decrypted another aggregate")
            ranges = self._asked[holder]
            indices = _indices(ranges, self.count)
            length = self.params.key.ciphertext_bytes
            values = _elements_from_bytes(msg.values, length, f"decryption shares of holder {holder}")
            part = tp.PartialDecryption(self.committee.index_of(holder), tuple(values),
                                        int.from_bytes(msg.challenge, "big"), int.from_bytes(msg.response, "big"))
            context = request_context(self.params.session_id, self.digest, holder, self.attempt, ranges)
            try:
                tp.verify_partial(self.committee.key, [self._cts[j] for j in indices], part, context)
            except tp.BadDecryptionShare as bad:
                raise InvalidDecryptionShare(f"holder {holder}: {bad}") from bad
        except RemoteProtocolError as exc:
            self.failed[holder] = str(exc)  # named in the abort detail and the audit record
            raise
        finally:
            del self._asked[holder]  # one answer per attempt, valid or not
        self._shares.setdefault(holder, {}).update(zip(indices, values))

    @property
    def awaiting(self) -> frozenset[int]:
        return frozenset(self._asked)

    def lacking(self) -> list[int]:
        """Ciphertext indices with fewer than ``t`` valid shares."""
        t = self.committee.threshold
        have = [0] * self.count
        for got in self._shares.values():
            for j in got:
                have[j] += 1
        return [j for j in range(self.count) if have[j] < t]

    def recovery_requests(self) -> dict[int, DecryptionRequest]:
        """Attempt 1: the lacking ciphertexts, each asked of just enough
        holders that do not have it yet: first those whose shares verified
        (least loaded first), then members not asked before (e.g. ones that
        did not submit; never one whose answer failed or that was asked and
        did not answer). Raises
        :class:`~secagg.errors.ReconstructionError` if too few valid holders
        remain for some ciphertext."""
        if self.attempt != 0:
            raise LocalProtocolError("recovery follows the first attempt, once")
        self.attempt = 1
        self._asked = {}
        t = self.committee.threshold
        valid = sorted(self._shares)
        unasked = [h for h in self.committee.holders if h not in self._ever_asked]
        candidates = valid + unasked
        load = {h: 0 for h in candidates}
        plan: dict[int, list[int]] = {h: [] for h in candidates}
        for j in self.lacking():
            holding = [h for h in valid if j in self._shares[h]]
            others = sorted((h for h in candidates if j not in self._shares.get(h, ())),
                            key=lambda h: (h not in self._shares, load[h], h))
            need = t - len(holding)
            if len(others) < need:
                raise ReconstructionError(f"ciphertext {j}: {len(holding)} valid shares and {len(others)} "
                                          f"other committee members to ask, {t} needed")
            for h in others[:need]:
                plan[h].append(j)
                load[h] += 1
        self._asked = {h: _ranges(ix) for h, ix in plan.items() if ix}
        self._ever_asked.update(self._asked)
        return {h: self._request(r) for h, r in self._asked.items()}

    def give_up(self, holder: int) -> None:
        """A holder asked in the open attempt that will not answer."""
        self._asked.pop(holder, None)

    def combine(self) -> list[int]:
        """The plaintexts of the aggregate (``ReconstructionError`` if some
        ciphertext lacks ``t`` valid shares)."""
        lacking = self.lacking()
        if lacking:
            raise ReconstructionError(f"{len(lacking)} of {self.count} ciphertexts lack "
                                      f"{self.committee.threshold} valid decryption shares")
        key = self.committee.key
        t = key.threshold
        # ciphertexts decrypted by the same t holders combine together
        groups: dict[tuple[int, ...], list[int]] = {}
        for j in range(self.count):
            holders = tuple(sorted(h for h in self._shares if j in self._shares[h]))[:t]
            groups.setdefault(holders, []).append(j)
        out: list[int] = [0] * self.count
        for holders, idx in groups.items():
            partials: Mapping[int, list[mpz]] = {
                self.committee.index_of(h): [self._shares[h][j] for j in idx] for h in holders}
            for j, m in zip(idx, tp.combine(key, partials, len(idx))):
                out[j] = m
        return out
