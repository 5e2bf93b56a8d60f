"""The Paillier protocol's roles for the client driver
(protocols/paillier/SPEC.md §3-§4): the client and the key holder.

A Paillier client answers one message per round: the server's
:class:`PaillierParams` (the Submit stage), with its encrypted, packed
update. The parameters must carry the key holder's key that the client
pinned out of band (a server cannot swap in a key it holds). Obfuscators are
precomputed offline into the role's pool (:meth:`PaillierClientRole.precompute`)
and used up across rounds. The role holds a minimum of its own
(``min_clients``, 2 unless ``unsafe_allow_single_client=True``) and refuses
rounds below it (:class:`~secagg.protocols.paillier.messages.TooFewClients`:
nothing is sent); given ``signing_key`` it signs its submissions.

The key holder is party :data:`~secagg.protocols.paillier.messages.KEY_HOLDER`
(0): it registers each round's parameters (no answer) and, in the Decrypt
stage, decrypts that round's aggregate once.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any, Callable

from ..errors import LocalProtocolError, ParameterError
from ..primitives import paillier as pl
from ..primitives.randomness import RandomSource, default_random
from ..protocols.paillier.client import PaillierClient
from ..protocols.paillier.keyholder import PaillierKeyHolder
from ..protocols.paillier.messages import KEY_HOLDER, AggregateCiphertext
from ..protocols.paillier.params import MIN_CLIENTS_FLOOR, DPPaillierParams, PaillierParams, PublicKeyMessage
from ..protocols.stages import Stage
from .client import Contribution, Step
from .concurrency import process_executor

__all__ = ["PaillierClientRole", "KeyHolderRole"]


class PaillierClientRole:
    """Client ``client_id`` of Paillier rounds under the key holder's
    ``public_key`` (pinned: rounds under another key are refused).
    ``min_key_bits`` (2048) is the smallest modulus accepted; ``min_clients``
    (2; 1 only with ``unsafe_allow_single_client=True``) the smallest
    ``min_clients`` of a round it submits to; ``signing_key`` (32-byte
    Ed25519 private key), if given, signs every submission. ``check_params``,
    if given, is called with the round's parameters before anything is
    encrypted (a node's own policy, e.g. :meth:`secagg.dp.DPConfig.check_round`
    of ``params.dp``); it raises :class:`~secagg.errors.ParameterError` to
    refuse the round."""

    SERVER_MESSAGES: tuple[type, ...] = (PaillierParams, DPPaillierParams)

    def __init__(self, client_id: int, public_key: pl.PublicKey | PublicKeyMessage, *,
                 rng: RandomSource | None = None, randomizer: pl.RandomizerSpec = pl.STANDARD,
                 min_key_bits: int = pl.DEFAULT_KEY_BITS, min_clients: int = MIN_CLIENTS_FLOOR,
                 unsafe_allow_single_client: bool = False, signing_key: bytes | None = None,
                 check_params: Callable[[PaillierParams], None] | None = None):
        if type(client_id) is not int or client_id < 1:
            raise ParameterError(f"client id must be an int >= 1, got {client_id!r}")
        key = public_key.key if isinstance(public_key, PublicKeyMessage) else public_key
        self.party = client_id
        self._rng = default_random(rng)
        self.randomizer = randomizer
        self.min_key_bits = min_key_bits
        self._policy: dict[str, Any] = {"min_clients": min_clients,
                                        "unsafe_allow_single_client": unsafe_allow_single_client,
                                        "signing_key": signing_key}
        # a client made here only to check the key, the floor and the signing key, and to hold the pool
        self._template = PaillierClient(client_id, key, rng=self._rng, randomizer=randomizer,
                                        min_key_bits=min_key_bits, **self._policy)
        self.min_clients = self._template.min_clients
        self.public_key = self._template.public_key
        self.pool = self._template.pool
        self._check_params = check_params
        self.clipped = 0  # entries clipped in the last submission
        self.online_exponentiations = 0  # obfuscators computed online (pool ran dry), over all rounds

    def __repr__(self) -> str:
        return f"PaillierClientRole(client {self.party}, {len(self.pool)} obfuscators)"

    def precompute(self, count: int, *, workers: int | None = None, executor: Executor | None = None) -> None:
        """Add ``count`` obfuscators to the pool (the offline phase): on
        ``executor`` if given (cut into ``workers`` tasks), else on a process
        pool of ``workers`` started for this call, else here."""
        if executor is None and workers is not None and workers > 1:
            with process_executor(workers) as pool:
                self._template.precompute(count, workers=workers, executor=pool)
            return
        self._template.precompute(count, workers=workers, executor=executor)

    def session_of(self, msg: Any) -> bytes:
        return bytes(msg.session_id)

    def stage_of(self, msg: Any) -> Stage:
        return Stage.SUBMIT

    def step(self, msg: Any, saved: Any, contribution: Contribution | None) -> Step:
        if contribution is None:
            raise LocalProtocolError("a Paillier round needs this client's contribution (update, weight)")
        client = PaillierClient(self.party, self.public_key, rng=self._rng, randomizer=self.randomizer,
                                min_key_bits=self.min_key_bits, pool=self.pool, **self._policy)
        if self._check_params is not None:
            self._check_params(msg)
        client.receive_params(msg)  # pinned key, invitation, this client's floor: raises a typed error
        submission = client.submit(contribution.update, contribution.weight)
        self.clipped = client.clipped
        self.online_exponentiations += client.online_exponentiations
        return Step(submission, None, finished=True)


class KeyHolderRole:
    """The key holder as a party of rounds: wraps a :class:`PaillierKeyHolder`
    (which keeps the private key; nothing here touches it)."""

    SERVER_MESSAGES: tuple[type, ...] = (PaillierParams, DPPaillierParams, AggregateCiphertext)
    party = KEY_HOLDER

    def __init__(self, keyholder: PaillierKeyHolder):
        if not isinstance(keyholder, PaillierKeyHolder):
            raise ParameterError("KeyHolderRole needs a PaillierKeyHolder")
        self.keyholder = keyholder

    def __repr__(self) -> str:
        return f"KeyHolderRole({self.keyholder!r})"

    def session_of(self, msg: Any) -> bytes:
        return bytes(msg.session_id)

    def stage_of(self, msg: Any) -> Stage:
        return Stage.DECRYPT if isinstance(msg, AggregateCiphertext) else Stage.SUBMIT

    def step(self, msg: Any, saved: Any, contribution: Contribution | None) -> Step:
        if isinstance(msg, PaillierParams):
            self.keyholder.accept_params(msg)
            return Step(None, None)
        return Step(self.keyholder.decrypt_aggregate(msg), None, finished=True)
