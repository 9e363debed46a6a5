"""What the watchdog reports: one health event per node and kind, opened, updated when its channels change, resolved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from hark_fleet.protocol.messages import Severity
from hark_fleet.protocol.watchdog import Detector, PolicyConfig, Remediation

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
POLICY_ONLY = ("enabled", "severity", "remediation")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A detector's health event changed: `open` (again, with other channels or severity) or `resolved`."""

    kind: str
    state: Literal["open", "resolved"]
    severity: Severity
    detector: str
    details: dict[str, Any]
    channels: tuple[str, ...] = ()
    remediation: Remediation | None = None
    policy_id: str | None = None
    policy_version: int | None = None


def thresholds(detector: Detector) -> dict[str, Any]:
    """A detector's settings without what every detector has (on/off, severity, remediation)."""
    return {k: v for k, v in msgspec.structs.asdict(detector).items() if k not in POLICY_ONLY}


def worst(severities: list[Severity]) -> Severity:
    return max(severities, key=lambda s: SEVERITY_RANK.get(s, 1)) if severities else "warning"


@dataclass(slots=True)
class _Reported:
    channels: tuple[str, ...]
    severity: Severity
    policy: PolicyConfig


@dataclass(slots=True)
class EventBook:
    """The events this node reported open, per kind: a new report only when the channels or the severity change."""

    open: dict[str, _Reported] = field(default_factory=dict)

    def changed(self, kind: str, channels: tuple[str, ...], severity: Severity | None) -> bool:
        """Whether (channels, severity) differ from what was reported for `kind` (severity None: resolved)."""
        current = self.open.get(kind)
        if severity is None:
            return current is not None
        return current is None or current.channels != channels or current.severity != severity

    def report(
        self,
        kind: str,
        detector: str,
        channels: tuple[str, ...],
        severity: Severity | None,
        policy: PolicyConfig,
        details: dict[str, Any],
    ) -> WatchEvent:
        """Record and build the event (severity None resolves it)."""
        settings = getattr(policy.detectors, detector)
        full = {
            "channels": list(channels),
            "detector": detector,
            **details,
            "thresholds": thresholds(settings),
            "policy_id": policy.policy_id,
            "policy_version": policy.version,
        }
        if severity is None:
            previous = self.open.pop(kind)
            return WatchEvent(
                kind, "resolved", previous.severity, detector, full, previous.channels, settings.remediation,
                policy.policy_id, policy.version,
            )  # fmt: skip
        self.open[kind] = _Reported(channels, severity, policy)
        return WatchEvent(
            kind, "open", severity, detector, full, channels, settings.remediation, policy.policy_id, policy.version
        )

    def policy_of(self, kind: str) -> PolicyConfig | None:
        current = self.open.get(kind)
        return current.policy if current is not None else None
