"""How a round ends, the same for every protocol family: the sums the server
was meant to learn (:class:`ServerResult`) or an abort with a typed reason
(:class:`Abort`). Never a partial aggregate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..errors import AbortReason

__all__ = ["ServerResult", "Abort"]


@dataclass(frozen=True)
class ServerResult:
    """The two sums the server learns, over exactly ``included``:
    ``sum_weighted = sum_i w_i x_i`` and ``sum_weights = sum_i w_i``.
    ``dropped`` maps each invited client left out to the stage it missed (a
    masking client that vanished at ``consistency_check`` or ``unmasking`` had
    already sent its masked input and is still included)."""

    sum_weighted: np.ndarray
    sum_weights: float
    included: tuple[int, ...]
    dropped: Mapping[int, str]


@dataclass(frozen=True)
class Abort:
    """The round ended without an aggregate: why, and at which stage.

    ``culprits``: the clients the abort is blamed on, when the protocol can
    name them but not exclude them within the round (a masking client whose
    shared secret does not reconstruct to what it committed to): a caller
    should run the next round without them. Colluding share holders can get an
    honest client named (masking SPEC §3.5), so this is a lead for the next
    round's cohort, not proof."""

    reason: AbortReason
    detail: str = ""
    stage: str = ""
    culprits: tuple[int, ...] = ()
