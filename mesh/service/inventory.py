"""A node's inventory, read from this device: cores, memory, disk, accelerators, labels.

`collect` reads this device (psutil; onnxruntime for the accelerators, optional)
into inference/inventory.py's `Inventory`; the schema, the record payload and the
republish rules live there, pure. The agent (mesh/service/agent.py) collects every
INVENTORY_CHECK_S and publishes what `should_publish` asks for.

The accelerators are asked of onnxruntime in a short-lived child process, once per
agent, unless this process has already imported it (a model is loaded): importing
onnxruntime only to list its providers made an idle agent with no model about
20 MiB bigger (docs/benchmarks.md, "bench/inference_bench.py").
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from inference.inventory import Inventory

log = logging.getLogger(__name__)

INVENTORY_CHECK_S = 5.0  # the agent collects and compares this often, seconds


PROBE_TIMEOUT_S = 60.0  # a cold import of onnxruntime on a slow SD card takes seconds
PROBE_OUTPUT_MAX = 64 * 1024  # bytes of the child's answer read; a provider list is ~100
PROVIDERS_MAX = 32
# The child's whole job: print onnxruntime's providers as a JSON list of strings.
PROBE_CODE = "import json, onnxruntime; print(json.dumps(onnxruntime.get_available_providers()))"

_probed: tuple[str, ...] | None = None  # the child's answer, kept: providers do not change while we run
# Providers onnxruntime lists that run nothing on this device: the Azure provider sends each
# run to a remote Azure endpoint (and needs one configured). A manifest asking for it would be
# placed here and then fail, so it is not offered as an accelerator.
NOT_ON_DEVICE = frozenset({"AzureExecutionProvider"})


def _accelerators() -> tuple[str, ...]:
    """onnxruntime's execution providers that run on this device; () if onnxruntime is missing or broken."""
    return tuple(p for p in _providers() if p not in NOT_ON_DEVICE)


def _providers() -> tuple[str, ...]:
    global _probed
    runtime = sys.modules.get("onnxruntime")
    if runtime is not None:  # already paid for (a model is loaded): asking it costs nothing
        try:
            return tuple(str(p) for p in runtime.get_available_providers())
        except Exception as exc:  # an optional native library: any failure means "none known"
            log.debug("no accelerators known: onnxruntime failed (%s)", exc)
            return ()
    if _probed is None:
        _probed = probe_accelerators()
    return _probed


def probe_accelerators(python: str = sys.executable, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str, ...]:
    """Ask a child interpreter for onnxruntime's providers, so this process never imports it to know."""
    try:
        done = subprocess.run(
            [python, "-c", PROBE_CODE],
            capture_output=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("no accelerators known: the onnxruntime probe did not run (%s)", exc)
        return ()
    if done.returncode != 0:
        log.debug("no accelerators known: onnxruntime unavailable (%s)", done.stderr[-200:])
        return ()
    try:
        doc = json.loads(done.stdout[:PROBE_OUTPUT_MAX])
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        doc = None
    if not isinstance(doc, list) or len(doc) > PROVIDERS_MAX or not all(isinstance(p, str) for p in doc):
        log.debug("no accelerators known: the onnxruntime probe answered %r", done.stdout[:200])
        return ()
    return tuple(doc)


def _load_1m() -> float:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return float(psutil.getloadavg()[0])


def collect(labels: dict[str, str], region: str, data_dir: Path | str = ".") -> Inventory:
    """This device's inventory now; disk free is that of `data_dir`'s filesystem. Never raises on probes."""
    memory = psutil.virtual_memory()
    try:
        disk_free = int(shutil.disk_usage(data_dir).free)
    except OSError:
        disk_free = 0
    try:
        cpu_percent = float(psutil.cpu_percent(interval=None))
    except Exception:  # psutil reads /proc; a sandbox may hide it
        cpu_percent = 0.0
    try:
        load = _load_1m()
    except Exception:
        load = 0.0
    return Inventory(
        cpu_count=os.cpu_count() or 1,
        load_1m=round(load, 2),
        cpu_percent=round(cpu_percent, 1),
        memory_total_bytes=int(memory.total),
        memory_available_bytes=int(memory.available),
        disk_free_bytes=disk_free,
        accelerators=_accelerators(),
        os=platform.system().lower(),
        arch=platform.machine(),
        python=platform.python_version(),
        labels=dict(sorted(labels.items())),
        region=region,
        models=(),
    )
