"""The shared bounded decoder: size and nesting limits, one error type, free-form values walked only to the limit."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hark_fleet.protocol.decoding import MAX_DEPTH, PayloadError, bounded, decode
from hark_fleet.protocol.messages import Heartbeat, MeterFrame


class Report(msgspec.Struct):
    seq: int
    details: dict[str, object] = {}


def objects(levels: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * levels + inner + b"}" * levels


def reason(payload: bytes, schema: Any = Any, **limits: int) -> str:
    with pytest.raises(PayloadError) as raised:
        decode(payload, schema, **limits)
    return raised.value.reason


@pytest.mark.parametrize("schema", [Any, dict[str, Any], Report, MeterFrame, Heartbeat])
def test_a_thousand_levels_are_too_deep_whatever_the_schema(schema: Any) -> None:
    assert reason(objects(1000), schema) == "too_deep"
    assert reason(b'{"ts": "2026-01-31T12:00:00Z", "seq": 1, "unknown": ' + objects(1000) + b"}", schema) == "too_deep"
    lists = b"[" * 1000 + b"]" * 1000  # where an object is expected, refused at the first bracket
    assert reason(lists, schema) == ("too_deep" if schema is Any else "invalid_payload")


def test_free_form_values_are_bounded_at_the_limit() -> None:
    assert decode(objects(MAX_DEPTH)) == bounded(decode(objects(MAX_DEPTH)))
    assert reason(objects(MAX_DEPTH + 1)) == "too_deep"
    inside = b'{"seq": 1, "details": ' + objects(MAX_DEPTH - 1) + b"}"  # the struct is level 1, `details` level 2
    assert decode(inside, Report).seq == 1
    assert reason(b'{"seq": 1, "details": ' + objects(MAX_DEPTH) + b"}", Report) == "too_deep"
    assert reason(b'{"seq": 1, "details": {"l": ' + b"[" * 40 + b"]" * 40 + b"}}", Report) == "too_deep"


def test_a_schema_without_free_form_values_keeps_nothing_deep() -> None:
    frame = b'{"ts": "2026-01-31T12:00:00Z", "seq": 1, "interval_ms": 100, "channels": [], "skipped": ' + objects(200) + b"}"
    assert decode(frame, MeterFrame).seq == 1  # an unknown field is skipped by msgspec, never built


def test_size_is_checked_before_decoding() -> None:
    assert reason(b"{" + b" " * 100 + b"}", Any, max_bytes=50) == "too_large"
    assert decode(b"{}", Any, max_bytes=2) == {}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b'{"seq": 1, "details": {"x": "\xff\xfe"}}', "invalid_json"),
        (b"\x00\x01\x02", "invalid_json"),
        (b'{"seq": "one"}', "invalid_payload"),
        (b"[1, 2]", "invalid_payload"),
        (b'{"seq": 1, "details": []}', "invalid_payload"),
    ],
)
def test_other_problems_are_named(payload: bytes, expected: str) -> None:
    assert reason(payload, Report) == expected


def test_a_schema_mismatch_keeps_msgspecs_error_for_field_names() -> None:
    with pytest.raises(PayloadError) as raised:
        decode(b'{"seq": "one"}', Report)
    assert isinstance(raised.value.validation, msgspec.ValidationError)
    assert "$.seq" in str(raised.value.validation)


def test_bounded_checks_plain_values() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(PayloadError):
        bounded({"x": deep})
    assert bounded({"x": [1, {"y": 2}]}) == {"x": [1, {"y": 2}]}
