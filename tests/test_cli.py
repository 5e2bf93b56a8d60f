"""The `secagg simulate` command: summary, JSON, audit log, clear errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from secagg.cli import main


@pytest.mark.parametrize("protocol,extra", [("secagg", []), ("secagg+", ["--rule", "fedavg"]),
                                            ("plaintext", []), ("paillier", ["--key-bits", "1024"])])
def test_simulate_json_summary(protocol, extra):
    res = CliRunner().invoke(main, ["simulate", "--protocol", protocol, "--clients", "8", "--dim", "64",
                                    "--dropout", "0.25", "--seed", "3", "--json", *extra])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["max_abs_error_vs_plaintext"] < 1e-3
    assert 0 < out["included"] <= 8 and len(out["dropped"]) == 2
    assert out["bytes_sent_per_client"] > 0
    assert out["timings_s"]


def test_simulate_text_summary_and_audit_log(tmp_path):
    log = tmp_path / "audit.jsonl"
    res = CliRunner().invoke(main, ["--audit-log", str(log), "simulate", "--protocol", "secagg", "--clients", "6",
                                    "--dim", "32", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "max |aggregate - plaintext|" in res.output and "bytes per client" in res.output
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["outcome"] == "completed" and record["n"] == 6
    # value-free: no list of floats anywhere (ids are ints; an update would be floats)
    def walk(x):  # type: ignore[no-untyped-def]
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            assert not any(isinstance(v, float) for v in x), x
            for v in x:
                walk(v)
    walk(record)
    assert record["included"] and all(isinstance(i, int) for i in record["included"])


def test_simulate_insecure_configuration_is_a_clear_error():
    res = CliRunner().invoke(main, ["simulate", "--protocol", "secagg", "--clients", "10", "--dim", "8",
                                    "--dropout", "0.7"])
    assert res.exit_code != 0
    assert "cannot tolerate" in res.output and "Traceback" not in res.output


def test_simulate_paillier_randomizer_option():
    res = CliRunner().invoke(main, ["simulate", "--protocol", "paillier", "--clients", "3", "--dim", "16",
                                    "--key-bits", "1024", "--randomizer", "djn", "--json"])
    assert res.exit_code == 0, res.output
    assert "1152-bit exponent" in res.output
    bad = CliRunner().invoke(main, ["simulate", "--protocol", "paillier", "--clients", "3", "--dim", "16",
                                    "--key-bits", "1024", "--randomizer", "standard", "--short-exponent"])
    assert bad.exit_code != 0 and "contradicts" in bad.output
