"""GET /v1/status, GET /v1/nodes/{id}/status and POST /v1/plan against a real Agent hosting an
election and a placement core (no leader: nothing is placed until a test gives it nodes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gossip.kinds import FLEET_SCOPE, SCHEDULING_KIND
from gossip.records import sign_record
from inference.operator_records import Scheduling, encode_scheduling
from inference.resources import NodeStatus
from mesh.service.agent import Agent
from mesh.service.api import create_app
from mesh.service.observeapi import add_routes as add_observability_routes
from mesh.service.opsapi import add_routes as add_ops_routes
from mesh.service.placementapi import add_routes as add_placement_routes
from mesh.trust.deploy import record_to_b64
from tests.inference.placing import node
from tests.mesh.test_deploy_api import MANIFEST, OPERATOR, Client, deploy_doc, make_agent, signed
from tests.mesh.test_placement_api import _with_placement
from tests.mesh.test_regions_api import NODE_ID, election_agent

OTHER = "bbbbbbbbbbbbbbbb"


def ops_agent(data_dir: Path) -> Agent:
    """An agent with an election and a placement core, as launch.py builds one."""
    return _with_placement(election_agent(data_dir))


async def serve(agent: Agent) -> AsyncIterator[tuple[Agent, Client]]:
    """Every route launch.py adds, on a test server."""
    app = create_app(agent)
    add_observability_routes(app, agent.event_streams, agent.metrics_registry)
    add_placement_routes(app)
    add_ops_routes(app)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield agent, client
    await client.close()
    agent.store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Agent, Client]]:
    async for served in serve(ops_agent(tmp_path / "node")):
        yield served


def with_nodes(agent: Agent, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Give the placement core `count` live nodes of 4 GiB (the agent publishes no inventory here)."""
    core = agent.placement
    assert core is not None
    real = core.place_inputs

    def inputs() -> Any:
        desired, _nodes, current = real()
        return desired, [node(NODE_ID), node(OTHER)][:count], current

    monkeypatch.setattr(core, "place_inputs", inputs)


async def test_status_lists_the_region_its_leader_members_and_deployments(api: tuple[Agent, Client]) -> None:
    _, client = api
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc())
    assert status == 202, body
    doc = await (await client.get("/v1/status")).json()
    assert doc["node"] == NODE_ID and doc["region"] == "north"
    (own,) = doc["regions"]
    assert own["region"] == "north" and own["leader"] is None and own["term"] == 0
    assert own["nodes"] == {"alive": 1, "suspect": 0, "dead": 0, "left": 0}
    assert own["deployments"] == [{"deployment": "vibration", "ready": 0, "desired": 2}]
    assert (own["ready"], own["desired"]) == (0, 2)
    totals = doc["totals"]
    assert totals["regions"] == 1 and totals["regions_unanswered"] == 0
    assert totals["deployments"] == [{"deployment": "vibration", "ready": 0, "desired": 2}]
    assert (totals["ready"], totals["desired"], totals["nodes"]["alive"]) == (0, 2, 1)
    local = await (await client.get("/v1/status", params={"local": "1"})).json()
    assert "totals" not in local and [r["region"] for r in local["regions"]] == ["north"]


async def test_a_node_without_an_election_core_still_answers_its_status(tmp_path: Path) -> None:
    async for _agent, client in serve(_with_placement(make_agent(tmp_path / "n"))):
        (own,) = (await (await client.get("/v1/status")).json())["regions"]
        assert "does not run the election core" in own["error"] and own["nodes"]["alive"] == 1


async def test_node_status_shows_state_scheduling_inventory_and_replicas(api: tuple[Agent, Client]) -> None:
    _, client = api
    resp = await client.get(f"/v1/nodes/{NODE_ID}/status")
    assert resp.status == 200
    (row,) = (await resp.json())["regions"]
    assert row["id"] == NODE_ID and row["region"] == "north" and row["state"] == "alive"
    assert row["seen_by"] == NODE_ID and row["scheduling"] == "schedulable" and row["replicas"] == []
    assert row["inventory"] is None  # none published in this test
    cordon = sign_record(
        OPERATOR,
        SCHEDULING_KIND,
        NODE_ID,
        300,
        FLEET_SCOPE,
        encode_scheduling(Scheduling(NODE_ID, NodeStatus.CORDONED)),
    )
    status, body = await signed(
        client, "POST", f"/v1/scheduling/{NODE_ID}", {"record": record_to_b64(cordon)}
    )
    assert status == 202, body
    (row,) = (await (await client.get(f"/v1/nodes/{NODE_ID}/status")).json())["regions"]
    assert row["scheduling"] == "cordoned"


async def test_node_status_of_an_unknown_node_or_region_is_a_404(api: tuple[Agent, Client]) -> None:
    _, client = api
    resp = await client.get(f"/v1/nodes/{OTHER}/status")
    assert resp.status == 404 and f"node {OTHER} is not a member" in (await resp.json())["error"]
    resp = await client.get(f"/v1/nodes/{OTHER}/status", params={"region": "south"})
    assert resp.status == 404 and "unknown region 'south'" in (await resp.json())["error"]
    resp = await client.get(
        f"/v1/nodes/{OTHER}/status", params={"region": "south"}, headers={"X-Murmur-Forwarded": "1"}
    )
    assert resp.status == 404  # a forwarded request is never forwarded again


async def _plan(client: Client, doc: Any, raw: bytes | None = None) -> tuple[int, Any]:
    resp = await client.post("/v1/plan", data=raw if raw is not None else json.dumps(doc))
    return resp.status, await resp.json()


async def test_a_plan_that_fits_says_where_each_replica_goes_and_changes_nothing(
    api: tuple[Agent, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, client = api
    with_nodes(agent, monkeypatch, 2)
    status, doc = await _plan(client, {"manifest": MANIFEST})
    assert status == 200, doc
    assert doc["deployment"] == "vibration" and doc["fits"] is True and doc["node"] == NODE_ID
    (row,) = doc["regions"]
    assert row["region"] == "north" and row["wanted"] == 2 and row["fits"] and row["unplaced"] == []
    assert sorted(r["node"] for r in row["replicas"]) == sorted([NODE_ID, OTHER])
    assert [c["kind"] for c in row["changes"]] == ["added", "added"]
    assert agent.node.state.get("desired", "deployment/vibration") is None  # nothing was deployed
    assert (await (await client.get("/v1/deployments")).json()) == []


async def test_a_plan_that_does_not_fit_says_why(
    api: tuple[Agent, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, client = api
    with_nodes(agent, monkeypatch, 1)
    status, doc = await _plan(client, {"manifest": MANIFEST})
    assert status == 200 and doc["fits"] is False
    (row,) = doc["regions"]
    assert len(row["replicas"]) == 1
    assert [(u["slot"], "spread" in u["reason"]) for u in row["unplaced"]] == [(1, True)]
    # A region no node of which this node knows: not planned, and not a fit.
    far = MANIFEST.replace("replicas: 2", "replicas: {north: 1, mars: 2}")
    status, doc = await _plan(client, {"manifest": far})
    assert status == 200 and doc["fits"] is False
    mars = next(r for r in doc["regions"] if r["region"] == "mars")
    assert mars["wanted"] == 2 and "no node of this region is known" in mars["error"]
    assert any("mars" in w for w in doc["warnings"])


async def test_bad_plan_requests_get_a_clear_400(api: tuple[Agent, Client]) -> None:
    _, client = api
    status, doc = await _plan(client, None, raw=b"not json")
    assert status == 400 and "body must be a JSON object" in doc["error"]
    status, doc = await _plan(client, {"manifests": MANIFEST})
    assert status == 400 and '{"manifest":' in doc["error"]
    status, doc = await _plan(client, {"manifest": MANIFEST.replace("replicas: 2", "replicas: two")})
    assert status == 400 and doc["manifest_error"].startswith("replicas:")
    status, doc = await _plan(client, {"manifest": "[" * 100})
    assert status == 400 and "manifest_error" in doc
    status, doc = await _plan(client, None, raw=b'{"manifest": "' + b"x" * (70 * 1024) + b'"}')
    assert status == 413


def test_totals_never_trust_the_shape_of_another_regions_row() -> None:
    from mesh.service.opsapi import _totals

    rows: list[dict[str, Any]] = [
        {
            "node": "a",
            "nodes": {"alive": 2, "dead": 1},
            "deployments": [{"deployment": "v", "ready": 1, "desired": 2}],
        },
        {"node": "b", "nodes": "many", "deployments": [{"deployment": "v", "ready": "x", "desired": -5}, 7]},
        {"node": "c", "nodes": {"alive": True, "suspect": 10**30}, "deployments": {"not": "a list"}},
        {"node": None, "nodes": {"alive": 3}},
    ]
    totals = _totals(rows)
    assert totals["regions"] == 4 and totals["regions_unanswered"] == 1
    assert totals["nodes"] == {"alive": 5, "suspect": 10**30, "dead": 1, "left": 0}
    assert totals["deployments"] == [{"deployment": "v", "ready": 1, "desired": 2}]
