"""Deployment commands of the CLI: `murmur deploy`, `murmur get deployments`, `murmur delete`.

Every mutating request is signed with the operator key (mesh/trust/opsign.py) and
carries the operator-signed record (mesh/trust/deploy.py). The node and the key
come from flags, then the environment (mesh/cli/signing.py).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nacl.signing

from gossip.records import key_id
from inference.desired import sign_deletion, sign_deployment
from mesh.cli.client import CliError, NodeClient
from mesh.cli.manifest import read_manifest_and_artifact
from mesh.cli.signing import key_flags, resolve_key
from mesh.trust.deploy import record_to_b64
from mesh.trust.opsign import sign_request

WAIT_POLL_S = 0.2
WAIT_DEFAULT_TIMEOUT_S = 60.0


def upload_artifact(
    key: nacl.signing.SigningKey, node: NodeClient, file: Path, sha256: str, size: int
) -> bool:
    """Upload file to the node's artifact store unless it holds it; True if uploaded."""
    path = f"/v1/artifacts/{sha256}"
    status = node.status("HEAD", path)
    if 200 <= status < 300:
        return False  # already there
    if status != 404:
        raise CliError(f"{node.url(path)}: HTTP {status} when asking for the artifact")
    headers = sign_request(key, "PUT", path, b"", time.time(), body_sha256=bytes.fromhex(sha256))
    headers.update({"Content-Length": str(size), "Content-Type": "application/octet-stream"})
    try:
        with file.open("rb") as body:
            node.call("PUT", path, body=body, headers=headers, expected=201)
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc}") from None
    return True


# --- commands ------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    deployment, artifact_file = read_manifest_and_artifact(Path(args.file))
    key = resolve_key(args)
    node = NodeClient(args.node)
    if artifact_file is not None:
        sha256, size = deployment.artifact_sha256, deployment.artifact_size_bytes
        uploaded = upload_artifact(key, node, artifact_file, sha256, size)
        print(
            f"artifact {artifact_file.name}: sha256 {sha256}, {size} bytes, "
            f"{'uploaded to' if uploaded else 'already held by'} {node.base}"
        )
    version = node.next_record_version(key_id(bytes(key.verify_key)))
    record = sign_deployment(key, deployment, version)
    node.submit(
        key, "POST", "/v1/deployments", {"manifest": deployment.to_doc(), "record": record_to_b64(record)}
    )
    print(
        f"deployment {deployment.name}: accepted and persisted by {node.base} as desired record "
        f"version {version}"
    )
    if args.wait:
        return wait_for(node.base, deployment.name, version, args.timeout)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    key = resolve_key(args)
    node = NodeClient(args.node)
    version = node.next_record_version(key_id(bytes(key.verify_key)))
    record = sign_deletion(key, args.name, version)
    path = f"/v1/deployments/{urllib.parse.quote(args.name, safe='')}"
    node.submit(key, "DELETE", path, {"record": record_to_b64(record)})
    print(f"deployment {args.name}: deletion accepted and persisted by {node.base} (version {version})")
    return 0


def format_deployments(rows: Sequence[dict[str, Any]]) -> str:
    """Deployments as an aligned text table."""
    headers = ("NAME", "MODEL", "REPLICAS", "PRIORITY", "VERSION", "AUTHOR")
    cells: list[list[str]] = []
    for row in rows:
        manifest = row.get("manifest") or {}
        model = manifest.get("model") or {}
        cells.append(
            [
                str(row.get("name")),
                f"{model.get('name')}:{model.get('version')}" if model else "?",
                json.dumps(manifest.get("replicas"), separators=(",", ":")),
                str(manifest.get("priority", "")),
                str(row.get("version")),
                str(row.get("author")),
            ]
        )
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    # A record the node holds but cannot read (GET /v1/deployments marks it): say why.
    lines += [f"{row.get('name')}: {row['error']}" for row in rows if row.get("error")]
    return "\n".join(lines)


def cmd_get(args: argparse.Namespace) -> int:
    rows = NodeClient(args.node).get("/v1/deployments")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_deployments(rows))
    return 0


# --- --wait ----------------------------------------------------------------------------------


def alive_apis(base: str) -> dict[str, str]:
    """API address by node id of every alive member of every region the node knows.

    CliError if a region does not answer: --wait must not declare success
    over a region it could not see.
    """
    node = NodeClient(base)
    health = node.get("/v1/health")
    own_region = health.get("region")
    apis: dict[str, str] = {}
    for region in sorted(health.get("regions", {})):
        params = None if region == own_region else {"region": region}
        members = node.get("/v1/nodes", params)
        if not isinstance(members, list):
            raise CliError(f"{node.url('/v1/nodes', params)}: not a member list")
        for m in members:
            if m.get("state") == "alive" and m.get("api"):
                apis[str(m["id"])] = str(m["api"])
    return apis


def _holds(api: str, name: str, version: int) -> bool:
    try:
        status, doc = NodeClient(api).exchange("GET", f"/v1/deployments/{urllib.parse.quote(name, safe='')}")
    except CliError:
        return False
    return status == 200 and isinstance(doc, dict) and int(doc.get("version", -1)) >= version


def wait_for(
    base: str, name: str, version: int, timeout_s: float, clock: Callable[[], float] = time.monotonic
) -> int:
    """Poll until every alive node of every region holds `name` at `version` (or newer)."""
    started = clock()
    pending: list[str] = []
    apis: dict[str, str] = {}
    while True:
        try:
            apis, complete = alive_apis(base), True
        except CliError:  # a region did not answer this time: never report success on it
            complete = False
        pending = sorted(node for node, api in apis.items() if not _holds(api, name, version))
        if complete and apis and not pending:
            print(f"deployment {name}: held by all {len(apis)} alive nodes after {clock() - started:.2f} s")
            return 0
        if clock() - started >= timeout_s:
            missing = ", ".join(pending) or "no node answered"
            raise CliError(
                f"deployment {name} version {version}: after {timeout_s:g} s, {len(apis) - len(pending)} of "
                f"{len(apis)} alive nodes hold it; still missing: {missing}. "
                "It is persisted and keeps spreading; check again with murmur get deployments"
            )
        time.sleep(WAIT_POLL_S)


# --- parser ----------------------------------------------------------------------------------


def register(sub: Any, node_help: str) -> None:
    """Add deploy, get and delete to the `murmur` subcommands."""
    deploy = sub.add_parser("deploy", help="create or update a deployment from a manifest (YAML or JSON)")
    deploy.add_argument("file", help="the manifest file")
    deploy.add_argument("--wait", action="store_true", help="return once every alive node holds it")
    deploy.add_argument(
        "--timeout", type=float, default=WAIT_DEFAULT_TIMEOUT_S, help="seconds --wait waits (default 60)"
    )
    key_flags(deploy, node_help)
    deploy.set_defaults(func=cmd_deploy)

    get = sub.add_parser("get", help="list desired state")
    get.add_argument("what", choices=("deployments",), help="what to list")
    get.add_argument("--json", action="store_true", help="print JSON instead of a table")
    key_flags(get, node_help)
    get.set_defaults(func=cmd_get)

    delete = sub.add_parser("delete", help="delete a deployment (a signed tombstone)")
    delete.add_argument("name", help="the deployment name")
    key_flags(delete, node_help)
    delete.set_defaults(func=cmd_delete)
