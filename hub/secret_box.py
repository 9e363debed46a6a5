"""Secrets the hub must use again later (an S3 secret key, an SFTP password or private key) sealed at rest.

Passwords and API keys are hashed: the hub only ever compares them. A provider's credentials are
different: the hub signs requests with them, so it must read them back. They are sealed with
AES-256-GCM under a key kept in `<data_dir>/secret-box.key` (0600, made at first use), so a copy of
the database alone (a backup, a PostgreSQL dump) does not give them away. The associated data binds
a sealed value to what it belongs to (`upload_provider:<id>`): a sealed blob copied onto another
row does not open.

Losing the key file loses the sealed secrets (they must be entered again); the hub says so by name
(`SecretBoxError`) rather than using a wrong value.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hark_fleet.hub.errors import HubError
from hark_fleet.protocol.file_lock import read_or_create

KEY_FILE = "secret-box.key"
VERSION = "v1"
NONCE_BYTES = 12


class SecretBoxError(HubError):
    """A sealed value does not open: the key changed or the value belongs elsewhere."""


class SecretBox:
    """Seal and open small JSON values with the hub's key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the secret box key is 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def open_dir(cls, data_dir: Path) -> SecretBox:
        """The box whose key is in `data_dir` (made, 0600, when there is none)."""
        return cls(_load_or_make_key(data_dir / KEY_FILE))

    def seal(self, value: Any, bound_to: str) -> str:
        """`value` (JSON-able) sealed for `bound_to`, as text to store."""
        nonce = os.urandom(NONCE_BYTES)
        data = json.dumps(value, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, data, bound_to.encode())
        return f"{VERSION}:{base64.b64encode(nonce + sealed).decode()}"

    def unseal(self, text: str, bound_to: str) -> Any:
        """The value sealed by `seal(value, bound_to)`; SecretBoxError when it does not open."""
        version, _, body = text.partition(":")
        if version != VERSION:
            raise SecretBoxError(f"sealed secret of unknown version {version!r}")
        try:
            raw = base64.b64decode(body, validate=True)
            data = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound_to.encode())
        except (InvalidTag, ValueError) as err:
            raise SecretBoxError(
                "a sealed secret does not open with this hub's secret-box.key (the key file changed?): enter it again"
            ) from err
        return json.loads(data)


_key_lock = threading.Lock()


def _load_or_make_key(path: Path) -> bytes:
    with _key_lock:  # threads of this process; the file lock, the other hubs sharing the data directory
        path.parent.mkdir(parents=True, exist_ok=True)
        key = read_or_create(path, lambda: AESGCM.generate_key(bit_length=256), mode=0o600)
        if len(key) != 32:
            raise SecretBoxError(f"{path} is not a 32-byte key")
        return key
