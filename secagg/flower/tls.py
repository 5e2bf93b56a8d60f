"""Certificates and node authentication keys for a Flower deployment.

A production Flower deployment runs its SuperLink with TLS and SuperNode
authentication. This module makes the files it needs with ``cryptography``:

* a certificate authority (:func:`make_ca`): a self-signed CA certificate and
  its key, which signs the SuperLink's certificate; the CA certificate is what
  SuperNodes (``flower-supernode --root-certificates``) and the ``flwr`` CLI
  (``root-certificates`` of the connection in ``~/.flwr/config.toml``) trust;
* the SuperLink's server certificate (:func:`make_server_certificate`) for its
  host names and addresses (``127.0.0.1`` and ``localhost`` by default),
  given to ``flower-superlink --ssl-ca-certfile --ssl-certfile --ssl-keyfile``;
* one authentication key pair per SuperNode (:func:`make_node_auth_key`): a
  NIST P-384 key in OpenSSH format, the private half for
  ``flower-supernode --auth-supernode-private-key``, the public half registered
  with ``flwr supernode register <public key> <connection>`` on a SuperLink
  started with ``--enable-supernode-auth``: the SuperLink then refuses every
  SuperNode whose key is not registered.

These node authentication keys are Flower's, checked by the SuperLink on every
request of a SuperNode. They are not the secure-aggregation signature keys of
the malicious-server mode (:mod:`secagg.flower.keys`, Ed25519, checked by the
other *nodes* on every key advertisement, so that a dishonest server cannot
invent parties): the two answer different attackers and are kept apart.

:func:`write_deployment_credentials` writes all of it into one private
directory (mode 0700, every key file 0600) and returns the paths.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import ParameterError

__all__ = ["CertificateAuthority", "make_ca", "make_server_certificate", "make_node_auth_key",
           "DeploymentCredentials", "write_deployment_credentials", "DEFAULT_HOSTS"]

#: The names a local SuperLink's certificate is valid for.
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
_CURVE = ec.SECP384R1


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA: its certificate and private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(common_name: str = "secagg Flower deployment CA", *, days: int = 365) -> CertificateAuthority:
    """A new self-signed CA (P-384, SHA-384) valid for ``days`` days, allowed
    to sign end-entity certificates only (path length 0)."""
    if days < 1:
        raise ParameterError("a certificate must be valid for at least one day")
    key = ec.generate_private_key(_CURVE())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    return CertificateAuthority(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        if not isinstance(host, str) or not host or host != host.strip():
            raise ParameterError(f"not a host name or address: {host!r}")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_server_certificate(ca: CertificateAuthority, hosts: Sequence[str] = DEFAULT_HOSTS, *,
                            days: int = 365) -> tuple[bytes, bytes]:
    """A TLS server certificate signed by ``ca`` for ``hosts`` (IP addresses
    and DNS names, in the subject alternative names), and its private key;
    both PEM."""
    if not hosts:
        raise ParameterError("a server certificate needs at least one host name or address")
    if days < 1:
        raise ParameterError("a certificate must be valid for at least one day")
    try:
        ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
        ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    except ValueError as exc:
        raise ParameterError(f"not a CA certificate and key in PEM: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ParameterError("the CA key must be an elliptic-curve key")
    key = ec.generate_private_key(_CURVE())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_node_auth_key() -> tuple[bytes, bytes]:
    """A SuperNode authentication key pair (NIST P-384), in the OpenSSH
    formats Flower reads: the private key (for ``--auth-supernode-private-key``)
    and the public key line (for ``flwr supernode register``)."""
    key = ec.generate_private_key(_CURVE())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"


@dataclass(frozen=True)
class DeploymentCredentials:
    """Where :func:`write_deployment_credentials` put each file."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    node_private_keys: tuple[Path, ...] = field(default_factory=tuple)
    node_public_keys: tuple[Path, ...] = field(default_factory=tuple)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_deployment_credentials(directory: str | os.PathLike[str], num_nodes: int,
                                 hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = 365) -> DeploymentCredentials:
    """Make a CA, the SuperLink's certificate for ``hosts`` and ``num_nodes``
    SuperNode authentication key pairs, and write them to ``directory``
    (created with mode 0700 if missing; it must not hold any of the files
    yet: nothing is overwritten). File names: ``ca.crt``, ``ca.key``,
    ``server.crt``, ``server.key``, ``node-<i>.key`` and ``node-<i>.pub``
    (``i`` from 0). Keys are written 0600, certificates and public keys 0644.
    The CA key is only needed to sign another server certificate: keep it
    offline in production."""
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
        raise ParameterError("num_nodes must be an integer >= 0")
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if d.is_symlink() or not d.is_dir():
        raise ParameterError(f"{d} is not a directory")
    ca = make_ca(days=days)
    cert, key = make_server_certificate(ca, hosts, days=days)
    creds = DeploymentCredentials(d, d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key",
                                  tuple(d / f"node-{i}.key" for i in range(num_nodes)),
                                  tuple(d / f"node-{i}.pub" for i in range(num_nodes)))
    taken = [p for p in (creds.ca_cert, creds.ca_key, creds.server_cert, creds.server_key,
                         *creds.node_private_keys, *creds.node_public_keys) if p.exists() or p.is_symlink()]
    if taken:
        raise ParameterError(f"refusing to overwrite {', '.join(str(p) for p in taken)}")
    _write(creds.ca_cert, ca.cert_pem, 0o644)
    _write(creds.ca_key, ca.key_pem, 0o600)
    _write(creds.server_cert, cert, 0o644)
    _write(creds.server_key, key, 0o600)
    for private_path, public_path in zip(creds.node_private_keys, creds.node_public_keys):
        private, public = make_node_auth_key()
        _write(private_path, private, 0o600)
        _write(public_path, public, 0o644)
    return creds
