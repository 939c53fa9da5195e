"""`murmur sim` and `python -m sim`: run one deterministic fleet simulation.

    murmur sim --nodes 1000 --regions 10 --scenario crash --seed 1 --duration 60 --loss 0.05 --json
    murmur sim --swarm 1-200          # a random fault schedule per seed, on a small fleet
    murmur sim --scenario crash --report out/   # and draw the run: out/index.html, out/*.png

mesh/cli/murmur.py calls `register(subparsers)`; the parser it adds sets `func`, which
takes the parsed arguments and returns the exit status (1 when an invariant
was violated, 2 on bad arguments).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim.catalog import SCENARIOS, SWARM_DURATION_S, SWARM_NODES, SWARM_REGIONS

# The simulator itself (every protocol core, matplotlib for --report) is imported by the
# functions that run it, not here: `murmur` builds this parser for every command.


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
    parser.add_argument(
        "--nodes",
        type=_positive_int,
        default=None,
        help=f"fleet size (default 100; {SWARM_NODES} with --swarm)",
    )
    parser.add_argument(
        "--regions",
        type=_positive_int,
        default=None,
        help=f"number of regions (default 1; {SWARM_REGIONS} with --swarm)",
    )
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default="steady", help="what to inject (default steady)"
    )
    parser.add_argument("--seed", type=int, default=1, help="the seed that reproduces the run (default 1)")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"simulated seconds, at least 20 (default 60; {SWARM_DURATION_S:g} with --swarm)",
    )
    parser.add_argument(
        "--swarm",
        metavar="SEEDS",
        default=None,
        help="run the swarm scenario once per seed (1-200 or 1,5,9-12); list seeds that broke an invariant",
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
    parser.add_argument(
        "--report",
        metavar="DIR",
        type=Path,
        default=None,
        help="also draw the run: DIR/index.html and one PNG per chart (needs: pip install -e '.[report]')",
    )


def _swarm(args: argparse.Namespace) -> int:
    """Run the swarm over the seeds; print the failing seeds (or, with --json, the summary)."""
    from sim.report import to_json
    from sim.swarmrun import parse_seeds, run_swarm

    try:
        seeds = parse_seeds(args.swarm)
        summary_ = run_swarm(
            seeds,
            args.nodes or SWARM_NODES,
            args.regions or SWARM_REGIONS,
            args.duration or SWARM_DURATION_S,
        )
    except ValueError as exc:
        print(f"murmur sim: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(to_json(summary_))
    else:
        print(
            f"swarm: {summary_['seeds']} seeds, {summary_['failed_count']} broke an invariant "
            f"({summary_['wall_s']} s wall, {summary_['wall_s_per_seed']} s per seed)"
        )
        for failure in summary_["failed"]:
            print(f"  seed {failure['seed']}: {failure['violations'][0]}")
            print(f"    replay: {failure['command']}")
    return 1 if summary_["failed"] else 0


def _writable(directory: Path) -> str | None:
    """None when directory exists (or was made) and is a folder; else what is wrong."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--report {directory}: cannot make that folder ({exc.strerror or exc}); choose another"
    if not os.access(directory, os.W_OK):
        return f"--report {directory}: that folder is not writable; choose another"
    return None


def command(args: argparse.Namespace) -> int:
    """Run the simulation the arguments describe and print its report."""
    from sim.picturepage import write_report
    from sim.pictures import matplotlib_missing
    from sim.report import summary, to_json
    from sim.run import reproduce_command, run_simulation

    if args.swarm is not None:
        if args.report is not None:
            print(
                "murmur sim: --report draws one run, not a swarm; replay a seed with "
                "--scenario swarm --seed S --report DIR",
                file=sys.stderr,
            )
            return 2
        return _swarm(args)
    series: dict[str, Any] | None = None
    if args.report is not None:
        # Before the run, which may take minutes: refuse now what would fail after it.
        problem = matplotlib_missing() or _writable(args.report)
        if problem is not None:
            print(f"murmur sim: {problem}", file=sys.stderr)
            return 2
        series = {}
    try:
        report: dict[str, Any] = run_simulation(
            args.nodes or 100,
            args.regions or 1,
            args.scenario,
            args.seed,
            60.0 if args.duration is None else args.duration,
            args.loss,
            args.profile,
            encrypt=args.encrypt,
            series_out=series,
        )
    except ValueError as exc:
        print(f"murmur sim: {exc}", file=sys.stderr)
        return 2
    print(to_json(report) if args.json else summary(report))
    if series is not None:
        command_ = reproduce_command(
            report["nodes"],
            report["regions"],
            report["scenario"],
            report["seed"],
            report["sim_s"],
            report["loss"],
            report["profile"],
            report["encrypt"],
        )
        command_ += f" --report {shlex.quote(str(args.report))}"
        page = write_report(args.report, series, report, command_)
        # With --json, stdout stays one JSON object.
        print(f"pictures of the run: {page}", file=sys.stderr if args.json else sys.stdout)
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
