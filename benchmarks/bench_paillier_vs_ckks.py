"""Paillier (s = 1), Damgard-Jurik s = 2 and s = 3 with the larger packing, and
TenSEAL CKKS, side by side in one run: per parameter, does s > 1 (more slots
per ciphertext) lower the cost?

For a model of ``--dim`` parameters (default 1M), ``--clients`` clients
(default 100), a 2048-bit modulus and the protocol's fixed-point encoding
(clip 1, 14 fractional bits, 22-bit slots for 100 clients):

- **Paillier / Damgard-Jurik, s = 1, 2, 3** under one key (the same primes):
  plaintexts of ``s * key_bits - 1`` bits, so ``floor((s * 2048 - 1) / 22)``
  slots per ciphertext (93, 186, 279); ciphertexts in ``Z*_{n^(s+1)}``.

  * *encrypt per client*: the DJN short-exponent obfuscator generalised to
    ``s`` (``rho = (h^(n^s))^a mod n^(s+1)``, ``h = -x^2`` the library's public
    DJN base before its ``n``-th power, ``a`` of 448 bits, the library's
    fixed-base table, ``secagg.primitives.paillier._FixedBase``) for every
    ciphertext, then quantize, pack, ``(1 + n)^m rho`` (the binomial sum for
    ``s > 1``) and serialization. For s = 1 this is the library's own client
    path; for s > 1 it is this benchmark's generalisation of it (the library
    encrypts s > 1 only in ``threshold_paillier.encrypt``, with a full-length
    ``r^(n^s)``). The one-time table build is reported apart.
    *Floor*: the table multiplications themselves, i.e. one modular
    multiplication mod ``n^(s+1)`` (timed in this run) times the number the
    table walk makes (one per nonzero 8-bit digit of each exponent).
  * *combine of 100 clients*: parse each client's bytes into integers and
    multiply into the accumulator mod ``n^(s+1)``, every client's full vector
    (client 1's ciphertexts stand for every client: full-size elements, so the
    same arithmetic; the plaintext sum is then 100 times client 1's).
    *Floor*: the multiplications alone (``99 * ciphertexts`` of them, timed).
  * *decrypt*: the key holder's CRT decryption ``PrivateKey.decrypt_many(...,
    s=s)`` and the unpacking, on one thread, of a sample of
    ``--decrypt-sample`` aggregate ciphertexts, extrapolated to all (said so);
    every decrypted slot is checked (100 times client 1's quantized value).
    *Floor*: the two exponentiations ``c^(p-1) mod p^(s+1)``,
    ``c^(q-1) mod q^(s+1)`` alone (gmpy2 ``powmod_base_list``), the same
    sample, interleaved with the step in chunks.
  * *committee member's exponentiation* (threshold decryption, the protocol's
    default): one holder's ``c^(2 Delta s_i) mod n^(s+1)`` with an exponent of
    the share's length for ``l = 30`` holders (``t = 10``), on a sample,
    extrapolated to a third of the ciphertexts (each of ``c = 3t`` members
    decrypts a third); this is the floor of ``partial_decrypt``, which adds a
    proof of about 1 % (benchmarks/results/threshold_paillier.md).
  * *bytes per parameter*: one client's serialized ciphertexts / ``dim``.

- **TenSEAL CKKS** (optional: ``pip install tenseal`` or the ``bench`` extra;
  without it the column is skipped with a message): polynomial modulus 8192,
  coefficient moduli 60-40-40-60 bits, scale 2^40, 4096 slots per ciphertext.
  Clients encrypt with the public context (asymmetric); *combine* is
  deserialization + ``add_`` per ciphertext, measured in full for
  ``--ckks-combine-clients`` clients (default 10) and extrapolated to 100
  (deserialization dominates), with the additions alone measured for all 100;
  *decrypt* is the secret-key holder's. CKKS is approximate: the error of the
  decrypted mean is recorded. Its floors are indicative lower bounds that
  TenSEAL's API lets one time (it does not expose SEAL's NTTs): encrypt and
  decrypt, one numpy complex FFT of 8192 points per ciphertext (the
  encoding's transform); combine, one numpy modular addition over the
  ciphertext's 2 x 3 x 8192 64-bit words.

Every figure is CPU seconds of this process (one thread), wall time in the
JSON; the machine is shared, so the load average before and after is
recorded. Results go to ``benchmarks/results/paillier_vs_ckks.json`` and ``.md``.

    .venv/bin/python benchmarks/bench_paillier_vs_ckks.py          # a few minutes
    .venv/bin/python benchmarks/bench_paillier_vs_ckks.py --quick  # a smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import operator
import os
import platform
import subprocess
import sys
import time
from itertools import repeat
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from secagg.encoding.fixed_point import FixedPoint
from secagg.encoding.packing import PackingLayout
from secagg.primitives import paillier as pl
from secagg.primitives.randomness import DeterministicRandom

RESULTS = Path(__file__).resolve().parent / "results"
S_VALUES = (1, 2, 3)
EXPONENT_BITS = 448  # the library's default short exponent at 2048 bits
WINDOW = 8


class Clock:
    """CPU and wall seconds of a block (accumulates)."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.wall = 0.0

    def __enter__(self) -> "Clock":
        self._c0, self._w0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu += time.process_time() - self._c0
        self.wall += time.perf_counter() - self._w0

    def as_dict(self, scale: float = 1.0) -> dict[str, float]:
        return {"cpu_s": self.cpu * scale, "wall_s": self.wall * scale}


def log(msg: str) -> None:
    print(msg, flush=True)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


# --------------------------------------------------------------------- Paillier / Damgard-Jurik

def one_plus_n_pow(m: mpz, n: mpz, s: int, modulus: mpz) -> mpz:
    """``(1 + n)^m mod n^(s+1) = sum_{k <= s} C(m, k) n^k``."""
    out, term, binom = mpz(1), mpz(1), mpz(1)
    for k in range(1, s + 1):
        binom = binom * (m - k + 1) // k
        term = term * n
        out += binom * term
    return out % modulus


def table_multiplications(exponents: list[int]) -> int:
    """Multiplications the fixed-base table walk makes: one per nonzero digit."""
    mask = (1 << WINDOW) - 1
    count = 0
    for a in exponents:
        while a:
            count += 1 if a & mask else 0
            a >>= WINDOW
    return count


def time_mulmod(modulus: mpz, count: int, rng: DeterministicRandom) -> None:
    """``count`` products ``a * b % modulus`` of full-size operands in a chain
    (the caller times the call; drawing the operands is a small part of it)."""
    size = (int(modulus).bit_length() + 7) // 8
    acc = mpz(int.from_bytes(rng.bytes(size), "big")) % modulus
    b = mpz(int.from_bytes(rng.bytes(size), "big")) % modulus
    for _ in range(count):
        acc = acc * b % modulus


def bench_dj(s: int, pk: pl.PublicKey, sk: pl.PrivateKey, q: np.ndarray, args: argparse.Namespace,
             enc: FixedPoint) -> dict[str, Any]:
    n = mpz(pk.n)
    ns, modulus = n ** s, n ** (s + 1)
    layout = PackingLayout.derive(enc, args.clients, s * pk.key_bits)
    n_ct = layout.ciphertexts(q.size)
    ct_bytes = (int(modulus).bit_length() + 7) // 8
    rng = DeterministicRandom(f"bench/paillier-vs-ckks/s{s}")
    log(f"  s = {s}: {layout.slots} slots of {layout.slot_bits} bits per ciphertext, {n_ct:,} ciphertexts, "
        f"{ct_bytes} bytes each")
    out: dict[str, Any] = {"s": s, "slots": layout.slots, "slot_bits": layout.slot_bits, "ciphertexts": n_ct,
                           "ciphertext_bytes": ct_bytes, "plaintext_bits": s * pk.key_bits - 1}

    # encrypt per client: table (once per key), pool, quantized vector -> bytes
    h_s = mpz(pl.djn_base(pk))  # h^n mod n^2 (s = 1)
    if s > 1:  # h^(n^s) mod n^(s+1): the same h = -x^2, recovered as the base of the library's h_s
        h = _djn_h(pk)
        h_s = gmpy2.powmod(h, ns, modulus)
    table_clock = Clock()
    with table_clock:
        table = pl._FixedBase(int(h_s), modulus, EXPONENT_BITS, WINDOW)
    exps = pl.draw_randomizer_inputs(pk, pl.short_exponent(pk.key_bits, EXPONENT_BITS), n_ct, rng)
    # the pool in 10 chunks, each after a chunk of the floor's multiplications
    # (so a change of the machine's load reaches both alike)
    enc_clock, mul_clock = Clock(), Clock()
    step = math.ceil(n_ct / 10)
    mul_count = 0
    rhos: list[mpz] = []
    for lo in range(0, n_ct, step):
        with mul_clock:
            time_mulmod(modulus, 300, rng)
        mul_count += 300
        with enc_clock:
            rhos.extend(table.pow(a) for a in exps[lo:lo + step])
    with enc_clock:
        packed = layout.pack(q)
        cts = [one_plus_n_pow(mpz(m), n, s, modulus) * rho % modulus for m, rho in zip(packed, rhos)]
        blob = b"".join(c.to_bytes(ct_bytes, "big") for c in cts)
    del rhos
    mul_s = mul_clock.cpu / mul_count
    n_mul = table_multiplications(exps) + n_ct  # the table walk and the message multiplication
    out["encrypt"] = {**enc_clock.as_dict(), "table_build": table_clock.as_dict(),
                      "floor_cpu_s": mul_s * n_mul, "floor_multiplications": n_mul, "mulmod_s": mul_s}
    out["bytes_per_parameter"] = len(blob) / args.dim
    log(f"    encrypt {enc_clock.cpu:.2f} s (floor {mul_s * n_mul:.2f} s; table {table_clock.cpu:.2f} s once), "
        f"{out['bytes_per_parameter']:.3f} bytes/parameter")
    del table

    # combine: every client's bytes parsed and multiplied in (client 1's stand for all)
    # client by client, alternating with the floor (the multiplications alone)
    comb_clock, floor_clock = Clock(), Clock()
    with comb_clock:
        acc = [mpz.from_bytes(blob[i:i + ct_bytes], "big") for i in range(0, len(blob), ct_bytes)]
    acc2 = list(cts)
    for _ in range(args.clients - 1):
        with comb_clock:
            nxt = [mpz.from_bytes(blob[i:i + ct_bytes], "big") for i in range(0, len(blob), ct_bytes)]
            acc = list(map(operator.mod, map(operator.mul, acc, nxt), repeat(modulus)))
        with floor_clock:
            acc2 = list(map(operator.mod, map(operator.mul, acc2, cts), repeat(modulus)))
    assert acc2 == acc
    del acc2
    out["combine"] = {**comb_clock.as_dict(), "floor_cpu_s": floor_clock.cpu, "floor_wall_s": floor_clock.wall}
    log(f"    combine of {args.clients}: {comb_clock.cpu:.2f} s (floor {floor_clock.cpu:.2f} s)")

    # decrypt (key holder, CRT, one thread): a sample, the floor interleaved chunk by chunk
    k = min(args.decrypt_sample, n_ct)
    sample = acc[:k]
    p, q_ = sk._p, sk._q
    halves = ((p - 1, p ** (s + 1)), (q_ - 1, q_ ** (s + 1)))
    sk.decrypt_many(sample[:2], s=s)  # the per-s constants, once per key (not timed)
    dec_clock, dec_floor = Clock(), Clock()
    plain: list[int] = []
    chunk = max(1, k // 10)
    for lo in range(0, k, chunk):
        part = sample[lo:lo + chunk]
        with dec_floor:
            for e, m in halves:
                gmpy2.powmod_base_list(part, e, m)
        with dec_clock:
            plain.extend(sk.decrypt_many(part, s=s))
    length = min(k * layout.slots, q.size)
    with dec_clock:
        sums = layout.unpack(plain, length, args.clients)
    assert np.array_equal(sums, args.clients * q[:length]), f"s = {s}: wrong decryption"
    scale = n_ct / k
    out["decrypt"] = {**dec_clock.as_dict(scale), "floor_cpu_s": dec_floor.cpu * scale,
                      "floor_wall_s": dec_floor.wall * scale, "sample": k, "extrapolated": k < n_ct}
    log(f"    decrypt {dec_clock.cpu * scale:.2f} s (floor {dec_floor.cpu * scale:.2f} s)"
        + (f", {k} of {n_ct} ciphertexts, extrapolated" if k < n_ct else ""))

    # one committee member's exponentiation c^(2 Delta s_i) (t = 10, l = 30)
    l_holders = 30
    # s_i < n^s m with m = p'q' (about n / 4), times 2 Delta
    exp_bits = int(ns * (n // 4)).bit_length() + int(mpz(math.factorial(l_holders))).bit_length() + 1
    exponent = mpz(int.from_bytes(rng.bytes((exp_bits + 7) // 8), "big")) | (mpz(1) << (exp_bits - 1))
    exponent &= (mpz(1) << exp_bits) - 1
    km = min(args.member_sample, n_ct)
    member_clock = Clock()
    with member_clock:
        gmpy2.powmod_base_list(acc[:km], exponent, modulus)
    third = math.ceil(n_ct / 3)
    out["member_exponentiation"] = {**member_clock.as_dict(third / km), "sample": km, "ciphertexts": third,
                                    "exponent_bits": exp_bits, "holders": l_holders}
    log(f"    one committee member (a third, {third:,} ciphertexts): {member_clock.cpu * third / km:.2f} s "
        f"({exp_bits}-bit exponent, {km} sampled)")
    return out


def _djn_h(pk: pl.PublicKey) -> mpz:
    """``h = -x^2 mod n``: the element whose ``n``-th power is the library's
    public DJN base (the same derivation from ``n``; checked against it)."""
    import hashlib
    n = pk.n
    counter = 0
    while True:
        seed = pl._DJN_TAG + pk.to_bytes() + counter.to_bytes(4, "big")
        x = int.from_bytes(hashlib.shake_256(seed).digest(pk.modulus_bytes + 16), "big") % n
        counter += 1
        if x > 1 and math.gcd(x, n) == 1:
            break
    h = mpz((-x * x) % n)
    if gmpy2.powmod(h, n, pk.n_square) != pl.djn_base(pk):
        raise SystemExit("the library's DJN base is no longer (-x^2)^n as derived here")
    return h


# --------------------------------------------------------------------- CKKS

def bench_ckks(x: np.ndarray, args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        import tenseal as ts
    except ImportError:
        log("  TenSEAL is not installed: the CKKS column is skipped "
            "(`.venv/bin/pip install tenseal`, or the `bench` extra: pip install -e '.[bench]')")
        return None
    poly, moduli, scale_bits = 8192, [60, 40, 40, 60], 40
    slots = poly // 2
    keygen = Clock()
    with keygen:
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly, coeff_mod_bit_sizes=moduli)
        ctx.global_scale = 2.0 ** scale_bits
        public = ctx.copy()
        public.make_context_public()
    chunks = [x[i:i + slots] for i in range(0, x.size, slots)]
    n_ct = len(chunks)
    log(f"  CKKS: N = {poly}, moduli {moduli}, scale 2^{scale_bits}, {slots} slots, {n_ct} ciphertexts")

    enc_clock = Clock()
    with enc_clock:  # the client: encrypt with the public context, serialize
        blobs = [ts.ckks_vector(public, c).serialize() for c in chunks]
    total_bytes = sum(len(b) for b in blobs)
    fft_in = np.exp(1j * np.arange(poly))
    enc_floor = Clock()
    with enc_floor:
        for _ in range(n_ct):
            np.fft.fft(fft_in)
    log(f"    encrypt {enc_clock.cpu:.2f} s (indicative floor {enc_floor.cpu:.3f} s), "
        f"{total_bytes / x.size:.2f} bytes/parameter")

    # combine: deserialize + add, in full for a few clients; the additions alone for all
    kc = min(args.ckks_combine_clients, args.clients)
    comb = Clock()
    with comb:
        acc = [ts.ckks_vector_from(public, b) for b in blobs]
        for _ in range(kc - 1):
            for a, b in zip(acc, blobs):
                a.add_(ts.ckks_vector_from(public, b))
    per_client = comb.cpu / kc
    one = [ts.ckks_vector_from(public, b) for b in blobs]
    adds = Clock()
    with adds:
        for _ in range(args.clients - kc):
            for a, b1 in zip(acc, one):
                a.add_(b1)
    words = 2 * (len(moduli) - 1) * poly
    prime = np.uint64((1 << 40) - 87)  # any 40-bit value below 2^63 serves the timing
    wa = np.arange(words, dtype=np.uint64) % prime
    wb = wa[::-1].copy()
    add_floor = Clock()
    with add_floor:
        for _ in range(n_ct * (args.clients - 1)):
            s_ = wa + wb
            s_ -= prime * (s_ >= prime)
    combine_cpu = per_client * args.clients
    log(f"    combine of {args.clients}: {combine_cpu:.2f} s ({kc} clients deserialized and added in full, "
        f"extrapolated; the {args.clients - kc} others' additions alone {adds.cpu:.2f} s; "
        f"indicative floor {add_floor.cpu:.2f} s)")

    agg_bytes = [a.serialize() for a in acc]
    dec = Clock()
    with dec:
        plain = np.concatenate([np.array(ts.ckks_vector_from(ctx, b).decrypt()) for b in agg_bytes])[: x.size]
    dec_floor = Clock()
    with dec_floor:
        for _ in range(n_ct):
            np.fft.ifft(fft_in)
    err = float(np.max(np.abs(plain / args.clients - x)))
    log(f"    decrypt {dec.cpu:.2f} s (indicative floor {dec_floor.cpu:.3f} s); max error of the mean {err:.2e}")
    return {"poly_modulus_degree": poly, "coeff_mod_bit_sizes": moduli, "scale_bits": scale_bits,
            "slots": slots, "ciphertexts": n_ct, "ciphertext_bytes_mean": total_bytes / n_ct,
            "bytes_per_parameter": total_bytes / x.size, "keygen": keygen.as_dict(),
            "encrypt": {**enc_clock.as_dict(), "floor_cpu_s": enc_floor.cpu},
            "combine": {"cpu_s": combine_cpu, "wall_s": comb.wall / kc * args.clients,
                        "clients_measured_in_full": kc, "extrapolated": kc < args.clients,
                        "additions_only_other_clients_cpu_s": adds.cpu, "floor_cpu_s": add_floor.cpu},
            "decrypt": {**dec.as_dict(), "floor_cpu_s": dec_floor.cpu},
            "max_abs_error_of_mean": err, "tenseal": getattr(ts, "__version__", "?")}


# --------------------------------------------------------------------- report

def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def verdict(r: float) -> str:
    if r < 0.9:
        return f"lowers it ({r:.2f}x the s = 1 cost per parameter)"
    if r > 1.1:
        return f"raises it ({r:.2f}x)"
    return f"leaves it about the same ({r:.2f}x)"


def to_markdown(res: dict[str, Any]) -> str:
    cfg = res["config"]
    d = cfg["dim"]
    dj = {r["s"]: r for r in res["damgard_jurik"]}
    ck = res["ckks"]
    cols = [f"s = {s}" for s in dj] + (["CKKS"] if ck else [])
    lines = [
        f"# Paillier, Damgard-Jurik s = 2, 3 and TenSEAL CKKS side by side ({d:,} parameters, "
        f"{cfg['clients']} clients)",
        "",
        f"Generated by `{res['command']}` on {res['date']} (library {res['library']}).",
        "",
        f"Machine: {res['machine']['cpu']} ({res['machine']['cpu_count']} CPUs, shared), Python "
        f"{res['machine']['python']}, gmpy2 {res['machine']['gmpy2']}"
        + (f", TenSEAL {ck['tenseal']}" if ck else "") + f". Load average before {res['load_before']}, after "
        f"{res['load_after']}; the run took {res['wall_s']:.0f} s wall, {res['cpu_s']:.0f} s CPU.",
        "",
        "Every figure is CPU seconds of this one process on one thread (wall time in the JSON), with its "
        "floor measured in the same run beside it (step / floor). Encryption and combine are measured on the "
        "full size; " + ("decryption on a sample of each s's aggregate, extrapolated; " if any(
            r["decrypt"]["extrapolated"] for r in dj.values()) else "decryption in full; ")
        + "the committee member's exponentiation on a sample, extrapolated.",
        "",
        "| | " + " | ".join(cols) + " |",
        "| --- | " + " | ".join("---:" for _ in cols) + " |",
    ]

    def row(name: str, cells: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    ckc = [ck] if ck else []
    row("values per ciphertext", [str(r["slots"]) for r in dj.values()] + [str(c["slots"]) for c in ckc])
    row("ciphertexts per client", [f"{r['ciphertexts']:,}" for r in dj.values()] + [str(c["ciphertexts"]) for c in ckc])
    row("bytes per ciphertext", [str(r["ciphertext_bytes"]) for r in dj.values()]
        + [f"{c['ciphertext_bytes_mean']:,.0f} (serialized, mean)" for c in ckc])
    row("**bytes per parameter**", [f"**{r['bytes_per_parameter']:.3f}**" for r in dj.values()]
        + [f"**{c['bytes_per_parameter']:.2f}**" for c in ckc])

    def step(name: str, key: str, ck_note: str = "") -> None:
        cells = [f"**{r[key]['cpu_s']:.2f} s** (floor {r[key]['floor_cpu_s']:.2f} s, "
                 f"{ratio(r[key]['cpu_s'], r[key]['floor_cpu_s'])})" for r in dj.values()]
        cells += [f"**{c[key]['cpu_s']:.2f} s** (indicative floor {c[key]['floor_cpu_s']:.3f} s{ck_note})"
                  for c in ckc]
        row(name, cells)

    step("encrypt per client (offline pool + online)", "encrypt")
    step(f"combine of {cfg['clients']} clients (parse + add)", "combine",
         f"; {ck['combine']['clients_measured_in_full']} clients in full, extrapolated" if ck
         and ck["combine"]["extrapolated"] else "")
    step("decrypt the aggregate (key holder, one thread)", "decrypt")
    row("one committee member's exponentiations (t = 10, a third of the ciphertexts)",
        [f"{r['member_exponentiation']['cpu_s']:.2f} s ({r['member_exponentiation']['exponent_bits']}-bit "
         "exponent)" for r in dj.values()] + ["n/a (no threshold CKKS here)" for _ in ckc])
    row("encrypt per parameter", [f"{r['encrypt']['cpu_s'] / d * 1e6:.2f} us" for r in dj.values()]
        + [f"{c['encrypt']['cpu_s'] / d * 1e6:.2f} us" for c in ckc])
    row("combine per parameter", [f"{r['combine']['cpu_s'] / d * 1e6:.2f} us" for r in dj.values()]
        + [f"{c['combine']['cpu_s'] / d * 1e6:.2f} us" for c in ckc])
    row("decrypt per parameter", [f"{r['decrypt']['cpu_s'] / d * 1e6:.2f} us" for r in dj.values()]
        + [f"{c['decrypt']['cpu_s'] / d * 1e6:.2f} us" for c in ckc])
    row("one-time setup", [f"table {r['encrypt']['table_build']['cpu_s']:.2f} s" for r in dj.values()]
        + [f"keys {c['keygen']['cpu_s']:.2f} s" for c in ckc])
    row("result", ["exact (fixed point, 2^-14)" for _ in dj]
        + [f"approximate (max error of the mean {c['max_abs_error_of_mean']:.1e})" for c in ckc])

    base = dj[1]
    lines += ["", "## Against s = 1, per parameter", "",
              "| | " + " | ".join(f"s = {s}" for s in dj if s > 1) + (" | CKKS" if ck else "") + " |",
              "| --- | " + " | ".join("---:" for s in dj if s > 1) + (" | ---:" if ck else "") + " |"]
    for name, key in (("encrypt per client", "encrypt"), ("combine", "combine"), ("decrypt (key holder)", "decrypt"),
                      ("committee member", "member_exponentiation")):
        cells = [ratio(dj[s][key]["cpu_s"], base[key]["cpu_s"]) for s in dj if s > 1]
        if ck:
            cells.append(ratio(ck[key]["cpu_s"], base[key]["cpu_s"]) if key in ck else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [ratio(dj[s]["bytes_per_parameter"], base["bytes_per_parameter"]) for s in dj if s > 1]
    if ck:
        cells.append(ratio(ck["bytes_per_parameter"], base["bytes_per_parameter"]))
    lines.append("| bytes | " + " | ".join(cells) + " |")

    lines += ["", "## Answer", ""]
    for s in (x for x in dj if x > 1):
        r = dj[s]
        lines.append(
            f"- **s = {s}** ({r['slots']} values per ciphertext, {r['slots'] / base['slots']:.0f}x the packing): "
            f"per parameter it {verdict(r['encrypt']['cpu_s'] / base['encrypt']['cpu_s'])} for the client's "
            f"encryption, {verdict(r['combine']['cpu_s'] / base['combine']['cpu_s'])} for the server's combine, "
            f"{verdict(r['decrypt']['cpu_s'] / base['decrypt']['cpu_s'])} for the key holder's decryption, "
            f"{verdict(r['member_exponentiation']['cpu_s'] / base['member_exponentiation']['cpu_s'])} for a "
            f"committee member's decryption, and "
            f"{verdict(r['bytes_per_parameter'] / base['bytes_per_parameter'])} in bytes.")
    biggest = {s: max(("encrypt", "combine", "decrypt"), key=lambda k: r[k]["cpu_s"]) for s, r in dj.items()}
    lines.append("- The largest step of each Paillier column: " + ", ".join(
        f"s = {s}: {k}" for s, k in biggest.items()) + ".")
    best_dec = min(dj.values(), key=lambda r: r["decrypt"]["cpu_s"])
    lines.append(
        f"- The cheapest key-holder decryption of the {d:,} parameters is s = {best_dec['s']}'s ("
        + ", ".join(f"s = {s}: {r['decrypt']['cpu_s']:.2f} s" for s, r in dj.items()) + "). A committee member's "
        "exponent grows with s (about (s + 1) log2 n + log2 l! bits against a plaintext of s log2 n bits), so "
        "the protocol's default, threshold decryption, costs "
        + ", ".join(f"{ratio(dj[s]['member_exponentiation']['cpu_s'], base['member_exponentiation']['cpu_s'])} "
                    f"at s = {s}" for s in dj if s > 1) + " per parameter against s = 1.")
    if ck:
        lines.append(
            f"- CKKS: {ratio(ck['encrypt']['cpu_s'], base['encrypt']['cpu_s'])} Paillier's encryption, "
            f"{ratio(ck['combine']['cpu_s'], base['combine']['cpu_s'])} its combine, "
            f"{ratio(ck['decrypt']['cpu_s'], base['decrypt']['cpu_s'])} its decryption and "
            f"{ratio(ck['bytes_per_parameter'], base['bytes_per_parameter'])} its bytes per parameter (s = 1): "
            "far cheaper to compute, larger on the wire, approximate, and here with one secret key (no "
            "threshold decryption, no dropout handling of its own).")
    else:
        lines.append("- CKKS: not measured (TenSEAL is not installed).")
    lines.append(
        f"- How firm the ratios are: the columns run one after another, and this run's load average went from "
        f"{res['load_before'][0]} to {res['load_after'][0]} on {res['machine']['cpu_count']} CPUs; CPU seconds "
        "per operation grow with the load (shared caches and cores), so ratios between columns within about "
        "10 % (read as about the same above) are not a difference this run can show. Each step's multiple of its floor is measured "
        "interleaved with it and holds.")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"python": sys.version.split()[0], "numpy": np.__version__, "gmpy2": gmpy2.version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "platform": platform.platform()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--decrypt-sample", type=int, default=1500, help="aggregate ciphertexts decrypted per s")
    ap.add_argument("--member-sample", type=int, default=100, help="ciphertexts of the committee member's exponent")
    ap.add_argument("--ckks-combine-clients", type=int, default=10,
                    help="clients whose CKKS ciphertexts are deserialized and added in full")
    ap.add_argument("--quick", action="store_true", help="a small smoke run (writes nothing unless --out)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown-from", type=Path, default=None,
                    help="rewrite the .md beside this recorded JSON from it, measuring nothing")
    args = ap.parse_args()
    if args.quick:
        args.dim, args.clients, args.decrypt_sample, args.member_sample = 20_000, 10, 40, 10
        args.ckks_combine_clients = 3
    if args.markdown_from is not None:  # the report again from a recorded JSON (no measurement)
        res = json.loads(args.markdown_from.read_text())
        md = to_markdown(res)
        (args.markdown_from.with_suffix(".md")).write_text(md)
        print(md)
        return
    out_dir = args.out if args.out is not None else (None if args.quick else RESULTS)
    t0, c0 = time.perf_counter(), time.process_time()
    load_before = load_average()
    log(f"Paillier / Damgard-Jurik / CKKS: {args.dim:,} parameters, {args.clients} clients, "
        f"{args.key_bits}-bit modulus")
    pk, sk = pl.generate_keypair(args.key_bits, DeterministicRandom("bench/paillier-vs-ckks/key"))
    enc = FixedPoint(clip=1.0, frac_bits=14, max_weight=1.0)
    x = np.random.default_rng(1).normal(0, 0.3, args.dim)
    rng = DeterministicRandom("bench/paillier-vs-ckks/quantize")
    q = np.empty(args.dim + 1, dtype=np.int64)
    q[:-1] = enc.quantize(x, 1.0, rng).values
    q[-1] = enc.quantize_weight(1.0, rng)
    dj = []
    for s in S_VALUES:
        dj.append(bench_dj(s, pk, sk, q, args, enc))
    log("TenSEAL CKKS ...")
    ck = bench_ckks(x, args)
    command = ".venv/bin/python benchmarks/bench_paillier_vs_ckks.py" + (
        " " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    notes = [
        f"Same key (n of {args.key_bits} bits) for every s; the plaintext of s holds s * {args.key_bits} - 1 "
        f"bits, the slots are the protocol's {dj[0]['slot_bits']}-bit slots (clip 1, 14 fractional bits, a weight "
        f"slot, {args.clients} clients), so s = 2 and 3 pack about 2x and 3x the values of s = 1 per ciphertext.",
        "Encryption for s > 1 is this benchmark's generalisation of the library's DJN short-exponent client "
        "(base h^(n^s), 448-bit exponent, the library's fixed-base table); the library's client encrypts s = 1 "
        "only. The one-time table build is per key and reported apart.",
        "Combine: client 1's ciphertext bytes stand for every client's (full-size elements; the parse is "
        "done per client); the floor is the modular multiplications alone. The protocol's server also checks "
        "each ciphertext is a unit (benchmarks/results/paillier.md), left out here for every s alike.",
        "Decryption floor: gmpy2's powmod_base_list of c^(p-1) mod p^(s+1) and c^(q-1) mod q^(s+1) on the "
        "same sample, interleaved chunk by chunk with the step; the step adds the discrete logarithm, "
        "recombination and unpacking. One and two threads at s = 1: benchmarks/results/paillier.md.",
        "Committee member: gmpy2's powmod_base_list with an exponent of the length of 2 Delta s_i for l = 30 "
        "holders (t = 10, c = 3t, each member decrypts a third); partial_decrypt adds a batched proof of "
        "about 1 %.",
        "CKKS floors are indicative lower bounds (TenSEAL does not expose SEAL's NTTs): a numpy FFT of 8192 "
        "complex points per ciphertext for encrypt and decrypt, a numpy modular addition over 2 x 3 x 8192 "
        "words per ciphertext and client for combine.",
    ]
    res = {"command": command,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
           "library": git_head(),
           "config": {"dim": args.dim, "clients": args.clients, "key_bits": args.key_bits,
                      "decrypt_sample": args.decrypt_sample, "member_sample": args.member_sample,
                      "ckks_combine_clients": args.ckks_combine_clients, "short_exponent_bits": EXPONENT_BITS},
           "damgard_jurik": dj, "ckks": ck, "notes": notes, "machine": machine_info(),
           "load_before": load_before, "load_after": load_average(),
           "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    md = to_markdown(res)
    print()
    print(md)
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "paillier_vs_ckks.json").write_text(json.dumps(res, indent=2) + "\n")
    (out_dir / "paillier_vs_ckks.md").write_text(md)
    print(f"wrote {out_dir / 'paillier_vs_ckks.json'} and {out_dir / 'paillier_vs_ckks.md'}")


if __name__ == "__main__":
    main()
