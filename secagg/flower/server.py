"""Server side: the masking protocol as rounds of Flower messages over a Grid,
and :class:`SecAggFedAvg`, a FedAvg-style strategy whose training rounds run
under secure aggregation with any averaging rule.

The round itself is the shared server driver
(:class:`~secagg.drivers.ServerDriver` over
:class:`~secagg.protocols.masking.MaskingServer`); this module only moves its
bytes. One protocol stage is one exchange: push the driver's outbox as one
Flower message per node, then pull the replies into the driver until every
node answered or is gone (the stage closes early) or the stage's deadline
passes. A node is gone when it sends an error reply, when Flower no longer
lists it online (``grid.get_node_ids()``, asked once a second), or when it is
still missing after the straggler window (:class:`EarlyClose`: once no more
than the tolerated dropouts are missing, the stage waits at most
``max(secagg-straggler-grace, secagg-straggler-factor * t)`` more seconds,
``t`` being the time the others took); the deadline is the last resort.
A Flower error reply (the ClientApp raised, the node refused, the
SuperLink reports the node or message unavailable) tells the driver the node
is gone; a reply that fails the protocol's checks is refused and recorded by
the driver. Either way the node counts as dropped at that stage and the
protocol recovers at close (unmasking the dropped node's pairwise masks from
the survivors' shares). Each message's TTL equals its stage deadline, so a
late reply is discarded by the SuperLink and can never leak into a later
stage. Timings, bytes and rejections reach an
:class:`~secagg.drivers.Observer`; the round report's stage durations come
from one.

Node ids (64-bit Flower ids) map to protocol client ids ``1..n`` in sorted
order for each round.

With ``secagg-protocol = "paillier"`` the same exchange runs
:class:`~secagg.protocols.paillier.PaillierServer` with the decryption
committee of the run config's ``secagg-committee-key`` (no key holder: the
server never holds the decryption key): each node's client id is its
committee holder id, which it tells in an ``identify`` exchange before its
first round; the stages are Submit (the nodes train and submit encrypted
updates), Decrypt (each member that submitted decrypts its part of the
aggregate, with a proof) and, when some ciphertexts lack ``t`` valid shares,
Decrypt recovery. A member lost during decryption is given up like a dropped
node; the others decrypt its part in the recovery attempt.

With distributed differential privacy (``secagg-dp-epsilon`` > 0) every
training round carries fresh :class:`~secagg.dp.DPRoundParams` in its
parameters (a new public rotation seed each round; the noise calibrated for
the round's survivor floor: the masking threshold, or the Paillier
decryption floor), so each node clips its update in L2 and adds its share of
discrete noise before masking or encryption; :class:`DPBudget` composes each
completed round's :class:`~secagg.dp.DPRoundReport` in an accountant kept
across rounds, the round's epsilon and the epsilon spent so far are logged and
go into the :class:`RoundReport` (``dp``), and with adaptive clipping the next
round's clip comes from the report. An aborted round releases nothing and
spends nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from ..aggregation import AVERAGING_RULES, Rule, get_rule
from ..dp.plan import DPConfig
from ..dp.round import DPRoundParams, DPRoundReport
from ..drivers.observer import TO_CLIENT, Observer, Observers
from ..drivers.server import ServerDriver
from ..encoding import wire
from ..errors import AbortReason, LocalProtocolError, ParameterError, ProtocolAborted, RemoteProtocolError
from ..protocols.masking import Abort, MaskingParams, MaskingServer
from ..protocols.paillier import PaillierParams, PaillierServer, PublicKeyMessage
from ..protocols.paillier.params import default_min_clients
from ..protocols.paillier.messages import KeyMismatch, UnexpectedSender
from ..protocols.paillier.threshold import CommitteeKey
from ..protocols.stages import Stage
from .client import IDENTIFY_STAGE
from .keys import load_committee_key
from .records import ModelLayout, bytes_field, pack, unpack
from .settings import SecAggSettings

__all__ = ["SecAggFedAvg", "RoundReport", "EarlyClose", "SecAggConfigError", "StageLog", "run_secure_round", "identify_nodes",
           "identify_holders", "exchange", "make_params", "make_paillier_params", "training_rule",
           "run_secure_evaluation", "metrics_settings", "DPBudget"]

log = logging.getLogger("flwr.secagg")


class SecAggConfigError(ParameterError):
    """The run's configuration cannot give secure aggregation (e.g. too few
    nodes for the threshold). Raised before any message is sent."""


@dataclass
class RoundReport:
    """What happened in one secure-aggregation round (no update values, except
    the aggregate itself, which the server is meant to learn)."""

    server_round: int
    outcome: str  # "completed" | "aborted"
    nodes: tuple[int, ...]
    client_ids: dict[int, int]  # node id -> protocol client id
    included: tuple[int, ...] = ()  # node ids whose inputs are in the aggregate
    dropped: dict[int, str] = field(default_factory=dict)  # node id -> protocol stage it missed
    failures: dict[int, str] = field(default_factory=dict)  # node id -> "stage: what happened"
    sum_weights: float | None = None
    mean_update: np.ndarray | None = None  # the rule's result: the update the server applies
    abort_reason: str | None = None
    abort_detail: str = ""
    # node ids an aborted round is blamed on (e.g. a node whose shared secret did not reconstruct):
    # the strategy leaves them out of later rounds
    culprits: tuple[int, ...] = ()
    stage_seconds: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    verification_keys: dict[int, bytes] = field(default_factory=dict)  # malicious-server mode
    rule: str = "fedavg"
    # Paillier: the decryption committee (holders, threshold, key id, the members asked, those whose
    # shares failed, whether a recovery attempt ran)
    decryption: dict[str, Any] = field(default_factory=dict)
    # distributed DP (a completed DP round): the round's epsilon, the epsilon spent so far, survivors,
    # noise standard deviations, clip (DPBudget.record)
    dp: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self, with_aggregate: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "server_round": self.server_round, "outcome": self.outcome, "rule": self.rule,
            "nodes": [str(n) for n in self.nodes],
            "client_ids": {str(k): v for k, v in self.client_ids.items()},
            "included": [str(n) for n in self.included],
            "dropped": {str(k): v for k, v in self.dropped.items()},
            "failures": {str(k): v for k, v in self.failures.items()},
            "sum_weights": self.sum_weights, "abort_reason": self.abort_reason, "abort_detail": self.abort_detail,
            "culprits": [str(n) for n in self.culprits],
            "stage_seconds": self.stage_seconds, "params": self.params,
        }
        if self.verification_keys:
            out["verification_keys"] = {str(k): v.hex() for k, v in self.verification_keys.items()}
        if self.decryption:
            out["decryption"] = self.decryption
        if self.dp:
            out["dp"] = self.dp
        if with_aggregate and self.mean_update is not None:
            out["mean_update"] = self.mean_update.tolist()
        return out

    def to_json(self, with_aggregate: bool = False) -> str:
        return json.dumps(self.to_json_dict(with_aggregate), indent=1)


class DPBudget:
    """A run's distributed-DP budget, kept across its training rounds.

    ``config`` is the plan (:class:`~secagg.dp.DPConfig`: the target
    ``(epsilon, delta)`` over ``rounds`` rounds); :meth:`round_params` gives a
    round's :class:`~secagg.dp.DPRoundParams` (noise for ``n_min``
    survivors, the wrap check for ``n_max`` nodes, a fresh public rotation
    seed); :meth:`record` composes a completed round's report in the
    accountant and, with adaptive clipping, moves the clip for the next round.
    Only completed rounds are recorded: an aborted round releases nothing.
    Needs ``dp-accounting`` (the ``dp`` extra): without it the budget is a
    :class:`SecAggConfigError` before any message is sent."""

    def __init__(self, config: DPConfig):
        if not isinstance(config, DPConfig):
            raise SecAggConfigError("a DP budget takes a secagg.dp.DPConfig")
        try:
            from ..dp.accounting import DPAccountant
        except ImportError as exc:
            raise SecAggConfigError(f"secagg-dp-epsilon needs the dp-accounting package on the server (pip install "
                                    f"'secagg[dp]'): {exc}") from None
        self.target = config
        self.config = config
        self.accountant = DPAccountant()
        self.reports: list[DPRoundReport] = []

    @classmethod
    def of(cls, settings: SecAggSettings, rounds: int | None = None) -> "DPBudget | None":
        """The budget of a run with ``settings`` and ``rounds`` training rounds
        (``None`` if DP is off); a :class:`SecAggConfigError` for a plan that
        cannot cover them."""
        try:
            config = settings.dp_config(rounds)
        except ParameterError as exc:
            raise SecAggConfigError(str(exc)) from None
        return None if config is None else cls(config)

    @property
    def spent(self) -> float:
        """The epsilon (at the plan's delta) of every round recorded so far."""
        return self.accountant.epsilon(self.target.delta) if self.reports else 0.0

    def round_params(self, dim: int, n_min: int, n_max: int) -> DPRoundParams:
        """The next round's DP parameters (a fresh 32-byte rotation seed)."""
        return self.config.round_params(dim, n_min=n_min, n_max=n_max)

    def record(self, report: DPRoundReport) -> dict[str, Any]:
        """Compose a completed round; returns what the round report keeps."""
        if not isinstance(report, DPRoundReport):
            raise ParameterError("a DP round must report a DPRoundReport")
        self.accountant.add_report(report)
        self.reports.append(report)
        self.config = self.config.after(report)
        std = math.sqrt(report.noise_variance)
        p = report.params
        return {"mechanism": report.mechanism, "epsilon_round": report.epsilon, "epsilon_spent": self.spent,
                "epsilon_target": self.target.epsilon, "delta": self.target.delta,
                "rounds_released": len(self.reports), "rounds_planned": self.target.rounds,
                "survivors": report.survivors, "n_min": p.n_min, "n_max": p.n_max, "noise_std": std,
                "mean_noise_std": std / report.survivors, "clip": report.clip,
                "clipped_fraction": report.clipped_fraction, "next_clip": report.next_clip, "bits": p.bits,
                "granularity": p.granularity}


def _log_dp(server_round: int, dp: Mapping[str, Any]) -> None:
    log.info("secagg: round %d: DP (%s): epsilon %.4g this round, %.4g spent over %d of %d planned round(s) "
             "(target %.4g at delta %g); %d survivors (noise calibrated for %d); noise std %.4g on the sum, %.4g on "
             "the mean; L2 clip %.4g%s", server_round, dp["mechanism"], dp["epsilon_round"], dp["epsilon_spent"],
             dp["rounds_released"], dp["rounds_planned"], dp["epsilon_target"], dp["delta"], dp["survivors"],
             dp["n_min"], dp["noise_std"], dp["mean_noise_std"], dp["clip"],
             "" if dp["next_clip"] is None else
             f", noised clipped fraction {dp['clipped_fraction']:.3g}, next clip {dp['next_clip']:.4g}")
    if dp["epsilon_spent"] > dp["epsilon_target"] * (1 + 1e-9):
        log.warning("secagg: round %d: the epsilon spent (%.4g) exceeds the target %.4g", server_round,
                    dp["epsilon_spent"], dp["epsilon_target"])


#: Seconds between two asks of which nodes Flower still lists as online (``grid.get_node_ids()``).
LIVENESS_INTERVAL = 1.0


@dataclass(frozen=True)
class EarlyClose:
    """When an exchange stops waiting for a node before its deadline.

    * **Offline**: every ``liveness_interval`` seconds the exchange asks
      Flower which nodes are online (``grid.get_node_ids()``); a node with a
      message pending that Flower no longer lists (its SuperNode stopped
      sending heartbeats, or left) is gone at once.
    * **Straggler window**: once at most ``max_missing`` nodes are still
      pending and at least one node answered, the exchange waits at most
      ``max(grace, factor * t)`` seconds more, ``t`` being the time the
      others took; then the pending nodes are gone. ``grace = 0`` turns the
      window off.

    The exchange's own deadline stays the last resort."""

    max_missing: int = 1
    grace: float = 5.0
    factor: float = 1.0
    liveness_interval: float = LIVENESS_INTERVAL

    @classmethod
    def of(cls, settings: SecAggSettings, asked: int) -> "EarlyClose":
        """The run's rule for an exchange with ``asked`` nodes: the window
        opens once no more than the tolerated dropouts are missing."""
        return cls(max(1, math.floor(settings.dropout_tolerance * asked)), settings.straggler_grace,
                   settings.straggler_factor, LIVENESS_INTERVAL)

    def window(self, elapsed: float) -> float:
        return max(self.grace, self.factor * elapsed)


def _online(grid: Grid) -> set[int] | None:
    """The node ids Flower lists as online, or ``None`` if the Grid cannot tell."""
    try:
        return {int(n) for n in grid.get_node_ids()}
    except Exception as exc:  # a transient SuperLink error must not end the round: fall back to the deadline
        log.debug("secagg: cannot list the online nodes: %s", exc)
        return None


def _push_and_pull(grid: Grid, messages: Sequence[Message], timeout: float, poll_interval: float,
                   on_reply: Callable[[int, Message], None], *, on_unsent: Callable[[int], None] | None = None,
                   stop: Callable[[], bool] | None = None, early: EarlyClose | None = None,
                   on_gone: Callable[[int, str], None] | None = None) -> list[int]:
    """The one exchange loop: push ``messages`` (at most one per node), hand
    each reply to ``on_reply(node, reply)`` as it arrives, until every node
    answered or is gone, ``stop()`` holds or ``timeout`` seconds pass.
    With ``early``, a node Flower reports offline, or still pending when the
    straggler window closes, is handed to ``on_gone(node, why)`` and no
    longer waited for (a reply of it that comes later is not taken).
    Returns the node ids without a reply."""
    targets = [m.metadata.dst_node_id for m in messages]
    if len(set(targets)) != len(targets):
        raise ValueError("an exchange takes at most one message per node")
    start = time.monotonic()
    pushed = list(grid.push_messages(messages)) if messages else []
    pending: dict[str, int] = {}
    for mid, node in zip(pushed, targets):
        if mid:
            pending[mid] = node
        elif on_unsent is not None:  # the SuperLink did not take it: no reply will come
            on_unsent(node)
    answered: set[int] = set()
    deadline = start + timeout
    next_liveness = start + (early.liveness_interval if early is not None else 0.0)
    window_closes: float | None = None

    def give_up(why: Callable[[int], str]) -> None:
        for mid, node in list(pending.items()):
            del pending[mid]
            if on_gone is not None:
                on_gone(node, why(node))

    while pending and not (stop is not None and stop()):
        for reply in grid.pull_messages(list(pending)):
            mid = reply.metadata.reply_to_message_id
            if mid in pending:  # a reply to one of these messages, the first for it
                node = pending.pop(mid)
                answered.add(node)
                on_reply(node, reply)
        now = time.monotonic()
        if early is not None and pending:
            if now >= next_liveness:
                next_liveness = now + early.liveness_interval
                online = _online(grid)
                if online is not None:
                    for mid, node in list(pending.items()):
                        if node not in online:
                            del pending[mid]
                            if on_gone is not None:
                                on_gone(node, "no reply: Flower lists the node offline (no heartbeat, or it left)")
            if window_closes is None and early.grace > 0 and answered and len(pending) <= early.max_missing:
                window_closes = now + early.window(now - start)
            if window_closes is not None and now >= window_closes and pending:
                waited = now - start
                give_up(lambda node: f"no reply: still missing {waited:.1f}s after the exchange opened, when the "
                                     f"straggler window closed (the others had answered)")
        if not pending or (stop is not None and stop()) or now >= deadline:
            break
        time.sleep(poll_interval)
    return [n for n in targets if n not in answered]


def exchange(grid: Grid, messages: Sequence[Message], timeout: float,
             poll_interval: float = 0.2, early: EarlyClose | None = None
             ) -> tuple[dict[int, Message], list[int]]:
    """Push ``messages`` (one per node) and pull replies until every node has
    answered or ``timeout`` seconds pass (or, with ``early``, until every
    node answered or is gone: :class:`EarlyClose`). Returns the replies by
    node id and the node ids that did not answer.

    (``Grid.send_and_receive`` does the same but polls only every few
    seconds; a protocol of four or five stages is much faster with a short
    poll interval.)"""
    replies: dict[int, Message] = {}
    missing = _push_and_pull(grid, list(messages), timeout, poll_interval, replies.__setitem__, early=early)
    return replies, missing


_NO_REPLY = "no reply (offline, past the straggler window or the {:g}s deadline)"

# Flower's ErrorCode values for replies the SuperLink makes up itself
_EXPIRED = (3, 4)  # MESSAGE_UNAVAILABLE, REPLY_MESSAGE_UNAVAILABLE: TTL ran out
_NODE_UNAVAILABLE = 5  # no heartbeat from the node


def _describe_error(reply: Message) -> str:
    err = reply.error
    if err.code in _EXPIRED:
        return f"no reply before the message expired (Flower error code {err.code})"
    if err.code == _NODE_UNAVAILABLE:
        return f"node unavailable: it stopped sending heartbeats (Flower error code {err.code})"
    return f"error reply (Flower error code {err.code}): {err.reason}"


class StageLog(Observer):
    """The round report's stage durations and the per-stage log lines, from the
    driver's observer hooks: a stage's wall-clock time runs from its messages
    going out to its close (so the setup stage includes the nodes' training)."""

    def __init__(self, server_round: int):
        self.server_round = server_round
        self.seconds: dict[str, float] = {}
        self._opened: dict[Stage, float] = {}

    def message(self, stage: Stage, direction: str, party: int, data: wire.Encoded) -> None:
        if direction == TO_CLIENT:
            self._opened.setdefault(stage, time.monotonic())

    def stage_closed(self, stage: Stage, answered: frozenset[int], missing: frozenset[int]) -> None:
        now = time.monotonic()
        self.seconds[stage.value] = round(now - self._opened.get(stage, now), 3)
        log.info("secagg: round %d: %s: %d/%d replies in %.1fs", self.server_round, stage.value, len(answered),
                 len(answered) + len(missing), self.seconds[stage.value])


def training_rule(rule: "Rule | str", server_learning_rate: float | None = None) -> Rule:
    """``rule`` as the rule of a training round: it must average (its result
    is an update the server applies as ``global + server_lr * result``);
    ``server_learning_rate``, if given, replaces the rule's ``server_lr``."""
    r = get_rule(rule)
    if not r.kind.averages:
        raise ParameterError(f"rule {r.name!r} does not average; a training round needs one of {AVERAGING_RULES}")
    if server_learning_rate is not None:
        r = dataclasses.replace(r, server_lr=server_learning_rate)
    return r


def _nodes_with_keys(grid: Grid, nodes: tuple[int, ...], settings: SecAggSettings, server_round: int,
                     message_type: str, known: Mapping[int, bytes]
                     ) -> tuple[tuple[int, ...], dict[int, bytes], dict[int, str]]:
    """Malicious-server mode, before a round: the nodes that told a
    verification key of their own (asking those not in ``known``), their keys,
    and why the others are left out."""
    keys_by_node = {n: k for n, k in known.items() if n in nodes}
    failures: dict[int, str] = {}
    missing = [n for n in nodes if n not in keys_by_node]
    if missing:
        found, unidentified = identify_nodes(grid, missing, settings, server_round, message_type=message_type)
        keys_by_node.update(found)
        failures.update({n: f"{IDENTIFY_STAGE}: {why}" for n, why in unidentified.items()})
    owners: dict[bytes, list[int]] = {}
    for n, k in keys_by_node.items():
        owners.setdefault(k, []).append(n)
    for k, same in owners.items():
        if len(same) > 1:  # a key must name one party; leave the round to the nodes' checks otherwise
            for n in same:
                del keys_by_node[n]
                failures[n] = f"{IDENTIFY_STAGE}: verification key shared with another node"
    return tuple(n for n in nodes if n in keys_by_node), keys_by_node, failures


def run_secure_round(grid: Grid, node_ids: Iterable[int], arrays: ArrayRecord, train_config: ConfigRecord,
                     settings: SecAggSettings, server_round: int, *, rule: "Rule | str | None" = None,
                     server_learning_rate: float | None = None, arrays_key: str = "arrays",
                     config_key: str = "config", message_type: str = MessageType.TRAIN,
                     signing_keys: Mapping[int, bytes] | None = None,
                     holder_ids: Mapping[int, int] | None = None,
                     observer: Observer | None = None,
                     dp_budget: DPBudget | None = None) -> tuple[RoundReport, ArrayRecord | None]:
    """One training round under secure aggregation with the given nodes.

    ``rule`` (a :class:`~secagg.aggregation.Rule` or a rule name; default
    ``settings.rule``) must be an averaging rule; the nodes weigh their
    updates by the reply metric ``settings.weighted_by`` if the rule uses
    weights, by 1 otherwise. Returns the round report and the new global model
    (``rule.apply(global, result)``: ``global + server_lr * result``), or
    ``None`` for the model if the round aborted and ``settings.on_abort ==
    "skip"``. ``server_learning_rate``, if given, replaces the rule's.
    ``observer`` receives the server driver's hooks (bytes, timings,
    rejections). In the malicious-server mode, ``signing_keys`` maps node ids
    to their verification keys; nodes missing from it are asked
    (:func:`identify_nodes`), and nodes that cannot tell one are left out of
    the round.

    With ``settings.protocol == "paillier"`` the round is the Paillier
    protocol decrypted by the committee of ``settings.committee_key``
    (:func:`_run_paillier_round`): ``holder_ids`` maps node ids to their
    committee holder ids (their client ids); nodes missing from it are asked
    (:func:`identify_holders`), and nodes that cannot tell a holder id of
    this committee, or tell one another node tells too, are left out.

    With DP on (``settings.dp``) the round is a distributed-DP round under
    ``dp_budget`` (:class:`DPBudget`, kept by the caller across the run's
    rounds; required): the report's ``dp`` holds the round's epsilon and the
    epsilon spent so far, and the budget records the round.

    Raises :class:`SecAggConfigError` if the parameters cannot be secure and
    :class:`~secagg.errors.ProtocolAborted` if the round aborted and
    ``settings.on_abort == "raise"``."""
    the_rule = training_rule(settings.rule if rule is None else rule, server_learning_rate)
    _check_dp_round(settings, the_rule, dp_budget)
    nodes = tuple(sorted(set(int(n) for n in node_ids)))
    layout = ModelLayout.of(arrays)
    if settings.protocol == "paillier":
        return _run_paillier_round(grid, nodes, arrays, train_config, settings, server_round, the_rule, layout,
                                   arrays_key=arrays_key, config_key=config_key, message_type=message_type,
                                   holder_ids=holder_ids or {}, observer=observer, dp_budget=dp_budget)
    setup: dict[str, int | str] = {"arrays-key": arrays_key,
                                   # rules without weights get weight 1 from every node
                                   "weighted-by": settings.weighted_by if the_rule.uses_weights else ""}

    def opening(content: RecordDict) -> None:  # the round opens: the node trains on the global model
        content[arrays_key] = arrays
        content[config_key] = train_config

    driver, report, node_of = _masking_round(grid, nodes, settings, server_round, the_rule, layout.dim, message_type,
                                             setup, opening, signing_keys, observer, dp_budget)
    with driver:
        return _conclude(driver, report, node_of, settings, the_rule, layout, arrays, dp_budget)


def _check_dp_round(settings: SecAggSettings, the_rule: Rule, dp_budget: DPBudget | None) -> None:
    """Before any message: a DP round is unweighted and runs under a budget
    kept across the run's rounds; a budget without DP settings is refused too."""
    if not settings.dp:
        if dp_budget is not None:
            raise SecAggConfigError("a DP budget was given but secagg-dp-epsilon is 0 (DP off)")
        return
    if the_rule.uses_weights:
        raise SecAggConfigError(f"a DP round is unweighted (a node's weight would be released without noise): "
                                f"the rule must be 'mean', not {the_rule.name!r}")
    if not isinstance(dp_budget, DPBudget):
        raise SecAggConfigError("secagg-dp-epsilon > 0: a DP round needs the run's DPBudget (DPBudget.of(settings, "
                                "rounds), kept across the rounds so that their epsilons compose); SecAggFedAvg "
                                "keeps one")


def _masking_round(grid: Grid, nodes: tuple[int, ...], settings: SecAggSettings, server_round: int, the_rule: Rule,
                   dim: int, message_type: str, setup: Mapping[str, int | str],
                   opening: Callable[[RecordDict], None], signing_keys: Mapping[int, bytes] | None,
                   observer: Observer | None,
                   dp_budget: DPBudget | None = None) -> tuple[ServerDriver, RoundReport, dict[int, int]]:
    """Run a masking round of ``dim`` values over the Grid; the first
    message to each node carries ``setup`` and whatever ``opening`` adds.
    Returns the driver (its outcome), the report so far and the client id ->
    node id map."""
    early_failures: dict[int, str] = {}
    keys_by_node: dict[int, bytes] = {}
    if settings.malicious_server:
        nodes, keys_by_node, early_failures = _nodes_with_keys(grid, nodes, settings, server_round, message_type,
                                                               signing_keys or {})
    client_of = {node: i + 1 for i, node in enumerate(nodes)}
    node_of = {c: n for n, c in client_of.items()}
    params = make_params(settings, len(nodes), dim, server_round,
                         {client_of[n]: keys_by_node[n] for n in nodes} if settings.malicious_server else None,
                         dp_budget=dp_budget)
    log.info("secagg: round %d: %s with %d nodes, threshold %d, %d neighbours each, %d values, rule %s%s%s",
             server_round, params.protocol_name, params.n, params.threshold, params.degree, dim,
             the_rule.name, "" if message_type == MessageType.TRAIN else f" ({message_type})",
             _dp_opening(params.dp))

    stages = StageLog(server_round)
    driver = ServerDriver(MaskingServer(params), the_rule,
                          observer=stages if observer is None else Observers([stages, observer]))
    group = str(server_round)

    def to_node(party: int, data: wire.Encoded, ttl: float) -> Message:
        first = driver.stage is Stage.ADVERTISE_KEYS
        extra: dict[str, int | str] = {"client-id": party, **setup} if first else {}
        content = pack(driver.stage.value, data, round=server_round, **extra)
        if first:
            opening(content)
        return Message(content, node_of[party], message_type, ttl=ttl, group_id=group)

    _run_stages(grid, driver, settings, client_of, node_of, to_node, Stage.ADVERTISE_KEYS)
    failures = {**early_failures, **{node_of[p]: why for p, why in driver.failures.items() if p in node_of}}
    for node, why in sorted(failures.items()):
        log.warning("secagg: round %d: node %d dropped at %s", server_round, node, why)
    report = RoundReport(server_round, "aborted", nodes, dict(client_of), failures=failures,
                         stage_seconds=stages.seconds, params=params.summary(),
                         verification_keys=dict(keys_by_node), rule=the_rule.name)
    return driver, report, node_of


def metrics_settings(settings: SecAggSettings) -> SecAggSettings:
    """The settings of a private-metrics round: the run's, with the metrics'
    clip, a masking protocol (SecAgg+ in a Paillier run, whose committee
    decrypts training rounds only), the FedAvg rule and no DP (the metrics
    are not noised)."""
    masking = settings.protocol if settings.protocol != "paillier" else "secagg+"
    # evaluation metrics are not noised: DP (secagg-dp-*) covers the training updates only
    return dataclasses.replace(settings, protocol=masking, clip=settings.metrics_clip, committee_key="",
                               rule="fedavg", dp_epsilon=0.0)


def run_secure_evaluation(grid: Grid, node_ids: Iterable[int], arrays: ArrayRecord, evaluate_config: ConfigRecord,
                          settings: SecAggSettings, server_round: int, *, arrays_key: str = "arrays",
                          config_key: str = "config", signing_keys: Mapping[int, bytes] | None = None,
                          observer: Observer | None = None) -> tuple[RoundReport, MetricRecord | None]:
    """Federated evaluation with private metrics: the nodes evaluate the
    global model and the metrics named by ``settings.eval_metrics`` are
    aggregated under secure aggregation (a masking round over ``evaluate``
    messages), weighted by ``settings.weighted_by`` (examples by default).
    The server learns the weighted mean of each metric over the included
    nodes and the total weight (as ``settings.weighted_by``), nothing per
    node. Returns the round report and that MetricRecord (``None`` if the
    round aborted and ``settings.on_abort == "skip"``). The nodes' mod
    clips every metric to ``[-secagg-metrics-clip, secagg-metrics-clip]``."""
    names = settings.metric_names
    if not names:
        raise SecAggConfigError("private metrics need the names of the metrics to aggregate: set "
                                "secagg-eval-metrics (e.g. \"eval-loss,eval-accuracy\") in the run config, or "
                                "secagg-private-metrics = false for plain (per-node) evaluation metrics")
    ev = metrics_settings(settings)
    the_rule = training_rule(ev.rule)
    nodes = tuple(sorted(set(int(n) for n in node_ids)))
    setup: dict[str, int | str] = {"arrays-key": arrays_key, "weighted-by": ev.weighted_by,
                                   "metric-keys": ",".join(names)}

    def opening(content: RecordDict) -> None:  # the node evaluates the global model
        content[arrays_key] = arrays
        content[config_key] = evaluate_config

    driver, report, node_of = _masking_round(grid, nodes, ev, server_round, the_rule, len(names),
                                             MessageType.EVALUATE, setup, opening, signing_keys, observer)
    with driver:
        outcome = driver.outcome
        if isinstance(outcome, Abort):
            report.abort_reason = outcome.reason.value
            report.abort_detail = outcome.detail
            log.error("secagg: evaluation of round %d aborted at %s: %s (%s)", server_round, outcome.stage,
                      outcome.reason.value, outcome.detail)
            if settings.on_abort == "raise":
                raise ProtocolAborted(outcome.reason, f"evaluation of round {server_round}, stage {outcome.stage}: "
                                                      f"{outcome.detail}")
            return report, None
        result = driver.result()
    _completed(report, result, node_of)
    metrics = MetricRecord({name: float(v) for name, v in zip(names, result.aggregate)})
    metrics[ev.weighted_by or "num-nodes"] = float(result.sum_weights)
    log.info("secagg: evaluation of round %d: weighted means of %s over %d of %d nodes", server_round,
             ", ".join(names), len(report.included), len(nodes))
    return report, metrics


def _run_stages(grid: Grid, driver: ServerDriver, settings: SecAggSettings, client_of: Mapping[int, int],
                node_of: Mapping[int, int], to_node: Callable[[int, wire.Encoded, float], Message], opening: Stage,
                on_stage: Callable[[Stage, Mapping[int, wire.Encoded]], None] | None = None) -> None:
    """Run the driver's round over the Grid, one exchange per stage: the
    opening stage (where the nodes train) with the train timeout, every
    other with the stage timeout; a stage closes early once every node
    answered or is gone. A party of the outbox without a node in the round
    is given up for the rest of the round at once."""

    def on_reply(node: int, reply: Message) -> None:
        party = client_of[node]
        if reply.has_error():
            driver.gone(party, _describe_error(reply))
            return
        try:
            payload = bytes_field(unpack(reply.content), "payload")
        except RemoteProtocolError as exc:  # no protocol message in it at all
            driver.gone(party, f"rejected ({exc.reason.value}): {exc}")
            return
        if not driver.receive(party, payload) and party in driver.awaiting:
            # refused as out of place (the driver then keeps waiting), but a Flower message gets one reply
            driver.gone(party, "rejected (wrong_round): the node's one reply to this stage answers another")

    def unsent(node: int) -> None:
        driver.gone(client_of[node], "the SuperLink did not take the message")

    def gone(node: int, why: str) -> None:
        driver.gone(client_of[node], why)

    outbox = driver.start()
    while not driver.done:
        for party in sorted(p for p in outbox if p not in node_of):
            driver.left(party, "no node of this round holds this client id")
        if on_stage is not None:
            on_stage(driver.stage, outbox)
        ttl = settings.train_timeout if driver.stage is opening else settings.stage_timeout
        messages = [to_node(p, data, ttl) for p, data in sorted(outbox.items()) if p in node_of]
        _push_and_pull(grid, messages, ttl, settings.poll_interval, on_reply, on_unsent=unsent,
                       stop=lambda: driver.ready, early=EarlyClose.of(settings, len(messages)), on_gone=gone)
        outbox = driver.close_stage()


def _completed(report: RoundReport, result: Any, node_of: Mapping[int, int]) -> None:
    """Fill ``report`` from a completed round's result (protocol ids mapped to node ids)."""
    report.outcome = "completed"
    report.included = tuple(node_of[c] for c in result.included if c in node_of)
    report.dropped = {node_of[c]: stage for c, stage in result.dropped.items() if c in node_of}
    report.sum_weights = result.sum_weights
    report.mean_update = result.aggregate


def _conclude(driver: ServerDriver, report: RoundReport, node_of: Mapping[int, int], settings: SecAggSettings,
              the_rule: Rule, layout: ModelLayout, arrays: ArrayRecord,
              dp_budget: DPBudget | None = None) -> tuple[RoundReport, ArrayRecord | None]:
    """The round's report and new global model from the driver's outcome
    (raises :class:`ProtocolAborted` on an abort if ``settings.on_abort`` says so).
    A completed DP round is recorded in ``dp_budget`` (an aborted one spends nothing)."""
    server_round = report.server_round
    outcome = driver.outcome
    if isinstance(outcome, Abort):
        report.abort_reason = outcome.reason.value
        report.abort_detail = outcome.detail
        report.culprits = tuple(node_of[c] for c in outcome.culprits if c in node_of)
        log.error("secagg: round %d aborted at %s: %s (%s)", server_round, outcome.stage, outcome.reason.value,
                  outcome.detail)
        if settings.on_abort == "raise":
            raise ProtocolAborted(outcome.reason, f"round {server_round}, stage {outcome.stage}: {outcome.detail}",
                                  culprits=report.culprits)
        return report, None
    result = driver.result()
    _completed(report, result, node_of)
    if dp_budget is not None:
        if result.dp is None:  # the round's parameters carried DP: its result must report it
            raise LocalProtocolError(f"round {server_round}: the DP round's result carries no DP report")
        report.dp = dp_budget.record(result.dp)
        _log_dp(server_round, report.dp)
    new_vector = the_rule.apply(layout.to_vector(arrays), result.aggregate)
    log.info("secagg: round %d: aggregated %d of %d nodes%s", server_round, len(report.included),
             len(report.nodes), f" (dropped: {len(report.dropped)})" if report.dropped else "")
    return report, layout.from_vector(new_vector, arrays)


def server_committee(settings: SecAggSettings) -> CommitteeKey:
    """The committee key the server runs Paillier rounds under (run config
    ``secagg-committee-key``, a path on the server host)."""
    try:
        return load_committee_key(settings.committee_key)
    except ParameterError as exc:
        raise SecAggConfigError(f"secagg-committee-key: {exc}") from None


def make_paillier_params(settings: SecAggSettings, committee: CommitteeKey, dim: int, rule: Rule,
                         server_round: int = 0, dp_budget: DPBudget | None = None) -> PaillierParams:
    """A Paillier round's parameters: every committee member is invited (the
    packing layout is sized for all of them, and the decryption floor is a
    majority of them); the encoding is the run config's. With ``dp_budget``
    the round is a DP round: the noise is calibrated for the decryption floor
    (the fewest submissions the round decrypts), the wrap check covers every
    member. A :class:`SecAggConfigError` names the Flower-side fix when the
    packing layout cannot hold the sum without overflow."""
    key = PublicKeyMessage.from_key(committee.public_key)
    try:
        if dp_budget is None:
            return PaillierParams.create(key, committee.holders, dim, encoding=settings.encoding, rule=rule)
        floor = default_min_clients(len(committee.holders))
        dp = dp_budget.round_params(dim, n_min=floor, n_max=len(committee.holders))
        return PaillierParams.create(key, committee.holders, dim, rule=rule, min_clients=floor, dp=dp)
    except ParameterError as exc:
        raise SecAggConfigError(
            f"a Paillier round {server_round} for a committee of {len(committee.holders)} with a "
            f"{committee.public_key.key_bits}-bit key cannot encode this model: {exc}. Lower secagg-frac-bits "
            f"(now {settings.frac_bits}), secagg-clip ({settings.clip}) or secagg-max-weight ({settings.max_weight}) "
            "in the run config.") from None


def identify_holders(grid: Grid, node_ids: Iterable[int], settings: SecAggSettings, server_round: int,
                     committee: CommitteeKey, *, message_type: str = MessageType.TRAIN
                     ) -> tuple[dict[int, int], dict[int, str]]:
    """Paillier: ask nodes for their committee holder ids. Returns the holder
    id by node id for the nodes that told a distinct member of
    ``committee`` with its key id, and, for the others, why they are left
    out (a typed refusal: ``key_mismatch`` for a share of another committee,
    ``unexpected_sender`` for an id outside the committee or told by two
    nodes)."""
    group = str(server_round)
    nodes = list(node_ids)
    messages = [Message(pack(IDENTIFY_STAGE, b"", round=server_round, protocol="paillier"), n, message_type,
                        ttl=settings.stage_timeout, group_id=group) for n in nodes]
    replies, missing = exchange(grid, messages, settings.stage_timeout, settings.poll_interval,
                                EarlyClose.of(settings, len(messages)))
    failed: dict[int, str] = {n: _NO_REPLY.format(settings.stage_timeout) for n in missing}
    claimed: dict[int, int] = {}
    for node, reply in replies.items():
        if reply.has_error():
            failed[node] = _describe_error(reply)
            continue
        try:
            rec = unpack(reply.content)
            holder, key_id = rec.get("holder-id"), rec.get("committee-key-id")
            if isinstance(holder, bool) or not isinstance(holder, int) or not isinstance(key_id, bytes):
                raise UnexpectedSender("no holder id and committee key id in the reply")
            if key_id != committee.key_id:
                raise KeyMismatch(f"the node holds a share of another committee (key id {key_id.hex()[:16]}), "
                                  f"not of this run's ({committee.key_id.hex()[:16]})")
            if holder not in committee.holders:
                raise UnexpectedSender(f"holder id {holder} is not a member of the committee")
        except RemoteProtocolError as exc:
            failed[node] = f"rejected ({exc.reason.value}): {exc}"
            continue
        claimed[node] = holder
    owners: dict[int, list[int]] = {}
    for node, holder in claimed.items():
        owners.setdefault(holder, []).append(node)
    for holder, same in owners.items():
        if len(same) > 1:  # one share, one party: none of them takes part
            for node in same:
                del claimed[node]
                failed[node] = (f"rejected ({UnexpectedSender().reason.value}): holder id {holder} is told by "
                                f"{len(same)} nodes")
    for node, why in sorted(failed.items()):
        log.warning("secagg: round %d: node %d left out (no committee holder id): %s", server_round, node, why)
    return claimed, failed


def _run_paillier_round(grid: Grid, nodes: tuple[int, ...], arrays: ArrayRecord, train_config: ConfigRecord,
                        settings: SecAggSettings, server_round: int, the_rule: Rule, layout: ModelLayout, *,
                        arrays_key: str, config_key: str, message_type: str, holder_ids: Mapping[int, int],
                        observer: Observer | None,
                        dp_budget: DPBudget | None = None) -> tuple[RoundReport, ArrayRecord | None]:
    """One Paillier round decrypted by the committee: identify (holder ids),
    Submit (the nodes train, encrypt and submit), Decrypt (each member that
    submitted decrypts its part of the aggregate, with a proof), and Decrypt
    recovery when some ciphertexts lack ``t`` valid shares. The server never
    holds the decryption key."""
    committee = server_committee(settings)
    params = make_paillier_params(settings, committee, layout.dim, the_rule, server_round, dp_budget)
    # holder ids: the known ones (of this committee), the others asked
    known = {n: h for n, h in holder_ids.items() if n in nodes and h in committee.holders}
    failures: dict[int, str] = {}
    ask = [n for n in nodes if n not in known]
    if ask:
        found, unidentified = identify_holders(grid, ask, settings, server_round, committee,
                                               message_type=message_type)
        clash = {h for h in found.values()} & set(known.values())
        for node, holder in list(found.items()):
            if holder in clash:
                del found[node]
                unidentified[node] = f"rejected (unexpected_sender): holder id {holder} belongs to another node"
        known.update(found)
        failures.update({n: f"{IDENTIFY_STAGE}: {why}" for n, why in unidentified.items()})
    nodes = tuple(n for n in nodes if n in known)
    client_of = {n: known[n] for n in nodes}
    node_of = {h: n for n, h in client_of.items()}
    t = committee.threshold
    log.info("secagg: round %d: paillier, %d-bit committee key %s: any %d of %d members decrypt; members by node: "
             "%s; %d values, rule %s%s", server_round, committee.public_key.key_bits, committee.key_id.hex()[:16], t,
             len(committee.holders), ", ".join(f"{n}->{h}" for n, h in sorted(client_of.items())) or "none",
             layout.dim, the_rule.name, _dp_opening(params.dp))
    absent = [h for h in committee.holders if h not in node_of]
    decryption: dict[str, Any] = {"committee": list(committee.holders), "threshold": t,
                                  "committee_key_id": committee.key_id.hex(), "absent_members": absent,
                                  "asked": [], "failed_members": [], "recovery": False, "recovery_asked": []}
    report = RoundReport(server_round, "aborted", nodes, dict(client_of), failures=dict(failures),
                         params=params.summary(), rule=the_rule.name, decryption=decryption)
    needed = max(t, params.min_clients)
    if len(nodes) < needed:  # cannot decrypt: nothing is sent, nobody trains for nothing
        report.abort_reason = "too_few_survivors"
        report.abort_detail = (f"{len(nodes)} node(s) hold shares of the committee key, {needed} needed "
                               f"(threshold {t}, decryption floor {params.min_clients})")
        for node, why in sorted(failures.items()):
            log.warning("secagg: round %d: node %d dropped at %s", server_round, node, why)
        log.error("secagg: round %d aborted before it opened: %s", server_round, report.abort_detail)
        if settings.on_abort == "raise":
            raise ProtocolAborted(AbortReason.TOO_FEW_SURVIVORS, f"round {server_round}: {report.abort_detail}")
        return report, None
    if absent:
        log.warning("secagg: round %d: committee members without a node in this round: %s", server_round, absent)

    stages = StageLog(server_round)
    group = str(server_round)
    setup: dict[str, str] = {"arrays-key": arrays_key,
                             "weighted-by": settings.weighted_by if the_rule.uses_weights else ""}
    with ServerDriver(PaillierServer(params, committee=committee), the_rule, protocol="paillier",
                      observer=stages if observer is None else Observers([stages, observer])) as driver:

        def to_node(party: int, data: wire.Encoded, ttl: float) -> Message:
            opening = driver.stage is Stage.SUBMIT  # the round opens: the node trains on the global model
            extra: dict[str, int | str] = {"client-id": party, **setup} if opening else {}
            content = pack(driver.stage.value, data, round=server_round, **extra)
            if opening:
                content[arrays_key] = arrays
                content[config_key] = train_config
            return Message(content, node_of[party], message_type, ttl=ttl, group_id=group)

        def on_stage(stage: Stage, outbox: Mapping[int, wire.Encoded]) -> None:
            asked = sorted(outbox)
            if stage is Stage.DECRYPT:
                decryption["asked"] = asked
                log.info("secagg: round %d: decryption requests to committee members %s (%d needed per "
                         "ciphertext)", server_round, asked, t)
            elif stage is Stage.DECRYPT_RECOVERY:
                failed = _failed_members(driver)
                decryption["recovery"] = True
                decryption["recovery_asked"] = asked
                log.warning("secagg: round %d: decryption recovery: members without a valid share: %s; asking "
                            "members %s for the ciphertexts that lack %d valid shares", server_round,
                            failed or "none", asked, t)

        _run_stages(grid, driver, settings, client_of, node_of, to_node, Stage.SUBMIT, on_stage)
        decryption["failed_members"] = _failed_members(driver)
        if decryption["failed_members"]:
            log.warning("secagg: round %d: committee members whose decryption shares failed or never came: %s",
                        server_round, decryption["failed_members"])
        report.failures.update({node_of[p]: why for p, why in driver.failures.items() if p in node_of})
        for node, why in sorted(report.failures.items()):
            log.warning("secagg: round %d: node %d dropped at %s", server_round, node, why)
        report.stage_seconds = stages.seconds
        return _conclude(driver, report, node_of, settings, the_rule, layout, arrays, dp_budget)


def _failed_members(driver: ServerDriver) -> list[int]:
    """Committee members asked to decrypt that gave no valid share: refused
    shares (a failed proof) and members that never answered."""
    decryption: Any = driver.core.audit_record().get("decryption", {})
    bad = set(decryption.get("failed_members", []))
    bad |= {p for p, why in driver.failures.items() if why.startswith(("decrypt:", "decrypt_recovery:"))}
    return sorted(bad)


def identify_nodes(grid: Grid, node_ids: Iterable[int], settings: SecAggSettings, server_round: int, *,
                   message_type: str = MessageType.TRAIN) -> tuple[dict[int, bytes], dict[int, str]]:
    """Malicious-server mode: ask nodes for their verification keys. Returns
    the keys by node id and, for nodes without a usable answer, why."""
    group = str(server_round)
    messages = [Message(pack(IDENTIFY_STAGE, b"", round=server_round), n, message_type,
                        ttl=settings.stage_timeout, group_id=group) for n in node_ids]
    replies, missing = exchange(grid, messages, settings.stage_timeout, settings.poll_interval,
                                EarlyClose.of(settings, len(messages)))
    keys: dict[int, bytes] = {}
    failed: dict[int, str] = {n: _NO_REPLY.format(settings.stage_timeout) for n in missing}
    for node, reply in replies.items():
        if reply.has_error():
            failed[node] = _describe_error(reply)
            continue
        try:
            key = unpack(reply.content).get("verify-key")
        except RemoteProtocolError as exc:
            failed[node] = f"rejected: {exc}"
            continue
        if not isinstance(key, bytes) or len(key) != 32:
            failed[node] = "rejected: no 32-byte verification key"
            continue
        keys[node] = key
    for node, why in sorted(failed.items()):
        log.warning("secagg: round %d: node %d left out (no verification key): %s", server_round, node, why)
    return keys, failed


def _dp_opening(dp: DPRoundParams | None) -> str:
    if dp is None:
        return ""
    return (f", DP {dp.mechanism} (noise for {dp.n_min} survivors, L2 clip {dp.clip:.4g}, {dp.bits} bits"
            f"{', adaptive clip' if dp.adaptive else ''})")


def make_params(settings: SecAggSettings, num_nodes: int, dim: int, server_round: int = 0,
                signing_keys: Mapping[int, bytes] | None = None,
                dp_budget: DPBudget | None = None) -> MaskingParams:
    """The round's protocol parameters; a :class:`SecAggConfigError` that names
    the Flower-side fix when they cannot be secure. With ``dp_budget`` the
    round is a DP round: the threshold and degree are derived first, then the
    noise is calibrated for ``threshold`` survivors (the fewest whose sum the
    server can release) with the wrap check for ``num_nodes``."""
    ids = list(range(1, num_nodes + 1))
    try:
        if dp_budget is None:
            return MaskingParams.create(
                ids, dim, protocol=settings.protocol,
                dropout_tolerance=settings.dropout_tolerance, corrupt_fraction=settings.corrupt_fraction,
                threshold=settings.threshold, degree=settings.degree, encoding=settings.encoding,
                malicious_server=settings.malicious_server, signing_keys=signing_keys)
        shape = MaskingParams.create(ids, dim, protocol=settings.protocol,
                                     dropout_tolerance=settings.dropout_tolerance,
                                     corrupt_fraction=settings.corrupt_fraction, threshold=settings.threshold,
                                     degree=settings.degree)
        dp = dp_budget.round_params(dim, n_min=shape.threshold, n_max=num_nodes)
        return MaskingParams.create(
            ids, dim, protocol=settings.protocol, dropout_tolerance=settings.dropout_tolerance,
            corrupt_fraction=settings.corrupt_fraction, threshold=shape.threshold, degree=shape.degree,
            malicious_server=settings.malicious_server, signing_keys=signing_keys, dp=dp)
    except ParameterError as exc:
        raise SecAggConfigError(
            f"secure aggregation cannot run round {server_round} with {num_nodes} node(s): {exc}. "
            f"Connect more SuperNodes (or raise min-train-nodes), or change secagg-threshold "
            f"(now {settings.threshold or 'derived'}), secagg-dropout-tolerance ({settings.dropout_tolerance}) or "
            f"secagg-corrupt-fraction ({settings.corrupt_fraction}) in the run config.") from None


class SecAggFedAvg(FedAvg):
    """FedAvg whose training rounds run under secure aggregation, with any
    averaging rule.

    A drop-in replacement for ``flwr.serverapp.strategy.FedAvg`` in a ServerApp::

        strategy = SecAggFedAvg(settings=SecAggSettings.from_run_config(context.run_config))
        result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)

    Each round samples nodes like FedAvg, then runs :func:`run_secure_round`:
    the server learns only the rule's result over the nodes' updates (by
    default FedAvg's mean weighted by examples) and applies
    ``rule.apply(global, result)``, i.e. ``global + server_lr * result``.
    ``rule`` is a :class:`~secagg.aggregation.Rule` or a rule name (default:
    the run config's ``secagg-rule``); it must be one of
    :data:`~secagg.aggregation.AVERAGING_RULES`. ``server_learning_rate``, if
    given, replaces the rule's ``server_lr``. The clients need
    :data:`secagg.flower.secagg_mod` on their train function. Federated
    evaluation metrics are private by default (``secagg-private-metrics``):
    the metrics named by ``secagg-eval-metrics`` are aggregated under secure
    aggregation (:func:`run_secure_evaluation`, weighted by examples) and the
    server learns their weighted means only (:attr:`eval_reports` keeps the
    rounds' reports); with ``secagg-private-metrics = false`` evaluation is
    FedAvg's (every node's metrics reach the server). ``on_round`` is called with each
    :class:`RoundReport`; :attr:`reports` keeps them all. ``observer``
    receives every round's server-driver hooks (bytes, timings, rejections).

    Training metrics are not aggregated from the nodes (per-node metrics would
    reveal what the aggregate hides); ``train_metrics_clientapp`` holds the
    round's secure-aggregation statistics instead.

    With ``secagg-dp-epsilon`` > 0, :meth:`start` makes the run's
    :class:`DPBudget` (:attr:`dp_budget`; its epsilon covers
    ``secagg-dp-rounds`` rounds, by default the ``num_rounds`` it runs) and
    every training round is a distributed-DP round under it; each round's
    report holds its epsilon and the epsilon spent so far (``dp``), also
    logged and put in ``train_metrics_clientapp`` (``secagg-dp-epsilon-round``,
    ``secagg-dp-epsilon-spent``, ``secagg-dp-clip``)."""

    def __init__(self, *, settings: SecAggSettings | None = None, rule: "Rule | str | None" = None,
                 server_learning_rate: float | None = None,
                 fraction_train: float = 1.0, fraction_evaluate: float = 1.0, min_train_nodes: int = 2,
                 min_evaluate_nodes: int = 2, min_available_nodes: int = 2, arrayrecord_key: str = "arrays",
                 configrecord_key: str = "config",
                 evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
                 on_round: Callable[[RoundReport], None] | None = None,
                 observer: Observer | None = None) -> None:
        self.settings = settings or SecAggSettings()
        super().__init__(fraction_train=fraction_train, fraction_evaluate=fraction_evaluate,
                         min_train_nodes=min_train_nodes, min_evaluate_nodes=min_evaluate_nodes,
                         min_available_nodes=min_available_nodes,
                         weighted_by_key=self.settings.weighted_by or "num-examples",
                         arrayrecord_key=arrayrecord_key, configrecord_key=configrecord_key,
                         evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn)
        self.rule = training_rule(self.settings.rule if rule is None else rule, server_learning_rate)
        self.on_round = on_round
        self.observer = observer
        self.reports: list[RoundReport] = []
        #: nodes an aborted round was blamed on (RoundReport.culprits): not sampled again in this run
        self.excluded_nodes: set[int] = set()
        self.node_keys: dict[int, bytes] = {}  # malicious-server mode: verification keys by node id
        self.holder_ids: dict[int, int] = {}  # Paillier: committee holder ids by node id
        self.eval_reports: list[RoundReport] = []  # private metrics: one per evaluation round
        self.dp_budget: DPBudget | None = None  # DP: the run's budget, made by start()
        if self.settings.dp and self.rule.uses_weights:
            raise SecAggConfigError(f"a DP round is unweighted (a node's weight would be released without noise): "
                                    f"the rule must be 'mean', not {self.rule.name!r}")
        if self.settings.private_metrics and evaluate_metrics_aggr_fn is not None:
            raise SecAggConfigError("evaluate_metrics_aggr_fn sees every node's metrics: it cannot be used with "
                                    "private metrics (secagg-private-metrics = true, the default)")

    @property
    def server_learning_rate(self) -> float:
        return self.rule.server_lr

    def summary(self) -> None:
        super().summary()
        s = self.settings
        if s.dp:
            log.info("\t└──> Distributed DP: %s, epsilon %g at delta %g over %s training round(s), L2 clip %g%s, "
                     "%d bits; evaluation metrics are not noised", s.dp_mechanism, s.dp_epsilon, s.dp_delta,
                     s.dp_rounds or "the run's", s.dp_clip, " (adaptive)" if s.dp_adaptive_clip else "", s.dp_bits)
        if s.protocol == "paillier":
            log.info("\t└──> Secure aggregation: paillier, decrypted by the committee of %s, clip %g, %d fractional "
                     "bits, max weight %g, rule %s%s, server lr %g", s.committee_key, s.clip, s.frac_bits,
                     s.max_weight, self.rule.name,
                     f" weighted by {s.weighted_by!r}" if self.rule.uses_weights and s.weighted_by else "",
                     self.rule.server_lr)
            return
        log.info("\t└──> Secure aggregation: %s, dropout tolerance %.0f%%, corrupt fraction %.0f%%, threshold %s, "
                 "clip %g, %d fractional bits, max weight %g, rule %s%s, server lr %g", s.protocol,
                 100 * s.dropout_tolerance, 100 * s.corrupt_fraction, s.threshold or "derived", s.clip,
                 s.frac_bits, s.max_weight, self.rule.name,
                 f" weighted by {s.weighted_by!r}" if self.rule.uses_weights and s.weighted_by else "",
                 self.rule.server_lr)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None,
                                                                                        MetricRecord | None]:
        raise RuntimeError("SecAggFedAvg never aggregates plaintext training replies: call start(), which runs "
                           "every training round under secure aggregation")

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None) -> Result:
        """Run ``num_rounds`` rounds. ``timeout`` bounds federated evaluation
        (capped at the settings' train timeout); the secure stages use the
        settings' timeouts."""
        log.info("Starting %s strategy:", type(self).__name__)
        self.summary()
        if self.settings.private_metrics and self.fraction_evaluate > 0 and not self.settings.metric_names:
            raise SecAggConfigError("private metrics (secagg-private-metrics = true, the default) need the names of "
                                    "the evaluation metrics to aggregate: set secagg-eval-metrics (e.g. "
                                    "\"eval-loss,eval-accuracy\"), or fraction-evaluate = 0, or "
                                    "secagg-private-metrics = false for plain per-node metrics")
        ModelLayout.of(initial_arrays)  # fail early on a model with nothing to aggregate
        self.dp_budget = DPBudget.of(self.settings, num_rounds)  # the epsilon covers the rounds run here
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result(arrays=initial_arrays)
        t_start = time.monotonic()
        if evaluate_fn:
            res = evaluate_fn(0, initial_arrays)
            log.info("Initial global evaluation results: %s", res)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        arrays = initial_arrays
        for server_round in range(1, num_rounds + 1):
            log.info("")
            log.info("[ROUND %s/%s]", server_round, num_rounds)
            sampled = list(self.configure_train(server_round, arrays, train_config, grid))
            node_ids = [m.metadata.dst_node_id for m in sampled if m.metadata.dst_node_id not in self.excluded_nodes]
            if node_ids:
                config = sampled[0].content.config_records[self.configrecord_key]
                report, new_arrays = run_secure_round(
                    grid, node_ids, arrays, config, self.settings, server_round,
                    rule=self.rule, arrays_key=self.arrayrecord_key, config_key=self.configrecord_key,
                    signing_keys=self.node_keys, holder_ids=self.holder_ids, observer=self.observer,
                    dp_budget=self.dp_budget)
                self.reports.append(report)
                blamed = sorted(set(report.culprits) - self.excluded_nodes)
                if blamed:
                    self.excluded_nodes.update(blamed)
                    log.warning("secagg: round %d aborted because of nodes %s; they are left out of the later "
                                "rounds", server_round, blamed)
                self.node_keys.update(report.verification_keys)
                if self.settings.protocol == "paillier":
                    self.holder_ids.update(report.client_ids)
                    for node in report.failures:  # asked again next round (a node may have been re-provisioned)
                        self.holder_ids.pop(node, None)
                if new_arrays is not None:
                    arrays = new_arrays
                    result.arrays = arrays
                train_metrics = MetricRecord({
                    "secagg-completed": int(report.outcome == "completed"),
                    "secagg-included": len(report.included), "secagg-dropped": len(report.dropped),
                    "secagg-sum-weights": float(report.sum_weights or 0.0)})
                if self.dp_budget is not None:  # an aborted round spends nothing: the spent epsilon stays
                    train_metrics["secagg-dp-epsilon-round"] = float(report.dp.get("epsilon_round", 0.0))
                    train_metrics["secagg-dp-epsilon-spent"] = float(self.dp_budget.spent)
                    train_metrics["secagg-dp-clip"] = float(report.dp.get("clip", self.dp_budget.config.clip))
                result.train_metrics_clientapp[server_round] = train_metrics
                if self.on_round is not None:
                    self.on_round(report)
            eval_messages = list(self.configure_evaluate(server_round, arrays, evaluate_config, grid))
            if eval_messages and self.settings.private_metrics:
                eval_nodes = [m.metadata.dst_node_id for m in eval_messages]
                config = eval_messages[0].content.config_records[self.configrecord_key]
                try:
                    eval_report, metrics = run_secure_evaluation(
                        grid, eval_nodes, arrays, config, self.settings, server_round,
                        arrays_key=self.arrayrecord_key, config_key=self.configrecord_key,
                        signing_keys=self.node_keys, observer=self.observer)
                except SecAggConfigError as exc:  # too few nodes for a secure evaluation: no metrics, no leak
                    log.warning("secagg: round %d: no private evaluation: %s", server_round, exc)
                    eval_report, metrics = None, None
                if eval_report is not None:
                    self.eval_reports.append(eval_report)
                    self.node_keys.update(eval_report.verification_keys)
                if metrics is not None:
                    log.info("\t└──> Aggregated MetricRecord (secure): %s", metrics)
                    result.evaluate_metrics_clientapp[server_round] = metrics
            elif eval_messages:
                replies, missing = exchange(grid, eval_messages, min(timeout, self.settings.train_timeout),
                                            self.settings.poll_interval,
                                            EarlyClose.of(self.settings, len(eval_messages)))
                if missing:
                    log.info("evaluation: no reply from %d node(s) in time", len(missing))
                metrics = self.aggregate_evaluate(server_round, list(replies.values()))
                if metrics is not None:
                    log.info("\t└──> Aggregated MetricRecord: %s", metrics)
                    result.evaluate_metrics_clientapp[server_round] = metrics
            if evaluate_fn:
                res = evaluate_fn(server_round, arrays)
                log.info("\t└──> Global evaluation: %s", res)
                if res is not None:
                    result.evaluate_metrics_serverapp[server_round] = res
        log.info("")
        log.info("Strategy execution finished in %.2fs", time.monotonic() - t_start)
        return result
