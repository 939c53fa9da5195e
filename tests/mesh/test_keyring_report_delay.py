"""`murmur agent --keyring-report-delay MIN-MAX`: how long after its keys change a member says
which it holds (its `keyring` record), drawn at random in [MIN, MAX]. Parsed and checked by the
CLI, carried by AgentOptions into the key core's NetKeyConfig, and shown by GET /v1/netkey."""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import pytest

from gossip.trust import StaticTrust
from inference.kinds import CHECKED_KINDS
from mesh.cli import args as flags
from mesh.cli.agent import agent_options
from mesh.cli.murmur import build_parser, main
from mesh.dev.localmesh import LocalMesh
from mesh.service.agent import AgentOptions
from mesh.service.netkeys import key_status
from node.netkeys import GossipPeers, NetKeyConfig, NetKeyCore
from tests.mesh.localnode import local_node
from tests.mesh.test_netkey_api import NODE_KEY, TOKEN_KEY


def _agent_argv(tmp_path: Path, *more: str) -> list[str]:
    return [
        "agent",
        "--data-dir",
        str(tmp_path / "n"),
        "--token",
        str(tmp_path / "join.token"),
        "--region",
        "r1",
        "--bind",
        "127.0.0.1:7946",
        "--api",
        "127.0.0.1:7800",
        *more,
    ]


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [("10s-30s", 10.0, 30.0), ("0.5-2", 0.5, 2.0), ("0", 0.0, 0.0), ("5", 5.0, 5.0), ("1m-2m", 60.0, 120.0)],
)
def test_a_delay_range_parses_to_seconds(text: str, low: float, high: float) -> None:
    assert flags.delay_range_s(text) == (low, high)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("30-10", "longer than the longest"),
        ("-1-2", "0 or more"),
        ("1--2", "0 or more"),
        ("x", "0 or more"),
        ("1-", "0 or more"),
        ("nan-1", "0 or more"),
        ("1-inf", "0 or more"),
        ("", "0 or more"),
    ],
)
def test_a_bad_delay_range_is_refused_with_what_to_type(text: str, why: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        flags.delay_range_s(text)
    assert why in str(refused.value) and "10s-30s" in str(refused.value)


def test_by_default_the_agent_reports_10_to_30_s_after_a_change(tmp_path: Path) -> None:
    options = agent_options(build_parser().parse_args(_agent_argv(tmp_path)))
    assert options.keyring_report_delay_s == (10.0, 30.0)
    assert options.netkey_config() == NetKeyConfig()
    bare = AgentOptions(data_dir=tmp_path, token=tmp_path / "t", region="r1", bind="x", api="y")
    assert bare.netkey_config() == NetKeyConfig()


def test_the_flag_reaches_the_key_cores_config(tmp_path: Path) -> None:
    args = build_parser().parse_args(_agent_argv(tmp_path, "--keyring-report-delay", "0.5-2"))
    options = agent_options(args)
    assert options.keyring_report_delay_s == (0.5, 2.0)
    config = options.netkey_config()
    assert (config.report_delay_min_s, config.report_delay_max_s) == (0.5, 2.0)
    assert config == NetKeyConfig(report_delay_min_s=0.5, report_delay_max_s=2.0)  # the rest unchanged


def test_the_agent_refuses_a_bad_range_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(_agent_argv(tmp_path, "--keyring-report-delay", "30s-10s"))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--keyring-report-delay" in err and "longer than the longest" in err
    assert not (tmp_path / "n").exists()  # nothing was started or written


def test_get_netkey_shows_the_delay_in_effect() -> None:
    gossip = local_node("me", StaticTrust(), kinds=CHECKED_KINDS).gossip
    core = NetKeyCore(
        "me",
        random.Random(1),
        node_key=NODE_KEY,
        peers=GossipPeers(gossip),
        keys=[TOKEN_KEY],
        now=time.monotonic(),
        config=NetKeyConfig(report_delay_min_s=0.5, report_delay_max_s=2.0),
    )
    shown = key_status(core, "me", bytes(NODE_KEY.verify_key))
    assert shown["report_delay_s"] == [0.5, 2.0]


def test_a_local_mesh_passes_its_agent_flags_to_every_agent(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path, profile="lan")
    mesh.init()
    mesh.agent_flags = ("--keyring-report-delay", "0.5-2")
    seed = mesh.add("a0", "r1")
    for agent in (seed, mesh.add("a1", "r1", [seed])):
        argv = mesh.command(agent)[3:]  # after `python -m mesh.cli`
        assert agent_options(build_parser().parse_args(argv)).keyring_report_delay_s == (0.5, 2.0)
