"""Health reports: a condition of the node opened or resolved, sent to the hub through the outbox."""

from __future__ import annotations

from typing import Literal

import msgspec
from hark_fleet.node.clock import utc_iso
from hark_fleet.protocol.messages import HealthReport, Severity

OUTBOX_HIGH = "outbox.high"
OUTBOX_DAMAGED = "outbox.damaged"


def health_payload(
    msg_id: str,
    kind: str,
    state: Literal["open", "resolved"],
    severity: Severity = "warning",
    details: dict[str, object] | None = None,
) -> bytes:
    """The JSON of one HealthReport."""
    report = HealthReport(msg_id=msg_id, ts=utc_iso(), kind=kind, state=state, severity=severity, details=details or {})
    return msgspec.json.encode(report)


def outbox_level_payload(msg_id: str, high: bool, depth: int, capacity: int) -> bytes:
    """`outbox.high` opened (past 80 % of capacity) or resolved (back under 50 %)."""
    return health_payload(msg_id, OUTBOX_HIGH, "open" if high else "resolved", "warning", {"depth": depth, "capacity": capacity})


def outbox_damaged_payload(msg_id: str, moved_to: str) -> bytes:
    """`outbox.damaged`: the outbox file was unreadable; what it held that the hub had not stored is lost."""
    details: dict[str, object] = {
        "message": "The outbox file was damaged: it was moved aside and a new one started. "
        "Telemetry and reports it held that the hub had not stored yet are lost; recordings are not affected.",
        "moved_to": moved_to,
    }
    return health_payload(msg_id, OUTBOX_DAMAGED, "open", "warning", details)
