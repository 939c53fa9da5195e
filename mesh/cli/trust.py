"""Revocations and operator keys: the records an operator signs, the checks a node makes,
and the `murmur revoke` / `murmur operator` commands.

- `murmur revoke NODE_ID`: a `revocation` record (key = the node id, scope fleet),
  signed by a root operator key (the one from `murmur cluster init`). Every node
  that holds it expels the node, drops its records and refuses it from then on,
  also after restarts (the record is persisted and gossiped like desired state).
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
from typing import Any

from gossip.records import PUBLIC_KEY_BYTES, key_id
from mesh.cli.deploy import (
    OperatorError,
    base_url,
    http_json,
    next_record_version,
    ok,
    resolve_key,
    signed_json,
)
from mesh.trust.deploy import record_to_b64
from mesh.trust.records import NODE_ID, REASON_MAX_CHARS, sign_grant, sign_revocation

# --- CLI -----------------------------------------------------------------------------------


def cmd_revoke(args: argparse.Namespace) -> int:
    if not NODE_ID.match(args.node_id):
        raise OperatorError(f"{args.node_id!r} is not a node id (16 hex characters)")
    if len(args.reason) > REASON_MAX_CHARS:
        raise OperatorError(f"--reason is limited to {REASON_MAX_CHARS} characters")
    key = resolve_key(args)
    base = base_url(args.node)
    version = next_record_version(base, key_id(bytes(key.verify_key)))
    record = sign_revocation(key, args.node_id, version, args.reason)
    path = "/v1/revocations"
    ok(base + path, *signed_json(key, "POST", base, path, {"record": record_to_b64(record)}), expected=202)
    print(f"node {args.node_id}: revocation accepted and persisted by {base}; it is expelled everywhere")
    return 0


def _public_key_arg(text: str) -> bytes:
    """An operator public key: base64 of 32 bytes, or a file holding it (an operator.key file
    gives its public half)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == PUBLIC_KEY_BYTES:
        return raw
    raise OperatorError(
        f"{text!r}: give the operator's public key in base64 (murmur operator key --key FILE prints it)"
    )


def cmd_operator(args: argparse.Namespace) -> int:
    if args.action == "key":
        key = resolve_key(args)
        public = bytes(key.verify_key)
        print(f"{base64.b64encode(public).decode('ascii')}  (key id {key_id(public)})")
        return 0
    base = base_url(args.node)
    if args.action == "list":
        url = f"{base}/v1/operators"
        rows = ok(url, *http_json("GET", url))
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
        operator_key, active = _granted_key(base, args.target), False
    version = next_record_version(base, key_id(bytes(key.verify_key)))
    record = sign_grant(key, operator_key, version, active=active)
    path = "/v1/operators"
    ok(base + path, *signed_json(key, "POST", base, path, {"record": record_to_b64(record)}), expected=202)
    verb = "granted" if active else "removed"
    print(f"operator key {key_id(operator_key)} {verb}; accepted and persisted by {base}")
    return 0


def _granted_key(base: str, target: str) -> bytes:
    url = f"{base}/v1/operators"
    rows: Any = ok(url, *http_json("GET", url))
    for row in rows:
        if row.get("id") == target and row.get("role") == "granted":
            return base64.b64decode(row["public_key"])
    raise OperatorError(
        f"{target!r} is not a granted operator key id (murmur operator list shows them; root keys stay)"
    )


def register(sub: Any, node_help: str, key_flags: Any) -> None:
    """Add revoke and operator to the `murmur` subcommands."""
    revoke = sub.add_parser("revoke", help="revoke a node: expelled everywhere, refused from then on")
    revoke.add_argument("node_id", help="the node's id (murmur nodes lists them)")
    revoke.add_argument("--reason", default="", help="why (kept with the revocation)")
    key_flags(revoke, node_help)
    revoke.set_defaults(func=cmd_revoke)

    operator = sub.add_parser("operator", help="list, add or remove operator keys")
    operator.add_argument("action", choices=("list", "add", "remove", "key"))
    operator.add_argument(
        "target", nargs="?", default="", help="add: the public key (base64); remove: the key id"
    )
    operator.add_argument("--json", action="store_true", help="list: print JSON")
    key_flags(operator, node_help)
    operator.set_defaults(func=cmd_operator)
