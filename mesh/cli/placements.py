"""`murmur placements` (where each replica runs) and the operator's commands to placement:
`cordon`, `uncordon`, `drain` (a node) and `rebalance` (a region), signed by an operator key."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from gossip.kinds import FLEET_SCOPE, REBALANCE_KIND, SCHEDULING_KIND
from gossip.records import Record, key_id, sign_record
from inference.operator_records import Rebalance, Scheduling, encode_rebalance, encode_scheduling
from inference.resources import NodeStatus
from mesh.cli import args as flags
from mesh.cli.client import EXIT_INTERRUPTED, CliError, CliTimeout, NodeClient, version_text
from mesh.cli.deploywait import WAIT_DEFAULT_TIMEOUT_S
from mesh.cli.drainwait import wait_drained
from mesh.cli.fleet import resolve_node
from mesh.cli.helptext import command
from mesh.cli.signing import key_flags, resolve_key
from mesh.trust.deploy import record_to_b64

_NODE_ID = re.compile(r"[0-9a-f]{16}")


def format_table(doc: dict[str, Any]) -> str:
    """A region's placement as a table: DEPLOYMENT REPLICA NODE STATE, then its stamp."""
    headers = ("DEPLOYMENT", "REPLICA", "NODE", "STATE")
    replicas = doc.get("replicas")
    cells = [
        [
            str(r.get("deployment", "?")),
            str(r.get("slot", "?")),
            str(r.get("node", "?")),
            str(r.get("state", "?")) + (" (provisional)" if r.get("provisional") else ""),
        ]
        for r in (replicas if isinstance(replicas, list) else [])
        if isinstance(r, dict)
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    for r in replicas if isinstance(replicas, list) else []:
        if isinstance(r, dict) and r.get("error"):  # failed replicas, with their node's error
            lines.append(f"{r.get('deployment')}/{r.get('slot')} on {r.get('node')}: {str(r['error'])[:400]}")
    stamp = doc.get("stamp")
    if isinstance(stamp, dict):
        lines.append(
            f"region {doc.get('region')}: placement term {stamp.get('term')} epoch {stamp.get('epoch')} "
            f"by {stamp.get('leader')}"
        )
    else:
        lines.append(f"region {doc.get('region')}: no placement applied yet")
    return "\n".join(lines)


def placement(node: NodeClient, region: str | None) -> dict[str, Any]:
    """GET /v1/placements[?region=] as a dict; CliError if the node answers something else."""
    doc = node.get("/v1/placements", {"region": region} if region else None)
    if not isinstance(doc, dict):
        raise CliError(f"{node.base} answered something other than a placement; is it a murmur agent?")
    return doc


def cmd_placements(args: argparse.Namespace) -> int:
    doc = placement(NodeClient(args.node), args.region)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(format_table(doc))
    unplaced = doc.get("unplaced")
    for u in unplaced if isinstance(unplaced, list) else []:
        if isinstance(u, dict):
            print(f"unplaced: {u.get('deployment')}/{u.get('slot')}: {u.get('reason')}", file=sys.stderr)
    return 0


def ready_by_deployment(node: NodeClient, regions: Sequence[str]) -> dict[str, tuple[int, int]]:
    """deployment -> (ready, desired), summed over `regions` (each read at one of its nodes); a
    region that does not answer adds nothing."""
    out: dict[str, tuple[int, int]] = {}
    for region in regions:
        try:
            doc = node.get("/v1/placements", {"region": region})
        except CliError:
            continue
        rows = doc.get("deployments") if isinstance(doc, dict) else None
        for row in rows if isinstance(rows, list) else []:
            if (
                isinstance(row, dict)
                and isinstance(row.get("ready"), int)
                and isinstance(row.get("desired"), int)
            ):
                ready, desired = out.get(str(row.get("deployment")), (0, 0))
                out[str(row.get("deployment"))] = (ready + row["ready"], desired + row["desired"])
    return out


def _submit(args: argparse.Namespace, path: str, record_of: Any) -> tuple[Record, Any, NodeClient]:
    key = resolve_key(args)
    node = NodeClient(args.node)
    version = node.next_record_version(key_id(bytes(key.verify_key)))
    record: Record = record_of(key, version)
    answer = node.submit(key, "POST", path, {"record": record_to_b64(record)})
    return record, answer, node


def _warnings(answer: Any) -> None:
    warnings = answer.get("warnings") if isinstance(answer, dict) else None
    for warning in warnings if isinstance(warnings, list) else []:
        print(f"warning: {warning}", file=sys.stderr)


def _scheduling(args: argparse.Namespace, mode: NodeStatus | None) -> int:
    node_id = args.node_id

    def record_of(key: Any, version: int) -> Record:
        if mode is None:
            return sign_record(key, SCHEDULING_KIND, node_id, version, FLEET_SCOPE, b"", deleted=True)
        payload = encode_scheduling(Scheduling(node_id, mode))
        return sign_record(key, SCHEDULING_KIND, node_id, version, FLEET_SCOPE, payload)

    record, answer, node = _submit(args, f"/v1/scheduling/{node_id}", record_of)
    what = args.func_name
    wait = bool(getattr(args, "wait", False))
    result = {"node_id": node_id, "command": what, "version": record.version, "answer": answer}
    human = sys.stderr if args.json else sys.stdout
    if not args.json:
        print(
            f"{what} {node_id} (record version {version_text(record.version)}) accepted and persisted by "
            f"{node.base}; the leader of its region re-places accordingly. Watch: murmur placements",
            file=human,
        )
    _warnings(answer)
    code = 0
    if wait:
        # A timeout or a replacement that stays unplaced raises (exit 4 or 1), with no JSON object.
        _node_id, region = resolve_node(node, node_id)
        code = wait_drained(node, node_id, region, args.timeout, out=human)
        result["wait_exit_status"] = code
    if args.json:
        print(json.dumps(result))
    return code


def cmd_cordon(args: argparse.Namespace) -> int:
    return _scheduling(args, NodeStatus.CORDONED)


def cmd_drain(args: argparse.Namespace) -> int:
    return _scheduling(args, NodeStatus.DRAINING)


def cmd_uncordon(args: argparse.Namespace) -> int:
    return _scheduling(args, None)


def cmd_rebalance(args: argparse.Namespace) -> int:
    region = args.region
    generation = _held_generation(NodeClient(args.node), region) + 1

    def record_of(key: Any, version: int) -> Record:
        payload = encode_rebalance(Rebalance(region, generation))
        return sign_record(key, REBALANCE_KIND, region, version, FLEET_SCOPE, payload)

    record, _answer, node = _submit(args, f"/v1/regions/{region}/rebalance", record_of)
    if args.json:
        print(json.dumps({"region": region, "generation": generation, "version": record.version}))
    else:
        print(
            f"rebalance {generation} of region {region} (record version {version_text(record.version)}) "
            f"accepted by {node.base}; its leader re-places every replica once. Watch: murmur placements "
            f"--region {region}"
        )
    return 0


def _held_generation(node: NodeClient, region: str) -> int:
    doc = node.get("/v1/placements", {"region": region})
    held = doc.get("rebalance_generation") if isinstance(doc, dict) else None
    return held if isinstance(held, int) else 0


def _node_id(text: str) -> str:
    if not _NODE_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a node id (16 hex characters; murmur nodes lists them)"
        )
    return text


def register(sub: Any, node_help: str) -> None:
    """Add placements, cordon, uncordon, drain and rebalance to the `murmur` subcommands."""
    p = command(
        sub,
        "placements",
        summary="show where each replica of a region runs, and in what state",
        description="Show the placement a region applies: per replica its deployment, slot, node and state "
        "(assigned, loading, ready, failed, provisional), and the leader's stamp. Without --region the asked "
        "node's own region; another region is asked at one of its nodes (forwarded).",
        examples=["murmur placements", "murmur placements --region store-42 --json"],
    )
    p.add_argument(
        "--region", type=flags.region, default=None, help="the region to show (default: the node's)"
    )
    p.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_placements)
    for name, func, summary in (
        ("cordon", cmd_cordon, "give a node no new replicas (it keeps its own)"),
        ("drain", cmd_drain, "move a node's replicas away (each kept until its replacement is ready)"),
        ("uncordon", cmd_uncordon, "make a cordoned or draining node schedulable again"),
    ):
        c = command(
            sub,
            name,
            summary=summary + ", signed by an operator",
            description=f"{summary[0].upper()}{summary[1:]}: sign a scheduling record for NODE with the "
            "operator key and submit it to any node; it reaches NODE's region, whose leader re-places.",
            examples=[f"murmur --cluster ./mycluster {name} 3f2a9c0d1e2b4c5d"]
            + (["murmur drain 3f2a9c0d1e2b4c5d --wait --timeout 120"] if name == "drain" else []),
        )
        c.add_argument("node_id", type=_node_id, help="the node's id (murmur nodes lists them)")
        key_flags(c, node_help)
        c.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "drain":
            c.add_argument(
                "--wait",
                action="store_true",
                help="return once the node holds no replica and the replacements are ready, showing "
                f"replicas moved; exit 1: a replacement cannot be placed or failed (named), "
                f"{CliTimeout.exit_status}: timed out, {EXIT_INTERRUPTED}: Ctrl-C (the drain goes on)",
            )
            c.add_argument(
                "--timeout",
                type=float,
                default=WAIT_DEFAULT_TIMEOUT_S,
                help="seconds --wait waits (default 60)",
            )
        c.set_defaults(func=func, func_name=name)
    r = command(
        sub,
        "rebalance",
        summary="re-place every replica of a region once, signed by an operator",
        description="Ask REGION's leader to compute its placement afresh once (a new rebalance generation), "
        "spreading replicas over the nodes it has now, e.g. after adding nodes.",
        examples=["murmur --cluster ./mycluster rebalance store-42"],
    )
    r.add_argument("region", type=flags.region, help="the region to rebalance")
    key_flags(r, node_help)
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=cmd_rebalance)
