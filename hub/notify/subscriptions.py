"""What a notification channel is told about (issue 21): its subscription, checked, matched and kept quiet.

A subscription is a JSON object on the channel::

    {"events": ["health.opened", "node.*"], "health_kinds": [], "sites": [], "min_severity": "warning",
     "quiet_hours": null | {"start": "22:00", "end": "07:00", "time_zone": "Europe/London",
                            "critical_breaks_through": true}}

Event types are the fleet events' own names (`health.opened`, `recording.job.failed`...) or a trailing `.*`
pattern; any well-formed name is accepted, so new kinds of events need no channel code. :data:`KNOWN_EVENTS`
lists those the hub emits today that are worth telling, for the console's editor. Pure functions: no I/O.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hark_fleet.hub.errors import InvalidRequest

SEVERITIES = ("info", "warning", "critical")
MAX_EVENTS = 50
MAX_HEALTH_KINDS = 50
MAX_SITES = 100
FIELDS = ("events", "health_kinds", "sites", "min_severity", "quiet_hours")
QUIET_FIELDS = ("start", "end", "time_zone", "critical_breaks_through")

KNOWN_EVENTS: dict[str, str] = {
    "health.opened": "A health condition opened on a node or the hub (silence, clipping, disk filling, overheating...)",
    "health.resolved": "A health condition cleared (the node recovered, or someone resolved it)",
    "health.reopened": "A resolved health condition was reopened by hand",
    "health.remediation": "The watchdog took a step to fix a condition (restarted audio or the agent, rebooted)",
    "node.offline": "A node stopped answering (disconnected or missed its heartbeats)",
    "node.online": "A node is back online",
    "node.degraded": "A node is online but has an open critical condition",
    "recording.job.failed": "A recording failed or was interrupted (an interrupted one keeps what it uploaded)",
    "recording.interrupted": "A recording was cut short: its box crashed or lost power (what it captured is kept)",
    "recording.job.missed": "A recording did not start: its node was away when it was due (scheduled ones too)",
    "upload.failed": "A recording could not be copied off-site and was given up on",
    "lifecycle.failed": "An update, restart or reboot of a node failed",
    "lifecycle.expired": "An update, restart or reboot never reached its node in time",
    "watchdog.calibration_failed": "A watchdog calibration of a node failed",
}

KNOWN_HEALTH_KINDS: dict[str, str] = {
    "audio.silence": "The input is silent",
    "audio.clipping": "The input is clipping",
    "audio.flatline": "The input is stuck at one value",
    "audio.dc_offset": "The input has a DC offset",
    "audio.noise_floor": "The noise floor rose",
    "audio.device_lost": "The audio device disappeared",
    "audio.format_changed": "The audio device changed format",
    "audio.channel_map": "The node refused its channel map",
    "disk.hours_left": "Few hours of recording left on the node's disk at its current rate",
    "disk.low": "The node's disk is nearly full",
    "recording.cache_full": "The node's recording cache is full",
    "temperature.high": "The node is running hot",
    "clock.unsynced": "The node's clock is off",
    "power.under_voltage": "The node's power supply is too weak",
    "power.on_battery": "The node runs on battery",
    "power.battery_low": "The node's battery is low",
    "outbox.high": "The node's outbox is filling up (the hub is not taking its messages)",
    "outbox.damaged": "The node's outbox was damaged and set aside",
    "heartbeat.missed": "The node missed its heartbeats",
    "hub.storage_full": "The hub's storage is full",
    "hub.retention_shortfall": "Retention cannot free enough space on the hub",
    "notify.failed": "A notification could not be delivered",
}

DEFAULT: dict[str, Any] = {
    "events": ["health.opened", "health.resolved", "node.offline", "node.online", "recording.job.failed", "upload.failed"],
    "health_kinds": [],
    "sites": [],
    "min_severity": "warning",
    "quiet_hours": None,
}

_WORD = r"[a-z][a-z0-9_]{0,39}"
_EVENT = re.compile(rf"{_WORD}(?:\.{_WORD}){{1,2}}|{_WORD}(?:\.{_WORD})?\.\*")
_HEALTH_WORD = r"[A-Za-z0-9_-]+"
_HEALTH_KIND = re.compile(rf"{_HEALTH_WORD}(?:\.{_HEALTH_WORD})*(?:\.\*)?")
_SITE = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def default() -> dict[str, Any]:
    """A fresh copy of the default subscription."""
    return copy.deepcopy(DEFAULT)


# --- checks --------------------------------------------------------------------------------------


def check(value: Any, *, site: str | None = None) -> dict[str, Any]:
    """The subscription normalised (defaults filled, duplicates dropped); every problem in one 400 (`subscription.<name>`).

    `site` is the channel's site: a site-scoped channel's `sites` may only be [] or [site].
    """
    if value is None:
        return default()
    if not isinstance(value, dict):
        raise InvalidRequest("The subscription is invalid.", fields={"subscription": "an object"})
    problems: dict[str, str] = {}
    for name in value:
        if name not in FIELDS:
            problems[f"subscription.{str(name)[:64]}"] = f"unknown field (known: {', '.join(FIELDS)})"
    out = default()
    out["events"] = _names(value.get("events", out["events"]), "events", _EVENT, MAX_EVENTS, 1, problems)
    out["health_kinds"] = _names(value.get("health_kinds", []), "health_kinds", _HEALTH_KIND, MAX_HEALTH_KINDS, 0, problems)
    out["sites"] = _sites(value.get("sites", []), site, problems)
    severity = value.get("min_severity", DEFAULT["min_severity"])
    if severity not in SEVERITIES:
        problems["subscription.min_severity"] = f"one of {', '.join(SEVERITIES)}"
    out["min_severity"] = severity
    out["quiet_hours"] = _quiet_hours(value.get("quiet_hours"), problems)
    if problems:
        raise InvalidRequest("The subscription is invalid.", fields=problems)
    return out


def _names(value: Any, field: str, pattern: re.Pattern[str], most: int, least: int, problems: dict[str, str]) -> list[str]:
    key = f"subscription.{field}"
    if not isinstance(value, list) or not least <= len(value) <= most:
        problems[key] = f"a list of {least}-{most} names"
        return []
    clean: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or len(name) > 100 or not pattern.fullmatch(name):
            example = "health.opened, recording.job.failed or health.*" if field == "events" else "audio.silence or audio.*"
            problems[key] = f"item {i + 1} is not a name such as {example}"
            return []
        if name not in clean:
            clean.append(name)
    return clean


def _sites(value: Any, site: str | None, problems: dict[str, str]) -> list[str]:
    key = "subscription.sites"
    if not isinstance(value, list) or len(value) > MAX_SITES:
        problems[key] = f"a list of at most {MAX_SITES} sites ([] for every site the channel covers)"
        return []
    clean: list[str] = []
    for name in value:
        if not isinstance(name, str) or not _SITE.fullmatch(name) or name != name.strip():
            problems[key] = "site names of 1-100 characters"
            return []
        if name not in clean:
            clean.append(name)
    if site is not None and clean not in ([], [site]):
        problems[key] = f"this channel belongs to site {site}: [] or [{site!r}]"
    return clean


def _quiet_hours(value: Any, problems: dict[str, str]) -> dict[str, Any] | None:
    key = "subscription.quiet_hours"
    if value is None:
        return None
    if not isinstance(value, dict):
        problems[key] = "null, or an object with start, end (HH:MM) and time_zone"
        return None
    for name in value:
        if name not in QUIET_FIELDS:
            problems[f"{key}.{str(name)[:64]}"] = f"unknown field (known: {', '.join(QUIET_FIELDS)})"
    for name in ("start", "end"):
        clock = value.get(name)
        if not isinstance(clock, str) or not _CLOCK.fullmatch(clock):
            problems[f"{key}.{name}"] = "required: a time of day as HH:MM (24 h), e.g. 22:00"
    if f"{key}.start" not in problems and value.get("start") == value.get("end"):
        problems[f"{key}.end"] = "must differ from start"
    zone = value.get("time_zone")
    if not _zone_ok(zone):
        problems[f"{key}.time_zone"] = "required: an IANA time zone such as Europe/London or UTC"
    breaks = value.get("critical_breaks_through", True)
    if not isinstance(breaks, bool):
        problems[f"{key}.critical_breaks_through"] = "true or false"
    return {"start": value.get("start"), "end": value.get("end"), "time_zone": zone, "critical_breaks_through": breaks}


def _zone_ok(zone: Any) -> bool:
    if not isinstance(zone, str) or not 1 <= len(zone) <= 64 or zone.startswith(("/", ".")) or ".." in zone:
        return False
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


# --- matching ------------------------------------------------------------------------------------


def rank(severity: str | None) -> int:
    """info 0 < warning 1 < critical 2 (anything unknown counts as info)."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def name_matches(patterns: list[str], name: str) -> bool:
    """Whether `name` is one of `patterns` or under one of its `prefix.*` patterns."""
    for pattern in patterns:
        if pattern == name or (pattern.endswith(".*") and name.startswith(pattern[:-1])):
            return True
    return False


def matches(
    subscription: dict[str, Any],
    *,
    event_type: str,
    health_kind: str | None,
    site: str | None,
    severity: str,
    channel_site: str | None,
) -> bool:
    """Whether a channel with this subscription (and site, None: hub-wide) is told about one notice.

    `health_kinds` filters only notices that have a health kind. A site-scoped channel hears only its site;
    a hub-wide channel hears every site unless `sites` names some, and hub-wide notices (site None) only
    when `sites` is [].
    """
    if not name_matches(list(subscription.get("events") or []), event_type):
        return False
    kinds = list(subscription.get("health_kinds") or [])
    if kinds and health_kind is not None and not name_matches(kinds, health_kind):
        return False
    if rank(severity) < rank(subscription.get("min_severity") or "warning"):
        return False
    sites = list(subscription.get("sites") or [])
    if channel_site is not None:
        return site == channel_site
    if not sites:
        return True
    return site is not None and site in sites


# --- quiet hours ---------------------------------------------------------------------------------


def quiet_until(subscription: dict[str, Any], severity: str, now: datetime) -> datetime | None:
    """When the quiet hours that `now` falls in end (UTC), or None: not quiet, or a critical breaking through.

    `now` naive is taken as UTC and the answer is naive UTC too (as the database keeps times); aware in, aware out.
    Windows may cross midnight; the end is the first instant the local clock reaches `end`, DST gaps and folds included.
    """
    quiet = subscription.get("quiet_hours")
    if not quiet:
        return None
    if severity == "critical" and quiet.get("critical_breaks_through", True):
        return None
    zone = ZoneInfo(quiet["time_zone"])
    start, end = _clock(quiet["start"]), _clock(quiet["end"])
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    local = aware.astimezone(zone)
    wall = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        if not start <= wall < end:
            return None
        end_day = today
    else:
        if wall >= start:
            end_day = today + timedelta(days=1)
        elif wall < end:
            end_day = today
        else:
            return None
    until = _first_instant_at(end_day, end, zone, after=aware)
    return until if now.tzinfo is not None else until.replace(tzinfo=None)


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _first_instant_at(day: date, clock: time, zone: ZoneInfo, *, after: datetime) -> datetime:
    """The first UTC instant after `after` when the local clock shows `clock` on `day` or has just passed it (a DST gap)."""
    wall = datetime.combine(day, clock)
    candidates = []
    for fold in (0, 1):
        utc = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if utc.astimezone(zone).replace(tzinfo=None) == wall and utc > after:
            candidates.append(utc)
    if candidates:
        return min(candidates)
    # In a DST gap: the clock jumps over `clock`; the answer is the jump, between the two readings of the wall time.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall:
            high = mid
        else:
            low = mid
    return max(high.replace(microsecond=0), after + timedelta(seconds=1))


def describe_quiet(subscription: dict[str, Any]) -> str:
    """'quiet hours until 07:00 Europe/London', for a deferred notification's reason."""
    quiet = subscription.get("quiet_hours") or {}
    return f"quiet hours until {quiet.get('end', '?')} {quiet.get('time_zone', '')}".strip()
