"""Webhook signatures: what a receiver does with the header the hub sends."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hark_fleet.hub.notify import signing
from hark_fleet.hub.notify.signing import (
    REPLAY_WINDOW_S,
    SIGNATURE_HEADER,
    SignatureInvalid,
    new_signing_secret,
    sign,
    verify,
)

BODY = b'{"event":"node.offline","node":"nod_1"}'
NOW = 1_767_225_600


def test_a_receiver_verifies_what_the_hub_signed() -> None:
    secret = new_signing_secret()
    verify(secret, sign(secret, NOW, BODY), BODY, now=NOW + 10)


def test_the_documented_recipe_matches_sign() -> None:
    secret = new_signing_secret()
    header = sign(secret, NOW, BODY)
    parts = [p.split("=", 1) for p in header.split(",")]
    t = int(next(v for k, v in parts if k == "t"))
    expected = hmac.new(secret.encode(), f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert t == NOW
    assert any(hmac.compare_digest(expected, v) for k, v in parts if k == "v1")
    assert SIGNATURE_HEADER == "X-Hark-Signature"


def test_secrets_are_prefixed_random_and_carry_32_bytes() -> None:
    first, second = new_signing_secret(), new_signing_secret()
    assert first.startswith("whsec_") and second.startswith("whsec_")
    assert first != second
    assert len(first) == len("whsec_") + 44  # 32 bytes in base64


def test_a_tampered_body_is_refused() -> None:
    secret = new_signing_secret()
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify(secret, sign(secret, NOW, BODY), BODY + b" ", now=NOW)


def test_another_secret_is_refused() -> None:
    header = sign(new_signing_secret(), NOW, BODY)
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify(new_signing_secret(), header, BODY, now=NOW)


def test_a_moved_timestamp_is_refused() -> None:
    secret = new_signing_secret()
    header = sign(secret, NOW, BODY).replace(f"t={NOW}", f"t={NOW + 1}")
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify(secret, header, BODY, now=NOW)


@pytest.mark.parametrize("age", [REPLAY_WINDOW_S + 1, -(REPLAY_WINDOW_S + 1)], ids=["old", "future"])
def test_a_timestamp_outside_the_replay_window_is_refused(age: int) -> None:
    secret = new_signing_secret()
    with pytest.raises(SignatureInvalid, match="replay window"):
        verify(secret, sign(secret, NOW - age, BODY), BODY, now=NOW)


def test_a_timestamp_at_the_edge_of_the_window_is_accepted() -> None:
    secret = new_signing_secret()
    verify(secret, sign(secret, NOW - REPLAY_WINDOW_S, BODY), BODY, now=NOW)
    verify(secret, sign(secret, NOW + REPLAY_WINDOW_S, BODY), BODY, now=NOW)


def test_a_narrower_window_is_honoured() -> None:
    secret = new_signing_secret()
    with pytest.raises(SignatureInvalid, match="replay window"):
        verify(secret, sign(secret, NOW - 31, BODY), BODY, now=NOW, window_s=30)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "v1=abcd",
        f"t={NOW}",
        "t=,v1=abcd",
        "t=-5,v1=abcd",
        "t=1.5,v1=abcd",
        f"t={NOW},t={NOW},v1=abcd",
        f"t={NOW},,v1=abcd",
        "t=" + "9" * 5000 + ",v1=abcd",
    ],
)
def test_a_malformed_header_is_refused_with_a_reason(header: str) -> None:
    with pytest.raises(SignatureInvalid, match="malformed header") as raised:
        verify(new_signing_secret(), header, BODY, now=NOW)
    assert raised.value.reason.startswith("malformed header")


def test_during_rotation_either_secret_verifies() -> None:
    old, new = new_signing_secret(), new_signing_secret()
    header = sign(old, NOW, BODY) + "," + sign(new, NOW, BODY).split(",", 1)[1]
    verify(old, header, BODY, now=NOW)
    verify(new, header, BODY, now=NOW)
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify(new_signing_secret(), header, BODY, now=NOW)


def test_unknown_schemes_are_ignored() -> None:
    secret = new_signing_secret()
    verify(secret, sign(secret, NOW, BODY) + ",v0=deadbeef", BODY, now=NOW)


def test_the_example_in_the_module_docstring_verifies() -> None:
    header = "t=1767225600,v1=76c0f5473c30b2ced2e0166553f24a45109d71bfd17f0cd2e0437ca32f64a414"
    assert header in (signing.__doc__ or "")
    verify("whsec_example", header, b'{"event":"test"}', now=1767225600)
