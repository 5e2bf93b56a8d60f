"""Concurrency owned by the driver layer: the process pools that speed up
the offline phase and the server's arithmetic. The protocol cores and the
primitives stay single-threaded functions of their inputs; whoever drives a
round decides how many processes run them.

Worker processes start with ``spawn``: nothing is inherited from the parent,
in particular no key material. They receive and return integers only.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from ..errors import ParameterError

__all__ = ["process_executor"]


def process_executor(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` spawned processes (for
    :func:`secagg.primitives.paillier.precompute_obfuscators` and the like)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError("workers must be an integer >= 1")
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
