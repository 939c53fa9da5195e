"""The operator key a command signs with: `--key` / MURMUR_KEY (an operator.key file),
then `--cluster` / MURMUR_CLUSTER (a cluster dir: its operator.key)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nacl.signing

from mesh.cli.client import CliError
from mesh.trust.cluster import OPERATOR_KEY_FILE
from mesh.trust.opsign import load_signing_key


def resolve_key(args: argparse.Namespace) -> nacl.signing.SigningKey:
    """The operator signing key from --key, MURMUR_KEY, --cluster or MURMUR_CLUSTER."""
    path: Path | None = None
    if getattr(args, "key", None) or os.environ.get("MURMUR_KEY"):
        path = Path(args.key or os.environ["MURMUR_KEY"])
    elif getattr(args, "cluster", None) or os.environ.get("MURMUR_CLUSTER"):
        path = Path(args.cluster or os.environ["MURMUR_CLUSTER"]) / OPERATOR_KEY_FILE
    if path is None:
        raise CliError(
            "no operator key: pass --key FILE (the operator.key) or --cluster DIR (from murmur cluster "
            "init), or set MURMUR_KEY or MURMUR_CLUSTER"
        )
    try:
        return load_signing_key(path)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def key_flags(parser: argparse.ArgumentParser, node_help: str) -> None:
    """--node, --key and --cluster after the command too (`murmur deploy m.yaml --node URL`)."""
    parser.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    parser.add_argument("--key", default=argparse.SUPPRESS, help="operator.key file (env MURMUR_KEY)")
    parser.add_argument(
        "--cluster", default=argparse.SUPPRESS, help="cluster dir holding operator.key (env MURMUR_CLUSTER)"
    )
