"""Recording profiles (settings): how a node records — format, rate, depth, channels, segments, pre-roll, longest take.

Profiles are fleet-wide. The built-in `default` (WAV, 48 kHz, 24 bit, the source's channels, no
pre-roll, 10 s segments, at most 12 h) is made at first use; it may be changed like any profile
(it is the fleet's default) but not renamed or deleted. A recording keeps a snapshot of the profile
it was made with, so changing or deleting a profile never changes a recording already asked for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import peewee
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import ChannelMapTemplate, RecordingProfile, database_proxy
from hark_fleet.hub.db.optional_writes import write_if_room
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import Filter, ListSpec, one_of
from hark_fleet.hub.services.text_checks import text_problem
from hark_fleet.hub.services.versioning import update_if_unchanged

MANAGE = "settings:manage"
DEFAULT_ID = "default"
FORMATS = ("wav", "flac")
SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000, 88200, 96000)
BIT_DEPTHS = (16, 24, 32)
FLAC_BIT_DEPTHS = (16, 24)  # libsndfile writes FLAC at 16 or 24 bits only
MAX_CHANNELS = 64
SEGMENT_RANGE_S = (1.0, 600.0)
PREROLL_RANGE_S = (0.0, 30.0)
MAX_DURATION_RANGE_S = (1.0, 86400.0)
MAX_DESCRIPTION = 500
# The built-in profile's recording fields, also what a new profile starts from.
DEFAULTS: dict[str, Any] = {
    "format": "wav",
    "sample_rate": 48000,
    "bit_depth": 24,
    "channels": None,
    "channel_map_template_id": None,
    "segment_s": 10.0,
    "preroll_s": 0.0,
    "max_duration_s": 12 * 3600.0,
}
RECORDING_FIELDS = tuple(DEFAULTS)


def profile_to_api(profile: RecordingProfile) -> dict[str, Any]:
    return {
        "id": profile.id,
        "name": profile.name,
        "description": profile.description,
        "builtin": bool(profile.builtin),
        "format": profile.format,
        "sample_rate": profile.sample_rate,
        "bit_depth": profile.bit_depth,
        "channels": profile.channels,
        "channel_map_template_id": profile.channel_map_template_id,
        "segment_s": profile.segment_s,
        "preroll_s": profile.preroll_s,
        "max_duration_s": profile.max_duration_s,
        "created_at": iso(profile.created_at),
        "updated_at": iso(profile.updated_at),
        "version": profile.version,
    }


def snapshot(profile: RecordingProfile) -> dict[str, Any]:
    """What a recording keeps of its profile: the recording fields, and which profile and version they came from."""
    return {
        "id": profile.id,
        "name": profile.name,
        "version": profile.version,
        **{name: getattr(profile, name) for name in RECORDING_FIELDS},
    }


def _int_of(options: tuple[int, ...]) -> Any:
    def parse(value: str) -> int:
        try:
            number = query.integer(value)
        except ValueError:
            number = None
        if number not in options:
            raise ValueError(f"must be one of {', '.join(map(str, options))}")
        return number

    return parse


PROFILE_LIST = ListSpec(
    model=RecordingProfile,
    serialize=profile_to_api,
    filters=(
        Filter("name", RecordingProfile.name, facet=False),
        # `format` is the export format's parameter, so the audio format filters as `audio_format`.
        Filter("audio_format", RecordingProfile.format, one_of(FORMATS)),
        Filter("sample_rate", RecordingProfile.sample_rate, _int_of(SAMPLE_RATES)),
        Filter("bit_depth", RecordingProfile.bit_depth, _int_of(BIT_DEPTHS)),
        Filter("builtin", RecordingProfile.builtin, query.boolean),
    ),
    search=(RecordingProfile.name, RecordingProfile.description),
    time_field=RecordingProfile.updated_at,
    export_columns=(
        "id",
        "name",
        "description",
        "builtin",
        "format",
        "sample_rate",
        "bit_depth",
        "channels",
        "channel_map_template_id",
        "segment_s",
        "preroll_s",
        "max_duration_s",
        "created_at",
        "updated_at",
        "version",
    ),
)


def ensure_default() -> None:
    """Make the built-in `default` profile if it is not there yet (safe when two callers race; skipped on a full disk)."""
    if RecordingProfile.get_or_none(RecordingProfile.id == DEFAULT_ID) is not None:
        return
    now = utcnow()
    row = {
        "id": DEFAULT_ID,
        "name": DEFAULT_ID,
        "description": "Built in: WAV, 48 kHz, 24 bit, the source's channels, no pre-roll, 10 s segments, at most 12 h.",
        "builtin": True,
        **DEFAULTS,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    write_if_room(RecordingProfile.insert(row).on_conflict_ignore())


def get_profile(profile_id: str) -> RecordingProfile:
    if profile_id == DEFAULT_ID:
        ensure_default()
    profile = RecordingProfile.get_or_none(RecordingProfile.id == profile_id)
    if profile is None:
        raise NotFound(f"No recording profile {profile_id}.")
    return profile


def _actions(profile: RecordingProfile) -> dict[str, dict[str, Any]]:
    builtin = "the built-in profile cannot be deleted" if profile.builtin else None
    return {
        "update": {"allowed": True, "reason": None},
        "delete": {"allowed": builtin is None, "reason": builtin},
    }


def profile_detail(profile_id: str) -> dict[str, Any]:
    """A profile and what may be done to it now."""
    profile = get_profile(profile_id)
    return {**profile_to_api(profile), "actions": _actions(profile)}


def _range_problem(value: float | int | None, low: float, high: float, unit: str = " s") -> str | None:
    if value is None or isinstance(value, bool) or not math.isfinite(value) or not low <= value <= high:
        return f"from {low:g} to {high:g}{unit}"
    return None


def check_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Every problem with a profile's recording fields (name -> problem), checked together."""
    problems: dict[str, str] = {}
    fmt, depth = fields["format"], fields["bit_depth"]
    if fmt not in FORMATS:
        problems["format"] = "must be wav or flac"
    if fields["sample_rate"] not in SAMPLE_RATES:
        problems["sample_rate"] = f"must be one of {', '.join(map(str, SAMPLE_RATES))} Hz"
    if depth not in BIT_DEPTHS:
        problems["bit_depth"] = "must be 16, 24 or 32"
    elif fmt == "flac" and depth not in FLAC_BIT_DEPTHS:
        problems["bit_depth"] = "FLAC is written at 16 or 24 bits"
    channels = fields["channels"]
    if channels is not None and not 1 <= channels <= MAX_CHANNELS:
        problems["channels"] = f"from 1 to {MAX_CHANNELS}, or null for the source's channels"
    for name, (low, high) in (
        ("segment_s", SEGMENT_RANGE_S),
        ("preroll_s", PREROLL_RANGE_S),
        ("max_duration_s", MAX_DURATION_RANGE_S),
    ):
        if (why := _range_problem(fields[name], low, high)) is not None:
            problems[name] = why
    template_id = fields["channel_map_template_id"]
    if template_id is not None:
        template = ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == template_id)
        if template is None:
            problems["channel_map_template_id"] = "no channel-map template has this id"
        elif channels is not None and channels != template.channel_count and "channels" not in problems:
            problems["channels"] = f"the channel map has {template.channel_count} channels: give that or null"
    return problems


def _name_taken(name: str, except_id: str | None = None) -> bool:
    query = RecordingProfile.select().where(RecordingProfile.name == name)
    if except_id is not None:
        query = query.where(RecordingProfile.id != except_id)
    return bool(query.exists())


def create_profile(actor: Actor, name: str, description: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A new profile; fields left out take the built-in defaults. Every problem is named in one 400."""
    fields = {**DEFAULTS, **{k: v for k, v in settings.items() if k in DEFAULTS}}
    problems = check_fields(fields)
    if (why := text_problem(name, 100)) is not None:
        problems["name"] = why
    if len(description) > MAX_DESCRIPTION:
        problems["description"] = f"at most {MAX_DESCRIPTION} characters"
    if problems:
        raise InvalidRequest("The recording profile is invalid.", fields=problems)
    ensure_default()  # so `default` stays the built-in's name
    if _name_taken(name):
        raise Conflict(f"A recording profile named {name} exists.")
    now = utcnow()
    try:
        with database_proxy.atomic():
            profile = RecordingProfile.create(
                id=new_id("rpf"),
                name=name,
                description=description,
                builtin=False,
                **fields,
                created_at=now,
                updated_at=now,
                version=1,
            )
            after = profile_to_api(profile)
            record(actor, "recording_profile.create", permission=MANAGE, target=("recording_profile", profile.id), after=after)
    except peewee.IntegrityError as err:
        raise Conflict(f"A recording profile named {name} exists.") from err
    return after


def update_profile(actor: Actor, profile_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change a profile (the result is checked whole); `version`, if given, must be the current one (409)."""
    profile = get_profile(profile_id)
    if "version" in changes and changes["version"] != profile.version:
        raise Conflict(f"The profile changed meanwhile (version {profile.version}); read it again.")
    before = profile_to_api(profile)
    fields = {name: before[name] for name in RECORDING_FIELDS} | {k: v for k, v in changes.items() if k in DEFAULTS}
    problems = check_fields(fields)
    if "name" in changes:
        if profile.builtin and changes["name"] != profile.name:
            problems["name"] = "the built-in profile keeps its name"
        elif (why := text_problem(changes["name"], 100)) is not None:
            problems["name"] = why
        fields["name"] = changes["name"]
    if "description" in changes:
        if len(changes["description"]) > MAX_DESCRIPTION:
            problems["description"] = f"at most {MAX_DESCRIPTION} characters"
        fields["description"] = changes["description"]
    if problems:
        raise InvalidRequest("The recording profile is invalid.", fields=problems)
    if "name" in fields and _name_taken(fields["name"], profile.id):
        raise Conflict(f"A recording profile named {fields['name']} exists.")
    if all(before[k] == v for k, v in fields.items()):
        return before  # nothing changes: no new version
    try:
        with database_proxy.atomic():
            update_if_unchanged(RecordingProfile, profile, fields, "profile")
            after = profile_to_api(get_profile(profile.id))
            record(
                actor,
                "recording_profile.update",
                permission=MANAGE,
                target=("recording_profile", profile.id),
                before=before,
                after=after,
            )
    except peewee.IntegrityError as err:
        raise Conflict(f"A recording profile named {fields.get('name')} exists.") from err
    return after


def delete_profile(actor: Actor, profile_id: str) -> None:
    """Delete a profile (recordings keep their snapshot); the built-in one answers 409."""
    profile = get_profile(profile_id)
    if profile.builtin:
        raise Conflict("The built-in profile cannot be deleted; change it instead.")
    before = profile_to_api(profile)
    with database_proxy.atomic():
        RecordingProfile.delete().where(RecordingProfile.id == profile.id).execute()
        record(actor, "recording_profile.delete", permission=MANAGE, target=("recording_profile", profile.id), before=before)
