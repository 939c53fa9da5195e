"""Operator commands of the CLI: `murmur deploy`, `murmur get deployments`, `murmur delete`.

Every mutating request is signed with the operator key (mesh/opsign.py) and
carries the operator-signed record (mesh/deploy.py). The node and the key come
from flags, then the environment: `--node` / MURMUR_NODE, `--key` / MURMUR_KEY
(an operator.key file), `--cluster` / MURMUR_CLUSTER (a cluster dir: its
operator.key).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nacl.signing

from gossip.records import key_id
from inference.manifest import Deployment, ManifestError, load_document, manifest_from_doc
from mesh.trust.cluster import OPERATOR_KEY_FILE
from mesh.trust.deploy import next_version, record_to_b64, sign_deletion, sign_deployment
from mesh.trust.opsign import load_signing_key, sign_request

HTTP_TIMEOUT_S = 5.0
WAIT_POLL_S = 0.2
WAIT_DEFAULT_TIMEOUT_S = 60.0
HASH_CHUNK_BYTES = 1 << 20


class OperatorError(Exception):
    """A problem the operator can fix; printed without a traceback."""


# --- HTTP ----------------------------------------------------------------------------


def base_url(node: str) -> str:
    """`--node` as a URL without a trailing slash."""
    base = node.rstrip("/")
    return base if "://" in base else f"http://{base}"


def http_json(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """(status, decoded JSON) of one request; OperatorError if the node cannot be reached."""
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Accept": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OperatorError(
            f"cannot reach a murmur node at {url} ({reason}); point --node (or MURMUR_NODE) at a running "
            "agent's API, e.g. --node http://127.0.0.1:7800"
        ) from None
    try:
        return status, json.loads(raw)
    except ValueError:
        raise OperatorError(
            f"{url} answered HTTP {status} without JSON; is --node a murmur agent's API?"
        ) from None


def ok(url: str, status: int, doc: Any, expected: int = 200) -> Any:
    if status != expected:
        message = doc.get("error", doc) if isinstance(doc, dict) else doc
        raise OperatorError(f"{url}: HTTP {status}: {message}")
    return doc


def signed_json(
    key: nacl.signing.SigningKey, method: str, base: str, path: str, doc: dict[str, Any]
) -> tuple[int, Any]:
    """Send `doc` as a signed request; (status, JSON answer)."""
    body = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    headers = sign_request(key, method, path, body, time.time())
    headers["Content-Type"] = "application/json"
    return http_json(method, base + path, body, headers)


# --- key and manifest --------------------------------------------------------------------


def resolve_key(args: argparse.Namespace) -> nacl.signing.SigningKey:
    """The operator signing key from --key, MURMUR_KEY, --cluster or MURMUR_CLUSTER."""
    path: Path | None = None
    if getattr(args, "key", None) or os.environ.get("MURMUR_KEY"):
        path = Path(args.key or os.environ["MURMUR_KEY"])
    elif getattr(args, "cluster", None) or os.environ.get("MURMUR_CLUSTER"):
        path = Path(args.cluster or os.environ["MURMUR_CLUSTER"]) / OPERATOR_KEY_FILE
    if path is None:
        raise OperatorError(
            "no operator key: pass --key FILE (the operator.key) or --cluster DIR (from murmur cluster "
            "init), or set MURMUR_KEY or MURMUR_CLUSTER"
        )
    try:
        return load_signing_key(path)
    except ValueError as exc:
        raise OperatorError(str(exc)) from None


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def read_manifest(path: Path) -> Deployment:
    """Parse a manifest file; `artifact.file` (relative to the manifest) is hashed here."""
    return read_manifest_and_artifact(path)[0]


def read_manifest_and_artifact(path: Path) -> tuple[Deployment, Path | None]:
    """The deployment, and the local artifact file it names (None if it gives sha256 and size)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatorError(f"{path}: cannot read the manifest ({exc})") from None
    file: Path | None = None
    try:
        doc = load_document(text)
        artifact = doc.get("artifact") if isinstance(doc, dict) else None
        if isinstance(artifact, dict) and "file" in artifact:
            file, doc["artifact"] = _hash_artifact(path, artifact)
        return manifest_from_doc(doc), file
    except ManifestError as exc:
        raise OperatorError(f"{path}: {exc}") from None


def _hash_artifact(manifest_path: Path, artifact: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    extra = sorted(set(artifact) - {"file"})
    if extra:
        raise ManifestError(f"artifact.{extra[0]}: give either artifact.file or sha256 and size_bytes")
    if not isinstance(artifact["file"], str):
        raise ManifestError("artifact.file: must be a path (a string)")
    file = (manifest_path.parent / artifact["file"]).resolve()
    try:
        sha256, size = _sha256_file(file)
    except OSError as exc:
        raise ManifestError(f"artifact.file: cannot read {file} ({exc.strerror or exc})") from None
    return file, {"sha256": sha256, "size_bytes": size}


def upload_artifact(key: nacl.signing.SigningKey, base: str, file: Path, sha256: str, size: int) -> bool:
    """Upload file to the node's artifact store unless it holds it; True if uploaded."""
    path = f"/v1/artifacts/{sha256}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(base + path, method="HEAD"), timeout=HTTP_TIMEOUT_S
        ):
            return False  # already there
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise OperatorError(f"{base + path}: HTTP {exc.code} when asking for the artifact") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise OperatorError(f"cannot reach a murmur node at {base} ({getattr(exc, 'reason', exc)})") from None
    headers = sign_request(key, "PUT", path, b"", time.time(), body_sha256=bytes.fromhex(sha256))
    headers.update({"Content-Length": str(size), "Content-Type": "application/octet-stream"})
    try:
        with file.open("rb") as body:
            status, doc = http_json("PUT", base + path, body, headers)  # type: ignore[arg-type]
    except OSError as exc:
        raise OperatorError(f"cannot read {file}: {exc}") from None
    ok(base + path, status, doc, expected=201)
    return True


def next_record_version(base: str, author: str) -> int:
    """The next version for a record signed by author: above its latest (GET /v1/state) and unix ms."""
    url = f"{base}/v1/state"
    state = ok(url, *http_json("GET", url))
    entry = state.get("digest", {}).get(author) if isinstance(state, dict) else None
    latest = entry.get("version") if isinstance(entry, dict) else None
    return next_version(latest if isinstance(latest, int) else None, time.time())


# --- commands ------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    deployment, artifact_file = read_manifest_and_artifact(Path(args.file))
    key = resolve_key(args)
    base = base_url(args.node)
    if artifact_file is not None:
        sha256, size = deployment.artifact_sha256, deployment.artifact_size_bytes
        uploaded = upload_artifact(key, base, artifact_file, sha256, size)
        print(
            f"artifact {artifact_file.name}: sha256 {sha256}, {size} bytes, "
            f"{'uploaded to' if uploaded else 'already held by'} {base}"
        )
    version = next_record_version(base, key_id(bytes(key.verify_key)))
    record = sign_deployment(key, deployment, version)
    doc = {"manifest": deployment.to_doc(), "record": record_to_b64(record)}
    url = f"{base}/v1/deployments"
    ok(url, *signed_json(key, "POST", base, "/v1/deployments", doc), expected=202)
    print(
        f"deployment {deployment.name}: accepted and persisted by {base} as desired record version {version}"
    )
    if args.wait:
        return wait_for(base, deployment.name, version, args.timeout)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    key = resolve_key(args)
    base = base_url(args.node)
    version = next_record_version(base, key_id(bytes(key.verify_key)))
    record = sign_deletion(key, args.name, version)
    path = f"/v1/deployments/{urllib.parse.quote(args.name, safe='')}"
    ok(base + path, *signed_json(key, "DELETE", base, path, {"record": record_to_b64(record)}), expected=202)
    print(f"deployment {args.name}: deletion accepted and persisted by {base} (version {version})")
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
    return "\n".join(lines)


def cmd_get(args: argparse.Namespace) -> int:
    base = base_url(args.node)
    url = f"{base}/v1/deployments"
    rows = ok(url, *http_json("GET", url))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_deployments(rows))
    return 0


# --- --wait ----------------------------------------------------------------------------------


def alive_apis(base: str) -> dict[str, str]:
    """API address by node id of every alive member of every region the node knows.

    OperatorError if a region does not answer: --wait must not declare success
    over a region it could not see.
    """
    url = f"{base}/v1/health"
    health = ok(url, *http_json("GET", url))
    own_region = health.get("region")
    apis: dict[str, str] = {}
    for region in sorted(health.get("regions", {})):
        query = "" if region == own_region else "?" + urllib.parse.urlencode({"region": region})
        nodes_url = f"{base}/v1/nodes{query}"
        members = ok(nodes_url, *http_json("GET", nodes_url))
        if not isinstance(members, list):
            raise OperatorError(f"{nodes_url}: not a member list")
        for m in members:
            if m.get("state") == "alive" and m.get("api"):
                apis[str(m["id"])] = str(m["api"])
    return apis


def _holds(api: str, name: str, version: int) -> bool:
    url = f"http://{api}/v1/deployments/{urllib.parse.quote(name, safe='')}"
    try:
        status, doc = http_json("GET", url)
    except OperatorError:
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
        except OperatorError:  # a region did not answer this time: never report success on it
            complete = False
        pending = sorted(node for node, api in apis.items() if not _holds(api, name, version))
        if complete and apis and not pending:
            print(f"deployment {name}: held by all {len(apis)} alive nodes after {clock() - started:.2f} s")
            return 0
        if clock() - started >= timeout_s:
            missing = ", ".join(pending) or "no node answered"
            raise OperatorError(
                f"deployment {name} version {version}: after {timeout_s:g} s, {len(apis) - len(pending)} of "
                f"{len(apis)} alive nodes hold it; still missing: {missing}. "
                "It is persisted and keeps spreading; check again with murmur get deployments"
            )
        time.sleep(WAIT_POLL_S)


# --- parser ----------------------------------------------------------------------------------


def key_flags(parser: argparse.ArgumentParser, node_help: str) -> None:
    parser.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    parser.add_argument("--key", default=argparse.SUPPRESS, help="operator.key file (env MURMUR_KEY)")
    parser.add_argument(
        "--cluster", default=argparse.SUPPRESS, help="cluster dir holding operator.key (env MURMUR_CLUSTER)"
    )


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
