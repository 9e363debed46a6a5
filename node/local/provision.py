"""Claiming a node: its hardware id and claim code, the wrong-code limit, and provisioning or resetting its state.

The hardware id is generated once (`hw-` and 16 random hex digits) and kept in the state
file rather than read from /etc/machine-id: several agents on one machine (tests, a
bench) need distinct ids, and cloned SD card images share a machine-id. A factory reset
keeps both the hardware id and the claim code, so the printed label stays valid.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hark_fleet.node.local.errors import AlreadyEnrolled, ClaimRefused, InvalidRequest, TooManyAttempts
from hark_fleet.node.state import NodeState, StateStore, credential_digest

log = logging.getLogger(__name__)

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CLAIM_CODE_LENGTH = 8
WRONG_CODES_PER_WINDOW = 5
WRONG_CODE_WINDOW_S = 60.0
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_claim_code() -> str:
    """8 random Crockford base32 characters (40 bits)."""
    return "".join(secrets.choice(CROCKFORD) for _ in range(CLAIM_CODE_LENGTH))


def new_hardware_id() -> str:
    return f"hw-{secrets.token_hex(8)}"


def format_claim_code(code: str) -> str:
    """`ABCD2345` -> `ABCD-2345`, the way it is printed on the label."""
    return f"{code[:4]}-{code[4:]}"


def normalize_claim_code(raw: str) -> str:
    """What a person typed, as stored: upper case, no dashes or spaces, O/I/L read as 0/1/1."""
    return raw.strip().upper().replace("-", "").replace(" ", "").translate(_ALIASES)


def with_local_identity(state: NodeState) -> NodeState:
    """`state` with a hardware id and a claim code, generating the ones it lacks."""
    if state.hardware_id and state.claim_code:
        return state
    return state.replace(hardware_id=state.hardware_id or new_hardware_id(), claim_code=state.claim_code or new_claim_code())


class WrongCodeLimit:
    """At most `limit` wrong codes per sliding `window_s`, for the whole node (not per address)."""

    def __init__(
        self,
        limit: int = WRONG_CODES_PER_WINDOW,
        window_s: float = WRONG_CODE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: deque[float] = deque()

    def check(self) -> None:
        """TooManyAttempts while the window is full."""
        now = self._clock()
        while self._failures and self._failures[0] <= now - self.window_s:
            self._failures.popleft()
        if len(self._failures) >= self.limit:
            raise TooManyAttempts(max(1, int(self._failures[0] + self.window_s - now + 0.999)))

    def failed(self) -> None:
        self._failures.append(self._clock())


@dataclass(frozen=True, slots=True)
class Handover:
    """What a claim hands the node."""

    node_id: str
    credential: str
    hub_url: str
    mqtt_url: str | None = None
    ca_pem: str | None = None


class Provisioning:
    """Checks claim codes and credentials, and changes the node's identity in its state file."""

    def __init__(self, store: StateStore, changed: Callable[[], Awaitable[None]], limit: WrongCodeLimit | None = None) -> None:
        self.store = store
        self._changed = changed
        self.limit = limit or WrongCodeLimit()

    def _check_code(self, raw: str | None, source: str) -> bool:
        """Whether `raw` is this node's claim code; a wrong one counts against the limit and is logged."""
        if not raw:
            return False
        expected = self.store.state.claim_code or ""
        if hmac.compare_digest(normalize_claim_code(raw).encode(), expected.encode()):
            return True
        self.limit.failed()
        log.warning("wrong claim code from %s", source)
        return False

    def _check_credential(self, credential: str | None) -> bool:
        state = self.store.state
        if not credential or not state.credential:
            return False
        return hmac.compare_digest(credential_digest(credential), credential_digest(state.credential))

    async def provision(self, handover: Handover, claim_code: str, source: str) -> NodeState:
        """Take an identity, authenticated by the claim code; the code stops working once the node is enrolled."""
        self.limit.check()
        if not self._check_code(claim_code, source):
            raise ClaimRefused("Wrong claim code.")
        if self.store.state.enrolled:
            log.warning("claim from %s refused: enrolled already as %s", source, self.store.state.node_id)
            raise AlreadyEnrolled(f"This node is enrolled already as {self.store.state.node_id}; reset it first.")
        if not handover.node_id or not handover.credential or not handover.hub_url:
            raise InvalidRequest("node_id, credential and hub_url are required.")
        snapshot, version = self.store.update(
            node_id=handover.node_id,
            credential=handover.credential,
            credential_seed_sha256=None,
            previous_credential=None,
            hub_url=handover.hub_url,
            mqtt_url=handover.mqtt_url,
            ca_pem=handover.ca_pem,
        )
        self.store.save(snapshot, version)
        log.info("claimed from %s: now node %s of hub %s", source, handover.node_id, handover.hub_url)
        await self._changed()
        return snapshot

    async def reset(self, claim_code: str | None, credential: str | None, source: str) -> NodeState:
        """Forget the identity (factory reset), authenticated by the node's credential or its claim code."""
        self.limit.check()
        if not self._check_credential(credential) and not self._check_code(claim_code, source):
            if credential and not claim_code:
                self.limit.failed()
                log.warning("reset with a wrong credential from %s", source)
            raise ClaimRefused("Wrong claim code or credential.")
        previous = self.store.state.node_id
        snapshot, version = self.store.update(
            node_id=None,
            credential=None,
            credential_seed_sha256=None,
            previous_credential=None,
            hub_url=None,
            mqtt_url=None,
            ca_pem=None,
        )
        self.store.save(snapshot, version)
        log.warning("factory reset from %s (was node %s): unprovisioned, waiting to be claimed", source, previous)
        await self._changed()
        return snapshot
