"""What the remediation ladders did, kept in the data dir so limits and cool-downs hold across agent restarts.

Per detector: the wall-clock times of the steps started (for `max_per_hour` / `max_per_day`),
when its last ladder ended (for `cooldown_s`), and a step that restarts the agent or the box
(`pending`), written before the step runs: the next agent reports it and goes on with the rung
after it. Pure decisions (`limited`, `cooldown_left`) take `now`, so tests need no clock.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hark_fleet.protocol.atomic_file import write_atomic

log = logging.getLogger(__name__)

LOG_FILE = "watchdog_remediation.json"
HOUR_S = 3600.0
DAY_S = 86_400.0
RESUME_GRACE_S = 600.0  # after a restart, the ladder goes on where it was if its condition opens again this soon


@dataclass(frozen=True, slots=True)
class Pending:
    """A step that restarts the agent (or reboots): reported by the agent that starts next."""

    detector: str
    step: int
    action: str
    wait_s: float
    at: float
    event_kind: str
    channels: tuple[str, ...]
    policy_id: str | None
    policy_version: int | None


class RemediationLog:
    """Attempts, ladder ends and pending restarts per detector, in one small JSON file replaced atomically."""

    def __init__(self, data_dir: Path | None) -> None:
        self.path = data_dir / LOG_FILE if data_dir is not None else None
        self.attempts: dict[str, list[float]] = {}
        self.ended: dict[str, float] = {}
        self.pending: dict[str, Pending] = {}
        self.resume: dict[str, tuple[int, float, float]] = {}  # detector -> (next step, not before, until)
        if self.path is not None:
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            loaded = json.loads(path.read_text())
            self.attempts = {str(k): [float(t) for t in v] for k, v in loaded.get("attempts", {}).items()}
            self.ended = {str(k): float(v) for k, v in loaded.get("ended", {}).items()}
            for detector, item in loaded.get("pending", {}).items():
                item["channels"] = tuple(item.get("channels", ()))
                self.pending[str(detector)] = Pending(**item)
            self.resume = {str(k): (int(v[0]), float(v[1]), float(v[2])) for k, v in loaded.get("resume", {}).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError) as err:
            log.error("remediation log %s unreadable (%s): counting afresh", path, err)

    def save(self) -> None:
        if self.path is None:
            return
        document: dict[str, Any] = {
            "attempts": self.attempts,
            "ended": self.ended,
            "pending": {k: _pending_dict(p) for k, p in self.pending.items()},
            "resume": {k: list(v) for k, v in self.resume.items()},
        }
        try:
            write_atomic(self.path, json.dumps(document))
        except OSError as err:
            log.error("remediation log not saved: %s", err)

    # -- decisions -----------------------------------------------------------------------

    def limited(self, detector: str, per_hour: int, per_day: int, now: float) -> tuple[str | None, float]:
        """Why no step may start now (None: one may) and in how many seconds one could."""
        times = [t for t in self.attempts.get(detector, []) if now - t < DAY_S]
        last_hour = [t for t in times if now - t < HOUR_S]
        if len(last_hour) >= per_hour:
            return f"rate limit: {per_hour} per hour reached", max(1.0, min(last_hour) + HOUR_S - now)
        if len(times) >= per_day:
            return f"rate limit: {per_day} per day reached", max(1.0, min(times) + DAY_S - now)
        return None, 0.0

    def cooldown_left(self, detector: str, cooldown_s: float, now: float) -> float:
        ended = self.ended.get(detector)
        return 0.0 if ended is None else max(0.0, ended + cooldown_s - now)

    def resume_step(self, detector: str, now: float) -> tuple[int, float]:
        """The rung a ladder restarted by the agent goes on with, and until when it waits first (else 0, 0)."""
        entry = self.resume.pop(detector, None)
        if entry is None:
            return 0, 0.0
        self.save()
        step, not_before, until = entry
        return (step, not_before) if now <= until else (0, 0.0)

    # -- records ---------------------------------------------------------------------------

    def started(self, detector: str, now: float, pending: Pending | None = None) -> None:
        """A step starts: counted (and a restarting one remembered) on disk before it runs."""
        times = [t for t in self.attempts.get(detector, []) if now - t < DAY_S]
        times.append(now)
        self.attempts[detector] = times
        if pending is not None:
            self.pending[detector] = pending
        self.save()

    def ladder_ended(self, detector: str, now: float) -> None:
        self.ended[detector] = now
        self.save()

    def take_pending(self, now: float) -> list[Pending]:
        """The restarting steps the previous agent left: each resumes its ladder at the next rung."""
        taken = list(self.pending.values())
        for item in taken:
            self.resume[item.detector] = (item.step + 1, item.at + item.wait_s, now + item.wait_s + RESUME_GRACE_S)
        self.pending = {}
        if taken:
            self.save()
        return taken


def _pending_dict(pending: Pending) -> dict[str, Any]:
    return {
        "detector": pending.detector,
        "step": pending.step,
        "action": pending.action,
        "wait_s": pending.wait_s,
        "at": pending.at,
        "event_kind": pending.event_kind,
        "channels": list(pending.channels),
        "policy_id": pending.policy_id,
        "policy_version": pending.policy_version,
    }
