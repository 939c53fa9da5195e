"""The node's HTTP API (aiohttp): membership reads, health, deployments, state, debug hooks.

Mutating requests (POST/DELETE /v1/deployments) are signed by an operator key
(mesh/trust/opsign.py) and carry the operator-signed record (mesh/trust/deploy.py); the node
verifies both, persists the record (SQLite, synced), publishes it to gossip and
only then answers 202. docs/api.md lists every endpoint and error.

Handlers ask the node service (mesh.service.agent.Agent) and never reach into a core.
A read about another region is forwarded to one of the API addresses that
region publishes in its summary; the forwarded request carries a header so it
is answered where it lands and never forwarded again.

Debug hooks (only with `murmur agent --debug-hooks`): `POST /v1/debug/broadcast`
sends a fleet-wide broadcast and `GET /v1/debug/broadcasts` lists the ones this
node received. They exist so tests can watch a broadcast cross regions; the next
milestone replaces them with operator-signed desired-state records.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from gossip.kinds import DESIRED_KIND, INVENTORY_KIND, NETKEY_KIND, REVOCATION_KIND, TRUST_KIND
from gossip.records import Record
from inference.deploywarn import Offer, deploy_warnings
from inference.inventory import decode, payload_problem
from inference.manifest import Deployment, ManifestError, desired_key, load_document, manifest_from_doc
from mesh.service.artifacts import ArtifactError, ArtifactStore
from mesh.service.artifactserve import serve_artifact
from mesh.service.forward import ask_each
from mesh.service.lastknown import LastKnown
from mesh.service.regions import ask_region, reset_problem, unanswered
from mesh.service.signedbody import (
    REQUEST_BODY_MAX_BYTES,
    VERIFIER,
    SubmitRefused,
    accepted,
    error_response,
    json_object,
    manifest_refused,
    read_signed,
    record_json,
    record_of,
    refusals,
)
from mesh.trust.deploy import check_record, deployment_json
from mesh.trust.opsign import RequestVerifier
from mesh.trust.records import check_trust_record

log = logging.getLogger(__name__)

# A deployment is parsed off the event loop within the budget: within the body's limits
# (mesh/service/signedbody.py) the largest manifest parses in well under a second, so
# running out means something is wrong and the answer is a 400.
MANIFEST_PARSE_BUDGET_S = 2.0
INVALID_LOGGED_MAX = 1024  # stored records already logged as unreadable (each is logged once)
FORWARD_TIMEOUT_S = 2.0
# All of a region's addresses together: the CLI waits 5 s, and a region whose every
# address times out must still get a (last-known) answer to it in time.
FORWARD_BUDGET_S = 3.0
FORWARDED_HEADER = "X-Murmur-Forwarded"
LAST_KNOWN_HEADER = "X-Murmur-Last-Known"
POOLS = ("region", "fleet")


class MemberLike(Protocol):
    """One member in this node's view (gossip.node.MemberView)."""

    @property
    def node_id(self) -> str: ...
    @property
    def addr(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def gateway(self) -> bool: ...
    @property
    def api_addr(self) -> str: ...


class SummaryLike(Protocol):
    """A region's summary (gossip.node.RegionSummary)."""

    @property
    def region(self) -> str: ...
    @property
    def alive(self) -> int: ...
    @property
    def api_addrs(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class ReceivedBroadcast:
    """A fleet-wide broadcast this node received (debug hook)."""

    origin_id: str
    seq: int
    payload: bytes
    received_unix: float


class NodeService(Protocol):
    """What the API asks of the node."""

    @property
    def node_id(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def debug_hooks(self) -> bool: ...
    def members(self, pool: str) -> Sequence[MemberLike]: ...
    def summaries(self) -> Mapping[str, SummaryLike]: ...
    def health(self) -> dict[str, Any]: ...
    def broadcast(self, payload: bytes) -> tuple[str, int]: ...
    def received_broadcasts(self) -> Sequence[ReceivedBroadcast]: ...
    def operator_key(self, author: str) -> bytes | None: ...
    def record(self, kind: str, key: str) -> Record | None: ...
    def records(self, kind: str) -> Sequence[Record]: ...
    def member(self, node_id: str) -> MemberLike | None: ...
    def state_summary(self) -> dict[str, Any]: ...
    def submit_record(self, record: Record) -> bool: ...
    def is_operator(self, author: str) -> bool: ...
    def is_root_operator(self, author: str) -> bool: ...
    def operators(self) -> list[dict[str, Any]]: ...
    def revocations(self) -> list[dict[str, Any]]: ...
    def netkey_status(self) -> dict[str, Any]: ...
    def rotate_network_key(self, record: Record, sealed_key: bytes | None) -> bool: ...
    def own_region(self) -> dict[str, Any]: ...
    @property
    def artifacts(self) -> ArtifactStore: ...


SERVICE = web.AppKey("service", NodeService)
CLIENT = web.AppKey("client", aiohttp.ClientSession)
LAST_KNOWN = web.AppKey("last_known", LastKnown)
INVALID_LOGGED = web.AppKey("invalid_logged", dict[tuple[str, str, int], None])


def _log_invalid(app: web.Application, record: Record, problem: str) -> None:
    """Log a stored record a read path cannot show, once per (kind, key, version)."""
    logged = app[INVALID_LOGGED]
    slot = (record.kind, record.key, record.version)
    if slot in logged:
        return
    if len(logged) >= INVALID_LOGGED_MAX:
        del logged[next(iter(logged))]
    logged[slot] = None
    log.warning(
        "stored %s record %s version %d by %s is not valid (%s); it is left out of reads",
        record.kind,
        record.key,
        record.version,
        record.author,
        problem,
    )


def member_json(member: MemberLike) -> dict[str, Any]:
    """The public JSON shape of one member (`murmur nodes --json` prints a list of these)."""
    return {
        "id": member.node_id,
        "addr": member.addr,
        "region": member.region,
        "state": str(member.state),
        "incarnation": member.incarnation,
        "gateway": member.gateway,
        "api": member.api_addr,
    }


# What `murmur nodes` and the dashboard show of each member (load_1m: the dashboard's load column).
INVENTORY_SUMMARY_FIELDS = ("cpu_count", "load_1m", "memory_available_bytes", "accelerators", "labels")


def inventory_json(app: web.Application, node_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The node's latest inventory payload held here with its `version` (None if none), and why a
    held one is not shown (None if it is): a payload that is not an inventory is skipped, never
    a 500."""
    record = app[SERVICE].record(INVENTORY_KIND, node_id)
    if record is None or record.deleted:
        return None, None
    doc = decode(record.payload)
    if doc is None:
        problem = payload_problem(record.payload) or "not an inventory"
        _log_invalid(app, record, problem)
        return None, f"the inventory record held here (version {record.version}) is not valid: {problem}"
    return {**doc, "version": record.version}, None


def _member_row(app: web.Application, member: MemberLike, *, summary: bool) -> dict[str, Any]:
    """A member with its inventory (`murmur nodes` shows the summary fields), and
    `inventory_error` when the record held here cannot be shown."""
    doc, problem = inventory_json(app, member.node_id)
    if summary and doc is not None:
        doc = {k: doc.get(k) for k in INVENTORY_SUMMARY_FIELDS}
    row = {**member_json(member), "inventory": doc}
    if problem is not None:
        row["inventory_error"] = problem
    return row


async def get_nodes(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    region = request.query.get("region", service.region)
    pool = request.query.get("pool", "region")
    if pool not in POOLS:
        return error_response(400, f"unknown pool {pool!r}; use pool=region or pool=fleet")
    if region == service.region or pool == "fleet":
        # Inventory is region-scoped: another region's is only known there (forwarded reads).
        return web.json_response([_member_row(request.app, m, summary=True) for m in service.members(pool)])
    if request.headers.get(FORWARDED_HEADER):
        # Forwarded here by a stale summary: answer, but never forward twice.
        return error_response(421, f"node {service.node_id} is in region {service.region!r}, not {region!r}")
    summaries = service.summaries()
    summary = summaries.get(region)
    last_known = request.app[LAST_KNOWN]
    if summary is None and last_known.get(region) is None:
        known = ", ".join(sorted(summaries)) or "none yet"
        return error_response(404, f"unknown region {region!r}; regions this node knows: {known}")
    api_addrs = summary.api_addrs if summary is not None else ()
    body, failure = await _forward(request.app[CLIENT], region, api_addrs)
    if body is not None:
        last_known.remember(region, body, time.time())
        return web.json_response(body)
    answer = last_known.get(region)
    if answer is None:
        return error_response(502, f"{failure}; this node has not heard its member list since it started")
    # An offline site is the normal case: serve what it last said, marked as such.
    return web.json_response(answer.marked(), headers={LAST_KNOWN_HEADER: f"{answer.heard_unix:.3f}"})


async def _forward(
    client: aiohttp.ClientSession, region: str, api_addrs: Sequence[str]
) -> tuple[list[Any] | None, str]:
    """(the member list one of `api_addrs` answered, "") or (None, why none did)."""
    if not api_addrs:
        return None, f"region {region!r} publishes no API address yet; retry in a few seconds"
    body, failures = await ask_each(
        client,
        api_addrs,
        "/v1/nodes",
        lambda b: b if isinstance(b, list) else None,
        header=FORWARDED_HEADER,
        deadline_s=asyncio.get_running_loop().time() + FORWARD_BUDGET_S,
        timeout_s=FORWARD_TIMEOUT_S,
        params={"region": region},
        refused="not a member list",
    )
    if body is not None:
        return body, ""
    log.info("region %s: no API address answered (%s)", region, "; ".join(failures))
    return None, (
        f"region {region!r}: none of its API addresses answered ({'; '.join(failures)}); "
        "its nodes may be down or unreachable from here"
    )


async def get_health(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].health())


async def post_debug_broadcast(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        doc = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error_response(400, 'body must be JSON: {"payload": "text"}')
    payload = doc.get("payload") if isinstance(doc, dict) else None
    if not isinstance(payload, str):
        return error_response(400, 'body must be JSON: {"payload": "text"}')
    try:
        origin_id, seq = service.broadcast(payload.encode("utf-8"))
    except ValueError as exc:
        return error_response(413, f"broadcast refused: {exc}")
    return web.json_response({"origin_id": origin_id, "seq": seq}, status=202)


async def get_debug_broadcasts(request: web.Request) -> web.Response:
    received = request.app[SERVICE].received_broadcasts()
    return web.json_response(
        [
            {
                "origin_id": item.origin_id,
                "seq": item.seq,
                "payload": item.payload.decode("utf-8", errors="replace"),
                "payload_b64": base64.b64encode(item.payload).decode("ascii"),
                "received_unix": item.received_unix,
            }
            for item in received
        ]
    )


# --- deployments and state ---------------------------------------------------------------


async def _submit(
    request: web.Request, name: str, deployment: Deployment | None, doc: dict[str, Any], signer: str
) -> web.Response:
    service = request.app[SERVICE]
    record = record_of(doc)
    public_key = service.operator_key(signer)
    assert public_key is not None  # the verifier accepted the signer
    problem = check_record(record, signer=signer, public_key=public_key, name=name, deployment=deployment)
    extra = None if deployment is None else {"warnings": manifest_warnings(request.app, deployment)}
    return accepted(service, record, problem, extra)


def manifest_warnings(app: web.Application, deployment: Deployment) -> list[str]:
    """What `deployment` asks that no live node offers, as far as this node knows: the regions
    with live nodes (its own and the summaries'), and its own region's inventories."""
    service = app[SERVICE]
    live = [service.region, *(name for name, s in service.summaries().items() if s.alive > 0)]
    own: list[Offer] = []
    for member in service.members("region"):
        if str(member.state) != "alive":
            continue
        doc, _problem = inventory_json(app, member.node_id)
        if doc is None:
            continue
        accelerators = doc.get("accelerators")
        labels = doc.get("labels")
        own.append(
            Offer(
                accelerators=tuple(str(a) for a in accelerators) if isinstance(accelerators, list) else (),
                labels=tuple(sorted((str(k), str(v)) for k, v in labels.items()))
                if isinstance(labels, dict)
                else (),
            )
        )
    return deploy_warnings(deployment, live, {service.region: own} if own else {})


def _deploy_request(body: bytes) -> tuple[dict[str, Any], Deployment]:
    """The body of POST /v1/deployments and the deployment its manifest describes (run in a thread)."""
    doc = json_object(body, '{"manifest": "<YAML or JSON text>", "record": "<base64 signed record>"}')
    manifest = doc.get("manifest")
    return doc, manifest_from_doc(load_document(manifest) if isinstance(manifest, str) else manifest)


@refusals
async def post_deployment(request: web.Request) -> web.Response:
    body, signer = await read_signed(request)
    # Off the event loop, so membership keeps answering probes while a manifest is parsed;
    # the loader's limits bound the work, the budget is what a bug in them would cost.
    try:
        doc, deployment = await asyncio.wait_for(
            asyncio.to_thread(_deploy_request, body), MANIFEST_PARSE_BUDGET_S
        )
    except ManifestError as exc:
        return manifest_refused(str(exc))
    except TimeoutError:
        return manifest_refused(
            f"manifest: too complex: not parsed within {MANIFEST_PARSE_BUDGET_S:g} s; send a plain manifest "
            "(no anchors, a few levels deep)"
        )
    return await _submit(request, deployment.name, deployment, doc, signer)


@refusals
async def delete_deployment(request: web.Request) -> web.Response:
    body, signer = await read_signed(request)
    name = request.match_info["name"]
    held = request.app[SERVICE].record(DESIRED_KIND, desired_key(name))
    if held is None or held.deleted:
        return error_response(
            404, f"no deployment named {name!r} on this node; list them with murmur get deployments"
        )
    doc = json_object(body, '{"record": "<base64 signed tombstone>"}')
    return await _submit(request, name, None, doc, signer)


async def _submit_trust(request: web.Request, kind: str) -> web.Response:
    """A revocation or an operator grant: signed by a root operator, well formed, then submitted."""
    body, signer = await read_signed(request)
    service = request.app[SERVICE]
    record = record_of(json_object(body, '{"record": "<base64 signed record>"}'))
    if not service.is_root_operator(signer):
        raise SubmitRefused(
            403,
            f"{kind} records need a root operator key (the operator.key of murmur cluster init); "
            f"{signer} is a granted operator key",
        )
    public_key = service.operator_key(signer)
    assert public_key is not None  # the verifier accepted the signer
    problem = check_trust_record(record, kind=kind, signer=signer, public_key=public_key)
    if problem is None and kind == REVOCATION_KIND and service.is_operator(record.key):
        problem = f"{record.key} is an operator key, not a node; remove it with murmur operator remove"
    return accepted(service, record, problem)


@refusals
async def post_revocation(request: web.Request) -> web.Response:
    return await _submit_trust(request, REVOCATION_KIND)


@refusals
async def post_operator(request: web.Request) -> web.Response:
    return await _submit_trust(request, TRUST_KIND)


SEALED_KEY_MAX_BYTES = 128  # a SealedBox of a 32-byte key is 80 bytes


@refusals
async def post_netkey(request: web.Request) -> web.Response:
    """A change of the network keys: a root-operator `netkey` record (a rotation, or a staged install,
    use or remove), with the key it adds sealed to this node (rotation and install)."""
    body, signer = await read_signed(request)
    service = request.app[SERVICE]
    shape = (
        '{"record": "<base64 signed netkey record>", "sealed_key": "<base64 key sealed to this node>"}'
        " (sealed_key: rotate and install only)"
    )
    doc = json_object(body, shape)
    record = record_of(doc)
    if not service.is_root_operator(signer):
        raise SubmitRefused(
            403,
            "rotating the network key needs a root operator key (the operator.key of murmur cluster init); "
            f"{signer} is a granted operator key",
        )
    public_key = service.operator_key(signer)
    assert public_key is not None  # the verifier accepted the signer
    problem = check_trust_record(record, kind=NETKEY_KIND, signer=signer, public_key=public_key)
    if problem is not None:
        raise SubmitRefused(400, problem)
    # A rotation and an install bring a key; use and remove only name keys members hold.
    sealed: bytes | None = None
    if doc.get("sealed_key") is not None:
        try:
            sealed = base64.b64decode(str(doc.get("sealed_key", "")), validate=True)
        except (ValueError, TypeError):
            sealed = b""
        if not 0 < len(sealed) <= SEALED_KEY_MAX_BYTES:
            raise SubmitRefused(400, f"sealed_key must be base64 of the key sealed to this node; {shape}")
    new = service.rotate_network_key(record, sealed)
    status = service.netkey_status()
    return web.json_response(
        {"record": record_json(record), "new": new, "epoch": status["epoch"], "key_id": status["key_id"]},
        status=202,
    )


@refusals
async def get_netkey(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].netkey_status())


async def get_revocations(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].revocations())


async def get_operators(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].operators())


# --- artifacts -------------------------------------------------------------------------------

ARTIFACT_CHUNK_BYTES = 1024 * 1024
_ARTIFACT_STATUS = {"bad_id": 400, "too_large": 413, "no_space": 507}


@refusals
async def put_artifact(request: web.Request) -> web.Response:
    """Store an artifact, signed over its sha256 and streamed to disk, kept only if it hashes right."""
    sha256 = request.match_info["sha256"]
    store = request.app[SERVICE].artifacts
    size = request.content_length
    try:
        store.check_id(sha256)
    except ArtifactError as exc:
        raise SubmitRefused(400, str(exc)) from None
    if size is None:
        raise SubmitRefused(411, "send Content-Length: the artifact's size in bytes")
    # The signature covers the artifact's hash (the path's): checked before a byte is read.
    request.app[VERIFIER].verify(
        request.method, request.raw_path, request.headers, b"", time.time(), body_sha256=bytes.fromhex(sha256)
    )
    if store.size(sha256) == size:
        return web.json_response({"sha256": sha256, "size_bytes": size, "new": False})
    try:
        writer = store.begin(sha256, size)
    except ArtifactError as exc:
        raise SubmitRefused(_ARTIFACT_STATUS.get(exc.reason, 400), f"artifact refused: {exc}") from None
    try:
        async for chunk in request.content.iter_chunked(ARTIFACT_CHUNK_BYTES):
            writer.write(chunk)
        await asyncio.to_thread(writer.commit)
    except ArtifactError as exc:
        raise SubmitRefused(400, f"artifact refused: {exc}") from None
    except BaseException:
        writer.abort()  # a dropped connection: nothing half-written stays
        raise
    log.info("artifact %s stored (%d bytes)", sha256, size)
    return web.json_response({"sha256": sha256, "size_bytes": size, "new": True}, status=201)


async def get_artifact(request: web.Request) -> web.StreamResponse:
    sha256 = request.match_info["sha256"]
    store = request.app[SERVICE].artifacts
    try:
        path = store.path(sha256)
    except ArtifactError as exc:
        return error_response(400, str(exc))
    if not path.exists():
        return error_response(404, f"artifact {sha256} is not on this node")
    return await serve_artifact(request, path)


def _deployment_row(app: web.Application, record: Record) -> dict[str, Any]:
    """A deployment as the API shows it; a stored payload that is not a manifest is shown as such
    (`manifest` null, `error` why) and logged once, never a 500."""
    row = deployment_json(record)
    if "error" in row:
        _log_invalid(app, record, row["error"])
    return row


async def get_deployments(request: web.Request) -> web.Response:
    records = [r for r in request.app[SERVICE].records(DESIRED_KIND) if r.key.startswith("deployment/")]
    return web.json_response([_deployment_row(request.app, r) for r in sorted(records, key=lambda r: r.key)])


async def get_deployment(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    record = request.app[SERVICE].record(DESIRED_KIND, desired_key(name))
    if record is None:
        return error_response(404, f"no deployment named {name!r} on this node")
    if record.deleted:
        return error_response(
            404, f"deployment {name!r} was deleted (version {record.version} by {record.author})"
        )
    return web.json_response(_deployment_row(request.app, record))


async def get_state(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].state_summary())


async def get_node(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    node_id = request.match_info["node_id"]
    member = service.member(node_id)
    if member is None:
        return error_response(
            404,
            f"node {node_id} is not in this node's region or fleet view; ask a node of its region, "
            "or list members with murmur nodes --region R",
        )
    return web.json_response(_member_row(request.app, member, summary=False))


@refusals
async def get_regions(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    own = service.own_region()
    if request.headers.get(FORWARDED_HEADER) or request.query.get("local"):
        return web.json_response([own])
    others = [(name, s) for name, s in sorted(service.summaries().items()) if name != service.region]
    deadline_s = asyncio.get_running_loop().time() + FORWARD_BUDGET_S
    client = request.app[CLIENT]
    answers = await asyncio.gather(
        *(
            ask_region(
                client, name, s.api_addrs, deadline_s, header=FORWARDED_HEADER, timeout_s=FORWARD_TIMEOUT_S
            )
            for name, s in others
        )
    )
    rows = [own]
    for (name, summary), answer in zip(others, answers, strict=True):
        rows.append(answer if isinstance(answer, dict) else unanswered(name, summary.alive, answer))
    return web.json_response(rows)


@refusals
async def post_reset_voters(request: web.Request) -> web.Response:
    body, signer = await read_signed(request)
    service = request.app[SERVICE]
    record = record_of(json_object(body, '{"record": "<base64 signed voters-reset record>"}'))
    problem = reset_problem(record, region=request.match_info["region"], signer=signer)
    return accepted(service, record, problem)


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        app[CLIENT] = client
        yield


def create_app(service: NodeService) -> web.Application:
    """The API application for `service`; embed it with AppRunner and TCPSite."""
    app = web.Application(client_max_size=REQUEST_BODY_MAX_BYTES)
    app[SERVICE] = service
    app[VERIFIER] = RequestVerifier(service.operator_key)
    app[LAST_KNOWN] = LastKnown()
    app[INVALID_LOGGED] = {}
    app.cleanup_ctx.append(_client_ctx)
    app.router.add_get("/v1/nodes", get_nodes)
    app.router.add_get("/v1/nodes/{node_id}", get_node)
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/state", get_state)
    app.router.add_get("/v1/deployments", get_deployments)
    app.router.add_post("/v1/deployments", post_deployment)
    app.router.add_get("/v1/deployments/{name}", get_deployment)
    app.router.add_delete("/v1/deployments/{name}", delete_deployment)
    app.router.add_put("/v1/artifacts/{sha256}", put_artifact)
    app.router.add_get("/v1/artifacts/{sha256}", get_artifact)
    app.router.add_get("/v1/revocations", get_revocations)
    app.router.add_post("/v1/revocations", post_revocation)
    app.router.add_get("/v1/operators", get_operators)
    app.router.add_post("/v1/operators", post_operator)
    app.router.add_get("/v1/netkey", get_netkey)
    app.router.add_post("/v1/netkey", post_netkey)
    app.router.add_get("/v1/regions", get_regions)
    app.router.add_post("/v1/regions/{region}/reset-voters", post_reset_voters)
    if service.debug_hooks:
        app.router.add_post("/v1/debug/broadcast", post_debug_broadcast)
        app.router.add_get("/v1/debug/broadcasts", get_debug_broadcasts)
    return app
