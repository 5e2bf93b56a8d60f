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


def test_simulate_paillier_decryption_and_signed_options():
    for extra, expect in ((["--malicious-server"], "committee: any 3 of 4 clients"),
                          (["--decryption", "key_holder"], "key holder")):
        res = CliRunner().invoke(main, ["simulate", "--protocol", "paillier", "--clients", "4", "--dim", "16",
                                        "--key-bits", "1024", "--json", *extra])
        assert res.exit_code == 0, res.output
        summary = json.loads(res.output)
        text = json.dumps(summary)
        assert expect in text
        assert ('"signed_submissions": true' in text) == ("--malicious-server" in extra)


# -- bad inputs: each ends in one typed error line, exit code 1 or 2, no traceback, nothing created ------------

try:
    import sklearn  # noqa: F401
    import torch  # noqa: F401
    HAVE_TRAIN = True
except ImportError:  # pragma: no cover
    HAVE_TRAIN = False

_S = ["simulate", "--dim", "8", "--clients", "4"]
BAD_INPUTS = [
    # (argv, words the error line must contain)
    (["simulate", "--clip", "-1"], ["--clip", "> 0"]),
    (["simulate", "--clip", "0"], ["--clip", "> 0"]),
    (["simulate", "--clip", "nan"], ["--clip", "finite"]),
    (["simulate", "--clip", "inf"], ["--clip", "finite"]),
    (["simulate", "--dim", "100000000000"], ["memory", "available", "--dim"]),
    (["simulate", "--clients", "3", "--dim", "2000000000"], ["memory", "available", "--dim"]),
    (["simulate", "--clients", "1000000", "--dim", "1"], ["memory", "available", "--clients"]),
    (["simulate", "--dim", "0"], ["--dim"]),
    (["simulate", "--clients", "1"], ["--clients"]),
    (["simulate", "--clients", "2", "--dropout", "0.9", "--dim", "8"], ["drops all 2 clients"]),
    (["simulate", "--clients", "2", "--dropout", "0", "--dim", "8"], ["drops 0 of 2", "at least 10 %"]),
    (["simulate", "--clients", "3", "--dropout", "0.5", "--dim", "8"], ["drops 2 of 3", "67%"]),
    (["simulate", "--dropout", "1"], ["--dropout"]),
    (["simulate", "--dropout", "-0.1"], ["--dropout"]),
    (["simulate", "--dropout", "nan"], ["--dropout", "nan"]),
    (["simulate", "--seed", "-1"], ["--seed"]),
    ([*_S, "--threshold", "0"], ["--threshold"]),
    ([*_S, "--threshold", "9"], ["--threshold 9", "4 clients"]),
    ([*_S, "--protocol", "plaintext", "--threshold", "2"], ["--threshold", "plaintext"]),
    ([*_S, "--degree", "-1"], ["--degree"]),
    ([*_S, "--degree", "9"], ["--degree 9", "3 other clients"]),
    ([*_S, "--protocol", "secagg", "--degree", "2"], ["--degree", "complete graph"]),
    ([*_S, "--frac-bits", "-3"], ["frac_bits"]),
    ([*_S, "--clip", "1e300"], ["too large"]),
    ([*_S, "--key-bits", "1024"], ["--key-bits", "paillier only"]),
    ([*_S, "--key-bits", "17"], ["--key-bits"]),
    ([*_S, "--workers", "100000"], ["--workers"]),
    ([*_S, "--randomizer", "djn"], ["--randomizer", "paillier only"]),
    ([*_S, "--protocol", "plaintext", "--malicious-server"], ["--malicious-server"]),
    ([*_S, "--decryption", "key_holder"], ["--decryption", "paillier only"]),
    ([*_S, "--key-primes", "3"], ["--key-primes", "paillier only"]),
    ([*_S, "--protocol", "paillier", "--key-primes", "3"], ["--key-primes", "key_holder only"]),
    ([*_S, "--protocol", "paillier", "--decryption", "key_holder", "--key-primes", "4"], ["--key-primes"]),
    ([*_S, "--protocol", "paillier", "--decryption", "key_holder", "--key-primes", "1"], ["--key-primes"]),
    ([*_S, "--protocol", "paillier", "--decryption", "key_holder", "--key-primes", "three"], ["--key-primes"]),
    ([*_S, "--protocol", "rot13"], ["--protocol"]),
    ([*_S, "--rule", "median"], ["--rule"]),
    (["--audit-log", "/nonexistent/dir/x", "simulate"], ["--audit-log", "No such file"]),
    ([*_S, "--dp-epsilon", "0"], ["--dp-epsilon", "> 0"]),
    ([*_S, "--dp-epsilon", "nan"], ["--dp-epsilon", "finite"]),
    ([*_S, "--dp-clip", "2"], ["--dp-clip", "with --dp-epsilon only"]),
    ([*_S, "--dp-epsilon", "1", "--dp-delta", "1"], ["--dp-delta"]),
    ([*_S, "--dp-epsilon", "1", "--dp-bits", "63"], ["--dp-bits"]),
    ([*_S, "--dp-epsilon", "1", "--rule", "weighted"], ["unweighted", "--rule mean"]),
    ([*_S, "--dp-epsilon", "1", "--protocol", "plaintext"], ["--dp-epsilon", "secure protocol"]),
    ([*_S, "--dp-epsilon", "1", "--clip", "2"], ["--clip", "--dp-clip"]),
    ([*_S, "--dp-epsilon", "1", "--dp-mechanism", "laplace"], ["--dp-mechanism"]),
    (["keys", "generate", "/nonexistent/dir/node.key"], ["does not exist"]),
    (["keys", "tls", "/nonexistent/dir/creds", "--nodes", "2"], ["does not exist"]),
    (["keys", "tls", "creds", "--nodes", "-1"], ["--nodes"]),
    (["keys", "tls", "creds"], ["--nodes"]),
    (["keys", "public", "/nonexistent/node.key"], ["cannot read"]),
    (["keys", "deal-committee", "--holders", "4", "--out", "/nonexistent/dir"], ["does not exist"]),
    (["keys", "deal-committee", "--holders", "1", "--out", "."], ["--holders"]),
    (["keys", "deal-committee", "--holders", "4", "--threshold", "1", "--out", "."], ["--threshold"]),
    (["keys", "deal-committee", "--holders", "4", "--threshold", "5", "--out", "."], ["--threshold",
                                                                                      "more than the 4"]),
    (["keys", "deal-committee", "--holders", "4", "--key-bits", "512", "--out", "."], ["--key-bits"]),
]
TRAIN_BAD_INPUTS = [
    (["train", "--clients", "2"], ["drops 0 of 2", "at least 10 %"]),
    (["train", "--out", "/nonexistent/x/y"], ["--out", "/nonexistent/x does not exist"]),
    (["train", "--clients", "0"], ["clients"]),
    (["train", "--clients", "1"], ["at least 2 clients"]),
    (["train", "--clients", "1000"], ["training examples"]),
    (["train", "--rounds", "0"], ["rounds"]),
    (["train", "--epochs", "-1"], ["epochs"]),
    (["train", "--dropout", "1.5"], ["dropout"]),
    (["train", "--dropout", "nan"], ["--dropout", "finite"]),
    (["train", "--alpha", "0"], ["alpha"]),
    (["train", "--lr", "inf"], ["--lr", "finite"]),
    (["train", "--batch-size", "0"], ["batch_size"]),
    (["train", "--server-lr", "0"], ["server_lr"]),
    (["train", "--threshold", "0"], ["threshold"]),
    (["train", "--key-bits", "17"], ["--key-bits"]),
    (["train", "--key-bits", "1024"], ["--key-bits", "paillier only"]),
    (["train", "--clip", "-1"], ["clip"]),
    (["train", "--frac-bits", "99"], ["frac_bits"]),
    (["train", "--protocol", "plaintext", "--malicious-server"], ["--malicious-server"]),
    (["train", "--protocol", "secagg", "--clients", "2", "--dropout", "0.9"], ["drops 2 of 2"]),
    (["demo", "--rule", "sum"], ["--rule"]),
    (["train", "--dp-epsilon", "1", "--rule", "fedavg"], ["unweighted", "--rule mean"]),
    (["train", "--dp-epsilon", "1", "--protocol", "plaintext"], ["secure protocol"]),
    (["train", "--dp-delta", "0.1"], ["--dp-delta", "with --dp-epsilon only"]),
    (["demo", "--out", "/nonexistent/x/y"], ["--out", "does not exist"]),
]


@pytest.fixture
def little_memory(monkeypatch):
    """16 GiB available, whatever the machine has: the size checks are reproducible."""
    import secagg.cli as cli

    monkeypatch.setattr(cli, "_available_memory", lambda: 16 << 30)


def _check_one_line_error(res, words):  # type: ignore[no-untyped-def]
    out = res.output
    assert res.exit_code in (1, 2), out
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # click's own exit, not a crash
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    for w in words:
        assert w in errors[0], (w, errors[0])


_CASES = BAD_INPUTS + (TRAIN_BAD_INPUTS if HAVE_TRAIN else [])


@pytest.mark.parametrize("argv,words", _CASES, ids=[" ".join(a) for a, _ in _CASES])
def test_bad_input_is_one_typed_error_line(argv, words, little_memory, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, [*argv, *(["--no-progress"] if argv[0] in ("train", "demo") else [])])
    _check_one_line_error(res, words)
    assert not list(tmp_path.iterdir())  # nothing created (runs/ included)


def test_python_m_keys_is_the_click_command(tmp_path):
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "-m", "secagg.cli", "keys", "generate", "/nonexistent/dir/node.key"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert [ln for ln in bad.stderr.splitlines() if ln.startswith("Error:")] == [
        "Error: Invalid value for 'PATH': the directory /nonexistent/dir does not exist"]
    key = tmp_path / "node.key"
    ok = subprocess.run([sys.executable, "-m", "secagg.cli", "keys", "generate", str(key)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    public = ok.stdout.strip()
    assert len(bytes.fromhex(public)) == 32 and oct(key.stat().st_mode & 0o777) == "0o600"
    res = CliRunner().invoke(main, ["keys", "public", str(key)])
    assert res.exit_code == 0 and res.output.strip() == public
    again = CliRunner().invoke(main, ["keys", "generate", str(key)])
    _check_one_line_error(again, ["never overwritten"])


def test_keys_deal_committee_writes_a_committee_and_refuses_to_overwrite(tmp_path):
    from secagg.flower.keys import load_committee_key, load_key_share

    out = tmp_path / "dealt"
    out.mkdir(mode=0o700)
    res = CliRunner().invoke(main, ["keys", "deal-committee", "--holders", "3", "--key-bits", "1024",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    committee = load_committee_key(out / "committee.key")
    assert committee.holders == (1, 2, 3) and committee.threshold == 2 and committee.public_key.key_bits == 1024
    assert f"key id {committee.key_id.hex()}" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["committee.key", "share-1.key", "share-2.key", "share-3.key"]
    for holder in (1, 2, 3):
        share_file = out / f"share-{holder}.key"
        assert f"wrote {share_file}" in res.output
        assert share_file.stat().st_mode & 0o777 == 0o600
        got, share = load_key_share(share_file, committee)
        assert got == holder and share.index == holder
        assert share.secret_bytes().hex() not in res.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = CliRunner().invoke(main, ["keys", "deal-committee", "--holders", "3", "--key-bits", "1024",
                                      "--out", str(out)])
    _check_one_line_error(again, ["refusing to overwrite"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a directory others can read or write is refused, and nothing is written to it
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    res = CliRunner().invoke(main, ["keys", "deal-committee", "--holders", "3", "--out", str(shared)])
    _check_one_line_error(res, ["accessible by it alone", "chmod 700"])
    assert not list(shared.iterdir())


def test_memory_estimate_and_probe():
    import secagg.cli as cli

    avail = cli._available_memory()
    assert avail is None or avail > 0
    # the estimate grows with the updates and, for masking, with the pairs of clients
    assert cli._memory_needed("secagg+", 3, 2_000_000_000) > 3 * 2_000_000_000 * 8
    assert cli._memory_needed("secagg", 10_000, 1) > cli._memory_needed("plaintext", 10_000, 1)
    # the defaults fit anywhere this runs
    assert cli._memory_needed("secagg+", 100, 10_000) < 256 << 20


def test_simulate_with_dp_reports_the_round_guarantee():
    """One DP round: the JSON summary carries the round's report; its epsilon
    is within the target (calibrated for the threshold of survivors, more
    survived); the error against the noiseless aggregate is the noise."""
    res = CliRunner().invoke(main, ["simulate", "--clients", "12", "--dim", "64", "--dp-epsilon", "2",
                                    "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    dp = summary["dp"]
    assert 0 < dp["epsilon"] <= 2.0 and dp["delta"] == 1e-5 and dp["mechanism"] == "dgauss"
    assert dp["survivors"] == summary["included"]
    assert summary["max_abs_error_vs_plaintext"] > 1e-3


def test_keys_tls_writes_a_deployment_and_never_overwrites(tmp_path):
    out = tmp_path / "creds"
    res = CliRunner().invoke(main, ["keys", "tls", str(out), "--nodes", "2", "--host", "superlink.example"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ca.crt", "ca.key", "node-0.key", "node-0.pub", "node-1.key", "node-1.pub", "server.crt",
                     "server.key"]
    assert (out.stat().st_mode & 0o777) == 0o700 and (out / "node-0.key").stat().st_mode & 0o077 == 0
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "superlink.example" in sans.get_values_for_type(x509.DNSName)
    before = (out / "ca.key").read_bytes()
    again = CliRunner().invoke(main, ["keys", "tls", str(out), "--nodes", "2"])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output
    assert (out / "ca.key").read_bytes() == before
