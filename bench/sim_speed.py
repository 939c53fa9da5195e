"""Benchmark: how fast the fleet simulator runs, and how much memory it needs.

    .venv/bin/python bench/sim_speed.py [--quick] [--json] [--duration-10k-s S] [--timeout-s S]

Runs `python -m sim --scenario steady --seed 1 --json` in a fresh child process
per configuration (so each run's peak RSS is its own, not the benchmark's):

- 1,000 nodes in 10 regions for 60 simulated seconds;
- 10,000 nodes in 100 regions (60 simulated seconds by default; `--duration-10k-s`
  changes it). `--quick` runs only the first.

The figure is the real-time ratio, simulated seconds per wall second: the
simulated clock is the baseline, measured in the same run, so the ratio holds
across machines far better than a wall time does (above 1 is faster than real
time). Because the build machines are shared, it also reports the child's CPU
time (user + sys, from wait4) and simulated seconds per CPU second, which other
processes on the machine disturb much less than the wall clock, and the load
average before and after. No figure is checked against a threshold: this is a
measurement, not a test.

The simulator opens no socket, so this benchmark needs no network namespace.
Each run is bounded by `--timeout-s`; on timeout, error or Ctrl-C the child is
killed (and, on Linux, it is SIGKILLed by the kernel if this script dies).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from provenance import source_version

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIO = "steady"
SEED = 1
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_DURATION_10K_S = 60.0
MIB = 2**20
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Config:
    """One simulator configuration to time."""

    label: str
    nodes: int
    regions: int
    duration_s: float

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "sim",
            "--nodes",
            str(self.nodes),
            "--regions",
            str(self.regions),
            "--scenario",
            SCENARIO,
            "--seed",
            str(SEED),
            "--duration",
            f"{self.duration_s:g}",
            "--json",
        ]


class BenchError(Exception):
    """A run did not produce a report."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_with_rusage(
    process: subprocess.Popen[bytes], timeout_s: float
) -> tuple[int | None, resource.struct_rusage]:
    """Reap `process` with wait4 (for its own CPU time and peak RSS); (exit code, rusage).

    The exit code is None when it ran past `timeout_s` and was killed. The child
    is gone when this returns, also on Ctrl-C.
    """
    reaped: list[tuple[int, resource.struct_rusage]] = []

    def reap() -> None:
        _, status, usage = os.wait4(process.pid, 0)
        reaped.append((status, usage))

    waiter = threading.Thread(target=reap, name="wait4", daemon=True)
    waiter.start()
    timed_out = False
    try:
        waiter.join(timeout_s)
        timed_out = waiter.is_alive()
    finally:
        if waiter.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            waiter.join()
    status, usage = reaped[0]
    # Tell Popen the child is reaped, so it never waits for (or signals) a recycled pid.
    process.returncode = os.waitstatus_to_exitcode(status)
    return (None if timed_out else process.returncode), usage


def run_one(config: Config, timeout_s: float) -> dict[str, Any]:
    """Run one simulation in a child process; its report plus wall, CPU and peak RSS as seen from here."""
    cmd = config.command()
    print(f"$ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            # Ctrl-C in a terminal reaches only this script, which then kills the child.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        exit_code, usage = _wait_with_rusage(process, timeout_s)
        wall_s = time.perf_counter() - started
        if exit_code is None:
            raise BenchError(
                f"{config.label}: no result within --timeout-s {timeout_s:g}; killed the simulator"
            )
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    load_after = os.getloadavg()
    try:
        report: dict[str, Any] = json.loads(stdout)
    except ValueError:
        tail = stderr.decode(errors="replace").strip().splitlines()[-10:]
        raise BenchError(
            f"{config.label}: exit {exit_code} and no JSON report:\n" + "\n".join(tail)
        ) from None

    sim_s = float(report["sim_s"])
    cpu_s = usage.ru_utime + usage.ru_stime
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    peak_rss_bytes = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    traffic = report.get("traffic") or {}
    bytes_per_node_s = (traffic.get("bytes_per_node_s") or {}).get("p50")
    return {
        "label": config.label,
        "command": shlex.join(cmd),
        "nodes": config.nodes,
        "regions": config.regions,
        "scenario": SCENARIO,
        "seed": SEED,
        "sim_s": sim_s,
        # The child's whole life, interpreter start-up included; the simulator's own wall_s is below.
        "wall_s": round(wall_s, 3),
        "realtime_ratio": round(sim_s / wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "sim_s_per_cpu_s": round(sim_s / cpu_s, 3) if cpu_s > 0 else None,
        "cpu_share": round(cpu_s / wall_s, 3),
        "node_sim_s_per_wall_s": round(config.nodes * sim_s / wall_s, 1),
        "peak_rss_bytes": peak_rss_bytes,
        "peak_rss_mib": round(peak_rss_bytes / MIB, 1),
        "rss_bytes_per_node": round(peak_rss_bytes / config.nodes),
        "bytes_per_node_s_p50": bytes_per_node_s,
        "sim_report_wall_s": report.get("wall_s"),
        "sim_report_peak_rss_bytes": report.get("peak_rss_bytes"),
        "invariant_violations": (report.get("invariants") or {}).get("violation_count"),
        "exit_code": process.returncode,
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(load_after[0], 2),
    }


def _machine() -> dict[str, Any]:
    mem_bytes: int | None = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpus": os.cpu_count(),
        "mem_bytes": mem_bytes,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _print_table(runs: list[dict[str, Any]]) -> None:
    header = (
        f"{'run':<22} {'sim_s':>6} {'wall_s':>8} {'sim/wall':>9} {'cpu_s':>8} {'sim/cpu':>8} "
        f"{'peak RSS':>10} {'B/node/s p50':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        per_cpu = "-" if r["sim_s_per_cpu_s"] is None else f"{r['sim_s_per_cpu_s']:.2f}x"
        bps = "-" if r["bytes_per_node_s_p50"] is None else f"{r['bytes_per_node_s_p50']:g}"
        print(
            f"{r['label']:<22} {r['sim_s']:>6g} {r['wall_s']:>8.1f} {r['realtime_ratio']:>8.2f}x "
            f"{r['cpu_s']:>8.1f} {per_cpu:>8} {r['peak_rss_mib']:>6.0f} MiB {bps:>13}"
        )
    for r in runs:
        print(
            f"  {r['label']}: peak_rss_bytes {r['peak_rss_bytes']} ({r['rss_bytes_per_node']} B/node), "
            f"CPU share {r['cpu_share']:.2f} of a core, load avg {r['loadavg_1m_before']:.2f} -> "
            f"{r['loadavg_1m_after']:.2f}, invariant violations {r['invariant_violations']}"
        )
    if len(runs) == 2 and runs[0]["node_sim_s_per_wall_s"] > 0:
        scale = runs[1]["node_sim_s_per_wall_s"] / runs[0]["node_sim_s_per_wall_s"]
        print(
            f"  node-seconds simulated per wall second, {runs[1]['label']} vs {runs[0]['label']}: "
            f"{scale:.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="run only 1,000 nodes x 10 regions x 60 s")
    parser.add_argument("--json", action="store_true", help="print one JSON object for all runs")
    parser.add_argument(
        "--duration-10k-s",
        type=float,
        default=DEFAULT_DURATION_10K_S,
        help=f"simulated seconds of the 10,000-node run (default {DEFAULT_DURATION_10K_S:g})",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"wall-clock limit per run; the simulator is killed after it (default {DEFAULT_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    configs = [Config("1k nodes x 10 regions", 1000, 10, 60.0)]
    if not args.quick:
        configs.append(Config("10k nodes x 100 regions", 10_000, 100, args.duration_10k_s))
    print(f"$ {shlex.join([sys.executable, *sys.argv])}", file=sys.stderr, flush=True)
    runs: list[dict[str, Any]] = []
    try:
        for config in configs:
            runs.append(run_one(config, args.timeout_s))
    except BenchError as exc:
        print(f"sim_speed: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sim_speed: interrupted; the simulator was stopped", file=sys.stderr)
        return 130
    if args.json:
        doc = {
            "benchmark": "sim_speed",
            "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": _machine(),
            "source": source_version(),
            "runs": runs,
        }
        print(json.dumps(doc, indent=2))
    else:
        source = source_version()
        print(f"source: commit {source['commit']}, uncommitted changes: {source['uncommitted_changes']}")
        _print_table(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
