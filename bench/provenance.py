"""What a benchmark figure was measured on: the commit, and whether the measured code differs from it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def source_version() -> dict[str, Any]:
    """The commit measured, and whether the code it runs differs from it (figures depend on both)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "gossip", "consensus", "inference", "mesh", "sim")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": None if changed is None else bool(changed),
    }
