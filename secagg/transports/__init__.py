"""Transports: what moves a round's bytes between the drivers. The
in-process network (:mod:`secagg.transports.inprocess`) serves the
simulator, the benchmarks, the tests and the test vectors; the Flower
adapter (:mod:`secagg.flower`) and the HTTP example (``examples/http_transport``)
are the others."""

from .inprocess import LocalRound

__all__ = ["LocalRound"]
