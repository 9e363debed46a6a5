"""Upload object keys without a database: the default template, time zones, refused templates, hostile values, prefixes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hark_fleet.hub.services.upload_keys import (
    DEFAULT_TEMPLATE,
    MAX_KEY_BYTES,
    MAX_SEGMENT_BYTES,
    MAX_TEMPLATE_CHARS,
    MAX_VALUE_CHARS,
    PLACEHOLDERS,
    KeyValues,
    check_template,
    render_key,
    sanitise,
)

SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")

TAKE = KeyValues(
    recording_id="rec01",
    node="node-7",
    started_at=datetime(2026, 3, 14, 23, 30, 5, tzinfo=UTC),
    ext="flac",
    site="marsh",
    node_name="Reed bed east",
    name="Dawn chorus",
    profile="48k mono",
    schedule_id="sch9",
)


def key(template: str, values: KeyValues = TAKE, prefix: str = "", time_zone: str | None = None) -> str:
    assert check_template(template) == {}
    return render_key(template, values, prefix, time_zone=time_zone)


def test_default_template_names_site_node_utc_date_and_recording():
    assert key(DEFAULT_TEMPLATE) == "marsh/node-7/2026/03/14/rec01.flac"


def test_every_placeholder_renders():
    template = "/".join(f"{{{name}}}" for name in sorted(PLACEHOLDERS))
    assert key(template) == "14/flac/23/30/03/Dawn-chorus/node-7/Reed-bed-east/48k-mono/rec01/sch9/marsh/05/2026"


def test_time_placeholders_follow_the_zone_where_the_local_date_differs_from_utc():
    template = "{yyyy}-{mm}-{dd}T{hh}{min}{ss}/{recording_id}"
    assert key(template) == "2026-03-14T233005/rec01"
    assert key(template, time_zone="Pacific/Auckland") == "2026-03-15T123005/rec01"  # NZDT, UTC+13
    assert key(template, time_zone="Europe/Berlin") == "2026-03-15T003005/rec01"  # CET, UTC+1
    assert key(template, time_zone="America/Los_Angeles") == "2026-03-14T163005/rec01"  # PDT since 8 March, UTC-7


def test_naive_start_is_taken_as_utc():
    naive = replace(TAKE, started_at=datetime(2026, 3, 14, 23, 30, 5))
    assert key(DEFAULT_TEMPLATE, naive, time_zone="Pacific/Auckland") == "marsh/node-7/2026/03/15/rec01.flac"


def test_unknown_time_zone_is_refused():
    for zone in ("Mars/Olympus", "../../etc/passwd"):
        with pytest.raises(ValueError, match="time zone"):
            render_key(DEFAULT_TEMPLATE, TAKE, time_zone=zone)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("", "non-empty"),
        ("{site}/{nodes}/{recording_id}", "unknown placeholder {nodes}"),
        ("{site}/{}/{recording_id}", "unknown placeholder {}"),
        ("{site:>5}/{recording_id}", "unknown placeholder {site:>5}"),
        ("{site/{recording_id}", "unbalanced braces"),
        ("{site}}/{recording_id}", "unbalanced braces"),
        ("{{site}}/{recording_id}", "unbalanced braces"),
        ("site}/{recording_id}", "unbalanced braces"),
        ("/{site}/{recording_id}", "must not start with '/'"),
        ("{site}/../{recording_id}", "'..' segments"),
        ("../{recording_id}", "'..' segments"),
        ("{site}/./{recording_id}", "'..' segments"),
        ("{site}//{recording_id}", "empty segments"),
        ("{site}/{recording_id}/", "empty segments"),
        ("{site}/{node}/{name}.{ext}", "must contain {recording_id}"),
        ("a" * MAX_TEMPLATE_CHARS + "{recording_id}", f"at most {MAX_TEMPLATE_CHARS}"),
        ("{site}/\n{recording_id}", "control characters"),
        ("{site}/\x00{recording_id}", "control characters"),
        ("{site}/\x7f{recording_id}", "control characters"),
        ("{site}\\{recording_id}", "'\\'"),
    ],
)
def test_invalid_templates_are_refused_with_the_reason(template: str, reason: str):
    problems = check_template(template)
    assert list(problems) == ["key_template"]
    assert reason in problems["key_template"], problems
    with pytest.raises(ValueError, match="key_template"):
        render_key(template, TAKE)


def test_template_at_the_length_limit_is_accepted():
    template = "a" * (MAX_TEMPLATE_CHARS - len("/{recording_id}")) + "/{recording_id}"
    assert check_template(template) == {}


def test_literal_text_and_several_placeholders_in_one_segment_are_accepted():
    assert key("archive/{site}_{node}/{yyyy}{mm}{dd}-{name}-{recording_id}.{ext}") == (
        "archive/marsh_node-7/20260314-Dawn-chorus-rec01.flac"
    )


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("../../etc", "etc"),
        ("..", "_"),
        (".", "_"),
        ("...hidden", "hidden"),
        ("a/b", "a-b"),
        ("a\\b", "a-b"),
        ("/", "_"),
        ("", "_"),
        ("   ", "_"),
        ("a..b", "a.b"),
        ("tail.", "tail"),
        ("a  /  b", "a-b"),
        ("line\nbreak\x00", "line-break"),
        ("Café Nord", "Cafe-Nord"),
        ("Ærøskøbing Straße", "AEroskobing-Strasse"),
        ("Łódź", "Lodz"),
        ("ｆｕｌｌ　ｗｉｄｔｈ", "full-width"),
        ("録音", "_"),
        ("nid 録音 1", "nid-1"),
        ("keep_case-AND.dots", "keep_case-AND.dots"),
    ],
)
def test_hostile_values_become_safe_segment_pieces(value: str, safe: str):
    assert sanitise(value) == safe


def test_very_long_values_are_cut_without_a_trailing_separator():
    assert sanitise("x" * 5000) == "x" * MAX_VALUE_CHARS
    assert sanitise("x" * (MAX_VALUE_CHARS - 1) + " yz") == "x" * (MAX_VALUE_CHARS - 1)


def test_hostile_values_cannot_escape_or_add_segments():
    hostile = replace(
        TAKE, site="../../etc", node="a/b", node_name="", name="../" * 300 + "passwd", profile="\x00", schedule_id="//"
    )
    rendered = key("{site}/{node}/{node_name}/{profile}/{schedule_id}/{name}-{recording_id}.{ext}", hostile)
    assert rendered == "etc/a-b/_/_/unscheduled/passwd-rec01.flac"
    assert set(rendered) <= SAFE


def test_empty_site_and_schedule_read_as_unsited_and_unscheduled():
    loose = replace(TAKE, site=None, schedule_id=None, profile="")
    assert key("{site}/{schedule_id}/{profile}/{recording_id}", loose) == "unsited/unscheduled/_/rec01"
    assert key("{site}/{recording_id}", replace(TAKE, site="")) == "unsited/rec01"


def test_unicode_names_give_ascii_keys():
    rendered = key("{name}/{recording_id}.{ext}", replace(TAKE, name="Chœur de l'aube — Île-de-France 🐦"))
    assert rendered == "Choeur-de-l-aube-Ile-de-France/rec01.flac"
    assert rendered.isascii()


def test_recording_id_is_never_cut_and_an_overlong_segment_is_refused():
    long_id = replace(TAKE, recording_id="r" * (MAX_SEGMENT_BYTES + 1))
    with pytest.raises(ValueError, match="segment"):
        render_key("{recording_id}", long_id)
    assert render_key("{recording_id}", replace(TAKE, recording_id="r" * MAX_SEGMENT_BYTES)) == "r" * MAX_SEGMENT_BYTES


def test_key_over_the_s3_limit_is_refused():
    deep = "/".join(["{name}"] * 9) + "/{recording_id}"  # 9 x 120 characters of name
    with pytest.raises(ValueError, match=str(MAX_KEY_BYTES)):
        render_key(deep, replace(TAKE, name="n" * 500))
    assert len(render_key(deep, replace(TAKE, name="n" * 100)).encode()) <= MAX_KEY_BYTES


def test_prefix_pushes_the_key_over_the_limit():
    template = "{name}/{recording_id}"
    values = replace(TAKE, name="n" * 100)
    prefix = "p" * (MAX_KEY_BYTES - len("n" * 100 + "/rec01"))
    with pytest.raises(ValueError, match=str(MAX_KEY_BYTES)):
        render_key(template, values, prefix)
    assert len(render_key(template, values, prefix[1:])) == MAX_KEY_BYTES


@pytest.mark.parametrize("prefix", ["archive", "archive/", "/archive", "//archive//", "archive/"])
def test_prefix_is_joined_with_exactly_one_slash(prefix: str):
    assert key(DEFAULT_TEMPLATE, prefix=prefix) == "archive/marsh/node-7/2026/03/14/rec01.flac"


def test_nested_prefix_keeps_its_inner_slashes():
    assert key("{recording_id}", prefix="hark/field-2026/") == "hark/field-2026/rec01"


@pytest.mark.parametrize("prefix", ["", "/", "///"])
def test_empty_prefix_leaves_the_key_alone(prefix: str):
    assert key(DEFAULT_TEMPLATE, prefix=prefix) == "marsh/node-7/2026/03/14/rec01.flac"


@pytest.mark.parametrize("prefix", ["../up", "a/../b", "a//b", "./a", "a\\b", "a\nb"])
def test_unsafe_prefix_is_refused(prefix: str):
    with pytest.raises(ValueError, match="prefix"):
        render_key(DEFAULT_TEMPLATE, TAKE, prefix)


def test_rendering_is_deterministic():
    first = render_key(DEFAULT_TEMPLATE, TAKE, "archive", time_zone="Europe/Berlin")
    again = [render_key(DEFAULT_TEMPLATE, replace(TAKE), "archive", time_zone="Europe/Berlin") for _ in range(20)]
    assert set(again) == {first} == {"archive/marsh/node-7/2026/03/15/rec01.flac"}


def test_different_recordings_get_different_keys():
    keys = {render_key(DEFAULT_TEMPLATE, replace(TAKE, recording_id=f"rec{i}")) for i in range(50)}
    assert len(keys) == 50
