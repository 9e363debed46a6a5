"""A schedule's fields checked whole: every problem named (field -> message), its targets resolved, its site and zone found.

Used by create, change and preview alike; it takes plain JSON values (the preview's body is not typed
first) and never raises for bad input. Site scope: a site-limited caller targets only nodes of its
sites, names a selector site of its own, and keeps a schedule inside one site (a schedule without a
site is seen only by hub-wide callers). The time zone defaults to the site's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import parse_iso
from hark_fleet.hub.db.models import ChannelMapTemplate, Node, RecordingProfile, Site
from hark_fleet.hub.errors import InvalidRequest, NotFound
from hark_fleet.hub.services import recording_profiles
from hark_fleet.hub.services.nodes import TAG
from hark_fleet.hub.services.recordings_library import check_metadata
from hark_fleet.hub.services.schedule_occurrences import next_takes
from hark_fleet.hub.services.schedule_specs import parse_local, solar_anchor
from hark_fleet.hub.services.schedule_times import MAX_DURATION_S, ScheduleSpec, occurrences, validate, walks_quickly
from hark_fleet.hub.services.sites import check_time_zone

NAME_MAX = 100
DESCRIPTION_MAX = 2000
RRULE_MAX = 1000
MAX_NODE_IDS = 500
MAX_TAGS = 20
MAX_EXDATES = 1000
ON_CONFLICT = ("reject", "skip", "allow")
SOLAR_KEYS = frozenset({"event", "offset_minutes", "latitude", "longitude", "elevation_m"})
SELF_OVERLAP_WINDOW = timedelta(days=31)
SELF_OVERLAP_LIMIT = 5000
MAX_BACKLOG = 20_000  # occurrences between start_local and now (each expansion walks through them)
LOCAL_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?$"
_LOCAL = re.compile(LOCAL_PATTERN)
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
YEARS = (1970, 2200)
LOCAL_HINT = "a local wall time YYYY-MM-DDTHH:MM[:SS] without an offset, from 1970 to 2200"
# The stored columns a request may set (the API's names).
FIELDS = (
    "name",
    "description",
    "enabled",
    "target",
    "time_zone",
    "start_local",
    "duration_s",
    "rrule",
    "exdates",
    "valid_from",
    "valid_until",
    "solar",
    "profile_id",
    "channel_map_id",
    "metadata",
    "tags",
    "on_conflict",
)


@dataclass
class Checked:
    """The columns to store, the problems (empty when it may be saved), the site, the nodes targeted now."""

    fields: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    site: Site | None = None
    nodes: list[Node] = field(default_factory=list)
    spec: ScheduleSpec | None = None  # when the timing is valid
    profile: RecordingProfile | None = None


def check(values: Mapping[str, Any], scope: SiteScope, now: datetime) -> Checked:
    """Check a whole schedule (API field names; absent fields take their defaults)."""
    out = Checked()
    problems = out.problems
    f = out.fields
    f["site"] = None
    f["name"] = _text(values.get("name"), "name", NAME_MAX, problems)
    description = values.get("description", "")
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
        problems["description"] = f"text of at most {DESCRIPTION_MAX} characters"
    f["description"] = description
    enabled = values.get("enabled", True)
    if not isinstance(enabled, bool):
        problems["enabled"] = "true or false"
    f["enabled"] = enabled
    _target(values.get("target"), scope, out)
    _timing(values, out)
    f["profile_id"] = _profile(values.get("profile_id", recording_profiles.DEFAULT_ID), out)
    f["channel_map_id"] = _channel_map(values.get("channel_map_id"), problems)
    f["metadata"] = _metadata(values.get("metadata", {}), problems)
    f["tags"] = _tags(values.get("tags", []), problems)
    on_conflict = values.get("on_conflict", "reject")
    if on_conflict not in ON_CONFLICT:
        problems["on_conflict"] = f"one of {', '.join(ON_CONFLICT)}"
    f["on_conflict"] = on_conflict
    if out.profile is not None and isinstance(f.get("duration_s"), int) and "duration_s" not in problems:
        if f["duration_s"] > out.profile.max_duration_s:
            problems["duration_s"] = f"at most {out.profile.max_duration_s:g} s (the profile's max_duration_s)"
    if out.spec is not None and (why := backlog(out.spec, now)) is not None:
        problems["start_local"] = why
        out.spec = None
    if out.spec is not None and "duration_s" not in problems:
        why = self_overlap(out.spec, now)
        if why:
            problems["duration_s"] = why
    return out


def raise_problems(checked: Checked) -> None:
    if checked.problems:
        raise InvalidRequest("The schedule is invalid.", fields=dict(sorted(checked.problems.items())))


# -- parts ---------------------------------------------------------------------------------------


def _text(value: Any, name: str, max_len: int, problems: dict[str, str]) -> Any:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or value != value.strip() or not _PRINTABLE.fullmatch(value):
        problems[name] = f"1-{max_len} characters, no control characters or surrounding spaces"
    return value


def _target(raw: Any, scope: SiteScope, out: Checked) -> None:
    problems = out.problems
    shape = 'give {"node_ids": [...]} or {"selector": {"site": ..., "tags": [...]}}'
    if not isinstance(raw, dict) or len(raw) != 1 or not ({"node_ids", "selector"} & set(raw)):
        problems["target"] = shape
        out.fields["target"] = raw
        return
    if "node_ids" in raw:
        _node_list(raw["node_ids"], scope, out)
    else:
        _selector(raw["selector"], scope, out)


def _node_list(raw: Any, scope: SiteScope, out: Checked) -> None:
    problems = out.problems
    out.fields["target"] = {"node_ids": raw}
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw) or not 1 <= len(raw) <= MAX_NODE_IDS:
        problems["target.node_ids"] = f"a list of 1 to {MAX_NODE_IDS} node ids"
        return
    wanted = list(dict.fromkeys(raw))
    found = {n.id: n for n in Node.select(Node.id, Node.site, Node.tags).where(Node.id.in_(wanted))}
    missing = [x for x in wanted if x not in found or not scope.allows(found[x].site)]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        problems["target.node_ids"] = f"no node {', '.join(missing[:5])}{more}"
        return
    out.fields["target"] = {"node_ids": wanted}
    out.nodes = [found[x] for x in sorted(wanted)]
    sites = {n.site for n in out.nodes}
    site = next(iter(sites)) if len(sites) == 1 else None
    if site is None and scope.sites is not None:
        problems["target"] = "a schedule of a site-limited caller targets the nodes of one of its sites"
        return
    _set_site(site, out)


def _selector(raw: Any, scope: SiteScope, out: Checked) -> None:
    problems = out.problems
    out.fields["target"] = {"selector": raw}
    if not isinstance(raw, dict) or set(raw) - {"site", "tags"}:
        problems["target.selector"] = 'an object {"site": a site id or null, "tags": [...]}'
        return
    site = raw.get("site")
    tags = raw.get("tags", [])
    if site is not None and (not isinstance(site, str) or Site.get_or_none(Site.id == site) is None or not scope.allows(site)):
        problems["target.selector.site"] = f"no site {site}"
    elif site is None and scope.sites is not None:
        problems["target.selector.site"] = "name one of your sites (a selector without a site reaches every site)"
    if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(isinstance(t, str) and TAG.fullmatch(t) for t in tags):
        problems["target.selector.tags"] = f"at most {MAX_TAGS} tags (letters, digits, _ . : -; 64 at most)"
    if "target.selector.site" in problems or "target.selector.tags" in problems:
        return
    tags = list(dict.fromkeys(tags))
    out.fields["target"] = {"selector": {"site": site, "tags": tags}}
    query = Node.select(Node.id, Node.site, Node.tags)
    if site is not None:
        query = query.where(Node.site == site)
    out.nodes = [n for n in query.order_by(Node.id) if set(tags) <= set(n.tags or [])]
    _set_site(site, out)


def _set_site(site: str | None, out: Checked) -> None:
    out.fields["site"] = site
    out.site = Site.get_or_none(Site.id == site) if site is not None else None


def _local(value: Any) -> datetime | None:
    """A local wall time in the years hark records in (1970-2200), else None."""
    if not isinstance(value, str) or not _LOCAL.fullmatch(value):
        return None
    try:
        parsed = parse_local(value)
    except ValueError:
        return None
    return parsed if YEARS[0] <= parsed.year <= YEARS[1] else None


def _format(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _utc(value: Any, name: str, problems: dict[str, str]) -> datetime | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return parse_iso(value)
    except ValueError:
        problems[name] = "an ISO 8601 time with a zone (e.g. 2027-01-31T00:00:00Z), or null"
        return None


def _timing(values: Mapping[str, Any], out: Checked) -> None:
    problems, f = out.problems, out.fields
    zone = values.get("time_zone")
    if zone is None:
        if out.site is not None:
            zone = out.site.time_zone
        elif not any(k.startswith("target") for k in problems):  # a broken target: its zone is unknown, not missing
            problems["time_zone"] = "give the time zone: the targets are not in one site"
    else:
        try:
            check_time_zone(zone)
        except ValueError as err:
            problems["time_zone"] = str(err)
    f["time_zone"] = zone
    start = _local(values.get("start_local"))
    if start is None:
        problems["start_local"] = LOCAL_HINT
    f["start_local"] = _format(start) if start is not None else values.get("start_local")
    duration = values.get("duration_s")
    if isinstance(duration, float) and duration.is_integer():
        duration = int(duration)
    if isinstance(duration, bool) or not isinstance(duration, int) or not 0 < duration <= MAX_DURATION_S:
        problems["duration_s"] = f"a whole number of seconds from 1 to {MAX_DURATION_S} (7 days)"
    f["duration_s"] = duration
    rrule = values.get("rrule")
    if isinstance(rrule, str) and not rrule.strip():
        rrule = None
    if rrule is not None and (not isinstance(rrule, str) or len(rrule) > RRULE_MAX):
        problems["rrule"] = f"an RFC 5545 RRULE of at most {RRULE_MAX} characters, or null"
    f["rrule"] = rrule.strip() if isinstance(rrule, str) else rrule
    exdates = values.get("exdates", [])
    parsed: list[datetime] = []
    if not isinstance(exdates, list) or len(exdates) > MAX_EXDATES:
        problems["exdates"] = f"a list of at most {MAX_EXDATES} local wall times"
    else:
        bad = [x for x in exdates if _local(x) is None]
        if bad:
            problems["exdates"] = f"{str(bad[0])[:40]!r} is not {LOCAL_HINT}"
        else:
            parsed = sorted({x for x in (_local(v) for v in exdates) if x is not None})
    f["exdates"] = [_format(x) for x in parsed] if "exdates" not in problems else exdates
    valid_from = _utc(values.get("valid_from"), "valid_from", problems)
    valid_until = _utc(values.get("valid_until"), "valid_until", problems)
    f["valid_from"], f["valid_until"] = valid_from, valid_until
    f["solar"] = _solar(values.get("solar"), problems)
    _engine(out)


def _engine(out: Checked) -> None:
    """The occurrence engine's checks of what parsed (stand-ins for the fields already refused); the spec if all is well."""
    problems, f = out.problems, out.fields
    timing = ("time_zone", "start_local", "duration_s", "rrule", "exdates", "valid_from", "valid_until", "solar")
    broken = {k.split(".")[0] for k in problems} & set(timing)
    if f["time_zone"] is None:
        broken.add("time_zone")
    try:
        solar = None if "solar" in broken else solar_anchor(f["solar"], out.site)
    except (TypeError, ValueError) as err:
        problems["solar"] = f"not a usable solar anchor: {err}"
        return
    spec = ScheduleSpec(
        time_zone="UTC" if "time_zone" in broken else f["time_zone"],
        start_local=datetime(2000, 1, 1) if "start_local" in broken else parse_local(f["start_local"]),
        duration_s=1 if "duration_s" in broken else f["duration_s"],
        rrule=None if "rrule" in broken else f["rrule"],
        exdates=() if "exdates" in broken else tuple(parse_local(x) for x in f["exdates"]),
        valid_from=None if broken & {"valid_from", "valid_until"} else _aware_or_none(f["valid_from"]),
        valid_until=None if broken & {"valid_from", "valid_until"} else _aware_or_none(f["valid_until"]),
        solar=solar,
    )
    engine = {k: v for k, v in validate(spec).items() if k.split(".")[0] not in broken}
    problems.update(engine)
    if not broken and not engine:
        out.spec = spec


def _solar(raw: Any, problems: dict[str, str]) -> Any:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - SOLAR_KEYS or "event" not in raw:
        problems["solar"] = "an object {event, offset_minutes, latitude?, longitude?, elevation_m?}, or null"
        return raw
    solar = {"event": raw["event"], "offset_minutes": raw.get("offset_minutes", 0)}
    offset = solar["offset_minutes"]
    if isinstance(offset, float) and offset.is_integer():
        solar["offset_minutes"] = int(offset)
    for key in ("latitude", "longitude", "elevation_m"):
        value = raw.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems[f"solar.{key}"] = "a number, or null"
            solar[key] = value
    if not isinstance(solar["event"], str):
        problems["solar.event"] = "one of sunrise, sunset, dawn_civil, dusk_civil, dawn_nautical, dusk_nautical"
    if isinstance(solar["offset_minutes"], bool) or not isinstance(solar["offset_minutes"], int):
        problems["solar.offset_minutes"] = "a whole number of minutes from -720 to 720"
    return solar


def _profile(value: Any, out: Checked) -> Any:
    if not isinstance(value, str) or not 1 <= len(value) <= 40:
        out.problems["profile_id"] = "a recording profile id"
        return value
    try:
        out.profile = recording_profiles.get_profile(value)
    except NotFound:
        out.problems["profile_id"] = f"no recording profile {value}"
    return value


def _channel_map(value: Any, problems: dict[str, str]) -> Any:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 40
        or ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == value) is None
    ):
        problems["channel_map_id"] = f"no channel-map template {str(value)[:40]}"
    return value


def _metadata(value: Any, problems: dict[str, str]) -> Any:
    if not isinstance(value, dict):
        problems["metadata"] = "a JSON object"
        return value
    try:
        check_metadata(value)
    except InvalidRequest as err:
        problems.update(err.extra.get("fields") or {"metadata": err.message})
    return value


def _tags(value: Any, problems: dict[str, str]) -> Any:
    if not isinstance(value, list) or len(value) > MAX_TAGS or not all(isinstance(t, str) and TAG.fullmatch(t) for t in value):
        problems["tags"] = f"at most {MAX_TAGS} tags (letters, digits, _ . : -; 64 at most)"
        return value
    return list(dict.fromkeys(value))


def backlog(spec: ScheduleSpec, now: datetime) -> str | None:
    """Why the rule repeats too often between its start and now to be expanded quickly (the expansion walks from the start)."""
    if spec.rrule is None or spec.solar is not None or walks_quickly(spec.rrule):
        return None
    local_now = _aware(now).astimezone(ZoneInfo(spec.time_zone)).replace(tzinfo=None)
    if spec.start_local >= local_now:
        return None
    rules = rrulestr(spec.rrule, dtstart=spec.start_local, forceset=True)
    for count, wall in enumerate(rules):
        if wall >= local_now:
            return None
        if count >= MAX_BACKLOG:
            return f"the rule repeats more than {MAX_BACKLOG} times between the start and now; start it nearer today"
    return None


def self_overlap(spec: ScheduleSpec, now: datetime) -> str | None:
    """Why the schedule would overlap itself (a take longer than the gap to the next), or None."""
    if spec.rrule is None and spec.solar is None:
        return None
    first = next_takes(spec, now, 1)
    if not first:
        return None
    lo = first[0].start_utc
    takes = occurrences(spec, lo, lo + SELF_OVERLAP_WINDOW, SELF_OVERLAP_LIMIT).occurrences
    for a, b in zip(takes, takes[1:], strict=False):
        if b.start_utc < a.end_utc:
            gap = int((b.start_utc - a.start_utc).total_seconds())
            return (
                f"longer than the gap between two takes ({gap} s from {a.local_start} to {b.local_start}): "
                "the schedule would overlap itself"
            )
    return None


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)
