"""Rotating the network key at one node: POST/GET /v1/netkey, `murmur keys rotate`, and network.keys.

A real Agent (real GossipNode hosting the key core, real SQLite store, the keeper
applying the core's events to a real Keyring and the data dir) behind a test
server; only the asyncio runtime is replaced by the synchronous one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import stat
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
from gossip.netkey import NetKeyNotice, network_key_id
from gossip.trust import StaticTrust
from inference.kinds import CHECKED_KINDS
from mesh.cli import keys as keys_cli
from mesh.cli.client import CliError, NodeClient
from mesh.service.agent import Agent, AgentOptions
from mesh.service.api import create_app
from mesh.service.netkeys import (
    KEYS_FILE,
    KeyFile,
    KeyFileError,
    KeyKeeper,
    load_key_file,
    save_key_file,
    startup_keys,
)
from mesh.service.store import Store
from mesh.trust.cluster import cluster_network_epoch, init_cluster, load_token
from mesh.trust.deploy import record_to_b64
from mesh.trust.identity import Identity, node_id_for
from mesh.trust.opsign import sign_request
from mesh.trust.records import sign_netkey
from node.core import Node
from node.netkeys import (
    GossipPeers,
    NetKeyConfig,
    NetKeyCore,
    NetworkKeyInstalled,
    NetworkKeyInUse,
    NetworkKeysRetired,
)
from tests.mesh.localnode import local_node
from tests.mesh.test_deploy_api import SyncRuntime

TOKEN_KEY = b"\x31" * 32
NODE_KEY = nacl.signing.SigningKey(b"\x32" * 32)
OTHER_NODE = nacl.signing.SigningKey(b"\x33" * 32)

Client = TestClient[web.Request, web.Application]


def make_agent(data_dir: Path, operator: nacl.signing.SigningKey) -> tuple[Agent, KeyKeeper]:
    """An agent as launch.py builds one: the key core hosted, the keeper subscribed."""
    data_dir.mkdir(exist_ok=True, mode=0o700)
    identity = Identity(node_id_for(bytes(NODE_KEY.verify_key)), NODE_KEY)
    trust = StaticTrust(operators=[bytes(operator.verify_key)])
    gossip = local_node(identity.node_id, trust, kinds=CHECKED_KINDS).gossip
    kept = startup_keys((TOKEN_KEY,), load_key_file(data_dir))
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
        config=NetKeyConfig(use_after_s=0.0),
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
    runtime.drive(lambda now: node.handle_timer(now))  # the core's first timer: the restored record
    return agent, keeper


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    return init_cluster(tmp_path / "cluster").path


def operator_of(cluster: Path) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes.fromhex((cluster / "operator.key").read_text().strip()))


@pytest.fixture
async def api(tmp_path: Path, cluster: Path) -> AsyncIterator[tuple[Agent, KeyKeeper, Client]]:
    agent, keeper = make_agent(tmp_path / "node", operator_of(cluster))
    client = TestClient(TestServer(create_app(agent), host="127.0.0.1"))
    await client.start_server()
    yield agent, keeper, client
    await client.close()
    agent.store.close()


def rotation(
    operator: nacl.signing.SigningKey,
    key: bytes,
    epoch: int,
    *,
    version: int | None = None,
    to: nacl.signing.SigningKey = NODE_KEY,
    revoked: tuple[str, ...] = (),
) -> dict[str, Any]:
    notice = NetKeyNotice(epoch, network_key_id(key), 600, "test", revoked)
    record = sign_netkey(operator, version if version is not None else 1000 + epoch, notice)
    sealed = nacl.public.SealedBox(to.verify_key.to_curve25519_public_key()).encrypt(key)
    return {"record": record_to_b64(record), "sealed_key": base64.b64encode(bytes(sealed)).decode()}


async def post(client: Client, doc: Any, key: nacl.signing.SigningKey | None) -> tuple[int, Any]:
    body = json.dumps(doc).encode()
    headers = sign_request(key, "POST", "/v1/netkey", body, time.time()) if key is not None else {}
    resp = await client.post("/v1/netkey", data=body, headers=headers)
    return resp.status, await resp.json()


async def test_a_signed_rotation_installs_persists_and_publishes(
    api: tuple[Agent, KeyKeeper, Client], cluster: Path, tmp_path: Path
) -> None:
    agent, keeper, client = api
    operator = operator_of(cluster)
    new_key = b"\x44" * 32
    status, body = await post(client, rotation(operator, new_key, 1), operator)
    assert status == 202, body
    assert body["epoch"] == 1 and body["key_id"] == network_key_id(new_key)
    assert new_key in keeper.keyring.keys
    # On disk before the 202, mode 0600, and the key itself never in the API's answers.
    path = tmp_path / "node" / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    held = load_key_file(tmp_path / "node")
    assert held is not None and new_key in held.keys
    shown = await (await client.get("/v1/netkey")).json()
    assert shown["epoch"] == 1 and shown["holds_current"] and shown["node_id"] == agent.node_id
    assert base64.b64decode(shown["public_key"]) == bytes(NODE_KEY.verify_key)
    assert base64.b64encode(new_key).decode() not in json.dumps(shown)
    # The record is held, persisted and gossiped like any operator record.
    assert agent.node.state.get("netkey", "current") is not None
    assert any(r.kind == "netkey" for r in agent.store.load_records())


async def test_unsigned_stale_and_misdirected_rotations_are_refused(
    api: tuple[Agent, KeyKeeper, Client], cluster: Path
) -> None:
    agent, keeper, client = api
    operator = operator_of(cluster)
    status, body = await post(client, rotation(operator, b"\x44" * 32, 1), None)
    assert status == 401, body
    stranger = nacl.signing.SigningKey(b"\x55" * 32)
    status, body = await post(client, rotation(stranger, b"\x44" * 32, 1), stranger)
    assert status == 401, body
    status, body = await post(client, rotation(operator, b"\x44" * 32, 1, to=OTHER_NODE), operator)
    assert status == 400 and "not sealed to this node" in body["error"]
    status, body = await post(client, rotation(operator, b"\x44" * 32, 1, revoked=(agent.node_id,)), operator)
    assert status == 400 and "revokes this very node" in body["error"]
    assert keeper.keyring.keys == (TOKEN_KEY,)
    status, body = await post(client, rotation(operator, b"\x44" * 32, 2), operator)
    assert status == 202, body
    for epoch in (1, 2):  # not newer than the epoch held, whatever the version
        status, body = await post(client, rotation(operator, b"\x66" * 32, epoch, version=9999), operator)
        assert status == 409 and "not newer" in body["error"], body
    assert b"\x66" * 32 not in keeper.keyring.keys


async def test_murmur_keys_rotate_through_the_api_updates_the_cluster_dir(
    api: tuple[Agent, KeyKeeper, Client], cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MURMUR_CLUSTER", raising=False)
    agent, keeper, client = api
    operator = operator_of(cluster)
    before = load_token(cluster / "join.token")
    node = NodeClient(str(client.make_url("")))
    node_id, epoch, new_id = await asyncio.to_thread(
        keys_cli.rotate, node, operator, cluster, grace_s=60, reason="manual"
    )
    assert (node_id, epoch) == (agent.node_id, 1)
    after = load_token(cluster / "join.token")
    # New tokens carry the new key first, the previous primary second; same invite.
    assert network_key_id(after.network_keys[0]) == new_id and after.network_keys[1] == before.network_keys[0]
    assert after.invite == before.invite
    assert stat.S_IMODE((cluster / "join.token").stat().st_mode) == 0o600
    assert cluster_network_epoch(cluster) == 1
    assert after.network_keys[0] in keeper.keyring.keys
    # The next rotation is epoch 2, even from a node that lags (the cluster dir remembers).
    _node_id, epoch, _new = await asyncio.to_thread(
        keys_cli.rotate, node, operator, cluster, grace_s=60, reason=""
    )
    assert epoch == 2
    with pytest.raises(CliError, match="--cluster DIR"):
        keys_cli.cmd_keys(keys_cli_args(node.base))


def keys_cli_args(node: str) -> argparse.Namespace:
    return argparse.Namespace(
        node=node, action="rotate", cluster=None, key=None, reason="", grace=60, json=False
    )


def test_a_restart_keeps_the_new_key_and_never_takes_back_a_retired_one(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir(mode=0o700)
    new_key = b"\x44" * 32
    keyring = Keyring([TOKEN_KEY])
    keeper = KeyKeeper(data, keyring)
    keeper.on_event(NetworkKeyInstalled(1, network_key_id(new_key), new_key))
    keeper.on_event(NetworkKeyInUse(1, network_key_id(new_key), new_key))
    # Killed here: the restart with the same old token seals with the new key, opens both.
    kept = startup_keys((TOKEN_KEY,), load_key_file(data))
    assert kept.keys == (new_key, TOKEN_KEY)
    keeper.on_event(NetworkKeysRetired(1, (TOKEN_KEY,)))
    kept = startup_keys((TOKEN_KEY,), load_key_file(data))
    assert kept.keys == (new_key,) and network_key_id(TOKEN_KEY) in kept.retired
    # A newer token (a key the node never saw) is taken as an extra key.
    newer = b"\x77" * 32
    assert startup_keys((newer, TOKEN_KEY), load_key_file(data)).keys == (new_key, newer)
    # The file is a secret and read bounded.
    (data / KEYS_FILE).chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(data)
    (data / KEYS_FILE).chmod(0o600)
    (data / KEYS_FILE).write_bytes(b"x" * 100_000)
    with pytest.raises(KeyFileError, match="too large"):
        load_key_file(data)
    save_key_file(data, KeyFile((new_key,)))
    assert load_key_file(data) == KeyFile((new_key,))


async def test_a_restarted_agent_keeps_the_rotated_key(tmp_path: Path, cluster: Path) -> None:
    operator = operator_of(cluster)
    agent, keeper = make_agent(tmp_path / "node", operator)
    client = TestClient(TestServer(create_app(agent), host="127.0.0.1"))
    await client.start_server()
    new_key = b"\x44" * 32
    status, body = await post(client, rotation(operator, new_key, 1), operator)
    assert status == 202, body
    await client.close()
    agent.store.close()
    again, keeper = make_agent(tmp_path / "node", operator)  # same data dir, same (old) token key
    assert keeper.keyring.primary == new_key
    core = again.netkeys
    assert core is not None and core.notice is not None and core.notice.epoch == 1 and core.has_current
    again.store.close()
