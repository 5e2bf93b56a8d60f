"""ServerApp: FedAvg with every training round under secure aggregation.

Compared with a plain Flower FedAvg ServerApp, the only change is the strategy:
``SecAggFedAvg`` with settings read from the run config (``secagg-*`` keys;
``secagg-rule`` picks the averaging rule, FedAvg by default;
``secagg-dp-epsilon`` > 0 with ``secagg-rule = "mean"`` turns on distributed
differential privacy, and the log then shows each round's epsilon and the
epsilon spent).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from secagg.flower import RoundReport, SecAggFedAvg, SecAggSettings
from secagg_example import task

app = ServerApp()


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    torch.manual_seed(int(cfg["seed"]))
    out_dir = Path(str(cfg["output-dir"])) if cfg["output-dir"] else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    def on_round(report: RoundReport) -> None:
        if out_dir is not None:
            # the weighted mean update is the one thing the server is meant to learn
            _write_json(out_dir / f"round-{report.server_round}.json", report.to_json_dict(with_aggregate=True))

    central = task.load_centralized()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = task.Net()
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = task.evaluate(model, central)
        return MetricRecord({"loss": loss, "accuracy": accuracy})

    min_nodes = int(cfg["min-nodes"])
    strategy = SecAggFedAvg(
        settings=SecAggSettings.from_run_config(cfg),
        server_learning_rate=float(cfg["server-learning-rate"]),
        fraction_evaluate=float(cfg["fraction-evaluate"]),
        min_train_nodes=min_nodes, min_evaluate_nodes=min_nodes, min_available_nodes=min_nodes,
        on_round=on_round,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.Net().state_dict()),
        num_rounds=int(cfg["num-server-rounds"]),
        train_config=ConfigRecord({"lr": float(cfg["learning-rate"])}),
        evaluate_fn=evaluate_fn,
    )
    if out_dir is not None:
        torch.save(result.arrays.to_torch_state_dict(), out_dir / "final_model.pt")
        _write_json(out_dir / "summary.json", {
            "rounds": [r.to_json_dict() for r in strategy.reports],
            "central_evaluation": {str(k): dict(v) for k, v in result.evaluate_metrics_serverapp.items()},
            "federated_evaluation": {str(k): dict(v) for k, v in result.evaluate_metrics_clientapp.items()},
            # distributed DP (secagg-dp-epsilon > 0): the epsilon spent over the completed rounds
            "dp": None if strategy.dp_budget is None else {
                "epsilon_spent": strategy.dp_budget.spent, "epsilon_target": strategy.dp_budget.target.epsilon,
                "delta": strategy.dp_budget.target.delta, "rounds_released": len(strategy.dp_budget.reports)},
        })
