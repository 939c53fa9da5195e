"""mesh/service/inventory.py (collect) and the inventory in the agent and API (rules: tests/inference)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.signing
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gossip.records import Record, sign_record
from gossip.trust import StaticTrust
from inference.inventory import INVENTORY_REFRESH_S, encode
from mesh.cli.murmur import build_parser
from mesh.cli.nodes import format_inventory, format_table
from mesh.service import inventory
from mesh.service.agent import Agent, AgentOptions
from mesh.service.inventory import collect
from mesh.service.store import Store
from mesh.trust.identity import Identity, node_id_for
from tests.inference.test_inventory import BASE, GIB
from tests.mesh.localnode import local_node
from tests.mesh.test_deploy_api import SyncRuntime, served

# --- collect -------------------------------------------------------------------------------------


def test_collect_on_this_machine_is_plausible(tmp_path: Path) -> None:
    inv = collect({"zone": "a"}, "north", tmp_path)
    assert inv.cpu_count >= 1
    assert inv.load_1m >= 0 and 0 <= inv.cpu_percent <= 100
    assert 0 < inv.memory_available_bytes <= inv.memory_total_bytes
    assert inv.disk_free_bytes > 0
    assert all(isinstance(a, str) for a in inv.accelerators)
    assert inv.os and inv.arch and inv.python.startswith("3.")
    assert inv.labels == {"zone": "a"} and inv.region == "north" and inv.models == ()


def test_collect_tolerates_a_missing_onnxruntime_and_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The probe's child fails as it would where onnxruntime is not installed.
    monkeypatch.setattr(inventory, "PROBE_CODE", "raise ImportError('no onnxruntime here')")
    monkeypatch.setattr(inventory, "_probed", None)
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    inv = collect({}, "north", tmp_path / "missing")
    assert inv.accelerators == () and inv.disk_free_bytes == 0


def test_a_provider_that_runs_nothing_on_the_device_is_not_an_accelerator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # onnxruntime's pip build lists the Azure provider (remote endpoints) on every machine.
    listed = ["AzureExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(inventory, "PROBE_CODE", f"print({json.dumps(json.dumps(listed))})")
    monkeypatch.setattr(inventory, "_probed", None)
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    inv = collect({}, "north", tmp_path)
    assert inv.accelerators == ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.mark.parametrize(
    "answer",
    [
        "print('not json')",
        """print('{"a": 1}')""",
        "print('[1, 2]')",
        """print('[' + ','.join(['"p"'] * 33) + ']')""",
        "print('[' * 100000)",
        "import time; time.sleep(5)",
    ],
    ids=["not-json", "not-a-list", "not-strings", "too-many", "deep-nesting", "hangs"],
)
def test_a_probe_that_answers_nonsense_means_no_accelerators(
    monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    monkeypatch.setattr(inventory, "PROBE_CODE", answer)
    assert inventory.probe_accelerators(timeout_s=2.0) == ()


def test_a_probe_that_cannot_start_means_no_accelerators(tmp_path: Path) -> None:
    assert inventory.probe_accelerators(python=str(tmp_path / "no-python")) == ()


def test_an_idle_agents_modules_and_inventory_import_neither_onnxruntime_nor_numpy() -> None:
    # In a fresh interpreter, with what `murmur agent` imports at start (the CLI, the node's
    # runtime and its API, /v2 included): collecting the inventory (what an idle agent does every
    # INVENTORY_CHECK_S) must leave onnxruntime and numpy unimported; only serving a model needs
    # them (docs/benchmarks.md, issue 11's footprint).
    code = (
        "import json, sys\n"
        "import mesh.cli.murmur, mesh.service.launch, mesh.service.agent\n"
        "from mesh.service.inventory import collect\n"
        "first = collect({}, 'north')\n"
        "again = collect({}, 'north')\n"
        "print(json.dumps({'imported': sorted(m for m in ('onnxruntime', 'numpy') if m in sys.modules),"
        " 'accelerators': list(first.accelerators),"
        " 'again': list(again.accelerators)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["imported"] == []
    assert "CPUExecutionProvider" in doc["accelerators"] and doc["again"] == doc["accelerators"]


# --- CLI ----------------------------------------------------------------------------------------


def test_label_flag_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["agent", "--data-dir", "d", "--token", "t", "--region", "r", "--bind", "h:1", "--api", "h:2"]
    args = build_parser().parse_args([*base, "--label", "zone=a", "--label", "gpu=none"])
    assert args.label == [("zone", "a"), ("gpu", "none")]
    for bad in ("zone", "=a", "bad key=a"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, "--label", bad])
        assert "is not a label; use KEY=VALUE" in capsys.readouterr().err


def test_nodes_table_shows_a_compact_inventory() -> None:
    summary = {
        "cpu_count": 8,
        "memory_available_bytes": 3 * GIB,
        "accelerators": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "labels": {},
    }
    assert format_inventory(summary) == "8c 3.0G CUDA,CPU"
    assert format_inventory(None) == "-"
    table = format_table([{"id": "x", "region": "r", "gateway": True, "inventory": summary}])
    assert "INVENTORY" in table.splitlines()[0] and "8c 3.0G CUDA,CPU" in table


# --- the agent publishes, the API shows -----------------------------------------------------------

NODE_KEY = nacl.signing.SigningKey(b"\x07" * 32)
NODE_ID = node_id_for(bytes(NODE_KEY.verify_key))
Client = TestClient[web.Request, web.Application]


def make_node_agent(data_dir: Path) -> Agent:
    data_dir.mkdir(exist_ok=True)
    identity = Identity(NODE_ID, NODE_KEY)
    trust = StaticTrust(nodes=[identity.public_key])
    node = local_node(NODE_ID, trust)
    store = Store.open(data_dir, NODE_ID)
    runtime = SyncRuntime()
    runtime.node = node
    options = AgentOptions(
        data_dir=data_dir,
        token=data_dir / "t",
        region="north",
        bind="x",
        api="y",
        labels=(("zone", "a"),),
    )
    return Agent(options, identity, store, node, runtime, trust)  # type: ignore[arg-type]


@pytest.fixture
async def node_api(tmp_path: Path) -> AsyncIterator[tuple[Agent, Client]]:
    async for served_api in served(make_node_agent(tmp_path / "node")):
        yield served_api


async def test_own_inventory_appears_in_the_api_after_publishing(node_api: tuple[Agent, Client]) -> None:
    agent, client = node_api
    body = await (await client.get(f"/v1/nodes/{NODE_ID}")).json()
    assert body["id"] == NODE_ID and body["inventory"] is None

    assert agent.refresh_inventory(1000.0)
    record = agent.node.state.get("inventory", NODE_ID)
    assert record is not None and record.scope == "region:north" and record.author == NODE_ID
    assert [r.key for r in agent.store.load_records()] == [NODE_ID]  # persisted like any record

    body = await (await client.get(f"/v1/nodes/{NODE_ID}")).json()
    inv = body["inventory"]
    assert inv["version"] == record.version and inv["labels"] == {"zone": "a"}
    assert inv["cpu_count"] >= 1 and inv["region"] == "north"
    listed = await (await client.get("/v1/nodes")).json()
    assert listed[0]["inventory"] == {
        k: inv[k] for k in ("cpu_count", "load_1m", "memory_available_bytes", "accelerators", "labels")
    }

    # Nothing meaningful changed: no new record until the refresh is due; versions only grow.
    assert not agent.refresh_inventory(1005.0)
    assert agent.refresh_inventory(1000.0 + INVENTORY_REFRESH_S)
    newer = agent.node.state.get("inventory", NODE_ID)
    assert newer is not None and newer.version > record.version


def inventory_record(version: int) -> Record:
    return sign_record(NODE_KEY, "inventory", NODE_ID, version, "region:north", encode(BASE))


def test_inventory_version_stays_above_a_restored_counter(tmp_path: Path) -> None:
    agent = make_node_agent(tmp_path / "node")
    try:
        far_future = 2**62
        assert agent.node.state.restore([inventory_record(far_future)]) == 1  # as after a restart
        assert agent.inventory_version() == far_future + 1
        assert agent.publish_inventory(BASE)
        held = agent.node.state.get("inventory", NODE_ID)
        assert held is not None and held.version == far_future + 1
    finally:
        agent.store.close()


def test_refused_inventory_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent = make_node_agent(tmp_path / "node")
    try:
        untrusting = make_untrusting(agent)
        with caplog.at_level("WARNING", logger="murmur.agent"):
            assert not untrusting.publish_inventory(BASE)
            assert not untrusting.publish_inventory(BASE)
        assert caplog.text.count("own inventory record") == 1
        assert "drop_unknown_author" in caplog.text
    finally:
        agent.store.close()


def make_untrusting(agent: Agent) -> Agent:
    """An agent whose node does not trust its own key (as a peer whose trust lacks node keys)."""
    node = local_node(NODE_ID, StaticTrust(), seed=2)
    runtime = SyncRuntime()
    runtime.node = node
    return Agent(agent.options, agent.identity, agent.store, node, runtime)  # type: ignore[arg-type]
