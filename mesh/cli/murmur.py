"""The `murmur` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mesh.cli.deploy import OperatorError, key_flags
from mesh.cli.deploy import register as register_operator_commands
from mesh.cli.trust import register as register_trust_commands
from mesh.netaddr import AddressError, split_hostport
from sim.cli import register as register_sim

DEFAULT_NODE_URL = "http://127.0.0.1:7800"
NODES_TIMEOUT_S = 5.0
REGION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
LABEL_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
LABEL_VALUE_MAX_CHARS = 128

Handler = Callable[[argparse.Namespace], int]


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _address(text: str) -> str:
    try:
        split_hostport(text)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _region(text: str) -> str:
    if not REGION_PATTERN.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a region name; use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "e.g. store-12"
        )
    return text


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not LABEL_KEY_PATTERN.match(key):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a label; use KEY=VALUE with a key of 1-63 letters, digits, '.', '_', "
            "'/' or '-', e.g. --label zone=a"
        )
    if len(value) > LABEL_VALUE_MAX_CHARS or not value.isprintable():
        raise argparse.ArgumentTypeError(
            f"label {key!r}: the value must be at most {LABEL_VALUE_MAX_CHARS} printable characters"
        )
    return key, value


# --- cluster init ------------------------------------------------------------------


def _cmd_cluster_init(args: argparse.Namespace) -> int:
    from mesh.trust.cluster import ClusterError, init_cluster

    try:
        cluster = init_cluster(Path(args.out), ttl_s=args.ttl)
    except ClusterError as exc:
        raise UserError(str(exc)) from None
    print(f"cluster {cluster.cluster_id} created in {cluster.path}")
    print(f"  operator key: {cluster.operator_key_path} (keep it secret; it signs operator commands)")
    print(f"  join token:   {cluster.token_path} (copy it to each device; it holds the network key)")
    print(
        f"next: murmur agent --token {cluster.token_path} --data-dir DIR --region R "
        "--bind HOST:7946 --api HOST:7800"
    )
    return 0


_TTL_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl(text: str) -> float:
    """A duration: 3600, 90s, 30m, 24h or 7d."""
    unit = text[-1:].lower()
    number = text[:-1] if unit in _TTL_UNITS_S else text
    try:
        value = float(number) * _TTL_UNITS_S.get(unit, 1)
    except ValueError:
        value = -1.0
    if not value > 0 or value > 10 * 365 * 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a duration such as 3600, 30m, 24h or 7d (up to 10 years)"
        )
    return value


def _uses(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: --uses takes a number of devices, 1 or more")
    return value


def _cmd_invite(args: argparse.Namespace) -> int:
    from mesh.files import write_new_file
    from mesh.trust.cluster import ClusterError, issue_token

    cluster_dir = args.cluster or os.environ.get("MURMUR_CLUSTER")
    if not cluster_dir:
        raise UserError("--cluster DIR (or MURMUR_CLUSTER) must name the directory of `murmur cluster init`")
    try:
        token = issue_token(Path(cluster_dir), ttl_s=args.ttl, region=args.region or "", uses=args.uses)
    except ClusterError as exc:
        raise UserError(str(exc)) from None
    text = token.to_json()
    expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(token.invite.expires_at_s))
    where = f"region {token.invite.region}" if token.invite.region else "any region"
    if token.invite.uses:
        where += f", {token.invite.uses} device{'s' if token.invite.uses > 1 else ''}"
    if args.out:
        try:
            write_new_file(Path(args.out), text.encode("utf-8"))
        except FileExistsError:
            raise UserError(
                f"{args.out} exists; refusing to overwrite a token (choose another --out)"
            ) from None
        except OSError as exc:
            raise UserError(f"cannot write {args.out}: {exc}") from None
        print(
            f"join token for cluster {token.cluster_id} ({where}) written to {args.out}; "
            f"devices can join with it until {expires}"
        )
    else:
        sys.stdout.write(text)
        print(
            f"join token for cluster {token.cluster_id} ({where}); devices can join with it until {expires}",
            file=sys.stderr,
        )
    return 0


# --- agent ---------------------------------------------------------------------------


def _cmd_agent(args: argparse.Namespace) -> int:
    from mesh.node.agent import AgentError, AgentOptions
    from mesh.node.launch import run_agent
    from mesh.node.store import Store, StoreError
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
        store = Store.open(options.data_dir, identity.node_id)
    except (ClusterError, IdentityError, StoreError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"data dir {options.data_dir}: {exc}; check that it is writable") from None
    try:
        return asyncio.run(run_agent(options, token, identity, store))
    except AgentError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()


# --- nodes -----------------------------------------------------------------------------


def _get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=NODES_TIMEOUT_S) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise UserError(f"{url}: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"cannot reach a murmur node at {url} ({reason}); start an agent, or point --node "
            "(or MURMUR_NODE) at a running one, e.g. --node http://127.0.0.1:7800"
        ) from None
    except ValueError:
        raise UserError(f"{url} did not answer with JSON; is --node a murmur agent's API?") from None


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


def _cmd_nodes(args: argparse.Namespace) -> int:
    base = args.node.rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    query = f"?{urllib.parse.urlencode({'region': args.region})}" if args.region else ""
    rows = _get_json(f"{base}/v1/nodes{query}")
    if not isinstance(rows, list):
        raise UserError(f"{base} answered something other than a member list; is it a murmur agent?")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


# --- demo ----------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from mesh.dev.demo import run_demo

    return run_demo()


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The full `murmur` argument parser."""
    parser = argparse.ArgumentParser(prog="murmur", description="Murmuration: peer-to-peer edge AI mesh")
    node_help = f"a node's API URL (env MURMUR_NODE; default {DEFAULT_NODE_URL})"
    parser.add_argument("--node", default=os.environ.get("MURMUR_NODE", DEFAULT_NODE_URL), help=node_help)
    parser.add_argument("--key", default=None, help="operator.key file that signs commands (env MURMUR_KEY)")
    parser.add_argument(
        "--cluster", default=None, help="cluster dir holding operator.key (env MURMUR_CLUSTER)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    cluster = sub.add_parser("cluster", help="create and manage a cluster")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    init = cluster_sub.add_parser("init", help="create a cluster: ids, operator key, join token")
    init.add_argument("--out", required=True, help="directory to create (must not exist or be empty)")
    init.add_argument(
        "--ttl", type=_ttl, default=24 * 3600.0, help="how long the first token admits devices (default 24h)"
    )
    init.set_defaults(func=_cmd_cluster_init)

    invite = sub.add_parser("invite", help="issue a join token with a new operator-signed invite")
    invite.add_argument(
        "--cluster",
        default=argparse.SUPPRESS,
        help="the cluster dir of `murmur cluster init` (env MURMUR_CLUSTER)",
    )
    invite.add_argument("--region", type=_region, default=None, help="admit devices of this region only")
    invite.add_argument(
        "--ttl", type=_ttl, default=24 * 3600.0, help="devices can join with it for this long (default 24h)"
    )
    invite.add_argument(
        "--uses", type=_uses, default=0, help="how many devices it admits (default: any number)"
    )
    invite.add_argument(
        "--out", default=None, help="write the token to this new file (mode 0600), not stdout"
    )
    invite.set_defaults(func=_cmd_invite)

    agent = sub.add_parser("agent", help="run a node")
    agent.add_argument("--data-dir", required=True, help="the node's own directory (identity, database)")
    agent.add_argument("--token", required=True, help="the join.token from `murmur cluster init`")
    agent.add_argument("--region", required=True, type=_region, help="this node's region (its site)")
    agent.add_argument("--bind", required=True, type=_address, help="gossip HOST:PORT (UDP and TCP)")
    agent.add_argument("--api", required=True, type=_address, help="HTTP API HOST:PORT")
    agent.add_argument(
        "--seed",
        action="append",
        default=[],
        type=_address,
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
        type=_label,
        metavar="KEY=VALUE",
        help="a label published in this node's inventory (repeatable), e.g. --label zone=a",
    )
    agent.add_argument("--no-mdns", action="store_true", help="do not advertise or browse with mDNS")
    agent.add_argument(
        "--debug-hooks", action="store_true", help="enable the test-only /v1/debug/broadcast(s) endpoints"
    )
    agent.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    agent.set_defaults(func=_cmd_agent)

    nodes = sub.add_parser("nodes", help="list the members a node sees")
    nodes.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    nodes.add_argument("--region", type=_region, help="another region's members (forwarded there)")
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    nodes.set_defaults(func=_cmd_nodes)

    register_operator_commands(sub, node_help)
    register_trust_commands(sub, node_help, key_flags)

    demo = sub.add_parser("demo", help="run a 6-agent, 2-region mesh on loopback and show it heal")
    demo.set_defaults(func=_cmd_demo)

    register_sim(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `murmur` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except (UserError, OperatorError) as exc:
        print(f"murmur {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
