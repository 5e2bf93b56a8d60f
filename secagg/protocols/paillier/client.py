"""The Paillier client (protocols/paillier/SPEC.md §3.2): quantize, pack,
encrypt with precomputed obfuscators, submit.

Two phases. *Offline* (while the model trains, or between rounds):
:meth:`PaillierClient.precompute` fills an :class:`ObfuscatorPool` for the key
holder's public key, optionally over worker processes. *Online*:
:meth:`PaillierClient.submit` encodes ``[w*x, w]`` with the round's fixed-point
format (clipping and stochastic rounding from the injected random source), packs
it with the round's layout and encrypts each plaintext with one pool value,
i.e. one modular multiplication per ciphertext. A pool that runs short is topped
up online (correct, only slower) and counted in ``online_exponentiations``.

The public key is *pinned*: the client is given the key holder's key through a
channel it trusts, and refuses round parameters that carry another key (a
server that substituted its own key could otherwise decrypt every update).

The client holds a minimum of its own, ``min_clients`` (2 unless
``unsafe_allow_single_client=True``), and refuses round parameters whose
``min_clients`` is lower: it submits nothing to a round whose aggregate may be
its update alone. Given an Ed25519 ``signing_key``, it signs each submission
for its session and id (:func:`~secagg.protocols.paillier.messages.sign_submission`).
"""

from __future__ import annotations

import enum
from concurrent.futures import Executor

import numpy as np

from ...encoding import wire
from ...errors import LocalProtocolError, ParameterError
from ...primitives import paillier as pl
from ...primitives.randomness import RandomSource, default_random
from .messages import KeyMismatch, Submission, UnexpectedSender, check_floor, check_signing_key, sign_submission
from .params import MIN_CLIENTS_FLOOR, PARAMS_TYPES, PaillierParams, PublicKeyMessage, min_clients_floor

__all__ = ["ClientState", "PaillierClient", "encode_update"]


class ClientState(str, enum.Enum):
    WAITING_PARAMS = "waiting_params"
    READY = "ready"
    SUBMITTED = "submitted"


def encode_update(params: PaillierParams, update: np.ndarray, weight: float,
                  rng: RandomSource | None = None) -> tuple[np.ndarray, int]:
    """The quantized vector ``[q(w*x), q(w)]`` (int64, ``d + 1`` entries) and
    how many entries clipping changed. In a DP round (protocols/dp/SPEC.md
    §9): the DP encoding ``v`` fed to the packer as ``q = v - 2^(b-1)``
    (``d'`` entries in ``[-2^(b-1), 2^(b-1))``), then a count slot of 1; the
    weight must be 1 and the count is 1 if the update was clipped."""
    enc = params.encoding
    x = np.asarray(update, dtype=np.float64).ravel()
    if x.size != params.vector_length:
        raise ParameterError(f"update has {x.size} entries, the round expects {params.vector_length}")
    rng = default_random(rng)
    dp = params.dp
    if dp is not None:
        if type(weight) not in (int, float) or weight != 1:
            # a private weight would change the sensitivity, and its slot would be released unnoised
            raise ParameterError(f"a DP round is unweighted: the weight must be 1, got {weight!r}")
        encoded = dp.encode_update(x, rng)
        q = np.empty(params.entries, dtype=np.int64)
        q[:-1] = encoded.values.astype(np.int64) - np.int64(1 << (dp.bits - 1))
        q[-1] = 1
        return q, int(encoded.clipped)
    qx = enc.quantize(x, weight, rng)
    qw = enc.quantize_weight(weight, rng)
    out = np.empty(x.size + 1, dtype=np.int64)
    out[:-1] = qx.values
    out[-1] = qw
    # Float rounding of w*clip*2^f can exceed the bound by one ulp, and stochastic
    # rounding could then step past it; never let that reach a slot.
    bound = params.layout.bound
    np.clip(out, -bound, bound, out=out)
    return out, qx.clipped


class PaillierClient:
    """One client's side of a round. ``min_key_bits`` (2048 by default) is the
    smallest modulus it accepts; tests lower it for small keys. ``min_clients``
    (2 by default; 1 only with ``unsafe_allow_single_client=True``) is the
    smallest ``min_clients`` of a round it submits to. ``signing_key`` (a
    32-byte Ed25519 private key), if given, signs every submission."""

    def __init__(self, client_id: int, public_key: pl.PublicKey | PublicKeyMessage, *,
                 rng: RandomSource | None = None, randomizer: pl.RandomizerSpec = pl.STANDARD,
                 min_key_bits: int = pl.DEFAULT_KEY_BITS, pool: pl.ObfuscatorPool | None = None,
                 min_clients: int = MIN_CLIENTS_FLOOR, unsafe_allow_single_client: bool = False,
                 signing_key: bytes | None = None):
        self.min_clients = min_clients_floor(min_clients, unsafe_allow_single_client)
        self._signing_key = None if signing_key is None else check_signing_key(signing_key)
        key = public_key.key if isinstance(public_key, PublicKeyMessage) else public_key
        if not isinstance(key, pl.PublicKey):
            raise ParameterError("public_key must be a PublicKey or PublicKeyMessage")
        if key.key_bits < min_key_bits:
            raise ParameterError(f"a {key.key_bits}-bit Paillier key is below the {min_key_bits}-bit minimum")
        if not isinstance(randomizer, pl.RandomizerSpec):
            raise ParameterError("randomizer must be a RandomizerSpec")
        self.client_id = int(client_id)
        self.public_key = key
        self.randomizer = randomizer
        self.rng = default_random(rng)
        if pool is not None and pool.public_key != key:
            raise ParameterError("the obfuscator pool belongs to another key")
        self.pool = pool if pool is not None else pl.ObfuscatorPool(key)
        self.state = ClientState.WAITING_PARAMS
        self.params: PaillierParams | None = None
        self.clipped = 0
        self.online_exponentiations = 0

    @property
    def signs(self) -> bool:
        """Whether this client signs its submissions."""
        return self._signing_key is not None

    # ------------------------------------------------------------------ offline
    def precompute(self, count: int, *, workers: int | None = None, executor: Executor | None = None) -> None:
        """Add ``count`` obfuscators to the pool (the offline phase), here or,
        cut into ``workers`` tasks, on ``executor``
        (:func:`~secagg.primitives.paillier.precompute_obfuscators`)."""
        self.pool.extend(pl.precompute_obfuscators(self.public_key, int(count), self.rng, self.randomizer,
                                                   workers=workers, executor=executor))

    @staticmethod
    def ciphertexts_needed(params: PaillierParams) -> int:
        return params.n_ciphertexts

    # ------------------------------------------------------------------ round
    def receive_params(self, params: PaillierParams | bytes) -> None:
        """Accept the round's parameters (decoded and validated if bytes)."""
        if self.state is not ClientState.WAITING_PARAMS:
            raise LocalProtocolError(f"parameters already received (state {self.state.value})")
        if not isinstance(params, PaillierParams):
            params = wire.decode(params, PARAMS_TYPES)
        if params.key != self.public_key:
            raise KeyMismatch("round parameters carry a key other than the key holder's pinned key")
        if self.client_id not in params.client_ids:
            raise UnexpectedSender(f"client {self.client_id} is not invited to this round")
        check_floor(params, self.min_clients, f"client {self.client_id}")
        self.params = params
        self.state = ClientState.READY

    def submit(self, update: np.ndarray, weight: float = 1.0) -> Submission:
        """Encode, pack and encrypt ``[w*x, w]`` (the online phase)."""
        if self.state is not ClientState.READY or self.params is None:
            raise LocalProtocolError(f"cannot submit in state {self.state.value}")
        params = self.params
        q, clipped = encode_update(params, update, weight, self.rng)
        packed = params.layout.pack(q)
        have = min(len(self.pool), len(packed))
        rhos = self.pool.take(have)
        missing = len(packed) - have
        if missing:
            rhos += pl.precompute_obfuscators(self.public_key, missing, self.rng, self.randomizer)
            self.online_exponentiations += missing
        cts = pl.encrypt_with_obfuscators(self.public_key, packed, rhos)
        records = pl.ciphertexts_to_bytes(self.public_key, cts)
        signature = b"" if self._signing_key is None else sign_submission(self._signing_key, params.session_id,
                                                                          self.client_id, records,
                                                                          self.public_key.ciphertext_bytes)
        self.clipped = clipped
        self.state = ClientState.SUBMITTED
        return Submission(session_id=params.session_id, key_id=self.public_key.key_id,
                          client_id=self.client_id, ciphertexts=records, signature=signature)
