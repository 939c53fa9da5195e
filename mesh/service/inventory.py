"""A node's inventory, read from this device: cores, memory, disk, accelerators, labels.

`collect` reads this device (psutil; onnxruntime for the accelerators, imported
lazily and optional) into inference/inventory.py's `Inventory`; the schema, the
record payload and the republish rules live there, pure. The agent
(mesh/service/agent.py) collects every INVENTORY_CHECK_S and publishes what
`should_publish` asks for.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
from pathlib import Path

import psutil

from inference.inventory import Inventory

log = logging.getLogger(__name__)

INVENTORY_CHECK_S = 5.0  # the agent collects and compares this often, seconds


def _accelerators() -> tuple[str, ...]:
    """onnxruntime's execution providers here; () if onnxruntime is missing or broken."""
    try:
        import onnxruntime  # lazily: importing it costs ~0.3 s and it is optional on a device

        return tuple(str(p) for p in onnxruntime.get_available_providers())
    except Exception as exc:  # an optional native library: any failure means "none known"
        log.debug("no accelerators known: onnxruntime unavailable (%s)", exc)
        return ()


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
