"""Secure-aggregation settings of a Flower run, read from the run config.

A Flower app declares its run config in ``pyproject.toml`` under
``[tool.flwr.app.config]``; ``flwr run --run-config 'k=v ...'`` overrides it.
The keys this adapter reads all start with ``secagg-`` (any other ``secagg-``
key is refused, so a typo never silently falls back to a default)::

    secagg-protocol           "secagg+" (sparse graph), "secagg" (complete graph) or "paillier"
                              (additively homomorphic encryption, decrypted by a committee of
                              the nodes: see secagg-committee-key)
    secagg-committee-key      "paillier" only: path, on the server host, of the committee's
                              public key file (committee.key of ``secagg keys deal-committee``)
    secagg-dropout-tolerance  fraction of nodes that may drop in a round (0.2)
    secagg-corrupt-fraction   fraction of nodes assumed to collude with the server (0.0)
    secagg-threshold          Shamir threshold t; 0 derives it (default)
    secagg-degree             neighbours per node (SecAgg+); 0 derives it (default)
    secagg-clip               each update entry is clipped to [-clip, clip] (1.0)
    secagg-frac-bits          fixed-point fractional bits (16)
    secagg-max-weight         largest client weight, e.g. examples per node (1000.0)
    secagg-rule               aggregation rule, any averaging rule of secagg.aggregation
                              ("fedavg"; "mean", "weighted", "hybrid"): the server applies
                              global + server_lr * result
    secagg-weighted-by        reply metric used as the client weight by the rules that use
                              weights ("num-examples"); "" gives every node weight 1 (the
                              rules that do not use weights always send 1)
    secagg-train-timeout      seconds for the first stage, where nodes train (300)
    secagg-stage-timeout      seconds for every other protocol stage (60): the last resort; a
                              stage closes as soon as every node answered or is gone
    secagg-straggler-grace    seconds a stage still waits for its last nodes once at most the
                              tolerated number of dropouts (secagg-dropout-tolerance of the
                              nodes asked, at least 1) are missing (5); 0 turns the window off
                              (the stage then waits for those nodes until Flower reports them
                              offline or the deadline passes)
    secagg-straggler-factor   the window is at least this many times the time the other nodes
                              took to answer that stage (0.5), so slow training is not cut short
    secagg-poll-interval      seconds between polls for replies (0.2)
    secagg-on-abort           "raise" (stop the run) or "skip" (keep the model, go on)
    secagg-private-metrics    true: federated evaluation metrics are aggregated under secure
                              aggregation (the masking protocol; SecAgg+ in "paillier" runs),
                              weighted by secagg-weighted-by: the server learns the weighted
                              means and the total weight only (true); false: plain Flower
                              evaluation, every node's metrics reach the server
    secagg-eval-metrics       comma-separated names of the evaluate replies' metrics to
                              aggregate privately, e.g. "eval-loss,eval-accuracy" (""); a
                              node whose reply lacks one drops out of that evaluation
    secagg-metrics-clip       each metric value is clipped to [-clip, clip] (100.0)
    secagg-malicious-server   true: signed keys and a consistency round, secure against a
                              server that lies about dropouts (nodes need signature keys:
                              see secagg.flower.keys) (false; masking protocols only)
    secagg-dp-epsilon         distributed differential privacy (docs/flower.md, "Differential
                              privacy"): the target epsilon of the whole run's training
                              updates; 0 (default) turns DP off. With DP on every training
                              round is a distributed-DP round: each node clips its update in
                              L2, adds its share of discrete noise and encodes it instead of
                              the fixed-point encoding (secagg-clip, secagg-frac-bits and
                              secagg-max-weight then do not apply to training rounds), the
                              round is unweighted (secagg-rule must be "mean") and the server
                              learns only the noised sum
    secagg-dp-delta           the delta of the guarantee (1e-5)
    secagg-dp-mechanism       "dgauss" (distributed discrete Gaussian, default) or "skellam"
    secagg-dp-clip            L2 clip of one node's update (1.0); with adaptive clipping, the
                              first round's clip
    secagg-dp-bits            bits per coordinate of the noised modular sum (20)
    secagg-dp-rounds          the number of training rounds the epsilon covers; 0 (default):
                              the number of rounds the strategy runs (SecAggFedAvg.start's
                              num_rounds, which the example ServerApp takes from
                              num-server-rounds); a value below that number is refused
    secagg-dp-adaptive-clip   true: the clip follows the median of the update norms, from a
                              noised count of clipped updates carried in the same round
                              (false)

The masking-only keys (dropout tolerance, corrupt fraction, threshold, degree,
malicious-server) are ignored by "paillier" rounds, whose threshold is the
committee's (fixed when its key was dealt) and whose decryption floor is a
majority of the committee.

With DP on the ServerApp logs, for every completed training round, the
round's own epsilon, the epsilon spent so far (composed over the rounds run),
the survivors, the noise standard deviation and the clip; an aborted round
releases nothing and spends nothing. DP needs the ``dp-accounting`` package
(the ``dp`` extra) on the server and on the nodes that check a round's
epsilon (node config ``secagg-dp-max-round-epsilon``).

Only the server reads these: it puts the resulting protocol parameters into
the first message of every round, and each client validates them there
(threshold against the threat model, ring size against overflow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping

from ..aggregation import AVERAGING_RULES
from ..encoding.fixed_point import FixedPoint
from ..errors import ParameterError

if TYPE_CHECKING:
    from ..dp.plan import DPConfig

__all__ = ["SecAggSettings", "RUN_CONFIG_PREFIX", "PROTOCOLS"]

RUN_CONFIG_PREFIX = "secagg-"
#: The protocols a Flower run can use.
PROTOCOLS = ("secagg+", "secagg", "paillier")


@dataclass(frozen=True)
class SecAggSettings:
    """How the server runs secure aggregation over Flower messages."""

    protocol: str = "secagg+"
    dropout_tolerance: float = 0.2
    corrupt_fraction: float = 0.0
    threshold: int | None = None
    degree: int | None = None
    clip: float = 1.0
    frac_bits: int = 16
    max_weight: float = 1000.0
    rule: str = "fedavg"
    weighted_by: str = "num-examples"
    train_timeout: float = 300.0
    stage_timeout: float = 60.0
    poll_interval: float = 0.2
    on_abort: str = "raise"
    malicious_server: bool = False
    committee_key: str = ""
    straggler_grace: float = 5.0
    straggler_factor: float = 0.5
    private_metrics: bool = True
    eval_metrics: str = ""
    metrics_clip: float = 100.0
    dp_epsilon: float = 0.0
    dp_delta: float = 1e-5
    dp_mechanism: str = "dgauss"
    dp_clip: float = 1.0
    dp_bits: int = 20
    dp_rounds: int | None = None
    dp_adaptive_clip: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ParameterError(f"secagg-protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if not isinstance(self.committee_key, str):
            raise ParameterError("secagg-committee-key must be a file path")
        if self.protocol == "paillier":
            if not self.committee_key:
                raise ParameterError("secagg-protocol = 'paillier' needs secagg-committee-key: the path of the "
                                     "committee's public key file (secagg keys deal-committee)")
            if self.malicious_server:
                raise ParameterError("secagg-malicious-server applies to the masking protocols ('secagg', "
                                     "'secagg+'), not to 'paillier'")
        if self.rule not in AVERAGING_RULES:
            raise ParameterError(f"secagg-rule must be an averaging rule, one of {AVERAGING_RULES}, got {self.rule!r}")
        if self.on_abort not in ("raise", "skip"):
            raise ParameterError(f"secagg-on-abort must be 'raise' or 'skip', got {self.on_abort!r}")
        for name in ("train_timeout", "stage_timeout", "poll_interval"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ParameterError(f"secagg-{name.replace('_', '-')} must be a number > 0, got {v!r}")
        for name in ("threshold", "degree"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ParameterError(f"secagg-{name} must be a positive integer (or 0 to derive it)")
        for name in ("straggler_grace", "straggler_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ParameterError(f"secagg-{name.replace('_', '-')} must be a number >= 0, got {v!r}")
        if not isinstance(self.malicious_server, bool):
            raise ParameterError("secagg-malicious-server must be true or false")
        if not isinstance(self.private_metrics, bool):
            raise ParameterError("secagg-private-metrics must be true or false")
        if not isinstance(self.eval_metrics, str):
            raise ParameterError("secagg-eval-metrics must be a string of comma-separated metric names")
        names = self.metric_names
        if len(set(names)) != len(names) or any(not n or n != n.strip() for n in names):
            raise ParameterError(f"secagg-eval-metrics must name distinct metrics, comma-separated, got "
                                 f"{self.eval_metrics!r}")
        if self.private_metrics:
            self.metrics_encoding  # validates metrics_clip
        self.encoding  # validates clip / frac_bits / max_weight
        self._check_dp()

    def _check_dp(self) -> None:
        e = self.dp_epsilon
        if isinstance(e, bool) or not (isinstance(e, (int, float)) and math.isfinite(e) and e >= 0):
            raise ParameterError(f"secagg-dp-epsilon must be a number > 0 (or 0 for no DP), got {e!r}")
        if self.dp_rounds is not None and (type(self.dp_rounds) is not int or self.dp_rounds < 1):
            raise ParameterError(f"secagg-dp-rounds must be a positive integer (or 0 for the run's number of "
                                 f"rounds), got {self.dp_rounds!r}")
        if not isinstance(self.dp_adaptive_clip, bool):
            raise ParameterError("secagg-dp-adaptive-clip must be true or false")
        if not self.dp:
            return
        if self.rule != "mean":
            raise ParameterError(f"secagg-dp-epsilon > 0 makes every training round unweighted (a node's weight "
                                 f"would be released without noise): set secagg-rule = \"mean\", not "
                                 f"{self.rule!r}")
        self.dp_config(1)  # validates delta, mechanism, clip and bits with the plan's own checks

    @property
    def dp(self) -> bool:
        """Whether training rounds run with distributed DP (``secagg-dp-epsilon`` > 0)."""
        return self.dp_epsilon > 0

    def dp_config(self, rounds: int | None = None) -> "DPConfig | None":
        """The run's DP plan (:class:`secagg.dp.DPConfig`), or ``None`` with DP
        off. ``rounds`` is the number of training rounds the run will have; the
        plan covers ``secagg-dp-rounds`` rounds if set, else ``rounds``. A
        :class:`ParameterError` when neither is known, or when fewer rounds
        are planned than the run will have (the target would be exceeded)."""
        from ..dp.plan import DPConfig

        if not self.dp:
            return None
        if rounds is not None and (type(rounds) is not int or rounds < 1):
            raise ParameterError(f"the number of rounds must be a positive integer, got {rounds!r}")
        planned = self.dp_rounds if self.dp_rounds is not None else rounds
        if planned is None:
            raise ParameterError("secagg-dp-epsilon covers a number of rounds: set secagg-dp-rounds, or run the "
                                 "rounds through SecAggFedAvg.start, which covers the rounds it runs")
        if rounds is not None and planned < rounds:
            raise ParameterError(f"secagg-dp-rounds = {planned} but the run has {rounds} training rounds: the "
                                 f"spent epsilon would exceed secagg-dp-epsilon = {self.dp_epsilon:g}; raise "
                                 f"secagg-dp-rounds (or set it to 0 for the run's number of rounds)")
        try:
            return DPConfig(epsilon=self.dp_epsilon, delta=self.dp_delta, rounds=planned,
                            mechanism=self.dp_mechanism, clip=self.dp_clip, bits=self.dp_bits,
                            adaptive_clip=self.dp_adaptive_clip)
        except ParameterError as exc:  # name the run-config key: "delta must be ..." -> "secagg-dp-delta must be ..."
            word = str(exc).split(" ", 1)[0]
            key = f"secagg-dp-{word}" if word in ("delta", "mechanism", "clip", "bits") else "secagg-dp-*"
            raise ParameterError(f"{key}{str(exc)[len(word):] if key != 'secagg-dp-*' else ': ' + str(exc)}") from None

    @property
    def encoding(self) -> FixedPoint:
        return FixedPoint(clip=self.clip, frac_bits=self.frac_bits, max_weight=self.max_weight)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics aggregated privately (``secagg-eval-metrics``), in order."""
        return tuple(n for n in self.eval_metrics.split(",")) if self.eval_metrics else ()

    @property
    def metrics_encoding(self) -> FixedPoint:
        return FixedPoint(clip=self.metrics_clip, frac_bits=self.frac_bits, max_weight=self.max_weight)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], prefix: str = RUN_CONFIG_PREFIX) -> "SecAggSettings":
        """Settings from a Flower run config (``context.run_config``): every
        ``secagg-*`` key, with defaults for the missing ones."""
        names = {f.name.replace("_", "-"): f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in run_config.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            f = names.get(name)
            if f is None:
                raise ParameterError(f"unknown run-config key {key!r}; known: "
                                     + ", ".join(prefix + n for n in sorted(names)))
            kwargs[f.name] = _coerce(key, value, f.name)
        return cls(**kwargs)

    def as_run_config(self, prefix: str = RUN_CONFIG_PREFIX) -> dict[str, Any]:
        """The inverse of :meth:`from_run_config` (``None`` written as 0)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[prefix + f.name.replace("_", "-")] = 0 if v is None else v
        return out


_FLOATS = {"dropout_tolerance", "corrupt_fraction", "clip", "max_weight", "train_timeout", "stage_timeout",
           "poll_interval", "straggler_grace", "straggler_factor", "metrics_clip", "dp_epsilon", "dp_delta",
           "dp_clip"}
_INTS = {"frac_bits", "dp_bits"}
_OPTIONAL_INTS = {"threshold", "degree", "dp_rounds"}
_STRINGS = {"protocol", "rule", "weighted_by", "on_abort", "committee_key", "eval_metrics", "dp_mechanism"}
_BOOLS = {"malicious_server", "private_metrics", "dp_adaptive_clip"}


def _coerce(key: str, value: Any, name: str) -> Any:
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise ParameterError(f"run-config {key} must be true or false, got {value!r}")
        return value
    if name in _STRINGS:
        if not isinstance(value, str):
            raise ParameterError(f"run-config {key} must be a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"run-config {key} must be a number, got {value!r}")
    if name in _FLOATS:
        return float(value)
    if int(value) != value:
        raise ParameterError(f"run-config {key} must be an integer, got {value!r}")
    if name in _OPTIONAL_INTS:
        return None if int(value) == 0 else int(value)
    assert name in _INTS
    return int(value)
