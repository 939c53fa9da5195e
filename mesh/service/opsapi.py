"""The API's fleet-at-a-glance reads for operators: the fleet's status, one node in full, and a
dry run of a manifest. docs/api.md describes each answer.

- `GET /v1/status`: per region its leader and term, its members by state and its deployments'
  ready/desired counts, with totals. This node's region is read here; every other region is
  asked at one of the API addresses its summary publishes (all at once, within the forward
  budget), and one that does not answer is listed with what its summary says and why.
- `GET /v1/nodes/{id}/status[?region=R]`: a member of this node's region in full (inventory,
  state as seen here, cordoned/draining, its replicas); a node of another region (named by
  `region`, or a gateway this node sees in the fleet pool) is asked in its region.
- `POST /v1/plan`: `{"manifest": ...}`, unsigned since nothing changes: each region runs the
  placement function on its own live inputs with the manifest in force (inference/plan.py);
  this node's region here, the others at one of their nodes (the same request, forwarded).

A forwarded request (FORWARDED_HEADER) is answered for this node's region alone and never
forwarded again.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from aiohttp import web

from gossip.kinds import SCHEDULING_KIND
from inference.manifest import Deployment, ManifestError, load_document, manifest_from_doc
from inference.operator_records import node_statuses
from inference.resources import NodeStatus
from mesh.service.api import (
    CLIENT,
    FORWARD_BUDGET_S,
    FORWARD_TIMEOUT_S,
    FORWARDED_HEADER,
    MANIFEST_PARSE_BUDGET_S,
    SERVICE,
    NodeService,
    inventory_json,
    manifest_warnings,
    member_json,
)
from mesh.service.forward import ask_each
from mesh.service.signedbody import (
    REQUEST_BODY_MAX_BYTES,
    SubmitRefused,
    error_response,
    json_object,
    manifest_refused,
    refusals,
)

STATES = ("alive", "suspect", "dead", "left")
PLAN_SHAPE = '{"manifest": "<YAML or JSON text, or an object>"}'
T = TypeVar("T")


class OpsService(NodeService, Protocol):
    """The node service with its placement core (mesh.service.agent.Agent)."""

    def own_placement(self) -> dict[str, Any]: ...
    def plan(self, deployment: Deployment) -> dict[str, Any]: ...


def _service(request: web.Request) -> OpsService:
    return cast(OpsService, request.app[SERVICE])


def _local(request: web.Request) -> bool:
    return bool(request.headers.get(FORWARDED_HEADER) or request.query.get("local"))


async def _each_region(
    request: web.Request, ask: Callable[[str, tuple[str, ...], float], Awaitable[T | str]]
) -> list[tuple[str, int, T | str]]:
    """(region, alive per its summary, its answer or why none) for every other region, asked at once."""
    service = _service(request)
    others = [(name, s) for name, s in sorted(service.summaries().items()) if name != service.region]
    deadline_s = asyncio.get_running_loop().time() + FORWARD_BUDGET_S
    answers = await asyncio.gather(*(ask(name, s.api_addrs, deadline_s) for name, s in others))
    return [(name, s.alive, answer) for (name, s), answer in zip(others, answers, strict=True)]


async def _forward(
    request: web.Request,
    region: str,
    api_addrs: tuple[str, ...],
    deadline_s: float,
    path: str,
    *,
    data: bytes | None = None,
    params: dict[str, str] | None = None,
) -> dict[str, Any] | str:
    """The one region row a node of `region` answers at `path` (`{"regions": [row]}`), or why none did."""
    if not api_addrs:
        return "the region publishes no API address yet; retry in a few seconds"

    def own_row(body: Any) -> dict[str, Any] | None:
        rows = body.get("regions") if isinstance(body, dict) else None
        row = rows[0] if isinstance(rows, list) and len(rows) == 1 and isinstance(rows[0], dict) else None
        return row if row is not None and row.get("region") == region else None

    row, failures = await ask_each(
        request.app[CLIENT],
        api_addrs,
        path,
        own_row,
        header=FORWARDED_HEADER,
        deadline_s=deadline_s,
        timeout_s=FORWARD_TIMEOUT_S,
        params=params,
        refused=f"not an answer of region {region!r} (a stale summary)",
        method="POST" if data is not None else "GET",
        data=data,
    )
    if row is not None:
        return row
    return "none of its API addresses answered (" + "; ".join(failures) + ")"


# --- GET /v1/status --------------------------------------------------------------------------


def _own_status(service: OpsService) -> dict[str, Any]:
    states = collections.Counter(str(m.state) for m in service.members("region"))
    row: dict[str, Any] = {"region": service.region, "node": service.node_id, "leader": None, "term": None}
    try:
        election = service.own_region()
        row.update(leader=election.get("leader"), term=election.get("term"))
    except SubmitRefused as exc:  # a node without an election core: say so, answer the rest
        row["error"] = str(exc)
    row["nodes"] = {state: states.get(state, 0) for state in STATES}
    try:
        deployments = service.own_placement().get("deployments", [])
    except SubmitRefused as exc:
        deployments = []
        row["error"] = str(exc)
    row["deployments"] = deployments
    row["ready"] = sum(int(d.get("ready", 0)) for d in deployments)
    row["desired"] = sum(int(d.get("desired", 0)) for d in deployments)
    return row


def _unanswered_status(region: str, alive: int, why: str) -> dict[str, Any]:
    return {
        "region": region,
        "node": None,
        "leader": None,
        "term": None,
        "nodes": {"alive": alive, "suspect": None, "dead": None, "left": None},
        "deployments": [],
        "ready": None,
        "desired": None,
        "error": why,
    }


def _count(value: Any) -> int:
    """A count from a row another node answered: what is not a count adds nothing."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over the region rows; rows come from other nodes too, so nothing in them is trusted
    to have its shape (a malformed field counts as 0, never a 500)."""
    answered = [r for r in rows if r.get("node")]  # a region that did not answer has no node
    per_deployment: dict[str, list[int]] = {}
    for r in answered:
        deployments = r.get("deployments")
        for d in deployments if isinstance(deployments, list) else []:
            if not isinstance(d, dict):
                continue
            counts = per_deployment.setdefault(str(d.get("deployment")), [0, 0])
            counts[0] += _count(d.get("ready"))
            counts[1] += _count(d.get("desired"))
    nodes: list[dict[str, Any]] = [n if isinstance(n := r.get("nodes"), dict) else {} for r in rows]
    return {
        "regions": len(rows),
        "regions_unanswered": len(rows) - len(answered),
        "nodes": {s: sum(_count(n.get(s)) for n in nodes) for s in STATES},
        "ready": sum(c[0] for c in per_deployment.values()),
        "desired": sum(c[1] for c in per_deployment.values()),
        "deployments": [
            {"deployment": name, "ready": c[0], "desired": c[1]} for name, c in sorted(per_deployment.items())
        ],
    }


@refusals
async def get_status(request: web.Request) -> web.Response:
    service = _service(request)
    own = _own_status(service)
    if _local(request):
        return web.json_response({"node": service.node_id, "region": service.region, "regions": [own]})

    async def ask(name: str, addrs: tuple[str, ...], deadline_s: float) -> dict[str, Any] | str:
        return await _forward(request, name, addrs, deadline_s, "/v1/status")

    rows = [own]
    for name, alive, answer in await _each_region(request, ask):
        rows.append(answer if isinstance(answer, dict) else _unanswered_status(name, alive, answer))
    doc = {"node": service.node_id, "region": service.region, "regions": rows, "totals": _totals(rows)}
    return web.json_response(doc)


# --- GET /v1/nodes/{id}/status ---------------------------------------------------------------


def _node_status(app: web.Application, service: OpsService, member: Any) -> dict[str, Any]:
    inventory, problem = inventory_json(app, member.node_id)
    status = node_statuses(service.records(SCHEDULING_KIND)).get(member.node_id, NodeStatus.SCHEDULABLE)
    replicas = service.own_placement().get("replicas", [])
    row = {
        **member_json(member),
        "seen_by": service.node_id,
        "scheduling": str(status),
        "inventory": inventory,
        "replicas": [
            {k: r.get(k) for k in ("deployment", "slot", "state", "provisional")}
            for r in replicas
            if isinstance(r, dict) and r.get("node") == member.node_id
        ],
    }
    if problem is not None:
        row["inventory_error"] = problem
    return row


@refusals
async def get_node_status(request: web.Request) -> web.Response:
    service = _service(request)
    node_id = request.match_info["node_id"]
    own = next((m for m in service.members("region") if m.node_id == node_id), None)
    if own is not None:
        return web.json_response({"regions": [_node_status(request.app, service, own)]})
    region = request.query.get("region")
    if region is None:
        fleet = service.member(node_id)  # a gateway of another region, seen in the fleet pool
        region = fleet.region if fleet is not None and fleet.region != service.region else None
    if region is None or region == service.region or _local(request):
        where = f"region {region!r}" if region else "this node's region or fleet view"
        return error_response(
            404,
            f"node {node_id} is not a member of {where} as node {service.node_id} sees it; "
            "list members with murmur nodes --region R, or give ?region=R",
        )
    summary = service.summaries().get(region)
    if summary is None:
        known = ", ".join(sorted({service.region, *service.summaries()}))
        return error_response(404, f"unknown region {region!r}; regions this node knows: {known}")
    deadline_s = asyncio.get_running_loop().time() + FORWARD_BUDGET_S
    answer = await _forward(request, region, summary.api_addrs, deadline_s, f"/v1/nodes/{node_id}/status")
    if isinstance(answer, str):
        return error_response(502, f"region {region!r}: {answer}; its nodes may be down or unreachable")
    return web.json_response({"regions": [answer]})


# --- POST /v1/plan ---------------------------------------------------------------------------


def _plan_request(body: bytes) -> Deployment:
    """The deployment a plan's body describes (run in a thread: a manifest is parsed off the loop)."""
    doc = json_object(body, PLAN_SHAPE)
    if "manifest" not in doc:
        raise SubmitRefused(400, f"body must be a JSON object: {PLAN_SHAPE}")
    manifest = doc["manifest"]
    return manifest_from_doc(load_document(manifest) if isinstance(manifest, str) else manifest)


def _unanswered_plan(region: str, deployment: Deployment, why: str) -> dict[str, Any]:
    return {"region": region, "node": None, "wanted": deployment.replicas.for_region(region), "error": why}


@refusals
async def post_plan(request: web.Request) -> web.Response:
    service = _service(request)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise SubmitRefused(413, f"request body is over {REQUEST_BODY_MAX_BYTES} bytes") from None
    try:
        deployment = await asyncio.wait_for(asyncio.to_thread(_plan_request, body), MANIFEST_PARSE_BUDGET_S)
    except ManifestError as exc:
        return manifest_refused(str(exc))
    except TimeoutError:
        return manifest_refused(
            f"manifest: too complex: not parsed within {MANIFEST_PARSE_BUDGET_S:g} s; send a plain manifest"
        )
    own = service.plan(deployment)
    if _local(request):
        return web.json_response({"node": service.node_id, "region": service.region, "regions": [own]})

    async def ask(name: str, addrs: tuple[str, ...], deadline_s: float) -> dict[str, Any] | str:
        return await _forward(request, name, addrs, deadline_s, "/v1/plan", data=body)

    rows = [own]
    for name, _alive, answer in await _each_region(request, ask):
        rows.append(answer if isinstance(answer, dict) else _unanswered_plan(name, deployment, answer))
    # A region the manifest names that this node has never heard of has no node to plan on.
    known = {r["region"] for r in rows}
    for name, count in deployment.replicas.by_region:
        if name not in known and count > 0:
            rows.append(_unanswered_plan(name, deployment, "no node of this region is known to this node"))
    fits = all(r.get("fits", False) if "error" not in r else r.get("wanted", 0) == 0 for r in rows)
    return web.json_response(
        {
            "deployment": deployment.name,
            "node": service.node_id,
            "manifest": deployment.to_doc(),
            "fits": fits,
            "warnings": manifest_warnings(request.app, deployment),
            "regions": rows,
        }
    )


def add_routes(app: web.Application) -> None:
    """Add the operator's fleet reads and the plan to the API application (launch.py)."""
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/nodes/{node_id}/status", get_node_status)
    app.router.add_post("/v1/plan", post_plan)
