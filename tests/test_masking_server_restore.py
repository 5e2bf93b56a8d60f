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
        "U_2 outside U_1": dataclasses.replace(good, u2=np.array([1, 2, 3, 4, 5, 6, 7], dtype=np.uint32)),
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
        MaskingServer.restore(good.params)
    with pytest.raises(ParameterError, match="not masking parameters"):
        MaskingServer.restore(wire.encode(dataclasses.replace(good, params=wire.encode(good.advertised[0]))))
    # the good one still restores
    assert MaskingServer.restore(data).snapshot() == data


def test_a_distributed_dp_round_resumes_with_its_dp_parameters():
    """A DP round (masking.DPParams: the dp parameters bound into the session
    id) saved at masked_input resumes to the same noised sum and report."""
    from secagg.dp import DPConfig
    from secagg.simulation import simulate

    xs = [np.full(16, 0.1 * (i + 1)) for i in range(6)]
    cfg = DPConfig(epsilon=4.0)
    out = {}
    restarts: list[bytes] = []

    def cut(server: MaskingServer) -> MaskingServer:
        data = server.snapshot()
        restarts.append(data)
        return MaskingServer.restore(data)

    for restart in (False, True):
        from secagg.drivers import server as drv

        original = drv.ServerDriver.receive

        def receive(self, party, data, _orig=original, _restart=restart):  # type: ignore[no-untyped-def]
            accepted = _orig(self, party, data)
            core = self.core
            if _restart and core.stage.value == "masked_input" and len(core._got.masked) == 3:
                assert core.params.dp is not None
                self.core = cut(core)
            return accepted

        drv.ServerDriver.receive = receive
        try:
            out[restart] = simulate(xs, protocol="secagg", seed=5, dp=cfg)
        finally:
            drv.ServerDriver.receive = original
    assert len(restarts) == 1  # the round really was cut once, mid-stage
    assert np.array_equal(out[True].aggregate, out[False].aggregate)
    assert out[True].dp.epsilon == out[False].dp.epsilon and out[True].dp.survivors == 6


def test_a_finished_round_is_not_saved():
    r = Round(n=5, dim=8, dropout_tolerance=0.2)
    r.run()
    with pytest.raises(LocalProtocolError, match="over"):
        r.driver.core.snapshot()
