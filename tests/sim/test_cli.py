"""`python -m sim` and the `sim` subcommand that mesh/cli/murmur.py registers."""

from __future__ import annotations

import argparse
import json

import pytest

from sim.cli import main, register

REQUIRED_KEYS = [
    "seed",
    "nodes",
    "regions",
    "scenario",
    "profile",
    "sim_s",
    "wall_s",
    "peak_rss_bytes",
    "detection",
    "false_dead",
    "dissemination",
    "traffic",
    "partition",
    "invariants",
]


def test_json_has_the_issue_keys_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "--nodes",
            "12",
            "--regions",
            "2",
            "--scenario",
            "crash",
            "--seed",
            "3",
            "--duration",
            "20",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    report = json.loads(out)
    assert list(report)[: len(REQUIRED_KEYS)] == REQUIRED_KEYS
    assert status == (1 if report["invariants"]["violations"] else 0)
    # 1% of the nodes (one), and one replica holder per region (sim/placewatch.py crash_holders).
    assert report["detection"]["crashed"] == report["faults"]["crashes"] == 1 + 2
    for key in ("first_suspect_s", "all_dead_s"):
        assert set(report["detection"][key]) == {"p50", "p99", "max"}
    assert set(report["dissemination"]) >= {"s_all", "rounds_all", "region_s_all"}
    assert set(report["traffic"]) >= {"bytes_per_node_s", "msgs_per_node_s"}
    assert report["partition"] is None
    assert set(report["invariants"]) >= {"checked", "violations"}
    assert report["peak_rss_bytes"] > 1 << 20


def test_human_summary(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--nodes", "8", "--scenario", "steady", "--duration", "15"])
    out = capsys.readouterr().out
    assert out.startswith("sim: steady  8 nodes in 1 regions")
    assert "false dead: 0" in out


def test_bad_arguments_name_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "4", "--duration", "5"]) == 2
    assert "use at least 20" in capsys.readouterr().err
    assert main(["--nodes", "2", "--regions", "3"]) == 2
    assert "at least one node per region" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--scenario", "meteor"])


def test_register_adds_the_sim_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="murmur")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(
        ["sim", "--nodes", "10", "--loss", "0.05", "--profile", "wan", "--json", "--encrypt"]
    )
    assert args.command == "sim" and args.nodes == 10 and args.loss == 0.05 and args.encrypt
    assert callable(args.func)
