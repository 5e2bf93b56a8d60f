"""The learning task: a small MLP on the Wisconsin breast-cancer data.

The data ships with scikit-learn (no download). Each node takes the partition
``partition-id`` of ``num-partitions`` (a fixed shuffle), standardizes it with
its own statistics and keeps 20% of it for local evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FEATURES = 30


class Net(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


def _standardize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)


def load_partition(partition_id: int, num_partitions: int, batch_size: int = 16,
                   seed: int = 42) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders of one node's partition."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} outside [0, {num_partitions})")
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    part = np.array_split(order, num_partitions)[partition_id]
    xp, yp = _standardize(x[part]).astype(np.float32), y[part].astype(np.float32)
    cut = int(0.8 * len(part))
    gen = torch.Generator().manual_seed(seed + partition_id)
    train = DataLoader(TensorDataset(torch.from_numpy(xp[:cut]), torch.from_numpy(yp[:cut])),
                       batch_size=batch_size, shuffle=True, generator=gen)
    test = DataLoader(TensorDataset(torch.from_numpy(xp[cut:]), torch.from_numpy(yp[cut:])), batch_size=256)
    return train, test


def load_centralized(batch_size: int = 256) -> DataLoader:
    """The whole data set, for the server's own evaluation of the global model."""
    x, y = load_breast_cancer(return_X_y=True)
    return DataLoader(TensorDataset(torch.from_numpy(_standardize(x).astype(np.float32)),
                                    torch.from_numpy(y.astype(np.float32))), batch_size=batch_size)


def train(model: nn.Module, loader: DataLoader, epochs: int, lr: float) -> float:
    """Local SGD; returns the mean training loss of the last epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    last = 0.0
    for _ in range(epochs):
        total, count = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            count += len(yb)
        last = total / max(count, 1)
    return last


def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """(loss, accuracy) on ``loader``."""
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    model.eval()
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for xb, yb in loader:
            logits = model(xb)
            total += float(loss_fn(logits, yb))
            correct += int(((logits > 0).float() == yb).sum())
            count += len(yb)
    return total / max(count, 1), correct / max(count, 1)
