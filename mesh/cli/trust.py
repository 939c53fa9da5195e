"""Trust commands of the CLI: who may join and who may command.

- `murmur cluster init`: a new cluster directory (ids, operator key, first join token).
- `murmur invite`: a join token with a fresh invite signed by the operator key.
- `murmur revoke NODE_ID`: a `revocation` record (key = the node id, scope fleet),
  signed by a root operator key (the one from `murmur cluster init`). Every node
  that holds it expels the node, drops its records and refuses it from then on,
  also after restarts (the record is persisted and gossiped like desired state).
- `murmur operator keygen FILE`: a new operator key file (mode 0600) for another person;
  `murmur operator key --key FILE` prints its public half, which a root operator adds.
- `murmur operator add PUBLIC_KEY` / `remove KEY_ID`: a `trust` record (key = the
  operator key's id) granting that key, active or removed. Granted keys sign
  deployments; only root keys sign invites, revoke and grant (docs/trust.md says
  why: it keeps every node's state independent of the order records arrive in).
  A removed key's commands are refused from then on; what it signed before the
  removal stays, what it signed after is dropped everywhere.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import nacl.signing

from gossip.records import PUBLIC_KEY_BYTES, key_id
from mesh.cli import args as flags
from mesh.cli import keys
from mesh.cli.client import CliError, NodeClient, version_text
from mesh.cli.helptext import command
from mesh.cli.signing import key_flags, resolve_key
from mesh.files import write_new_file
from mesh.trust.cluster import ClusterError, init_cluster, issue_token
from mesh.trust.deploy import record_to_b64
from mesh.trust.records import NODE_ID, REASON_MAX_CHARS, sign_grant, sign_revocation

DEFAULT_INVITE_TTL_S = 24 * 3600.0

# --- cluster and invites --------------------------------------------------------------------


def cmd_cluster_init(args: argparse.Namespace) -> int:
    try:
        cluster = init_cluster(Path(args.out), ttl_s=args.ttl)
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    print(f"cluster {cluster.cluster_id} created in {cluster.path}")
    print(f"  operator key: {cluster.operator_key_path} (keep it secret; it signs operator commands)")
    print(f"  join token:   {cluster.token_path} (copy it to each device; it holds the network key)")
    print(
        f"next: murmur agent --token {cluster.token_path} --data-dir DIR --region R "
        "--bind HOST:7946 --api HOST:7800"
    )
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    cluster_dir = args.cluster or os.environ.get("MURMUR_CLUSTER")
    if not cluster_dir:
        raise CliError("--cluster DIR (or MURMUR_CLUSTER) must name the directory of `murmur cluster init`")
    try:
        token = issue_token(Path(cluster_dir), ttl_s=args.ttl, region=args.region or "", uses=args.uses)
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    text = token.to_json()
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.invite.expires_at_s))
    where = f"region {token.invite.region}" if token.invite.region else "any region"
    if token.invite.uses:
        where += f", {token.invite.uses} device{'s' if token.invite.uses > 1 else ''}"
    if args.out:
        try:
            write_new_file(Path(args.out), text.encode("utf-8"))
        except FileExistsError:
            raise CliError(
                f"{args.out} exists; refusing to overwrite a token (choose another --out)"
            ) from None
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc}") from None
    if args.json:
        # The token itself stays out of this object unless it has no file to live in.
        doc: dict[str, Any] = {
            "cluster_id": token.cluster_id,
            "region": token.invite.region or None,
            "uses": token.invite.uses,
            "expires_at_unix": token.invite.expires_at_s,
            "expires_at": expires,
            "out": args.out,
        }
        if not args.out:
            doc["token"] = json.loads(text)
        print(json.dumps(doc, indent=2))
    elif args.out:
        print(
            f"join token for cluster {token.cluster_id} ({where}) written to {args.out}; "
            f"devices can join with it until {expires}"
        )
    else:
        sys.stdout.write(text)
        print(
            f"join token for cluster {token.cluster_id} ({where}); devices can join with it until {expires}",
            file=sys.stderr,
        )
    return 0


# --- revocations and operator keys ------------------------------------------------------------


def cmd_revoke(args: argparse.Namespace) -> int:
    if not NODE_ID.fullmatch(args.node_id):
        raise CliError(f"{args.node_id!r} is not a node id (16 hex characters)")
    if len(args.reason) > REASON_MAX_CHARS:
        raise CliError(f"--reason is limited to {REASON_MAX_CHARS} characters")
    key = resolve_key(args)
    node = NodeClient(args.node)
    if not args.force and not ever_seen(node, args.node_id):
        raise CliError(
            f"no node reachable from {node.base} has ever seen node {args.node_id}: it is in no reachable "
            "region's member list (last-known ones included), and no node holds a record it signed. "
            "A revocation is permanent, so check the id (murmur nodes, murmur nodes --region R). If it "
            "is right (a device whose region is offline, or one that never joined), run again with --force"
        )
    version = node.next_record_version(key_id(bytes(key.verify_key)))
    record = sign_revocation(key, args.node_id, version, args.reason)
    answer = node.submit(key, "POST", "/v1/revocations", {"record": record_to_b64(record)})
    result: dict[str, Any] = {
        "node_id": args.node_id,
        "version": version,
        "node": node.base,
        "new": bool(answer.get("new", True)) if isinstance(answer, dict) else True,
        "rotated": None,
    }
    # With --json, stdout holds one JSON object only; what people read goes to stderr.
    human = sys.stderr if args.json else sys.stdout
    print(
        f"node {args.node_id}: revocation accepted and persisted by {node.base} (version "
        f"{version_text(version)}); it is expelled everywhere",
        file=human,
    )
    cluster_dir = None if args.no_rotate else keys.cluster_dir_of(args)
    if not args.no_rotate and cluster_dir is None:
        print(
            "the network key was NOT rotated (no cluster dir): the revoked device still holds it. Run: "
            "murmur keys rotate --cluster DIR",
            file=sys.stderr,
        )
    if cluster_dir is None:
        if args.json:
            print(json.dumps(result, indent=2))
        return 0
    # The revoked device holds the network key: rotate it, and name the device so that no
    # member hands it the new key, even one that has not heard of the revocation yet.
    _node_id, epoch, new_id = keys.rotate(
        node,
        key,
        cluster_dir,
        grace_s=args.grace,
        reason=f"revocation of {args.node_id}",
        revoked=(args.node_id,),
    )
    print(
        f"network key rotated (epoch {epoch}, key {new_id}): members drop the old key {args.grace} s after "
        f"they get the new one; {cluster_dir}/join.token carries the new key",
        file=human,
    )
    if args.json:
        result["rotated"] = {"epoch": epoch, "key_id": new_id, "grace_s": args.grace}
        print(json.dumps(result, indent=2))
    return 0


def ever_seen(node: NodeClient, node_id: str) -> bool:
    """True if the asked node, or a region it reaches, knows `node_id`: a member (region or fleet
    view, or another region's list, live or last-known), or the author of a record it holds."""
    status, _ = node.exchange("GET", f"/v1/nodes/{node_id}")
    if status == 200:
        return True
    state = node.get("/v1/state")
    if isinstance(state, dict) and node_id in (state.get("digest") or {}):
        return True  # it signed a record this node holds (its admission, its inventory)
    health = node.get("/v1/health")
    own_region = health.get("region") if isinstance(health, dict) else None
    regions = health.get("regions", {}) if isinstance(health, dict) else {}
    for region in sorted(str(r) for r in regions if r != own_region):
        status, rows = node.exchange("GET", "/v1/nodes", params={"region": region})
        listed = rows if status == 200 and isinstance(rows, list) else []
        if any(isinstance(r, dict) and r.get("id") == node_id for r in listed):
            return True
    return False


def _public_key_arg(text: str) -> bytes:
    """An operator public key: base64 of 32 bytes, or a file holding it (an operator.key file
    gives its public half)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == PUBLIC_KEY_BYTES:
        return raw
    raise CliError(
        f"{text!r}: give the operator's public key in base64 (murmur operator key --key FILE prints it; "
        "murmur operator keygen FILE makes a new key)"
    )


def cmd_operator_keygen(path: Path) -> int:
    """A new operator key file at `path` (mode 0600; never over an existing file)."""
    key = nacl.signing.SigningKey.generate()
    try:
        write_new_file(path, bytes(key).hex().encode("ascii") + b"\n")
    except FileExistsError:
        raise CliError(f"{path} exists; refusing to overwrite a key (choose another file)") from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc}") from None
    public = bytes(key.verify_key)
    print(f"operator key written to {path} (mode 0600; keep it secret)")
    print(f"public key: {base64.b64encode(public).decode('ascii')}  (key id {key_id(public)})")
    print(
        "next: a root operator grants it with murmur --cluster DIR operator add "
        f"{base64.b64encode(public).decode('ascii')}"
    )
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        if not args.target:
            raise CliError("keygen needs the file to create: murmur operator keygen alice.key")
        return cmd_operator_keygen(Path(args.target))
    if args.action == "key":
        key = resolve_key(args)
        public = bytes(key.verify_key)
        print(f"{base64.b64encode(public).decode('ascii')}  (key id {key_id(public)})")
        return 0
    node = NodeClient(args.node)
    if args.action == "list":
        rows = node.get("/v1/operators")
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['id']}  {row['role']:<7}  {'active' if row['active'] else 'removed'}")
        return 0
    key = resolve_key(args)
    if args.action == "add":
        operator_key, active = _public_key_arg(args.target), True
    else:
        operator_key, active = _granted_key(node, args.target), False
    version = node.next_record_version(key_id(bytes(key.verify_key)))
    record = sign_grant(key, operator_key, version, active=active)
    node.submit(key, "POST", "/v1/operators", {"record": record_to_b64(record)})
    verb = "granted" if active else "removed"
    print(f"operator key {key_id(operator_key)} {verb}; accepted and persisted by {node.base}")
    return 0


def _granted_key(node: NodeClient, target: str) -> bytes:
    rows: Any = node.get("/v1/operators")
    for row in rows:
        if row.get("id") == target and row.get("role") == "granted":
            return base64.b64decode(row["public_key"])
    raise CliError(
        f"{target!r} is not a granted operator key id (murmur operator list shows them; root keys stay)"
    )


# --- parser ----------------------------------------------------------------------------------


def register_cluster(sub: Any) -> None:
    """Add cluster (init) and invite to the `murmur` subcommands."""
    cluster = command(
        sub,
        "cluster",
        summary="create and manage a cluster",
        description="Manage the cluster directory on the operator's machine (init creates it).",
        examples=["murmur cluster init --out ./mycluster"],
    )
    cluster_sub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    init = command(
        cluster_sub,
        "init",
        summary="create a cluster: ids, operator key, join token",
        description="Create a cluster directory: the cluster id, operator.key (Ed25519, mode 0600: it "
        "signs every command) and join.token (the network key and a first invite; copy it to devices).",
        examples=["murmur cluster init --out ./mycluster", "murmur cluster init --out ./mycluster --ttl 7d"],
    )
    init.add_argument("--out", required=True, help="directory to create (must not exist or be empty)")
    init.add_argument(
        "--ttl",
        type=flags.duration_s,
        default=DEFAULT_INVITE_TTL_S,
        help="how long the first token admits devices (default 24h)",
    )
    init.set_defaults(func=cmd_cluster_init)

    invite = command(
        sub,
        "invite",
        summary="issue a join token with a new operator-signed invite",
        description="Issue a join token: the cluster's network key and a new invite signed by the "
        "operator key, valid for --ttl, for one region or any, for some devices or any number.",
        examples=[
            "murmur invite --cluster ./mycluster --region store-17 --ttl 24h --out store-17.token",
            "murmur invite --cluster ./mycluster --uses 3 --region depot-2 --json > token.json",
        ],
    )
    invite.add_argument(
        "--cluster",
        default=argparse.SUPPRESS,
        help="the cluster dir of `murmur cluster init` (env MURMUR_CLUSTER)",
    )
    invite.add_argument("--region", type=flags.region, default=None, help="admit devices of this region only")
    invite.add_argument(
        "--ttl",
        type=flags.duration_s,
        default=DEFAULT_INVITE_TTL_S,
        help="devices can join with it for this long (default 24h)",
    )
    invite.add_argument(
        "--uses", type=flags.uses, default=0, help="how many devices it admits (default: any number)"
    )
    invite.add_argument(
        "--out", default=None, help="write the token to this new file (mode 0600), not stdout"
    )
    invite.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: cluster_id, region, uses, expires_at(_unix), out; and token "
        "when there is no --out",
    )
    invite.set_defaults(func=cmd_invite)


def register_grants(sub: Any, node_help: str) -> None:
    """Add revoke and operator to the `murmur` subcommands."""
    revoke = command(
        sub,
        "revoke",
        summary="revoke a node: expelled everywhere, refused from then on",
        description="Revoke a node for good (a root-operator-signed record every node keeps): it is "
        "expelled from every pool, its records are dropped, and it is refused from then on. Then the "
        "network key is rotated so the device hears nothing more (needs --cluster). "
        "murmur get revocations lists the revoked nodes.",
        examples=[
            "murmur --cluster ./mycluster revoke 0a1b2c3d4e5f6071 --reason 'stolen'",
            "murmur --cluster ./mycluster revoke 0a1b2c3d4e5f6071 --force --json",
        ],
    )
    revoke.add_argument("node_id", help="the node's id (murmur nodes lists them)")
    revoke.add_argument("--reason", default="", help="why (kept with the revocation)")
    revoke.add_argument(
        "--force",
        action="store_true",
        help="revoke even if no reachable node has ever seen this id (revocation is permanent)",
    )
    revoke.add_argument(
        "--no-rotate",
        action="store_true",
        help="do not rotate the network key (by default a revocation rotates it; needs --cluster)",
    )
    revoke.add_argument(
        "--grace",
        type=keys.grace_s,
        default=int(keys.DEFAULT_GRACE_S),
        help="how long members keep the old network key after they get the new one (default 1h)",
    )
    revoke.add_argument(
        "--json", action="store_true", help="print one JSON object (node_id, version, new, rotated)"
    )
    key_flags(revoke, node_help)
    revoke.set_defaults(func=cmd_revoke)

    operator = command(
        sub,
        "operator",
        summary="make, list, add or remove operator keys",
        description="keygen FILE: make a new operator key file (mode 0600) for another person. "
        "key: print the public half of --key FILE. add PUBLIC_KEY: a root operator grants that key "
        "(it may then deploy). remove KEY_ID: revoke a granted key. list: root and granted keys.",
        examples=[
            "murmur operator keygen alice.key",
            "murmur operator key --key alice.key",
            "murmur --cluster ./mycluster operator add <base64 public key>",
            "murmur --node http://10.0.0.5:7800 operator list --json",
        ],
    )
    operator.add_argument("action", choices=("list", "add", "remove", "key", "keygen"), help="what to do")
    operator.add_argument(
        "target",
        nargs="?",
        default="",
        help="add: the public key (base64); remove: the key id; keygen: the key file to create",
    )
    operator.add_argument("--json", action="store_true", help="list: print JSON")
    key_flags(operator, node_help)
    operator.set_defaults(func=cmd_operator)
