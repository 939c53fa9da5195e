"""The `murmur` command line: the parser of every command, and how a command's problem is shown.

Each command lives in the module of its audience (agent, nodes, deploy, trust);
every one reports a problem as a CliError, printed here as
`murmur COMMAND: error: ...` with exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from mesh.cli import agent, deploy, keys, nodes, trust
from mesh.cli.client import (
    DEFAULT_NODE_URL,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
)
from sim.cli import register as register_sim

Handler = Callable[[argparse.Namespace], int]


def _cmd_demo(args: argparse.Namespace) -> int:
    from mesh.dev.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    """The full `murmur` argument parser."""
    parser = argparse.ArgumentParser(
        prog="murmur",
        description="Murmuration: peer-to-peer edge AI mesh",
        epilog=f"exit status: {EXIT_OK} done; {EXIT_FAILED} refused or failed (the message says why); "
        f"{EXIT_USAGE} usage; {EXIT_UNREACHABLE} deploy --wait: every reachable region holds it, "
        "some regions are unreachable",
    )
    node_help = f"a node's API URL (env MURMUR_NODE; default {DEFAULT_NODE_URL})"
    parser.add_argument("--node", default=os.environ.get("MURMUR_NODE", DEFAULT_NODE_URL), help=node_help)
    parser.add_argument("--key", default=None, help="operator.key file that signs commands (env MURMUR_KEY)")
    parser.add_argument(
        "--cluster", default=None, help="cluster dir holding operator.key (env MURMUR_CLUSTER)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    trust.register_cluster(sub)
    agent.register(sub)
    nodes.register(sub, node_help)
    deploy.register(sub, node_help)
    trust.register_grants(sub, node_help)
    keys.register(sub, node_help)

    demo = sub.add_parser("demo", help="run a 6-agent, 2-region mesh on loopback and show it heal")
    demo.set_defaults(func=_cmd_demo)

    register_sim(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `murmur` command; its exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except CliError as exc:
        print(f"murmur {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
