"""The `murmur` command line: the parser of every command, and how a command's problem is shown.

Each command lives in the module of its audience (agent, nodes, deploy, trust);
every one reports a problem as a CliError, printed here as
`murmur COMMAND: error: ...` with its exit status (1; 4 for a --wait that timed out).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from importlib import metadata

from mesh.cli import (
    agent,
    backup,
    deploy,
    events,
    fleet,
    infer,
    keys,
    nodes,
    placements,
    plan,
    regions,
    scale,
    trust,
)
from mesh.cli.client import DEFAULT_NODE_URL, EXIT_INTERRUPTED, EXIT_STATUS_HELP, CliError
from mesh.cli.helptext import HELP_WIDTH, command, examples_epilog
from sim.cli import register as register_sim

Handler = Callable[[argparse.Namespace], int]


def _cmd_demo(args: argparse.Namespace) -> int:
    from mesh.dev.demo import run_demo

    return run_demo(exit_after_s=args.exit_after, agents=args.agents, regions=args.regions)


def package_version() -> str:
    """The installed murmuration package's version (`murmur --version`)."""
    try:
        return metadata.version("murmuration")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed; pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    """The full `murmur` argument parser."""
    parser = argparse.ArgumentParser(
        prog="murmur",
        description="Murmuration: peer-to-peer orchestration of AI inference on edge devices.\n"
        "`murmur COMMAND --help` describes a command, with examples.",
        epilog=f"{EXIT_STATUS_HELP}\n\n"
        + examples_epilog(
            [
                "murmur demo",
                "murmur cluster init --out ./mycluster",
                "murmur --node http://10.0.0.5:7800 nodes",
                "murmur status",
                "murmur plan vibration.yaml",
                "murmur --cluster ./mycluster deploy vibration.yaml --wait",
            ]
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"murmur {package_version()}")
    node_help = f"a node's API URL (env MURMUR_NODE; default {DEFAULT_NODE_URL})"
    parser.add_argument("--node", default=os.environ.get("MURMUR_NODE", DEFAULT_NODE_URL), help=node_help)
    parser.add_argument("--key", default=None, help="operator.key file that signs commands (env MURMUR_KEY)")
    parser.add_argument(
        "--cluster", default=None, help="cluster dir holding operator.key (env MURMUR_CLUSTER)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    trust.register_cluster(sub)
    agent.register(sub)
    backup.register(sub, package_version())
    nodes.register(sub, node_help)
    regions.register(sub, node_help)
    placements.register(sub, node_help)
    deploy.register(sub, node_help)
    fleet.register(sub, node_help)
    scale.register(sub, node_help)
    plan.register(sub, node_help)
    trust.register_grants(sub, node_help)
    keys.register(sub, node_help)
    events.register(sub, node_help)
    infer.register(sub, node_help)

    demo = command(
        sub,
        "demo",
        summary="run a 6-agent, 2-region mesh on loopback and show it serve and heal",
        description="Start six agents in two regions on 127.0.0.1, deploy the example models, run an "
        "inference through a node without a replica, kill -9 a node holding one and show the mesh "
        "heal while requests keep being answered; then keep the mesh up (dashboard, murmur status) "
        "until Ctrl-C. Needs no root and no network. Exit status 1 if a step times out.",
        examples=["murmur demo", "murmur demo --exit-after 30", "murmur demo --agents 9 --regions 3"],
    )
    demo.add_argument(
        "--exit-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop the mesh SECONDS after the story instead of at Ctrl-C (for scripts and tests)",
    )
    demo.add_argument("--agents", type=int, default=6, help="agents in all (default 6)")
    demo.add_argument("--regions", type=int, default=2, help="regions, 1 to 5 (default 2)")
    demo.set_defaults(func=_cmd_demo)

    sim = register_sim(sub)
    sim.epilog = examples_epilog(
        [
            "murmur sim --nodes 1000 --regions 10 --scenario crash --seed 7",
            "murmur sim --nodes 200 --scenario partition --loss 0.05 --json",
        ]
    )
    sim.formatter_class = argparse.RawDescriptionHelpFormatter
    sim.description = textwrap.fill(sim.description or "", HELP_WIDTH)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `murmur` command; its exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except CliError as exc:
        print(f"murmur {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
