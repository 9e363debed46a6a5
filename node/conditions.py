"""Health conditions the node watches in its own readings: disk, temperature, clock.

Pure threshold logic with hysteresis (a condition opens at one level and clears at a safer one,
so a value hovering at the edge does not flap). Each change is reported once through the
outbox; the hub keeps one open event per condition and counts repeats.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hark_fleet.node.metrics import SystemSnapshot
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.protocol.messages import Severity

log = logging.getLogger(__name__)

DISK_WARN_FREE_PCT = 10.0
DISK_CRITICAL_FREE_PCT = 5.0
DISK_CLEAR_FREE_PCT = 12.0
TEMP_WARN_C = 80.0
TEMP_CRITICAL_C = 90.0
TEMP_CLEAR_C = 75.0
CLOCK_WARN_MS = 1_000.0  # recordings would carry timestamps this far off
CLOCK_CRITICAL_MS = 60_000.0
CLOCK_CLEAR_MS = 500.0


@dataclass(frozen=True, slots=True)
class Change:
    """A condition opened (with its severity), changed severity, or resolved (`severity` None)."""

    kind: str
    severity: Severity | None
    details: dict[str, Any]


def _level(value: float, warn: float, critical: float, clear: float, current: Severity | None) -> Severity | None:
    """The severity for a value where higher is worse, keeping the current one until `clear`."""
    if value >= critical:
        return "critical"
    if value >= warn:
        return "warning"
    if current is not None and value > clear:
        return "warning"  # on the way down: still a warning until the value is safely clear
    return None


class ConditionWatch:
    """Remembers what it reported (in `path`, across restarts) and turns each new reading into the changes to report."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.reported: dict[str, Severity | None] = {}
        if path is not None:
            try:
                loaded = json.loads(path.read_text())
                self.reported = {str(k): v for k, v in loaded.items() if v in ("info", "warning", "critical")}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, AttributeError) as err:
                log.warning("conditions file %s unreadable (%s): starting afresh", path, err)

    def evaluate(
        self, system: SystemSnapshot, clock_offset_ms: float | None, quality: str, power_problems: tuple[str, ...] = ()
    ) -> list[Change]:
        wanted: dict[str, tuple[Severity | None, dict[str, Any]]] = {}
        if system.disk is not None:
            used = system.disk.used_pct  # higher is worse: compare with the free-space thresholds turned into "used"
            current = self.reported.get("disk.low")
            severity = _level(used, 100 - DISK_WARN_FREE_PCT, 100 - DISK_CRITICAL_FREE_PCT, 100 - DISK_CLEAR_FREE_PCT, current)
            wanted["disk.low"] = (severity, {"free_pct": round(100.0 - used, 1), "free_bytes": system.disk.free_bytes})
        if system.temperature_c is not None:
            severity = _level(
                system.temperature_c, TEMP_WARN_C, TEMP_CRITICAL_C, TEMP_CLEAR_C, self.reported.get("temperature.high")
            )
            wanted["temperature.high"] = (severity, {"temperature_c": system.temperature_c})
        if clock_offset_ms is not None:
            severity = _level(
                abs(clock_offset_ms), CLOCK_WARN_MS, CLOCK_CRITICAL_MS, CLOCK_CLEAR_MS, self.reported.get("clock.unsynced")
            )
            wanted["clock.unsynced"] = (severity, {"offset_ms": clock_offset_ms, "quality": quality})
        undervolt: Severity | None = "warning" if "under_voltage" in power_problems else None
        if undervolt is not None or "power.under_voltage" in self.reported:
            wanted["power.under_voltage"] = (undervolt, {"flags": list(power_problems)})
        changes = []
        for kind, (severity, details) in wanted.items():
            if self.reported.get(kind) == severity:  # unknown counts as clear: only what was reported open resolves
                continue
            changes.append(Change(kind, severity, details))
            self.reported[kind] = severity
        if changes and self.path is not None:
            self._save()
        return changes

    def _save(self) -> None:
        assert self.path is not None
        try:
            write_atomic(self.path, json.dumps({k: v for k, v in self.reported.items() if v is not None}))
        except OSError as err:
            log.warning("conditions not saved: %s", err)
