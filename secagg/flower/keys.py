"""Node signature keys for the malicious-server mode on Flower.

Against a server that lies about who dropped out, the protocol has every node
sign its key advertisement and the final set of survivors (Ed25519). That only
helps if each node can tell the other nodes' verification keys from keys the
server made up, so the keys must reach the nodes through a channel the server
does not control. Here that channel is the federation's operators: each node
generates its key pair once, and every node gets the same list of the
federation's verification keys (one hex key per line) as a file:

    secagg keys generate /secure/node.key     # prints the public key
    # collect the printed keys into trusted-keys.txt, distribute it to every node
    flower-supernode ... --node-config 'secagg-signing-key="/secure/node.key" secagg-trusted-keys="/etc/trusted-keys.txt"'

The server only learns which node holds which listed key (it asks the nodes);
every node refuses a round whose keys are not all on its list, or that does not
give it its own key.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ParameterError
from ..primitives.signatures import generate_signing_keypair
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["generate_node_key", "load_signing_key", "verification_key", "load_trusted_keys"]


def verification_key(signing_key: bytes) -> bytes:
    """The 32-byte Ed25519 public key of a 32-byte private key."""
    return Ed25519PrivateKey.from_private_bytes(bytes(signing_key)).public_key().public_bytes_raw()


def generate_node_key(path: str | os.PathLike[str]) -> bytes:
    """Create a node's signing key file (hex, mode 0600; never overwritten) and
    return its verification key."""
    p = Path(path)
    pair = generate_signing_keypair()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(pair.private.hex() + "\n")
    return pair.public


def _hex_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ParameterError(f"{where}: not a hex key") from None
    if len(key) != 32:
        raise ParameterError(f"{where}: an Ed25519 key has 32 bytes, got {len(key)}")
    return key


def load_signing_key(path: str | os.PathLike[str]) -> bytes:
    """A node's 32-byte signing key from its key file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ParameterError(f"cannot read the signing key file {path}: {exc.strerror}") from None
    return _hex_key(text, str(path))


def load_trusted_keys(path: str | os.PathLike[str]) -> frozenset[bytes]:
    """The federation's verification keys: one hex key per line, ``#`` comments."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ParameterError(f"cannot read the trusted keys file {path}: {exc.strerror}") from None
    keys = set()
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            keys.add(_hex_key(line, f"{path}:{number}"))
    if not keys:
        raise ParameterError(f"the trusted keys file {path} lists no key")
    return frozenset(keys)
