"""The key holder (protocols/paillier/SPEC.md §3.4): a key authority, not the
server. It generates the Paillier key pair, publishes the public key, and
decrypts exactly one message per session: the aggregate ciphertext.

Registration (:meth:`PaillierKeyHolder.accept_params`) refuses parameters
under another key (:class:`KeyMismatch`) and parameters whose
``min_clients`` is below the key holder's own minimum (``min_clients``, 2
unless ``unsafe_allow_single_client=True``; :class:`TooFewClients`), so a
server cannot mint a session in which one client's ciphertext is "the
aggregate". A session is registered once; registering the same parameters
again changes nothing.

Decryption (:meth:`PaillierKeyHolder.decrypt_aggregate`) refuses, without
changing anything, bytes that are not an :class:`AggregateCiphertext`,
another key and an unknown session. Once a request names a registered session
under its key, that session is **consumed**: whatever is wrong with the rest
of the request, no later request for it is served (:class:`AlreadyDecrypted`),
so a refused request cannot be retried in a corrected form. The checks that
follow, each a typed :class:`~secagg.errors.RemoteProtocolError`: an
``included`` set that is not a set of invited ids or is smaller than
``min_clients``; in the signed mode (``client_keys``), a missing or invalid
statement for an included client (:func:`~.messages.verify_statements`); a
wrong length or a ciphertext outside ``Z*_{n^2}``; a decrypted aggregate that
no set of honest clients can produce (:class:`SlotOverflow`), including, for
``sum`` and ``mean`` where every weight is 1, a weight slot that differs from
the number of included clients (a server passing off one client's ciphertext
as the aggregate of many fails here, unless it pads the weight slot with an
encryption of the missing weights: SPEC §7 says what no check here can see).
"""

from __future__ import annotations

import numbers
import os
from typing import Mapping

from ...encoding import wire
from ...encoding.packing import SlotOverflow
from ...errors import ParameterError, WireFormatError, from_peer
from ...primitives import paillier as pl
from ...primitives.randomness import RandomSource
from .messages import (AggregateCiphertext, AggregateSums, AlreadyDecrypted, KeyMismatch, SessionMismatch,
                       TooFewClients, UnexpectedSender, check_floor, check_verify_keys, verify_statements)
from .params import MIN_CLIENTS_FLOOR, PaillierParams, PublicKeyMessage, min_clients_floor

__all__ = ["PaillierKeyHolder"]


class PaillierKeyHolder:
    """Holds the private key. ``threads`` parallelises CRT decryption inside
    this process (gmpy2 releases the GIL), so the key never leaves it; the
    default (``None``) uses every CPU this process may run on. A 1M-parameter
    aggregate at 2048 bits (10,753 ciphertexts) took 42 s of CPU on one
    thread in the recorded run (39 s of it the two half-size exponentiations
    per ciphertext; benchmarks/results/paillier.md), so about 21 s of wall
    time on two idle cores.

    ``key_primes`` (2, the default, or 3) is the number of primes of the key
    it generates (protocols/paillier/SPEC.md §3.4, "Three-prime modulus"):
    three primes of a third of ``key_bits`` each put those exponentiations at
    0.50x the two-prime cost (measured), about 10 s on two idle cores at that
    speed; nothing on the wire changes. Like ``key_bits`` it applies to a key
    the key holder generates; a given ``private_key`` brings its own primes.
    The attribute ``key_primes`` is the key's number of primes.

    ``min_clients`` (2; 1 only with ``unsafe_allow_single_client=True``) is
    the smallest ``min_clients`` of a round it registers. ``client_keys``
    (client id -> 32-byte Ed25519 verify key), if given, puts it in the
    signed mode: every aggregate must carry a valid statement of each
    included client for its session."""

    def __init__(self, key_bits: int = pl.DEFAULT_KEY_BITS, rng: RandomSource | None = None, *,
                 private_key: pl.PrivateKey | None = None, threads: int | None = None,
                 min_clients: int = MIN_CLIENTS_FLOOR, unsafe_allow_single_client: bool = False,
                 client_keys: Mapping[int, bytes] | None = None, key_primes: int = 2):
        if isinstance(key_primes, bool) or not isinstance(key_primes, int) or key_primes not in pl.KEY_PRIMES:
            raise ParameterError(f"key_primes must be 2 or 3, got {key_primes!r}")
        self.min_clients = min_clients_floor(min_clients, unsafe_allow_single_client)
        self._client_keys = None if client_keys is None else check_verify_keys(client_keys)
        if private_key is None:
            _, private_key = pl.generate_keypair(key_bits, rng, primes=key_primes)
        elif not isinstance(private_key, pl.PrivateKey):
            raise ParameterError("private_key must be a secagg PrivateKey")
        #: the number of primes of the key (2 or 3; never the primes themselves)
        self.key_primes: int = private_key.prime_count
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

    @property
    def signed(self) -> bool:
        """Whether this key holder requires the included clients' signed statements."""
        return self._client_keys is not None

    def is_registered(self, session_id: bytes) -> bool:
        """Whether the round ``session_id`` was registered here."""
        return bytes(session_id) in self._sessions

    def is_consumed(self, session_id: bytes) -> bool:
        """Whether a decryption request for ``session_id`` was already taken
        (served or refused): no later request for it is served."""
        return bytes(session_id) in self._decrypted

    def accept_params(self, params: PaillierParams | bytes) -> bytes:
        """Register a round (parameters from the server); returns its session
        id. Refuses another key (:class:`KeyMismatch`) and a ``min_clients``
        below this key holder's own (:class:`TooFewClients`), registering
        nothing; the same parameters again are accepted and change nothing."""
        if not isinstance(params, PaillierParams):
            params = wire.decode(params, PaillierParams)
        if params.key != self.public_key:
            raise KeyMismatch("round parameters name another Paillier key")
        check_floor(params, self.min_clients, "the key holder")
        sid = params.session_id
        known = self._sessions.get(sid)
        if known is None:
            self._sessions[sid] = params
        elif wire.encode(known) != wire.encode(params):  # the session id is a hash of them: never expected
            raise SessionMismatch("another round is registered under this session id")
        return sid

    def decrypt_aggregate(self, message: AggregateCiphertext | bytes) -> AggregateSums:
        """Decrypt and unpack the aggregate of one session, once. A request
        that names a registered session under this key consumes the session
        before any further check (module docstring)."""
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
        # The session is named: consumed now, whatever the checks below find,
        # so a refused request cannot be corrected and sent again.
        self._decrypted.add(msg.session_id)
        included = msg.included
        if list(included) != sorted(set(included)) or not set(included) <= set(params.client_ids):
            raise UnexpectedSender("included clients are not distinct invited ids")
        need = max(params.min_clients, self.min_clients)
        if len(included) < need:
            raise TooFewClients(f"{len(included)} included clients, the round needs {need}")
        if self._client_keys is not None:
            verify_statements(self._client_keys, msg.session_id, included, msg.statements)
        with from_peer():  # the server's records: a bad length or value is its fault
            cts = pl.ciphertexts_from_bytes(self.public_key, msg.ciphertexts, params.n_ciphertexts)
        packed = self._private_key.decrypt_many(cts, threads=self.threads)
        sums = params.layout.unpack(packed, params.entries, len(included))
        if params.rule in ("sum", "mean") and int(sums[-1]) != len(included) << params.frac_bits:
            raise SlotOverflow("weight slot does not equal the number of included clients")
        return AggregateSums(session_id=msg.session_id, included=tuple(included), sums=sums)

    def __getstate__(self):  # noqa: D105
        raise TypeError("the key holder is never pickled")

    def __repr__(self) -> str:
        return (f"PaillierKeyHolder({self.public_key!r}, sessions={len(self._sessions)}, "
                f"min_clients={self.min_clients}{', signed' if self.signed else ''}"
                f"{', three-prime key' if self.key_primes == 3 else ''})")

