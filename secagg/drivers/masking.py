"""The masking protocol's client role for the client driver
(protocols/masking/SPEC.md §3): SecAgg and SecAgg+ alike.

The round's first message is the server's :class:`MaskingParams` (Round 0,
AdvertiseKeys, opens with it); the client checks its update against them,
makes its keys and advertises them. Every later message restores the client
from its saved :class:`MaskingRecord` and answers it. The update is kept in
the record until the masked input is sent, then dropped; the record is
dropped when the round ends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np

from ..encoding import wire
from ..encoding.fixed_point import check_finite
from ..errors import AbortReason, LocalProtocolError, ParameterError, RemoteProtocolError
from ..primitives.randomness import RandomSource, default_random
from ..protocols.masking.client import ClientState, MaskingClient
from ..protocols.masking.messages import (SERVER_MESSAGES, ConsistencyRequest, ForwardedShares, KeysBroadcast,
                                          MaskedInput, UnmaskRequest, UnmaskShares)
from ..dp.round import DPRoundParams
from ..protocols.masking.params import DPMaskingParams, MaskingParams
from ..protocols.stages import Stage
from .client import Contribution, Step

__all__ = ["MaskingClientRole", "MaskingRecord"]

_EMPTY = np.zeros(0, dtype=np.float64)


@wire.message("drivers.MaskingRecord")
@dataclass(frozen=True)
class MaskingRecord:
    """What a masking client keeps between messages (secrets included: it
    lives only in the client's own state store)."""

    params: MaskingParams
    client: ClientState
    update: np.ndarray = field(default_factory=lambda: _EMPTY, metadata={"dtypes": {"float64"}})
    weight: float = 1.0
    #: a DP round's DP parameters (``params`` then is a :class:`DPMaskingParams`; its
    #: other fields travel in ``params``)
    dp: DPRoundParams | None = None

    def __post_init__(self) -> None:
        if self.dp is None and self.params.dp is not None:
            object.__setattr__(self, "dp", self.params.dp)
        elif self.dp is not None and self.params.dp is None:  # decoded: rebuild the DP round's parameters
            fields = {f.name: getattr(self.params, f.name) for f in dataclasses.fields(MaskingParams)}
            object.__setattr__(self, "params", DPMaskingParams(**fields, dp=self.dp))
        elif self.dp is not None and self.dp != self.params.dp:
            raise ParameterError("the record's DP parameters differ from its round's")

    def __repr__(self) -> str:
        return f"MaskingRecord(client {self.client.client_id}, stage {self.client.stage!r}, <secrets hidden>)"


_STAGE_OF: dict[type, Stage] = {MaskingParams: Stage.ADVERTISE_KEYS, DPMaskingParams: Stage.ADVERTISE_KEYS,
                                KeysBroadcast: Stage.SHARE_KEYS,
                                ForwardedShares: Stage.MASKED_INPUT, ConsistencyRequest: Stage.CONSISTENCY_CHECK,
                                UnmaskRequest: Stage.UNMASKING}


class MaskingClientRole:
    """Client ``client_id`` of masking rounds.

    ``rng`` is the injected random source (keys, nonces, shares, rounding).
    Malicious-server mode needs ``signing_key`` and ``trusted_signing_keys``
    (see :class:`~secagg.protocols.masking.MaskingClient`). ``check_params``,
    if given, is called with the round's parameters before anything is made
    (a node's own policy, e.g. a minimum number of participants); it raises
    :class:`~secagg.errors.ParameterError` to refuse the round."""

    SERVER_MESSAGES: tuple[type, ...] = (MaskingParams, DPMaskingParams, *SERVER_MESSAGES)

    def __init__(self, client_id: int, *, rng: RandomSource | None = None, signing_key: bytes | None = None,
                 trusted_signing_keys: Mapping[int, bytes] | None = None,
                 check_params: Callable[[MaskingParams], None] | None = None):
        if type(client_id) is not int or client_id < 1:
            raise ParameterError(f"client id must be an int >= 1, got {client_id!r}")
        self.party = client_id
        self._rng = default_random(rng)
        self._signing_key = signing_key
        self._trusted = dict(trusted_signing_keys) if trusted_signing_keys is not None else None
        self._check_params = check_params
        self.clipped = 0  # update entries clipped in the last masked input

    def __repr__(self) -> str:
        return f"MaskingClientRole(client {self.party})"

    def session_of(self, msg: Any) -> bytes:
        return bytes(msg.session_id)

    def stage_of(self, msg: Any) -> Stage:
        return _STAGE_OF[type(msg)]

    def _client(self, params: MaskingParams, state: ClientState | None = None) -> MaskingClient:
        return MaskingClient(params, self.party, self._rng, self._signing_key,
                             trusted_signing_keys=self._trusted, state=state)

    def step(self, msg: Any, saved: Any, contribution: Contribution | None) -> Step:
        if isinstance(msg, MaskingParams):
            return self._advertise(msg, saved, contribution)
        if not isinstance(saved, MaskingRecord):
            raise RemoteProtocolError("no round in progress for this session on this client", AbortReason.WRONG_ROUND)
        client = self._client(saved.params, saved.client)
        update = saved.update if saved.update.size else None
        reply = client.respond(msg, update, saved.weight)
        if isinstance(reply, UnmaskShares):
            return Step(reply, None, finished=True)
        record = replace(saved, client=client.state)
        if isinstance(reply, MaskedInput):
            self.clipped = client.last_clipped
            record = replace(record, update=_EMPTY)  # masked and sent: the update is no longer needed
        return Step(reply, record)

    def _advertise(self, params: MaskingParams, saved: Any, contribution: Contribution | None) -> Step:
        if saved is not None:
            raise RemoteProtocolError("this session's parameters were already received", AbortReason.WRONG_ROUND)
        if contribution is None:
            raise LocalProtocolError("the round's first message needs this client's contribution (update, weight)")
        if self.party not in params.graph:
            raise ParameterError(f"client {self.party} is not a participant of this round")
        if self._check_params is not None:
            self._check_params(params)
        update = np.asarray(contribution.update, dtype=np.float64).ravel()
        if update.size != params.dim:
            raise ParameterError(f"the round aggregates {params.dim} values but the update has {update.size}")
        check_finite(update, "update")
        weight = float(contribution.weight)
        if params.dp is not None:
            if weight != 1.0:
                raise ParameterError(f"a DP round is unweighted: the weight must be 1, got {contribution.weight!r}")
        else:
            params.encoding.check_weight(weight)
        client = self._client(params)
        advert = client.advertise_keys()
        return Step(advert, MaskingRecord(params, client.state, update, weight))
