"""The masking server's mask removal as jobs: split across workers it gives
the same aggregate, bit for bit, as in one process."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from masking_harness import Round
from secagg.drivers.concurrency import process_unmasker
from secagg.errors import AbortReason
from secagg.protocols.masking import ServerResult
from secagg.protocols.masking.unmask import MaskJob, run_local, split_jobs
from secagg.protocols.outcome import Abort


def _jobs() -> list[MaskJob]:
    r = Round(n=12, dim=50, dropout_tolerance=0.4)
    jobs: list[MaskJob] = []

    def spy(js):  # type: ignore[no-untyped-def]
        jobs.extend(js)
        return run_local(js)

    r.server._unmasker = spy
    r.run(drop={3: "masked_input", 7: "masked_input"})
    return jobs


def test_split_jobs_covers_every_stream_once_and_balances() -> None:
    jobs = _jobs()
    assert [j.owner for j in jobs] == [0, 3, 7]
    whole = run_local(jobs)
    for parts in (1, 2, 3, 5, 40):
        split = split_jobs(jobs, parts)
        assert 1 <= len(split) <= parts
        seeds = [s for part in split for j in part if not j.owner for s in j.seeds]
        assert seeds == list(jobs[0].seeds)
        for v in (3, 7):
            peers = [w for part in split for j in part if j.owner == v for w in j.peers]
            assert peers == list(next(j for j in jobs if j.owner == v).peers)
        total = np.zeros_like(whole)
        for part in split:
            total += run_local(part)
        assert np.array_equal(total, whole)
        if parts == 2:
            cost = [sum(j.streams * (1.5 if j.owner else 1.0) for j in part) for part in split]
            assert max(cost) - min(cost) <= 1.5
    with pytest.raises(ValueError):
        split_jobs(jobs, 0)


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_process_unmasker_gives_the_same_aggregate(protocol: str) -> None:
    drop = {2: "masked_input", 9: "masked_input", 14: "unmasking"}
    ref = Round(n=30, dim=40, protocol=protocol, dropout_tolerance=0.3).run(drop=dict(drop))
    with process_unmasker(2) as unmasker:
        r = Round(n=30, dim=40, protocol=protocol, dropout_tolerance=0.3)
        r.server._unmasker = unmasker
        assert copy.deepcopy(unmasker) is unmasker  # a copied server shares the pool
        out = r.run(drop=dict(drop))
    assert isinstance(out, ServerResult) and isinstance(ref, ServerResult)
    assert np.array_equal(out.sum_weighted, ref.sum_weighted) and out.included == ref.included


def test_one_worker_runs_in_process() -> None:
    unmasker = process_unmasker(1)
    r = Round(n=8, dim=10)
    r.server._unmasker = unmasker
    assert isinstance(r.run(drop={2: "masked_input"}), ServerResult)
    assert unmasker._pool is None


def test_a_failing_unmasker_aborts_the_round() -> None:
    def broken(jobs):  # type: ignore[no-untyped-def]
        raise BrokenPipeError("worker gone")

    r = Round(n=8, dim=10)
    r.server._unmasker = broken
    out = r.run(drop={2: "masked_input"})
    assert isinstance(out, Abort) and out.reason is AbortReason.INTERNAL_ERROR


def _sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("chunks", [1, 3, 8])
def test_process_unmasker_parts_sum_to_the_in_process_result(chunks: int) -> None:
    """However the jobs are cut and whoever runs each part, the sum is the
    in-process one; with the only worker kept busy, this process withdraws
    every queued part it can and runs them itself (the result is still
    exact), and the worker's pool stays usable."""
    jobs = _jobs()
    expected = run_local(jobs)
    with process_unmasker(2, chunks_per_worker=chunks) as unmasker:
        assert np.array_equal(unmasker(jobs), expected)
        assert unmasker._pool is not None
        busy = unmasker._pool.submit(_sleep, 1.0)  # the worker is busy while the parts are queued
        assert np.array_equal(unmasker(jobs), expected)
        assert busy.result() == 1.0
        assert np.array_equal(unmasker(jobs), expected)


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_process_unmasker_refuses_bad_chunking(bad: object) -> None:
    from secagg.errors import ParameterError

    with pytest.raises(ParameterError):
        process_unmasker(2, chunks_per_worker=bad)  # type: ignore[arg-type]
