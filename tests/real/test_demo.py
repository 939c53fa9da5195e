"""`murmur demo` end to end: it succeeds, and leaves no process or file behind, even on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.real

DEMO_TIMEOUT_S = 60.0


def _sigint_as_in_a_terminal() -> None:
    # A test runner started in the background (as CI may be) ignores SIGINT, and
    # children inherit that; Python then never raises KeyboardInterrupt. A user's
    # Ctrl-C arrives with the default disposition: give the demo that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _demo(tmp_path: Path) -> subprocess.Popen[str]:
    env = os.environ | {"TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_sigint_as_in_a_terminal,
    )


def _leftover_agents(tmp_path: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(tmp_path) in part for part in cmdline) and "agent" in cmdline:
            found.append(int(proc.info["pid"]))
    return found


def _reap(tmp_path: Path, demo: subprocess.Popen[str]) -> None:
    if demo.poll() is None:
        demo.kill()
        demo.wait()
    for pid in _leftover_agents(tmp_path):
        os.kill(pid, signal.SIGKILL)


def test_demo_runs_and_cleans_up(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    try:
        out, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    finally:
        _reap(tmp_path, demo)
    assert demo.returncode == 0, out
    for expected in ("sees 3/3", "sees region south", "marks south-3 dead", "all agents stopped cleanly"):
        assert expected in out, out
    assert not _leftover_agents(tmp_path)
    assert not list(tmp_path.glob("murmur-demo-*")), "the demo's temp dir was not removed"


def test_demo_interrupted_stops_every_agent(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        for line in demo.stdout:
            lines.append(line)
            # Interrupt as soon as all six agents run: the demo still has >10 s to go
            # then, so even a starved test process interrupts it mid-run.
            if re.search(r"started south-3", line) or time.monotonic() > deadline:
                break
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    finally:
        _reap(tmp_path, demo)
    assert demo.returncode == 130, "".join(lines) + out
    assert "interrupted" in out
    assert not _leftover_agents(tmp_path)
    assert not list(tmp_path.glob("murmur-demo-*"))
