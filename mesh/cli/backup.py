"""`murmur backup` and `murmur restore`: a node's data dir to a backup directory and back
(mesh/service/backup.py does the copying; docs/operations.md, "Backup and restore")."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mesh.cli.client import CliError
from mesh.cli.helptext import command


def _summary_doc(summary: Any, out: Path) -> dict[str, Any]:
    return {
        "node_id": summary.node_id,
        "cluster_id": summary.cluster_id,
        "incarnation": summary.incarnation,
        "records": summary.records,
        "files": len(summary.files),
        "bytes": sum((out / name).stat().st_size for name in summary.files),
        "artifacts_skipped": list(summary.artifacts_skipped),
        "path": str(out),
    }


def cmd_backup(args: argparse.Namespace) -> int:
    from mesh.service.backup import BackupError, backup

    out = Path(args.out)
    try:
        summary = backup(
            Path(args.data_dir),
            out,
            include_artifacts=args.artifacts,
            version=args.murmur_version,
            progress=lambda line: print(line, file=sys.stderr),
        )
    except BackupError as exc:
        raise CliError(str(exc)) from None
    doc = _summary_doc(summary, out)
    if args.json:
        print(json.dumps(doc))
        return 0
    artifacts = sum(1 for name in summary.files if name.startswith("artifacts/"))
    print(
        f"backed up node {summary.node_id} (incarnation {summary.incarnation}, {summary.records} records"
        f"{f', {artifacts} artifacts' if args.artifacts else ''}) to {out}: {doc['bytes']} bytes"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from mesh.service.backup import BackupError, restore

    data_dir = Path(args.data_dir)
    try:
        summary = restore(Path(args.backup), data_dir)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(_summary_doc(summary, data_dir)))
        return 0
    print(
        f"restored node {summary.node_id} ({summary.records} records, incarnation {summary.incarnation}) "
        f"into {data_dir}. Start its agent with --data-dir {data_dir} and the same --region: it keeps "
        "its node id, outbids its old incarnation and gets newer records from its peers"
    )
    return 0


def register(sub: Any, version: str) -> None:
    """Add backup and restore to the `murmur` subcommands; `version` is written into each backup."""
    back = command(
        sub,
        "backup",
        summary="copy a node's data dir to a backup directory (safe while the agent runs)",
        description="Copy the node's identity key, network keys and database (SQLite's online backup: "
        "one consistent snapshot while the agent writes) into OUT, a new directory, with backup.json "
        "naming each file's sha256. Artifacts are left out unless --artifacts: peers can send them "
        "again. Run it as the user the agent runs as, on the device.",
        examples=[
            "murmur backup --data-dir /var/lib/murmur /var/backups/murmur-2026-05-01",
            "murmur backup --data-dir /var/lib/murmur --artifacts /mnt/usb/murmur-full",
        ],
    )
    back.add_argument("--data-dir", required=True, help="the agent's --data-dir")
    back.add_argument(
        "out", metavar="OUT", help="the backup directory to create (must not exist, or be empty)"
    )
    back.add_argument(
        "--artifacts",
        action="store_true",
        help="also copy the model artifacts (each re-hashed; default: leave them, peers have them)",
    )
    back.add_argument(
        "--json", action="store_true", help="print one JSON object (node_id, files, bytes, ...)"
    )
    back.set_defaults(func=cmd_backup, murmur_version=version)

    rest = command(
        sub,
        "restore",
        summary="restore a backup into an empty data dir (the agent stopped)",
        description="Check BACKUP (every file's sha256, the database's integrity, that the key and the "
        "database are one node's), then copy it into --data-dir, which must be missing or empty. "
        "Then start the agent on it: same node id; its records come back from the backup and "
        "anti-entropy brings whatever changed since (docs/operations.md, 'Backup and restore').",
        examples=[
            "murmur restore --data-dir /var/lib/murmur /var/backups/murmur-2026-05-01",
        ],
    )
    rest.add_argument("--data-dir", required=True, help="the data dir to restore into (missing or empty)")
    rest.add_argument("backup", metavar="BACKUP", help="a directory made by murmur backup")
    rest.add_argument(
        "--json", action="store_true", help="print one JSON object (node_id, files, bytes, ...)"
    )
    rest.set_defaults(func=cmd_restore)
