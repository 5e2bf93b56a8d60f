"""Property test over dropout schedules: for any schedule the round either
returns exactly the aggregate of the clients whose masked input was collected,
or aborts with TOO_FEW_SURVIVORS exactly when some round kept fewer than t."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from secagg.errors import AbortReason
from secagg.protocols.masking import Abort, ServerResult

from masking_harness import Round

STAGES = ["advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking"]


def _expected(n: int, t: int, drop: dict[int, str], malicious: bool) -> tuple[bool, list[int]]:
    """Complete graph: (aborts?, included) predicted from the schedule alone."""
    alive = set(range(1, n + 1))
    included: list[int] = []
    for stage in STAGES:
        if stage == "consistency_check" and not malicious:
            continue
        alive -= {i for i, s in drop.items() if s == stage}
        if stage == "masked_input":
            included = sorted(alive)
        if len(alive) < t:
            return True, []
    return False, included


@st.composite
def schedules(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(3, 9))
    malicious = draw(st.booleans())
    stages = [s for s in STAGES if malicious or s != "consistency_check"]
    drop = draw(st.dictionaries(st.integers(1, n), st.sampled_from(stages), max_size=n))
    seed = draw(st.integers(0, 2**16))
    return n, malicious, drop, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_any_dropout_schedule_gives_exact_aggregate_or_typed_abort(case):
    n, malicious, drop, seed = case
    r = Round(n=n, dim=3, malicious=malicious, seed=seed, dropout_tolerance=0.0, threshold=n // 2 + 1)
    aborts, included = _expected(n, r.params.threshold, drop, malicious)
    out = r.run(drop=drop)
    if aborts:
        assert isinstance(out, Abort) and out.reason is AbortReason.TOO_FEW_SURVIVORS
    else:
        assert isinstance(out, ServerResult), out
        assert list(out.included) == included
        err = np.max(np.abs(out.sum_weighted - r.expected_sum(included)))
        assert err <= r.params.encoding.sum_error_bound(len(included))
        assert out.sum_weights == len(included)
    # no honest client ever aborted: dropouts are not attacks
    assert not any(c.aborted for c in r.clients.values())


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**16), st.lists(st.integers(1, 40), max_size=3, unique=True),
       st.sampled_from(["share_keys", "masked_input", "unmasking"]))
def test_sparse_graph_schedules(seed, dropped, stage):
    r = Round(n=40, dim=3, protocol="secagg+", seed=seed, dropout_tolerance=0.05)
    out = r.run(drop={i: stage for i in dropped})
    if isinstance(out, Abort):
        assert out.reason is AbortReason.TOO_FEW_SURVIVORS
        return
    included = [i for i in r.ids if stage == "unmasking" or i not in dropped]
    assert list(out.included) == included
    assert np.max(np.abs(out.sum_weighted - r.expected_sum(included))) <= r.params.encoding.sum_error_bound(40)
