"""`murmur plan FILE`: a dry run of a manifest, as `nomad job plan` is: where its replicas would
go on the live fleet now, what would move, what cannot be placed and why. Nothing changes.

The manifest is read as `murmur deploy` reads it (an `artifact.file` is hashed here, not
uploaded) and sent unsigned to POST /v1/plan: a plan writes nothing, so it needs no operator
key. Each region computes its part on its own nodes (docs/api.md, "Plan").
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mesh.cli.client import EXIT_FAILED, EXIT_OK, CliError, NodeClient
from mesh.cli.helptext import command
from mesh.cli.manifest import read_manifest_and_artifact
from mesh.cli.tables import aligned


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _change_text(change: Mapping[str, Any]) -> str:
    kind = change.get("kind")
    if kind == "added":
        return f"added on {change.get('to')}"
    if kind == "moved":
        return f"moves {change.get('from')} -> {change.get('to')} ({change.get('reason')})"
    return f"removed from {change.get('from')} ({change.get('reason')})"


def _region_lines(name: str, row: Mapping[str, Any]) -> list[str]:
    region, wanted = row.get("region"), row.get("wanted", 0)
    if row.get("error"):
        return [f"region {region}: not planned, wants {wanted}: {row['error']}"]
    replicas = _dicts(row.get("replicas"))
    changes = _dicts(row.get("changes"))
    own = {c.get("slot"): c for c in changes if c.get("deployment") == name and c.get("kind") != "removed"}
    lines = [
        f"region {region}: {len(replicas)} of {wanted} replica(s) placed (computed by {row.get('node')})"
    ]
    if replicas:
        cells = [
            [
                str(r.get("slot")),
                str(r.get("node")),
                str(r.get("state")),
                _change_text(own[r.get("slot")]) if r.get("slot") in own else "stays",
            ]
            for r in replicas
        ]
        lines += ["  " + line for line in aligned(("REPLICA", "NODE", "STATE", "CHANGE"), cells).splitlines()]
    others = [c for c in changes if c.get("deployment") != name or c.get("kind") == "removed"]
    lines += [f"  {c.get('deployment')}/{c.get('slot')}: {_change_text(c)}" for c in others]
    lines += [
        f"  cannot place {u.get('deployment')}/{u.get('slot')}: {u.get('reason')}"
        for u in _dicts(row.get("unplaced"))
    ]
    return lines


def format_plan(doc: Mapping[str, Any]) -> str:
    """A plan for people: per region where each replica would run and what changes, then the verdict."""
    name = str(doc.get("deployment"))
    rows = _dicts(doc.get("regions"))
    shown = [r for r in rows if r.get("wanted") or r.get("changes") or r.get("unplaced") or r.get("error")]
    lines = [f"plan of deployment {name} (asked {doc.get('node')}; a dry run: nothing changes)"]
    for row in sorted(shown, key=lambda r: str(r.get("region"))):
        lines += ["", *_region_lines(name, row)]
    if not shown:
        lines += ["", "it asks no replica of any region this node knows"]
    lines += [f"warning: {w}" for w in doc.get("warnings") or []]
    unplaced = sum(len(_dicts(r.get("unplaced"))) for r in rows)
    unplanned = [str(r.get("region")) for r in rows if r.get("error") and r.get("wanted")]
    if doc.get("fits"):
        lines += ["", "every replica would be placed"]
    else:
        why = [f"{unplaced} replica(s) would be unplaced"] if unplaced else []
        why += [f"not planned in {', '.join(unplanned)}"] if unplanned else []
        lines += ["", "does not fit: " + "; ".join(why or ["see above"])]
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    deployment, _artifact = read_manifest_and_artifact(Path(args.file))
    node = NodeClient(args.node)
    body = json.dumps({"manifest": deployment.to_doc()}).encode("utf-8")
    status, doc = node.exchange("POST", "/v1/plan", body=body, headers={"Content-Type": "application/json"})
    if status != 200 or not isinstance(doc, dict):
        message = doc.get("error") if isinstance(doc, dict) else doc
        raise CliError(f"{node.url('/v1/plan')}: HTTP {status}: {message}")
    print(json.dumps(doc, indent=2) if args.json else format_plan(doc))
    return EXIT_OK if doc.get("fits") else EXIT_FAILED


def register(sub: Any, node_help: str) -> None:
    """Add plan to the `murmur` subcommands."""
    plan = command(
        sub,
        "plan",
        summary="dry run: where a manifest's replicas would go, what would move, what cannot be placed",
        description="Ask every region where the manifest's replicas would run if it were deployed now: "
        "each region runs the placement its leader would run, on its live nodes, with the manifest in "
        "place of the deployment of its name. Shows each replica's node, what would move (a displaced "
        "lower-priority replica too) and what no node could take, with why. Nothing changes and nothing "
        "is signed. Exit status 0: every replica would be placed; 1: some would not, or a region it "
        "needs did not answer.",
        examples=[
            "murmur plan vibration.yaml",
            "murmur --node http://10.0.0.5:7800 plan vibration.yaml --json",
        ],
    )
    plan.add_argument("file", help="the manifest file (YAML or JSON), as for murmur deploy")
    plan.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    plan.add_argument(
        "--json", action="store_true", help="print POST /v1/plan's answer (the exit status stays)"
    )
    plan.set_defaults(func=cmd_plan)
