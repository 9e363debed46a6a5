"""The node's state file: identity, credential, hub and broker addresses, boot count, claim code.

Written atomically (temp file, fsync, rename, mode 0600) so a crash mid-write leaves the
previous state. The environment seeds it; a credential received from the hub later wins
over the seed it replaced, until the environment brings a different seed. Without a seed
the node starts unprovisioned (no node id, no credential) and waits to be claimed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.node.errors import StateError
from hark_fleet.protocol.atomic_file import remove_stale_temps, write_atomic

log = logging.getLogger(__name__)

STATE_VERSION = 1
_OLD_TEMP_PREFIX = ".state-"
_OLD_TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the node remembers between runs."""

    node_id: str | None = None
    credential: str | None = field(default=None, repr=False)
    credential_seed_sha256: str | None = field(default=None, repr=False)
    hub_url: str | None = None
    mqtt_url: str | None = None
    boot_count: int = 0
    version: int = STATE_VERSION
    hardware_id: str | None = None  # generated once, kept across factory resets
    claim_code: str | None = field(default=None, repr=False)  # 8 Crockford base32 characters, proves physical access
    ca_pem: str | None = field(default=None, repr=False)  # the hub's CA, as handed over at claim time
    previous_credential: str | None = field(default=None, repr=False)  # what a delivered one replaced, until confirmed

    def replace(self, **changes: Any) -> NodeState:
        return dataclasses.replace(self, **changes)

    @property
    def enrolled(self) -> bool:
        """True once the node has an identity (seeded or handed over by a claim)."""
        return bool(self.node_id and self.credential)

    @property
    def provisioning_state(self) -> str:
        return "enrolled" if self.enrolled else "unprovisioned"


def credential_digest(credential: str) -> str:
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()


def resolve_state(stored: NodeState | None, node_id: str | None, credential: str | None, hub_url: str | None) -> NodeState:
    """Merge what the environment seeds with what the state file holds (pure)."""
    if stored is None:
        if node_id and not credential:
            raise StateError(f"HARK_NODE_ID {node_id!r} is set: set HARK_NODE_CREDENTIAL too")
        if not node_id or not credential:
            return NodeState(hub_url=hub_url)  # unprovisioned: waits to be claimed
        return NodeState(node_id, credential, credential_digest(credential), hub_url=hub_url)
    state = stored
    if node_id and not credential and not stored.node_id:
        raise StateError(f"HARK_NODE_ID {node_id!r} is set: set HARK_NODE_CREDENTIAL too")
    if node_id and node_id != stored.node_id:
        if not credential:
            raise StateError(
                f"HARK_NODE_ID {node_id!r} differs from the state file's node {stored.node_id!r}: "
                "set HARK_NODE_CREDENTIAL for the new identity"
            )
        log.warning("node identity changed from %s to %s by the environment", stored.node_id, node_id)
        state = NodeState(
            node_id,
            credential,
            credential_digest(credential),
            boot_count=stored.boot_count,
            hardware_id=stored.hardware_id,
            claim_code=stored.claim_code,
        )
    elif credential and credential_digest(credential) != stored.credential_seed_sha256:
        # A seed the state has not seen: the installer provisioned a new credential.
        state = stored.replace(
            credential=credential, credential_seed_sha256=credential_digest(credential), previous_credential=None
        )
    if hub_url:
        state = state.replace(hub_url=hub_url)
    return state


def load_state(path: Path) -> NodeState | None:
    """The state in `path`, or None when there is none yet; StateError when it is unreadable."""
    _remove_stale_temp_files(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateError(f"{path}: cannot read: {err}") from err
    try:
        state = msgspec.json.decode(data, type=NodeState)
    except msgspec.DecodeError as err:
        raise StateError(f"{path}: not a valid state file: {err}") from err
    if state.version > STATE_VERSION:
        raise StateError(f"{path}: written by a newer agent (version {state.version})")
    return state


def save_state(path: Path, state: NodeState) -> None:
    """Write `state` atomically with mode 0600."""
    data = msgspec.json.format(msgspec.json.encode(state), indent=2) + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, mode=0o600)
    except OSError as err:
        raise StateError(f"{path}: cannot write: {err}") from err


def _remove_stale_temp_files(path: Path) -> None:
    """Temp files left by a crash mid-write are garbage: the rename never happened."""
    remove_stale_temps(path)
    try:
        for leftover in path.parent.glob(f"{_OLD_TEMP_PREFIX}*{_OLD_TEMP_SUFFIX}"):  # an older agent's
            leftover.unlink(missing_ok=True)
    except OSError:
        pass


class StateStore:
    """The current state, changed on the event loop and saved in order from any thread."""

    def __init__(self, path: Path, state: NodeState) -> None:
        self.path = path
        self._state = state
        self._version = 0
        self._saved_version = 0
        self._lock = threading.Lock()

    @property
    def state(self) -> NodeState:
        return self._state

    def update(self, **changes: Any) -> tuple[NodeState, int]:
        """Change the in-memory state; return the snapshot and its version for `save`."""
        self._state = self._state.replace(**changes)
        self._version += 1
        return self._state, self._version

    def save(self, snapshot: NodeState, version: int) -> None:
        """Write `snapshot` unless a newer one was written already (safe from executor threads)."""
        with self._lock:
            if version <= self._saved_version:
                return
            save_state(self.path, snapshot)
            self._saved_version = version
