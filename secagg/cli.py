"""The ``secagg`` command line: ``simulate`` (one secure-aggregation round
in-process), ``train`` and ``demo`` (federated training on real medical data)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click
import numpy as np

from . import __version__
from .aggregation import RULES, Rule, client_weight, reference_aggregate
from .encoding.fixed_point import FixedPoint
from .errors import ParameterError, ProtocolAborted
from .simulation import PROTOCOLS, simulate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="secagg")
@click.option("--audit-log", type=click.Path(dir_okay=False), default=None,
              help="Append the value-free audit record of each round (JSON lines) to this file.")
def main(audit_log: str | None) -> None:
    """Secure aggregation for federated learning: SecAgg, SecAgg+ and packed Paillier."""
    if audit_log:
        handler = logging.FileHandler(audit_log)
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


@main.command("simulate")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="secagg+", show_default=True)
@click.option("--clients", "-n", type=click.IntRange(2, None), default=100, show_default=True)
@click.option("--dim", "-d", type=click.IntRange(1, None), default=10_000, show_default=True,
              help="Entries per update.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Fraction of clients that vanish, spread over the protocol's stages.")
@click.option("--rule", type=click.Choice(RULES), default="mean", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the whole run (reproducible).")
@click.option("--threshold", type=int, default=None, help="Shamir threshold (default: derived, validated).")
@click.option("--degree", type=int, default=None, help="Neighbours per client for secagg+ (default: derived).")
@click.option("--malicious-server", is_flag=True, help="Signed keys and the consistency-check round.")
@click.option("--clip", type=float, default=None, help="Clip range of update entries [default: 1.0].")
@click.option("--frac-bits", type=int, default=None,
              help="Fixed-point fractional bits [default: 16; Paillier: sized to its packed slots].")
@click.option("--key-bits", type=click.Choice(["1024", "2048", "3072"]), default="2048", show_default=True,
              help="Paillier modulus size.")
@click.option("--workers", type=click.IntRange(1, None), default=1, show_default=True,
              help="Processes for Paillier precomputation.")
@click.option("--randomizer", type=click.Choice(["standard", "djn", "djn-short"]), default=None,
              help="Paillier obfuscator: r^n [default], DJN base with a full-length exponent, or DJN short "
                   "exponent (protocols/paillier/SPEC.md section 6).")
@click.option("--short-exponent", is_flag=True, help="Paillier: same as --randomizer djn-short.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on for large runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def simulate_command(protocol: str, clients: int, dim: int, dropout: float, rule: str, seed: int,
                     threshold: int | None, degree: int | None, malicious_server: bool, clip: float | None,
                     frac_bits: int | None,
                     key_bits: str, workers: int, randomizer: str | None, short_exponent: bool, progress: bool | None,
                     as_json: bool) -> None:
    """Run one secure-aggregation round in-process on synthetic updates and
    report its error against the plaintext aggregate, bytes and times."""
    updates, weights = _synthetic(clients, dim, rule, seed, scale=(clip or 1.0) / 4)
    max_weight = max(weights) if weights else 1.0
    if progress is None:
        progress = clients * dim >= 20_000_000 and not as_json
    try:
        enc: FixedPoint | None = FixedPoint(clip=clip or 1.0, frac_bits=16 if frac_bits is None else frac_bits,
                                            max_weight=float(max_weight))
        if protocol == "paillier" and clip is None and frac_bits is None:
            enc = None
        result = simulate(updates, weights, protocol=protocol, rule=rule, dropouts=dropout or None, seed=seed,
                          encoding=enc, threshold=threshold, degree=degree, malicious_server=malicious_server,
                          key_bits=int(key_bits), workers=workers, short_exponent=short_exponent, progress=progress,
                          randomizer=randomizer)
    except (ParameterError, ProtocolAborted) as exc:
        raise click.ClickException(str(exc)) from None
    included = [updates[i - 1] for i in result.included]
    inc_w = [weights[i - 1] for i in result.included] if weights else None
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
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(f"{result.protocol}: {len(result.included)}/{clients} clients included, rule={rule}, d={dim}")
    if result.dropped:
        by_stage: dict[str, int] = {}
        for s in result.dropped.values():
            by_stage[s] = by_stage.get(s, 0) + 1
        click.echo("dropped: " + ", ".join(f"{v} at {k}" for k, v in by_stage.items()))
    click.echo(f"max |aggregate - plaintext| = {error:.3g}")
    click.echo(f"bytes per client: sent {sent.mean():,.0f} ({sent.mean() / (4 * dim):.3f}x the raw float32 update),"
               f" received {recv.mean():,.0f}")
    click.echo("times (s):")
    for k, v in result.timings.items():
        click.echo(f"  {k:<32} {v:10.4f}")
    click.echo(f"session {result.session_id}")


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
