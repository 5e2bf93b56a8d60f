"""The key holder (protocols/paillier/SPEC.md §3.4): a key authority, not the
server. It generates the Paillier key pair, publishes the public key, and
decrypts exactly one message per session: the aggregate ciphertext.

What it refuses (each a typed :class:`~secagg.errors.RemoteProtocolError`,
none changing its state): anything but an :class:`AggregateCiphertext`; an
unknown session or another key; a second aggregate for a session
(:class:`AlreadyDecrypted`: it is no decryption oracle); an ``included`` set
that is not a set of invited ids or is smaller than ``min_clients``; a wrong
length or a ciphertext outside ``Z*_{n^2}``; a decrypted aggregate that no set
of honest clients can produce (:class:`SlotOverflow`), including, for ``sum``
and ``mean`` where every weight is 1, a weight slot that differs from the
number of included clients (a server passing off one client's ciphertext as
the aggregate of many fails here).
"""

from __future__ import annotations

import numbers
import os

from ...encoding import wire
from ...encoding.packing import SlotOverflow
from ...errors import ParameterError, WireFormatError, from_peer
from ...primitives import paillier as pl
from ...primitives.randomness import RandomSource
from .messages import (AggregateCiphertext, AggregateSums, AlreadyDecrypted, KeyMismatch, SessionMismatch,
                       TooFewClients, UnexpectedSender)
from .params import PaillierParams, PublicKeyMessage

__all__ = ["PaillierKeyHolder"]


class PaillierKeyHolder:
    """Holds the private key. ``threads`` parallelises CRT decryption inside
    this process (gmpy2 releases the GIL), so the key never leaves it; the
    default (``None``) uses every CPU this process may run on (a 1M-parameter
    aggregate at 2048 bits: about 30 s on one core, 15 s on two;
    benchmarks/results/paillier.md)."""

    def __init__(self, key_bits: int = pl.DEFAULT_KEY_BITS, rng: RandomSource | None = None, *,
                 private_key: pl.PrivateKey | None = None, threads: int | None = None):
        if private_key is None:
            _, private_key = pl.generate_keypair(key_bits, rng)
        elif not isinstance(private_key, pl.PrivateKey):
            raise ParameterError("private_key must be a secagg PrivateKey")
        self._private_key = private_key
        self.public_key: pl.PublicKey = private_key.public_key
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
            raise ParameterError("threads must be an integer >= 1 (or None: every available CPU)")
        self.threads: int = int(threads)
        self._sessions: dict[bytes, PaillierParams] = {}
        self._decrypted: set[bytes] = set()

    def public_key_message(self) -> PublicKeyMessage:
        return PublicKeyMessage.from_key(self.public_key)

    def accept_params(self, params: PaillierParams | bytes) -> bytes:
        """Register a round (parameters from the server); returns its session id."""
        if not isinstance(params, PaillierParams):
            params = wire.decode(params, PaillierParams)
        if params.key != self.public_key:
            raise KeyMismatch("round parameters name another Paillier key")
        self._sessions.setdefault(params.session_id, params)
        return params.session_id

    def decrypt_aggregate(self, message: AggregateCiphertext | bytes) -> AggregateSums:
        """Decrypt and unpack the aggregate of one session, once."""
        if isinstance(message, AggregateCiphertext):
            msg = message
        elif isinstance(message, (bytes, bytearray, memoryview)):
            msg = wire.decode(message, AggregateCiphertext)
        else:
            raise WireFormatError("expected an AggregateCiphertext")
        if msg.key_id != self.public_key.key_id:
            raise KeyMismatch()
        params = self._sessions.get(msg.session_id)
        if params is None:
            raise SessionMismatch("no such session registered with the key holder")
        if msg.session_id in self._decrypted:
            raise AlreadyDecrypted()
        included = msg.included
        if list(included) != sorted(set(included)) or not set(included) <= set(params.client_ids):
            raise UnexpectedSender("included clients are not distinct invited ids")
        if len(included) < params.min_clients:
            raise TooFewClients(f"{len(included)} included clients, the round needs {params.min_clients}")
        with from_peer():  # the server's records: a bad length or value is its fault
            cts = pl.ciphertexts_from_bytes(self.public_key, msg.ciphertexts, params.n_ciphertexts)
        packed = self._private_key.decrypt_many(cts, threads=self.threads)
        sums = params.layout.unpack(packed, params.entries, len(included))
        if params.rule in ("sum", "mean") and int(sums[-1]) != len(included) << params.frac_bits:
            raise SlotOverflow("weight slot does not equal the number of included clients")
        self._decrypted.add(msg.session_id)
        return AggregateSums(session_id=msg.session_id, included=tuple(included), sums=sums)

    def __getstate__(self):  # noqa: D105
        raise TypeError("the key holder is never pickled")

    def __repr__(self) -> str:
        return f"PaillierKeyHolder({self.public_key!r}, sessions={len(self._sessions)})"

