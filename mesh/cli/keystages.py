"""`murmur keys list|install|use|remove`: change the network keys in stages, as Consul's keyring does.

`keys rotate` (mesh/cli/keys.py) does it in one step. The stages let an operator
watch each one land before the next:

1. `keys install [--key-file F]` makes (or reads) a new key, seals it to the asked
   node and sends an operator-signed `netkey` record listing the whole keyring
   with the new key (gossip/netkey.py, format 2). Members fetch it, each copy
   sealed to them, and open frames sealed with it; nothing seals with it yet.
2. `keys list` shows, for every key, how many alive members hold it (per region
   and in total) and where it seals (GET /v1/keyring).
3. `keys use KEY_ID` makes it the primary everywhere: refused while an alive
   member lacks it, unless --force.
4. `keys remove KEY_ID` drops a key everywhere; never the primary.

Each step signs a record one epoch above both the node's and the cluster dir's,
and writes the cluster dir's join.token to match (install: the new key second;
use: it first; remove: without it), so tokens from `murmur invite` carry the
keyring the fleet holds.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import secrets
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing

from gossip.netkey import NETWORK_KEY_BYTES, STAGED_KEYS_MAX, STAGES, NetKeyNotice, network_key_id
from gossip.records import PUBLIC_KEY_BYTES, key_id
from mesh.cli.client import CliError, NodeClient
from mesh.files import FileRefused, read_bounded
from mesh.trust.cluster import (
    NETWORK_KEYS_MAX,
    ClusterError,
    cluster_network_epoch,
    cluster_network_keys,
    set_cluster_keys,
)
from mesh.trust.deploy import record_to_b64
from mesh.trust.records import sign_netkey

KEY_FILE_MAX_BYTES = 256
KEY_ID_PREFIX_MIN_CHARS = 6


def node_public_key(status: Any) -> tuple[str, bytes]:
    """(node id, Ed25519 public key) from GET /v1/netkey; the key must be the id's."""
    try:
        node_id = str(status["node_id"])
        public_key = base64.b64decode(status["public_key"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise CliError(
            "the node's GET /v1/netkey answer has no node id and public key; is it a murmur agent?"
        ) from None
    if len(public_key) != PUBLIC_KEY_BYTES or key_id(public_key) != node_id:
        raise CliError(f"node {node_id}'s public key does not match its id; refusing to send it a key")
    return node_id, public_key


def _from_hex(text: bytes) -> bytes:
    return bytes.fromhex(text.decode("ascii"))


def _from_base64(text: bytes) -> bytes:
    return base64.b64decode(text, validate=True)


def read_key_file(path: Path) -> bytes:
    """A network key from a file: 32 raw bytes, or their base64 or hex on one line."""
    try:
        raw = read_bounded(path, KEY_FILE_MAX_BYTES, "network key", secret=True)
    except FileRefused as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot read the key file {path}: {exc}") from None
    if len(raw) == NETWORK_KEY_BYTES:
        return raw
    text = raw.strip()
    for decode in (_from_hex, _from_base64):
        try:
            key = decode(text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if len(key) == NETWORK_KEY_BYTES:
            return key
    raise CliError(
        f"{path} does not hold a network key: it must be {NETWORK_KEY_BYTES} bytes, raw or as hex or base64 "
        "(or leave out --key-file and murmur makes one)"
    )


def held_keyring(status: dict[str, Any]) -> tuple[int, str, list[tuple[str, int]]]:
    """(epoch, primary id, [(key id, epoch added)]) of the fleet as the asked node follows it.

    A staged record lists the keyring; a rotation names its one key (older keys are in their
    grace period and go by themselves); before any record, the node's primary (the token's)."""
    held = status.get("epoch")
    epoch = held if isinstance(held, int) else 0
    listed = status.get("keys") if isinstance(status.get("keys"), list) else []
    if status.get("stage") in STAGES and listed:
        keys = [(str(k["key_id"]), int(k["epoch"])) for k in listed if isinstance(k, dict)]
        return epoch, str(status.get("key_id")), keys
    if status.get("key_id"):
        return epoch, str(status["key_id"]), [(str(status["key_id"]), epoch)]
    primary = str(status.get("primary_key_id") or "")
    if not primary:
        raise CliError("the node's GET /v1/netkey answer names no primary key; is it a murmur agent?")
    return epoch, primary, [(primary, 0)]


def _named_key(text: str, status: dict[str, Any]) -> tuple[str, list[tuple[str, int]], str]:
    """(the primary, the keyring listed, the key `text` names in it) as the asked node follows it."""
    _epoch, primary, listed = held_keyring(status)
    return primary, listed, resolve_key_id(text, [k for k, _e in listed])


def resolve_key_id(text: str, ids: list[str]) -> str:
    """The key id `text` names: a whole id, or a unique prefix of one of `ids`."""
    text = text.strip().lower()
    if len(text) < KEY_ID_PREFIX_MIN_CHARS:
        raise CliError(f"key id {text!r} is too short; give at least {KEY_ID_PREFIX_MIN_CHARS} characters")
    matches = [k for k in ids if k.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CliError(f"key id {text!r} matches {len(matches)} keys ({', '.join(matches)}); give more of it")
    raise CliError(
        f"no key {text!r} in the fleet's keyring ({', '.join(ids) or 'none'}); see murmur keys list"
    )


def fetch_keyring(node: NodeClient) -> dict[str, Any]:
    doc = node.get("/v1/keyring")
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("keys"), list)
        or not isinstance(doc.get("node"), dict)
    ):
        raise CliError(f"{node.base} answered something other than a keyring; is it a murmur agent?")
    return doc


def format_keyring(doc: dict[str, Any]) -> str:
    """The fleet's keys as an aligned table, then the asked node's own keyring and any region left out."""
    headers = ("KEY ID", "EPOCH", "STATE", "HELD BY", "SEALS AT", "BY REGION")
    cells = []
    for k in doc["keys"]:
        state = "primary" if k.get("record_primary") else "installed" if k.get("listed") else "retiring"
        regions = " ".join(f"{name} {r['holders']}/{r['alive']}" for name, r in sorted(k["regions"].items()))
        cells.append(
            [
                str(k["key_id"]),
                "-" if k.get("epoch") is None else str(k["epoch"]),
                state,
                f"{k['holders']}/{k['alive']}",
                f"{k['primary_at']}/{k['alive']}",
                regions,
            ]
        )
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    me = doc["node"]
    lines.append("")
    lines.append(
        f"node {me.get('node_id')} follows epoch {me.get('epoch')}: seals with {me.get('primary_key_id')}, "
        f"holds {', '.join(me.get('installed_key_ids') or []) or 'nothing'}"
    )
    for r in doc.get("regions", []):
        if r.get("error"):
            lines.append(f"region {r.get('region')} not counted ({r.get('alive')} alive): {r['error']}")
        elif r.get("reported", r.get("alive")) != r.get("alive"):
            lines.append(
                f"region {r.get('region')}: {r['alive'] - r['reported']} member(s) have not said which keys "
                f"they hold yet (counted as holding none): {', '.join(r.get('unreported') or [])}"
            )
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace, node: NodeClient) -> int:
    doc = fetch_keyring(node)
    print(json.dumps(doc, indent=2) if args.json else format_keyring(doc))
    return 0


def run_stage(
    args: argparse.Namespace, node: NodeClient, key: nacl.signing.SigningKey, cluster_dir: Path
) -> int:
    """install, use or remove: read the node's keyring, send the change, say what happened."""
    status = node.get("/v1/netkey")
    if not isinstance(status, dict):
        raise CliError(f"{node.base} answered something other than its network-key status")
    args.key_id = getattr(args, "key_id", "")
    if args.action in ("use", "remove") and not args.key_id:
        raise CliError(
            f"murmur keys {args.action} needs the KEY_ID to {args.action} (murmur keys list shows them)"
        )
    if args.action == "install" and args.key_id:
        raise CliError("murmur keys install takes no KEY_ID; it makes a key (or reads --key-file F)")
    handler = {"install": cmd_install, "use": cmd_use, "remove": cmd_remove}[args.action]
    message, result = handler(args, node, key, cluster_dir, status)
    print(json.dumps(result, indent=2) if args.json else message)
    return 0


def _send(
    node: NodeClient,
    key: nacl.signing.SigningKey,
    cluster_dir: Path,
    status: dict[str, Any],
    notice: NetKeyNotice,
    new_key: bytes | None,
) -> None:
    """Sign the record, send it (with the new key sealed to the node), then match the cluster dir."""
    record = sign_netkey(key, node.next_record_version(key_id(bytes(key.verify_key))), notice)
    body: dict[str, Any] = {"record": record_to_b64(record)}
    if new_key is not None:
        _node_id, public_key = node_public_key(status)
        receiver = nacl.signing.VerifyKey(public_key).to_curve25519_public_key()
        body["sealed_key"] = base64.b64encode(
            bytes(nacl.public.SealedBox(receiver).encrypt(new_key))
        ).decode()
    node.submit(key, "POST", "/v1/netkey", body)


def _next_epoch(status: dict[str, Any], cluster_dir: Path) -> int:
    try:
        cluster_epoch = cluster_network_epoch(cluster_dir)
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    held = status.get("epoch")
    return max(held if isinstance(held, int) else 0, cluster_epoch) + 1


def _token_keys(cluster_dir: Path) -> tuple[bytes, ...]:
    try:
        return cluster_network_keys(cluster_dir)
    except ClusterError as exc:
        raise CliError(str(exc)) from None


def _write_token(cluster_dir: Path, keys: tuple[bytes, ...], epoch: int, what: str) -> str:
    """Write the token's keys; a sentence for the operator (a failure is said, not raised: the
    mesh already took the change)."""
    try:
        set_cluster_keys(cluster_dir, keys, epoch)
    except ClusterError as exc:
        return f"the mesh took it, but {exc}: tokens from {cluster_dir} do not carry it ({what})"
    return f"{cluster_dir}/join.token now {what}"


Outcome = tuple[str, dict[str, Any]]  # what to tell the operator, and the same for --json


def cmd_install(
    args: argparse.Namespace,
    node: NodeClient,
    key: nacl.signing.SigningKey,
    cluster_dir: Path,
    status: dict[str, Any],
) -> Outcome:
    new_key = read_key_file(Path(args.key_file)) if args.key_file else secrets.token_bytes(NETWORK_KEY_BYTES)
    new_id = network_key_id(new_key)
    _epoch, primary, listed = held_keyring(status)
    if new_id in [k for k, _e in listed]:
        raise CliError(f"key {new_id} is installed already; murmur keys list shows where")
    if new_id in (status.get("retired_key_ids") or []):
        raise CliError(f"key {new_id} was removed from this mesh and never comes back; make a new one")
    if len(listed) >= STAGED_KEYS_MAX:
        raise CliError(
            f"the fleet holds {len(listed)} keys, the most a staged change lists; remove one first "
            "(murmur keys remove KEY_ID)"
        )
    epoch = _next_epoch(status, cluster_dir)
    notice = NetKeyNotice(
        epoch, primary, 0, args.reason or "install", stage="install", keys=(*listed, (new_id, epoch))
    )
    token = _token_keys(cluster_dir)
    _send(node, key, cluster_dir, status, notice, new_key)
    said = _write_token(
        cluster_dir,
        (token[0], new_key, *token[1:])[:NETWORK_KEYS_MAX],
        epoch,
        "carries it second (it opens, the primary seals)",
    )
    message = (
        f"{new_id}\nnetwork key {new_id} installed at epoch {epoch} through node {status['node_id']}: it "
        "spreads to every member, sealed to each; nothing seals with it yet. Watch it with murmur keys list, "
        f"then run murmur keys use {new_id}. {said}"
    )
    return message, {"action": "install", "key_id": new_id, "epoch": epoch, "node_id": status["node_id"]}


def cmd_use(
    args: argparse.Namespace,
    node: NodeClient,
    key: nacl.signing.SigningKey,
    cluster_dir: Path,
    status: dict[str, Any],
) -> Outcome:
    primary, listed, chosen = _named_key(args.key_id, status)
    if chosen == primary:
        return f"key {chosen} is the primary already; nothing to do", {
            "action": "use",
            "key_id": chosen,
            "epoch": None,
        }
    doc = fetch_keyring(node)
    row = next((k for k in doc["keys"] if k["key_id"] == chosen), None)
    holders = row["holders"] if row else 0
    lacking = doc["alive"] - holders
    gaps = []
    if lacking > 0:
        named = ", ".join(row["lacking"]) if row and row.get("lacking") else ""
        gaps.append(f"{lacking} of {doc['alive']} alive members lack it" + (f" ({named})" if named else ""))
    unanswered = [r["region"] for r in doc["regions"] if r.get("error")]
    if unanswered:
        gaps.append(f"region(s) {', '.join(unanswered)} did not answer, so their members were not counted")
    if gaps and not args.force:
        raise CliError(
            f"refused: {'; '.join(gaps)}. A member that lacks the primary cannot open what others seal "
            f"with it; wait for it to spread (murmur keys list), or pass --force"
        )
    epoch = _next_epoch(status, cluster_dir)
    notice = NetKeyNotice(epoch, chosen, 0, args.reason or "use", stage="use", keys=tuple(listed))
    _send(node, key, cluster_dir, status, notice, None)
    token = _token_keys(cluster_dir)
    first = [k for k in token if network_key_id(k) == chosen]
    said = (
        _write_token(
            cluster_dir,
            (*first, *(k for k in token if network_key_id(k) != chosen)),
            epoch,
            "carries it first",
        )
        if first
        else f"{cluster_dir}/join.token does not hold key {chosen} (installed from another cluster dir?); "
        "its tokens still seal with their first key"
    )
    forced = f" (forced: {'; '.join(gaps)})" if gaps else ""
    message = (
        f"network key {chosen} is the primary from epoch {epoch}: every member seals with it once it holds "
        f"it{forced}. {said}"
    )
    return message, {"action": "use", "key_id": chosen, "epoch": epoch, "forced": bool(gaps)}


def cmd_remove(
    args: argparse.Namespace,
    node: NodeClient,
    key: nacl.signing.SigningKey,
    cluster_dir: Path,
    status: dict[str, Any],
) -> Outcome:
    primary, listed, chosen = _named_key(args.key_id, status)
    if chosen == primary:
        others = [k for k, _e in listed if k != primary]
        fix = (
            f"murmur keys use {others[0]}"
            if others
            else "murmur keys install, then murmur keys use NEW_KEY_ID"
        )
        raise CliError(f"refused: key {chosen} is the primary (every member seals with it); run {fix} first")
    epoch = _next_epoch(status, cluster_dir)
    notice = NetKeyNotice(
        epoch,
        primary,
        0,
        args.reason or "remove",
        stage="remove",
        keys=tuple(k for k in listed if k[0] != chosen),
    )
    _send(node, key, cluster_dir, status, notice, None)
    token = _token_keys(cluster_dir)
    kept = tuple(k for k in token if network_key_id(k) != chosen)
    said = _write_token(cluster_dir, kept, epoch, "no longer carries it") if kept != token else ""
    message = f"network key {chosen} removed at epoch {epoch}: every member drops it, for good. {said}"
    return message, {"action": "remove", "key_id": chosen, "epoch": epoch}
