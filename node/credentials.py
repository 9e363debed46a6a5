"""Which credential the node holds and uses: pure decisions, no I/O.

A delivered credential (`cmd/credentials`) is taken only in place of one the node holds:
it names the digest of the credential it replaces, so a stale or foreign delivery is
ignored. The replaced credential is kept until the new one is confirmed (the hub or the
broker accepts it). A refusal from the hub (HTTP 401) is final: that credential is
forgotten. A refusal from the broker may be a broker that has not caught up yet (Mosquitto
takes the new password a moment after the delivery): the node switches to the other
credential and keeps both.
"""

from __future__ import annotations

import dataclasses
import hmac
from dataclasses import dataclass, field

from hark_fleet.node.state import credential_digest


@dataclass(frozen=True, slots=True)
class Credentials:
    """`current` the newest taken, `previous` the one it replaced until `current` is confirmed, `active` the one in use."""

    current: str = field(repr=False)
    previous: str | None = field(default=None, repr=False)
    active: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.active:
            object.__setattr__(self, "active", self.current)

    @property
    def pending(self) -> bool:
        """True while a new credential waits to be confirmed."""
        return self.previous is not None

    def offer(self, credential: str, replaces_sha256: str | None) -> Credentials | None:
        """The credentials after taking a delivered `credential`, or None when it does not replace one the node holds."""
        if credential in (self.current, self.previous) or not replaces_sha256:
            return None
        for held in (self.current, self.previous):
            if held is not None and hmac.compare_digest(replaces_sha256.lower().encode(), credential_digest(held).encode()):
                return Credentials(credential, held)
        return None

    def refused(self, credential: str, authoritative: bool) -> Credentials | None:
        """The credentials after `credential` was refused (by the hub: `authoritative`); None when nothing changes."""
        if self.previous is None or credential not in (self.current, self.previous):
            return None
        other = self.previous if credential == self.current else self.current
        if authoritative:
            return Credentials(other)
        if credential != self.active:
            return None  # a report about the one no longer in use
        return dataclasses.replace(self, active=other)

    def accepted(self, credential: str) -> Credentials | None:
        """The credentials after `credential` was accepted: the new one confirmed drops the previous."""
        if self.previous is None or credential != self.current:
            return None
        return Credentials(self.current)
