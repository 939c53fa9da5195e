"""`murmur regions` (who leads each region) and `murmur region reset-voters` (the operator's last resort)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from gossip.kinds import FLEET_SCOPE, VOTERS_RESET_KIND
from gossip.records import key_id, sign_record
from gossip.votersreset import MEMBERS_MAX, VotersReset, encode_reset
from mesh.cli import args as flags
from mesh.cli.client import CliError, NodeClient, version_text
from mesh.cli.helptext import command
from mesh.cli.signing import key_flags, resolve_key
from mesh.trust.deploy import record_to_b64


def _voters(row: dict[str, Any]) -> str:
    voters = row.get("voters")
    return ",".join(str(v) for v in voters) if isinstance(voters, list) and voters else "-"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Regions as an aligned text table: REGION LEADER TERM VOTERS ALIVE."""
    headers = ("REGION", "LEADER", "TERM", "VOTERS", "ALIVE")
    cells = [
        [
            str(r.get("region", "?")),
            str(r.get("leader") or ("(unreachable)" if r.get("error") else "(none)")),
            "-" if r.get("term") is None else str(r.get("term")),
            _voters(r),
            str(r.get("alive", "?")),
        ]
        for r in sorted(rows, key=lambda r: str(r.get("region")))
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _regions(node: NodeClient) -> list[dict[str, Any]]:
    rows = node.get("/v1/regions")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CliError(f"{node.base} answered something other than a region list; is it a murmur agent?")
    return rows


def cmd_regions(args: argparse.Namespace) -> int:
    node = NodeClient(args.node)
    rows = _regions(node)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_table(rows))
    for r in rows:
        if r.get("error"):
            print(f"region {r.get('region')}: {r['error']}", file=sys.stderr)
    return 0


def live_members(node: NodeClient, region: str, own: bool) -> list[str]:
    """The ids of a region's alive members as the node sees them (its own region, or forwarded)."""
    rows = node.get("/v1/nodes", None if own else {"region": region})
    if not isinstance(rows, list):
        raise CliError(f"{node.base} answered something other than a member list")
    if any(isinstance(r, dict) and r.get("last_known") for r in rows):
        raise CliError(
            f"region {region} did not answer (only its last-known members are known): a reset must name "
            f"the members alive now; run again with --node pointing at a node of {region}"
        )
    return sorted(
        str(r["id"]) for r in rows if isinstance(r, dict) and r.get("state") == "alive" and r.get("id")
    )


def cmd_reset_voters(args: argparse.Namespace) -> int:
    key = resolve_key(args)
    node = NodeClient(args.node)
    region = args.region
    rows = {str(r.get("region")): r for r in _regions(node)}
    row = rows.get(region)
    if row is None or row.get("error"):
        why = row.get("error") if row else f"{node.base} knows no region {region!r} ({', '.join(rows)})"
        raise CliError(f"cannot read region {region}'s election: {why}; use --node with a node of {region}")
    era = row.get("era")
    held = era.get("generation", 0) if isinstance(era, dict) else 0
    generation = (held if isinstance(held, int) else 0) + 1
    own = row.get("node") is not None  # the asked node's own region carries its role
    members = live_members(node, region, own)[:MEMBERS_MAX]
    if not members:
        raise CliError(f"region {region} has no alive member that {node.base} knows of; nothing to reset to")
    version = node.next_record_version(key_id(bytes(key.verify_key)))
    payload = encode_reset(VotersReset(region, generation, tuple(members)))
    record = sign_record(key, VOTERS_RESET_KIND, region, version, FLEET_SCOPE, payload)
    answer = node.submit(key, "POST", f"/v1/regions/{region}/reset-voters", {"record": record_to_b64(record)})
    result = {
        "region": region,
        "generation": generation,
        "members": members,
        "version": version,
        "node": node.base,
        "new": bool(answer.get("new", True)) if isinstance(answer, dict) else True,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"region {region}: voters reset (generation {generation}, record version {version_text(version)}) "
        f"accepted and persisted by {node.base}; its nodes re-seed the voters from {len(members)} live "
        f"members ({', '.join(members[:5])}{', ...' if len(members) > 5 else ''}) and elect a leader. "
        "Watch it with: murmur regions"
    )
    return 0


def register(sub: Any, node_help: str) -> None:
    """Add regions and region to the `murmur` subcommands."""
    regions = command(
        sub,
        "regions",
        summary="list every region with its leader, term and voters",
        description="List the regions the asked node knows: each one's leader, term, voters and members "
        "alive. Its own region is answered from its election; every other region is asked at one of its "
        "nodes (forwarded); a region that does not answer is shown as (unreachable).",
        examples=["murmur regions", "murmur --node http://10.0.0.5:7800 regions --json"],
    )
    regions.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    regions.add_argument("--json", action="store_true", help="print JSON instead of a table")
    regions.set_defaults(func=cmd_regions)

    region = command(
        sub,
        "region",
        summary="operator commands about one region (reset-voters)",
        description="Operator commands about one region. reset-voters is the last resort after a region "
        "lost a majority of its voters for good (no leader can be elected there): it re-seeds the voters "
        "from the members alive now.",
        examples=["murmur --cluster ./mycluster region reset-voters store-42"],
    )
    actions = region.add_subparsers(dest="action", metavar="ACTION", required=True)
    reset = command(
        actions,
        "reset-voters",
        summary="re-seed a region's voters from its live members (signed by an operator)",
        description="Read REGION's election and its alive members from the node, sign a voters-reset "
        "record with the operator key (the next generation, the members sorted) and submit it. Every node "
        "of REGION then adopts the new voters in a new era, from which the old voters can never win "
        "again. Use it only when a majority of the voters is gone for good: a working region elects and "
        "replaces voters by itself.",
        examples=[
            "murmur --cluster ./mycluster region reset-voters store-42",
            "murmur region reset-voters store-42 --node http://10.0.4.2:7800 --key operator.key --json",
        ],
    )
    reset.add_argument("region", type=flags.region, help="the region whose voters to reset")
    key_flags(reset, node_help)
    reset.add_argument("--json", action="store_true", help="print the result as JSON")
    reset.set_defaults(func=cmd_reset_voters)
