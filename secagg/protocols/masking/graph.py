"""Neighbour graphs for pairwise masking, and the SecAgg+ parameter derivation.

SecAgg [Bonawitz et al., CCS'17] masks every pair of clients: the complete graph.
SecAgg+ [Bell et al., CCS'20] masks only pairs of neighbours in a sparse random
graph of degree ``k``, and secret-shares each client's secrets among its ``k``
neighbours and itself (``k + 1`` holders) with threshold ``t``. One code path
serves both: the graph is a parameter (``degree = n - 1`` is the complete graph).

The sparse graph is a Harary graph ``H(k, n)`` over a random permutation of the
client ids (the permutation is drawn from the public ``graph_seed`` with the
PRG): place the clients on a ring in permuted order and connect each one to the
``k/2`` nearest positions on either side. It is ``k``-regular, and the
clients that remain after removing a set R can only be disconnected if R
contains a run of ``k/2`` consecutive ring positions (two such runs are needed
on a ring; we bound the probability of one, which is looser but simple). This
makes the privacy condition (the honest survivors' graph stays connected, so
the server learns nothing but their total) easy to bound: if each client is
removed (dropped or corrupt) independently with probability ``rho``,
``P[disconnected] <= n * rho^(k/2)``.

A server that *fakes* dropouts chooses R instead: removing two runs of ``k/2``
splits the ring into arcs. The client next to a removed run then keeps only
``k/2 + 1`` share holders (itself included). Sparse graphs therefore use
``t >= k/2 + 2``: that client refuses to unmask, its self mask cannot be
removed, and no arc's sum comes out (protocols/masking/SPEC.md §7-8).

Derivation of ``(k, t)`` for SecAgg+ (protocols/masking/SPEC.md §2), with
``delta`` the tolerated dropout fraction, ``gamma`` the tolerated corrupt
fraction, ``sigma`` = 40 (security) and ``eta`` = 30 (correctness) bits:

1. connectivity:  ``n * (delta + gamma)^(k/2) <= 2^-sigma``;
2. security (a dishonest server together with corrupt holders never reaches
   both kinds of share of one client):
   ``t >= k/2 + 2`` (see above; this also gives ``t > (k + 1) / 2``) and
   ``n * P[Bin(k + 1, gamma) >= 2t - (k + 1)] <= 2^-sigma``;
3. correctness (each client keeps ``t`` surviving holders):
   ``n * P[Bin(k + 1, 1 - delta) < t] <= 2^-eta``.

The smallest even ``k`` meeting all three, with the smallest ``t`` meeting (2),
is taken. If no ``k < n - 1`` does, the complete graph is used with the
deterministic conditions of SecAgg: ``2t > n + ceil(gamma n)`` and
``n - ceil(delta n) >= t``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ...errors import ParameterError
from ...primitives.prg import prg_ring

__all__ = ["NeighbourGraph", "derive_secagg_plus", "complete_threshold", "binom_cdf_lt", "binom_sf_ge",
           "SIGMA", "ETA"]

SIGMA = 40
MAX_SPARSE_DEGREE = 2048
ETA = 30


def _log_pmf(k: int, p: float, i: int) -> float:
    return (math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1)
            + i * math.log(p) + (k - i) * math.log1p(-p))


def binom_sf_ge(k: int, p: float, x: int) -> float:
    """P[Bin(k, p) >= x], summed in log space (no overflow for large k)."""
    if x <= 0:
        return 1.0
    if x > k or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return float(sum(math.exp(_log_pmf(k, p, i)) for i in range(x, k + 1)))


def binom_cdf_lt(k: int, p: float, x: int) -> float:
    """P[Bin(k, p) < x]."""
    if x <= 0:
        return 0.0
    if x > k:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return float(sum(math.exp(_log_pmf(k, p, i)) for i in range(0, x)))


def complete_threshold(n: int, dropout: float, corrupt: float) -> int:
    """Smallest secure threshold for the complete graph, or ParameterError if it
    cannot also tolerate the requested dropout."""
    c = math.ceil(corrupt * n)
    t = (n + c) // 2 + 1
    if t > n:
        raise ParameterError(f"no threshold is secure with {c} corrupt clients out of {n}")
    survivors = n - math.ceil(dropout * n)
    if survivors < t:
        raise ParameterError(
            f"{n} clients with threshold {t} (> half, against a dishonest server) cannot tolerate a "
            f"dropout of {dropout:.0%}: only {survivors} would remain")
    return t


def _sparse_ok(n: int, k: int, dropout: float, corrupt: float, sigma: int, eta: int) -> int | None:
    m = k + 1
    rho = dropout + corrupt
    if rho > 0 and math.log2(n) + (k / 2) * math.log2(rho) > -sigma:
        return None
    for t in range(k // 2 + 2, m + 1):
        if n * binom_sf_ge(m, corrupt, 2 * t - m) <= 2.0**-sigma:
            break
    else:
        return None
    if n * binom_cdf_lt(m, 1.0 - dropout, t) > 2.0**-eta:
        return None
    return t


@lru_cache(maxsize=256)
def derive_secagg_plus(n: int, dropout: float, corrupt: float = 0.0, sigma: int = SIGMA,
                       eta: int = ETA) -> tuple[int, int]:
    """``(degree, threshold)`` for SecAgg+ (see the module docstring); falls
    back to the complete graph ``(n - 1, t)``."""
    if not 0 <= dropout < 1 or not 0 <= corrupt < 1 or dropout + corrupt >= 1:
        raise ParameterError("dropout and corrupt fractions must lie in [0, 1) and sum below 1")
    for k in range(2, min(n - 1, MAX_SPARSE_DEGREE + 1), 2):
        t = _sparse_ok(n, k, dropout, corrupt, sigma, eta)
        if t is not None:
            return k, t
    return n - 1, complete_threshold(n, dropout, corrupt)


class NeighbourGraph:
    """The neighbour relation of one round: complete if ``degree == n - 1``,
    else the permuted Harary graph of even degree ``degree``."""

    def __init__(self, client_ids: tuple[int, ...], degree: int, graph_seed: bytes):
        n = len(client_ids)
        self.client_ids = client_ids
        self.degree = degree
        self.complete = degree == n - 1
        self._all = frozenset(client_ids)
        self._cache: dict[int, tuple[int, ...]] = {}
        self._holders: dict[int, tuple[int, ...]] = {}
        self._holder_sets: dict[int, frozenset[int]] = {}
        self._table: np.ndarray | None = None
        if not self.complete:
            if degree % 2 or not 2 <= degree < n - 1:
                raise ParameterError(f"a sparse graph needs an even degree in [2, {n - 2}], got {degree}")
            keys = prg_ring(graph_seed, b"masking/graph-permutation", n, 64)
            order = np.lexsort((np.asarray(client_ids, dtype=np.int64), keys))
            self._ring = np.asarray(client_ids, dtype=np.int64)[order]
            self._order = order  # ring position i holds client_ids[order[i]]
            self._pos = {int(cid): i for i, cid in enumerate(self._ring.tolist())}

    def __contains__(self, u: object) -> bool:
        """Whether ``u`` is a participant (an exact ``int`` id of the round)."""
        return type(u) is int and u in self._all

    def neighbours(self, u: int) -> tuple[int, ...]:
        """Sorted neighbours of ``u`` (excluding ``u``)."""
        got = self._cache.get(u)
        if got is not None:
            return got
        if u not in self._all:
            raise ParameterError(f"client {u} is not in this round")
        if self.complete:
            got = tuple(v for v in self.client_ids if v != u)
        else:
            n = len(self.client_ids)
            i = self._pos[u]
            half = self.degree // 2
            offs = np.concatenate([np.arange(1, half + 1), -np.arange(1, half + 1)])
            got = tuple(sorted(int(v) for v in self._ring[(i + offs) % n]))
        if len(self._cache) < 100_000:
            self._cache[u] = got
        return got

    def holders(self, u: int) -> tuple[int, ...]:
        """Who holds shares of ``u``'s secrets: its neighbours and itself (sorted)."""
        got = self._holders.get(u)
        if got is None:
            got = tuple(sorted(self.neighbours(u) + (u,)))
            if len(self._holders) < 100_000:
                self._holders[u] = got
        return got

    def holder_set(self, u: int) -> frozenset[int]:
        """:meth:`holders` of ``u`` as a set (cached), for membership checks."""
        got = self._holder_sets.get(u)
        if got is None:
            got = frozenset(self.holders(u))
            if len(self._holder_sets) < 100_000:
                self._holder_sets[u] = got
        return got

    def holders_table(self) -> np.ndarray:
        """Every client's holders at once, for a server that needs them all:
        row ``r`` is :meth:`holders` of ``client_ids[r]`` as a sorted row of
        ``degree + 1`` ids (uint32, read-only). Sparse graphs only (a complete
        graph's table would be n x n; every row is ``client_ids``). Computed
        with a few array operations on the first call, then cached."""
        if self.complete:
            raise ParameterError("holders_table is for sparse graphs: in a complete graph everyone holds everyone")
        if self._table is None:
            n = len(self.client_ids)
            half = self.degree // 2
            offs = np.arange(-half, half + 1, dtype=np.int64)
            by_ring = self._ring[(np.arange(n, dtype=np.int64)[:, None] + offs) % n]  # row i: ring position i's
            by_ring.sort(axis=1)
            table = np.empty_like(by_ring, dtype=np.uint32)
            table[self._order] = by_ring  # ring position i is client_ids[order[i]]: back to id order
            table.flags.writeable = False
            self._table = table
        return self._table

    def holders_of(self, ids: np.ndarray) -> np.ndarray:
        """The rows of :meth:`holders_table` for the participants ``ids`` (an
        array of client ids, e.g. the members of U_1), in that order;
        :class:`ParameterError` if one is not a participant."""
        ids = np.asarray(ids)
        all_ids = np.asarray(self.client_ids, dtype=np.int64)
        rows = np.minimum(np.searchsorted(all_ids, ids), max(len(all_ids) - 1, 0))
        if ids.size and not np.array_equal(all_ids[rows], ids):
            raise ParameterError("holders_of: not every id is a participant of this round")
        return self.holders_table()[rows]

    def are_neighbours(self, u: int, v: int) -> bool:
        if u == v:
            return False
        if self.complete:
            return u in self._all and v in self._all
        n = len(self.client_ids)
        d = abs(self._pos[u] - self._pos[v])
        return min(d, n - d) <= self.degree // 2
