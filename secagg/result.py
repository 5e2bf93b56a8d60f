"""The outcome of one secure-aggregation round, common to every protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    from .dp.round import DPRoundReport

__all__ = ["AggregationResult"]


@dataclass(frozen=True)
class AggregationResult:
    """What a completed round returns.

    ``aggregate`` is the rule's result (e.g. the weighted mean) over exactly the
    clients in ``included``; ``sum_weighted`` / ``sum_weights`` are the two sums
    the server learned. ``dropped`` maps each left-out client id to the stage at
    which it vanished. Byte counts are what each client sent and received on the
    wire (encoded messages); timings are seconds per stage.

    ``dp`` is the round's distributed-DP report (:class:`secagg.dp.DPRoundReport`:
    mechanism, survivors, the round's epsilon at its delta, noise variance,
    clip, and with adaptive clipping the noised clipped fraction and the next
    clip) when the round ran with DP, else ``None``; ``aggregate`` and
    ``sum_weighted`` are then the noised values.
    """

    protocol: str
    rule: str
    aggregate: np.ndarray
    sum_weighted: np.ndarray
    sum_weights: float
    included: tuple[int, ...]
    dropped: Mapping[int, str]
    session_id: str
    bytes_sent: Mapping[int, int]
    bytes_received: Mapping[int, int]
    timings: Mapping[str, float]
    params: Mapping[str, Any] = field(default_factory=dict)
    dp: "DPRoundReport | None" = None

    @property
    def n_included(self) -> int:
        return len(self.included)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready, value-free summary (no update values)."""
        sent = list(self.bytes_sent.values()) or [0]
        recv = list(self.bytes_received.values()) or [0]
        return {
            "protocol": self.protocol,
            "rule": self.rule,
            "session_id": self.session_id,
            "included": list(self.included),
            "dropped": {str(k): v for k, v in sorted(self.dropped.items())},
            "bytes_sent_per_client_mean": float(np.mean(sent)),
            "bytes_sent_per_client_max": int(max(sent)),
            "bytes_received_per_client_mean": float(np.mean(recv)),
            "timings_s": dict(self.timings),
            "params": dict(self.params),
            "dp": self.dp.summary() if self.dp is not None else None,
        }
