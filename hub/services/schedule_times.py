"""When a schedule records: its occurrences in UTC, from local wall times or solar events, exact across daylight saving.

Pure: no database, no clock. The rules (issue 19):
- a local start time that does not exist (spring forward) starts at the first valid instant after the gap;
- a local start time that occurs twice (fall back) starts once, at the first of the two (fold=0);
- a duration is elapsed time: 23:00 + 8 h across a change still lasts 8 real hours;
- two local times that land on the same instant (an hourly rule through a gap) start once;
- a solar anchor on a day the event does not happen (polar day or night) gives no occurrence and a reason.

Occurrences returned are those whose start lies in [start_utc, end_utc) and inside the validity window [valid_from, valid_until).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from astral import Observer
from astral import sun as astral_sun
from dateutil.rrule import rruleset, rrulestr

SOLAR_EVENTS = ("sunrise", "sunset", "dawn_civil", "dusk_civil", "dawn_nautical", "dusk_nautical")
MAX_DURATION_S = 7 * 86400
MAX_OFFSET_MINUTES = 720
DEFAULT_SOLAR_RULE = "FREQ=DAILY"

# event -> (human name, degrees below the horizon the sun's centre crosses; None: the refracted horizon)
_SOLAR: dict[str, tuple[str, float | None]] = {
    "sunrise": ("sunrise", None),
    "sunset": ("sunset", None),
    "dawn_civil": ("civil dawn", 6.0),
    "dusk_civil": ("civil dusk", 6.0),
    "dawn_nautical": ("nautical dawn", 12.0),
    "dusk_nautical": ("nautical dusk", 12.0),
}
_FIXED_PERIODS = {
    "SECONDLY": timedelta(seconds=1),
    "MINUTELY": timedelta(minutes=1),
    "HOURLY": timedelta(hours=1),
    "DAILY": timedelta(days=1),
    "WEEKLY": timedelta(weeks=1),
}
_HORIZON_ELEVATION = -0.833  # apparent sunrise/sunset: refraction plus the sun's radius


@dataclass(frozen=True)
class SolarAnchor:
    """Start at a solar event plus an offset (negative: before it), for a place."""

    event: str
    offset_minutes: int = 0
    latitude: float | None = None
    longitude: float | None = None
    elevation_m: float = 0.0


@dataclass(frozen=True)
class ScheduleSpec:
    """The "when" of a schedule. `start_local` is naive wall time in `time_zone` (a solar anchor uses only its date)."""

    time_zone: str
    start_local: datetime
    duration_s: int
    rrule: str | None = None
    exdates: tuple[datetime, ...] = ()
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    solar: SolarAnchor | None = None


@dataclass(frozen=True)
class Occurrence:
    start_utc: datetime
    end_utc: datetime
    local_start: str
    note: str | None = None


@dataclass(frozen=True)
class NoOccurrence:
    """A day the rule picked on which nothing starts, and why (polar day or night)."""

    day: date
    reason: str


@dataclass
class Expansion:
    occurrences: list[Occurrence] = field(default_factory=list)
    absent: list[NoOccurrence] = field(default_factory=list)


def validate(spec: ScheduleSpec) -> dict[str, str]:
    """Problems with a spec, field name -> message (empty when it is usable)."""
    problems: dict[str, str] = {}
    zone = _zone_or_none(spec.time_zone)
    if zone is None:
        problems["time_zone"] = f"{spec.time_zone!r} is not an IANA time zone"
    if not isinstance(spec.start_local, datetime) or spec.start_local.tzinfo is not None:
        problems["start_local"] = "give the start as a local wall time without an offset"
    if isinstance(spec.duration_s, bool) or not isinstance(spec.duration_s, int) or not 0 < spec.duration_s <= MAX_DURATION_S:
        problems["duration_s"] = f"duration must be a whole number of seconds from 1 to {MAX_DURATION_S}"
    if spec.rrule is not None:
        message = _rrule_problem(spec.rrule)
        if message:
            problems["rrule"] = message
    if any(not isinstance(x, datetime) or x.tzinfo is not None for x in spec.exdates):
        problems["exdates"] = "exception dates are local wall times without an offset"
    for name in ("valid_from", "valid_until"):
        value = getattr(spec, name)
        if value is not None and (not isinstance(value, datetime) or value.utcoffset() != timedelta(0)):
            problems[name] = "give the validity window in UTC"
    if (
        "valid_from" not in problems
        and "valid_until" not in problems
        and spec.valid_from is not None
        and spec.valid_until is not None
        and not spec.valid_from < spec.valid_until
    ):
        problems["valid_until"] = "valid_until must be after valid_from"
    if spec.solar is not None:
        problems.update(_solar_problems(spec.solar))
    return problems


def occurrences(spec: ScheduleSpec, start_utc: datetime, end_utc: datetime, limit: int = 1000) -> Expansion:
    """The occurrences starting in [start_utc, end_utc) (at most `limit`), in time order, and the picked days without one."""
    problems = validate(spec)
    if problems:
        raise ValueError("; ".join(f"{k}: {v}" for k, v in sorted(problems.items())))
    zone = ZoneInfo(spec.time_zone)
    lo = max(start_utc, spec.valid_from) if spec.valid_from else start_utc
    hi = min(end_utc, spec.valid_until) if spec.valid_until else end_utc
    result = Expansion()
    if not lo < hi or limit <= 0:
        return result
    # Local wall times of candidates: a margin of two days covers any UTC offset and solar offset.
    margin = timedelta(days=2)
    lo_local = lo.astimezone(zone).replace(tzinfo=None) - margin
    hi_local = hi.astimezone(zone).replace(tzinfo=None) + margin
    seen: set[datetime] = set()
    duration = timedelta(seconds=spec.duration_s)
    for wall in _walls(spec, lo_local, hi_local):
        if spec.solar is not None:
            start, note, reason = _solar_start(spec.solar, wall.date(), zone)
            if start is None:
                if reason and lo <= datetime.combine(wall.date(), time(12), zone) < hi:
                    result.absent.append(NoOccurrence(wall.date(), reason))
                continue
        else:
            start, note = resolve_local(wall, zone)
        if not lo <= start < hi or start in seen:
            continue
        seen.add(start)
        local = start.astimezone(zone)
        result.occurrences.append(Occurrence(start, start + duration, local.isoformat(timespec="seconds"), note))
        if len(result.occurrences) >= limit:
            break
    return result


def resolve_local(wall: datetime, zone: ZoneInfo) -> tuple[datetime, str | None]:
    """The UTC instant a naive local wall time starts at, and a note when daylight saving moved or chose it."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    first_utc = first.astimezone(UTC)
    second_utc = second.astimezone(UTC)
    if first_utc.astimezone(zone).replace(tzinfo=None) != wall:
        # In a gap: fold=1 reads it with the offset after the change, giving an instant before the gap; fold=0 one after it.
        start = _transition(min(first_utc, second_utc), max(first_utc, second_utc), zone)
        local = start.astimezone(zone)
        return start, (f"shifted: {wall:%H:%M} does not exist on {wall:%Y-%m-%d} in {zone.key}, started {local:%H:%M}")
    if first_utc != second_utc:
        return first_utc, (
            f"ambiguous: {wall:%H:%M} occurs twice on {wall:%Y-%m-%d} in {zone.key}, started at the first ({first:%Z})"
        )
    return first_utc, None


def overlaps(
    a: ScheduleSpec, b: ScheduleSpec, start_utc: datetime, end_utc: datetime, limit: int = 5, expand_limit: int = 10000
) -> list[tuple[Occurrence, Occurrence]]:
    """The first pairs of occurrences of `a` and `b` (starting in the window) whose [start, end) intervals intersect."""
    xs = occurrences(a, start_utc, end_utc, expand_limit).occurrences
    ys = occurrences(b, start_utc, end_utc, expand_limit).occurrences
    clashes: list[tuple[Occurrence, Occurrence]] = []
    j0 = 0
    for x in xs:
        while j0 < len(ys) and ys[j0].end_utc <= x.start_utc:
            j0 += 1
        j = j0
        while j < len(ys) and ys[j].start_utc < x.end_utc:
            if x.start_utc < ys[j].end_utc:
                clashes.append((x, ys[j]))
                if len(clashes) >= limit:
                    return clashes
            j += 1
    return clashes


def _walls(spec: ScheduleSpec, lo_local: datetime, hi_local: datetime) -> list[datetime]:
    """The rule's naive local wall times (solar: one per picked day, at midnight) between two local bounds."""
    if spec.solar is not None:
        dtstart = datetime.combine(spec.start_local.date(), time(0))
        rule = spec.rrule or DEFAULT_SOLAR_RULE
        exdays = {x.date() for x in spec.exdates}
    else:
        dtstart = spec.start_local
        rule = spec.rrule or ""
        exdays = set()
    if not rule:
        return [dtstart] if lo_local <= dtstart <= hi_local else []
    rules = rrulestr(rule, dtstart=_fast_forward(rule, dtstart, lo_local), forceset=True)
    assert isinstance(rules, rruleset)
    if spec.solar is None:
        for x in spec.exdates:
            rules.exdate(x)
    return [w for w in rules.between(lo_local, hi_local, inc=True) if w.date() not in exdays]


def _fast_forward(rule: str, dtstart: datetime, lo_local: datetime) -> datetime:
    """A later DTSTART with the same wall times from `lo_local` on: whole periods of the rule skipped.

    dateutil walks a rule from its DTSTART on every expansion, so a five-minute rule begun years ago
    would cost seconds. Only rules with a fixed period and no COUNT can move (COUNT counts from the
    first start; months and years vary in length, and they repeat rarely enough to walk).
    """
    step = _fixed_step(rule)
    if step is None:
        return dtstart
    skip = (lo_local - dtstart) // step - 1  # one whole step to spare before the window
    return dtstart + step * skip if skip > 0 else dtstart


def walks_quickly(rule: str) -> bool:
    """Whether expanding `rule` costs the same however long ago it started (see `_fast_forward`)."""
    return _fixed_step(rule) is not None


def _fixed_step(rule: str) -> timedelta | None:
    """The rule's fixed step (period x interval) when it has one and no COUNT, else None."""
    parts = dict(p.split("=", 1) for p in rule.upper().removeprefix("RRULE:").split(";") if "=" in p)
    period = _FIXED_PERIODS.get(parts.get("FREQ", ""))
    if period is None or "COUNT" in parts or "\n" in rule.strip():
        return None
    try:
        return period * max(1, int(parts.get("INTERVAL", "1")))
    except ValueError:
        return None


def _transition(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The first UTC instant at or after `before` whose offset is the one in force at `after` (a change lies between)."""
    target = after.astimezone(zone).utcoffset()
    lo, hi = before, after
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def _solar_start(anchor: SolarAnchor, day: date, zone: ZoneInfo) -> tuple[datetime | None, str | None, str | None]:
    """(start UTC, note, None) on a day with the event, else (None, None, reason)."""
    assert anchor.latitude is not None and anchor.longitude is not None
    observer = Observer(anchor.latitude, anchor.longitude, anchor.elevation_m)
    name, depression = _SOLAR[anchor.event]
    try:
        if anchor.event == "sunrise":
            event = astral_sun.sunrise(observer, day, tzinfo=zone)
        elif anchor.event == "sunset":
            event = astral_sun.sunset(observer, day, tzinfo=zone)
        elif anchor.event.startswith("dawn"):
            event = astral_sun.dawn(observer, day, depression=depression or 6.0, tzinfo=zone)
        else:
            event = astral_sun.dusk(observer, day, depression=depression or 6.0, tzinfo=zone)
    except ValueError:
        return None, None, _no_event_reason(anchor, observer, day, zone, name, depression)
    start = event.astimezone(UTC).replace(microsecond=0) + timedelta(minutes=anchor.offset_minutes)
    sign = "+" if anchor.offset_minutes >= 0 else "-"
    note = f"{name} {event:%H:%M} {sign} {abs(anchor.offset_minutes)} min"
    return start, note, None


def _no_event_reason(
    anchor: SolarAnchor, observer: Observer, day: date, zone: ZoneInfo, name: str, depression: float | None
) -> str:
    assert anchor.latitude is not None
    noon = astral_sun.noon(observer, day, tzinfo=zone)
    threshold = _HORIZON_ELEVATION if depression is None else -depression
    where = f"{abs(anchor.latitude):.1f}{'N' if anchor.latitude >= 0 else 'S'}"
    stays_up = astral_sun.elevation(observer, noon) > threshold
    if depression is None:
        why = "the sun stays up (polar day)" if stays_up else "the sun stays down (polar night)"
    elif stays_up:
        why = f"the sun stays above {depression:g}° below the horizon all day"
    else:
        why = f"the sun stays more than {depression:g}° below the horizon all day"
    return f"no {name} on {day.isoformat()} at {where}: {why}"


def _zone_or_none(key: object) -> ZoneInfo | None:
    if not isinstance(key, str) or not key or key != key.strip():
        return None
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _rrule_problem(text: object) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return "give an RFC 5545 RRULE such as FREQ=WEEKLY;BYDAY=MO,TU"
    if "DTSTART" in text.upper():
        return "leave DTSTART out: the start is start_local in time_zone"
    if re.search(r"UNTIL=\d{8}T\d{6}Z", text.upper()):
        return "write UNTIL as a local wall time without Z (for example UNTIL=20271231T235959): the rule runs in time_zone"
    try:
        rules = rrulestr(text, dtstart=datetime(2000, 1, 1), forceset=True)
        next(iter(rules), None)
    except (ValueError, TypeError) as exc:
        return f"not a valid RRULE: {exc}"
    return None


def _solar_problems(anchor: SolarAnchor) -> dict[str, str]:
    problems: dict[str, str] = {}
    if anchor.event not in _SOLAR:
        problems["solar.event"] = f"one of {', '.join(SOLAR_EVENTS)}"
    offset = anchor.offset_minutes
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > MAX_OFFSET_MINUTES:
        problems["solar.offset_minutes"] = f"a whole number of minutes from -{MAX_OFFSET_MINUTES} to {MAX_OFFSET_MINUTES}"
    for name, bound in (("latitude", 90.0), ("longitude", 180.0)):
        value = getattr(anchor, name)
        if value is None:
            problems[f"solar.{name}"] = f"a solar anchor needs the {name} of the site or node"
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not -bound <= value <= bound:
            problems[f"solar.{name}"] = f"{name} must be from -{bound:g} to {bound:g}"
    if isinstance(anchor.elevation_m, bool) or not isinstance(anchor.elevation_m, (int, float)):
        problems["solar.elevation_m"] = "elevation in metres"
    return problems
