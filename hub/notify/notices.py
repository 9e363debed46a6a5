"""What a fleet event says to a person, before any channel: the notifier's intake, pure.

`from_event` turns one event of the bus into a `NoticeDraft` (or None: nothing worth telling) with the
condition it is about (`key`: an opening and its resolution share it), the event type a subscription names,
its severity, site, node and a short summary ("audio silent on channel 2"). Node names are filled in when the
drafts are written (`hub.services.notify_outbox.write_notices`); titles are made when a notice is routed.

Known types get a description of their own; any other type is described generically (its type, site and
node), so a channel may subscribe to a new kind with no code here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hark_fleet.hub.events import Event

SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

# The event types (after `from_event`) with a description of their own.
NOTIFIABLE = frozenset(
    {
        "health.opened",
        "health.reopened",
        "health.resolved",
        "node.offline",
        "node.online",
        "node.degraded",
        "recording.job.failed",
        "recording.job.missed",
        "recording.interrupted",
        "upload.failed",
    }
)

# Types the bus never carries: `from_event` makes them out of another event (a completed recording that was cut short).
DERIVED = frozenset({"recording.interrupted"})

# Bus types that are never notices of their own (noise, or said by another event already).
IGNORED = frozenset(
    {
        "health.repeated",
        "health.acknowledged",
        "health.suppressed",
    }
)

# A generic event whose type ends so is a warning; any other an info.
BAD_ENDINGS = frozenset({"failed", "missed", "expired", "lost", "error", "offline", "rejected"})

# Health event kinds in words, for titles ("Stage left: audio silent on channel 2").
HEALTH_WORDS = {
    "audio.silence": "audio silent",
    "audio.clipping": "audio clipping",
    "audio.flatline": "audio flat (digital zeros or a stuck value)",
    "audio.dc_offset": "DC offset on the input",
    "audio.noise_floor": "noise floor moved",
    "audio.device_lost": "audio interface lost",
    "audio.no_device": "no audio interface",
    "audio.channel_map": "channel map refused",
    "disk.low": "disk almost full",
    "temperature.high": "running hot",
    "clock.unsynced": "clock not synchronised",
    "power.under_voltage": "power supply too weak",
    "power.on_battery": "running on battery",
    "power.battery_low": "battery low",
    "outbox.high": "telemetry backlog growing",
    "outbox.damaged": "telemetry outbox damaged",
    "recording.cache_full": "recording cache full",
    "hub.storage_full": "hub data disk full",
    "hub.retention_shortfall": "retention cannot make room",
    "heartbeat.missed": "not heard from",
    "notify.failed": "a notification could not be delivered",
}


@dataclass(frozen=True, slots=True)
class NoticeDraft:
    """One thing worth telling, as taken in from the bus (written as a `NotificationNotice`)."""

    event_type: str  # what a subscription names: the bus's type (health.opened, node.offline, recording.job.failed, ...)
    key: str  # the condition: an opening and its resolution share it ("health:hev_1", "node:nod_1")
    site: str | None
    severity: str
    opened: bool  # False: a resolution
    at: datetime  # when the condition began (openings) or ended (resolutions)
    summary: str  # what happened, without the node's name ("audio silent on channel 2")
    health_kind: str | None = None
    node_id: str | None = None
    channel: str | None = None
    path: str = ""  # the console page, from the hub's public URL on ("#/nodes/nod_1")
    since: datetime | None = None  # when the condition began (a resolution's opening time, when known)
    extra: dict[str, Any] = field(default_factory=dict)


def type_matches(pattern: str, event_type: str) -> bool:
    """`pattern` names `event_type`: the same, or `prefix.*` for every type under the prefix, or `*`."""
    if pattern == "*" or pattern == event_type:
        return True
    return pattern.endswith(".*") and event_type.startswith(pattern[:-1])


def wanted(event_type: str, patterns: frozenset[str] | None) -> bool:
    """Take in `event_type`? `patterns` None (channels not read yet): only the known notifiable types."""
    if patterns is None:
        return event_type in NOTIFIABLE
    return any(type_matches(p, event_type) for p in patterns)


def _time(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback


def _severity(value: Any, default: str = "warning") -> str:
    return value if value in SEVERITIES else default


def health_words(kind: str) -> str:
    """A health event kind in words ("audio.silence" -> "audio silent"; unknown kinds spelt out)."""
    return HEALTH_WORDS.get(kind) or kind.replace(".", " ").replace("_", " ")


def _channel(details: dict[str, Any]) -> str | None:
    channel = details.get("channel")
    if channel is not None and channel != "":
        return str(channel)
    channels = details.get("channels")
    if isinstance(channels, list) and channels:
        return ", ".join(str(c) for c in channels[:8])
    return None


def from_event(event: Event, now: datetime | None = None) -> NoticeDraft | None:
    """The notice an event of the bus makes, or None when it is nothing to tell anyone."""
    if event.type in IGNORED:
        return None
    data = event.data if isinstance(event.data, dict) else {}
    emitted = _time(data.get("emitted_at"), now or datetime.now(UTC))
    kind = event.type
    if kind in ("health.opened", "health.reopened", "health.resolved"):
        return _health(event, data, emitted)
    if kind.startswith("node."):
        return _node(event, data, emitted)
    if kind in ("recording.job.failed", "recording.job.missed"):
        return _job(event, data, emitted)
    if kind == "recording.completed":
        if data.get("status") != "interrupted" and not data.get("interrupted"):
            return None
        return _interrupted(event, data, emitted)
    if kind == "upload.failed":
        return _upload(event, data, emitted)
    return _generic(event, data, emitted)


def _health(event: Event, data: dict[str, Any], emitted: datetime) -> NoticeDraft | None:
    event_id = data.get("id")
    health_kind = str(data.get("kind") or "")
    if not event_id or not health_kind:
        return None
    details = data.get("details") if isinstance(data.get("details"), dict) else {}
    assert isinstance(details, dict)
    channel = _channel(details)
    opened = event.type != "health.resolved"
    since = _time(data.get("first_seen"), emitted)
    summary = health_words(health_kind) + (f" on channel {channel}" if channel else "")
    node_id = data.get("node_id")
    if node_id:
        path = f"#/health?node={node_id}&kind={health_kind}&state=any"
    else:
        path = f"#/health?kind={health_kind}&state=any"
    extra: dict[str, Any] = {"health_event_id": event_id}
    if health_kind.startswith("notify.") and details.get("channel_id"):
        extra["about_channel_id"] = details["channel_id"]  # never told to the channel it is about
    if details.get("reason"):
        extra["reason"] = str(details["reason"])[:300]
    return NoticeDraft(
        event_type=event.type,
        key=f"health:{event_id}",
        site=event.site,
        severity=_severity(data.get("severity")),
        opened=opened,
        at=since if opened else _time(data.get("resolved_at"), emitted),
        summary=summary,
        health_kind=health_kind,
        node_id=node_id,
        channel=channel,
        path=path,
        since=since,
        extra=extra,
    )


def _node(event: Event, data: dict[str, Any], emitted: datetime) -> NoticeDraft | None:
    node_id = data.get("node_id")
    if not node_id:
        return None
    to, came_from = event.type.removeprefix("node."), data.get("from")
    at = _time(data.get("at"), emitted)
    path = f"#/nodes/{node_id}"
    # A resolution says what ended in the opening's words ("Resolved: Stage left went offline").
    common: dict[str, Any] = {
        "site": event.site,
        "node_id": node_id,
        "at": at,
        "path": path,
        "extra": {"reason": data.get("reason")},
    }
    if to == "offline":
        return NoticeDraft(event_type="node.offline", key=f"node:{node_id}", severity="warning", opened=True,
                           summary="went offline", since=at, **common)  # fmt: skip
    if to == "degraded":
        if came_from == "offline":  # back, but with a critical problem (told by its health event)
            return NoticeDraft(event_type="node.online", key=f"node:{node_id}", severity="warning", opened=False,
                               summary="went offline", **common)  # fmt: skip
        return NoticeDraft(event_type="node.degraded", key=f"node:{node_id}:degraded", severity="warning", opened=True,
                           summary="is degraded (a critical problem is open)", since=at, **common)  # fmt: skip
    if to == "online":
        if came_from == "offline":
            return NoticeDraft(event_type="node.online", key=f"node:{node_id}", severity="warning", opened=False,
                               summary="went offline", **common)  # fmt: skip
        if came_from == "degraded":
            return NoticeDraft(event_type="node.online", key=f"node:{node_id}:degraded", severity="warning", opened=False,
                               summary="is degraded (a critical problem is open)", **common)  # fmt: skip
        return None  # pending -> online: a new box, not a recovery
    return _generic(event, data, emitted)


def _job(event: Event, data: dict[str, Any], emitted: datetime) -> NoticeDraft | None:
    recording_id, node_id = data.get("recording_id"), data.get("node_id")
    missed = event.type.endswith(".missed")
    error = str(data.get("error") or "").strip()
    summary = ("missed a scheduled recording" if missed else "recording failed") + (f": {error[:200]}" if error else "")
    return NoticeDraft(
        event_type=event.type,
        key=f"recording:{recording_id or data.get('id')}",
        site=event.site,
        severity="warning",
        opened=True,
        at=_time(data.get("updated_at"), emitted),
        summary=summary,
        node_id=node_id,
        path=f"#/recordings/{recording_id}" if recording_id else (f"#/nodes/{node_id}" if node_id else "#/recordings"),
        since=_time(data.get("start_at") or data.get("claimed_at") or data.get("created_at"), emitted),
        extra={"recording_id": recording_id, "schedule_id": data.get("schedule_id")},
    )


def _interrupted(event: Event, data: dict[str, Any], emitted: datetime) -> NoticeDraft:
    recording_id = data.get("id")
    name = str(data.get("name") or recording_id)
    return NoticeDraft(
        event_type="recording.interrupted",
        key=f"recording:{recording_id}",
        site=event.site,
        severity="warning",
        opened=True,
        at=_time(data.get("ended_at"), emitted),
        summary=f"recording {name[:120]} was interrupted (the box crashed or lost power)",
        node_id=data.get("node_id"),
        path=f"#/recordings/{recording_id}",
        since=_time(data.get("started_at"), emitted),
        extra={"recording_id": recording_id},
    )


def _upload(event: Event, data: dict[str, Any], emitted: datetime) -> NoticeDraft:
    item_id = data.get("id")
    error = str(data.get("error") or data.get("last_error") or "").strip()
    recording = data.get("recording_id")
    return NoticeDraft(
        event_type="upload.failed",
        key=f"upload:{item_id}",
        site=event.site,
        severity="warning",
        opened=True,
        at=emitted,
        summary=f"upload of {recording or 'a recording'} failed" + (f": {error[:200]}" if error else ""),
        node_id=data.get("node_id"),
        path=f"#/uploads/{item_id}" if item_id else "#/uploads",
        since=emitted,
        extra={"recording_id": recording, "provider_id": data.get("provider_id")},
    )


def _generic(event: Event, data: dict[str, Any], emitted: datetime) -> NoticeDraft:
    """Any other event: its type in words, where, and the node it names if any."""
    node_id = data.get("node_id") if isinstance(data.get("node_id"), str) else None
    ident = data.get("id") if isinstance(data.get("id"), str) else None
    words = event.type.replace(".", " ").replace("_", " ")
    detail = data.get("reason") or data.get("error") or data.get("message")
    summary = words + (f": {str(detail)[:200]}" if isinstance(detail, str) and detail else "")
    return NoticeDraft(
        event_type=event.type,
        key=f"{event.type}:{ident or event.id}",
        site=event.site,
        severity=_severity(data.get("severity"), "warning" if event.type.rsplit(".", 1)[-1] in BAD_ENDINGS else "info"),
        opened=True,
        at=emitted,
        summary=summary,
        node_id=node_id,
        path=f"#/nodes/{node_id}" if node_id else "",
        since=emitted,
        extra={"id": ident} if ident else {},
    )
