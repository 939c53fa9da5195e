"""What an agent says when something is wrong, as a new user meets it: a --bind address this
host does not have, a join through mDNS, an invite for another region, a refused inventory."""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path

import pytest

from gossip.admission import make_admission, sign_invite
from gossip.events import AdmissionRefused
from gossip.trust import StaticTrust
from mesh.cli.murmur import main
from mesh.service.admission import describe_refusal
from mesh.service.agent import Agent, AgentOptions
from mesh.service.launch import describe_seeds, listen_problem, own_regions
from mesh.service.store import Store
from tests.gossip.test_admission import node_key
from tests.inference.test_inventory import BASE
from tests.mesh.localnode import local_node
from tests.mesh.test_deploy_api import OPERATOR, SyncRuntime, _FakeIdentity
from tests.mesh.test_inventory import make_node_agent, make_untrusting

NOT_HERE = "192.0.2.1"  # TEST-NET-1: never an address of a test machine


def _bind_error(host: str, port: int) -> OSError:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    raise AssertionError(f"binding {host}:{port} worked")


def test_an_address_this_host_does_not_have_is_not_blamed_on_the_port() -> None:
    exc = _bind_error(NOT_HERE, 7946)
    assert exc.errno == errno.EADDRNOTAVAIL
    message = listen_problem("--bind", f"{NOT_HERE}:7946", exc)
    assert message.startswith(f"--bind {NOT_HERE}:7946: {NOT_HERE} is not an address of this host")
    assert "port" not in message and "ip -brief addr" in message


def test_a_busy_port_is_named_as_such() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        exc = _bind_error("127.0.0.1", port)
    assert listen_problem("--api", f"127.0.0.1:{port}", exc) == (
        f"--api 127.0.0.1:{port}: port {port} is in use; pick a free port or stop what uses it"
    )


def test_the_agent_command_names_a_bind_address_that_is_not_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["cluster", "init", "--out", str(tmp_path / "c")])
    capsys.readouterr()
    argv = ["agent", "--data-dir", str(tmp_path / "n"), "--token", str(tmp_path / "c" / "join.token")]
    argv += ["--region", "r1", "--bind", f"{NOT_HERE}:7946", "--api", "127.0.0.1:0", "--no-mdns"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"murmur agent: error: --bind {NOT_HERE}:7946: {NOT_HERE} is not an address of this host" in err


def test_an_agent_without_seeds_says_how_it_finds_peers() -> None:
    assert describe_seeds(["10.0.0.4:7946"], ["10.0.0.5"]) == "10.0.0.4:7946"
    with_mdns = describe_seeds([], ["10.0.0.5"])
    assert with_mdns == "none (peers are found by mDNS on 10.0.0.5)" and "first node" not in with_mdns
    assert describe_seeds([], []) == "none (no mDNS: this node waits for others to join through it)"


def test_a_wrong_region_invite_names_both_regions_at_the_node_itself() -> None:
    invite = sign_invite(OPERATOR, "c1", region="store-17", expires_at_s=2_000_000_000, nonce=b"\x01" * 16)
    admission = make_admission(node_key(1), invite, region="store-18", admitted_at_s=1_700_000_000)
    message = describe_refusal("invite_wrong_region", own_regions(admission, "store-18"))
    assert message == (
        "invite_wrong_region: the invite is for region 'store-17' and the node is in region 'store-18'; "
        "start it with --region store-17, or give it a token for its region (murmur invite --region store-18)"
    )
    assert describe_refusal("invite_wrong_region") == "invite_wrong_region: the invite is for another region"


def _peer(data_dir: Path) -> Agent:
    """An agent of region north in cluster c1, whose root operator is OPERATOR."""
    data_dir.mkdir()
    trust = StaticTrust(operators=[bytes(OPERATOR.verify_key)], cluster_id="c1")
    node = local_node("aaaaaaaaaaaaaaaa", trust)
    runtime = SyncRuntime()
    runtime.node = node
    options = AgentOptions(data_dir=data_dir, token=data_dir / "t", region="north", bind="x", api="y")
    store = Store.open(data_dir, "aaaaaaaaaaaaaaaa")
    return Agent(options, _FakeIdentity(), store, node, runtime, trust)  # type: ignore[arg-type]


def test_a_peer_refusing_a_wrong_region_invite_names_both_regions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = _peer(tmp_path / "node")
    try:
        invite = sign_invite(OPERATOR, "c1", region="south", expires_at_s=2_000_000_000, nonce=b"\x02" * 16)
        joiner = make_admission(node_key(2), invite, region="north", admitted_at_s=1_700_000_000)
        assert agent.node.state.merge(0.0, [joiner]) == []
        assert agent.node.state.refused_regions(joiner.key) == ("north", "south")
        with caplog.at_level("WARNING", logger="murmur.agent"):
            agent._on_event(AdmissionRefused(joiner.key, "invite_wrong_region"))
        assert (
            f"refused to admit node {joiner.key}: invite_wrong_region: the invite is for region 'south' and "
            "the node is in region 'north'"
        ) in caplog.text
    finally:
        agent.store.close()


def test_a_refused_own_inventory_is_one_short_warning_with_details_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_node_agent(tmp_path / "node")
    try:
        untrusting = make_untrusting(agent)
        with caplog.at_level(logging.DEBUG, logger="murmur.agent"):
            assert not untrusting.publish_inventory(BASE)
        (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
        text = warning.getMessage()
        assert "(drop_unknown_author)" in text and text.count("drop_") == 1 and len(text) < 200
        (debug,) = [r for r in caplog.records if r.levelno == logging.DEBUG]
        assert "drop_malformed" in debug.getMessage()  # every counter, for whoever digs
    finally:
        agent.store.close()
