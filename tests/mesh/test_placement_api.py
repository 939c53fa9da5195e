"""GET /v1/placements and the operator's placement commands (cordon, drain, uncordon,
rebalance) against a real Agent with a real placement core (no leader: nothing is placed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.signing
import pytest

from gossip.kinds import FLEET_SCOPE, REBALANCE_KIND, SCHEDULING_KIND
from gossip.records import Record, sign_record
from inference.operator_records import Rebalance, Scheduling, encode_rebalance, encode_scheduling
from inference.placing import PlacementCore
from inference.placing_ports import GossipPlacementMesh
from inference.resources import NodeStatus
from mesh.service.agent import Agent
from mesh.service.placementapi import add_routes
from mesh.service.placements import held_artifacts
from mesh.trust.deploy import record_to_b64
from tests.mesh.test_deploy_api import OPERATOR, STRANGER, Client, deploy_doc, make_agent, served, signed

NODE = "bbbbbbbbbbbbbbbb"
OWN = "aaaaaaaaaaaaaaaa"


class _NoLeader:
    def leader(self) -> str | None:
        return None

    def is_leader(self, now: float) -> bool:
        return False

    def certificate(self) -> bytes | None:
        return None


def _with_placement(agent: Agent) -> Agent:
    agent.placement = PlacementCore(
        OWN,
        "north",
        nacl.signing.SigningKey(b"\x07" * 32),
        GossipPlacementMesh(agent.node.gossip),
        _NoLeader(),
        held_artifacts(agent.artifacts),
    )
    return agent


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Agent, Client]]:
    import mesh.service.api as api_module

    create = api_module.create_app

    def create_with_routes(service: Agent) -> object:
        app = create(service)
        add_routes(app)
        return app

    monkeypatch.setattr("tests.mesh.test_deploy_api.create_app", create_with_routes)
    async for served_api in served(_with_placement(make_agent(tmp_path / "node"))):
        yield served_api


def _scheduling(node_id: str, mode: NodeStatus | None, key: nacl.signing.SigningKey = OPERATOR) -> Record:
    if mode is None:
        return sign_record(key, SCHEDULING_KIND, node_id, 200, FLEET_SCOPE, b"", deleted=True)
    payload = encode_scheduling(Scheduling(node_id, mode))
    return sign_record(key, SCHEDULING_KIND, node_id, 200, FLEET_SCOPE, payload)


async def test_placements_show_the_region_desired_counts_and_unplaced_reasons(
    api: tuple[Agent, Client],
) -> None:
    _, client = api
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc())
    assert status == 202, body
    doc = await (await client.get("/v1/placements")).json()
    assert doc["region"] == "north" and doc["node"] == OWN
    assert doc["stamp"] is None and doc["replicas"] == [] and doc["rebalance_generation"] == 0
    assert doc["deployments"] == [{"deployment": "vibration", "ready": 0, "desired": 2}]
    assert {u["deployment"] for u in doc["unplaced"]} == {"vibration"} and len(doc["unplaced"]) == 2
    assert all(u["reason"] for u in doc["unplaced"])


async def test_an_unknown_region_is_a_404_and_a_forwarded_one_a_421(api: tuple[Agent, Client]) -> None:
    _, client = api
    resp = await client.get("/v1/placements", params={"region": "south"})
    assert resp.status == 404 and "unknown region 'south'" in (await resp.json())["error"]
    resp = await client.get("/v1/placements", params={"region": "south"}, headers={"X-Murmur-Forwarded": "1"})
    assert resp.status == 421


async def test_without_a_placement_core_the_read_is_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(tmp_path / "bare")
    with pytest.raises(Exception, match="does not run the placement core"):
        agent.own_placement()
    agent.store.close()


async def test_cordon_drain_and_uncordon_are_accepted_and_held(api: tuple[Agent, Client]) -> None:
    agent, client = api
    path = f"/v1/scheduling/{NODE}"
    status, body = await signed(
        client, "POST", path, {"record": record_to_b64(_scheduling(NODE, NodeStatus.CORDONED))}
    )
    assert status == 202, body
    assert body["record"]["kind"] == SCHEDULING_KIND and body["record"]["key"] == NODE
    assert "not a member this node knows" in body["warnings"][0]  # no such node here: a warning
    held = agent.node.state.get(SCHEDULING_KIND, NODE)
    assert held is not None and not held.deleted
    tomb = sign_record(OPERATOR, SCHEDULING_KIND, NODE, 201, FLEET_SCOPE, b"", deleted=True)
    status, body = await signed(client, "POST", path, {"record": record_to_b64(tomb)})
    assert status == 202, body
    held = agent.node.state.get(SCHEDULING_KIND, NODE)
    assert held is not None and held.deleted
    status, body = await signed(
        client,
        "POST",
        f"/v1/scheduling/{OWN}",
        {"record": record_to_b64(_scheduling(OWN, NodeStatus.DRAINING))},
    )
    assert status == 202 and body["warnings"] == []  # this node itself is a member it knows


async def test_scheduling_records_that_do_not_match_or_verify_are_refused(api: tuple[Agent, Client]) -> None:
    _, client = api
    path = f"/v1/scheduling/{NODE}"
    good = _scheduling(NODE, NodeStatus.CORDONED)
    resp = await client.post(path, data=json.dumps({"record": record_to_b64(good)}))
    assert resp.status == 401  # unsigned request
    status, body = await signed(client, "POST", path, {"record": record_to_b64(good)}, key=STRANGER)
    assert status == 401 and "not an operator key" in body["error"]
    # Signed by another key than the request's signer.
    forged = _scheduling(NODE, NodeStatus.CORDONED, key=STRANGER)
    status, body = await signed(client, "POST", path, {"record": record_to_b64(forged)})
    assert status == 400 and "is not the request's signer" in body["error"]
    # A record whose signature does not verify (its payload changed after signing).
    tampered = Record(
        good.kind,
        good.key,
        good.version,
        good.author,
        good.scope,
        b'{"mode":"draining","node":"' + NODE.encode() + b'"}',
        good.deleted,
        good.signature,
    )
    status, body = await signed(client, "POST", path, {"record": record_to_b64(tampered)})
    assert status == 400 and "signature does not verify" in body["error"]
    other = _scheduling("cccccccccccccccc", NodeStatus.CORDONED)
    status, body = await signed(client, "POST", path, {"record": record_to_b64(other)})
    assert status == 400 and "the request is for" in body["error"]
    bad = sign_record(
        OPERATOR,
        SCHEDULING_KIND,
        NODE,
        200,
        FLEET_SCOPE,
        b'{"mode":"asleep","node":"' + NODE.encode() + b'"}',
    )
    status, body = await signed(client, "POST", path, {"record": record_to_b64(bad)})
    assert status == 400 and "scheduling.mode" in body["error"]
    status, body = await signed(client, "POST", path, {"record": "not base64 at all"})
    assert status == 400


async def test_rebalance_is_accepted_for_a_known_region_only(api: tuple[Agent, Client]) -> None:
    agent, client = api
    record = sign_record(
        OPERATOR, REBALANCE_KIND, "north", 300, FLEET_SCOPE, encode_rebalance(Rebalance("north", 1))
    )
    status, body = await signed(
        client, "POST", "/v1/regions/north/rebalance", {"record": record_to_b64(record)}
    )
    assert status == 202, body
    doc = await (await client.get("/v1/placements")).json()
    assert doc["rebalance_generation"] == 1
    south = sign_record(
        OPERATOR, REBALANCE_KIND, "south", 301, FLEET_SCOPE, encode_rebalance(Rebalance("south", 1))
    )
    status, body = await signed(
        client, "POST", "/v1/regions/south/rebalance", {"record": record_to_b64(south)}
    )
    assert status == 404 and "unknown region 'south'" in body["error"]
    tomb = sign_record(OPERATOR, REBALANCE_KIND, "north", 302, FLEET_SCOPE, b"", deleted=True)
    status, body = await signed(
        client, "POST", "/v1/regions/north/rebalance", {"record": record_to_b64(tomb)}
    )
    assert status == 400 and "cannot be deleted" in body["error"]
    assert agent.node.state.get(REBALANCE_KIND, "north") == record
