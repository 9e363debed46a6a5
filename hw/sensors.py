"""Readings of the box itself: CPU temperature, Raspberry Pi power flags, memory, load, disk.

Every function here reads files under /sys and /proc or runs `vcgencmd`, so it may block for
a moment: the agent calls them from an executor. Each returns None when the reading is not
available on this machine (no thermal zone, not a Pi, no /proc). `root` lets tests point the
readers at a fake tree. Thresholds for disk and temperature live in `node.conditions`; the
power flags come back as `PowerFlags` for the agent to turn into its own conditions.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Thermal zone types that measure the CPU/SoC, most useful first (Pi, other ARM boards, x86).
CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "soc-thermal", "soc_thermal", "x86_pkg_temp", "cpu0-thermal", "acpitz")
VCGENCMD_TIMEOUT_S = 2.0

# `vcgencmd get_throttled` bits (Raspberry Pi firmware documentation).
UNDER_VOLTAGE_NOW = 1 << 0
FREQUENCY_CAPPED_NOW = 1 << 1
THROTTLED_NOW = 1 << 2
SOFT_TEMP_LIMIT_NOW = 1 << 3
UNDER_VOLTAGE_SINCE_BOOT = 1 << 16
FREQUENCY_CAPPED_SINCE_BOOT = 1 << 17
THROTTLED_SINCE_BOOT = 1 << 18
SOFT_TEMP_LIMIT_SINCE_BOOT = 1 << 19


@dataclass(frozen=True, slots=True)
class ThermalZone:
    name: str  # the zone's `type`, e.g. cpu-thermal
    temperature_c: float


@dataclass(frozen=True, slots=True)
class PowerFlags:
    """The Pi firmware's throttling flags: what is happening now, and what happened since boot."""

    raw: int
    under_voltage: bool
    frequency_capped: bool
    throttled: bool
    soft_temp_limit: bool
    under_voltage_since_boot: bool
    frequency_capped_since_boot: bool
    throttled_since_boot: bool
    soft_temp_limit_since_boot: bool

    @property
    def problems(self) -> tuple[str, ...]:
        """Names of the flags set now (empty when all is well)."""
        names = ("under_voltage", "frequency_capped", "throttled", "soft_temp_limit")
        return tuple(name for name in names if getattr(self, name))

    @property
    def problems_since_boot(self) -> tuple[str, ...]:
        """Names of the flags that were set at some time since boot."""
        names = ("under_voltage", "frequency_capped", "throttled", "soft_temp_limit")
        return tuple(name for name in names if getattr(self, f"{name}_since_boot"))


@dataclass(frozen=True, slots=True)
class MemoryReading:
    total_bytes: int
    available_bytes: int

    @property
    def used_pct(self) -> float:
        return round(100.0 * (self.total_bytes - self.available_bytes) / self.total_bytes, 1) if self.total_bytes else 0.0


@dataclass(frozen=True, slots=True)
class LoadReading:
    load_1m: float
    load_5m: float
    load_15m: float
    cpus: int

    @property
    def per_cpu_1m(self) -> float:
        """The 1-minute load divided by the number of CPUs (above 1: more work than CPUs)."""
        return round(self.load_1m / max(1, self.cpus), 2)


@dataclass(frozen=True, slots=True)
class DiskReading:
    path: str
    total_bytes: int
    used_bytes: int
    free_bytes: int  # available to an unprivileged user, which is what the node is

    @property
    def used_pct(self) -> float:
        """Used share of what the node could ever use (blocks reserved for root left out, as `df` does)."""
        usable = self.used_bytes + self.free_bytes
        return round(100.0 * self.used_bytes / usable, 1) if usable else 0.0


@dataclass(frozen=True, slots=True)
class SensorReadings:
    """Everything at once, for a heartbeat; each part None when unavailable."""

    cpu_temperature_c: float | None
    thermal_zones: tuple[ThermalZone, ...] | None
    power: PowerFlags | None
    memory: MemoryReading | None
    load: LoadReading | None
    disk: DiskReading | None


def read_thermal_zones(root: Path = Path("/")) -> tuple[ThermalZone, ...] | None:
    """Every readable thermal zone (°C), or None when the machine has none."""
    zones = []
    base = root / "sys/class/thermal"
    for zone in sorted(base.glob("thermal_zone*"), key=lambda p: _zone_number(p.name)):
        try:
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue  # some zones refuse reads (EIO, ENODATA) while their sensor sleeps
        try:
            name = (zone / "type").read_text().strip() or zone.name
        except OSError:
            name = zone.name
        zones.append(ThermalZone(name, round(millidegrees / 1000.0, 1)))
    return tuple(zones) or None


def _zone_number(name: str) -> int:
    digits = name.removeprefix("thermal_zone")
    return int(digits) if digits.isdigit() else 1 << 30


def cpu_temperature(zones: tuple[ThermalZone, ...] | None) -> float | None:
    """The CPU's temperature among `zones`: a zone known to be the CPU, else the hottest."""
    if not zones:
        return None
    by_name = {zone.name: zone for zone in zones}
    for name in CPU_ZONE_TYPES:
        if name in by_name:
            return by_name[name].temperature_c
    return max(zone.temperature_c for zone in zones)


def read_cpu_temperature(root: Path = Path("/")) -> float | None:
    """The CPU temperature in °C from the thermal zones, or None."""
    return cpu_temperature(read_thermal_zones(root))


def decode_throttled(value: int) -> PowerFlags:
    """The flags in a `get_throttled` value."""
    return PowerFlags(
        raw=value,
        under_voltage=bool(value & UNDER_VOLTAGE_NOW),
        frequency_capped=bool(value & FREQUENCY_CAPPED_NOW),
        throttled=bool(value & THROTTLED_NOW),
        soft_temp_limit=bool(value & SOFT_TEMP_LIMIT_NOW),
        under_voltage_since_boot=bool(value & UNDER_VOLTAGE_SINCE_BOOT),
        frequency_capped_since_boot=bool(value & FREQUENCY_CAPPED_SINCE_BOOT),
        throttled_since_boot=bool(value & THROTTLED_SINCE_BOOT),
        soft_temp_limit_since_boot=bool(value & SOFT_TEMP_LIMIT_SINCE_BOOT),
    )


def parse_throttled(output: str) -> PowerFlags | None:
    """`throttled=0x50005` as PowerFlags, or None for any other output."""
    key, _, value = output.strip().partition("=")
    if key != "throttled":
        return None
    try:
        return decode_throttled(int(value, 16))
    except ValueError:
        return None


def read_power_flags(vcgencmd: str = "vcgencmd") -> PowerFlags | None:
    """The Pi's throttling flags from `vcgencmd get_throttled`, or None when it is not a Pi (or the tool fails)."""
    program = shutil.which(vcgencmd)
    if program is None:
        return None
    try:
        done = subprocess.run(
            [program, "get_throttled"], capture_output=True, text=True, timeout=VCGENCMD_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("vcgencmd failed: %s", err)
        return None
    if done.returncode != 0:
        log.debug("vcgencmd exited %s: %s", done.returncode, done.stderr.strip())
        return None
    return parse_throttled(done.stdout)


def read_memory(root: Path = Path("/")) -> MemoryReading | None:
    """Total and available memory from /proc/meminfo, or None."""
    values: dict[str, int] = {}
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * 1024  # kB
    except OSError:
        return None
    total = values.get("MemTotal")
    if not total:
        return None
    available = values.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = values.get("MemFree", 0) + values.get("Buffers", 0) + values.get("Cached", 0)
    return MemoryReading(total, min(available, total))


def read_load(root: Path = Path("/")) -> LoadReading | None:
    """Load averages from /proc/loadavg with the CPU count, or None."""
    try:
        parts = (root / "proc/loadavg").read_text().split()
        one, five, fifteen = (float(p) for p in parts[:3])
    except (OSError, ValueError):
        return None
    return LoadReading(one, five, fifteen, os.cpu_count() or 1)


def read_disk(path: Path) -> DiskReading | None:
    """Size and free space of the file system holding `path`, or None."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    return DiskReading(str(path), stats.f_blocks * stats.f_frsize, used, stats.f_bavail * stats.f_frsize)


def read_all(data_dir: Path, root: Path = Path("/"), vcgencmd: str = "vcgencmd") -> SensorReadings:
    """Every reading at once (blocking: run it in an executor)."""
    zones = read_thermal_zones(root)
    return SensorReadings(
        cpu_temperature_c=cpu_temperature(zones),
        thermal_zones=zones,
        power=read_power_flags(vcgencmd),
        memory=read_memory(root),
        load=read_load(root),
        disk=read_disk(data_dir),
    )
