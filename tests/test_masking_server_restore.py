"""The masking server saved mid-round and restored (a restart, or another
worker taking the round over): the round goes on exactly as it would have;
a snapshot that is not one, or not consistent, is refused with a typed error
and builds nothing; a finished round is not resumed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.encoding import wire
from secagg.errors import LocalProtocolError, ParameterError, WireFormatError
from secagg.protocols.masking import Abort, MaskingServer, ServerResult
from secagg.protocols.masking.server_state import MaskingServerState

from masking_harness import Round

DROP = {5: "masked_input", 6: "share_keys"}


def _reference(malicious: bool, protocol: str) -> ServerResult:
    out = Round(n=8, dim=16, protocol=protocol, malicious=malicious, dropout_tolerance=0.3).run(drop=DROP)
    assert isinstance(out, ServerResult)
    return out


def _cut_and_resume(stage: str, malicious: bool, protocol: str) -> tuple[Round, ServerResult | Abort]:
    r = Round(n=8, dim=16, protocol=protocol, malicious=malicious, dropout_tolerance=0.3)
    r.run_to(stage, drop=DROP)
    r.step(hold=True, close=False)
    held = sorted(r.held)
    r.release(held[: len(held) // 2])  # half of the stage's answers reached the old server
    data = r.driver.core.snapshot()
    assert isinstance(wire.decode(data), MaskingServerState)
    restored = MaskingServer.restore(data)
    assert restored.snapshot() == data  # nothing lost, nothing added
    r.driver.core = restored  # the new process takes the round over
    r.release()
    r.close()
    out = r.run()
    return r, out


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
@pytest.mark.parametrize("stage", ["advertise_keys", "share_keys", "masked_input", "unmasking"])
def test_a_round_saved_at_any_stage_resumes_to_the_same_aggregate(stage, protocol):
    ref = _reference(False, protocol)
    r, out = _cut_and_resume(stage, False, protocol)
    assert isinstance(out, ServerResult)
    assert out.included == ref.included and dict(out.dropped) == dict(ref.dropped)
    assert np.array_equal(out.sum_weighted, ref.sum_weighted) and out.sum_weights == ref.sum_weights


@pytest.mark.parametrize("stage", ["consistency_check", "unmasking"])
def test_malicious_server_mode_resumes_too(stage):
    ref = _reference(True, "secagg")
    _, out = _cut_and_resume(stage, True, "secagg")
    assert isinstance(out, ServerResult) and np.array_equal(out.sum_weighted, ref.sum_weighted)


def test_restored_server_still_refuses_what_the_old_one_would():
    """Duplicates, late messages and reused keys are refused after a restore
    as before: the collected messages and the used keys came back."""
    r = Round(n=6, dim=8, dropout_tolerance=0.2)
    adv = r.step(hold=True, close=False)
    r.release([1, 2])
    server = MaskingServer.restore(r.driver.core.snapshot())
    from secagg.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError):
        server.receive(1, adv[1])  # a second advertisement
    with pytest.raises(RemoteProtocolError):
        server.receive(3, dataclasses.replace(adv[3], mask_public=adv[2].mask_public))  # a key already used


def _state(r: Round) -> MaskingServerState:
    s = wire.decode(r.driver.core.snapshot())
    assert isinstance(s, MaskingServerState)
    return s


def test_inconsistent_or_foreign_snapshots_are_refused_and_build_nothing():
    r = Round(n=6, dim=8, dropout_tolerance=0.2)
    r.run_to("masked_input")
    r.step(hold=True, close=False)
    r.release([1, 2, 3])
    good = _state(r)
    bad = {
        "version": dataclasses.replace(good, version=99),
        "stage": dataclasses.replace(good, stage="done"),
        "unknown stage": dataclasses.replace(good, stage="teleport"),
        "U_2 outside U_1": dataclasses.replace(good, u2=np.array([1, 2, 3, 4, 5, 6, 7], dtype=np.uint32)
                                               if 7 not in good.params.client_ids else good.u2[:0]),
        "U_3 before its stage closed": dataclasses.replace(good, u3=good.u2.copy()),
        "masked sender outside U_2": dataclasses.replace(good, masked=np.array([1, 99], dtype=np.uint32)),
        "accumulator size": dataclasses.replace(good, accumulator=good.accumulator[:-1].copy()),
        "advertisements missing": dataclasses.replace(good, advertised=good.advertised[1:]),
        "refusal columns": dataclasses.replace(good, rejected_stages=("share_keys",)),
    }
    for name, state in bad.items():
        with pytest.raises(ParameterError, match="snapshot"):
            MaskingServer.restore(wire.encode(state))
    data = wire.encode(good)
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(WireFormatError):
            MaskingServer.restore(data[:cut])
    with pytest.raises(ParameterError, match="not a masking.ServerState"):
        MaskingServer.restore(wire.encode(good.params))
    # the good one still restores
    assert MaskingServer.restore(data).snapshot() == data


def test_a_finished_round_is_not_saved():
    r = Round(n=5, dim=8, dropout_tolerance=0.2)
    r.run()
    with pytest.raises(LocalProtocolError, match="over"):
        r.driver.core.snapshot()
