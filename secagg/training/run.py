"""A complete training run: the chosen protocol, the plaintext baseline of the
same seed, and a run directory with the results.

Run directory (``runs/<timestamp>-<protocol>-<rule>/``)::

    config.json              the TrainConfig, plus the data split per client
    metrics.csv/.json        per round: losses, accuracy, clients included and
                             dropped, bytes up/down per client, time per phase
    baseline_metrics.csv/.json   the same for the plaintext run (same seed)
    summary.json             final accuracies and their difference, and the
                             masking graph the rounds used (``graph``)
    comparison.png           secure vs plaintext per round: accuracy, their
                             difference, the aggregation error, the dropouts

``runs_dir`` itself is created if it does not exist, but not its parent: a
misspelt path fails before any training instead of growing a tree.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from ..errors import ParameterError
from .runner import FedRunner, TrainConfig, dropout_tolerance, round_threshold

__all__ = ["TrainingReport", "run_training", "write_metrics", "CSV_COLUMNS", "graph_report"]

CSV_COLUMNS = (
    "round", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "local_train_loss",
    "n_included", "n_dropped", "dropped", "aborted", "bytes_up_per_client", "bytes_down_per_client",
    "model_broadcast_bytes", "clipped_entries", "aggregation_error",
    "time_local_training_s", "time_secure_aggregation_s", "time_evaluation_s", "threshold", "degree",
    "dp_epsilon_round", "dp_epsilon_spent", "dp_noise_std", "dp_clip", "dp_clipped_fraction",
)


@dataclass
class TrainingReport:
    """What :func:`run_training` returns."""

    config: TrainConfig
    run_dir: Path | None
    metrics: list[dict[str, Any]]
    baseline_metrics: list[dict[str, Any]] | None
    seconds: float
    graph: dict[str, Any] | None = None

    @property
    def final_accuracy(self) -> float:
        return float(self.metrics[-1]["test_accuracy"])

    @property
    def baseline_final_accuracy(self) -> float | None:
        return None if self.baseline_metrics is None else float(self.baseline_metrics[-1]["test_accuracy"])

    @property
    def accuracy_difference_pp(self) -> float | None:
        """(secure - plaintext) final test accuracy, in percentage points."""
        b = self.baseline_final_accuracy
        return None if b is None else 100.0 * (self.final_accuracy - b)

    def summary(self) -> dict[str, Any]:
        last = self.metrics[-1]
        rows = self.metrics[1:]
        return {
            "protocol": self.config.protocol,
            "rule": self.config.rule,
            "split": self.config.split,
            "clients": self.config.clients,
            "rounds": self.config.rounds,
            "dropout": self.config.dropout,
            "seed": self.config.seed,
            "final_test_accuracy": self.final_accuracy,
            "final_test_loss": float(last["test_loss"]),
            "baseline_final_test_accuracy": self.baseline_final_accuracy,
            "baseline_final_test_loss": (None if self.baseline_metrics is None
                                         else float(self.baseline_metrics[-1]["test_loss"])),
            "accuracy_difference_pp": self.accuracy_difference_pp,
            "max_aggregation_error": max((r["aggregation_error"] for r in rows
                                          if not math.isnan(r["aggregation_error"])), default=0.0),
            "clipped_entries": int(sum(r["clipped_entries"] for r in rows)),
            "aborted_rounds": [r["round"] for r in rows if r["aborted"]],
            "bytes_up_per_client_per_round": _mean(r["bytes_up_per_client"] for r in rows),
            "bytes_down_per_client_per_round": _mean(r["bytes_down_per_client"] for r in rows),
            "time_local_training_s": sum(r["time_local_training_s"] for r in rows),
            "time_secure_aggregation_s": sum(r["time_secure_aggregation_s"] for r in rows),
            "time_evaluation_s": sum(r["time_evaluation_s"] for r in rows),
            "seconds_total": self.seconds,
            "run_dir": None if self.run_dir is None else str(self.run_dir),
            "graph": self.graph,
            "dp": self._dp_summary(),
        }

    def _dp_summary(self) -> dict[str, Any] | None:
        """The privacy guarantee of the run: epsilon spent at delta after the
        last round, and the plan it followed (``None`` without DP)."""
        c = self.config
        if c.dp_epsilon is None or c.protocol == "plaintext":
            return None
        last = self.metrics[-1]
        return {"target_epsilon": c.dp_epsilon, "delta": c.dp_delta, "mechanism": c.dp_mechanism,
                "epsilon_spent": last.get("dp_epsilon_spent"), "final_clip": last.get("dp_clip"),
                "adaptive_clip": c.dp_adaptive_clip,
                "released_rounds": sum(1 for r in self.metrics[1:] if not r["aborted"])}


def _mean(values: Any) -> float:
    vals = list(values)
    return float(sum(vals) / len(vals)) if vals else 0.0


def _csv_value(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return v


def write_metrics(run_dir: Path, stem: str, rows: Sequence[dict[str, Any]]) -> None:
    """``<stem>.json`` (everything, incl. per-stage protocol timings) and ``<stem>.csv``."""
    with open(run_dir / f"{stem}.json", "w") as fh:
        json.dump(_jsonable(list(rows)), fh, indent=1)
    with open(run_dir / f"{stem}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow([_csv_value(r.get(c, "")) for c in CSV_COLUMNS])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _make_leaf(path: Path) -> None:
    """Create ``path`` (not its parents); a ParameterError if that cannot be."""
    if path.exists() and not path.is_dir():
        raise ParameterError(f"{path} exists and is not a directory")
    if not path.parent.is_dir():
        raise ParameterError(f"the directory {path.parent} does not exist (only {path.name} would be created)")
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create {path}: {exc.strerror}") from None


def _new_run_dir(runs_dir: Path, config: TrainConfig) -> Path:
    _make_leaf(runs_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{config.protocol.replace('+', 'plus')}-{config.rule}"
    for i in range(1000):
        p = runs_dir / (base if i == 0 else f"{base}-{i}")
        try:
            p.mkdir(exist_ok=False)
            return p
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {runs_dir}")  # pragma: no cover


def run_training(config: TrainConfig, *, runs_dir: str | Path | None = "runs", baseline: bool = True,
                 progress: bool = True, run_dir: str | Path | None = None) -> TrainingReport:
    """Train with ``config.protocol`` and, if ``baseline``, the plaintext run of
    the same seed; write the run directory (unless ``runs_dir`` and ``run_dir``
    are both None). All parameter errors are raised before any training."""
    started = time.perf_counter()
    rounds_params: list[dict[str, Any]] = []
    runner = FedRunner(config, simulate_fn=_recording_simulate(rounds_params))
    base_runner = None
    if baseline and config.protocol != "plaintext":
        base_runner = FedRunner(config, runner.data, protocol="plaintext")
    out: Path | None = None
    if run_dir is not None:
        out = Path(run_dir).resolve()
        _make_leaf(out)
    elif runs_dir is not None:
        out = _new_run_dir(Path(runs_dir), config).resolve()
    if out is not None:
        cfg = config.to_dict()
        cfg["threshold_effective"] = runner.threshold
        cfg["degree_effective"] = runner.degree
        cfg["partition"] = runner.data.describe()
        cfg["n_train"] = int(len(runner.data.y_train))
        cfg["n_test"] = int(len(runner.data.y_test))
        cfg["n_parameters"] = int(runner.spec.size)
        with open(out / "config.json", "w") as fh:
            json.dump(cfg, fh, indent=1)

    metrics = _run_one(runner, config.protocol, progress)
    _attach_params(metrics, rounds_params)
    base_metrics = _run_one(base_runner, "plaintext", progress) if base_runner is not None else None
    report = TrainingReport(config, out, metrics, base_metrics, time.perf_counter() - started,
                            graph=graph_report(config, metrics))
    if out is not None:
        write_metrics(out, "metrics", metrics)
        if base_metrics is not None:
            write_metrics(out, "baseline_metrics", base_metrics)
        from .plot import plot_comparison

        plot_comparison(out / "comparison.png", metrics, base_metrics, protocol=config.protocol,
                        rule=config.rule,
                        title=(f"{config.dataset.replace('_', ' ')}, {config.clients} hospitals, {config.split}"
                               + (f" (alpha={config.alpha})" if config.split == "noniid" else "")
                               + f", {int(round(100 * config.dropout))} % dropout, seed {config.seed}"),
                        note=None if report.graph is None else report.graph["note"])
        report.seconds = time.perf_counter() - started
        with open(out / "summary.json", "w") as fh:
            json.dump(_jsonable(report.summary()), fh, indent=1)
    return report


def _recording_simulate(sink: list[dict[str, Any]]) -> Any:
    """The library's simulate, keeping each completed round's parameter summary."""
    def run(*args: Any, **kwargs: Any) -> Any:
        from ..simulation import simulate

        res = simulate(*args, **kwargs)
        sink.append(dict(res.params))
        return res
    return run


def _attach_params(rows: list[dict[str, Any]], params: list[dict[str, Any]]) -> None:
    """Each completed round's threshold and degree, as the round's result
    reported them (an aborted round returned no result: left empty)."""
    it = iter(params)
    for r in rows[1:]:
        p = {} if r["aborted"] else next(it, {})
        r["threshold"] = p.get("threshold", "")
        r["degree"] = p.get("degree", "")


def _sparse_from(config: TrainConfig, start: int, limit: int = 2000) -> tuple[int, int] | None:
    """The smallest client count >= ``start`` for which ``config.protocol``'s
    derivation at ``config.dropout`` gives a graph sparser than complete:
    ``(clients, degree)``, or None below ``limit``."""
    for m in range(max(start, 3), limit + 1):
        try:
            _, deg = round_threshold(config.protocol, m, config.dropout)
        except ParameterError:
            continue
        if deg is not None and deg < m - 1:
            return m, deg
    return None


def graph_report(config: TrainConfig, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Which masking graph the rounds used and why, from the degree and
    threshold the round results reported (None for plaintext and Paillier)."""
    if config.protocol not in ("secagg", "secagg+"):
        return None
    degrees = sorted({int(r["degree"]) for r in rows[1:] if r.get("degree", "") != ""})
    thresholds = sorted({int(r["threshold"]) for r in rows[1:] if r.get("threshold", "") != ""})
    n = config.clients
    if not degrees:
        return {"degree": None, "threshold": None, "complete": None,
                "note": f"{config.protocol} with {n} clients: no round completed, no graph to report"}
    degree, threshold = degrees[-1], thresholds[-1]
    complete = degree == n - 1
    if config.protocol == "secagg":
        note = (f"SecAgg with {n} clients: the complete graph (degree {degree} = n-1), "
                f"threshold {threshold}")
    elif complete:
        note = (f"SecAgg+ with {n} clients: the derived degree is {degree} = n-1, the complete graph "
                f"(as SecAgg), threshold {threshold}: the degree its security bound and "
                f"{100 * dropout_tolerance(config.protocol, n, config.dropout):.0f} % dropout tolerance need is "
                "not below n-1 at this size")
        sparse = _sparse_from(config, n + 1)
        if sparse is not None:
            note += (f"; the sparse graph pays off from about {sparse[0]} clients "
                     f"(degree {sparse[1]} < {sparse[0] - 1})")
    else:
        note = (f"SecAgg+ with {n} clients: a sparse graph of degree {degree} "
                f"(each client masks with {degree} of the {n - 1} others), threshold {threshold}")
    if len(degrees) > 1:
        note += f" (degrees over the rounds: {degrees})"
    return {"protocol": config.protocol, "clients": n, "degree": degree, "threshold": threshold,
            "complete": complete, "note": note}


def _run_one(runner: FedRunner, label: str, progress: bool) -> list[dict[str, Any]]:
    if not progress:
        return runner.run()
    from tqdm import tqdm

    with tqdm(total=runner.config.rounds, desc=f"{label:>9}", unit="round", leave=True) as bar:
        return runner.run(progress=bar)
