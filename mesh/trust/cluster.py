"""A cluster's operator directory and the join token devices carry.

`murmur cluster init --out DIR` writes:
- cluster.json: cluster id, operator public key, token format version;
- operator.key: the operator's Ed25519 signing key (hex seed, mode 0600);
- join.token: what a device needs to join (mode 0600, it holds the network key).

The join token is a small JSON document:
    {"kind": "murmur-join-token", "version": 2, "cluster_id": "<16 hex>",
     "network_keys": ["<base64 32 bytes>", ...], "operator_key": "<base64 32 bytes>",
     "invite": "<base64 operator-signed invite>", "expires_unix": 1700000000, "region": ""}
`network_keys[0]` is the primary key (it seals); every key opens, which lets an
operator rotate the network key by issuing tokens with a new primary. The invite
(gossip/admission.py) is what peers check before they admit the device:
signed by the operator, for this cluster, until `expires_unix`, for one region
or any. `expires_unix` and `region` repeat the invite's fields for people; the
signed invite is what counts. `murmur invite` writes new tokens.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from gossip.admission import Invite, decode_invite, encode_invite, sign_invite
from gossip.codec import DecodeError
from mesh.files import FileRefused, make_private_dir, read_bounded, replace_file, write_new_file

TOKEN_KIND = "murmur-join-token"
TOKEN_VERSION = 2
DEFAULT_INVITE_TTL_S = 24 * 3600
NETWORK_KEY_BYTES = 32
NETWORK_KEYS_MAX = 8
TOKEN_MAX_BYTES = 16 * 1024
CLUSTER_FILE_MAX_BYTES = 16 * 1024
OPERATOR_KEY_MAX_BYTES = 1024  # 64 hex characters and a newline
CLUSTER_FILE = "cluster.json"
OPERATOR_KEY_FILE = "operator.key"
TOKEN_FILE = "join.token"


class ClusterError(Exception):
    """A cluster directory or join token problem; the message names the fix."""


@dataclass(frozen=True, slots=True)
class JoinToken:
    """What a device needs to join a cluster."""

    cluster_id: str
    network_keys: tuple[bytes, ...]
    operator_key: bytes
    invite: Invite

    def to_json(self) -> str:
        doc = {
            "kind": TOKEN_KIND,
            "version": TOKEN_VERSION,
            "cluster_id": self.cluster_id,
            "network_keys": [base64.b64encode(key).decode("ascii") for key in self.network_keys],
            "operator_key": base64.b64encode(self.operator_key).decode("ascii"),
            "invite": base64.b64encode(encode_invite(self.invite)).decode("ascii"),
            "expires_unix": self.invite.expires_at_s,
            "region": self.invite.region,
            "uses": self.invite.uses,
        }
        return json.dumps(doc, indent=2) + "\n"


@dataclass(frozen=True, slots=True)
class ClusterDir:
    """The files `murmur cluster init` created."""

    path: Path
    cluster_id: str
    token_path: Path
    operator_key_path: Path


def new_invite(
    operator: nacl.signing.SigningKey,
    cluster_id: str,
    *,
    ttl_s: float = DEFAULT_INVITE_TTL_S,
    region: str = "",
    uses: int = 0,
    now_unix: float | None = None,
) -> Invite:
    """A fresh invite (random nonce) valid for ttl_s from now, for `uses` devices (0: any number)."""
    if ttl_s <= 0:
        raise ClusterError(f"--ttl must be positive, got {ttl_s:g} s")
    now = time.time() if now_unix is None else now_unix
    try:
        return sign_invite(
            operator,
            cluster_id,
            expires_at_s=int(now + ttl_s),
            nonce=secrets.token_bytes(16),
            region=region,
            uses=uses,
        )
    except ValueError as exc:
        raise ClusterError(str(exc)) from None


def init_cluster(out: Path, *, ttl_s: float = DEFAULT_INVITE_TTL_S) -> ClusterDir:
    """Create a new cluster directory at `out`; refuse to touch an existing cluster."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ClusterError(
            f"{out} already exists and is not empty; refusing to overwrite a cluster directory "
            "(it may hold an operator key). Choose another --out, or move it aside first."
        )
    make_private_dir(out)
    cluster_id = secrets.token_hex(8)
    operator = nacl.signing.SigningKey.generate()
    operator_pub = bytes(operator.verify_key)
    token = JoinToken(
        cluster_id=cluster_id,
        network_keys=(secrets.token_bytes(NETWORK_KEY_BYTES),),
        operator_key=operator_pub,
        invite=new_invite(operator, cluster_id, ttl_s=ttl_s),
    )
    write_new_file(out / OPERATOR_KEY_FILE, bytes(operator).hex().encode("ascii") + b"\n")
    write_new_file(out / TOKEN_FILE, token.to_json().encode("utf-8"))
    cluster_doc = {
        "cluster_id": cluster_id,
        "operator_key": base64.b64encode(operator_pub).decode("ascii"),
        "token_version": TOKEN_VERSION,
    }
    # cluster.json holds nothing secret; it is written last and marks a complete directory.
    write_new_file(out / CLUSTER_FILE, (json.dumps(cluster_doc, indent=2) + "\n").encode(), mode=0o644)
    return ClusterDir(out, cluster_id, out / TOKEN_FILE, out / OPERATOR_KEY_FILE)


def _decode_key(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(key) != NETWORK_KEY_BYTES:
        raise ValueError(f"{what} is {len(key)} bytes, expected {NETWORK_KEY_BYTES}")
    return key


def parse_token(text: str) -> JoinToken:
    """Validate a token document; ValueError says what is wrong with it."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or doc.get("kind") != TOKEN_KIND:
        raise ValueError(f'missing "kind": "{TOKEN_KIND}"')
    version = doc.get("version")
    if version != TOKEN_VERSION:
        raise ValueError(
            f"format version {version!r}, but this murmur reads version {TOKEN_VERSION}; "
            "use a murmur release that matches the operator's"
        )
    cluster_id = doc.get("cluster_id")
    if not isinstance(cluster_id, str) or len(cluster_id) != 16 or not _is_hex(cluster_id):
        raise ValueError("cluster_id must be 16 hex characters")
    keys = doc.get("network_keys")
    if not isinstance(keys, list) or not 1 <= len(keys) <= NETWORK_KEYS_MAX:
        raise ValueError(f"network_keys must be a list of 1 to {NETWORK_KEYS_MAX} keys")
    network_keys = tuple(_decode_key(key, f"network_keys[{i}]") for i, key in enumerate(keys))
    operator_key = _decode_key(doc.get("operator_key"), "operator_key")
    invite_b64 = doc.get("invite")
    if not isinstance(invite_b64, str):
        raise ValueError('"invite" must be the base64 of an operator-signed invite')
    try:
        invite = decode_invite(base64.b64decode(invite_b64, validate=True))
    except (binascii.Error, ValueError) as exc:
        reason = exc.reason if isinstance(exc, DecodeError) else "not base64"
        raise ValueError(f'"invite" is not an invite ({reason})') from None
    if invite.cluster_id != cluster_id:
        raise ValueError(f"the invite is for cluster {invite.cluster_id}, the token for {cluster_id}")
    return JoinToken(cluster_id, network_keys, operator_key, invite)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def load_token(path: Path) -> JoinToken:
    """Read and validate the join token at `path`; ClusterError names the problem and the fix.

    The token holds the network key: a file other users can read is refused (with
    the chmod to run), and no more than TOKEN_MAX_BYTES are ever read.
    """
    try:
        raw = read_bounded(path, TOKEN_MAX_BYTES, "join token", secret=True)
        text = raw.decode("utf-8")
    except FileRefused as exc:
        raise ClusterError(str(exc)) from None
    except FileNotFoundError:
        raise ClusterError(
            f"token {path} not found; pass the join.token written by `murmur cluster init`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterError(f"token {path} is not readable: {exc}") from None
    try:
        return parse_token(text)
    except ValueError as exc:
        raise ClusterError(
            f"token {path} is not a murmur join token: {exc}; "
            "pass the join.token written by `murmur cluster init`"
        ) from None


def load_cluster_dir(path: Path) -> tuple[str, nacl.signing.SigningKey, JoinToken]:
    """(cluster id, operator signing key, first token) of a `murmur cluster init` directory."""
    try:
        doc = json.loads(read_bounded(path / CLUSTER_FILE, CLUSTER_FILE_MAX_BYTES, "cluster file"))
        key_text = read_bounded(path / OPERATOR_KEY_FILE, OPERATOR_KEY_MAX_BYTES, "operator key", secret=True)
        operator = nacl.signing.SigningKey(bytes.fromhex(key_text.decode("ascii").strip()))
    except FileRefused as exc:
        raise ClusterError(str(exc)) from None
    except FileNotFoundError as exc:
        raise ClusterError(
            f"{path} is not a cluster directory ({exc.filename} is missing); pass the --out of "
            "`murmur cluster init`"
        ) from None
    except (OSError, ValueError, UnicodeDecodeError, nacl.exceptions.CryptoError) as exc:
        raise ClusterError(f"{path}: cannot read the cluster directory ({exc})") from None
    token = load_token(path / TOKEN_FILE)
    cluster_id = doc.get("cluster_id") if isinstance(doc, dict) else None
    if cluster_id != token.cluster_id or bytes(operator.verify_key) != token.operator_key:
        raise ClusterError(f"{path}: cluster.json, operator.key and join.token do not belong together")
    return token.cluster_id, operator, token


def issue_token(
    cluster_dir: Path,
    *,
    ttl_s: float = DEFAULT_INVITE_TTL_S,
    region: str = "",
    uses: int = 0,
    now_unix: float | None = None,
) -> JoinToken:
    """A new join token: the cluster's network keys and a fresh invite signed by its operator."""
    cluster_id, operator, first = load_cluster_dir(cluster_dir)
    invite = new_invite(operator, cluster_id, ttl_s=ttl_s, region=region, uses=uses, now_unix=now_unix)
    return JoinToken(cluster_id, first.network_keys, first.operator_key, invite)


def cluster_network_epoch(cluster_dir: Path) -> int:
    """The epoch of the cluster's latest network key rotation (`murmur keys rotate`), 0 if none."""
    try:
        doc = json.loads(read_bounded(cluster_dir / CLUSTER_FILE, CLUSTER_FILE_MAX_BYTES, "cluster file"))
    except (OSError, ValueError, FileRefused) as exc:
        raise ClusterError(f"{cluster_dir}: cannot read {CLUSTER_FILE} ({exc})") from None
    epoch = doc.get("network_epoch", 0) if isinstance(doc, dict) else 0
    return epoch if isinstance(epoch, int) and epoch >= 0 else 0


def rotate_cluster_key(cluster_dir: Path, new_key: bytes, epoch: int) -> JoinToken:
    """Make `new_key` the primary network key of the cluster's files, the previous primary second:
    join.token (so `murmur invite` tokens carry it) and the epoch in cluster.json. Atomic per file."""
    if len(new_key) != NETWORK_KEY_BYTES:
        raise ClusterError(f"a network key is {NETWORK_KEY_BYTES} bytes")
    _cluster_id, _operator, token = load_cluster_dir(cluster_dir)
    return set_cluster_keys(cluster_dir, (new_key, token.network_keys[0]), epoch)


def set_cluster_keys(cluster_dir: Path, keys: tuple[bytes, ...], epoch: int) -> JoinToken:
    """Write the cluster's network keys (primary first) into join.token, and the epoch into
    cluster.json: a rotation, or a staged change (`murmur keys install|use|remove`)."""
    if not 1 <= len(keys) <= NETWORK_KEYS_MAX or any(len(k) != NETWORK_KEY_BYTES for k in keys):
        raise ClusterError(f"a token holds 1 to {NETWORK_KEYS_MAX} network keys of {NETWORK_KEY_BYTES} bytes")
    cluster_id, _operator, token = load_cluster_dir(cluster_dir)
    changed = JoinToken(cluster_id, keys, token.operator_key, token.invite)
    doc = json.loads(read_bounded(cluster_dir / CLUSTER_FILE, CLUSTER_FILE_MAX_BYTES, "cluster file"))
    doc["network_epoch"] = epoch
    try:
        replace_file(cluster_dir / TOKEN_FILE, changed.to_json().encode("utf-8"))
        replace_file(cluster_dir / CLUSTER_FILE, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    except OSError as exc:
        raise ClusterError(f"{cluster_dir}: cannot write the new network key ({exc})") from None
    return changed


def cluster_network_keys(cluster_dir: Path) -> tuple[bytes, ...]:
    """The network keys join.token carries (primary first)."""
    return load_cluster_dir(cluster_dir)[2].network_keys
