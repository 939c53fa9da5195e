"""`murmur sim` and `python -m sim`: run one deterministic fleet simulation.

    murmur sim --nodes 1000 --regions 10 --scenario crash --seed 1 --duration 60 --loss 0.05 --json

mesh/cli/murmur.py calls `register(subparsers)`; the parser it adds sets `func`, which
takes the parsed arguments and returns the exit status (1 when an invariant
was violated, 2 on bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sim.report import summary, to_json
from sim.run import run_simulation
from sim.scenarios import SCENARIOS


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability like 0.05, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's flags."""
    parser.add_argument("--nodes", type=_positive_int, default=100, help="fleet size (default 100)")
    parser.add_argument("--regions", type=_positive_int, default=1, help="number of regions (default 1)")
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default="steady", help="what to inject (default steady)"
    )
    parser.add_argument("--seed", type=int, default=1, help="the seed that reproduces the run (default 1)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="simulated seconds, at least 20 (default 60)"
    )
    parser.add_argument(
        "--loss",
        type=_probability,
        default=None,
        help="packet loss on every link (default: 0.10 for loss, else 0)",
    )
    parser.add_argument(
        "--profile", choices=("lan", "wan", "local"), default="lan", help="region pool timing (default lan)"
    )
    parser.add_argument(
        "--encrypt", action="store_true", help="seal every frame with the real envelope (slower)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def command(args: argparse.Namespace) -> int:
    """Run the simulation the arguments describe and print its report."""
    try:
        report: dict[str, Any] = run_simulation(
            args.nodes,
            args.regions,
            args.scenario,
            args.seed,
            args.duration,
            args.loss,
            args.profile,
            encrypt=args.encrypt,
        )
    except ValueError as exc:
        print(f"murmur sim: {exc}", file=sys.stderr)
        return 2
    print(to_json(report) if args.json else summary(report))
    return 1 if report["invariants"]["violations"] else 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `sim` subcommand to a parent parser's subparsers; its `func` runs it."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sim",
        help="simulate a fleet running the real gossip core on a virtual clock",
        description="Simulate N nodes of the real gossip core on a virtual clock; one seed reproduces a run.",
    )
    add_arguments(parser)
    parser.set_defaults(func=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sim [flags]`."""
    parser = argparse.ArgumentParser(prog="python -m sim", description="Deterministic fleet simulator.")
    add_arguments(parser)
    return command(parser.parse_args(argv))
