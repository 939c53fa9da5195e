"""`murmur nodes`: the members a node sees, in its region or (forwarded) another one."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from mesh.cli import args as flags
from mesh.cli.client import CliError, NodeClient, heard
from mesh.cli.helptext import command


def _gib(value: Any) -> str:
    return f"{value / 2**30:.1f}G" if isinstance(value, int | float) else "?"


def format_inventory(inv: Any) -> str:
    """A compact inventory cell: cores, free memory, accelerators (`8c 3.2G CUDA,CPU`); `-` if unknown."""
    if not isinstance(inv, dict):
        return "-"
    accelerators = inv.get("accelerators")
    names = (
        [str(a).removesuffix("ExecutionProvider") for a in accelerators if isinstance(a, str)]
        if isinstance(accelerators, list)
        else []
    )
    return f"{inv.get('cpu_count', '?')}c {_gib(inv.get('memory_available_bytes'))} {','.join(names) or '-'}"


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "gateway":
        return "yes" if row.get(key) else "no"
    if key == "inventory":
        return format_inventory(row.get(key))
    if key == "state" and row.get("last_known"):
        return f"{row.get(key)} (last known)"
    return str(row.get(key, ""))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Members as an aligned text table."""
    headers = ("ID", "REGION", "ADDR", "STATE", "INCARNATION", "GATEWAY", "API", "INVENTORY")
    keys = ("id", "region", "addr", "state", "incarnation", "gateway", "api", "inventory")
    ordered = sorted(rows, key=lambda r: (str(r.get("region")), str(r.get("id"))))
    cells = [[_cell(r, k) for k in keys] for r in ordered]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def cmd_nodes(args: argparse.Namespace) -> int:
    node = NodeClient(args.node)
    rows = node.get("/v1/nodes", {"region": args.region} if args.region else None)
    if not isinstance(rows, list):
        raise CliError(f"{node.base} answered something other than a member list; is it a murmur agent?")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    heard_unix = [r["last_heard_unix"] for r in rows if isinstance(r, dict) and r.get("last_known")]
    if heard_unix and isinstance(heard_unix[0], int | float):
        print(
            f"region {args.region} did not answer: its last-known members, as {node.base} last heard "
            f"them at {heard(heard_unix[0])}; their states may have changed since"
        )
    print(format_table(rows))
    return 0


def register(sub: Any, node_help: str) -> None:
    """Add nodes to the `murmur` subcommands."""
    nodes = command(
        sub,
        "nodes",
        summary="list the members a node sees",
        description="List the members of the asked node's region (or, with --region, another region's, "
        "forwarded there) with their state, gateway flag, API address and inventory.",
        examples=[
            "murmur --node http://10.0.0.5:7800 nodes",
            "murmur nodes --region store-42 --json",
        ],
    )
    nodes.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    nodes.add_argument(
        "--region",
        type=flags.region,
        help="another region's members (forwarded there; if it does not answer, its last-known "
        "members, marked (last known))",
    )
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    nodes.set_defaults(func=cmd_nodes)
