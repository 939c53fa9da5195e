"""Deployment commands of the CLI: `murmur deploy`, `murmur get`, `murmur delete`.

`deploy` sends nothing when the manifest is what the node already holds (it says
"unchanged"), and prints the warnings the node returns (a region or accelerator no
live node has). `get deployments [NAME]` and `get revocations` read what a node holds.

Every mutating request is signed with the operator key (mesh/trust/opsign.py) and
carries the operator-signed record (mesh/trust/deploy.py). The node and the key
come from flags, then the environment (mesh/cli/signing.py).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast

import nacl.signing

from gossip.records import key_id
from inference.desired import sign_deletion, sign_deployment
from inference.manifest import Deployment, ManifestError, canonical_bytes, manifest_from_doc
from mesh.cli.client import (
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    CliError,
    CliTimeout,
    NodeClient,
    version_text,
    version_time,
)
from mesh.cli.deploywait import WAIT_DEFAULT_TIMEOUT_S, wait_for
from mesh.cli.helptext import command
from mesh.cli.manifest import read_manifest_and_artifact
from mesh.cli.placements import ready_by_deployment
from mesh.cli.progress import Figures, Progress
from mesh.cli.signing import key_flags, resolve_key
from mesh.trust.deploy import record_to_b64
from mesh.trust.opsign import sign_request

UPLOAD_REDRAW_S = 0.1  # a terminal's upload line is redrawn at most this often


class CountedBody(io.RawIOBase):
    """An upload's file as the request body, showing the bytes read so far (urllib sends what
    it reads, block by block) on `progress`."""

    def __init__(self, body: IO[bytes], size: int, label: str, progress: Progress) -> None:
        super().__init__()
        self.body, self.size, self.label, self.progress = body, size, label, progress
        self.sent = 0
        self._shown_at: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self.body.read(len(buffer))
        buffer[: len(chunk)] = chunk
        self.sent += len(chunk)
        now = self.progress.clock()
        if self._shown_at is None or now - self._shown_at >= UPLOAD_REDRAW_S or self.sent >= self.size:
            self._shown_at = now
            self.progress.show(
                Figures(self.label, self.sent, self.size, "", self.sent, self.size, "sent", counts=False)
            )
        return len(chunk)


def upload_artifact(
    key: nacl.signing.SigningKey,
    node: NodeClient,
    file: Path,
    sha256: str,
    size: int,
    progress: Progress | None = None,
) -> bool:
    """Upload file to the node's artifact store unless it holds it; True if uploaded. `progress`:
    where to show the bytes sent (a terminal's stderr)."""
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
            sent: IO[bytes] = body
            if progress is not None:
                sent = cast(IO[bytes], CountedBody(body, size, f"upload {file.name}", progress))
            node.call("PUT", path, body=sent, headers=headers, expected=201)
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc}") from None
    finally:
        if progress is not None:
            progress.clear()
    return True


# --- commands ------------------------------------------------------------------------------


def _quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def held_deployment(node: NodeClient, name: str) -> tuple[int, Deployment] | None:
    """(version, deployment) of the deployment `name` the node holds; None if it holds none (or
    only one it cannot read: then a new version is what fixes it)."""
    status, doc = node.exchange("GET", f"/v1/deployments/{_quoted(name)}")
    if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("version"), int):
        return None
    try:
        return int(doc["version"]), manifest_from_doc(doc.get("manifest"))
    except (ManifestError, TypeError, RecursionError):  # whatever a node answers, never a traceback
        return None


def cmd_deploy(args: argparse.Namespace) -> int:
    deployment, artifact_file = read_manifest_and_artifact(Path(args.file))
    key = resolve_key(args)
    node = NodeClient(args.node)
    # With --json, stdout holds one JSON object only; what people read goes to stderr.
    human = sys.stderr if args.json else sys.stdout
    result: dict[str, Any] = {"name": deployment.name, "node": node.base, "artifact": None}
    if artifact_file is not None:
        sha256, size = deployment.artifact_sha256, deployment.artifact_size_bytes
        # The bytes sent show on a terminal only: a script's log gets the one line below.
        shown = Progress(sys.stderr) if sys.stderr.isatty() else None
        uploaded = upload_artifact(key, node, artifact_file, sha256, size, shown)
        result["artifact"] = {
            "file": str(artifact_file),
            "sha256": sha256,
            "size_bytes": size,
            "uploaded": uploaded,
        }
        print(
            f"artifact {artifact_file.name}: sha256 {sha256}, {size} bytes, "
            f"{'uploaded to' if uploaded else 'already held by'} {node.base}",
            file=human,
        )
    held = held_deployment(node, deployment.name)
    if held is not None and canonical_bytes(held[1]) == canonical_bytes(deployment):
        # The same manifest again: a new version would only make every node store and gossip it.
        version = held[0]
        result.update(version=version, unchanged=True, new=False, warnings=[])
        print(
            f"deployment {deployment.name}: unchanged (the node holds this manifest as version "
            f"{version_text(version)}); nothing sent",
            file=human,
        )
    else:
        version = submit_deployment(node, key, deployment, result, "deploy")
        print(
            f"deployment {deployment.name}: accepted and persisted by {node.base} as desired record "
            f"version {version_text(version)}",
            file=human,
        )
    return finish(args, node, deployment.name, version, result, human)


def submit_deployment(
    node: NodeClient,
    key: nacl.signing.SigningKey,
    deployment: Deployment,
    result: dict[str, Any],
    command: str,
) -> int:
    """Sign `deployment` at the author's next version and submit it; returns that version. Fills
    `result` (version, unchanged, new, warnings) and prints the node's warnings as `murmur COMMAND`."""
    version = node.next_record_version(key_id(bytes(key.verify_key)))
    record = sign_deployment(key, deployment, version)
    answer = node.submit(
        key, "POST", "/v1/deployments", {"manifest": deployment.to_doc(), "record": record_to_b64(record)}
    )
    body = answer if isinstance(answer, dict) else {}
    listed = body.get("warnings")
    warnings = [str(w) for w in listed] if isinstance(listed, list) else []
    result.update(version=version, unchanged=False, new=bool(body.get("new", True)), warnings=warnings)
    for warning in warnings:
        print(f"murmur {command}: warning: {warning}", file=sys.stderr)
    return version


def finish(
    args: argparse.Namespace,
    node: NodeClient,
    name: str,
    version: int,
    result: dict[str, Any],
    human: IO[str],
) -> int:
    """`--wait` for `version` of deployment `name`, then print `result` as JSON with `--json`."""
    code = 0
    if args.wait:
        # A timeout raises CliTimeout (exit 4, the message on stderr), with no JSON object.
        code = wait_for(node.base, name, version, args.timeout, out=human)
        result["wait_exit_status"] = code
    if args.json:
        print(json.dumps(result, indent=2))
    return code


def cmd_delete(args: argparse.Namespace) -> int:
    key = resolve_key(args)
    node = NodeClient(args.node)
    version = node.next_record_version(key_id(bytes(key.verify_key)))
    record = sign_deletion(key, args.name, version)
    path = f"/v1/deployments/{_quoted(args.name)}"
    answer = node.submit(key, "DELETE", path, {"record": record_to_b64(record)})
    if args.json:
        new = bool(answer.get("new", True)) if isinstance(answer, dict) else True
        print(json.dumps({"name": args.name, "version": version, "node": node.base, "new": new}, indent=2))
    else:
        print(
            f"deployment {args.name}: deletion accepted and persisted by {node.base} "
            f"(version {version_text(version)})"
        )
    return 0


def _table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> list[str]:
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return lines


def _version_cell(value: Any) -> str:
    return version_time(value) if isinstance(value, int) else str(value)


def format_deployments(
    rows: Sequence[dict[str, Any]], counts: Mapping[str, tuple[int, int]] | None = None
) -> str:
    """Deployments as an aligned text table (VERSION as the UTC time it was signed); with
    `counts` (name -> (ready, desired), summed over the regions), READY and DESIRED columns."""
    headers: tuple[str, ...] = ("NAME", "MODEL", "REPLICAS", "PRIORITY", "VERSION (UTC)", "AUTHOR")
    if counts is not None:
        headers = (*headers, "READY", "DESIRED")
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
                _version_cell(row.get("version")),
                str(row.get("author")),
            ]
        )
        if counts is not None:
            ready, desired = counts.get(str(row.get("name")), (0, 0))
            cells[-1] += [str(ready), str(desired)]
    lines = _table(headers, cells)
    # A record the node holds but cannot read (GET /v1/deployments marks it): say why.
    lines += [f"{row.get('name')}: {row['error']}" for row in rows if row.get("error")]
    return "\n".join(lines)


def format_deployment(row: dict[str, Any]) -> str:
    """One deployment, field by field (`murmur get deployments NAME`)."""
    manifest = row.get("manifest") or {}
    model = manifest.get("model") or {}
    artifact = manifest.get("artifact") or {}
    requirements = manifest.get("requirements") or {}
    version = row.get("version")
    lines = [
        f"name:          {row.get('name')}",
        f"version:       {version_text(version) if isinstance(version, int) else version}",
        f"author:        {row.get('author')}",
    ]
    if row.get("error"):
        return "\n".join([*lines, f"error:         {row['error']}"])
    lines += [
        f"model:         {model.get('name')}:{model.get('version')}",
        f"artifact:      sha256 {artifact.get('sha256')}, {artifact.get('size_bytes')} bytes",
        f"replicas:      {json.dumps(manifest.get('replicas'), separators=(',', ':'))}",
        f"min memory:    {requirements.get('min_memory_bytes', 0)} bytes",
        f"accelerator:   {requirements.get('accelerator') or '-'}",
        f"labels:        {json.dumps(requirements.get('labels') or {}, sort_keys=True)}",
        f"priority:      {manifest.get('priority', 0)}",
    ]
    return "\n".join(lines)


def format_revocations(rows: Sequence[dict[str, Any]]) -> str:
    """Revoked nodes as an aligned text table."""
    cells = [
        [
            str(r.get("node_id")),
            _version_cell(r.get("version")),
            str(r.get("author")),
            str(r.get("reason") or "-"),
        ]
        for r in sorted(rows, key=lambda r: str(r.get("node_id")))
    ]
    if not cells:
        return "no node is revoked"
    return "\n".join(_table(("NODE", "REVOKED (UTC)", "AUTHOR", "REASON"), cells))


def cmd_get(args: argparse.Namespace) -> int:
    node = NodeClient(args.node)
    if args.what == "revocations":
        if args.name:
            raise CliError("get revocations takes no NAME; it lists every revoked node")
        rows = node.get("/v1/revocations")
        print(json.dumps(rows, indent=2) if args.json else format_revocations(rows))
        return 0
    if args.name:
        status, doc = node.exchange("GET", f"/v1/deployments/{_quoted(args.name)}")
        if status == 404:
            message = doc.get("error") if isinstance(doc, dict) else None
            raise CliError(
                f"{message or f'no deployment named {args.name!r}'}; list them with murmur get deployments"
            )
        if status != 200 or not isinstance(doc, dict):
            raise CliError(f"{node.url(f'/v1/deployments/{_quoted(args.name)}')}: HTTP {status}: {doc}")
        print(json.dumps(doc, indent=2) if args.json else format_deployment(doc))
        return 0
    rows = node.get("/v1/deployments")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    # READY/DESIRED: each region's placement (its own nodes' reports), summed over the regions.
    # A node that cannot say its regions (an older murmur) gets the table without them.
    try:
        regions = node.get("/v1/regions")
    except CliError:
        regions = None
    names = [str(r["region"]) for r in regions if isinstance(r, dict) and r.get("region")] if regions else []
    print(format_deployments(rows, ready_by_deployment(node, names) if isinstance(regions, list) else None))
    return 0


# --- parser ----------------------------------------------------------------------------------


def register(sub: Any, node_help: str) -> None:
    """Add deploy, get and delete to the `murmur` subcommands."""
    deploy = command(
        sub,
        "deploy",
        summary="create or update a deployment from a manifest (YAML or JSON)",
        description="Sign the manifest's desired record with the operator key and send it to any node, "
        "which persists it and gossips it to every region. An unchanged manifest sends nothing. "
        "A region, accelerator or label that no live node has is accepted and warned about on stderr.",
        examples=[
            "murmur --cluster ./mycluster deploy vibration.yaml",
            "murmur --node http://10.0.0.5:7800 --key alice.key deploy vibration.yaml --wait --timeout 30",
            "murmur deploy vibration.yaml --json",
        ],
    )
    deploy.add_argument("file", help="the manifest file")
    deploy.add_argument(
        "--wait",
        action="store_true",
        help="return once every alive node holds it and its replicas are ready, with a progress line on "
        "stderr (replicas ready/desired, artifact bytes fetched); reports each region. Exit status 0: done "
        f"in every region; {EXIT_UNREACHABLE}: done in every reachable region, some regions are "
        "unreachable (listed with when they were last heard); 1: a replica cannot be placed or failed "
        f"(named); {CliTimeout.exit_status}: timed out; {EXIT_INTERRUPTED}: Ctrl-C (the rollout goes on)",
    )
    deploy.add_argument(
        "--timeout", type=float, default=WAIT_DEFAULT_TIMEOUT_S, help="seconds --wait waits (default 60)"
    )
    deploy.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (name, version, unchanged, new, warnings, artifact, wait_exit_status); "
        "progress goes to stderr",
    )
    key_flags(deploy, node_help)
    deploy.set_defaults(func=cmd_deploy)

    get = command(
        sub,
        "get",
        summary="show desired state: deployments (one by NAME), revocations",
        description="List the deployments the asked node holds, show one deployment by NAME, or list "
        "the revoked nodes. Versions show as the UTC time they were signed (--json: Unix ms). READY and "
        "DESIRED count a deployment's replicas over every region: each region's placement is read at one "
        "of its nodes (murmur placements --region R) and the counts are summed; a region that does not "
        "answer adds nothing.",
        examples=[
            "murmur get deployments",
            "murmur get deployments vibration --json",
            "murmur --node http://10.0.0.5:7800 get revocations",
        ],
    )
    get.add_argument("what", choices=("deployments", "revocations"), help="what to show")
    get.add_argument("name", nargs="?", default="", help="deployments: one deployment's name")
    get.add_argument("--json", action="store_true", help="print JSON instead of a table")
    key_flags(get, node_help)
    get.set_defaults(func=cmd_get)

    delete = command(
        sub,
        "delete",
        summary="delete a deployment (a signed tombstone)",
        description="Delete a deployment everywhere: a tombstone record signed by the operator key, "
        "persisted by the asked node and gossiped like any desired record.",
        examples=["murmur --cluster ./mycluster delete vibration", "murmur delete vibration --json"],
    )
    delete.add_argument("name", help="the deployment name")
    delete.add_argument("--json", action="store_true", help="print one JSON object (name, version, new)")
    key_flags(delete, node_help)
    delete.set_defaults(func=cmd_delete)
