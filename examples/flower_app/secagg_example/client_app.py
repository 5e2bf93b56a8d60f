"""ClientApp: plain FedAvg training code; ``secagg_mod`` adds secure aggregation.

The train function below is what any Flower FedAvg client looks like: load the
global model, train locally, reply with the new weights and ``num-examples``.
The mod runs the masking protocol around it, so the weights never leave the
node in the clear. torch is imported inside the functions: the protocol's
other messages (keys, shares, unmasking) then start without loading it.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from secagg.flower import secagg_mod

app = ClientApp(mods=[secagg_mod])


def _partition(context: Context) -> tuple[int, int]:
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    from secagg_example import task

    model = task.Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    trainloader, _ = task.load_partition(*_partition(context), batch_size=int(context.run_config["batch-size"]))
    loss = task.train(model, trainloader, int(context.run_config["local-epochs"]),
                      float(context.run_config["learning-rate"]))
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(trainloader.dataset)})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    from secagg_example import task

    model = task.Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    _, testloader = task.load_partition(*_partition(context))
    loss, accuracy = task.evaluate(model, testloader)
    metrics = MetricRecord({"eval-loss": loss, "eval-accuracy": accuracy, "num-examples": len(testloader.dataset)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
