"""The operator's reads of the fleet: `murmur status` (every region at a glance), `murmur node
NODE` (one node in full) and `murmur describe deployment NAME` (its manifest, placement per
region, unplaced replicas and recent events).

Each works against any node: the node asked forwards what only another region knows
(GET /v1/status, GET /v1/nodes/{id}/status?region=, GET /v1/placements?region=).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from inference.resources import format_bytes
from mesh.cli.client import CliError, NodeClient, version_text
from mesh.cli.events import event_time
from mesh.cli.helptext import command
from mesh.cli.tables import aligned, cell

# What describe shows of a deployment's events, and where it looks for them: the asked node
# and (each within DESCRIBE_EVENTS_TIMEOUT_S) up to DESCRIBE_EVENT_NODES_MAX nodes holding a replica.
DESCRIBE_EVENTS_SHOWN = 20
DESCRIBE_EVENT_NODES_MAX = 8
DESCRIBE_EVENTS_TIMEOUT_S = 2.0
DEPLOYMENT_EVENT_KINDS = (
    "command_accepted",
    "replica_assigned",
    "replica_provisional",
    "replica_loading",
    "replica_ready",
    "replica_failed",
    "replica_dropped",
    "placement_changed",
)
MATCHES_SHOWN_MAX = 10


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --- status ----------------------------------------------------------------------------------


def _leader_cell(row: Mapping[str, Any]) -> str:
    if row.get("leader"):
        return str(row["leader"])
    return "(unreachable)" if not row.get("node") else "(none)"


def _counts(ready: Any, desired: Any) -> str:
    return "?" if ready is None or desired is None else f"{ready}/{desired}"


def format_status(doc: Mapping[str, Any]) -> str:
    """The fleet as two tables: regions (with a total line), then deployments summed over regions."""
    headers = ("REGION", "LEADER", "TERM", "ALIVE", "SUSPECT", "DEAD", "READY/DESIRED")
    rows: list[list[str]] = []
    for r in sorted(_list(doc.get("regions")), key=lambda r: str(_dict(r).get("region"))):
        r = _dict(r)
        nodes = _dict(r.get("nodes"))
        rows.append(
            [
                str(r.get("region", "?")),
                _leader_cell(r),
                cell(r.get("term")),
                cell(nodes.get("alive"), "?"),
                cell(nodes.get("suspect"), "?"),
                cell(nodes.get("dead"), "?"),
                _counts(r.get("ready"), r.get("desired")),
            ]
        )
    totals = _dict(doc.get("totals"))
    nodes = _dict(totals.get("nodes"))
    rows.append(
        [
            "total",
            "",
            "",
            *(cell(nodes.get(s), "0") for s in ("alive", "suspect", "dead")),
            _counts(totals.get("ready"), totals.get("desired")),
        ]
    )
    lines = [aligned(headers, rows)]
    unanswered = totals.get("regions_unanswered") or 0
    lines.append(
        f"{totals.get('regions', len(rows) - 1)} region(s)"
        + (f", {unanswered} did not answer (their counts are left out)" if unanswered else "")
        + f"; asked {doc.get('node')} in region {doc.get('region')}"
    )
    deployments = _list(totals.get("deployments"))
    if deployments:
        cells = [
            [str(d.get("deployment")), str(d.get("ready")), str(d.get("desired"))]
            for d in deployments
            if isinstance(d, dict)
        ]
        lines += ["", aligned(("DEPLOYMENT", "READY", "DESIRED"), cells)]
    else:
        lines += ["", "no deployment is desired anywhere (murmur deploy FILE)"]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    node = NodeClient(args.node)
    doc = node.get("/v1/status")
    if not isinstance(doc, dict) or not isinstance(doc.get("regions"), list):
        raise CliError(f"{node.base} answered something other than a fleet status; is it a murmur agent?")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(format_status(doc))
    for r in doc["regions"]:
        if isinstance(r, dict) and r.get("error"):
            print(f"region {r.get('region')}: {r['error']}", file=sys.stderr)
    return 0


# --- node ------------------------------------------------------------------------------------


def _regions(node: NodeClient) -> tuple[str, list[str]]:
    """(the asked node's region, every other region it knows)."""
    health = _dict(node.get("/v1/health"))
    own = str(health.get("region"))
    return own, sorted(str(r) for r in _dict(health.get("regions")) if r != own)


def resolve_node(node: NodeClient, prefix: str) -> tuple[str, str]:
    """(node id, region) of the one member whose id starts with `prefix`, in any region the asked
    node knows; CliError naming the candidates if none or several do."""
    wanted = prefix.lower()
    own, others = _regions(node)
    found: dict[str, str] = {}
    silent: list[str] = []
    for region in [own, *others]:
        status, rows = node.exchange("GET", "/v1/nodes", params=None if region == own else {"region": region})
        if status != 200 or not isinstance(rows, list):
            silent.append(region)
            continue
        for row in rows:
            if isinstance(row, dict) and str(row.get("id", "")).startswith(wanted):
                found.setdefault(str(row["id"]), str(row.get("region", region)))
    if len(found) == 1:
        ((node_id, region),) = found.items()
        return node_id, region
    if found:
        shown = ", ".join(f"{n} ({r})" for n, r in sorted(found.items())[:MATCHES_SHOWN_MAX])
        raise CliError(f"{len(found)} nodes have ids starting with {prefix!r}: {shown}; give more characters")
    where = ", ".join([own, *others])
    extra = f"; regions that did not answer: {', '.join(silent)}" if silent else ""
    raise CliError(
        f"no node whose id starts with {prefix!r} in the regions {node.base} knows ({where}){extra}; "
        "list them with murmur nodes [--region R]"
    )


def _bytes(value: Any) -> str:
    return f"{format_bytes(value)}B" if isinstance(value, int) and value >= 0 else "?"


def _version(value: Any) -> str:
    return version_text(value) if isinstance(value, int) else str(value)


def format_node(row: Mapping[str, Any]) -> str:
    """One node, field by field, then its replicas."""
    inv = row.get("inventory")
    lines = [
        f"node:          {row.get('id')}",
        f"region:        {row.get('region')}",
        f"state:         {row.get('state')} (as node {row.get('seen_by')} sees it; incarnation "
        f"{row.get('incarnation')})",
        f"scheduling:    {row.get('scheduling')}",
        f"gossip:        {row.get('addr')}{' (gateway)' if row.get('gateway') else ''}",
        f"api:           {cell(row.get('api'))}",
    ]
    if isinstance(inv, dict):
        labels = _dict(inv.get("labels"))
        accelerators = [str(a).removesuffix("ExecutionProvider") for a in _list(inv.get("accelerators"))]
        lines += [
            f"cpu:           {inv.get('cpu_count', '?')} cores, load {inv.get('load_1m', '?')} (1 min), "
            f"{inv.get('cpu_percent', '?')}% busy",
            f"memory:        {_bytes(inv.get('memory_available_bytes'))} available of "
            f"{_bytes(inv.get('memory_total_bytes'))}",
            f"disk free:     {_bytes(inv.get('disk_free_bytes'))}",
            f"accelerators:  {', '.join(accelerators) or '-'}",
            f"labels:        {', '.join(f'{k}={v}' for k, v in sorted(labels.items())) or '-'}",
            f"platform:      {inv.get('os', '?')} {inv.get('arch', '?')}, python {inv.get('python', '?')}",
            f"inventory:     version {_version(inv.get('version'))}",
        ]
    else:
        lines.append(f"inventory:     {row.get('inventory_error') or 'none held (not published yet)'}")
    replicas = [r for r in _list(row.get("replicas")) if isinstance(r, dict)]
    if replicas:
        cells = [
            [
                str(r.get("deployment")),
                str(r.get("slot")),
                str(r.get("state")) + (" (provisional)" if r.get("provisional") else ""),
            ]
            for r in replicas
        ]
        lines += ["", aligned(("DEPLOYMENT", "REPLICA", "STATE"), cells)]
    else:
        lines += ["", "no replica is placed on this node"]
    return "\n".join(lines)


def cmd_node(args: argparse.Namespace) -> int:
    node = NodeClient(args.node)
    node_id, region = resolve_node(node, args.node_id)
    doc = node.get(f"/v1/nodes/{node_id}/status", {"region": region})
    rows = _list(_dict(doc).get("regions"))
    if len(rows) != 1 or not isinstance(rows[0], dict):
        raise CliError(f"{node.base} answered something other than a node's status; is it a murmur agent?")
    if args.json:
        print(json.dumps(rows[0], indent=2))
        return 0
    print(format_node(rows[0]))
    return 0


# --- describe deployment ---------------------------------------------------------------------


def replicas_text(replicas: Any) -> str:
    """A manifest's `replicas` for people: `2 per region`, `north=2, south=1`, `2 per region in store-*`."""
    if isinstance(replicas, int):
        return f"{replicas} per region"
    if isinstance(replicas, dict) and "per_region" in replicas:
        patterns = ", ".join(str(p) for p in _list(replicas.get("regions")))
        return f"{replicas.get('per_region')} per region in {patterns}"
    if isinstance(replicas, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(replicas.items())) or "none"
    return str(replicas)


def _manifest_lines(row: Mapping[str, Any]) -> list[str]:
    manifest = _dict(row.get("manifest"))
    model = _dict(manifest.get("model"))
    artifact = _dict(manifest.get("artifact"))
    req = _dict(manifest.get("requirements"))
    res = _dict(manifest.get("resources"))
    version = row.get("version")
    labels = _dict(req.get("labels"))
    lines = [
        f"name:          {row.get('name')}",
        f"version:       {_version(version)}",
        f"author:        {row.get('author')}",
        f"model:         {model.get('name')}:{model.get('version')}",
        f"artifact:      sha256 {artifact.get('sha256')}, {_bytes(artifact.get('size_bytes'))}",
        f"replicas:      {replicas_text(manifest.get('replicas'))}",
        f"requirements:  min memory {_bytes(req.get('min_memory_bytes', 0))}, accelerator "
        f"{req.get('accelerator') or '-'}, labels "
        f"{', '.join(f'{k}={v}' for k, v in sorted(labels.items())) or '-'}",
        f"priority:      {manifest.get('priority', 0)}",
    ]
    if res:
        cpu = res.get("cpu_millicores")
        memory = res.get("memory_bytes")
        lines.append(
            f"resources:     {_bytes(memory) if memory is not None else 'estimated'} memory, "
            f"{f'{cpu}m' if cpu is not None else 'estimated'} cpu per replica"
        )
    if manifest.get("spread"):
        lines.append(f"spread:        over label {_dict(manifest['spread']).get('label')}")
    return lines


def region_placements(node: NodeClient) -> list[dict[str, Any]]:
    """Each region's placement (GET /v1/placements, forwarded for the others), or for a region
    that did not answer `{"region": R, "error": why}`; the asked node's region first."""
    own, others = _regions(node)
    out: list[dict[str, Any]] = []
    for region in [own, *others]:
        try:
            doc = node.get("/v1/placements", None if region == own else {"region": region})
        except CliError as exc:
            out.append({"region": region, "error": str(exc)})
            continue
        out.append(doc if isinstance(doc, dict) else {"region": region, "error": "not a placement"})
    return out


def describe(node: NodeClient, name: str) -> dict[str, Any]:
    """Everything `describe deployment` shows, as one JSON-ready object."""
    path = f"/v1/deployments/{urllib.parse.quote(name, safe='')}"
    status, row = node.exchange("GET", path)
    if status == 404:
        message = _dict(row).get("error") or f"no deployment named {name!r}"
        raise CliError(f"{message}; list them with murmur get deployments")
    if status != 200 or not isinstance(row, dict):
        raise CliError(f"{node.url(path)}: HTTP {status}: {row}")
    regions: list[dict[str, Any]] = []
    holders: dict[str, list[str]] = {}  # region -> nodes holding a replica of it there
    for doc in region_placements(node):
        counts = next(
            (c for c in _list(doc.get("deployments")) if isinstance(c, dict) and c.get("deployment") == name),
            None,
        )
        replicas = [
            r for r in _list(doc.get("replicas")) if isinstance(r, dict) and r.get("deployment") == name
        ]
        if replicas:
            holders[str(doc.get("region"))] = sorted({str(r.get("node")) for r in replicas})
        entry: dict[str, Any] = {
            "region": doc.get("region"),
            "ready": counts.get("ready") if counts else (None if doc.get("error") else 0),
            "desired": counts.get("desired") if counts else (None if doc.get("error") else 0),
            "stamp": doc.get("stamp"),
            "replicas": replicas,
            "unplaced": [
                u for u in _list(doc.get("unplaced")) if isinstance(u, dict) and u.get("deployment") == name
            ],
        }
        if doc.get("error"):
            entry["error"] = doc["error"]
        regions.append(entry)
    events, unanswered = deployment_events(node, name, holders)
    return {"deployment": row, "regions": regions, "events": events, "events_unanswered": unanswered}


def _unix_ms(event: Mapping[str, Any]) -> int:
    value = event.get("unix_ms")
    return value if isinstance(value, int) else 0


def _about(event: Mapping[str, Any], name: str) -> bool:
    details = _dict(event.get("details"))
    if event.get("kind") == "placement_changed":
        listed = details.get("deployments")
        return isinstance(listed, str) and name in listed.split(",")
    return details.get("deployment") == name or event.get("subject") == f"desired/deployment/{name}"


def _event_key(event: Mapping[str, Any]) -> tuple[str, ...]:
    """One key per thing that happened: every node of a region applies the same placement, so
    its `placement_changed` events are one change (region, term, epoch), shown once."""
    if event.get("kind") == "placement_changed":
        details = _dict(event.get("details"))
        return ("placement", *(str(details.get(k)) for k in ("region", "term", "epoch")))
    return (str(event.get("node")), str(event.get("seq")))


def _holder_apis(node: NodeClient, holders: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """node id -> API address of each holder, from its region's member list (forwarded)."""
    own = str(_dict(node.get("/v1/health")).get("region")) if holders else ""
    apis: dict[str, str] = {}
    for region, ids in sorted(holders.items()):
        try:
            rows = node.get("/v1/nodes", None if region == own else {"region": region})
        except CliError:
            continue
        for row in _list(rows):
            if isinstance(row, dict) and row.get("id") in ids and row.get("api"):
                apis[str(row["id"])] = str(row["api"])
    return apis


def deployment_events(
    node: NodeClient, name: str, holders: Mapping[str, Sequence[str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The deployment's recent events, oldest first, from the asked node and the nodes holding its
    replicas (region -> ids; events are per node), and the nodes that did not answer."""
    apis = _holder_apis(node, holders)
    params = {"kind": ",".join(DEPLOYMENT_EVENT_KINDS), "limit": "1000"}
    sources = [node, *(NodeClient(a, DESCRIBE_EVENTS_TIMEOUT_S) for _, a in sorted(apis.items()))]
    seen: dict[tuple[str, ...], dict[str, Any]] = {}
    unanswered: list[str] = []
    for source in sources[: DESCRIBE_EVENT_NODES_MAX + 1]:
        try:
            doc = source.get("/v1/events", params)
        except CliError:
            unanswered.append(source.base)
            continue
        for event in _list(_dict(doc).get("events")):
            if isinstance(event, dict) and _about(event, name):
                seen.setdefault(_event_key(event), event)
    events = sorted(seen.values(), key=lambda e: (_unix_ms(e), str(e.get("node"))))
    return events[-DESCRIBE_EVENTS_SHOWN:], unanswered


def format_description(doc: Mapping[str, Any]) -> str:
    """`describe deployment` for people: manifest, regions, replicas, unplaced, events."""
    lines = _manifest_lines(_dict(doc.get("deployment")))
    regions = [_dict(r) for r in _list(doc.get("regions"))]
    cells = []
    for r in regions:
        stamp = _dict(r.get("stamp"))
        placed = (
            f"term {stamp.get('term')} epoch {stamp.get('epoch')} by {stamp.get('leader')}"
            if stamp
            else ("(unreachable)" if r.get("error") else "no placement applied yet")
        )
        cells.append([str(r.get("region")), cell(r.get("ready"), "?"), cell(r.get("desired"), "?"), placed])
    lines += ["", aligned(("REGION", "READY", "DESIRED", "PLACEMENT"), cells)]
    replicas = [
        [str(r.get("region")), str(p.get("slot")), str(p.get("node")), str(p.get("state"))]
        for r in regions
        for p in _list(r.get("replicas"))
        if isinstance(p, dict)
    ]
    lines += [
        "",
        aligned(("REGION", "REPLICA", "NODE", "STATE"), replicas) if replicas else "no replica placed",
    ]
    unplaced = [
        (r.get("region"), u) for r in regions for u in _list(r.get("unplaced")) if isinstance(u, dict)
    ]
    if unplaced:
        lines += ["", "unplaced:"]
        lines += [f"  {region}/replica {u.get('slot')}: {u.get('reason')}" for region, u in unplaced]
    for r in regions:
        if r.get("error"):
            lines.append(f"region {r.get('region')}: {r['error']}")
    events = [_dict(e) for e in _list(doc.get("events"))]
    lines += ["", f"events (the last {DESCRIBE_EVENTS_SHOWN} at most, oldest first):"]
    if events:
        rows = [[event_time(e), str(e.get("node")), str(e.get("kind")), str(e.get("reason"))] for e in events]
        lines.append(aligned(("TIME (UTC)", "NODE", "KIND", "REASON"), rows))
    else:
        lines.append("  none held by the nodes asked (events are per node and kept for a day)")
    silent = _list(doc.get("events_unanswered"))
    if silent:
        lines.append(f"  (no events from {', '.join(str(s) for s in silent)}: not reachable from here)")
    return "\n".join(lines)


def cmd_describe(args: argparse.Namespace) -> int:
    doc = describe(NodeClient(args.node), args.name)
    print(json.dumps(doc, indent=2) if args.json else format_description(doc))
    return 0


# --- parser ----------------------------------------------------------------------------------


def register(sub: Any, node_help: str) -> None:
    """Add status, node and describe to the `murmur` subcommands."""
    status = command(
        sub,
        "status",
        summary="the fleet at a glance: regions, leaders, nodes alive/suspect/dead, replicas ready",
        description="Show every region the asked node knows: its leader and term, its members alive, "
        "suspect and dead, and its replicas ready against desired; then totals, and each deployment "
        "summed over the regions. Other regions are asked at one of their nodes (forwarded); one that "
        "does not answer is shown as (unreachable) with the members its summary last counted.",
        examples=["murmur status", "murmur --node http://10.0.0.5:7800 status --json"],
    )
    status.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    status.add_argument("--json", action="store_true", help="print GET /v1/status's answer")
    status.set_defaults(func=cmd_status)

    node = command(
        sub,
        "node",
        summary="one node in full: inventory, state, cordon/drain, replicas",
        description="Show one node, named by its id or a unique prefix of it, in any region the asked "
        "node knows: its inventory (cores, load, memory, accelerators, labels), its state as a node of "
        "its region sees it, whether it is cordoned or draining, its API address and its replicas with "
        "their states.",
        examples=["murmur node 3f2a", "murmur node 3f2a9c0d1e2b4c5d --json"],
    )
    node.add_argument("node_id", metavar="NODE", help="a node id or a unique prefix of one (murmur nodes)")
    node.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    node.add_argument("--json", action="store_true", help="print GET /v1/nodes/{id}/status's row")
    node.set_defaults(func=cmd_node)

    describe_cmd = command(
        sub,
        "describe",
        summary="a deployment in full: manifest, placement per region, unplaced, recent events",
        description="Show a deployment: its manifest (version as a time, replicas per region, "
        "requirements), per region its replicas ready against desired and where each runs, the "
        "replicas no node can take with why, and its recent events (read from the asked node and the "
        "nodes holding its replicas: events are per node).",
        examples=["murmur describe deployment vibration", "murmur describe deployment vibration --json"],
    )
    describe_cmd.add_argument("what", choices=("deployment",), help="what to describe")
    describe_cmd.add_argument("name", help="the deployment's name")
    describe_cmd.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    describe_cmd.add_argument("--json", action="store_true", help="print everything shown as one JSON object")
    describe_cmd.set_defaults(func=cmd_describe)
