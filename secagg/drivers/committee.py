"""A Paillier client that is also a member of the decryption committee
(protocols/paillier/SPEC.md §8), for the client driver.

It answers three kinds of message of one session: the round's
:class:`PaillierParams` (Submit: it registers the session as a committee
member, then submits its own encrypted update like any client), and the
server's :class:`DecryptionRequest` (Decrypt, and Decrypt recovery: the
member's share of the decryption of the one aggregate it binds to the
session). Its saved state is a :class:`DecryptorRecord` (the parameters and
the aggregate's digest: no secret), in a distributed-DP round wrapped in a
:class:`DPDecryptorRecord` that keeps the round's DP parameters with it. The
key share stays in the role, never in the store.

A client outside the committee (``share=None``) submits and is done; a
member that is not submitting this round (no contribution) only registers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..dp.round import DPRoundParams
from ..encoding import wire
from ..errors import ParameterError
from ..primitives import threshold_paillier as tp
from ..primitives.randomness import RandomSource, default_random
from ..protocols.paillier.messages import UnexpectedSender
from ..protocols.paillier.params import DPPaillierParams, PaillierParams
from ..protocols.paillier.threshold import CommitteeKey, DecryptionRequest, DecryptorRecord, ThresholdDecryptor
from ..protocols.stages import Stage
from .client import Contribution, Step
from .paillier import PaillierClientRole

__all__ = ["CommitteeClientRole", "DPDecryptorRecord"]


@wire.message("drivers.DPDecryptorRecord")
@dataclass(frozen=True)
class DPDecryptorRecord:
    """A committee member's saved state in a distributed-DP round: its
    :class:`DecryptorRecord` and the round's DP parameters (the record's
    parameters travel in their plain form; :meth:`restored` puts the DP
    round's parameters, and so its session id, back together)."""

    record: DecryptorRecord
    dp: DPRoundParams

    def __post_init__(self) -> None:
        p = self.record.params
        if p.dp is None:  # decoded: rebuild the DP round's parameters
            fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(PaillierParams)}
            object.__setattr__(self, "record", dataclasses.replace(self.record,
                                                                   params=DPPaillierParams(**fields, dp=self.dp)))
        elif p.dp != self.dp:
            raise ParameterError("the record's DP parameters differ from its round's")

    def restored(self) -> DecryptorRecord:
        """The member's record, with the DP round's parameters."""
        return self.record


def _saved(record: DecryptorRecord) -> object:
    dp = record.params.dp
    return record if dp is None else DPDecryptorRecord(record, dp)


class CommitteeClientRole:
    """Client ``client_id`` of Paillier rounds under the committee's key;
    with ``share``, also a decryption committee member. ``min_clients`` is
    this party's own floor on how few clients a round may aggregate (2;
    1 only with ``unsafe_allow_single_client=True``). ``threads`` runs its
    partial decryptions on that many threads. ``client_keys`` (client id ->
    Ed25519 verify key) puts the member in the signed mode: it decrypts only
    an aggregate carrying a valid statement of the session from every
    included client; ``signing_key`` (passed to the client) signs this
    client's own submissions."""

    SERVER_MESSAGES: tuple[type, ...] = (PaillierParams, DPPaillierParams, DecryptionRequest)

    def __init__(self, client_id: int, committee: CommitteeKey, share: tp.KeyShare | None = None, *,
                 rng: RandomSource | None = None, min_clients: int = 2, unsafe_allow_single_client: bool = False,
                 threads: int = 1, client_keys: Mapping[int, bytes] | None = None,
                 allow_minority_threshold: bool = False, **client_options: Any):
        if not isinstance(committee, CommitteeKey):
            raise ParameterError("committee must be a CommitteeKey")
        self._rng = default_random(rng)
        self.client = PaillierClientRole(client_id, committee.public_key, rng=self._rng, min_clients=min_clients,
                                         unsafe_allow_single_client=unsafe_allow_single_client, **client_options)
        self.party = self.client.party
        self.committee = committee
        self.decryptor = None if share is None else ThresholdDecryptor(
            client_id, committee, share, min_clients=min_clients,
            unsafe_allow_single_client=unsafe_allow_single_client, rng=self._rng, threads=threads,
            client_keys=client_keys, allow_minority_threshold=allow_minority_threshold)

    def __repr__(self) -> str:
        member = "member" if self.decryptor is not None else "not a member"
        return f"CommitteeClientRole(client {self.party}, {member} of {self.committee!r})"

    def __reduce__(self):  # noqa: D105 - holds a key share
        raise TypeError("a committee member is never pickled")

    @property
    def pool(self) -> Any:
        """The client's obfuscator pool (offline precomputation)."""
        return self.client.pool

    @property
    def clipped(self) -> int:
        """Entries clipped in the last submission."""
        return self.client.clipped

    @property
    def online_exponentiations(self) -> int:
        """Obfuscators computed online (the pool ran dry), over all rounds."""
        return self.client.online_exponentiations

    def precompute(self, count: int, **kw: Any) -> None:
        self.client.precompute(count, **kw)

    def session_of(self, msg: Any) -> bytes:
        return bytes(msg.session_id)

    def stage_of(self, msg: Any) -> Stage:
        if isinstance(msg, DecryptionRequest):
            return Stage.DECRYPT if msg.attempt == 0 else Stage.DECRYPT_RECOVERY
        return Stage.SUBMIT

    def step(self, msg: Any, saved: Any, contribution: Contribution | None) -> Step:
        if isinstance(msg, PaillierParams):
            if self.decryptor is None:
                return self.client.step(msg, None, contribution)
            record = self.decryptor.register(msg)  # the committee's key, this member's floor
            if contribution is None:  # a member that does not submit this round
                return Step(None, _saved(record))
            submitted = self.client.step(msg, None, contribution)
            return Step(submitted.reply, _saved(dataclasses.replace(record, submitted=True)))
        if self.decryptor is None:
            raise UnexpectedSender("this client is not a member of the decryption committee")
        if isinstance(saved, DPDecryptorRecord):
            saved = saved.restored()
        if not isinstance(saved, DecryptorRecord):
            saved = None
        reply, record = self.decryptor.decrypt(msg, saved)
        return Step(reply, _saved(record), finished=msg.attempt == 1)
