"""The node's network keys on disk and in its keyring: what the key core (node/netkeys.py) decides, applied.

`network.keys` in the data dir (mode 0600, like identity.key; read bounded)
holds the keyring (primary first) and the ids of the keys retired after a
rotation's grace period. It is written on every change, atomically (temporary
file, fsync, rename, fsync of the directory), before the change is used, so a
node restarted at any moment keeps the newest key it obtained and never falls
back to the older one in its join token: the token's keys are added at start
only if they were never retired here.

    {"format": 1, "keys": ["<base64 32 bytes>", ...], "retired": ["<key id>", ...]}
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.signing

from gossip.envelope import KEYS_MAX, Keyring
from gossip.events import Event
from gossip.netkey import NETWORK_KEY_BYTES, network_key_id
from mesh.files import FileRefused, read_bounded, replace_file
from node.netkeys import NetKeyCore, NetworkKeyInstalled, NetworkKeyInUse, NetworkKeysRetired

log = logging.getLogger("murmur.agent")

KEYS_FILE = "network.keys"
KEYS_FILE_FORMAT = 1
KEYS_FILE_MAX_BYTES = 8 * 1024
RETIRED_KEPT = 64  # ids of retired keys remembered (older tokens are refused their keys)


class KeyFileError(Exception):
    """network.keys is unusable; the message names the fix."""


@dataclass(frozen=True, slots=True)
class KeyFile:
    """What network.keys holds: the keyring (primary first) and the retired key ids."""

    keys: tuple[bytes, ...]
    retired: tuple[str, ...] = ()


def load_key_file(data_dir: Path) -> KeyFile | None:
    """network.keys of a data dir (None if there is none yet); KeyFileError if it is unusable."""
    path = data_dir / KEYS_FILE
    try:
        raw = read_bounded(path, KEYS_FILE_MAX_BYTES, "network keys", secret=True)
    except FileNotFoundError:
        return None
    except FileRefused as exc:
        raise KeyFileError(str(exc)) from None
    except OSError as exc:
        raise KeyFileError(f"network keys {path} are not readable: {exc}") from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != KEYS_FILE_FORMAT:
            raise ValueError(f"format must be {KEYS_FILE_FORMAT}")
        keys = tuple(base64.b64decode(k, validate=True) for k in doc["keys"])
        retired = tuple(str(r) for r in doc.get("retired", []))
        if not 1 <= len(keys) <= KEYS_MAX or any(len(k) != NETWORK_KEY_BYTES for k in keys):
            raise ValueError(f"keys must be 1 to {KEYS_MAX} keys of {NETWORK_KEY_BYTES} bytes")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise KeyFileError(
            f"network keys {path} are damaged ({exc}); move the file aside to start from the join "
            "token's keys (a newer token from murmur invite carries the current key)"
        ) from None
    return KeyFile(keys, retired[-RETIRED_KEPT:])


def save_key_file(data_dir: Path, state: KeyFile) -> None:
    """Replace network.keys atomically (mode 0600); OSError if the disk refuses."""
    doc = {
        "format": KEYS_FILE_FORMAT,
        "keys": [base64.b64encode(k).decode("ascii") for k in state.keys],
        "retired": list(state.retired[-RETIRED_KEPT:]),
    }
    replace_file(data_dir / KEYS_FILE, (json.dumps(doc) + "\n").encode("ascii"))


def startup_keys(token_keys: Sequence[bytes], held: KeyFile | None) -> KeyFile:
    """The keyring to start with: the kept one, plus the token's keys never retired here.

    A token newer than the node's keys (the operator gave the device a fresh one
    after a long absence) adds its key; an old token never brings back a key the
    mesh dropped.
    """
    if held is None:
        return KeyFile(tuple(token_keys))
    keys = list(held.keys)
    for key in token_keys:
        if key not in keys and network_key_id(key) not in held.retired and len(keys) < KEYS_MAX:
            keys.append(key)
    return KeyFile(tuple(keys), held.retired)


class KeyKeeper:
    """Applies the key core's events to the runtime's keyring and to network.keys."""

    def __init__(self, data_dir: Path, keyring: Keyring, retired: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.keyring = keyring
        self.retired: list[str] = list(retired)[-RETIRED_KEPT:]

    def save(self) -> None:
        """Write the keyring as it is now (raises OSError)."""
        save_key_file(self.data_dir, KeyFile(self.keyring.keys, tuple(self.retired)))

    def on_event(self, event: Event) -> None:
        if isinstance(event, NetworkKeyInstalled):
            self.keyring.install(event.key)
            self._save(f"network key {event.key_id} (epoch {event.epoch}) installed: it opens frames now")
        elif isinstance(event, NetworkKeyInUse):
            self.keyring.use(event.key)
            self._save(f"network key {event.key_id} (epoch {event.epoch}) seals from now on")
        elif isinstance(event, NetworkKeysRetired):
            for key in event.keys:
                if key != self.keyring.primary:
                    self.keyring.remove(key)
                    self.retired.append(network_key_id(key))
            self.retired = self.retired[-RETIRED_KEPT:]
            self._save(
                f"{len(event.keys)} older network key(s) dropped after epoch {event.epoch}'s grace period"
            )

    def _save(self, what: str) -> None:
        try:
            self.save()
        except OSError as exc:
            # Held in memory; a restart before the disk recovers gets the key again from peers.
            log.error("%s, but %s cannot be written: %s", what, self.data_dir / KEYS_FILE, exc)
            return
        log.info("%s (persisted)", what)


def key_status(core: NetKeyCore, node_id: str, public_key: bytes) -> dict[str, Any]:
    """GET /v1/netkey: this node's identity (what `murmur keys rotate|install` seals to), the newest
    `netkey` record it follows, and its own keyring.

    Key ids only: a key never leaves the node by the API."""
    notice = core.notice
    return {
        "node_id": node_id,
        "public_key": base64.b64encode(public_key).decode("ascii"),
        "epoch": notice.epoch if notice is not None else 0,
        "key_id": notice.key_id if notice is not None else None,
        "grace_s": notice.grace_s if notice is not None else None,
        "reason": notice.reason if notice is not None else None,
        "revoked": list(notice.revoked) if notice is not None else [],
        "holds_current": core.has_current,
        "primary_key_id": core.primary_id,
        "installed_key_ids": list(core.key_ids),
        # A staged change's whole keyring (install, use, remove); a rotation lists none.
        "stage": notice.stage if notice is not None else None,
        "keys": [{"key_id": k, "epoch": e} for k, e in notice.keys] if notice is not None else [],
        "retired_key_ids": list(core.retired_ids),
        # `murmur agent --keyring-report-delay`: its `keyring` record follows a change this long after.
        "report_delay_s": [core.config.report_delay_min_s, core.config.report_delay_max_s],
    }


def open_sealed_key(node_key: nacl.signing.SigningKey, sealed: bytes) -> bytes | None:
    """The network key the operator sealed to this node's public key (SealedBox), or None."""
    try:
        key = nacl.public.SealedBox(node_key.to_curve25519_private_key()).decrypt(sealed)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return None
    return bytes(key) if len(key) == NETWORK_KEY_BYTES else None
