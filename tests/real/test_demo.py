"""`murmur demo` end to end: the whole story (mesh, models ready, an inference through a node
without a replica, kill -9 and the heal under requests, the dashboard URL) then exit after
`--exit-after`; Ctrl-C once the story is told stops it cleanly (exit 0), Ctrl-C in the middle
exits 130; no process or file is left behind."""

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

from tests.real.conftest import sigint_as_in_a_terminal

pytestmark = pytest.mark.real

DEMO_TIMEOUT_S = 420.0  # the demo's own step timeouts are generous; this only catches a hang


def _demo(tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    env = os.environ | {"TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "demo", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=sigint_as_in_a_terminal,
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


STORY = (
    "sees 3/3",
    "sees region south",
    "vibration-anomaly  replicas ready/desired 4/4",
    "fetched its artifacts peer to peer from north-1",
    "holds no vibration-anomaly replica; it forwarded the request",
    "answered score = ",
    "with SIGKILL",
    "every agent of region south marks",
    "is whole again: 2/2 vibration-anomaly replicas ready (moved to south-",
    "requests during the heal: ",
    "step 4 done in ",
    "dashboard:  http://127.0.0.1:",
    "events --follow",
    "all agents stopped cleanly",
)


def _lines_until(demo: subprocess.Popen[str], pattern: str) -> list[str]:
    assert demo.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    for line in demo.stdout:
        lines.append(line)
        if re.search(pattern, line) or time.monotonic() > deadline:
            break
    return lines


def test_demo_tells_the_story_and_exits_after_exit_after(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "--exit-after", "0")
    try:
        out, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    finally:
        _reap(tmp_path, demo)
    assert demo.returncode == 0, out
    for expected in STORY:
        assert expected in out, f"{expected!r} not in:\n{out}"
    answered = re.search(r"requests during the heal: (\d+) answered", out)
    assert answered and int(answered.group(1)) > 0, out
    assert not _leftover_agents(tmp_path)
    assert not list(tmp_path.glob("murmur-demo-*")), "the demo's temp dir was not removed"


def test_demo_runs_until_ctrl_c_then_stops_cleanly(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    try:
        lines = _lines_until(demo, r"Press Ctrl-C")
        assert "Press Ctrl-C" in lines[-1], "".join(lines)
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    finally:
        _reap(tmp_path, demo)
    assert demo.returncode == 0, "".join(lines) + out
    assert "all agents stopped cleanly" in out
    assert not _leftover_agents(tmp_path)
    assert not list(tmp_path.glob("murmur-demo-*"))


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
