"""Retention as pure decisions: what may be deleted from the hub or a node now, and what to evict when space runs out.

Nothing here touches the database, the disk or the clock (`now` is an argument); the caller loads `RecordingCopies`
and `RetentionPolicy` values, asks, and applies the answer.

The rule no peer guarantees: nothing is deleted until every copy the policies require is confirmed, and a recording
under legal hold is never deleted from anywhere.

- A `Copy` is `confirmed` only when its state is `confirmed` AND its verified sha256 equals the original's; a
  `confirmed` copy with another checksum counts as a mismatch and holds the recording (the reason says so). A
  recording without an original sha256 can have no confirmed copy, so it is never deleted.
- Places: `hub`, `node` (the recording's own node's cache) and `provider:<id>`.
- A recording is deletable only once ended: status in `ENDED_STATUSES`; `queued`, `recording`, `uploading` and any
  status we do not know are held ("not ended yet").
- Hub (`decide_hub`): deleted when its age (from `ended_at`, else `created_at`) has passed `keep_on_hub_days` and
  every `required_providers` copy is confirmed. `keep_on_hub_days=None` keeps it forever. With no required
  providers and a finite `keep_on_hub_days`, the recording simply expires (the policy asked for no off-site copy).
- Node (`decide_node`): deleted only when the hub's copy is confirmed. `keep_on_node_until_hub_has_it=True` deletes
  it as soon as that is so; `False` leaves the node copy to the node's own cache policy (retention holds it).
- Emergency (`emergency_order`): when a place is short of space, ages and "forever" are waived but confirmations are
  not. On the hub a recording may be evicted when every required provider is confirmed and at least one provider
  copy is confirmed (or the policy already lets it expire); on a node when the hub has confirmed it. Candidates go
  oldest first until `bytes_needed` is freed; the plan says how much could not be freed, and the caller then raises a
  critical health event and refuses new takes rather than delete anything else.
- Policy choice (`policy_for`): a policy matches when each of its non-empty criteria matches (`sites` contains the
  recording's site, `profile_ids` its profile, and the recording carries every one of `tags`); empty = any. Among
  matches the most specific wins: most constrained criteria first, then most tags, then the highest `priority`,
  then the smallest `id` (so the choice never depends on list order).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

HUB = "hub"
NODE = "node"
PROVIDER_PREFIX = "provider:"
CopyState = Literal["present", "confirmed", "absent"]  # confirmed: the checksum was verified at that place
COPY_STATES: tuple[CopyState, ...] = get_args(CopyState)
ENDED_STATUSES = frozenset({"completed", "interrupted", "failed", "cancelled", "missed"})
DAY_S = 86400.0


def provider_place(provider_id: str) -> str:
    """The place name of a provider's copy."""
    return f"{PROVIDER_PREFIX}{provider_id}"


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a recording: where (`hub`, `node`, `provider:<id>`), its state and the sha256 verified there."""

    place: str
    state: CopyState
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class RecordingCopies:
    """What retention needs to know of one recording and every copy of it."""

    recording_id: str
    site: str | None
    profile_id: str | None
    tags: frozenset[str]
    status: str
    created_at: datetime
    ended_at: datetime | None
    size_bytes: int
    legal_hold: bool
    sha256: str | None  # of the original, as the node computed it
    copies: tuple[Copy, ...] = ()

    def copy_at(self, place: str) -> Copy | None:
        """The copy at `place`, None when there is no row for it."""
        return next((copy for copy in self.copies if copy.place == place), None)

    def has_copy_at(self, place: str) -> bool:
        """True when bytes are (or may be) at `place`."""
        copy = self.copy_at(place)
        return copy is not None and copy.state != "absent"

    def is_confirmed_at(self, place: str) -> bool:
        """True when the copy at `place` is verified with the original's checksum."""
        return _confirmation(self, place) is None

    def age_s(self, now: datetime) -> float:
        """Seconds since the recording ended (or was created, when it has no end time)."""
        return (now - (self.ended_at or self.created_at)).total_seconds()


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Which recordings it covers (empty criteria = any) and how long each place keeps them."""

    id: str
    sites: frozenset[str] = frozenset()
    profile_ids: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    keep_on_hub_days: float | None = None  # None: forever
    keep_on_node_until_hub_has_it: bool = True
    required_providers: tuple[str, ...] = ()
    min_free_bytes_hub: int = 0
    min_free_bytes_node: int = 0
    priority: int = 0  # breaks ties between equally specific policies (higher wins)

    def matches(self, recording: RecordingCopies) -> bool:
        """True when every non-empty criterion matches the recording."""
        if self.sites and recording.site not in self.sites:
            return False
        if self.profile_ids and recording.profile_id not in self.profile_ids:
            return False
        return self.tags <= recording.tags

    def specificity(self) -> tuple[int, int, int]:
        """Sort key: constrained criteria, number of tags, priority (higher is preferred)."""
        constrained = sum(1 for criterion in (self.sites, self.profile_ids, self.tags) if criterion)
        return constrained, len(self.tags), self.priority

    def min_free_bytes(self, place: str) -> int:
        """Free space this policy wants held at `place` (`hub` or `node`)."""
        return self.min_free_bytes_hub if place == HUB else self.min_free_bytes_node


@dataclass(frozen=True, slots=True)
class Decision:
    """Delete or keep one recording's copy at one place, and why in words an operator reads."""

    recording_id: str
    place: str
    action: Literal["delete", "keep"]
    reason: str

    @property
    def delete(self) -> bool:
        """True when the copy may be deleted now."""
        return self.action == "delete"


@dataclass(frozen=True, slots=True)
class EmergencyPlan:
    """What to evict (in order) to free `bytes_needed`, what is held and why, and how much could not be freed."""

    evict: tuple[str, ...]
    held: tuple[tuple[str, str], ...]
    freed_bytes: int
    shortfall_bytes: int  # > 0: not enough may be evicted; raise a critical health event and refuse new takes

    @property
    def enough(self) -> bool:
        """True when the eviction frees at least the bytes needed."""
        return self.shortfall_bytes == 0

    @property
    def shortfall(self) -> str | None:
        """The shortfall in words, None when there is none."""
        if self.enough:
            return None
        return f"cannot free {_size(self.shortfall_bytes)}: no other recording here is confirmed where required"


@dataclass(frozen=True, slots=True)
class Preview:
    """What retention would delete at a place now and why, and what it holds and why."""

    delete: tuple[tuple[str, str], ...]
    held: tuple[tuple[str, str], ...]


def policy_for(recording: RecordingCopies, policies: Iterable[RetentionPolicy]) -> RetentionPolicy | None:
    """The most specific matching policy (see the module docstring), None when none matches."""
    matching = [policy for policy in policies if policy.matches(recording)]
    if not matching:
        return None
    best = max(policy.specificity() for policy in matching)
    return min((policy for policy in matching if policy.specificity() == best), key=lambda policy: policy.id)


def decide_hub(recording: RecordingCopies, policy: RetentionPolicy | None, now: datetime) -> Decision:
    """Whether the hub may delete its copy now."""

    def keep(reason: str) -> Decision:
        return Decision(recording.recording_id, HUB, "keep", reason)

    if not recording.has_copy_at(HUB):
        return keep("the hub holds no copy")
    held = _held_everywhere(recording)
    if held:
        return keep(held)
    if policy is None:
        return keep("no retention policy applies")
    if policy.keep_on_hub_days is None:
        return keep("kept forever")
    days = policy.keep_on_hub_days
    left_s = days * DAY_S - recording.age_s(now)
    if left_s > 0:
        return keep(f"kept {_number(days)} days: {_time_left(left_s)} left")
    missing = _provider_problems(recording, policy.required_providers)
    if missing:
        return keep(missing)
    if not policy.required_providers:
        return Decision(recording.recording_id, HUB, "delete", f"kept {_number(days)} days; no off-site copy is required")
    names = ", ".join(policy.required_providers)
    return Decision(recording.recording_id, HUB, "delete", f"kept {_number(days)} days; confirmed on {names}")


def decide_node(recording: RecordingCopies, policy: RetentionPolicy | None, now: datetime) -> Decision:
    """Whether the recording's node may delete its cached copy now (`now` is unused today: the rule has no age)."""

    def keep(reason: str) -> Decision:
        return Decision(recording.recording_id, NODE, "keep", reason)

    if not recording.has_copy_at(NODE):
        return keep("the node holds no copy")
    held = _held_everywhere(recording)
    if held:
        return keep(held)
    problem = _confirmation(recording, HUB)
    if problem:
        return keep(problem)
    if policy is None:
        return keep("no retention policy applies (the node's cache policy decides)")
    if not policy.keep_on_node_until_hub_has_it:
        return keep("the policy leaves the node's copy to its cache policy")
    return Decision(recording.recording_id, NODE, "delete", "the hub confirmed its copy")


def emergency_order(
    recordings: Iterable[RecordingCopies], policies: Sequence[RetentionPolicy], place: str, now: datetime, bytes_needed: int
) -> EmergencyPlan:
    """Recordings to evict from `place` (`hub` or `node`), oldest confirmed first, until `bytes_needed` is freed."""
    candidates: list[RecordingCopies] = []
    held: list[tuple[str, str]] = []
    for recording in recordings:
        if not recording.has_copy_at(place):
            continue
        problem = _emergency_problem(recording, policy_for(recording, policies), place, now)
        if problem:
            held.append((recording.recording_id, problem))
        else:
            candidates.append(recording)
    candidates.sort(key=lambda recording: (-recording.age_s(now), recording.recording_id))
    evict: list[str] = []
    freed = 0
    for recording in candidates:
        if freed >= bytes_needed:
            break
        evict.append(recording.recording_id)
        freed += max(recording.size_bytes, 0)
    return EmergencyPlan(tuple(evict), tuple(held), freed, max(bytes_needed - freed, 0))


def preview(recordings: Iterable[RecordingCopies], policies: Sequence[RetentionPolicy], place: str, now: datetime) -> Preview:
    """What a retention run would delete at `place` (`hub` or `node`) now, and what it holds, each with its reason."""
    decide = decide_hub if place == HUB else decide_node
    delete: list[tuple[str, str]] = []
    held: list[tuple[str, str]] = []
    for recording in recordings:
        if not recording.has_copy_at(place):
            continue
        decision = decide(recording, policy_for(recording, policies), now)
        (delete if decision.delete else held).append((recording.recording_id, decision.reason))
    return Preview(tuple(delete), tuple(held))


def min_free_floor(policies: Iterable[RetentionPolicy], place: str) -> int:
    """The free space to hold at `place`: the largest any policy asks for."""
    return max((policy.min_free_bytes(place) for policy in policies), default=0)


def _held_everywhere(recording: RecordingCopies) -> str | None:
    """Why nothing of this recording may go anywhere (legal hold, not ended), None when neither applies."""
    if recording.legal_hold:
        return "legal hold"
    if recording.status not in ENDED_STATUSES:
        return f"not ended yet (status {recording.status})"
    return None


def _confirmation(recording: RecordingCopies, place: str) -> str | None:
    """Why the copy at `place` is not confirmed, None when it is."""
    where = "the hub" if place == HUB else place.removeprefix(PROVIDER_PREFIX)
    if place.startswith(PROVIDER_PREFIX):
        where = f"provider {where}"
    copy = recording.copy_at(place)
    if copy is None or copy.state != "confirmed":
        return "the hub has not confirmed its copy" if place == HUB else f"not yet confirmed on {where}"
    if recording.sha256 is None:
        return "the original has no checksum to confirm copies against"
    if copy.sha256 != recording.sha256:
        return f"checksum mismatch on {where} ({_short(copy.sha256)} is not the original's {_short(recording.sha256)})"
    return None


def _provider_problems(recording: RecordingCopies, providers: Sequence[str]) -> str | None:
    """Every required provider's missing confirmation, joined; None when all are confirmed."""
    problems = [problem for provider in providers if (problem := _confirmation(recording, provider_place(provider)))]
    return "; ".join(problems) or None


def _emergency_problem(recording: RecordingCopies, policy: RetentionPolicy | None, place: str, now: datetime) -> str | None:
    """Why the copy at `place` may not be evicted even in an emergency, None when it may."""
    held = _held_everywhere(recording)
    if held:
        return held
    if place == NODE:
        return _confirmation(recording, HUB)
    if policy is not None and decide_hub(recording, policy, now).delete:
        return None
    required = policy.required_providers if policy is not None else ()
    missing = _provider_problems(recording, required)
    if missing:
        return missing
    confirmed_off_site = any(
        copy.place.startswith(PROVIDER_PREFIX) and recording.is_confirmed_at(copy.place) for copy in recording.copies
    )
    return None if confirmed_off_site else "no confirmed copy off the hub"


def _time_left(seconds: float) -> str:
    if seconds >= DAY_S:
        days = math.ceil(seconds / DAY_S)
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{math.ceil(seconds / 3600)} h"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _short(sha256: str | None) -> str:
    return (sha256 or "none")[:12]


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
