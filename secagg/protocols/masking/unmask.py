"""The server's mask removal as self-contained jobs (SPEC.md §3.5): what is
left of the sum once the survivors' self masks and the dropped clients'
pairwise masks are known, computed from seeds and keys alone.

A :class:`MaskJob` holds everything its work needs (the reconstructed seeds
or mask keys, the public keys, the session id) and returns one vector: the
amount to add to the running sum. Jobs split into balanced parts
(:func:`split_jobs`) so that an :data:`Unmasker` may run them anywhere: the
default, :func:`run_local`, runs them in this process, one after the other;
:func:`secagg.drivers.concurrency.process_unmasker` runs the parts in worker
processes (the protocol core starts no process itself). Whatever runs them,
the result is the same vector: addition mod 2^k commutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ...encoding.ring import dtype_for
from ...primitives.key_agreement import agree_many
from ...primitives.prg import prg_ring_add_many_into
from . import _crypto as C

__all__ = ["MaskJob", "Unmasker", "run_local", "split_jobs"]


@dataclass(frozen=True)
class MaskJob:
    """Masks to remove from a sum of ``entries`` words mod 2^``ring_bits``.

    ``owner == 0``: the self masks ``PRG(b_u)`` of the survivors, one seed
    each in ``seeds``. Otherwise the pairwise masks of the dropped client
    ``owner`` (mask key ``secret``, public key ``owner_public``) with each
    survivor in ``peers`` (public keys ``peer_publics``), which each survivor
    ``w`` added as ``sign(w, owner) * PRG(s_{w,owner})``."""

    entries: int
    ring_bits: int
    session_id: bytes
    owner: int = 0
    seeds: tuple[bytes, ...] = ()
    secret: bytes = b""
    owner_public: bytes = b""
    peers: tuple[int, ...] = ()
    peer_publics: tuple[bytes, ...] = ()

    @property
    def streams(self) -> int:
        """Keystreams of ``entries`` words this job makes (its cost)."""
        return len(self.peers) if self.owner else len(self.seeds)

    def run_into(self, acc: np.ndarray) -> None:
        """Add this job's amount to ``acc`` (in place, mod 2^ring_bits)."""
        if not self.owner:
            prg_ring_add_many_into(acc, self.seeds, C.SELF_MASK_TAG, [-1] * len(self.seeds))
            return
        if not self.peers:
            return
        v, sid, pk_v = self.owner, self.session_id, self.owner_public
        shared = agree_many(self.secret, list(self.peer_publics))
        seeds = C.pair_keys("masking/pairwise-mask", shared, sid, v, pk_v, list(self.peers), list(self.peer_publics))
        # w added sign(w, v) * PRG(s_{w,v}); remove it
        prg_ring_add_many_into(acc, seeds, C.PAIR_MASK_TAG, [-C.mask_sign(w, v) for w in self.peers])

    def part(self, lo: int, hi: int) -> "MaskJob":
        """The same job over its streams ``lo:hi`` only."""
        if not self.owner:
            return MaskJob(self.entries, self.ring_bits, self.session_id, seeds=self.seeds[lo:hi])
        return MaskJob(self.entries, self.ring_bits, self.session_id, self.owner, secret=self.secret,
                       owner_public=self.owner_public, peers=self.peers[lo:hi], peer_publics=self.peer_publics[lo:hi])


#: Runs mask jobs: ``unmasker(jobs)`` returns the sum of their amounts, a
#: vector of ``entries`` words (dtype of ``ring_bits``) mod 2^ring_bits.
Unmasker = Callable[[Sequence[MaskJob]], np.ndarray]


def run_local(jobs: Sequence[MaskJob]) -> np.ndarray:
    """The default :data:`Unmasker`: every job in this process, in order."""
    if not jobs:
        raise ValueError("no mask jobs")
    acc = np.zeros(jobs[0].entries, dtype=dtype_for(jobs[0].ring_bits))
    for job in jobs:
        job.run_into(acc)
    return acc


def split_jobs(jobs: Sequence[MaskJob], parts: int) -> list[list[MaskJob]]:
    """``jobs`` cut into ``parts`` lists of about equal cost (keystreams; a
    pairwise stream also costs an X25519 exchange, counted as half a
    stream), cutting a job where a part fills up. Every stream is in exactly
    one part; empty parts are left out."""
    if parts < 1:
        raise ValueError("parts must be >= 1")
    weights = [job.streams * (1.5 if job.owner else 1.0) for job in jobs]
    total = sum(weights)
    out: list[list[MaskJob]] = [[] for _ in range(parts)]
    budget = total / parts
    k, room = 0, budget
    for job, weight in zip(jobs, weights):
        if not job.streams:
            continue
        per = weight / job.streams
        lo = 0
        while lo < job.streams:
            if k == parts - 1:
                take = job.streams - lo
            else:
                take = min(job.streams - lo, max(1, round(room / per)))
            out[k].append(job.part(lo, lo + take) if (lo, take) != (0, job.streams) else job)
            lo += take
            room -= take * per
            if room <= per / 2 and k < parts - 1:
                k += 1
                room += budget
    return [p for p in out if p]
