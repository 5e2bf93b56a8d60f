"""Secure aggregation inside real Flower deployments (Flower's Message API).

Two pieces, both thin transports for the shared round drivers
(:mod:`secagg.drivers`) of the masking protocol (:mod:`secagg.protocols.masking`)
and of the Paillier protocol decrypted by a committee of the nodes
(:mod:`secagg.protocols.paillier`; key files: :mod:`secagg.flower.keys`):

* client: :data:`secagg_mod`, a ClientApp mod around the ``train`` function
  (a :class:`~secagg.drivers.ClientDriver` whose state lives in
  ``context.state`` and whose claims live in the node's ledger directory:
  :class:`NodeStateStore`);
* server: :class:`SecAggFedAvg`, a strategy whose training rounds run the
  protocol as Flower messages over the Grid with any averaging rule (or
  :func:`run_secure_round` for one round in a custom ServerApp), configured by
  :class:`SecAggSettings` from the run config; evaluation metrics are
  aggregated under the same protocol (:func:`run_secure_evaluation`).

:mod:`secagg.flower.tls` makes a deployment's TLS certificates and SuperNode
authentication keys.

:class:`~secagg.flower.local.LocalDeployment` starts a real SuperLink and
SuperNodes on 127.0.0.1 for tests and demos. See docs/flower.md.

Needs the ``flower`` extra (``pip install '.[flower]' from the repository``, Flower 1.41).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .settings import SecAggSettings

__all__ = ["SecAggSettings", "secagg_mod", "make_secagg_mod", "NodeStateStore", "node_store", "SecAggFedAvg",
           "RoundReport", "SecAggConfigError", "StageLog", "run_secure_round", "identify_nodes", "exchange",
           "training_rule", "LocalDeployment", "run_secure_evaluation", "EarlyClose", "NodeLedger",
           "write_deployment_credentials", "DPBudget", "round_epsilon"]

_LAZY = {
    "secagg_mod": "client", "make_secagg_mod": "client", "NodeStateStore": "client", "node_store": "client",
    "SecAggFedAvg": "server", "RoundReport": "server", "SecAggConfigError": "server", "StageLog": "server",
    "run_secure_round": "server", "identify_nodes": "server", "exchange": "server", "training_rule": "server",
    "LocalDeployment": "local", "run_secure_evaluation": "server", "EarlyClose": "server", "NodeLedger": "client",
    "write_deployment_credentials": "tls", "DPBudget": "server", "round_epsilon": "client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(import_module(f"{__name__}.{module}"), name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == "flwr":
            raise ImportError("secagg.flower needs Flower: pip install '.[flower]' from the repository "
                              "(flwr>=1.41,<1.42)") from exc
        raise
    globals()[name] = value
    return value
