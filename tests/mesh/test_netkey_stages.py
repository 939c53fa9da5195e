"""Staged network-key changes through one agent's API and the CLI: `murmur keys install|use|remove|list`,
POST /v1/netkey with staged records, GET /v1/keyring.

A real Agent (GossipNode hosting the key core, SQLite store, the keeper applying
the core's events to a Keyring and the data dir) behind a test server, as in
test_netkey_api.py; the CLI's refusals that need a larger fleet use a stub node.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gossip.envelope import Keyring
from gossip.netkey import NetKeyNotice, decode_notice, network_key_id
from gossip.records import Record
from gossip.trust import StaticTrust
from inference.kinds import CHECKED_KINDS
from mesh.cli import keys as keys_cli
from mesh.cli import keystages
from mesh.cli.client import CliError, NodeClient
from mesh.service.agent import Agent, AgentOptions
from mesh.service.api import create_app
from mesh.service.keyringview import fleet_keyring, region_keyring, region_row_of
from mesh.service.keysapi import add_routes
from mesh.service.netkeys import KeyKeeper, load_key_file, startup_keys
from mesh.service.store import Store
from mesh.trust.cluster import init_cluster, load_token
from mesh.trust.deploy import record_to_b64
from mesh.trust.identity import Identity, node_id_for
from mesh.trust.records import sign_netkey
from node.core import Node
from node.netkeys import GossipPeers, NetKeyConfig, NetKeyCore
from tests.mesh.localnode import local_node
from tests.mesh.test_deploy_api import SyncRuntime
from tests.mesh.test_netkey_api import NODE_KEY, TOKEN_KEY, operator_of, post

Client = TestClient[web.Request, web.Application]


def make_agent(
    data_dir: Path, operator: nacl.signing.SigningKey, token_key: bytes = TOKEN_KEY
) -> tuple[Agent, KeyKeeper]:
    """An agent as launch.py builds one; its own key is known, so its `keyring` record is taken."""
    data_dir.mkdir(exist_ok=True, mode=0o700)
    identity = Identity(node_id_for(bytes(NODE_KEY.verify_key)), NODE_KEY)
    trust = StaticTrust([bytes(operator.verify_key)], [bytes(NODE_KEY.verify_key)])
    gossip = local_node(identity.node_id, trust, kinds=CHECKED_KINDS).gossip
    kept = startup_keys((token_key,), load_key_file(data_dir))
    keyring = Keyring(list(kept.keys))
    keeper = KeyKeeper(data_dir, keyring, kept.retired)
    keeper.save()
    core = NetKeyCore(
        identity.node_id,
        random.Random(1),
        node_key=NODE_KEY,
        peers=GossipPeers(gossip),
        keys=keyring.keys,
        now=time.monotonic(),
        retired=kept.retired,
        config=NetKeyConfig(report_delay_min_s=0.0, report_delay_max_s=0.0),  # said at once
    )
    node = Node(gossip, [core])
    store = Store.open(data_dir, identity.node_id)
    node.state.restore(store.load_records())
    runtime = SyncRuntime()
    runtime.node = node  # type: ignore[assignment]
    options = AgentOptions(data_dir=data_dir, token=data_dir / "t", region="north", bind="x", api="y")
    agent = Agent(options, identity, store, node, runtime, trust)  # type: ignore[arg-type]
    agent.netkeys = core
    runtime.subscribe(keeper.on_event)
    runtime.drive(lambda now: node.handle_timer(now))
    return agent, keeper


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    return init_cluster(tmp_path / "cluster").path


@pytest.fixture
async def api(tmp_path: Path, cluster: Path) -> AsyncIterator[tuple[Agent, KeyKeeper, Client]]:
    # The agent's token is the cluster dir's, as `murmur invite` would give it.
    token_key = load_token(cluster / "join.token").network_keys[0]
    agent, keeper = make_agent(tmp_path / "node", operator_of(cluster), token_key)
    app = create_app(agent)
    add_routes(app)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield agent, keeper, client
    await client.close()
    agent.store.close()


def args(action: str, cluster: Path, key_id: str = "", **more: Any) -> argparse.Namespace:
    base = {"action": action, "key_id": key_id, "key_file": "", "force": False, "reason": "", "json": True}
    return argparse.Namespace(node="", cluster=str(cluster), key=None, grace=60, **{**base, **more})


async def run(node: NodeClient, a: argparse.Namespace, capsys: pytest.CaptureFixture[str]) -> Any:
    a.node = node.base
    assert await asyncio.to_thread(keys_cli.cmd_keys, a) == 0
    return json.loads(capsys.readouterr().out)


async def test_install_use_remove_through_the_cli(
    api: tuple[Agent, KeyKeeper, Client],
    cluster: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MURMUR_CLUSTER", raising=False)
    agent, keeper, client = api
    node = NodeClient(str(client.make_url("")))
    first = load_token(cluster / "join.token").network_keys[0]
    first_id = network_key_id(first)

    listed = await run(node, args("list", cluster), capsys)
    assert [k["key_id"] for k in listed["keys"]] == [first_id]
    assert listed["keys"][0]["holders"] == 1 and listed["alive"] == 1 and listed["complete"]

    out = await run(node, args("install", cluster), capsys)
    new_id = out["key_id"]
    assert out["epoch"] == 1 and new_id != first_id
    assert keeper.keyring.primary == first and len(keeper.keyring.keys) == 2  # opens, does not seal
    token = load_token(cluster / "join.token")
    assert token.network_keys[0] == first and network_key_id(token.network_keys[1]) == new_id
    listed = await run(node, args("list", cluster), capsys)
    rows = {k["key_id"]: k for k in listed["keys"]}
    assert rows[new_id]["holders"] == 1 and rows[new_id]["primary_at"] == 0 and rows[new_id]["epoch"] == 1
    assert rows[first_id]["record_primary"] and rows[first_id]["primary_at"] == 1

    with pytest.raises(CliError, match="is the primary"):
        await run(node, args("remove", cluster, first_id), capsys)
    out = await run(node, args("use", cluster, new_id[:8]), capsys)  # a prefix will do
    assert out == {"action": "use", "key_id": new_id, "epoch": 2, "forced": False}
    assert network_key_id(keeper.keyring.primary) == new_id
    assert network_key_id(load_token(cluster / "join.token").network_keys[0]) == new_id

    out = await run(node, args("remove", cluster, first_id), capsys)
    assert out["epoch"] == 3 and [network_key_id(k) for k in keeper.keyring.keys] == [new_id]
    assert [network_key_id(k) for k in load_token(cluster / "join.token").network_keys] == [new_id]
    held = load_key_file(agent.options.data_dir)
    assert held is not None and first_id in held.retired
    listed = await run(node, args("list", cluster), capsys)
    assert [(k["key_id"], k["holders"], k["primary_at"]) for k in listed["keys"]] == [(new_id, 1, 1)]

    # The removed key never comes back: the CLI says so, and so does the node to a hand-made request.
    key_file = cluster / "old.key"
    key_file.write_bytes(first)
    key_file.chmod(0o600)
    with pytest.raises(CliError, match="never comes back"):
        await run(node, args("install", cluster, key_file=str(key_file)), capsys)
    operator = operator_of(cluster)
    notice = NetKeyNotice(9, new_id, 0, "", stage="install", keys=((new_id, 1), (first_id, 9)))
    sealed = nacl.public.SealedBox(NODE_KEY.verify_key.to_curve25519_public_key()).encrypt(first)
    doc = {
        "record": record_to_b64(sign_netkey(operator, int(time.time() * 1000) + 10_000, notice)),
        "sealed_key": base64.b64encode(bytes(sealed)).decode(),
    }
    status, body = await post(client, doc, operator)
    assert status == 409 and "never comes back" in body["error"], body
    assert [network_key_id(k) for k in keeper.keyring.keys] == [new_id]


async def test_the_node_refuses_staged_records_it_cannot_follow(
    api: tuple[Agent, KeyKeeper, Client], cluster: Path
) -> None:
    _agent, keeper, client = api
    token_key = keeper.keyring.primary
    token_id = network_key_id(token_key)
    operator = operator_of(cluster)
    other = network_key_id(b"\x5a" * 32)

    def doc(notice: NetKeyNotice, key: bytes | None = None) -> dict[str, Any]:
        out = {"record": record_to_b64(sign_netkey(operator, 5000 + notice.epoch, notice))}
        if key is not None:
            box = nacl.public.SealedBox(NODE_KEY.verify_key.to_curve25519_public_key())
            out["sealed_key"] = base64.b64encode(bytes(box.encrypt(key))).decode()
        return out

    # A use of a key this node does not hold (it would be the one to hand it out).
    status, body = await post(
        client, doc(NetKeyNotice(1, other, 0, stage="use", keys=((other, 1),))), operator
    )
    assert status == 409 and "does not hold key" in body["error"], body
    # An install without its key.
    install = NetKeyNotice(1, token_id, 0, stage="install", keys=((token_id, 0), (other, 1)))
    status, body = await post(client, doc(install), operator)
    assert status == 400 and "comes with its new key" in body["error"], body
    # A sealed_key that is not base64.
    bad = {**doc(install), "sealed_key": "%%%"}
    status, body = await post(client, bad, operator)
    assert status == 400 and "sealed_key" in body["error"], body
    status, body = await post(client, doc(install, b"\x5a" * 32), operator)
    assert status == 202, body
    assert keeper.keyring.primary == token_key and b"\x5a" * 32 in keeper.keyring.keys
    shown = await (await client.get("/v1/netkey")).json()
    assert shown["stage"] == "install" and shown["keys"] == [
        {"key_id": token_id, "epoch": 0},
        {"key_id": other, "epoch": 1},
    ]


# --- the counts, and the CLI's refusals before anything is sent ----------------------------------


def test_region_and_fleet_counts() -> None:
    from gossip.keyholding import KeyHolding

    a, b = "a" * 32, "b" * 32
    held = {"n1": KeyHolding(2, a, (a, b)), "n2": KeyHolding(2, a, (a,)), "n3": KeyHolding(2, b, (a, b))}
    row = region_keyring("r1", ["n3", "n1", "n2", "n4"], held.get)
    assert row["alive"] == 4 and row["reported"] == 3 and row["unreported"] == ["n4"]
    assert row["keys"][a] == {"holders": 3, "primary_at": 2, "lacking": ["n4"]}
    assert row["keys"][b] == {"holders": 2, "primary_at": 1, "lacking": ["n2", "n4"]}
    assert region_row_of(row, "r1") == row and region_row_of(row, "r2") is None
    assert region_row_of({**row, "keys": {a: {"holders": "3"}}}, "r1") is None
    assert region_row_of(["r1"], "r1") is None
    notice = NetKeyNotice(2, a, 0, stage="install", keys=((a, 0), (b, 2)))
    down = {"region": "r2", "alive": 5, "error": "no API address answered"}
    doc = fleet_keyring({"installed_key_ids": [a, b]}, notice, [row, down])
    assert not doc["complete"] and doc["alive"] == 4
    assert [(k["key_id"], k["epoch"], k["holders"]) for k in doc["keys"]] == [(b, 2, 2), (a, 0, 3)]


class StubNode:
    """A NodeClient stand-in: canned GET answers; submissions recorded."""

    base = "http://stub"

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.sent: list[Record] = []

    def get(self, path: str, params: Any = None) -> Any:
        return self.answers[path]

    def next_record_version(self, author: str) -> int:
        return 77

    def submit(self, key: Any, method: str, path: str, doc: Any) -> Any:
        from mesh.trust.deploy import record_from_b64

        self.sent.append(record_from_b64(doc["record"]))
        return {}


def status_of(keys: list[tuple[str, int]], primary: str, epoch: int = 4) -> dict[str, Any]:
    return {
        "node_id": node_id_for(bytes(NODE_KEY.verify_key)),
        "public_key": base64.b64encode(bytes(NODE_KEY.verify_key)).decode(),
        "epoch": epoch,
        "key_id": primary,
        "stage": "install",
        "keys": [{"key_id": k, "epoch": e} for k, e in keys],
        "installed_key_ids": [k for k, _e in keys],
        "primary_key_id": primary,
        "retired_key_ids": [],
    }


def keyring_doc(new: str, holders: int, alive: int, error: bool = False) -> dict[str, Any]:
    regions: list[dict[str, Any]] = [{"region": "r1", "alive": alive, "keys": {}}]
    if error:
        regions.append({"region": "r2", "alive": 3, "error": "down"})
    row = {"key_id": new, "holders": holders, "alive": alive, "lacking": ["n7"], "regions": {}}
    return {"node": {}, "alive": alive, "complete": not error, "regions": regions, "keys": [row]}


def test_use_is_refused_while_an_alive_member_lacks_the_key(cluster: Path) -> None:
    old, new = "a" * 32, "b" * 32
    status = status_of([(old, 0), (new, 4)], old)
    stub = StubNode({"/v1/netkey": status, "/v1/keyring": keyring_doc(new, 3, 4)})
    operator = operator_of(cluster)
    with pytest.raises(CliError, match=r"1 of 4 alive members lack it \(n7\).*--force"):
        keystages.run_stage(args("use", cluster, new), stub, operator, cluster)  # type: ignore[arg-type]
    stub.answers["/v1/keyring"] = keyring_doc(new, 4, 4, error=True)
    with pytest.raises(CliError, match="r2 did not answer"):
        keystages.run_stage(args("use", cluster, new), stub, operator, cluster)  # type: ignore[arg-type]
    assert stub.sent == []
    assert keystages.run_stage(args("use", cluster, new, force=True), stub, operator, cluster) == 0  # type: ignore[arg-type]
    notice = decode_notice(stub.sent[0].payload)
    assert notice.stage == "use" and notice.key_id == new and notice.epoch == 5


def test_cli_refusals_and_key_files(cluster: Path, tmp_path: Path) -> None:
    old, new = "a" * 32, "aaaaaa" + "c" * 26
    stub = StubNode({"/v1/netkey": status_of([(old, 0), (new, 4)], old)})
    operator = operator_of(cluster)

    def stage(action: str, key_id: str = "", **more: Any) -> int:
        return keystages.run_stage(args(action, cluster, key_id, **more), stub, operator, cluster)  # type: ignore[arg-type]

    with pytest.raises(CliError, match="needs the KEY_ID"):
        stage("remove")
    with pytest.raises(CliError, match="matches 2 keys"):
        stage("remove", "aaaaaa")
    with pytest.raises(CliError, match="too short"):
        stage("remove", "ab")
    with pytest.raises(CliError, match="no key 'ffffff'"):
        stage("remove", "ffffff")
    full = [(network_key_id(bytes([i]) * 32), 0) for i in range(7)]
    stub.answers["/v1/netkey"] = status_of(full, full[0][0])
    with pytest.raises(CliError, match="remove one first"):
        stage("install")
    for content, ok in (
        (b"\x07" * 32, True),
        ((b"\x07" * 32).hex().encode() + b"\n", True),
        (b"short", False),
    ):
        path = tmp_path / "k"
        path.write_bytes(content)
        path.chmod(0o600)
        if ok:
            assert keystages.read_key_file(path) == b"\x07" * 32
        else:
            with pytest.raises(CliError, match="does not hold a network key"):
                keystages.read_key_file(path)
    path.chmod(0o644)
    with pytest.raises(CliError):
        keystages.read_key_file(path)
    assert stub.sent == []
