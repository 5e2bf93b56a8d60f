"""PNG plot of a secure training run against the plaintext run of the same seed
(matplotlib, Agg backend: no display needed).

The two runs' accuracy curves lie on top of each other when the secure
aggregate matches the plaintext one, so the plot shows what tells them apart:
their difference per round, the secure aggregate's error against the plaintext
float aggregate, and the clients that dropped out of each round."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

__all__ = ["plot_comparison"]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def plot_comparison(path: str | Path, secure: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]] | None,
                    *, protocol: str, rule: str, title: str = "", note: str | None = None) -> Path:
    """Four panels per round: test accuracy of both runs; secure - plaintext
    (accuracy in percentage points, test loss); the aggregation error
    max |secure aggregate - plaintext float aggregate|; clients included and
    dropped (aborted rounds marked)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    has_dp = any(_finite(r.get("dp_epsilon_spent")) for r in secure)
    if has_dp:
        fig, ((ax_acc, ax_diff, ax_dp), (ax_err, ax_drop, ax_noise)) = plt.subplots(2, 3, figsize=(19, 8))
    else:
        fig, ((ax_acc, ax_diff), (ax_err, ax_drop)) = plt.subplots(2, 2, figsize=(13, 8))
    rounds = [r["round"] for r in secure]
    label = f"{protocol} ({rule})"

    # 1. test accuracy of both runs (context: where training is)
    ax_acc.plot(rounds, [100 * r["test_accuracy"] for r in secure], "-", marker="o", ms=4, label=label)
    if baseline is not None:
        ax_acc.plot([r["round"] for r in baseline], [100 * r["test_accuracy"] for r in baseline], "--",
                    marker="x", ms=5, label=f"plaintext ({rule})")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("test accuracy", fontsize=10)

    # 2. secure - plaintext, per round
    if baseline is not None:
        base = {r["round"]: r for r in baseline}
        common = [r for r in secure if r["round"] in base]
        xr = [r["round"] for r in common]
        dacc = [100 * (r["test_accuracy"] - base[r["round"]]["test_accuracy"]) for r in common]
        dloss = [r["test_loss"] - base[r["round"]]["test_loss"] for r in common]
        ax_diff.axhline(0.0, color="grey", lw=0.8)
        ax_diff.plot(xr, dacc, "-", marker="o", ms=4, color="C0", label="accuracy (pp, left)")
        ax_diff.set_ylabel(f"{protocol} - plaintext test accuracy (pp)", color="C0")
        span = max((abs(v) for v in dacc), default=0.0)
        ax_diff.set_ylim(-max(span, 0.5) * 1.2, max(span, 0.5) * 1.2)
        ax_loss = ax_diff.twinx()
        ax_loss.plot(xr, dloss, "--", marker="s", ms=3, color="C3", label="test loss (right)")
        ax_loss.set_ylabel(f"{protocol} - plaintext test loss", color="C3")
        lspan = max((abs(v) for v in dloss if _finite(v)), default=0.0)
        ax_loss.set_ylim(-max(lspan, 1e-12) * 1.2, max(lspan, 1e-12) * 1.2)
        lines = ax_diff.get_lines()[1:] + ax_loss.get_lines()
        ax_diff.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper left")
        ax_diff.set_title(f"difference {protocol} - plaintext (same seed, same dropouts)", fontsize=10)
    else:
        ax_diff.text(0.5, 0.5, "no plaintext baseline (--no-baseline)", ha="center", va="center",
                     transform=ax_diff.transAxes)
        ax_diff.set_title("difference to the plaintext run", fontsize=10)

    # 3. aggregation error per round
    agg = [r for r in secure if r["round"] > 0]
    err = [(r["round"], r["aggregation_error"]) for r in agg if _finite(r["aggregation_error"])]
    if any(e > 0 for _, e in err):
        ax_err.semilogy([x for x, _ in err], [max(e, 1e-300) for _, e in err], "-", marker="o", ms=4,
                        color="C2")
    elif err:
        ax_err.plot([x for x, _ in err], [e for _, e in err], "-", marker="o", ms=4, color="C2")
    ax_err.set_ylabel("max |aggregate - plaintext float aggregate|")
    ax_err.set_title("aggregation error per round (DP noise, rounding)" if has_dp else
                     "aggregation error per round (fixed-point rounding and clipping)", fontsize=10)

    # 4. dropouts per round
    xs = [r["round"] for r in agg]
    inc = [r["n_included"] for r in agg]
    dropped = [r["n_dropped"] for r in agg]
    ax_drop.bar(xs, inc, color="C0", alpha=0.7, label="included")
    ax_drop.bar(xs, dropped, bottom=inc, color="C1", alpha=0.9, label="dropped out")
    aborted = [r["round"] for r in agg if r.get("aborted")]
    for x in aborted:
        ax_drop.annotate("aborted", (x, 0), rotation=90, ha="center", va="bottom", fontsize=7)
    ax_drop.set_ylabel("clients")
    ax_drop.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_drop.set_title("clients per round" + (f" ({len(aborted)} rounds aborted)" if aborted else ""),
                      fontsize=10)
    ax_drop.set_ylim(0, 1.3 * max([a + b for a, b in zip(inc, dropped)] or [1]))
    ax_drop.legend(fontsize=8, loc="upper right", ncol=2)

    axes = [ax_acc, ax_diff, ax_err, ax_drop]
    if has_dp:
        # 5. privacy spent: the accountant's epsilon after each round, and each round's own
        dp_rows = [r for r in secure if _finite(r.get("dp_epsilon_spent"))]
        ax_dp.plot([r["round"] for r in dp_rows], [r["dp_epsilon_spent"] for r in dp_rows], "-", marker="o",
                   ms=4, color="C4", label="epsilon spent so far (composed)")
        per = [(r["round"], r["dp_epsilon_round"]) for r in dp_rows if r["round"] > 0
               and _finite(r.get("dp_epsilon_round"))]
        ax_dp.plot([x for x, _ in per], [e for _, e in per], ":", marker=".", color="C5",
                   label="this round alone")
        ax_dp.set_ylabel("epsilon (at the run's delta)")
        ax_dp.set_ylim(bottom=0)
        ax_dp.legend(fontsize=8, loc="upper left")
        ax_dp.set_title("privacy spent (Renyi-DP accountant)", fontsize=10)
        # 6. noise and clip per round
        nz = [(r["round"], r["dp_noise_std"]) for r in dp_rows if r["round"] > 0 and _finite(r.get("dp_noise_std"))]
        ax_noise.plot([x for x, _ in nz], [v for _, v in nz], "-", marker="o", ms=4, color="C6",
                      label="noise std of the averaged update, per coordinate")
        clips = [(r["round"], r["dp_clip"]) for r in dp_rows if _finite(r.get("dp_clip"))]
        ax_noise.plot([x for x, _ in clips], [v for _, v in clips], "--", color="C7", label="L2 clip")
        ax_noise.legend(fontsize=8, loc="upper right")
        ax_noise.set_title("distributed noise and clip per round", fontsize=10)
        axes += [ax_dp, ax_noise]
    for ax in axes:
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8, loc="lower right")
    final = f"final accuracy: {protocol} {100 * secure[-1]['test_accuracy']:.2f} %"
    if baseline is not None:
        final += f", plaintext {100 * baseline[-1]['test_accuracy']:.2f} %"
    head = "\n".join(x for x in (title, textwrap.fill(note, 150) if note else "", final) if x)
    fig.suptitle(head, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
