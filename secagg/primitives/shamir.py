"""Shamir t-of-n secret sharing over a named prime field, vectorised.

A secret of ``L`` bytes is cut into ``c`` chunks of ``floor(log2 p)`` bits, each
chunk an element of GF(p); each chunk is shared with its own independent random
polynomial of degree ``t - 1`` (coefficients drawn uniformly by rejection
sampling). Any ``t`` shares determine every chunk; any ``t - 1`` are jointly
uniform, independent of the secret (tested exhaustively on a tiny field).

The default field is GF(2^31 - 1) ("M31"): products of two elements fit in a
64-bit word, so evaluation (Horner's rule at all ``n`` points at once) and
reconstruction are numpy operations. A 32-byte seed is 9 chunks, 36 bytes per
share. Evaluation points are the party ids ``1..n`` (0 is the secret).

For many secrets held by the same set of share holders, the Lagrange
coefficients at zero are computed once (:func:`lagrange_at_zero`) and each
secret is then a dot product (:func:`reconstruct_many`): O(t) per secret.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ReconstructionError
from .randomness import RandomSource, default_random

__all__ = ["PrimeField", "M31", "split", "split_many", "evaluate", "reconstruct", "lagrange_at_zero",
           "lagrange_at_zero_batch", "reconstruct_many", "reconstruct_rows", "reconstruct_without_each",
           "secret_from_chunks", "uniform_mod", "chunks_for"]


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin, exact for n < 3.3 * 10^24 (these bases)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for q in small:
        if n % q == 0:
            return n == q
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


@dataclass(frozen=True)
class PrimeField:
    name: str
    prime: int

    def __post_init__(self) -> None:
        if not (isinstance(self.prime, int) and 2 <= self.prime < (1 << 31) + 1):
            raise ValueError("field prime must be below 2^31 so products fit in 64 bits")
        # Inverses are computed as x^(p-2) (Fermat), which is only right mod a prime:
        # a composite modulus would silently reconstruct garbage.
        if not _is_prime(self.prime):
            raise ValueError(f"field modulus {self.prime} is not prime")

    @property
    def chunk_bits(self) -> int:
        """Bits of secret per field element: floor(log2 p)."""
        return self.prime.bit_length() - 1


M31 = PrimeField("M31", (1 << 31) - 1)


def chunks_for(secret_len: int, field: PrimeField = M31) -> int:
    return -(-secret_len * 8 // field.chunk_bits)


def uniform_mod(rng: RandomSource, count: int, prime: int) -> np.ndarray:
    """``count`` elements uniform in [0, prime), rejection-sampled from 64-bit words."""
    limit = ((1 << 64) // prime) * prime
    out = np.empty(count, dtype=np.uint64)
    filled = 0
    while filled < count:
        need = count - filled
        words = np.frombuffer(rng.bytes(8 * (need + 4)), dtype="<u8").astype(np.uint64)
        if limit < (1 << 64):
            words = words[words < np.uint64(limit)]
        take = min(words.size, need)
        out[filled:filled + take] = words[:take] % np.uint64(prime)
        filled += take
    return out


def _to_chunks(secret: bytes, field: PrimeField) -> np.ndarray:
    c = chunks_for(len(secret), field)
    value = int.from_bytes(secret, "big")
    mask = (1 << field.chunk_bits) - 1
    return np.array([(value >> (field.chunk_bits * i)) & mask for i in range(c)], dtype=np.uint64)


def secret_from_chunks(chunks: np.ndarray, secret_len: int, field: PrimeField = M31) -> bytes:
    """The secret of ``secret_len`` bytes whose chunks (field elements, lowest
    first) are ``chunks``: the last step of every reconstruction, for callers
    that combine shares themselves. Chunks that cannot come from such a secret
    (inconsistent shares) raise :class:`~secagg.errors.ReconstructionError`."""
    value = 0
    for i, ch in enumerate(chunks.tolist()):
        if ch >> field.chunk_bits:
            raise ReconstructionError("reconstructed chunk out of range: inconsistent shares")
        value |= ch << (field.chunk_bits * i)
    if value >> (8 * secret_len):
        raise ReconstructionError("reconstructed value longer than the secret: inconsistent shares")
    return value.to_bytes(secret_len, "big")


def _check_points(xs: Sequence[int], field: PrimeField) -> np.ndarray:
    pts = list(np.asarray(xs).ravel()) if isinstance(xs, np.ndarray) else list(xs)
    if not pts:
        raise ReconstructionError("no share points given")
    ints = []
    for x in pts:
        # Exact integers only: 1.5 or True must not silently become a point.
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise ReconstructionError(f"share point {x!r} is not an integer")
        ints.append(int(x))
    if any(not 0 < x < field.prime for x in ints):
        raise ReconstructionError("share points must lie in [1, p)")
    if len(set(ints)) != len(ints):
        raise ReconstructionError("duplicate share points")
    return np.array(ints, dtype=np.uint64)


def _as_share_array(shares: np.ndarray, field: PrimeField) -> np.ndarray:
    """Validate share values (integers in [0, p)) and return them as uint64."""
    arr = np.asarray(shares)
    if arr.dtype.kind not in "ui":
        raise ReconstructionError("shares must be integers")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= field.prime):
        raise ReconstructionError("share value outside the field")
    return arr.astype(np.uint64)


def evaluate(coefficients: np.ndarray, xs: np.ndarray, field: PrimeField = M31) -> np.ndarray:
    """Evaluate ``c`` polynomials (``coefficients`` shape (t, c), constant term
    first) at the points ``xs``: result shape (len(xs), c). Pure; the tests
    enumerate coefficients through this. Large instances go through an exact
    floating-point matrix product (:func:`_evaluate_matmul`), small ones
    through Horner's rule; both give the same field elements (tested)."""
    t = coefficients.shape[0]
    if _MATMUL_MIN_T <= t and xs.size * t <= _MATMUL_MAX_POWERS and _limb_bits(t) >= 4:
        return _evaluate_matmul(coefficients, xs, field)
    return _evaluate_horner(coefficients, xs, field)


# Horner's rule costs t numpy passes: below 8 of them it is the faster path
# (measured with 18 polynomials: t = 3, n = 1000: 135 us against 934 us; from
# t = 8 on the matrix product wins, e.g. t = 20, n = 37: 54 us against 138 us;
# t = 51, n = 100: 110 us against 432 us; t = 501, n = 1000: 9 ms against 17 ms).
_MATMUL_MIN_T = 8
# The matrix product holds the t x n power matrix twice (uint64 and float64):
# above 2 * 10^6 entries (32 MB) it is no faster than Horner, which needs O(n)
# memory (measured: n = 4000, t = 2001: 480 ms and 126 MiB against 353 ms).
_MATMUL_MAX_POWERS = 2_000_000


def _limb_bits(t: int) -> int:
    """Width ``w`` of the coefficient limbs such that a sum of ``t`` products
    (limb < 2^w) x (power < 2^31) stays below 2^53, where every float64
    operation on integers is exact."""
    return 53 - 31 - max(1, (t - 1).bit_length())


def _evaluate_matmul(coefficients: np.ndarray, xs: np.ndarray, field: PrimeField) -> np.ndarray:
    """``values = V^T C mod p`` with the power matrix ``V[k, j] = x_j^k mod p``.
    ``C`` is cut into limbs of ``w`` bits (:func:`_limb_bits`) so that every
    partial sum of the float64 product is an integer below 2^53: the product is
    exact whatever order BLAS adds in. The limbs are recombined mod p."""
    p = field.prime
    pu = np.uint64(p)
    t, c = coefficients.shape
    x = xs.astype(np.uint64).ravel() % pu
    n = x.size
    # powers x^0 .. x^(t-1), a block of b rows at a time (products < 2^62)
    b = max(1, math.isqrt(t))
    powers = np.empty((t, n), dtype=np.uint64)
    powers[0] = 1
    for k in range(1, min(b, t)):
        np.multiply(powers[k - 1], x, out=powers[k])
        powers[k] %= pu
    if t > b:
        step = powers[b - 1] * x % pu  # x^b
        for start in range(b, t, b):
            stop = min(start + b, t)
            np.multiply(powers[start - b:stop - b], step, out=powers[start:stop])
            powers[start:stop] %= pu
    w = _limb_bits(t)
    limbs = -(-field.prime.bit_length() // w)
    mask = np.uint64((1 << w) - 1)
    coef = coefficients.astype(np.uint64)
    stacked = np.concatenate([(coef >> np.uint64(w * i)) & mask for i in range(limbs)], axis=1)
    product = powers.T.astype(np.float64) @ stacked.astype(np.float64)  # (n, limbs * c), exact
    parts = product.astype(np.uint64) % pu
    out = parts[:, :c].copy()
    for i in range(1, limbs):
        out += parts[:, i * c:(i + 1) * c] * np.uint64(pow(2, w * i, p)) % pu
    out %= pu
    return out


def _evaluate_horner(coefficients: np.ndarray, xs: np.ndarray, field: PrimeField = M31) -> np.ndarray:
    p = np.uint64(field.prime)
    x = xs.reshape(-1, 1)
    acc = np.broadcast_to(coefficients[-1], (xs.size, coefficients.shape[1])).copy()
    if field.prime == M31.prime and (xs.size == 0 or int(xs.max()) < (1 << 30)):
        # Mersenne fast path: 2^31 = 1 mod p, so v = (v & p) + (v >> 31) mod p.
        # One fold per step keeps acc < 2^33; with x < 2^30 the next product
        # stays below 2^63, so no step overflows. One exact reduction at the end.
        high = np.empty_like(acc)
        shift = np.uint64(31)
        for k in range(coefficients.shape[0] - 2, -1, -1):
            np.multiply(acc, x, out=acc)
            np.add(acc, coefficients[k], out=acc)
            np.right_shift(acc, shift, out=high)
            np.bitwise_and(acc, p, out=acc)
            np.add(acc, high, out=acc)
        acc %= p
        return acc
    for k in range(coefficients.shape[0] - 2, -1, -1):
        acc *= x
        acc += coefficients[k]
        acc %= p
    return acc


def split(secret: bytes, threshold: int, xs: Sequence[int], rng: RandomSource | None = None,
          field: PrimeField = M31) -> np.ndarray:
    """Shares of ``secret`` for the points ``xs`` (usually party ids): array of
    shape (len(xs), chunks) with one share per row. Any ``threshold`` rows
    reconstruct; fewer reveal nothing."""
    points = _check_points(xs, field)
    if not 1 <= threshold <= points.size:
        raise ValueError(f"threshold must be in [1, {points.size}], got {threshold}")
    secret_chunks = _to_chunks(bytes(secret), field)
    c = secret_chunks.size
    coeffs = np.empty((threshold, c), dtype=np.uint64)
    coeffs[0] = secret_chunks
    if threshold > 1:
        coeffs[1:] = uniform_mod(default_random(rng), (threshold - 1) * c, field.prime).reshape(threshold - 1, c)
    return evaluate(coeffs, points, field)


def _prod_mod(m: np.ndarray, p: np.uint64) -> np.ndarray:
    """Product of each row of ``m`` modulo p, by pairwise tree reduction."""
    while m.shape[1] > 1:
        if m.shape[1] % 2:
            m = np.concatenate([m, np.ones((m.shape[0], 1), dtype=np.uint64)], axis=1)
        m = (m[:, 0::2] * m[:, 1::2]) % p
    return m[:, 0]


def lagrange_at_zero(xs: Sequence[int], field: PrimeField = M31) -> np.ndarray:
    """Lagrange coefficients ``l_i = prod_{j != i} x_j / (x_j - x_i)`` mod p, so
    that ``f(0) = sum_i l_i f(x_i)`` for any polynomial of degree < len(xs)."""
    pts = _check_points(xs, field)
    p = field.prime
    pu = np.uint64(p)
    t = pts.size
    numer_all = _prod_mod(pts.reshape(1, -1), pu)[0]  # prod_j x_j
    denom = np.empty(t, dtype=np.uint64)  # prod_{j != i} (x_j - x_i), a block of rows at a time (bounded memory)
    block = 256
    for start in range(0, t, block):
        rows = pts[start:start + block]
        diff = (pts.reshape(1, -1) + (pu - rows.reshape(-1, 1))) % pu  # x_j - x_i
        idx = np.arange(rows.size)
        diff[idx, start + idx] = 1
        denom[start:start + rows.size] = _prod_mod(diff, pu)
    # l_i = prod_j x_j / (x_i prod_{j != i} (x_j - x_i)): the products of two
    # field elements fit in 64 bits, and one vectorised Fermat inversion
    # (x^(p-2)) serves every i, as in lagrange_at_zero_batch
    return numer_all * _pow_mod_array(denom * pts % pu, p - 2, pu) % pu


def reconstruct_many(coefficients: np.ndarray, shares: np.ndarray, secret_len: int,
                     field: PrimeField = M31, *, strict: bool = True) -> list:
    """Reconstruct ``m`` secrets at once from ``shares`` of shape (m, t, chunks)
    held by the points the ``coefficients`` were computed for. A result that
    cannot be a secret of ``secret_len`` bytes (inconsistent shares) raises
    :class:`ReconstructionError`, or with ``strict=False`` gives ``None`` in
    its place."""
    shares = np.asarray(shares)
    coefficients = np.asarray(coefficients)
    if shares.ndim != 3 or coefficients.ndim != 1 or shares.shape[1] != coefficients.size:
        raise ReconstructionError("share array does not match the holder set")
    if shares.shape[2] != chunks_for(secret_len, field):
        raise ReconstructionError("share length does not match the secret length")
    shares = _as_share_array(shares, field)
    if coefficients.dtype != np.uint64 or (coefficients.size and int(coefficients.max()) >= field.prime):
        raise ValueError("coefficients must come from lagrange_at_zero for this field")
    p = np.uint64(field.prime)
    prod = (shares * coefficients.reshape(1, -1, 1)) % p
    chunks = prod.sum(axis=1) % p
    if strict:
        return [secret_from_chunks(row, secret_len, field) for row in chunks]
    return _secrets_or_none(chunks, secret_len, field)


def _secrets_or_none(chunks: np.ndarray, secret_len: int, field: PrimeField) -> list:
    """One secret per row of reconstructed chunks, ``None`` where the row
    cannot be a secret of ``secret_len`` bytes (inconsistent shares)."""
    out: list[bytes | None] = []
    for row in chunks:
        try:
            out.append(secret_from_chunks(row, secret_len, field))
        except ReconstructionError:
            out.append(None)
    return out


def reconstruct(xs: Sequence[int], shares: np.ndarray, threshold: int, secret_len: int = 32,
                field: PrimeField = M31) -> bytes:
    """The secret from at least ``threshold`` shares (rows of ``shares`` at the
    points ``xs``). Too few, duplicate or malformed shares raise
    :class:`secagg.errors.ReconstructionError`. Extra shares beyond the
    threshold are used for nothing but the length check: the first
    ``threshold`` reconstruct."""
    pts = list(xs)
    arr = np.asarray(shares)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 1:
        raise ReconstructionError(f"threshold must be an integer >= 1, got {threshold!r}")
    if len(pts) < threshold:
        raise ReconstructionError(f"need {threshold} shares, got {len(pts)}")
    if arr.ndim != 2 or arr.shape[0] != len(pts):
        raise ReconstructionError("shares must be one row per point")
    arr = _as_share_array(arr, field)
    _check_points(pts, field)
    pts, arr = pts[:threshold], arr[:threshold]
    coeffs = lagrange_at_zero(pts, field)
    return reconstruct_many(coeffs, arr.reshape(1, *arr.shape), secret_len, field)[0]


def split_many(secrets: Sequence[bytes], threshold: int, xs: Sequence[int], rng: RandomSource | None = None,
               field: PrimeField = M31) -> list[np.ndarray]:
    """:func:`split` for several secrets of one length at once (one polynomial
    evaluation pass); returns one (len(xs), chunks) array per secret."""
    if not secrets or len({len(s) for s in secrets}) != 1:
        raise ValueError("split_many needs secrets of one length")
    points = _check_points(xs, field)
    if not 1 <= threshold <= points.size:
        raise ValueError(f"threshold must be in [1, {points.size}], got {threshold}")
    chunks = np.concatenate([_to_chunks(bytes(s), field) for s in secrets])
    c = chunks.size
    coeffs = np.empty((threshold, c), dtype=np.uint64)
    coeffs[0] = chunks
    if threshold > 1:
        coeffs[1:] = uniform_mod(default_random(rng), (threshold - 1) * c, field.prime).reshape(threshold - 1, c)
    values = evaluate(coeffs, points, field)
    per = c // len(secrets)
    return [values[:, i * per:(i + 1) * per] for i in range(len(secrets))]


def _pow_mod_array(x: np.ndarray, e: int, p: np.uint64) -> np.ndarray:
    result = np.ones_like(x)
    base = x % p
    while e:
        if e & 1:
            result = result * base % p
        base = base * base % p
        e >>= 1
    return result


def reconstruct_without_each(xs: Sequence[int], shares: np.ndarray, secret_len: int,
                             field: PrimeField = M31, coefficients: np.ndarray | None = None) -> list:
    """For ``m`` points ``xs`` and their shares (``m x chunks``): the ``m``
    secrets reconstructed from every ``m - 1`` of them, entry ``k`` leaving
    out point ``k`` (``None`` where those shares cannot be a secret of
    ``secret_len`` bytes). One Lagrange computation for the whole set and
    O(chunks) per secret, not ``m`` separate reconstructions: with
    ``mu_i`` the coefficients of all ``m`` points, the set without ``x_k``
    has coefficients ``mu_i (x_k - x_i) / x_k``, so its secret is
    ``A - B / x_k`` with ``A = sum_i mu_i s_i`` and ``B = sum_i mu_i x_i s_i``
    (the ``i = k`` term vanishes by itself). ``coefficients``: those
    ``mu`` (:func:`lagrange_at_zero` of ``xs``), if the caller keeps them. The
    server's search for the holder whose share spoils a secret (masking SPEC
    §3.5)."""
    pts = _check_points(xs, field)
    rows = _as_share_array(np.asarray(shares), field)
    if rows.ndim != 2 or rows.shape[0] != pts.size or pts.size < 2:
        raise ReconstructionError("need at least two points and one row of shares per point")
    pu = np.uint64(field.prime)
    mu = lagrange_at_zero(pts.tolist(), field) if coefficients is None else np.asarray(coefficients, np.uint64)
    if mu.shape != pts.shape:
        raise ReconstructionError("one coefficient per point")
    weighted = rows * mu[:, None] % pu
    a = weighted.sum(axis=0) % pu
    b = (weighted * pts[:, None] % pu).sum(axis=0) % pu
    inv = _pow_mod_array(pts, field.prime - 2, pu)
    chunks = (a[None, :] + (pu - inv[:, None] * b[None, :] % pu)) % pu
    return _secrets_or_none(chunks, secret_len, field)


def lagrange_at_zero_batch(point_sets: np.ndarray, field: PrimeField = M31) -> np.ndarray:
    """:func:`lagrange_at_zero` for ``G`` point sets at once (array ``G x t`` of
    distinct non-zero points per row): ``G x t`` coefficients, with one
    vectorised Fermat inversion for all of them (the SecAgg+ server has one
    holder set per client)."""
    sets = np.asarray(point_sets)
    if sets.ndim != 2 or sets.size == 0:
        raise ReconstructionError("point sets must be a non-empty G x t array")
    if sets.dtype.kind in "iu":  # the checks of _check_points, on the whole array at once
        if int(sets.min()) <= 0 or int(sets.max()) >= field.prime:
            raise ReconstructionError("share points must lie in [1, p)")
        ordered = np.sort(sets, axis=1)
        if np.any(ordered[:, 1:] == ordered[:, :-1]):
            raise ReconstructionError("duplicate share points")
    else:  # anything else (floats, bools, objects) point by point, with its precise error
        for row in sets:
            _check_points(row.tolist(), field)
    pu = np.uint64(field.prime)
    xs = sets.astype(np.uint64)
    t = xs.shape[1]
    numer = _prod_mod(xs, pu)  # prod_j x_j, per set
    diff = (xs[:, None, :] + (pu - xs[:, :, None])) % pu  # [g, i, j] = x_j - x_i
    idx = np.arange(t)
    diff[:, idx, idx] = 1
    denom = _prod_mod(diff.reshape(-1, t), pu).reshape(xs.shape)  # prod_{j != i} (x_j - x_i)
    inv = _pow_mod_array(denom * xs % pu, field.prime - 2, pu)  # 1 / (x_i prod_{j != i} (x_j - x_i))
    return numer.reshape(-1, 1) * inv % pu


def reconstruct_rows(coefficients: np.ndarray, shares: np.ndarray, secret_len: int,
                     field: PrimeField = M31) -> list:
    """Secrets from ``shares`` (``m x t x chunks``) with per-secret coefficients
    (``m x t``, e.g. from :func:`lagrange_at_zero_batch`); ``None`` where the
    shares are inconsistent with a secret of ``secret_len`` bytes."""
    p = np.uint64(field.prime)
    shares = _as_share_array(np.asarray(shares), field)
    coefficients = np.asarray(coefficients, dtype=np.uint64)
    if shares.ndim != 3 or coefficients.shape != shares.shape[:2]:
        raise ReconstructionError("coefficients do not match the shares")
    chunks = ((shares * coefficients[:, :, None]) % p).sum(axis=1) % p
    return secrets_from_chunk_rows(chunks, secret_len, field)  # all rows at once (same as row by row: tested)


def combine_at_zero(coefficients: np.ndarray, rows: "Sequence[np.ndarray] | np.ndarray", field: PrimeField = M31,
                    *, block: int = 16384) -> np.ndarray:
    """``sum_i coefficients[i] * rows[i] mod p``, element-wise over the rows:
    the Lagrange combination of ``t`` holders' shares of many secrets at once
    (row ``i`` = holder ``i``'s shares, every secret's chunks side by side),
    done as one matrix product. The coefficients are cut into limbs of ``w``
    bits (:func:`_limb_bits`) so that every partial sum of the float64
    product is an integer below 2^53: exact whatever order BLAS adds in.
    Share values must be below p (< 2^31)."""
    coef = np.asarray(coefficients, dtype=np.uint64).ravel()
    t = coef.size
    if t != len(rows) or t == 0:
        raise ReconstructionError("coefficients do not match the share rows")
    try:
        table = rows if isinstance(rows, np.ndarray) and rows.ndim == 2 else np.stack(list(rows))  # t x k, one copy
    except ValueError:
        raise ReconstructionError("share rows differ in length") from None
    k = table.shape[1]
    p = field.prime
    pu = np.uint64(p)
    w = _limb_bits(t)
    limbs = -(-p.bit_length() // w)
    mask = np.uint64((1 << w) - 1)
    lhs = np.stack([(coef >> np.uint64(w * i)) & mask for i in range(limbs)]).astype(np.float64)  # limbs x t
    scale = [np.uint64(pow(2, w * i, p)) for i in range(limbs)]
    out = np.empty(k, dtype=np.uint64)
    for a in range(0, k, block):
        b = min(a + block, k)
        prod = (lhs @ table[:, a:b].astype(np.float64)).astype(np.uint64) % pu  # limbs x (b - a), exact
        acc = prod[0]
        for i in range(1, limbs):
            acc += prod[i] * scale[i] % pu
        out[a:b] = acc % pu
    return out


def secrets_from_chunk_rows(chunks: np.ndarray, secret_len: int, field: PrimeField = M31) -> list:
    """:func:`secret_from_chunks` for every row of ``chunks`` (``m x c``, e.g.
    from :func:`combine_at_zero`), ``None`` where a row cannot be a secret of
    ``secret_len`` bytes (inconsistent shares).

    Computed for all rows at once on the bits of the chunks; the result is
    the same as ``secret_from_chunks`` row by row (``_secrets_or_none``,
    compared in the tests on random and malformed rows): chunk ``i`` holds
    bits ``i * w .. i * w + w - 1`` of the secret read as a big-endian
    integer (``w`` = the field's chunk bits), a chunk of ``w`` bits or more,
    or any bit at or above ``8 * secret_len``, makes the row ``None``."""
    chunks = np.asarray(chunks)
    if chunks.ndim != 2 or chunks.shape[1] != chunks_for(secret_len, field):
        raise ReconstructionError("chunk rows do not match the secret length")
    if chunks.dtype.kind not in "ui":
        return _secrets_or_none(chunks, secret_len, field)
    m, c = chunks.shape
    w = field.chunk_bits
    words = chunks.astype(np.uint64)  # a negative chunk wraps to a huge one: refused below, as by the reference
    ok = ~(words >> np.uint64(w)).any(axis=1)
    # bits[r, i * w + k] = bit k of chunk i: the secret's bits, least significant first
    bits = ((words[:, :, None] >> np.arange(w, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8).reshape(m, c * w)
    nbits = 8 * secret_len
    ok &= ~bits[:, nbits:].any(axis=1)
    # byte j of the little-endian form is bits 8j .. 8j + 7; the secret is big-endian
    little = np.packbits(bits[:, :nbits].reshape(m, secret_len, 8), axis=2, bitorder="little").reshape(m, secret_len)
    big = np.ascontiguousarray(little[:, ::-1])
    return [big[r].tobytes() if good else None for r, good in enumerate(ok.tolist())]
