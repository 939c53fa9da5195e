"""`murmur keys`: rotate the mesh's network key, change it in stages, list or show the keys.

The stages (`list`, `install`, `use`, `remove`) are in mesh/cli/keystages.py.

`murmur keys rotate --cluster DIR [--node URL] [--grace 1h] [--reason TEXT]`
1. reads the node's public key and current key epoch (GET /v1/netkey);
2. makes a new 32-byte key, seals it to that node's public key (SealedBox to the
   X25519 form of its Ed25519 key) and signs a `netkey` record (epoch one above
   both the node's and the cluster dir's, the key's id, the grace period, why);
3. sends both to the node (POST /v1/netkey, a signed request), which installs
   the key (on its disk before it answers), publishes the record and spreads the
   key to every member, sealed to each;
4. writes the key into the cluster dir (join.token's first key, so every token
   `murmur invite` issues from now on carries it; the epoch in cluster.json).

`murmur revoke` does the same rotation after the revocation (docs/trust.md).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing

from gossip.netkey import GRACE_MAX_S, NETWORK_KEY_BYTES, REASON_MAX_CHARS, NetKeyNotice, network_key_id
from gossip.records import key_id
from mesh.cli import args as flags
from mesh.cli.client import CliError, NodeClient
from mesh.cli.helptext import command
from mesh.cli.keystages import cmd_list, node_public_key, run_stage
from mesh.cli.signing import key_flags, resolve_key
from mesh.trust.cluster import ClusterError, cluster_network_epoch, rotate_cluster_key
from mesh.trust.deploy import record_to_b64
from mesh.trust.records import sign_netkey

DEFAULT_GRACE_S = 3600.0


def cluster_dir_of(args: argparse.Namespace) -> Path | None:
    """The cluster dir from --cluster or MURMUR_CLUSTER (None if neither is given)."""
    value = getattr(args, "cluster", None) or os.environ.get("MURMUR_CLUSTER")
    return Path(value) if value else None


def rotate(
    node: NodeClient,
    key: nacl.signing.SigningKey,
    cluster_dir: Path,
    *,
    grace_s: int,
    reason: str,
    revoked: tuple[str, ...] = (),
) -> tuple[str, int, str]:
    """Rotate the network key through `node`; (node id, epoch, key id). CliError on any refusal."""
    try:
        cluster_epoch = cluster_network_epoch(cluster_dir)
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    status = node.get("/v1/netkey")
    node_id, receiver_key = node_public_key(status)
    held = status.get("epoch") if isinstance(status, dict) else 0
    epoch = max(held if isinstance(held, int) else 0, cluster_epoch) + 1
    new_key = secrets.token_bytes(NETWORK_KEY_BYTES)
    notice = NetKeyNotice(epoch, network_key_id(new_key), grace_s, reason, revoked)
    record = sign_netkey(key, node.next_record_version(key_id(bytes(key.verify_key))), notice)
    receiver = nacl.signing.VerifyKey(receiver_key).to_curve25519_public_key()
    sealed = nacl.public.SealedBox(receiver).encrypt(new_key)
    body = {"record": record_to_b64(record), "sealed_key": base64.b64encode(bytes(sealed)).decode("ascii")}
    node.submit(key, "POST", "/v1/netkey", body)
    try:
        rotate_cluster_key(cluster_dir, new_key, epoch)
    except ClusterError as exc:
        raise CliError(
            f"the mesh took network key epoch {epoch} (id {notice.key_id}), but {exc}: tokens from this "
            "cluster dir would carry the old key. Fix that, then run murmur keys rotate again"
        ) from None
    return node_id, epoch, notice.key_id


def cmd_keys(args: argparse.Namespace) -> int:
    node = NodeClient(args.node)
    if args.action == "list":
        return cmd_list(args, node)
    if getattr(args, "key_id", "") and args.action in ("rotate", "show"):
        raise CliError(f"murmur keys {args.action} takes no KEY_ID")
    if args.action == "show":
        status = node.get("/v1/netkey")
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            holds = "holds it" if status.get("holds_current") else "does NOT hold it yet"
            print(
                f"node {status.get('node_id')}: network key epoch {status.get('epoch')} "
                f"(key {status.get('key_id') or 'from the join token'}), {holds}; "
                f"{len(status.get('installed_key_ids') or [])} key(s) installed"
            )
        return 0
    cluster_dir = cluster_dir_of(args)
    if cluster_dir is None:
        raise CliError(
            "--cluster DIR (or MURMUR_CLUSTER) must name the directory of `murmur cluster init`: the new "
            "key is written into its join.token, so the tokens you issue next carry it"
        )
    if len(args.reason) > REASON_MAX_CHARS:
        raise CliError(f"--reason is limited to {REASON_MAX_CHARS} characters")
    key = resolve_key(args)
    if args.action != "rotate":
        return run_stage(args, node, key, cluster_dir)
    node_id, epoch, new_id = rotate(
        node, key, cluster_dir, grace_s=args.grace, reason=args.reason or "manual"
    )
    print(
        f"network key rotated: epoch {epoch}, key {new_id}, given to node {node_id} at {node.base}; "
        "it spreads "
        f"to every member, and they drop the older keys {args.grace} s after they get it. "
        f"{cluster_dir}/join.token now carries it: tokens from murmur invite include it"
    )
    return 0


def grace_s(text: str) -> int:
    """--grace: a duration (30m, 1h, 7d) within the record's bound."""
    seconds = int(flags.duration_s(text))
    if not 0 <= seconds <= GRACE_MAX_S:
        raise argparse.ArgumentTypeError(f"must be at most {GRACE_MAX_S // 86400} days")
    return seconds


def register(sub: Any, node_help: str) -> None:
    """Add `keys` to the `murmur` subcommands."""
    keys = command(
        sub,
        "keys",
        summary="change the network key in one step (rotate) or in stages (install, use, remove); list",
        description="list: every network key the fleet holds (ids, never keys), how many alive members hold "
        "each and where it seals, per region and in total. "
        "install: make a new key (or read --key-file F) and spread it to every member, sealed to each; "
        "nothing seals with it yet. "
        "use KEY_ID: make it the key that seals, everywhere (refused while an alive member lacks it, "
        "unless --force). "
        "remove KEY_ID: drop it everywhere, for good (never the primary: use another first). "
        "rotate: all of it in one step (install, seal with it 30 s after each member gets it, drop the "
        "older keys --grace later); murmur revoke does this. "
        "show: the network-key record and keyring of the asked node. "
        "install, use, remove and rotate need the root operator key (--cluster DIR), and write the "
        "cluster dir's join.token to match, so tokens from murmur invite carry the fleet's keys.",
        examples=[
            "murmur --cluster ./mycluster keys install          # prints the new key's id",
            "murmur keys list                                   # wait until it shows 12/12 held",
            "murmur --cluster ./mycluster keys use 3f9a1c0e",
            "murmur --cluster ./mycluster keys remove 77d2b4e1",
            "murmur --cluster ./mycluster keys install --key-file new.key",
            "murmur --cluster ./mycluster keys rotate --reason 'laptop lost'   # all in one step",
            "murmur --node http://10.0.0.5:7800 keys show --json",
        ],
    )
    keys.add_argument(
        "action",
        choices=("list", "install", "use", "remove", "rotate", "show"),
        help="list the fleet's keys; install, use or remove one; rotate in one step; show this node's",
    )
    keys.add_argument(
        "key_id", nargs="?", default="", help="use, remove: the key's id (or its first 6+ characters)"
    )
    keys.add_argument(
        "--key-file",
        default="",
        help="install: the key to install (32 bytes, raw, hex or base64); default: make one",
    )
    keys.add_argument(
        "--force",
        action="store_true",
        help="use: even if some alive members lack the key (they say how many)",
    )
    keys.add_argument(
        "--grace",
        type=grace_s,
        default=int(DEFAULT_GRACE_S),
        help="rotate: how long members keep the older keys after they get the new one (default 1h)",
    )
    keys.add_argument("--reason", default="", help="install, use, remove, rotate: why (kept in the record)")
    keys.add_argument("--json", action="store_true", help="print JSON")
    key_flags(keys, node_help)
    keys.set_defaults(func=cmd_keys)
