"""Opaque bearer secrets: generated with `secrets`, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets


def new_secret(prefix: str) -> str:
    """A new secret such as `hks_...` (256 bits of randomness)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def secret_hash(secret: str) -> str:
    """The hex SHA-256 under which a secret is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_password(length: int = 20) -> str:
    """A random password for generated accounts."""
    return secrets.token_urlsafe(length)[:length]
