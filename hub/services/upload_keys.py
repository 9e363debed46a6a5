"""Object keys of upload policies: a template checked when a policy is saved, rendered into a safe key per recording.

Pure: no database, no clock, no I/O (issue 20). The template is literal text and `{placeholder}`s:

- `site` (the site's id; `unsited` for a node without one), `node` (the node's id), `node_name`;
- `recording_id` (required: it keeps keys unique per recording), `name` (the recording's name), `ext` (`wav` or `flac`);
- `profile` (the recording profile's name; `_` when none), `schedule_id` (`unscheduled` for a take no schedule made);
- `yyyy`, `mm`, `dd`, `hh`, `min`, `ss` of the recording's start, zero-padded, in UTC or the IANA zone passed in.

Keys must work unchanged as S3 object names, SFTP paths and paths under a local (NFS, SMB) mount, so every substituted
value is made ASCII-safe: NFKD-normalised with accents dropped (`Café` -> `Cafe`, a few letters spelled out: `ß` -> `ss`),
then every character outside letters, digits and `- _ .` (spaces, `/`, `\\`, other scripts) becomes `-`, runs of `-`
and of `.` collapse to one, and leading/trailing `-` and `.` go (no hidden files, no `..`, no names Windows would trim).
A value left empty becomes its placeholder (`_` unless named above). Values keep their case. A value is cut to
`MAX_VALUE_CHARS` (except `recording_id`, which is never cut), each rendered segment must fit `MAX_SEGMENT_BYTES` (the usual
file-name limit) and the whole key, with the provider's prefix, `MAX_KEY_BYTES` (S3's limit); beyond, `render_key` raises
ValueError. Templates themselves may not contain `\\` (a separator on SMB shares) or control characters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TEMPLATE = "{site}/{node}/{yyyy}/{mm}/{dd}/{recording_id}.{ext}"
PLACEHOLDERS = frozenset(
    {"site", "node", "node_name", "recording_id", "name", "ext", "profile", "schedule_id", "yyyy", "mm", "dd", "hh", "min", "ss"}
)
MAX_TEMPLATE_CHARS = 512
MAX_KEY_BYTES = 1024  # S3's limit on an object key, in UTF-8
MAX_SEGMENT_BYTES = 255  # a file name on ext4, NTFS, most SFTP servers
MAX_VALUE_CHARS = 120
FIELD = "key_template"

_EMPTY = {"site": "unsited", "schedule_id": "unscheduled"}
_SPELLED = str.maketrans(
    {"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "đ": "d", "Đ": "D", "ł": "l", "Ł": "L"}
    | {"þ": "th", "Þ": "TH", "ð": "d", "Ð": "D", "ı": "i"}  # letters NFKD does not decompose
)
_TOKEN = re.compile(r"\{([^{}]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class KeyValues:
    """What a key may name of one recording; `started_at` naive is taken as UTC (as the database stores it)."""

    recording_id: str
    node: str
    started_at: datetime
    ext: str
    site: str | None = None
    node_name: str = ""
    name: str = ""
    profile: str = ""
    schedule_id: str | None = None


def check_template(template: str) -> dict[str, str]:
    """Problems with a key template, as `fields` ({"key_template": why}); empty when it may be saved."""
    problem = _template_problem(template)
    return {FIELD: problem} if problem else {}


def _template_problem(template: str) -> str | None:
    if not isinstance(template, str) or not template:
        return "must be a non-empty string"
    if len(template) > MAX_TEMPLATE_CHARS:
        return f"must be at most {MAX_TEMPLATE_CHARS} characters"
    if _CONTROL.search(template):
        return "must not contain control characters"
    if "\\" in template:
        return "must not contain '\\' (use '/' between segments)"
    literal = _TOKEN.sub("", template)
    if "{" in literal or "}" in literal:
        return "has unbalanced braces ('{' and '}' only enclose a placeholder)"
    unknown = [name for name in _TOKEN.findall(template) if name not in PLACEHOLDERS]
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}}; known: {', '.join(sorted(PLACEHOLDERS))}"
    if template.startswith("/"):
        return "must not start with '/' (the provider's prefix comes first)"
    segments = template.split("/")
    if any(segment in (".", "..") for segment in segments):
        return "must not have '.' or '..' segments"
    if any(segment == "" for segment in segments):
        return "must not have empty segments ('//' or a trailing '/')"
    if "{recording_id}" not in template:
        return "must contain {recording_id} (keys must be unique per recording)"
    return None


def sanitise(value: str, empty: str = "_", max_chars: int | None = MAX_VALUE_CHARS) -> str:
    """`value` as a portable piece of a key segment: ASCII letters, digits and `- _ .`, never empty, never `.` or `..`."""
    ascii_text = unicodedata.normalize("NFKD", value.translate(_SPELLED))
    ascii_text = "".join(ch for ch in ascii_text if not unicodedata.combining(ch))
    safe = _UNSAFE.sub("-", ascii_text)
    safe = re.sub(r"\.{2,}", ".", re.sub(r"-{2,}", "-", safe)).strip("-.")
    if max_chars is not None and len(safe) > max_chars:
        safe = safe[:max_chars].rstrip("-.")
    return safe or empty


def render_key(template: str, values: KeyValues, prefix: str = "", *, time_zone: str | None = None) -> str:
    """The object key of one recording: the template filled with sanitised values, after the provider's prefix.

    `time_zone` (an IANA name; None: UTC) gives the date and time placeholders. Raises ValueError for a template
    `check_template` refuses, an unknown zone, an unsafe prefix, or a key over the segment or key limits.
    """
    problem = _template_problem(template)
    if problem:
        raise ValueError(f"{FIELD} {problem}")
    substitutions = _substitutions(values, time_zone)
    key = _TOKEN.sub(lambda match: substitutions[match.group(1)], template)
    for segment in key.split("/"):
        if segment in ("", ".", ".."):  # cannot happen for a checked template; kept as the last guard against traversal
            raise ValueError(f"key {key!r} has an unsafe segment")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise ValueError(f"key segment {segment[:40]!r}... is over {MAX_SEGMENT_BYTES} bytes")
    clean_prefix = _clean_prefix(prefix)
    full = f"{clean_prefix}/{key}" if clean_prefix else key
    if len(full.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"key is {len(full.encode())} bytes, over {MAX_KEY_BYTES}")
    return full


def _substitutions(values: KeyValues, time_zone: str | None) -> dict[str, str]:
    started = values.started_at if values.started_at.tzinfo else values.started_at.replace(tzinfo=UTC)
    try:
        local = started.astimezone(ZoneInfo(time_zone) if time_zone else UTC)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {time_zone!r}") from err
    return {
        "site": sanitise(values.site or "", _EMPTY["site"]),
        "node": sanitise(values.node),
        "node_name": sanitise(values.node_name),
        "recording_id": sanitise(values.recording_id, max_chars=None),
        "name": sanitise(values.name),
        "ext": sanitise(values.ext),
        "profile": sanitise(values.profile),
        "schedule_id": sanitise(values.schedule_id or "", _EMPTY["schedule_id"]),
        "yyyy": f"{local.year:04d}",
        "mm": f"{local.month:02d}",
        "dd": f"{local.day:02d}",
        "hh": f"{local.hour:02d}",
        "min": f"{local.minute:02d}",
        "ss": f"{local.second:02d}",
    }


def _clean_prefix(prefix: str) -> str:
    """The provider's prefix without surrounding slashes; refused if it could escape or hide the key."""
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    if _CONTROL.search(stripped) or "\\" in stripped:
        raise ValueError("prefix must not contain control characters or '\\'")
    if any(segment in ("", ".", "..") for segment in stripped.split("/")):
        raise ValueError("prefix must not have empty, '.' or '..' segments")
    return stripped
