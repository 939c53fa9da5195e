"""`murmur agent`: run a node (mesh/service/launch.py) with the flags of its command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from mesh.cli import args as flags
from mesh.cli.client import CliError


def cmd_agent(args: argparse.Namespace) -> int:
    # Imported here: the node's runtime (aiohttp, zeroconf) is not needed by other commands.
    from mesh.service.agent import AgentError, AgentOptions
    from mesh.service.launch import run_agent
    from mesh.service.store import Store, StoreError
    from mesh.trust.cluster import ClusterError, load_token
    from mesh.trust.identity import IdentityError, load_or_create

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    options = AgentOptions(
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
    )
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


def register(sub: Any) -> None:
    """Add agent to the `murmur` subcommands."""
    agent = sub.add_parser("agent", help="run a node")
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
        "--debug-hooks", action="store_true", help="enable the test-only /v1/debug/broadcast(s) endpoints"
    )
    agent.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    agent.set_defaults(func=cmd_agent)
