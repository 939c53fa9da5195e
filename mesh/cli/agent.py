"""`murmur agent`: run a node (mesh/service/launch.py) with the flags of its command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gossip.keyholding import REPORT_DELAY_S
from mesh.cli import args as flags
from mesh.cli.client import CliError
from mesh.cli.helptext import command
from mesh.service.events import EVENTS_MAX, EVENTS_MAX_AGE_S
from mesh.service.modelhost import INFERENCE_THREADS_DEFAULT, INTRA_OP_THREADS_DEFAULT

if TYPE_CHECKING:
    from mesh.service.agent import AgentOptions

ARTIFACT_BUDGET_BYTES = 2 * 1024**3  # mesh/service/artifactsync.py's, without importing the runtime here


def cmd_agent(args: argparse.Namespace) -> int:
    # Imported here: the node's runtime (aiohttp, zeroconf) is not needed by other commands.
    from mesh.service.agent import AgentError
    from mesh.service.launch import run_agent
    from mesh.service.store import Store, StoreError
    from mesh.trust.cluster import ClusterError, load_token
    from mesh.trust.identity import IdentityError, load_or_create

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    options = agent_options(args)
    try:
        token = load_token(options.token)
        identity = load_or_create(options.data_dir)
        store = Store.open(options.data_dir, identity.node_id, token.cluster_id)
    except (ClusterError, IdentityError, StoreError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"data dir {options.data_dir}: {exc}; check that it is writable") from None
    try:
        return asyncio.run(run_agent(options, token, identity, store))
    except AgentError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()


def agent_options(args: argparse.Namespace) -> AgentOptions:
    """The parsed `murmur agent` command line as the options run_agent takes."""
    from mesh.service.agent import AgentOptions  # the runtime, only for `murmur agent`

    return AgentOptions(
        data_dir=Path(args.data_dir),
        token=Path(args.token),
        region=args.region,
        bind=args.bind,
        api=args.api,
        seeds=tuple(args.seed),
        profile=args.profile,
        debug_hooks=args.debug_hooks,
        mdns=not args.no_mdns,
        mdns_interfaces=tuple(args.mdns_interface),
        labels=tuple(args.label),
        events_max=args.events_max,
        events_max_age_s=args.events_max_age,
        intra_op_threads=args.intra_op_threads,
        inference_threads=args.inference_threads,
        artifact_budget_bytes=args.artifact_budget_bytes,
        inference_token_file=Path(args.inference_token_file) if args.inference_token_file else None,
        keyring_report_delay_s=args.keyring_report_delay,
    )


def register(sub: Any) -> None:
    """Add agent to the `murmur` subcommands."""
    agent = command(
        sub,
        "agent",
        summary="run a node",
        description="Run this device's node: it joins the mesh with the join token (through --seed, "
        "or peers found by mDNS on the LAN), gossips on --bind and serves the HTTP API on --api, "
        "until SIGTERM or Ctrl-C (a graceful leave).",
        examples=[
            "murmur agent --data-dir /var/lib/murmur --token ./join.token --region store-17 "
            "--bind 10.0.0.5:7946 --api 10.0.0.5:7800",
            "murmur agent --data-dir ./n2 --token ./join.token --region store-17 "
            "--bind 10.0.0.6:7946 --api 10.0.0.6:7800 --seed 10.0.0.5:7946 --label camera=yes",
        ],
    )
    agent.add_argument("--data-dir", required=True, help="the node's own directory (identity, database)")
    agent.add_argument("--token", required=True, help="the join.token from `murmur cluster init`")
    agent.add_argument("--region", required=True, type=flags.region, help="this node's region (its site)")
    agent.add_argument("--bind", required=True, type=flags.address, help="gossip HOST:PORT (UDP and TCP)")
    agent.add_argument("--api", required=True, type=flags.address, help="HTTP API HOST:PORT")
    agent.add_argument(
        "--seed",
        action="append",
        default=[],
        type=flags.address,
        help="HOST:PORT of any node to join through (repeatable)",
    )
    agent.add_argument(
        "--profile",
        choices=("lan", "wan", "local"),
        default="lan",
        help="region pool timing profile (local: fleet pool too)",
    )
    agent.add_argument(
        "--mdns-interface",
        action="append",
        default=[],
        metavar="IP",
        help="find peers by mDNS on the interface with this IPv4 address (repeatable; default: the "
        "--bind address; on a device, the LAN interface address)",
    )
    agent.add_argument(
        "--label",
        action="append",
        default=[],
        type=flags.label,
        metavar="KEY=VALUE",
        help="a label published in this node's inventory (repeatable), e.g. --label zone=a",
    )
    agent.add_argument("--no-mdns", action="store_true", help="do not advertise or browse with mDNS")
    agent.add_argument(
        "--events-max",
        type=flags.events_max,
        default=EVENTS_MAX,
        metavar="N",
        help=f"events this node keeps in memory for murmur events (default {EVENTS_MAX}; oldest go first)",
    )
    agent.add_argument(
        "--events-max-age",
        type=flags.duration_s,
        default=EVENTS_MAX_AGE_S,
        metavar="DURATION",
        help="forget events older than this, e.g. 6h or 7d (default 24h)",
    )
    agent.add_argument(
        "--intra-op-threads",
        type=flags.threads,
        default=INTRA_OP_THREADS_DEFAULT,
        metavar="N",
        help=f"threads onnxruntime uses inside one inference (default {INTRA_OP_THREADS_DEFAULT}; "
        "more lowers one request's latency on an idle device, docs/models.md)",
    )
    agent.add_argument(
        "--inference-threads",
        type=flags.threads,
        default=INFERENCE_THREADS_DEFAULT,
        metavar="N",
        help=f"inferences run at once, all models together (default {INFERENCE_THREADS_DEFAULT})",
    )
    agent.add_argument(
        "--artifact-budget-bytes",
        type=flags.size_bytes,
        default=ARTIFACT_BUDGET_BYTES,
        metavar="SIZE",
        help="keep the artifact store under this size, e.g. 500M or 4G (default 2G): artifacts no "
        "deployment needs are deleted, least recently used first; needed ones are always kept",
    )
    agent.add_argument(
        "--inference-token-file",
        default=None,
        metavar="FILE",
        help="a file holding the cluster's inference token: /v2 requests (but the health checks) then "
        "need Authorization: Bearer <token>; without it anyone who reaches the API port may call them",
    )
    agent.add_argument(
        "--keyring-report-delay",
        type=flags.delay_range_s,
        default=REPORT_DELAY_S,
        metavar="MIN-MAX",
        help="say which network keys this node holds (what murmur keys list counts) a random time "
        f"in MIN-MAX after they change, e.g. 0.5-2 (default {REPORT_DELAY_S[0]:g}s-{REPORT_DELAY_S[1]:g}s: "
        "spreads the members' reports so they do not slow a new key's spread in a large fleet)",
    )
    # Test-only (the /v1/debug/broadcast(s) endpoints): it works, but help does not offer it.
    agent.add_argument("--debug-hooks", action="store_true", help=argparse.SUPPRESS)
    agent.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="how much the agent logs to stderr (default info: joins, members changing state, "
        "records persisted; debug adds details such as store counters)",
    )
    agent.set_defaults(func=cmd_agent)
