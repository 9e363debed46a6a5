"""Webhook signatures a receiver can verify.

Every webhook the hub sends carries a signature header so the receiver can tell that the request came from
the hub (it knows the channel's signing secret, shown once when the channel is created or its configuration
rotated) and that it is not a replay of an old request.

What is signed: the bytes ``f"{timestamp}."`` (the Unix time in seconds when the hub signed the request, as a
decimal string, then a full stop) followed by the raw request body exactly as received, before any JSON
parsing. The MAC is HMAC-SHA256 keyed by the whole signing secret as UTF-8 text (``whsec_`` prefix included),
written as lowercase hex.

The header, for the body ``{"event":"test"}`` signed at 1767225600 with the secret ``whsec_example``::

    X-Hark-Signature: t=1767225600,v1=76c0f5473c30b2ced2e0166553f24a45109d71bfd17f0cd2e0437ca32f64a414

While a secret is being rotated the header may carry several ``v1=`` values, one per secret in use; the
request is genuine when any one of them matches. Unknown ``<scheme>=`` parts are ignored.

Replay window: a receiver should refuse a timestamp more than ``REPLAY_WINDOW_S`` (300 s) away from its own
clock, in either direction, and compare MACs in constant time. In Python::

    import hashlib, hmac, time

    parts = [p.split("=", 1) for p in header.split(",")]
    t = int(next(v for k, v in parts if k == "t"))
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    ok = abs(time.time() - t) <= 300 and any(hmac.compare_digest(expected, v) for k, v in parts if k == "v1")

Or call :func:`verify` from this module, which raises :class:`SignatureInvalid` with the reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "X-Hark-Signature"
REPLAY_WINDOW_S = 300
SECRET_PREFIX = "whsec_"
_SCHEME = "v1"
_MAX_HEADER_LEN = 4096


class SignatureInvalid(Exception):
    """A webhook signature that does not prove the request; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_signing_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 32 random bytes in URL-safe base64."""
    return SECRET_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Hark-Signature`` header value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    return f"t={timestamp},{_SCHEME}={_mac(secret, timestamp, body)}"


def _parse(header_value: str) -> tuple[int, list[str]]:
    if not header_value or len(header_value) > _MAX_HEADER_LEN:
        raise SignatureInvalid("malformed header: empty or too long")
    timestamp: int | None = None
    macs: list[str] = []
    for part in header_value.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key:
            raise SignatureInvalid(f"malformed header: part {part.strip()!r} is not key=value")
        if key == "t":
            if timestamp is not None:
                raise SignatureInvalid("malformed header: more than one t=")
            if not value.isascii() or not value.isdigit():
                raise SignatureInvalid("malformed header: t= is not a Unix time in seconds")
            timestamp = int(value)
        elif key == _SCHEME:
            macs.append(value)
    if timestamp is None:
        raise SignatureInvalid("malformed header: no t=")
    if not macs:
        raise SignatureInvalid(f"malformed header: no {_SCHEME}=")
    return timestamp, macs


def verify(secret: str, header_value: str, body: bytes, now: int, window_s: int = REPLAY_WINDOW_S) -> None:
    """Check a signature header against ``body``; raise :class:`SignatureInvalid` unless it proves the request.

    ``now`` is the receiver's Unix time; a timestamp more than ``window_s`` away either way is refused.
    """
    timestamp, macs = _parse(header_value)
    if abs(now - timestamp) > window_s:
        raise SignatureInvalid(f"timestamp outside the {window_s} s replay window")
    expected = _mac(secret, timestamp, body)
    matched = False
    for candidate in macs:
        # No early exit, so the time taken does not say which candidate matched.
        matched |= hmac.compare_digest(expected.encode("ascii"), candidate.encode("utf-8", "replace"))
    if not matched:
        raise SignatureInvalid("signature does not match")
