"""secagg.flower.tls: the CA, the SuperLink certificate and the SuperNode
authentication keys a Flower deployment runs with. A real TLS handshake over
loopback checks the certificates (the right CA and host name pass; another
CA, another host name, a certificate the CA did not sign fail); Flower's own
loaders check the node keys."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from secagg.errors import ParameterError
from secagg.flower.tls import (CertificateAuthority, make_ca, make_node_auth_key, make_server_certificate,
                               write_deployment_credentials)


def _handshake(tmp_path, server_cert: bytes, server_key: bytes, trusted_ca: bytes, server_hostname: str) -> None:
    """One TLS handshake on 127.0.0.1: a server with ``server_cert``, a
    client trusting only ``trusted_ca`` and checking ``server_hostname``.
    Raises ssl.SSLError (the client's) if the client refuses."""
    (tmp_path / "s.crt").write_bytes(server_cert)
    (tmp_path / "s.key").write_bytes(server_key)
    (tmp_path / "ca.crt").write_bytes(trusted_ca)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    cctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with sctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with cctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                assert tls.recv(2) == b"ok"
    finally:
        listener.close()
        t.join(timeout=10)


def test_the_server_certificate_is_trusted_through_the_ca_for_its_hosts(tmp_path):
    ca = make_ca()
    cert, key = make_server_certificate(ca)
    for host in ("127.0.0.1", "localhost"):
        _handshake(tmp_path, cert, key, ca.cert_pem, host)
    parsed = x509.load_pem_x509_certificate(cert)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    parsed.verify_directly_issued_by(ca_cert)
    assert parsed.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ExtendedKeyUsageOID.SERVER_AUTH in parsed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_another_ca_another_host_or_a_self_made_certificate_is_refused(tmp_path):
    ca, other = make_ca(), make_ca()
    cert, key = make_server_certificate(ca, ["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):  # the client trusts another CA
        _handshake(tmp_path, cert, key, other.cert_pem, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):  # the certificate does not name this host
        _handshake(tmp_path, cert, key, ca.cert_pem, "localhost")
    # a certificate signed by a key that merely claims the CA's name
    forged = CertificateAuthority(ca.cert_pem, other.key_pem)
    fcert, fkey = make_server_certificate(forged, ["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path, fcert, fkey, ca.cert_pem, "127.0.0.1")


def test_node_auth_keys_are_p384_openssh_keys_flower_accepts():
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes, uses_nist_ec_curve

    private, public = make_node_auth_key()
    sk = load_ssh_private_key(private, None)
    pk = load_ssh_public_key(public.strip())
    assert isinstance(sk, ec.EllipticCurvePrivateKey) and isinstance(pk, ec.EllipticCurvePublicKey)
    assert sk.curve.name == "secp384r1" and uses_nist_ec_curve(pk)
    assert public_key_to_bytes(sk.public_key()) == public_key_to_bytes(pk)
    private2, public2 = make_node_auth_key()
    assert public2 != public and private2 != private


def test_credentials_are_written_privately_and_never_overwritten(tmp_path):
    d = tmp_path / "creds"
    creds = write_deployment_credentials(d, 3)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for path in (creds.ca_key, creds.server_key, *creds.node_private_keys):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for path in (creds.ca_cert, creds.server_cert, *creds.node_public_keys):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert len(creds.node_private_keys) == len(creds.node_public_keys) == 3
    x509.load_pem_x509_certificate(creds.server_cert.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(creds.ca_cert.read_bytes()))
    before = {p: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(ParameterError, match="refusing to overwrite"):
        write_deployment_credentials(d, 3)
    assert {p: p.read_bytes() for p in d.iterdir()} == before


@pytest.mark.parametrize("call, match", [
    (lambda ca: make_server_certificate(ca, []), "at least one host"),
    (lambda ca: make_server_certificate(ca, [" 127.0.0.1"]), "not a host"),
    (lambda ca: make_server_certificate(ca, ["127.0.0.1"], days=0), "at least one day"),
    (lambda ca: make_server_certificate(CertificateAuthority(b"junk", ca.key_pem)), "PEM"),
    (lambda ca: write_deployment_credentials("/nonexistent-never/x", -1), "num_nodes"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(ParameterError, match=match):
        call(make_ca())
