"""The ``secagg`` command line: ``simulate`` (one secure-aggregation round
in-process), ``train`` and ``demo`` (federated training on real medical data),
``keys`` (node signature keys for the malicious-server mode on Flower, and
``keys deal-committee`` for the Paillier decryption committee).

Every bad input ends in one line: click's usage error (exit code 2) or an
``Error: ...`` line (exit code 1), checked before anything is allocated or
written; nothing is created outside the paths the user named."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from . import __version__
from .aggregation import RULES, Rule, client_weight, reference_aggregate
from .encoding.fixed_point import FixedPoint
from .errors import ParameterError, ProtocolAborted
from .simulation import PROTOCOLS, simulate
from .training.cli import check_dp_usage, dp_options
from .transports.inprocess import dropout_count


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="secagg")
@click.option("--audit-log", type=click.Path(dir_okay=False), default=None,
              help="Append the value-free audit record of each round (JSON lines) to this file.")
def main(audit_log: str | None) -> None:
    """Secure aggregation for federated learning: SecAgg, SecAgg+ and packed Paillier."""
    if audit_log:
        try:
            handler = logging.FileHandler(audit_log)
        except OSError as exc:
            raise click.BadParameter(f"cannot open {audit_log} for appending: {exc.strerror}",
                                     param_hint="'--audit-log'") from None
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger("secagg.audit")
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def _synthetic(clients: int, dim: int, rule: str, seed: int, scale: float) -> tuple[list[np.ndarray], list[float] | None]:
    gen = np.random.default_rng(seed)  # synthetic data only; no protocol randomness comes from here
    updates = [gen.normal(0.0, scale, dim) for _ in range(clients)]
    r = Rule(rule)
    if not r.uses_weights:
        return updates, None
    examples = gen.integers(10, 1000, clients)
    quality = gen.uniform(0.5, 1.0, clients)
    if rule == "weighted":
        ws = [client_weight(r, weight=float(e)) for e in examples]
    else:
        ws = [client_weight(r, examples=float(e), quality=float(q)) for e, q in zip(examples, quality)]
    return updates, ws


def _available_memory() -> int | None:
    """Bytes this process can still allocate: the kernel's MemAvailable (or
    free pages), capped by a cgroup memory limit; None where unknown."""
    avail: int | None = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


#: measured peak memory of `secagg simulate`: about 4 float64 copies of all
#: updates (the updates, their encodings, masks, the server's sums), 8 for
#: Paillier (packed ciphertexts), plus about 500 bytes per pair of clients for
#: the masking protocols (per-client parameters, keys and shares)
_COPIES = {"paillier": 8, "plaintext": 4, "secagg": 4, "secagg+": 4}
_PAIR_BYTES = 500
_BASE_BYTES = 64 << 20


def _memory_needed(protocol: str, clients: int, dim: int) -> int:
    pairs = clients * clients if protocol in ("secagg", "secagg+") else 0
    return _BASE_BYTES + clients * dim * 8 * _COPIES[protocol] + pairs * _PAIR_BYTES


def _size(b: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:,.0f} {unit}" if unit == "bytes" else f"{b:,.1f} {unit}"
        b /= 1024
    return f"{b:.1f} PiB"  # pragma: no cover


def _check_memory(protocol: str, clients: int, dim: int) -> None:
    need = _memory_needed(protocol, clients, dim)
    avail = _available_memory()
    if avail is not None and need > avail:
        raise click.UsageError(
            f"{clients} clients x {dim:,} entries needs about {_size(need)} of memory for {protocol} "
            f"(updates, encodings and masks: {_COPIES[protocol]} x {clients} x {dim:,} x 8 bytes"
            + (", plus the per-pair keys and shares" if protocol in ("secagg", "secagg+") else "")
            + f"); only {_size(avail)} is available: lower --clients or --dim")


def _dropout_error(protocol: str, clients: int, dropout: float, msg: str) -> str:
    """A protocol's dropout complaint, in terms of the user's --dropout: the
    count it rounds to and the tolerance the parameters are derived for."""
    k = dropout_count(clients, dropout)
    head = f"--dropout {dropout:g} drops {k} of {clients} clients (rounded half up)"
    if protocol == "secagg+" and k < 0.1 * clients:
        head += ", but secagg+ derives its threshold for a dropout tolerance of at least 10 %"
    elif protocol == "secagg" and k > 0.49 * clients:
        head += "; secagg derives its threshold for a dropout tolerance of at most 49 %"
    return f"{head}: {msg}"


def _not_nan(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if math.isnan(value):
        raise click.BadParameter("must be a number, got nan")
    return value


def _finite_positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a finite number > 0, got {value}")
    return value


@main.command("simulate")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="secagg+", show_default=True)
@click.option("--clients", "-n", type=click.IntRange(2, None), default=100, show_default=True)
@click.option("--dim", "-d", type=click.IntRange(1, None), default=10_000, show_default=True,
              help="Entries per update.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              callback=_not_nan,
              help="Fraction of clients that vanish, spread over the protocol's stages.")
@click.option("--rule", type=click.Choice(RULES), default="mean", show_default=True)
@click.option("--seed", type=click.IntRange(0, None), default=0, show_default=True,
              help="Seed of the whole run (reproducible).")
@click.option("--threshold", type=click.IntRange(1, None), default=None,
              help="Shamir threshold; Paillier: the minimum of submitting clients (default: derived, validated).")
@click.option("--degree", type=click.IntRange(1, None), default=None,
              help="Neighbours per client for secagg+ (default: derived).")
@click.option("--malicious-server", is_flag=True,
              help="Against a dishonest server: signed keys and the consistency-check round (masking); signed "
                   "submissions whose product the decryption committee checks (Paillier).")
@click.option("--clip", type=float, default=None, callback=_finite_positive,
              help="Clip range of update entries [default: 1.0].")
@click.option("--frac-bits", type=int, default=None,
              help="Fixed-point fractional bits [default: 16; Paillier: sized to its packed slots].")
@click.option("--key-bits", type=click.Choice(["1024", "2048", "3072"]), default="2048", show_default=True,
              help="Paillier modulus size.")
@click.option("--workers", type=click.IntRange(1, max(1, os.cpu_count() or 1)), default=1, show_default=True,
              help="Processes for Paillier precomputation (at most the CPUs of this machine).")
@click.option("--randomizer", type=click.Choice(["standard", "djn", "djn-short"]), default=None,
              help="Paillier obfuscator: r^n [default], DJN base with a full-length exponent, or DJN short "
                   "exponent (protocols/paillier/SPEC.md section 6).")
@click.option("--short-exponent", is_flag=True, help="Paillier: same as --randomizer djn-short.")
@click.option("--decryption", type=click.Choice(["committee", "key_holder"]), default="committee", show_default=True,
              help="Paillier: who decrypts the aggregate: a committee of the clients, any majority of them "
                   "(nobody holds the key), or one key holder (protocols/paillier/SPEC.md section 8).")
@click.option("--key-primes", type=click.Choice(["2", "3"]), default="2", show_default=True,
              help="Paillier with --decryption key_holder: primes of the key holder's modulus; 3 (opt-in) about "
                   "halves its decryption time (protocols/paillier/SPEC.md section 3.4).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on for large runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@dp_options
def simulate_command(protocol: str, clients: int, dim: int, dropout: float, rule: str, seed: int,
                     threshold: int | None, degree: int | None, malicious_server: bool, clip: float | None,
                     frac_bits: int | None,
                     key_bits: str, workers: int, randomizer: str | None, short_exponent: bool, decryption: str,
                     key_primes: str, progress: bool | None, as_json: bool, dp_epsilon: float | None, dp_delta: float,
                     dp_mechanism: str, dp_clip: float, dp_bits: int | None, dp_adaptive_clip: bool) -> None:
    """Run one secure-aggregation round in-process on synthetic updates and
    report its error against the plaintext aggregate, bytes and times.
    With --dp-epsilon the round carries distributed differential privacy (its
    error is then the noise)."""
    ctx = click.get_current_context()
    check_dp_usage({"protocol": protocol, "dp_epsilon": dp_epsilon})
    dp = None
    if dp_epsilon is not None:
        if Rule(rule).uses_weights:
            raise click.UsageError(f"a distributed-DP round is unweighted: use --rule mean or sum, not {rule}")
        for name in ("clip", "frac_bits"):
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name.replace('_', '-')} sets the fixed-point encoding, which a DP round "
                                       "replaces by its own (use --dp-clip and --dp-bits)")
        from .dp.plan import DEFAULT_BITS, DPConfig

        try:
            dp = DPConfig(epsilon=dp_epsilon, delta=dp_delta, mechanism=dp_mechanism, clip=dp_clip,
                          bits=DEFAULT_BITS if dp_bits is None else dp_bits, adaptive_clip=dp_adaptive_clip)
        except ParameterError as exc:
            raise click.ClickException(str(exc)) from None

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    for name in ("key_bits", "workers", "randomizer", "short_exponent", "decryption", "key_primes"):
        if protocol != "paillier" and given(name):
            raise click.UsageError(f"--{name.replace('_', '-')} applies to --protocol paillier only")
    if given("key_primes") and decryption != "key_holder":
        raise click.UsageError("--key-primes applies to --decryption key_holder only (the committee's key is the "
                               "product of two safe primes)")
    if degree is not None and protocol != "secagg+":
        raise click.UsageError(f"--degree applies to --protocol secagg+ only ({protocol} "
                               + ("uses the complete graph)" if protocol == "secagg" else "has no graph)"))
    if degree is not None and degree > clients - 1:
        raise click.UsageError(f"--degree {degree} exceeds the {clients - 1} other clients")
    if threshold is not None and protocol == "plaintext":
        raise click.UsageError("--threshold applies to secagg, secagg+ and paillier (plaintext has none)")
    if threshold is not None and threshold > clients:
        raise click.UsageError(f"--threshold {threshold} exceeds the {clients} clients")
    if malicious_server and protocol == "plaintext":
        raise click.UsageError("--malicious-server applies to secagg, secagg+ and paillier")
    if dropout_count(clients, dropout) >= clients:
        raise click.UsageError(f"--dropout {dropout:g} drops all {clients} clients ({dropout:g} x {clients} "
                               "rounded half up): no client would remain")
    _check_memory(protocol, clients, dim)
    updates, weights = _synthetic(clients, dim, rule, seed, scale=(clip or 1.0) / 4)
    max_weight = max(weights) if weights else 1.0
    if progress is None:
        progress = clients * dim >= 20_000_000 and not as_json
    try:
        enc: FixedPoint | None = FixedPoint(clip=clip or 1.0, frac_bits=16 if frac_bits is None else frac_bits,
                                            max_weight=float(max_weight))
        if protocol == "paillier" and clip is None and frac_bits is None or dp is not None:
            enc = None
        result = simulate(updates, None if dp is not None else weights, protocol=protocol, rule=rule,
                          dropouts=dropout or None, seed=seed,
                          encoding=enc, threshold=threshold, degree=degree, malicious_server=malicious_server,
                          key_bits=int(key_bits), workers=workers, short_exponent=short_exponent, progress=progress,
                          randomizer=randomizer, decryption=decryption, dp=dp, key_primes=int(key_primes))
    except ParameterError as exc:
        msg = str(exc)
        if dropout and "dropout" in msg or protocol == "secagg+" and "tolerate" in msg:
            msg = _dropout_error(protocol, clients, dropout, msg)
        raise click.ClickException(msg) from None
    except ProtocolAborted as exc:
        raise click.ClickException(str(exc)) from None
    except MemoryError:
        raise click.ClickException(f"out of memory for {clients} clients x {dim:,} entries") from None
    included = [updates[i - 1] for i in result.included]
    inc_w = [weights[i - 1] for i in result.included] if weights else None
    if dp is not None:  # the noiseless aggregate of the L2-clipped updates
        included = [x if np.linalg.norm(x) <= dp.clip else x * (dp.clip / np.linalg.norm(x)) for x in included]
        reference = reference_aggregate(rule, included)
    else:
        reference = reference_aggregate(rule, included, inc_w, clip=clip or 1.0)
    error = float(np.max(np.abs(result.aggregate - reference)))
    sent = np.array([result.bytes_sent[i] for i in result.included], dtype=float)
    recv = np.array([result.bytes_received[i] for i in result.included], dtype=float)
    summary: dict[str, Any] = {
        "protocol": result.protocol, "rule": result.rule, "clients": clients, "dim": dim,
        "included": len(result.included), "dropped": {str(k): v for k, v in sorted(result.dropped.items())},
        "max_abs_error_vs_plaintext": error,
        "bytes_sent_per_client": float(sent.mean()), "bytes_received_per_client": float(recv.mean()),
        "upload_vs_raw_float32": float(sent.mean() / (4 * dim)),
        "timings_s": {k: round(v, 6) for k, v in result.timings.items()},
        "params": dict(result.params), "session_id": result.session_id,
    }
    if result.dp is not None:
        summary["dp"] = result.dp.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(f"{result.protocol}: {len(result.included)}/{clients} clients included, rule={rule}, d={dim}")
    if result.dropped:
        by_stage: dict[str, int] = {}
        for s in result.dropped.values():
            by_stage[s] = by_stage.get(s, 0) + 1
        click.echo("dropped: " + ", ".join(f"{v} at {k}" for k, v in by_stage.items()))
    click.echo(f"max |aggregate - plaintext| = {error:.3g}"
               + (" (the DP noise, by design)" if result.dp is not None else ""))
    if result.dp is not None:
        r = result.dp
        click.echo(f"privacy: ({r.epsilon:.3g}, {r.delta:g})-DP for each client's update ({r.mechanism}, "
                   f"{r.survivors} clients added noise; noise std of the sum per coordinate "
                   f"{math.sqrt(r.noise_variance):.3g}, L2 clip {r.clip:g})")
    click.echo(f"bytes per client: sent {sent.mean():,.0f} ({sent.mean() / (4 * dim):.3f}x the raw float32 update),"
               f" received {recv.mean():,.0f}")
    click.echo("times (s):")
    for k, v in result.timings.items():
        click.echo(f"  {k:<32} {v:10.4f}")
    click.echo(f"session {result.session_id}")


@main.group("keys")
def keys_group() -> None:
    """Node keys on Flower: signature keys for the malicious-server mode, and
    the Paillier decryption committee's key files.

    Each node generates its key pair once; the operators collect the printed
    verification keys into one file (one hex key per line) and give it to
    every node. For secagg-protocol = "paillier", deal-committee shares a
    fresh key among the nodes (docs/flower.md)."""


@keys_group.command("generate")
@click.argument("path", type=click.Path(dir_okay=False))
def keys_generate(path: str) -> None:
    """Create a node's signing key file PATH (hex, mode 0600; never
    overwritten; its directory must exist) and print its verification key."""
    from .flower.keys import generate_node_key

    parent = Path(path).parent
    if not parent.is_dir():
        raise click.BadParameter(f"the directory {parent} does not exist", param_hint="'PATH'")
    try:
        public = generate_node_key(path)
    except FileExistsError:
        raise click.BadParameter(f"{path} exists; a key file is never overwritten", param_hint="'PATH'") from None
    except OSError as exc:
        raise click.BadParameter(f"cannot create {path}: {exc.strerror}", param_hint="'PATH'") from None
    click.echo(public.hex())


@keys_group.command("public")
@click.argument("path", type=click.Path(dir_okay=False))
def keys_public(path: str) -> None:
    """Print the verification key of the signing key file PATH."""
    from .flower.keys import load_signing_key, verification_key

    try:
        click.echo(verification_key(load_signing_key(path)).hex())
    except ParameterError as exc:
        raise click.ClickException(str(exc)) from None


@keys_group.command("deal-committee")
@click.option("--holders", type=click.IntRange(2, 1000), required=True,
              help="Committee members: holder ids 1..N, one share file each.")
@click.option("--threshold", type=click.IntRange(2, None), default=None,
              help="Members needed to decrypt (default: a majority, N // 2 + 1).")
@click.option("--key-bits", type=click.Choice(["1024", "2048", "3072", "4096"]), default="2048", show_default=True,
              help="Paillier modulus size (1024 for tests only; nodes refuse it unless secagg-min-key-bits allows).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Existing directory accessible by this user alone (chmod 700).")
def keys_deal_committee(holders: int, threshold: int | None, key_bits: str, out_dir: str) -> None:
    """Deal a Paillier decryption committee: write OUT/committee.key (public:
    every node and the server pin it) and OUT/share-<i>.key for holders
    1..N (secret, mode 0600: give each to one node, then delete it here).
    Existing files are never overwritten; this process keeps nothing."""
    from .flower.keys import deal_committee_files

    if threshold is not None and threshold > holders:
        raise click.BadParameter(f"{threshold} is more than the {holders} holders", param_hint="'--threshold'")
    try:
        committee, written = deal_committee_files(out_dir, holders, threshold, int(key_bits))
    except ParameterError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"committee: any {committee.threshold} of {len(committee.holders)} holders decrypt, "
               f"{committee.public_key.key_bits}-bit key")
    click.echo(f"key id {committee.key_id.hex()}")


@keys_group.command("tls")
@click.argument("out_dir", metavar="OUT", type=click.Path(file_okay=False))
@click.option("--nodes", type=click.IntRange(0, 10_000), required=True,
              help="SuperNodes to make authentication key pairs for (node-<i>.key / node-<i>.pub, i from 0).")
@click.option("--host", "hosts", multiple=True,
              help="A name or IP address the SuperLink's certificate is valid for (repeat; default: 127.0.0.1 and "
                   "localhost).")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="Validity of the CA and the SuperLink certificate.")
def keys_tls(out_dir: str, nodes: int, hosts: tuple[str, ...], days: int) -> None:
    """Credentials for a Flower deployment with TLS and SuperNode
    authentication (docs/flower.md): a CA, the SuperLink's certificate and
    key, and one authentication key pair per SuperNode, written to OUT
    (created with mode 0700 if missing; its parent must exist). Nothing is
    overwritten. Keep ca.key offline: it is only needed to sign another
    server certificate."""
    from .flower.tls import DEFAULT_HOSTS, write_deployment_credentials

    parent = Path(out_dir).absolute().parent
    if not parent.is_dir():
        raise click.BadParameter(f"the directory {parent} does not exist (only {Path(out_dir).name} is created)",
                                 param_hint="'OUT'")
    try:
        creds = write_deployment_credentials(out_dir, nodes, hosts or DEFAULT_HOSTS, days=days)
    except ParameterError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write to {out_dir}: {exc.strerror}") from None
    for path in (creds.ca_cert, creds.ca_key, creds.server_cert, creds.server_key, *creds.node_private_keys,
                 *creds.node_public_keys):
        click.echo(f"wrote {path}")


def _register_training() -> None:
    try:
        from .training.cli import demo_command, train_command
    except ImportError as exc:  # torch or scikit-learn missing
        msg = str(exc)

        @main.command("train", context_settings={"ignore_unknown_options": True})
        @click.argument("args", nargs=-1, type=click.UNPROCESSED)
        def train_missing(args: Any) -> None:
            """(needs the 'train' extra: pip install 'secagg[train]')"""
            raise click.ClickException(f"training needs torch and scikit-learn: {msg}")

        @main.command("demo")
        def demo_missing() -> None:
            """(needs the 'train' extra: pip install 'secagg[train]')"""
            raise click.ClickException(f"the demo needs torch and scikit-learn: {msg}")
        return
    main.add_command(train_command, "train")
    main.add_command(demo_command, "demo")


_register_training()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
