"""Commands from the hub: decoded when well formed, refused (never fatal) when not."""

from __future__ import annotations

import pytest
from hark_fleet.node.commands import MalformedCommand, decode_command
from hark_fleet.protocol.messages import Ack, ConfigChanged, NewCredential


def test_known_commands_decode() -> None:
    assert decode_command("ack", b'{"ids": ["a-1", "a-2"]}') == Ack(ids=["a-1", "a-2"])
    assert decode_command("credentials", b'{"credential": "c2", "valid_until_old": "2030-01-01T00:00:00Z"}') == (
        NewCredential("c2", "2030-01-01T00:00:00Z")
    )
    assert decode_command("config", b'{"changed": ["name"]}') == ConfigChanged(["name"])
    assert decode_command("config", b"") == ConfigChanged()


def test_unknown_kinds_are_none() -> None:
    assert decode_command("reboot-now", b"{}") is None


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("ack", b"not json"),
        ("ack", b'{"ids": "a-1"}'),
        ("ack", b"{}"),
        ("credentials", b'{"credential": ""}'),
        ("credentials", b'{"credential": 42}'),
        ("config", b"[1, 2"),
    ],
)
def test_malformed_commands_raise_one_error_type(kind: str, payload: bytes) -> None:
    with pytest.raises(MalformedCommand, match=f"cmd/{kind}"):
        decode_command(kind, payload)


@pytest.mark.parametrize("kind", ["ack", "credentials", "config", "lifecycle", "job"])
@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b"[" * 1000 + b"]" * 1000,
        b'{"ids": [' + b'"x",' * 100_000 + b'"x"]}',
    ],
    ids=["deep-object", "deep-list", "oversized"],
)
def test_deep_or_oversized_commands_are_malformed_not_a_crash(kind: str, payload: bytes) -> None:
    with pytest.raises(MalformedCommand, match=f"cmd/{kind}"):
        decode_command(kind, payload)
