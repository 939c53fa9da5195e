"""POST/DELETE/GET /v1/deployments, /v1/state and /v1/nodes/{id} against a real Agent.

The agent runs a real GossipNode and a real SQLite store; only the asyncio
runtime is replaced by a synchronous one (drive, then hand out the events).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gossip import codec
from gossip.events import Event
from gossip.kinds import DEFAULT_KINDS, KindTable
from gossip.node import GossipNode
from gossip.records import encode_record, key_id, sign_record
from gossip.trust import StaticTrust
from inference.desired import sign_deletion, sign_deployment
from inference.kinds import CHECKED_KINDS
from inference.manifest import canonical_bytes, parse_manifest
from mesh.service.agent import Agent, AgentOptions
from mesh.service.api import REQUEST_BODY_MAX_BYTES, create_app
from mesh.service.store import Store
from mesh.trust.deploy import record_to_b64
from mesh.trust.opsign import sign_request
from tests.inference.test_documents import ALIAS_BOMB
from tests.mesh.localnode import local_node

OPERATOR = nacl.signing.SigningKey(b"\x05" * 32)
STRANGER = nacl.signing.SigningKey(b"\x06" * 32)
SHA = "cd" * 32
MANIFEST = f"""
name: vibration
model: {{name: vib-cnn, version: "2"}}
artifact: {{sha256: {SHA}, size_bytes: 4096}}
replicas: 2
"""


class SyncRuntime:
    """Runtime.drive and Runtime.subscribe, synchronously (no sockets)."""

    def __init__(self) -> None:
        self.node: GossipNode | None = None
        self.subscribers: list[Callable[[Event], None]] = []
        self.counters: dict[str, int] = {}
        self.addr = "127.0.0.1:1"

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self.subscribers.append(callback)

    def drive(self, action: Callable[[float], Any]) -> Any:
        result = action(time.monotonic())
        assert self.node is not None
        self.node.poll_transmit()
        for event in self.node.drain_events():
            for callback in self.subscribers:
                callback(event)
        return result


def make_agent(data_dir: Path, kinds: KindTable = CHECKED_KINDS) -> Agent:
    """An agent as mesh/service/launch.py builds one (its kind table checks payloads); with
    DEFAULT_KINDS, one whose store holds what an older murmur accepted."""
    data_dir.mkdir(exist_ok=True)
    trust = StaticTrust(operators=[bytes(OPERATOR.verify_key)])
    node = local_node("aaaaaaaaaaaaaaaa", trust, kinds=kinds)
    store = Store.open(data_dir, "aaaaaaaaaaaaaaaa")
    node.state.restore(store.load_records())
    runtime = SyncRuntime()
    runtime.node = node
    options = AgentOptions(data_dir=data_dir, token=data_dir / "t", region="north", bind="x", api="y")
    return Agent(options, _FakeIdentity(), store, node, runtime, trust)  # type: ignore[arg-type]


class _FakeIdentity:
    node_id = "aaaaaaaaaaaaaaaa"
    public_key = bytes(32)  # shown by /v1/health; these tests sign nothing with it


Client = TestClient[web.Request, web.Application]


async def served(agent: Agent) -> AsyncIterator[tuple[Agent, Client]]:
    """The agent's API on a test server (a fixture body: yields once, then closes everything)."""
    client = TestClient(TestServer(create_app(agent), host="127.0.0.1"))
    await client.start_server()
    yield agent, client
    await client.close()
    agent.store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Agent, Client]]:
    async for served_api in served(make_agent(tmp_path / "node")):
        yield served_api


async def signed(
    client: Client,
    method: str,
    path: str,
    doc: Any,
    key: nacl.signing.SigningKey = OPERATOR,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    body = raw if raw is not None else json.dumps(doc).encode()
    headers = sign_request(key, method, path, body, time.time())
    resp = await client.request(method, path, data=body, headers=headers)
    return resp.status, await resp.json()


def deploy_doc(
    text: str = MANIFEST, version: int = 100, key: nacl.signing.SigningKey = OPERATOR
) -> dict[str, Any]:
    deployment = parse_manifest(text)
    return {"manifest": text, "record": record_to_b64(sign_deployment(key, deployment, version))}


async def test_deploy_is_persisted_before_the_202_and_listed(
    api: tuple[Agent, Client], tmp_path: Path
) -> None:
    agent, client = api
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc())
    assert status == 202, body
    assert body["record"] == {
        "kind": "desired",
        "key": "deployment/vibration",
        "version": 100,
        "author": key_id(bytes(OPERATOR.verify_key)),
    }
    # Persisted: a second connection to the database sees the committed row.
    assert [r.key for r in agent.store.load_records()] == ["deployment/vibration"]
    resp = await client.get("/v1/deployments")
    listed = await resp.json()
    assert [d["name"] for d in listed] == ["vibration"]
    assert listed[0]["manifest"]["replicas"] == 2 and listed[0]["version"] == 100
    resp = await client.get("/v1/deployments/vibration")
    assert (await resp.json())["manifest"]["artifact"]["sha256"] == SHA
    state = await (await client.get("/v1/state")).json()
    assert state["digest"][key_id(bytes(OPERATOR.verify_key))]["version"] == 100
    assert state["records"] == {"desired": 1} and state["persisted_records"] == 1
    # The same record again (a retried request with a fresh signature) is fine and idempotent.
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc())
    assert status == 202 and body["new"] is False


async def test_a_restarted_agent_still_holds_the_record(tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "node")
    deployment = parse_manifest(MANIFEST)
    assert agent.submit_record(sign_deployment(OPERATOR, deployment, 7))
    agent.store.close()
    again = make_agent(tmp_path / "node")
    held = again.record("desired", "deployment/vibration")
    assert held is not None and held.version == 7
    again.store.close()


async def test_records_learned_from_peers_are_persisted(tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "node")
    record = sign_deployment(OPERATOR, parse_manifest(MANIFEST), 9)
    # As a peer's gossip delivers it: one datagram carrying the record.
    packet = codec.encode_packet(
        codec.POOL_REGION, "north", [codec.encode_message(codec.RecordGossip(encode_record(record)))]
    )
    agent.runtime.drive(lambda now: agent.node.handle_datagram(now, "127.0.0.1:9", packet))
    assert agent.store.load_records() == [record]
    agent.store.close()


async def test_delete_is_a_signed_tombstone(api: tuple[Agent, Client]) -> None:
    agent, client = api
    assert (await signed(client, "POST", "/v1/deployments", deploy_doc()))[0] == 202
    tomb = {"record": record_to_b64(sign_deletion(OPERATOR, "vibration", 101))}
    status, body = await signed(client, "DELETE", "/v1/deployments/vibration", tomb)
    assert status == 202 and body["record"]["version"] == 101
    assert await (await client.get("/v1/deployments")).json() == []
    resp = await client.get("/v1/deployments/vibration")
    assert resp.status == 404 and "was deleted (version 101" in (await resp.json())["error"]
    assert agent.store.load_records()[0].deleted
    status, body = await signed(client, "DELETE", "/v1/deployments/vibration", tomb)
    assert status == 404 and "no deployment named 'vibration'" in body["error"]


async def test_unsigned_forged_and_replayed_requests_are_refused(api: tuple[Agent, Client]) -> None:
    _, client = api
    resp = await client.post("/v1/deployments", data=json.dumps(deploy_doc()))
    assert resp.status == 401 and "request is not signed" in (await resp.json())["error"]
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc(key=STRANGER), key=STRANGER)
    assert status == 401 and "not an operator key of this cluster" in body["error"]
    body_bytes = json.dumps(deploy_doc()).encode()
    headers = sign_request(OPERATOR, "POST", "/v1/deployments", body_bytes, time.time())
    tampered = body_bytes.replace(b"replicas: 2", b"replicas: 9")
    resp = await client.post("/v1/deployments", data=tampered, headers=headers)
    assert resp.status == 401 and "bad request signature" in (await resp.json())["error"]
    resp = await client.post("/v1/deployments", data=body_bytes, headers=headers)
    assert resp.status == 202
    resp = await client.post("/v1/deployments", data=body_bytes, headers=headers)
    assert resp.status == 403 and "replayed" in (await resp.json())["error"]
    old = sign_request(OPERATOR, "POST", "/v1/deployments", body_bytes, time.time() - 600)
    resp = await client.post("/v1/deployments", data=body_bytes, headers=old)
    assert resp.status == 403 and "expired" in (await resp.json())["error"]


async def test_invalid_manifests_get_a_400_naming_the_field(api: tuple[Agent, Client]) -> None:
    _, client = api
    doc = deploy_doc()
    doc["manifest"] = MANIFEST.replace("replicas: 2", "replicas: {north: two}")
    status, body = await signed(client, "POST", "/v1/deployments", doc)
    assert status == 400
    assert body["manifest_error"] == "replicas.north: must be an integer >= 0, got 'two'"
    status, body = await signed(client, "POST", "/v1/deployments", None, raw=b"name: x")
    assert status == 400 and "body must be a JSON object" in body["error"]


async def test_the_record_must_match_the_manifest_and_the_signer(api: tuple[Agent, Client]) -> None:
    _, client = api
    doc = deploy_doc()
    doc["manifest"] = MANIFEST.replace("replicas: 2", "replicas: 3")
    status, body = await signed(client, "POST", "/v1/deployments", doc)
    assert status == 400 and "not the canonical form of the manifest" in body["error"]
    doc = deploy_doc()
    del doc["record"]
    status, body = await signed(client, "POST", "/v1/deployments", doc)
    assert status == 400 and '"record" must be the base64' in body["error"]
    # A record signed by another key, sent under the operator's request signature.
    doc = deploy_doc(key=STRANGER)
    status, body = await signed(client, "POST", "/v1/deployments", doc)
    assert status == 400 and "is not the request's signer" in body["error"]
    wrong_slot = sign_record(OPERATOR, "desired", "deployment/other", 5, "fleet", b"{}")
    doc = {"manifest": MANIFEST, "record": base64.b64encode(encode_record(wrong_slot)).decode()}
    status, body = await signed(client, "POST", "/v1/deployments", doc)
    assert status == 400 and "expected desired/deployment/vibration" in body["error"]


async def test_an_older_version_is_refused_with_409(api: tuple[Agent, Client]) -> None:
    _, client = api
    assert (await signed(client, "POST", "/v1/deployments", deploy_doc(version=50)))[0] == 202
    changed = MANIFEST.replace("replicas: 2", "replicas: 3")
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc(changed, version=40))
    assert status == 409 and "already holds version 50" in body["error"]


async def test_oversized_bodies_get_a_413_with_a_message(api: tuple[Agent, Client]) -> None:
    _, client = api
    big = b"x" * (REQUEST_BODY_MAX_BYTES + 1)
    status, body = await signed(client, "POST", "/v1/deployments", None, raw=big)
    assert status == 413 and "request body is over" in body["error"]


async def test_get_node_by_id(api: tuple[Agent, Client]) -> None:
    _, client = api
    resp = await client.get("/v1/nodes/aaaaaaaaaaaaaaaa")
    doc = await resp.json()
    assert resp.status == 200 and doc["id"] == "aaaaaaaaaaaaaaaa" and doc["inventory"] is None
    resp = await client.get("/v1/nodes/ffff")
    assert resp.status == 404 and "not in this node's region or fleet view" in (await resp.json())["error"]


# --- untrusted manifests and payloads (issue 8, findings 4 and 5) ---------------------------


@pytest.mark.parametrize(
    ("manifest", "error"),
    [
        (ALIAS_BOMB, "name[0]: anchors (&name) are not accepted"),
        ("name: " + "[" * 20_000, "manifest: nested deeper than 16 levels"),
        (MANIFEST + "priority: " + "9" * 5_000, "priority: a value of 5000 characters is over the limit"),
        (MANIFEST + "priority: " + "9" * 1_000, "priority: an integer of 1000 characters is over the limit"),
        (MANIFEST + "priority: 0x" + "f" * 1_000, "priority: an integer of 1002 characters is over"),
        (MANIFEST.replace("vibration", '"vibration\\n"'), "name: 'vibration\\n' is not valid"),
    ],
)
async def test_hostile_manifests_get_a_400_naming_the_problem(
    api: tuple[Agent, Client], manifest: str, error: str
) -> None:
    _, client = api
    doc = deploy_doc()
    doc["manifest"] = manifest
    status, body = await signed(client, "POST", "/v1/deployments", doc)
    assert status == 400, body
    assert body["manifest_error"].startswith(error) and len(body["error"]) < 300


async def test_hostile_json_bodies_get_a_400(api: tuple[Agent, Client]) -> None:
    _, client = api
    # The CLI sends the manifest as a JSON object: a long integer in it names its field.
    doc = deploy_doc()
    doc["manifest"] = parse_manifest(MANIFEST).to_doc()
    raw = json.dumps(doc).replace('"priority": 0', '"priority": ' + "9" * 5_000).encode()
    status, body = await signed(client, "POST", "/v1/deployments", None, raw=raw)
    assert status == 400 and body["manifest_error"].startswith("priority: an integer of 5000 characters")
    raw = b'{"manifest": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    status, body = await signed(client, "POST", "/v1/deployments", None, raw=raw)
    assert status == 400 and "nested 20001 deep, over the limit of 16" in body["error"]
    # The same limits hold for every signed body.
    raw = b'{"record": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    status, body = await signed(client, "DELETE", "/v1/deployments/vibration", None, raw=raw)
    assert status == 404  # (nothing to delete: answered before the body is read)
    assert (await signed(client, "POST", "/v1/deployments", deploy_doc()))[0] == 202
    status, body = await signed(client, "DELETE", "/v1/deployments/vibration", None, raw=raw)
    assert status == 400 and "nested 20001 deep" in body["error"]


async def test_a_parse_over_its_time_budget_is_a_400(
    api: tuple[Agent, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = api
    monkeypatch.setattr("mesh.service.api.MANIFEST_PARSE_BUDGET_S", 0.0)
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc())
    assert status == 400 and body["manifest_error"].startswith("manifest: too complex: not parsed within 0 s")


def _bad_desired(version: int = 9, digits: int = 5000) -> Any:
    """The finding's record: an operator-signed `desired` payload with a 5,000-digit priority."""
    priority = b'"priority":' + b"9" * digits
    payload = canonical_bytes(parse_manifest(MANIFEST)).replace(b'"priority":0', priority)
    return sign_record(OPERATOR, "desired", "deployment/vibration", version, "fleet", payload)


async def test_a_peer_s_bad_desired_record_is_refused_counted_and_not_persisted(tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "node")
    # (100 digits: a datagram carries at most a few hundred bytes of record; the store's check
    # is the same for the finding's 5,000 digits, which arrive by push-pull.)
    gossip = codec.RecordGossip(encode_record(_bad_desired(digits=100)))
    packet = codec.encode_packet(codec.POOL_REGION, "north", [codec.encode_message(gossip)])
    agent.runtime.drive(lambda now: agent.node.handle_datagram(now, "127.0.0.1:9", packet))
    assert agent.record("desired", "deployment/vibration") is None
    assert agent.store.load_records() == []
    assert agent.state_summary()["counters"]["drop_bad_payload"] == 1
    agent.store.close()


async def test_a_stored_bad_record_never_breaks_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A store without payload checks holds what an older murmur accepted.
    agent = make_agent(tmp_path / "node", kinds=DEFAULT_KINDS)
    assert agent.node.state.merge(0.0, [_bad_desired()]) != []
    async for _, client in served(agent):
        resp = await client.get("/v1/deployments")
        assert resp.status == 200
        (row,) = await resp.json()
        assert row["name"] == "vibration" and row["version"] == 9 and row["manifest"] is None
        assert row["error"].startswith(
            "the stored payload is not a valid manifest: priority: an integer of 5000 characters"
        )
        resp = await client.get("/v1/deployments/vibration")
        assert resp.status == 200 and (await resp.json())["error"] == row["error"]
        assert (await client.get("/v1/state")).status == 200
        await client.get("/v1/deployments")
    logged = [r.getMessage() for r in caplog.records if "is left out of reads" in r.getMessage()]
    assert len(logged) == 1  # once per record, however often it is read
