"""GET /v1/regions and POST /v1/regions/{region}/reset-voters against a real Agent hosting an election."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.signing
import pytest

from consensus.config import Era
from consensus.election import ElectionCore
from consensus.hardstate import HardState, decode_hard_state, encode_hard_state
from consensus.peers import GossipElectionPeers
from gossip.kinds import FLEET_SCOPE, VOTERS_RESET_KIND
from gossip.records import sign_record
from gossip.trust import StaticTrust
from gossip.votersreset import VotersReset, encode_reset
from gossip.wire import DecodeError
from inference.kinds import CHECKED_KINDS
from mesh.cli.regions import format_table
from mesh.service.agent import Agent, AgentOptions
from mesh.service.election import SqliteHardState
from mesh.service.store import Store, StoreError
from mesh.trust.deploy import record_to_b64
from node.core import Node
from tests.mesh.localnode import local_node
from tests.mesh.test_deploy_api import OPERATOR, STRANGER, Client, SyncRuntime, _FakeIdentity, served, signed

NODE_ID = "aaaaaaaaaaaaaaaa"
NODE_KEY = nacl.signing.SigningKey(b"\x11" * 32)


def election_agent(data_dir: Path) -> Agent:
    """An agent as launch.py builds one: an election core over the node database."""
    data_dir.mkdir(exist_ok=True)
    trust = StaticTrust(operators=[bytes(OPERATOR.verify_key)])
    gossip = local_node(NODE_ID, trust, kinds=CHECKED_KINDS).gossip
    store = Store.open(data_dir, NODE_ID)
    election = ElectionCore(
        NODE_ID,
        "north",
        random.Random(1),
        None,
        SqliteHardState(store),
        GossipElectionPeers(gossip),
        NODE_KEY,
    )
    node = Node(gossip, [election])
    runtime = SyncRuntime()
    runtime.node = node  # type: ignore[assignment]
    options = AgentOptions(data_dir=data_dir, token=data_dir / "t", region="north", bind="x", api="y")
    agent = Agent(options, _FakeIdentity(), store, node, runtime, trust)  # type: ignore[arg-type]
    agent.election = election
    return agent


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Agent, Client]]:
    async for served_api in served(election_agent(tmp_path / "node")):
        yield served_api


def reset_doc(
    region: str = "north", generation: int = 1, key: nacl.signing.SigningKey = OPERATOR
) -> dict[str, str]:
    payload = encode_reset(VotersReset(region, generation, (NODE_ID,)))
    return {"record": record_to_b64(sign_record(key, VOTERS_RESET_KIND, region, 50, FLEET_SCOPE, payload))}


async def test_regions_lists_the_own_region_with_its_election(api: tuple[Agent, Client]) -> None:
    _agent, client = api
    resp = await client.get("/v1/regions")
    assert resp.status == 200
    rows = await resp.json()
    assert [r["region"] for r in rows] == ["north"]
    own = rows[0]
    assert own["node"] == NODE_ID and own["role"] == "follower" and own["leader"] is None
    assert {"era", "term", "voters", "alive", "leader_holds_lease"} <= set(own)
    assert "north" in format_table(rows) and "(none)" in format_table(rows)


async def test_reset_voters_is_persisted_and_applied_by_the_election(api: tuple[Agent, Client]) -> None:
    agent, client = api
    code, body = await signed(client, "POST", "/v1/regions/north/reset-voters", reset_doc(generation=3))
    assert code == 202, body
    assert any(r.kind == VOTERS_RESET_KIND for r in agent.store.load_records())
    # The node accepted the record; its election took it: a new era, voters from the record.
    stored = agent.store.election_state()
    assert stored is not None and decode_hard_state(stored).era == Era(3, NODE_ID)
    rows = await (await client.get("/v1/regions")).json()
    assert rows[0]["era"] == {"generation": 3, "founder": NODE_ID} and rows[0]["voters"] == [NODE_ID]


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        (reset_doc(region="south"), 400, "the request is for 'north'"),
        (
            {"record": record_to_b64(sign_record(OPERATOR, "desired", "north", 5, "fleet", b"x"))},
            400,
            "expected a voters-reset record",
        ),
        (
            {
                "record": record_to_b64(
                    sign_record(OPERATOR, VOTERS_RESET_KIND, "north", 5, "fleet", b"\x01zz")
                )
            },
            400,
            "not a voters reset",
        ),
        (
            {
                "record": record_to_b64(
                    sign_record(
                        OPERATOR,
                        VOTERS_RESET_KIND,
                        "north",
                        5,
                        "region:north",
                        encode_reset(VotersReset("north", 1, ("a",))),
                    )
                )
            },
            400,
            "scope fleet",
        ),
        ({"record": "!!"}, 400, "not an encoded record"),
    ],
    ids=["other-region", "wrong-kind", "bad-payload", "wrong-scope", "not-a-record"],
)
async def test_bad_resets_are_refused(
    api: tuple[Agent, Client], doc: dict[str, str], status: int, message: str
) -> None:
    _agent, client = api
    code, body = await signed(client, "POST", "/v1/regions/north/reset-voters", doc)
    assert code == status and message in body["error"], body


async def test_a_reset_signed_by_a_stranger_is_refused(api: tuple[Agent, Client]) -> None:
    agent, client = api
    code, body = await signed(client, "POST", "/v1/regions/north/reset-voters", reset_doc(), key=STRANGER)
    assert code == 401, body
    resp = await client.post("/v1/regions/north/reset-voters", json=reset_doc())
    assert resp.status == 401
    assert agent.store.election_state() is None


def test_the_hard_state_survives_a_reopen_and_damage_is_an_error(tmp_path: Path) -> None:
    store = Store.open(tmp_path, NODE_ID)
    hs = SqliteHardState(store)
    assert hs.load() is None
    state = HardState(Era(2, "b"), 7, "c", None, False)
    hs.save(state)
    store.close()
    store = Store.open(tmp_path, NODE_ID)
    assert SqliteHardState(store).load() == state
    store.save_election_state(b"\xe5\xc1")
    with pytest.raises(StoreError, match="does not decode"):
        SqliteHardState(store).load()
    store.close()
    with pytest.raises(DecodeError):
        decode_hard_state(encode_hard_state(state)[:-1])
