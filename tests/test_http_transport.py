"""End to end over real HTTP on 127.0.0.1: the example transport
(examples/http_transport) runs masking and Paillier rounds on the round drivers
alone, each with clients that die mid-round, and nothing stays running."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest

from secagg.errors import ProtocolAborted

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "http_transport"
FAST = {"liveness": 2.0, "poll_wait": 0.25, "stage_timeout": 30.0}


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("http_transport_demo", EXAMPLE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # puts the example's directory on sys.path for http_round
    return module


demo = _load()


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    end = time.monotonic() + 5.0  # HTTP handler threads finish their last response
    while time.monotonic() < end and [t for t in threading.enumerate() if t not in before]:
        time.sleep(0.05)
    assert [t.name for t in threading.enumerate() if t not in before] == []


def _failures(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "secagg.audit"]
    assert len(records) == 1
    return records[0]["failures"]


def _check(rnd: Any, included: tuple[int, ...], dropped: dict[int, str]) -> None:
    assert rnd.errors == {}
    assert rnd.left_running == []
    assert rnd.result.included == included
    assert dict(rnd.result.dropped) == dropped
    assert rnd.max_error() <= rnd.bound


@pytest.mark.parametrize("protocol", ["secagg+", "secagg"])
def test_masking_round_over_http(protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    t = time.monotonic()
    with caplog.at_level(logging.INFO, logger="secagg.audit"):
        rnd = demo.masking_round(protocol=protocol, **FAST)
    assert time.monotonic() - t < 30
    # 3 was killed before its masked input (its masks are removed through the
    # survivors' shares); 7 crashed after it (still included)
    _check(rnd, (1, 2, 4, 5, 6, 7, 8, 9, 10), {3: "masked_input", 7: "unmasking"})
    assert rnd.result.params["protocol"] == protocol
    assert rnd.result.params["degree"] == (6 if protocol == "secagg+" else 9)
    failures = _failures(caplog)
    assert failures["3"].startswith("masked_input: silent for")
    assert failures["7"].startswith("unmasking: left: Crash")


def test_paillier_round_over_http(caplog: pytest.LogCaptureFixture) -> None:
    t = time.monotonic()
    with caplog.at_level(logging.INFO, logger="secagg.audit"):
        rnd = demo.paillier_round(key_bits=1024, **FAST)
    assert time.monotonic() - t < 30
    _check(rnd, (1, 2, 3, 5, 6), {4: "submit"})
    assert rnd.result.protocol == "paillier"
    assert _failures(caplog)["4"].startswith("submit: silent for")


def test_paillier_client_that_says_it_leaves() -> None:
    rnd = demo.paillier_round(key_bits=1024, deaths={2: (1, True), 5: (1, False)}, **FAST)
    _check(rnd, (1, 3, 4, 6), {2: "submit", 5: "submit"})


def test_aborted_round_leaves_nothing_running() -> None:
    deaths = {i: (2, False) for i in range(1, 7)}  # too few share their keys
    with pytest.raises(ProtocolAborted):
        demo.masking_round(deaths=deaths, **FAST)


def test_malformed_requests_are_refused() -> None:
    with demo.RoundServer(None, poll_wait=0.1) as srv:
        for path in ("/next", "/next?party=x", "/elsewhere?party=1"):
            with pytest.raises(HTTPError) as err:
                urlopen(srv.url + path, timeout=5)
            assert err.value.code == 400
            err.value.close()
        with urlopen(srv.url + "/next?party=1", timeout=5) as resp:  # nothing to deliver yet
            assert resp.status == 204
