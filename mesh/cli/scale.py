"""`murmur scale NAME N [--region R]`: change how many replicas a deployment runs.

The CLI reads the manifest the node holds (GET /v1/deployments/{name}), changes its replica
count and sends it back as `murmur deploy` would: a new `desired` record signed by the
operator key, accepted at any node and gossiped everywhere; `--wait` waits as deploy's does.
A count that is already the held one sends nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import urllib.parse
from typing import Any

from inference.manifest import REPLICAS_MAX, Deployment, ManifestError, Replicas, manifest_from_doc
from mesh.cli import args as flags
from mesh.cli.client import EXIT_UNREACHABLE, CliError, CliTimeout, NodeClient, version_text
from mesh.cli.deploy import finish, held_deployment, submit_deployment
from mesh.cli.deploywait import WAIT_DEFAULT_TIMEOUT_S
from mesh.cli.fleet import replicas_text
from mesh.cli.helptext import command
from mesh.cli.signing import key_flags, resolve_key


def replica_count(text: str) -> int:
    """N: a whole number of replicas, 0 to REPLICAS_MAX."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= REPLICAS_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r}: N is a number of replicas, 0 to {REPLICAS_MAX} (0 stops every replica and keeps "
            "the deployment; murmur delete NAME removes it)"
        )
    return value


def scaled(deployment: Deployment, count: int, region: str | None) -> Deployment:
    """`deployment` with `count` replicas (in `region`, or wherever its count applies); CliError if
    the manifest's form of `replicas` does not say which count to change."""
    replicas = deployment.replicas
    shown = replicas_text(replicas.to_doc())
    if region is not None:
        if not replicas.by_region:
            raise CliError(
                f"deployment {deployment.name} asks the same count of every region it runs in ({shown}), so "
                f"--region cannot change one region alone; run without --region to set {count} per region, "
                "or deploy a manifest with replicas: {region: count, ...}"
            )
        counts = {**dict(replicas.by_region), region: count}
        new = Replicas(by_region=tuple(sorted(counts.items())))
    elif replicas.by_region and len(replicas.by_region) > 1:
        raise CliError(
            f"deployment {deployment.name} sets its replicas region by region ({shown}); say which to "
            f"change with --region R"
        )
    elif replicas.by_region:
        new = Replicas(by_region=((replicas.by_region[0][0], count),))
    else:
        new = Replicas(per_region=count, regions=replicas.regions)
    try:  # what the node will parse: the same checks as a manifest file
        return manifest_from_doc(dataclasses.replace(deployment, replicas=new).to_doc())
    except ManifestError as exc:
        raise CliError(f"deployment {deployment.name}: {exc}") from None


def cmd_scale(args: argparse.Namespace) -> int:
    node = NodeClient(args.node)
    held = held_deployment(node, args.name)
    if held is None:
        status, doc = node.exchange("GET", f"/v1/deployments/{urllib.parse.quote(args.name, safe='')}")
        why = doc.get("error") if isinstance(doc, dict) and status == 404 else None
        raise CliError(
            f"{why or f'deployment {args.name!r}: the node holds none it can read'}; nothing to scale "
            "(murmur get deployments lists them; murmur deploy FILE creates one)"
        )
    held_version, current = held
    target = scaled(current, args.count, args.region)
    human = sys.stderr if args.json else sys.stdout
    result: dict[str, Any] = {
        "name": args.name,
        "node": node.base,
        "replicas_before": current.replicas.to_doc(),
        "replicas": target.replicas.to_doc(),
    }
    before, after = replicas_text(current.replicas.to_doc()), replicas_text(target.replicas.to_doc())
    if target == current:
        version = held_version
        result.update(version=version, unchanged=True, new=False, warnings=[])
        print(f"deployment {args.name}: already {after}; nothing sent", file=human)
    else:
        key = resolve_key(args)
        version = submit_deployment(node, key, target, result, "scale")
        print(
            f"deployment {args.name}: scaled from {before} to {after}; accepted and persisted by {node.base} "
            f"as version {version_text(version)}",
            file=human,
        )
    return finish(args, node, args.name, version, result, human)


def register(sub: Any, node_help: str) -> None:
    """Add scale to the `murmur` subcommands."""
    scale = command(
        sub,
        "scale",
        summary="change a deployment's replica count (signed by an operator, like deploy)",
        description="Read the deployment's manifest from the asked node, set its replicas to N (per "
        "region, or in one region with --region R when the manifest counts region by region), sign the "
        "new manifest with the operator key and send it as murmur deploy does. The same count again "
        "sends nothing. N = 0 keeps the deployment with no replica.",
        examples=[
            "murmur --cluster ./mycluster scale vibration 3",
            "murmur scale vibration 1 --region store-17 --wait --timeout 30",
            "murmur scale vibration 0 --json",
        ],
    )
    scale.add_argument("name", help="the deployment's name")
    scale.add_argument("count", metavar="N", type=replica_count, help=f"replicas, 0 to {REPLICAS_MAX}")
    scale.add_argument(
        "--region", type=flags.region, default=None, help="change this region's count only (a per-region map)"
    )
    scale.add_argument(
        "--wait",
        action="store_true",
        help="return once every alive node holds it and its replicas are ready (as deploy --wait; exit "
        f"{EXIT_UNREACHABLE}: some regions unreachable, 1: a replica cannot be placed or failed, "
        f"{CliTimeout.exit_status}: timed out)",
    )
    scale.add_argument(
        "--timeout", type=float, default=WAIT_DEFAULT_TIMEOUT_S, help="seconds --wait waits (default 60)"
    )
    scale.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (name, replicas_before, replicas, version, unchanged, new, warnings)",
    )
    key_flags(scale, node_help)
    scale.set_defaults(func=cmd_scale)
