"""The embedding guide's example (examples/own_transport/queue_round.py, the
code of docs/embedding.md): a masking round between threads over
``queue.Queue``s with a client that crashes and one that vanishes ends with the
plaintext mean of exactly the included clients, and no thread left running."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "own_transport" / "queue_round.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("own_transport_demo", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


demo = _load()


def _check(out: dict[str, Any]) -> None:
    result = out["result"]
    expected = np.mean([out["updates"][i] for i in result.included], axis=0)
    assert result.aggregate.shape == expected.shape
    assert np.max(np.abs(result.aggregate - expected)) <= out["bound"]
    assert out["left_running"] == []


def test_round_with_a_crash_and_a_silent_client() -> None:
    out = demo.run_round(stage_timeout=1.0)
    result = out["result"]
    _check(out)
    # client 3 left before its masked input: out, its masks removed; client 7
    # went silent when asked to unmask: its masked input is in
    assert set(result.included) == set(range(1, 11)) - {3}
    assert dict(result.dropped) == {3: "masked_input", 7: "unmasking"}
    assert out["failures"][3] == "masked_input: client 3 crashed"
    assert out["failures"][7].startswith("unmasking")
    assert {key.split(".")[0] for key in out["times"]} == {"advertise_keys", "share_keys", "masked_input",
                                                           "unmasking"}
    assert not [t for t in threading.enumerate() if t.name.startswith("queue-party-")]


def test_round_without_deaths_closes_each_stage_early() -> None:
    out = demo.run_round(n=6, dim=7, seed=3, stage_timeout=30.0, deaths={})
    _check(out)  # a stage waiting for its 30 s deadline would show in the test's duration
    assert list(out["result"].included) == list(range(1, 7)) and not out["result"].dropped


def test_script_runs() -> None:
    res = subprocess.run([sys.executable, str(EXAMPLE)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "included [1, 2, 4, 5, 6, 7, 8, 9, 10]" in res.stdout
