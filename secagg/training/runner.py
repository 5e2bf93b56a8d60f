"""The federated training runner: R rounds of local torch training on K
simulated hospitals, with each round's model deltas aggregated through a secure
protocol (:func:`secagg.simulation.simulate`) and applied by the server.

One round::

    server  -> every client : global model
    client k                : E epochs of SGD on its own partition -> delta_k,
                              weight w_k (rule-dependent), checks its own update
    dropout                 : the chosen clients vanish before sending their
                              masked input (Paillier: before submitting)
    protocol                : the server learns only sum w_k delta_k and sum w_k
                              over the survivors -> the rule's aggregate
    server                  : global += server_lr * aggregate  (FedAvg step)

Reproducibility and comparability. Everything derives from ``seed``: the data
split, the model initialisation, the clients that drop in each round (a fixed
number, ``round(dropout * K)``, drawn afresh each round), each client's batch
order (a ``torch.Generator`` seeded per client per round), and the protocol's
randomness. A secure run and the plaintext run of the same seed therefore drop
the same clients and shuffle the same way; their models differ only by the
fixed-point rounding of the secure aggregate (``2^-frac_bits`` per entry, far
below anything that changes a prediction). ``clip`` is set large enough that
model deltas are not clipped; clipped entries are counted per round and
reported with a warning.

Errors raised before any round starts (:class:`ParameterError`): a bad
configuration, a dropout rate that leaves fewer clients than the protocol's
threshold. Errors raised in a round, before anything is sent: a client update
whose shape differs from the model's (the client is named), NaN or infinite
values in an update, a client weight that is not > 0.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..aggregation import AVERAGING_RULES, Rule, hybrid_weight, reference_aggregate
from ..encoding.fixed_point import FixedPoint
from ..errors import AbortReason, ParameterError, ProtocolAborted
from ..primitives.randomness import DeterministicRandom
from ..torch import flatten_state_dict, unflatten_state_dict
from ..transports.inprocess import dropout_count
from ..transports.inprocess import dropout_schedule as _schedule
from .data import DATASETS, SPLITS, FederatedData, make_federated_data
from .model import MODELS, make_model

__all__ = ["PROTOCOLS", "TRAIN_RULES", "TrainConfig", "LocalResult", "FedRunner", "dropout_schedule",
           "validate_updates", "round_threshold", "dropout_tolerance", "seed_for"]

PROTOCOLS = ("plaintext", "secagg", "secagg+", "paillier")
TRAIN_RULES = AVERAGING_RULES  # a training round applies an average update

#: the protocol stage at which a dropped client vanishes: after training, before
#: its (masked or encrypted) input reaches the server.
DROPOUT_STAGE = {"plaintext": "masked_input", "secagg": "masked_input", "secagg+": "masked_input",
                 "paillier": "submit"}
#: where a client an earlier abort named (``ProtocolAborted.culprits``) is left out: from the start.
EXCLUDED_STAGE = {"plaintext": "masked_input", "secagg": "advertise_keys", "secagg+": "advertise_keys",
                  "paillier": "submit"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``).

    ``key_bits`` is the Paillier modulus size; the library default is 2048, the
    demo, benchmark and tests use 1024 for speed. ``max_weight`` is the public
    bound on client weights fixed for the encoding (default: the smallest power
    of two covering the round's largest weight). ``client_weights`` are explicit
    weights for the ``weighted`` rule (default: each client's number of
    examples); ``client_quality`` the quality factors of the ``hybrid`` rule
    (default: each client's local training accuracy after its update).

    Distributed differential privacy (``dp_epsilon`` set): every round runs
    with :class:`secagg.dp.DPConfig` ``(dp_epsilon, dp_delta, rounds,
    dp_mechanism, clip=dp_clip, bits=dp_bits, adaptive_clip=dp_adaptive_clip)``:
    each client L2-clips its model delta to ``dp_clip`` and adds its share of
    discrete noise before masking or encryption, calibrated so that the whole
    run is ``(dp_epsilon, dp_delta)``-DP (client-level) with only the round's
    threshold of survivors. DP rounds are unweighted (rule ``mean``) and need a
    secure protocol; the plaintext baseline of the same seed runs without DP.
    """

    protocol: str = "secagg+"
    rule: str = "fedavg"
    clients: int = 10
    rounds: int = 20
    epochs: int = 2
    dropout: float = 0.2
    seed: int = 0
    split: str = "noniid"
    alpha: float = 0.5
    dataset: str = "breast_cancer"
    model: str = "mlp"
    hidden: int = 16
    lr: float = 0.1
    momentum: float = 0.0
    batch_size: int = 16
    server_lr: float = 1.0
    hybrid_alpha: float = 1.0
    hybrid_beta: float = 1.0
    client_weights: tuple[float, ...] | None = None
    client_quality: tuple[float, ...] | None = None
    test_fraction: float = 0.2
    min_examples: int = 5
    frac_bits: int = 24
    clip: float = 64.0
    max_weight: float | None = None
    threshold: int | None = None
    key_bits: int = 2048
    malicious_server: bool = False
    on_abort: str = "skip"
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_mechanism: str = "dgauss"
    dp_clip: float = 1.0
    dp_bits: int | None = None
    dp_adaptive_clip: bool = False

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("client_weights", "client_quality"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ParameterError(f"unknown training options {sorted(unknown)}")
        kw = dict(d)
        for k in ("client_weights", "client_quality"):
            if kw.get(k) is not None:
                kw[k] = tuple(float(v) for v in kw[k])
        return cls(**kw)


@dataclass
class LocalResult:
    """What a client's local training produced (before anything is sent)."""

    client_id: int
    state_dict: Mapping[str, torch.Tensor]
    examples: int
    train_loss: float
    train_accuracy: float


def seed_for(seed: int, *tags: int) -> int:
    """A 32-bit seed derived from ``seed`` and integer tags (independent streams)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(t) for t in tags]]).generate_state(1)[0])


_TAG_DROPOUT, _TAG_LOCAL, _TAG_PROTOCOL, _TAG_MODEL = 11, 12, 13, 14


def dropout_schedule(seed: int, round_number: int, n_clients: int, rate: float) -> list[int]:
    """Client ids (1..n) that drop in ``round_number``: exactly
    :func:`n_dropped` of them, drawn by the project's one dropout schedule
    (:func:`secagg.transports.inprocess.dropout_schedule`) from a stream
    derived from the seed and the round (independent of protocol)."""
    rng = DeterministicRandom(seed_for(seed, _TAG_DROPOUT, round_number))
    return sorted(_schedule(float(rate), range(1, n_clients + 1), ("dropped",), rng))


def n_dropped(n_clients: int, rate: float) -> int:
    """How many of ``n_clients`` a dropout ``rate`` drops (rounded half up)."""
    return dropout_count(n_clients, rate)


def dropout_tolerance(protocol: str, n_clients: int, rate: float) -> float:
    """The dropout tolerance the masking parameters are derived for: the planned
    dropout fraction (SecAgg+ derives its sparse graph for at least 10 %)."""
    planned = n_dropped(n_clients, rate) / n_clients
    return max(0.1, planned) if protocol == "secagg+" else planned


def round_threshold(protocol: str, n_clients: int, rate: float, threshold: int | None = None
                    ) -> tuple[int, int | None]:
    """``(threshold, degree)`` a round of ``protocol`` will use, derived exactly
    as the protocol derives it (so a bad combination fails here, before any
    training, with the protocol's own explanation as a :class:`ParameterError`).

    Masking: Shamir threshold (per neighbourhood of ``degree + 1`` share
    holders; ``degree = n - 1`` is the complete graph) from the masking
    parameters. Paillier has no shares: its ``min_clients`` is ``threshold``
    (default a majority, at least 2, as the protocol derives it; 1 is refused:
    an aggregate of one client is that client's update). Plaintext:
    ``threshold`` or 1."""
    if protocol in ("secagg", "secagg+"):
        from ..primitives.randomness import DeterministicRandom
        from ..protocols.masking import MaskingParams

        params = MaskingParams.create(range(1, n_clients + 1), 1, protocol=protocol,
                                      dropout_tolerance=dropout_tolerance(protocol, n_clients, rate),
                                      threshold=threshold, rng=DeterministicRandom(b"threshold-check"))
        return int(params.threshold), int(params.degree)
    if protocol == "paillier":
        from ..simulation import paillier_min_clients

        return paillier_min_clients(n_clients, threshold), None
    if threshold is not None:
        return int(threshold), None
    return 1, None


def validate_updates(updates: Mapping[int, np.ndarray], weights: Mapping[int, float] | None,
                     expected_size: int) -> None:
    """Check client updates before they are sent: the model's size, finite
    values, weights finite and > 0. :class:`ParameterError` names the client."""
    for cid, u in updates.items():
        arr = np.asarray(u)
        if arr.ndim != 1 or arr.size != expected_size:
            raise ParameterError(f"client {cid}: update has shape {arr.shape}, the model has "
                                 f"({expected_size},)")
        if not np.all(np.isfinite(arr)):
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise ParameterError(f"client {cid}: update contains {bad} NaN or infinite value(s) "
                                 "(diverged local training? lower the learning rate)")
    if weights is not None:
        for cid, w in weights.items():
            wf = float(w)
            if not math.isfinite(wf) or wf <= 0:
                raise ParameterError(f"client {cid}: weight must be a finite number > 0, got {w!r}")


def _l2_clip(x: np.ndarray, clip: float) -> np.ndarray:
    norm = float(np.linalg.norm(x))
    return x if norm <= clip else x * (clip / norm)


def _sgd_step(params: Sequence[torch.Tensor], velocity: list[torch.Tensor], lr: float, momentum: float) -> None:
    """Plain SGD (heavy-ball momentum as in ``torch.optim.SGD``). Written out
    because constructing a ``torch.optim`` optimizer imports torch._dynamo,
    seconds of start-up for a model of a few hundred parameters."""
    with torch.no_grad():
        for i, p in enumerate(params):
            if p.grad is None:
                continue
            step = p.grad
            if momentum:
                velocity[i].mul_(momentum).add_(step)
                step = velocity[i]
            p.add_(step, alpha=-lr)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class FedRunner:
    """Runs one federated training with one protocol.

    ``protocol`` overrides ``config.protocol`` (the plaintext baseline of a
    secure run uses the same config with ``protocol="plaintext"``). Override
    :meth:`local_update` to plug in another local trainer.
    """

    def __init__(self, config: TrainConfig, data: FederatedData | None = None, *,
                 protocol: str | None = None, simulate_fn: Callable[..., Any] | None = None):
        self.config = config
        self.protocol = protocol or config.protocol
        self.degree: int | None = None  # set by check_config
        self._threshold = 0
        self.check_config()
        self.data = data if data is not None else make_federated_data(
            config.clients, config.split, config.alpha, config.seed, config.test_fraction,
            config.min_examples, dataset=config.dataset)
        if len(self.data.clients) != config.clients:
            raise ParameterError(f"data has {len(self.data.clients)} clients, the config {config.clients}")
        self.rule = Rule(config.rule, server_lr=config.server_lr, alpha=config.hybrid_alpha,
                         beta=config.hybrid_beta)
        self.model = make_model(config.model, self.data.n_features, config.hidden,
                                seed_for(config.seed, _TAG_MODEL))
        self.global_state: dict[str, torch.Tensor] = copy.deepcopy(self.model.state_dict())
        _, self.spec = flatten_state_dict(self.model, who="global model")
        self._simulate = simulate_fn
        self._work = copy.deepcopy(self.model)
        self._bn = _has_batchnorm(self.model)
        self.metrics: list[dict[str, Any]] = []
        #: clients an aborted round named as its cause: left out of every later round
        self.excluded: set[int] = set()
        self.accountant: Any = None
        if self._dp is not None:
            from ..dp.accounting import DPAccountant

            self.accountant = DPAccountant()

    # -- configuration ---------------------------------------------------------------
    @property
    def dp(self) -> Any:
        """This run's current :class:`secagg.dp.DPConfig` (its clip moves with
        adaptive clipping), or ``None``."""
        return self._dp

    @property
    def threshold(self) -> int:
        """Fewest surviving clients a round needs (per neighbourhood for sparse SecAgg+)."""
        return self._threshold

    def check_config(self) -> None:
        """All parameter checks that can be made before the first round."""
        c = self.config
        if self.protocol not in PROTOCOLS:
            raise ParameterError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if c.rule not in TRAIN_RULES:
            raise ParameterError(f"rule must be one of {TRAIN_RULES} for training, got {c.rule!r}"
                                 + (" (a sum of model deltas is not a model update)" if c.rule == "sum" else ""))
        if c.split not in SPLITS:
            raise ParameterError(f"split must be one of {SPLITS}, got {c.split!r}")
        if c.dataset not in DATASETS:
            raise ParameterError(f"dataset must be one of {DATASETS}, got {c.dataset!r}")
        if c.model not in MODELS:
            raise ParameterError(f"model must be one of {MODELS}, got {c.model!r}")
        for name in ("clients", "rounds", "epochs", "batch_size"):
            v = getattr(c, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ParameterError(f"{name} must be a positive integer, got {v!r}")
        if c.clients < 2:
            raise ParameterError("federated training needs at least 2 clients")
        if not (isinstance(c.dropout, (int, float)) and 0.0 <= c.dropout < 1.0):
            raise ParameterError(f"dropout rate must be in [0, 1), got {c.dropout!r}")
        for name in ("lr", "server_lr"):
            v = getattr(c, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ParameterError(f"{name} must be a finite number > 0, got {v!r}")
        if c.server_lr != 1.0 and c.rule != "fedavg":
            raise ParameterError(f"server_lr is FedAvg's server learning rate; rule {c.rule!r} applies the "
                                 "aggregate as it is (use --rule fedavg)")
        if not (0.0 <= c.momentum < 1.0):
            raise ParameterError(f"momentum must be in [0, 1), got {c.momentum!r}")
        if c.on_abort not in ("skip", "raise"):
            raise ParameterError(f"on_abort must be 'skip' or 'raise', got {c.on_abort!r}")
        for name in ("client_weights", "client_quality"):
            vals = getattr(c, name)
            if vals is None:
                continue
            if len(vals) != c.clients:
                raise ParameterError(f"{name} has {len(vals)} entries for {c.clients} clients")
            what = "weight" if name == "client_weights" else "quality"
            for i, w in enumerate(vals, start=1):
                if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
                    raise ParameterError(f"client {i}: {what} must be a finite number > 0, got {w!r}")
        if c.client_weights is not None and c.rule != "weighted":
            raise ParameterError("client_weights apply to the 'weighted' rule only "
                                 "(fedavg weighs by examples, hybrid by examples and client_quality)")
        if c.client_quality is not None and c.rule != "hybrid":
            raise ParameterError("client_quality applies to the 'hybrid' rule only")
        # The encoding itself validates clip / frac_bits.
        FixedPoint(clip=float(c.clip), frac_bits=c.frac_bits, max_weight=float(c.max_weight or 1.0))
        self._dp = None
        if c.dp_epsilon is not None:
            if c.protocol == "plaintext":
                raise ParameterError("distributed DP needs a secure protocol (secagg, secagg+ or paillier): each "
                                     "client adds its share of the noise before masking or encryption")
            if c.rule != "mean":
                raise ParameterError(f"a distributed-DP round is unweighted: use rule 'mean', not {c.rule!r} "
                                     "(a client's weight would be released without noise and change the "
                                     "sensitivity)")
            from ..dp.plan import DEFAULT_BITS, DPConfig

            dp = DPConfig(epsilon=c.dp_epsilon, delta=c.dp_delta, rounds=c.rounds, mechanism=c.dp_mechanism,
                          clip=c.dp_clip, bits=DEFAULT_BITS if c.dp_bits is None else c.dp_bits,
                          adaptive_clip=c.dp_adaptive_clip)
            if self.protocol != "plaintext":  # the baseline of a DP run has no DP
                self._dp = dp
        if c.threshold is not None and not (isinstance(c.threshold, int) and 1 <= c.threshold <= c.clients):
            raise ParameterError(f"threshold must be an integer in [1, {c.clients}], got {c.threshold!r}")
        survivors = c.clients - n_dropped(c.clients, c.dropout)
        try:
            t, self.degree = round_threshold(self.protocol, c.clients, c.dropout, c.threshold)
        except ParameterError as exc:
            raise ParameterError(
                f"dropout rate {c.dropout} drops {c.clients - survivors} of {c.clients} clients each round, "
                f"leaving {survivors}; {self.protocol} cannot run that: {exc}") from None
        self._threshold = t
        complete = self.degree is None or self.degree == c.clients - 1
        if complete and survivors < t:
            raise ParameterError(
                f"dropout rate {c.dropout} drops {c.clients - survivors} of {c.clients} clients each round, "
                f"leaving {survivors}, fewer than the {self.protocol} threshold of {t}; "
                f"lower the dropout rate or add clients")

    # -- client side --------------------------------------------------------------------
    def local_update(self, client_id: int, global_state: Mapping[str, torch.Tensor],
                     round_number: int) -> LocalResult:
        """E epochs of minibatch SGD from ``global_state`` on client ``client_id``'s data."""
        c = self.config
        x_np, y_np = self.data.clients[client_id - 1]
        x = torch.from_numpy(x_np)
        y = torch.from_numpy(y_np.astype(np.float32)).reshape(-1, 1)
        model = self._work
        model.load_state_dict(global_state)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        velocity = [torch.zeros_like(p) for p in params] if c.momentum else []
        loss_fn = nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(seed_for(c.seed, _TAG_LOCAL, round_number, client_id))
        n = len(y)
        total, count = 0.0, 0
        for _ in range(c.epochs):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, c.batch_size):
                idx = perm[start:start + c.batch_size]
                if self._bn and len(idx) < 2:
                    continue  # BatchNorm cannot train on a batch of one
                for p in params:
                    p.grad = None
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                _sgd_step(params, velocity, c.lr, c.momentum)
                total += float(loss.detach()) * len(idx)
                count += len(idx)
        model.eval()
        with torch.no_grad():
            acc = float(((model(x) > 0).float() == y).float().mean())
        return LocalResult(client_id, {k: v.detach().clone() for k, v in model.state_dict().items()},
                           n, total / max(count, 1), acc)

    def client_weight(self, result: LocalResult) -> float | None:
        """The weight client ``result.client_id`` encodes under the rule (None for mean)."""
        c, cid = self.config, result.client_id
        if c.rule == "mean":
            return None
        if c.rule == "fedavg":
            return float(result.examples)
        if c.rule == "weighted":
            return float(c.client_weights[cid - 1]) if c.client_weights is not None else float(result.examples)
        quality = (c.client_quality[cid - 1] if c.client_quality is not None
                   else max(result.train_accuracy, 0.01))
        return hybrid_weight(result.examples, quality, c.hybrid_alpha, c.hybrid_beta)

    # -- one round ------------------------------------------------------------------------
    def _encoding(self, weights: Sequence[float] | None) -> FixedPoint:
        c = self.config
        if c.max_weight is not None:
            max_w = float(c.max_weight)
        elif weights:
            max_w = float(2 ** math.ceil(math.log2(max(max(weights), 1.0))))
        else:
            max_w = 1.0
        return FixedPoint(clip=float(c.clip), frac_bits=c.frac_bits, max_weight=max_w)

    def _aggregate(self, round_number: int, updates: list[np.ndarray], weights: list[float] | None,
                   dropped: list[int], encoding: FixedPoint) -> Any:
        c = self.config
        stage = DROPOUT_STAGE[self.protocol]
        simulate: Callable[..., Any] | None = self._simulate
        if simulate is None:
            from ..simulation import simulate as default_simulate
            simulate = default_simulate
        schedule = {cid: stage for cid in dropped}
        schedule.update({cid: EXCLUDED_STAGE[self.protocol] for cid in self.excluded})
        kwargs: dict[str, Any] = dict(
            protocol=self.protocol, rule=self.rule, dropouts=schedule,
            seed=seed_for(c.seed, _TAG_PROTOCOL, round_number), encoding=encoding,
            threshold=c.threshold)
        if self.protocol in ("secagg", "secagg+"):
            kwargs["dropout_tolerance"] = dropout_tolerance(self.protocol, c.clients, c.dropout)
        if self.protocol == "paillier":
            kwargs["key_bits"] = c.key_bits
            if c.clients - len(dropped) < self.threshold:  # the runner's own minimum (see round_threshold)
                raise ProtocolAborted(AbortReason.TOO_FEW_SURVIVORS,
                                      f"{c.clients - len(dropped)} clients submitted, the round needs "
                                      f"{self.threshold}")
        if c.malicious_server:
            kwargs["malicious_server"] = True
        if self._dp is not None:
            kwargs["dp"] = self._dp
            kwargs["encoding"] = None  # a DP round encodes with its own parameters
        return simulate(updates, weights, **kwargs)

    def run_round(self, round_number: int) -> dict[str, Any]:
        c = self.config
        dropped = sorted(set(dropout_schedule(c.seed, round_number, c.clients, c.dropout)) | self.excluded)
        # 1. local training on every client (dropped ones vanish only after training)
        t0 = time.perf_counter()
        results = [self.local_update(cid, self.global_state, round_number) for cid in range(1, c.clients + 1)]
        t_local = time.perf_counter() - t0
        # 2. each client's delta against the global model, checked before sending
        global_vec, _ = flatten_state_dict(self.global_state, self.spec, who="global model")
        updates: dict[int, np.ndarray] = {}
        for r in results:
            vec, _ = flatten_state_dict(r.state_dict, self.spec, who=f"client {r.client_id}")
            updates[r.client_id] = vec - global_vec
        weights = {r.client_id: self.client_weight(r) for r in results}
        wmap = None if c.rule == "mean" else {k: float(v) for k, v in weights.items()}  # type: ignore[arg-type]
        validate_updates(updates, wmap, self.spec.size)
        ordered = [updates[cid] for cid in range(1, c.clients + 1)]
        wlist = None if wmap is None else [wmap[cid] for cid in range(1, c.clients + 1)]
        encoding = self._encoding(wlist)
        included_ids = [cid for cid in range(1, c.clients + 1) if cid not in set(dropped)]
        dp_clip = None if self._dp is None else float(self._dp.clip)
        clipped = 0 if dp_clip is not None else int(
            sum(np.count_nonzero(np.abs(updates[cid]) > encoding.clip) for cid in included_ids))
        if clipped and self.protocol != "plaintext":
            warnings.warn(f"round {round_number}: {clipped} update entries exceed clip={encoding.clip} "
                          "and are clipped by the encoding; raise --clip", RuntimeWarning, stacklevel=2)
        # 3. secure aggregation
        t1 = time.perf_counter()
        aborted = ""
        try:
            res = self._aggregate(round_number, ordered, wlist, dropped, encoding)
        except ProtocolAborted as exc:
            if c.on_abort == "raise":
                raise
            blamed = sorted(set(exc.culprits) - self.excluded)
            self.excluded.update(blamed)
            warnings.warn(f"round {round_number} aborted ({exc}); the global model is unchanged"
                          + (f"; clients {blamed} are left out of the next rounds" if blamed else ""),
                          RuntimeWarning, stacklevel=2)
            res, aborted = None, str(exc.reason.value)
        t_agg = time.perf_counter() - t1
        # 4. server step
        if res is not None:
            aggregate = np.asarray(res.aggregate, dtype=np.float64)
            inc = list(res.included)
            if dp_clip is not None:  # the noiseless mean of the L2-clipped updates
                ref = reference_aggregate(self.rule, [_l2_clip(updates[i], dp_clip) for i in inc])
            else:
                ref = reference_aggregate(self.rule, [updates[i] for i in inc],
                                          None if wmap is None else [wmap[i] for i in inc],
                                          clip=None if self.protocol == "plaintext" else encoding.clip)
            agg_error = float(np.max(np.abs(aggregate - ref))) if aggregate.size else 0.0
            new_vec = self.rule.apply(global_vec, aggregate)
            self.global_state = unflatten_state_dict(new_vec, self.spec, base=self.global_state)
            sent = [res.bytes_sent.get(i, 0) for i in inc] or [0]
            recv = [res.bytes_received.get(i, 0) for i in inc] or [0]
            timings = {str(k): float(v) for k, v in res.timings.items()}
            n_inc, dropped_ids = len(inc), sorted(int(k) for k in res.dropped)
        else:
            agg_error, sent, recv, timings = float("nan"), [0], [0], {}
            n_inc, dropped_ids = 0, dropped
        # privacy spent: only a released aggregate costs privacy (an abort releases nothing)
        dp_row: dict[str, Any] = {}
        if self._dp is not None:
            report = None if res is None else res.dp
            if report is not None:
                self.accountant.add_report(report)
                if report.next_clip is not None:
                    self._dp = dataclasses.replace(self._dp, clip=float(report.next_clip))
            dp_row = {
                "dp_epsilon_round": float("nan") if report is None else float(report.epsilon),
                "dp_epsilon_spent": self.dp_epsilon_spent(),
                "dp_noise_std": (float("nan") if report is None
                                 else math.sqrt(report.noise_variance) / max(n_inc, 1)),
                "dp_clip": dp_clip,
                "dp_clipped_fraction": (float("nan") if report is None or report.clipped_fraction is None
                                        else float(report.clipped_fraction)),
            }
        # 5. evaluation of the new global model
        t2 = time.perf_counter()
        ev = self.evaluate()
        t_eval = time.perf_counter() - t2
        row: dict[str, Any] = {
            "round": round_number,
            **ev,
            "local_train_loss": float(np.mean([results[i - 1].train_loss for i in included_ids])),
            "n_included": n_inc,
            "n_dropped": len(dropped_ids),
            "dropped": dropped_ids,
            "excluded": sorted(self.excluded),
            "aborted": aborted,
            "bytes_up_per_client": float(np.mean(sent)),
            "bytes_down_per_client": float(np.mean(recv)),
            "model_broadcast_bytes": self.model_bytes(),
            "clipped_entries": clipped,
            "aggregation_error": agg_error,
            "time_local_training_s": t_local,
            "time_secure_aggregation_s": t_agg,
            "time_evaluation_s": t_eval,
            "aggregation_timings_s": timings,
            **dp_row,
        }
        self.metrics.append(row)
        return row

    def dp_epsilon_spent(self) -> float:
        """The run's epsilon so far at ``dp_delta`` (0 before any released round;
        ``nan`` without DP)."""
        if self.accountant is None:
            return float("nan")
        if not self.accountant.rounds:
            return 0.0
        return float(self.accountant.epsilon(self.config.dp_delta))

    # -- evaluation -------------------------------------------------------------------
    def model_bytes(self) -> int:
        return int(sum(v.numel() * v.element_size() for v in self.global_state.values()))

    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy of the global model on the pooled training set and the test set."""
        model = self._work
        model.load_state_dict(self.global_state)
        model.eval()
        loss_fn = nn.BCEWithLogitsLoss()
        out: dict[str, float] = {}
        with torch.no_grad():
            for split, (x_np, y_np) in (("train", (self.data.x_train, self.data.y_train)),
                                        ("test", (self.data.x_test, self.data.y_test))):
                x = torch.from_numpy(x_np)
                y = torch.from_numpy(y_np.astype(np.float32)).reshape(-1, 1)
                logits = model(x)
                out[f"{split}_loss"] = float(loss_fn(logits, y))
                out[f"{split}_accuracy"] = float(((logits > 0).float() == y).float().mean())
        return out

    def initial_row(self) -> dict[str, Any]:
        """Round 0: the initial model, before any aggregation."""
        return {"round": 0, **self.evaluate(), "local_train_loss": float("nan"), "n_included": 0,
                "n_dropped": 0, "dropped": [], "excluded": [], "aborted": "", "bytes_up_per_client": 0.0,
                "bytes_down_per_client": 0.0, "model_broadcast_bytes": self.model_bytes(),
                "clipped_entries": 0, "aggregation_error": 0.0, "time_local_training_s": 0.0,
                "time_secure_aggregation_s": 0.0, "time_evaluation_s": 0.0, "aggregation_timings_s": {},
                **({} if self._dp is None else {
                    "dp_epsilon_round": 0.0, "dp_epsilon_spent": 0.0, "dp_noise_std": 0.0,
                    "dp_clip": float(self._dp.clip), "dp_clipped_fraction": float("nan")})}

    def run(self, progress: Any = None, on_round: Callable[[dict[str, Any]], None] | None = None
            ) -> list[dict[str, Any]]:
        """All rounds; returns the per-round metrics (row 0 = the initial model).
        ``progress`` is an optional tqdm-like object (``update``, ``set_postfix``)."""
        # The models are tiny: torch's intra-op threads only add synchronisation
        # cost (and spin badly on a busy machine), so train single-threaded.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.metrics = [self.initial_row()]
            for r in range(1, self.config.rounds + 1):
                row = self.run_round(r)
                if on_round is not None:
                    on_round(row)
                if progress is not None:
                    progress.set_postfix(acc=f"{row['test_accuracy']:.3f}", refresh=False)
                    progress.update(1)
        finally:
            torch.set_num_threads(threads)
        return self.metrics
