"""Node key material on Flower: signature keys for the malicious-server mode,
and the Paillier decryption committee's key files.

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

For ``secagg-protocol = "paillier"`` no party may hold the decryption key: a
dealer (an operator's machine, once) shares a fresh key among the committee's
holders 1..N and forgets it::

    secagg keys deal-committee --holders 4 --out /secure/dealt   # committee.key, share-1.key .. share-4.key
    # give every node committee.key (public) and ONE share file (secret), and the server committee.key
    flower-supernode ... --node-config 'secagg-committee-key="/etc/committee.key" secagg-key-share="/secure/share-2.key"'

``committee.key`` is the wire-encoded
:class:`~secagg.protocols.paillier.threshold.CommitteeKey` (public key,
threshold, holders, verification keys); each share file is a
:class:`KeyShareFile` (holder id, share index, the committee's key id and the
share itself, mode 0600). Share files are local storage: they are never sent.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..encoding import wire
from ..errors import ParameterError, SecAggError
from ..primitives import paillier as pl
from ..primitives import threshold_paillier as tp
from ..primitives.signatures import generate_signing_keypair
from ..protocols.paillier.params import MAX_CLIENT_ID
from ..protocols.paillier.threshold import CommitteeKey, deal_committee
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["generate_node_key", "load_signing_key", "verification_key", "load_trusted_keys", "KeyShareFile",
           "deal_committee_files", "load_committee_key", "load_key_share", "COMMITTEE_KEY_FILE", "share_file_name"]

#: The committee's public key file in the dealer's output directory.
COMMITTEE_KEY_FILE = "committee.key"


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


# ---------------------------------------------------------------- the Paillier decryption committee


@wire.message("flower.KeyShareFile")
@dataclass(frozen=True)
class KeyShareFile:
    """One committee member's share file: its holder id (the client id it
    takes part under), the share index, the id of the committee key the
    share belongs to, and the share itself (big-endian). Local storage only:
    never sent anywhere."""

    holder: int = field(metadata={"min": 1, "max": MAX_CLIENT_ID})
    index: int = field(metadata={"min": 1, "max": tp.MAX_PARTIES})
    key_id: bytes = field(metadata={"len": 32})
    secret: bytes = field(metadata={"max_len": 4 * pl.MAX_KEY_BITS // 8})

    def __repr__(self) -> str:  # the share is secret
        return f"KeyShareFile(holder {self.holder}, share {self.index}, key_id={self.key_id.hex()[:16]})"

    def __reduce__(self):  # noqa: D105 - holds a key share
        raise TypeError("a key share file is never pickled")


def share_file_name(holder: int) -> str:
    """The dealer's name for ``holder``'s share file."""
    return f"share-{int(holder)}.key"


def _check_private_output(directory: Path) -> None:
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        raise ParameterError(f"the output directory {directory} does not exist") from None
    except OSError as exc:
        raise ParameterError(f"cannot use the output directory {directory}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ParameterError(f"the output directory {directory} is not a plain directory")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ParameterError(f"the output directory {directory} must belong to this user and be accessible by it "
                             f"alone (mode {stat.S_IMODE(st.st_mode):o}; chmod 700 it): it receives key shares")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def deal_committee_files(directory: str | os.PathLike[str], holders: int, threshold: int | None = None,
                         key_bits: int = pl.DEFAULT_KEY_BITS) -> tuple[CommitteeKey, list[Path]]:
    """Deal a fresh decryption committee for holders ``1..holders`` (any
    ``threshold`` of them decrypt; default a majority) into ``directory``,
    which must exist and be accessible by this user alone:
    :data:`COMMITTEE_KEY_FILE` (public) and one :func:`share_file_name` per
    holder (mode 0600). Existing files are never overwritten (nothing is
    written if any exists). Returns the committee key and the paths written;
    nothing of the key survives in this process beyond the files."""
    out = Path(directory)
    _check_private_output(out)
    if isinstance(holders, bool) or not isinstance(holders, int) or not 2 <= holders <= tp.MAX_PARTIES:
        raise ParameterError(f"a committee needs 2..{tp.MAX_PARTIES} holders, got {holders!r}")
    targets = [out / COMMITTEE_KEY_FILE] + [out / share_file_name(h) for h in range(1, holders + 1)]
    existing = [str(t) for t in targets if os.path.lexists(t)]
    if existing:
        raise ParameterError(f"refusing to overwrite {', '.join(existing)}")
    committee, shares = deal_committee(range(1, holders + 1), threshold, key_bits)
    written: list[Path] = []
    try:
        _write_new(targets[0], wire.encode(committee), 0o644)
        written.append(targets[0])
        for holder in range(1, holders + 1):
            share = shares.pop(holder)
            record = KeyShareFile(holder=holder, index=share.index, key_id=committee.key_id,
                                  secret=share.secret_bytes())
            path = out / share_file_name(holder)
            _write_new(path, wire.encode(record), 0o600)
            written.append(path)
            del share, record
    except OSError as exc:
        for path in written:  # no half-dealt committee: its shares would be useless
            path.unlink(missing_ok=True)
        raise ParameterError(f"cannot write the committee's files to {out}: {exc.strerror}") from None
    finally:
        shares.clear()
    return committee, written


def load_committee_key(path: str | os.PathLike[str]) -> CommitteeKey:
    """The committee's public key from its file (:data:`COMMITTEE_KEY_FILE`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ParameterError(f"cannot read the committee key file {path}: {exc.strerror}") from None
    try:
        return wire.decode(data, CommitteeKey)
    except SecAggError as exc:
        raise ParameterError(f"{path} is not a committee key file: {exc}") from None


def load_key_share(path: str | os.PathLike[str], committee: CommitteeKey) -> tuple[int, tp.KeyShare]:
    """``(holder id, key share)`` from a share file, which must be readable by
    this user alone and belong to ``committee`` (the key this node pinned):
    same key id, the holder's own share index, and a share that matches its
    verification key."""
    p = Path(path)
    try:
        st = os.stat(p)
        data = p.read_bytes()
    except OSError as exc:
        raise ParameterError(f"cannot read the key share file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise ParameterError(f"the key share file {path} is accessible by other users (mode "
                             f"{stat.S_IMODE(st.st_mode):o}; chmod 600 it)")
    try:
        record = wire.decode(data, KeyShareFile)
    except SecAggError as exc:
        raise ParameterError(f"{path} is not a key share file: {exc}") from None
    if record.key_id != committee.key_id:
        raise ParameterError(f"the key share in {path} belongs to another committee (key id "
                             f"{record.key_id.hex()[:16]}), not to the pinned one ({committee.key_id.hex()[:16]})")
    if record.holder not in committee.holders or committee.index_of(record.holder) != record.index:
        raise ParameterError(f"the key share in {path} (holder {record.holder}, share {record.index}) is not a "
                             "share of the pinned committee")
    return record.holder, tp.KeyShare.from_secret_bytes(committee.key, record.index, record.secret)
