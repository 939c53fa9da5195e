"""`murmur` builds its whole parser for every command: that must not import the simulator,
the node's runtime or the model runtime (a CLI call on a busy device stays quick)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY_PREFIXES = (
    "sim.fleet",
    "sim.run",
    "sim.scenarios",
    "numpy",
    "onnxruntime",
    "aiohttp",
    "zeroconf",
    "node.",  # the node's protocol cores and, through them, gossip's
    "gossip.node",
    "gossip.membership",
)


def test_building_the_parser_imports_nothing_heavy() -> None:
    probe = (
        "import json, sys\n"
        "from mesh.cli.murmur import build_parser\n"
        "build_parser()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    loaded = json.loads(out)
    heavy = [m for m in loaded if m.startswith(HEAVY_PREFIXES)]
    assert heavy == []
    assert "sim.catalog" in loaded  # the sim command's choices come from the light catalog


def test_sim_help_lists_every_scenario() -> None:
    from mesh.cli.murmur import build_parser
    from sim.catalog import SCENARIOS

    parser = build_parser()
    sim_parser = parser._subparsers._group_actions[0].choices["sim"]  # type: ignore[union-attr]
    text = sim_parser.format_help()
    assert all(name in text for name in SCENARIOS)
