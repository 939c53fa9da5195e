"""A node's own identity: an Ed25519 key created on first start, and the node id derived from it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from mesh.files import FileRefused, check_private_dir, make_private_dir, read_bounded, write_new_file

IDENTITY_FILE = "identity.key"
NODE_ID_HEX_CHARS = 16
SEED_BYTES = 32
IDENTITY_MAX_BYTES = 1024  # 64 hex characters and a newline; room for stray whitespace


class IdentityError(Exception):
    """The identity file is unusable; the message names the fix."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The node's signing key and its stable node id."""

    node_id: str
    signing_key: nacl.signing.SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)


def node_id_for(public_key: bytes) -> str:
    """The node id: the first 16 hex characters of sha256(public key)."""
    return hashlib.sha256(public_key).hexdigest()[:NODE_ID_HEX_CHARS]


def load_or_create(data_dir: Path) -> Identity:
    """Load the identity in `data_dir`, creating it (mode 0600) on first start.

    Refused (IdentityError with the chmod to run): a data dir other users may
    write into, or an identity key they may read.
    """
    make_private_dir(data_dir)
    try:
        check_private_dir(data_dir, "data dir")
    except FileRefused as exc:
        raise IdentityError(str(exc)) from None
    path = data_dir / IDENTITY_FILE
    if not path.exists():
        key = nacl.signing.SigningKey.generate()
        try:
            write_new_file(path, bytes(key).hex().encode("ascii") + b"\n")
        except FileExistsError:
            pass  # another process created it first: load theirs
        else:
            return Identity(node_id_for(bytes(key.verify_key)), key)
    try:
        text = read_bounded(path, IDENTITY_MAX_BYTES, "identity key", secret=True).decode("ascii")
        seed = bytes.fromhex(text.strip())
    except FileRefused as exc:
        raise IdentityError(str(exc)) from None
    except OSError as exc:
        raise IdentityError(f"identity key {path} is not readable: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        seed = b""
    if len(seed) != SEED_BYTES:
        raise IdentityError(
            f"identity key {path} is damaged (expected 64 hex characters); "
            "restore it from a backup, or delete it to give this node a new id"
        )
    key = nacl.signing.SigningKey(seed)
    return Identity(node_id_for(bytes(key.verify_key)), key)
