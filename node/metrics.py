"""System metrics for heartbeats (psutil): CPU, memory, disk of the data dir, temperature.

Everything here may block briefly (files under /proc and /sys): call it from an executor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import psutil
from hark_fleet.protocol.messages import Disk, Memory

log = logging.getLogger(__name__)

# Sensor chips that measure the SoC or CPU, most useful first.
PREFERRED_SENSORS = ("cpu_thermal", "soc_thermal", "coretemp", "k10temp", "zenpower", "acpitz")


@dataclass(frozen=True, slots=True)
class SystemSnapshot:
    cpu_pct: float | None
    memory: Memory | None
    disk: Disk | None
    temperature_c: float | None


def read_system(data_dir: Path, cpu_window_s: float | None = None) -> SystemSnapshot:
    """One reading of every metric; a metric that cannot be read is None.

    CPU use is measured since the previous call, or over `cpu_window_s` seconds (the first call).
    """
    return SystemSnapshot(_cpu(cpu_window_s), _memory(), _disk(data_dir), read_temperature())


def _cpu(window_s: float | None) -> float | None:
    try:
        return round(psutil.cpu_percent(interval=window_s), 1)
    except OSError:
        return None


def _memory() -> Memory | None:
    try:
        vm = psutil.virtual_memory()
    except OSError:
        return None
    return Memory(used_pct=round(vm.percent, 1), total_bytes=vm.total)


def _disk(path: Path) -> Disk | None:
    try:
        usage = psutil.disk_usage(str(path))
    except OSError:
        return None
    return Disk(path=str(path), used_pct=round(usage.percent, 1), free_bytes=usage.free)


def read_temperature() -> float | None:
    """The CPU/SoC temperature in °C, or None when the system has no sensor psutil can read."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        sensors = reader()
    except (OSError, RuntimeError):
        return None
    if not sensors:
        return None
    names = [n for n in PREFERRED_SENSORS if n in sensors] or list(sensors)
    for name in names:
        readings = [entry.current for entry in sensors[name] if entry.current is not None]
        if readings:
            return round(max(readings), 1)
    return None
