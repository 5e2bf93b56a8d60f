"""PNG plot of a secure training run against the plaintext run of the same seed
(matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

__all__ = ["plot_comparison"]


def plot_comparison(path: str | Path, secure: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]] | None,
                    *, protocol: str, rule: str, title: str = "") -> Path:
    """Test accuracy, test loss and secure-aggregation time per round."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    series = [(f"{protocol} ({rule})", secure, "-", "o")]
    if baseline is not None:
        series.append((f"plaintext ({rule})", baseline, "--", "x"))
    for label, rows, ls, marker in series:
        rounds = [r["round"] for r in rows]
        axes[0].plot(rounds, [100 * r["test_accuracy"] for r in rows], ls, marker=marker, ms=4, label=label)
        axes[1].plot(rounds, [r["test_loss"] for r in rows], ls, marker=marker, ms=4, label=label)
        agg = [r for r in rows if r["round"] > 0]
        axes[2].plot([r["round"] for r in agg], [1000 * r["time_secure_aggregation_s"] for r in agg], ls,
                     marker=marker, ms=4, label=label)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].set_ylabel("test loss (BCE)")
    axes[2].set_ylabel("aggregation time per round (ms)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    final = f"final accuracy: {protocol} {100 * secure[-1]['test_accuracy']:.2f} %"
    if baseline is not None:
        final += f", plaintext {100 * baseline[-1]['test_accuracy']:.2f} %"
    fig.suptitle((title + "\n" if title else "") + final, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
