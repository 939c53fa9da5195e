"""The API's placement endpoints: read a region's placement, and the operator's commands to it.

- `GET /v1/placements[?region=R]`: the applied placement of this node's region from its
  placement core (mesh/service/placements.py); another region's is asked at one of the API
  addresses its summary publishes (as GET /v1/nodes?region= is), never forwarded twice.
- `POST /v1/scheduling/{node_id}`: an operator-signed `scheduling` record (cordon, drain) or
  its tombstone (uncordon), keyed by the node's id (inference/operator_records.py).
- `POST /v1/regions/{region}/rebalance`: an operator-signed `rebalance` record of the region.

Both commands are checked here (kind, scope, author = the request's signer, key, payload,
signature), then persisted and gossiped like a deployment: 202 with the record. A node this
node does not know is accepted with a warning (it may be in a region this node has no view
of); a region it does not know is refused (404). docs/api.md describes them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

import aiohttp
from aiohttp import web

from gossip.kinds import FLEET_SCOPE, REBALANCE_KIND, SCHEDULING_KIND
from gossip.records import Record, verify_record
from inference.operator_records import (
    decode_rebalance,
    decode_scheduling,
    rebalance_problem,
    scheduling_problem,
)
from mesh.service.api import (
    CLIENT,
    FORWARD_BUDGET_S,
    FORWARD_TIMEOUT_S,
    FORWARDED_HEADER,
    SERVICE,
    NodeService,
)
from mesh.service.forward import ask_each
from mesh.service.signedbody import (
    accepted,
    error_response,
    json_object,
    read_signed,
    record_of,
    refusals,
)


class PlacementService(NodeService, Protocol):
    """The node service with its placement core (mesh.service.agent.Agent)."""

    def own_placement(self) -> dict[str, Any]: ...


def _service(request: web.Request) -> PlacementService:
    return cast(PlacementService, request.app[SERVICE])


@refusals
async def get_placements(request: web.Request) -> web.Response:
    service = _service(request)
    region = request.query.get("region", service.region)
    if region == service.region:
        return web.json_response(service.own_placement())
    if request.headers.get(FORWARDED_HEADER):
        return error_response(421, f"node {service.node_id} is in region {service.region!r}, not {region!r}")
    summaries = service.summaries()
    summary = summaries.get(region)
    if summary is None:
        known = ", ".join(sorted({service.region, *summaries}))
        return error_response(404, f"unknown region {region!r}; regions this node knows: {known}")
    body, failure = await ask_placement(request.app[CLIENT], region, summary.api_addrs)
    if body is None:
        return error_response(502, failure)
    return web.json_response(body)


async def ask_placement(
    client: aiohttp.ClientSession, region: str, api_addrs: tuple[str, ...]
) -> tuple[dict[str, Any] | None, str]:
    """(the placement one of `api_addrs` answered for `region`, "") or (None, why none did);
    within FORWARD_BUDGET_S, each address FORWARD_TIMEOUT_S, marked forwarded."""
    if not api_addrs:
        return None, f"region {region!r} publishes no API address yet; retry in a few seconds"
    body, failures = await ask_each(
        client,
        api_addrs,
        "/v1/placements",
        lambda b: b if isinstance(b, dict) and b.get("region") == region else None,
        header=FORWARDED_HEADER,
        deadline_s=asyncio.get_running_loop().time() + FORWARD_BUDGET_S,
        timeout_s=FORWARD_TIMEOUT_S,
        params={"region": region},
        refused=f"not a placement of region {region!r} (a stale summary)",
    )
    if body is not None:
        return body, ""
    return None, (
        f"region {region!r}: none of its API addresses answered ({'; '.join(failures)}); "
        "its nodes may be down or unreachable from here"
    )


def operator_record_problem(
    record: Record, *, kind: str, key: str, signer: str, public_key: bytes
) -> str | None:
    """Why `record` is not a `kind` record for `key` signed by the request's signer (None if it is).
    A `scheduling` tombstone (uncordon) has no payload; a `rebalance` cannot be deleted."""
    if record.kind != kind or record.scope != FLEET_SCOPE:
        return (
            f"record is {record.kind}/{record.key} scope {record.scope!r}; expected a {kind} record, "
            "scope fleet"
        )
    if record.author != signer:
        return f"record author {record.author} is not the request's signer {signer}; sign both with one key"
    if record.key != key:
        return f"the record is for {record.key!r}, but the request is for {key!r}"
    if record.deleted and kind == REBALANCE_KIND:
        return "a rebalance cannot be deleted; sign a new one with a higher generation"
    if not record.deleted:
        problem = (scheduling_problem if kind == SCHEDULING_KIND else rebalance_problem)(record.payload)
        if problem is not None:
            return problem
        named = (
            decode_scheduling(record.payload).node_id
            if kind == SCHEDULING_KIND
            else decode_rebalance(record.payload).region
        )
        if named != key:
            return f"the payload names {named!r}, but the record's key is {key!r}"
    if not verify_record(record, public_key):
        return "record signature does not verify with the signer's operator key"
    return None


async def _submit_operator(request: web.Request, kind: str, key: str) -> tuple[Record, str, NodeService]:
    body, signer = await read_signed(request)
    service = request.app[SERVICE]
    record = record_of(json_object(body, '{"record": "<base64 signed record>"}'))
    public_key = service.operator_key(signer)
    assert public_key is not None  # the verifier accepted the signer
    problem = operator_record_problem(record, kind=kind, key=key, signer=signer, public_key=public_key)
    return record, problem or "", service


@refusals
async def post_scheduling(request: web.Request) -> web.Response:
    node_id = request.match_info["node_id"]
    record, problem, service = await _submit_operator(request, SCHEDULING_KIND, node_id)
    warnings: list[str] = []
    if not problem and service.member(node_id) is None:
        warnings.append(
            f"node {node_id} is not a member this node knows (its region or the fleet pool); the command "
            "is kept and applies where that node is a member"
        )
    return accepted(service, record, problem or None, {"warnings": warnings})


@refusals
async def post_rebalance(request: web.Request) -> web.Response:
    region = request.match_info["region"]
    service = request.app[SERVICE]
    if region != service.region and region not in service.summaries():
        known = ", ".join(sorted({service.region, *service.summaries()}))
        return error_response(404, f"unknown region {region!r}; regions this node knows: {known}")
    record, problem, service = await _submit_operator(request, REBALANCE_KIND, region)
    return accepted(service, record, problem or None)


def add_routes(app: web.Application) -> None:
    """Add the placement endpoints to the API application (launch.py)."""
    app.router.add_get("/v1/placements", get_placements)
    app.router.add_post("/v1/scheduling/{node_id}", post_scheduling)
    app.router.add_post("/v1/regions/{region}/rebalance", post_rebalance)
