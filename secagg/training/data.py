"""Federated data for the training runner: scikit-learn's breast cancer data set
(Wisconsin diagnostic, 569 patients, 30 features; it ships with scikit-learn,
so nothing is downloaded) split across ``K`` simulated hospitals.

* A stratified held-out test set (``test_fraction``) is split off first.
* Features are standardized with the *training* mean and standard deviation
  only, so nothing about the test set leaks into the model.
* The training set is partitioned across hospitals either IID (a random
  permutation cut into near-equal parts) or non-IID by label skew: for each
  class, hospital shares are drawn from ``Dirichlet(alpha, ..., alpha)``
  (smaller ``alpha`` = more skew). Partitions are redrawn until every hospital
  holds at least ``min_examples`` patients.

Everything is a pure function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

__all__ = ["FederatedData", "load_breast_cancer_data", "load_data", "partition_iid", "partition_dirichlet",
           "make_federated_data", "DATASETS"]

SPLITS = ("iid", "noniid")
#: the data sets a run can use, both shipped with scikit-learn (no download):
#: ``breast_cancer`` (569 patients, 30 features, benign or malignant) and
#: ``digits`` (1,797 handwritten 8x8 digits, 64 features; the binary task
#: "digit >= 5"), large enough for a few hundred simulated clients
DATASETS = ("breast_cancer", "digits")


@dataclass(frozen=True)
class FederatedData:
    """Standardized float32 features and {0,1} labels: one ``(x, y)`` per client,
    the pooled training set, and the held-out test set."""

    clients: tuple[tuple[np.ndarray, np.ndarray], ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...] = ()

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def client_sizes(self) -> tuple[int, ...]:
        return tuple(int(len(y)) for _, y in self.clients)

    def describe(self) -> list[dict[str, float]]:
        """Per client: examples and share of the positive (benign) class."""
        return [{"client": i + 1, "examples": int(len(y)), "positive_share": float(np.mean(y)) if len(y) else 0.0}
                for i, (_, y) in enumerate(self.clients)]


def load_breast_cancer_data(test_fraction: float = 0.2, seed: int = 0
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Stratified train/test split of the breast cancer data, standardized with
    the training statistics. Returns ``x_train, y_train, x_test, y_test, names``."""
    return load_data("breast_cancer", test_fraction, seed)


def load_data(name: str = "breast_cancer", test_fraction: float = 0.2, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Stratified train/test split of one of :data:`DATASETS`, standardized
    with the training statistics, labels in {0, 1}. Returns ``x_train,
    y_train, x_test, y_test, names``."""
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise ParameterError(f"dataset must be one of {DATASETS}, got {name!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    ds = load_breast_cancer() if name == "breast_cancer" else load_digits()
    x = np.asarray(ds.data, dtype=np.float64)
    y = np.asarray(ds.target, dtype=np.int64)
    if name == "digits":
        y = (y >= 5).astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y,
                                              random_state=_seed32(seed, 1))
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0
    x_tr = (x_tr - mean) / std
    x_te = (x_te - mean) / std
    return (x_tr.astype(np.float32), y_tr, x_te.astype(np.float32), y_te,
            tuple(str(n) for n in ds.feature_names))


def _seed32(seed: int, tag: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, tag]).generate_state(1)[0])


def partition_iid(n_examples: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of ``range(n_examples)`` cut into ``n_clients`` near-equal parts."""
    _check_clients(n_examples, n_clients)
    perm = rng.permutation(n_examples)
    return [np.sort(p) for p in np.array_split(perm, n_clients)]


def partition_dirichlet(labels: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator,
                        min_examples: int = 5, max_tries: int = 1000) -> list[np.ndarray]:
    """Label-skewed partition: for each class, client shares ~ Dirichlet(alpha).

    Redrawn until every client holds at least ``min_examples`` examples;
    :class:`ParameterError` if that does not happen in ``max_tries`` draws."""
    labels = np.asarray(labels)
    _check_clients(len(labels), n_clients)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ParameterError(f"Dirichlet alpha must be > 0, got {alpha!r}")
    if min_examples * n_clients > len(labels):
        raise ParameterError(f"{n_clients} clients with at least {min_examples} examples each need "
                             f"{min_examples * n_clients} examples; the training set has {len(labels)}")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(n_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_examples:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ParameterError(f"could not draw a Dirichlet(alpha={alpha}) partition giving each of {n_clients} "
                         f"clients at least {min_examples} examples; raise alpha or use fewer clients")


def _check_clients(n_examples: int, n_clients: int) -> None:
    if not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise ParameterError(f"number of clients must be a positive integer, got {n_clients!r}")
    if n_clients > n_examples:
        raise ParameterError(f"{n_clients} clients but only {n_examples} training examples")


def make_federated_data(n_clients: int, split: str = "iid", alpha: float = 0.5, seed: int = 0,
                        test_fraction: float = 0.2, min_examples: int = 5,
                        dataset: str = "breast_cancer") -> FederatedData:
    """One of :data:`DATASETS` (default: the breast cancer data) for
    ``n_clients`` hospitals, ``split`` in ``{"iid", "noniid"}``."""
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {SPLITS}, got {split!r}")
    x_tr, y_tr, x_te, y_te, names = load_data(dataset, test_fraction, seed)
    rng = np.random.default_rng(_seed32(seed, 2))
    if split == "iid":
        parts = partition_iid(len(y_tr), n_clients, rng)
    else:
        parts = partition_dirichlet(y_tr, n_clients, alpha, rng, min_examples=min_examples)
    clients = tuple((x_tr[p], y_tr[p]) for p in parts)
    return FederatedData(clients, x_tr, y_tr, x_te, y_te, names)
