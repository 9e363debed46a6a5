"""Retention decisions (pure, fixed clock): nothing is deleted until every copy the policies require is confirmed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hark_fleet.hub.services.retention_rules import (
    COPY_STATES,
    ENDED_STATUSES,
    HUB,
    NODE,
    Copy,
    CopyState,
    RecordingCopies,
    RetentionPolicy,
    decide_hub,
    decide_node,
    emergency_order,
    policy_for,
    preview,
)
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SHA = "a" * 64
OTHER_SHA = "b" * 64
MB = 1_000_000
NOT_CONFIRMED: tuple[CopyState, ...] = ("present", "absent")

ARCHIVE = RetentionPolicy(id="archive", keep_on_hub_days=30, required_providers=("s3-archive",))


def recording(recording_id: str = "r1", age_days: float = 40, **fields: Any) -> RecordingCopies:
    values: dict[str, Any] = {
        "recording_id": recording_id,
        "site": "hall",
        "profile_id": "voice",
        "tags": frozenset(),
        "status": "completed",
        "created_at": NOW - timedelta(days=age_days, hours=1),
        "ended_at": NOW - timedelta(days=age_days),
        "size_bytes": 100 * MB,
        "legal_hold": False,
        "sha256": SHA,
        "copies": (
            Copy("hub", "confirmed", SHA),
            Copy("node", "present"),
            Copy("provider:s3-archive", "confirmed", SHA),
        ),
    }
    values.update(fields)
    return RecordingCopies(**values)


def copies(
    hub: CopyState = "confirmed", node: CopyState = "present", archive: CopyState = "confirmed", archive_sha: str = SHA
) -> tuple[Copy, ...]:
    return (
        Copy("hub", hub, SHA if hub == "confirmed" else None),
        Copy("node", node),
        Copy("provider:s3-archive", archive, archive_sha if archive == "confirmed" else None),
    )


def test_hub_copy_is_deleted_once_old_enough_and_confirmed_on_every_required_provider() -> None:
    decision = decide_hub(recording(), ARCHIVE, NOW)
    assert decision.delete
    assert "s3-archive" in decision.reason


def test_hub_copy_is_kept_until_its_days_have_passed() -> None:
    decision = decide_hub(recording(age_days=18), ARCHIVE, NOW)
    assert not decision.delete
    assert decision.reason == "kept 30 days: 12 days left"


def test_hub_copy_not_confirmed_on_a_required_provider_is_kept() -> None:
    for state in NOT_CONFIRMED:
        decision = decide_hub(recording(copies=copies(archive=state)), ARCHIVE, NOW)
        assert not decision.delete
        assert decision.reason == "not yet confirmed on provider s3-archive"
    decision = decide_hub(recording(copies=copies()[:2]), ARCHIVE, NOW)  # no row for the provider at all
    assert decision.reason == "not yet confirmed on provider s3-archive"


def test_a_checksum_mismatch_holds_and_says_so() -> None:
    decision = decide_hub(recording(copies=copies(archive_sha=OTHER_SHA)), ARCHIVE, NOW)
    assert not decision.delete
    assert decision.reason.startswith("checksum mismatch on provider s3-archive")
    hub_mismatch = recording(copies=(Copy("hub", "confirmed", OTHER_SHA), Copy("node", "present")))
    decision = decide_node(hub_mismatch, ARCHIVE, NOW)
    assert not decision.delete
    assert decision.reason.startswith("checksum mismatch on the hub")


def test_an_original_without_checksum_is_never_deleted() -> None:
    unsummed = recording(sha256=None)
    assert not decide_hub(unsummed, ARCHIVE, NOW).delete
    assert not decide_node(unsummed, ARCHIVE, NOW).delete


def test_legal_hold_is_never_deleted_anywhere_even_in_an_emergency() -> None:
    held = recording(legal_hold=True, age_days=400)
    assert decide_hub(held, ARCHIVE, NOW).reason == "legal hold"
    assert decide_node(held, ARCHIVE, NOW).reason == "legal hold"
    for place in (HUB, NODE):
        plan = emergency_order([held], [ARCHIVE], place, NOW, 1)
        assert plan.evict == ()
        assert plan.held == (("r1", "legal hold"),)


def test_a_recording_still_recording_or_uploading_is_never_deleted() -> None:
    for status in ("queued", "recording", "uploading", "something-new"):
        busy = recording(status=status, ended_at=None, age_days=100)
        for place in (HUB, NODE):
            decision = (decide_hub if place == HUB else decide_node)(busy, ARCHIVE, NOW)
            assert not decision.delete
            assert decision.reason == f"not ended yet (status {status})"
            assert emergency_order([busy], [ARCHIVE], place, NOW, 1).evict == ()


def test_keep_forever_without_providers_deletes_nothing_from_the_hub() -> None:
    forever = RetentionPolicy(id="forever")
    old = recording(age_days=5000, copies=copies()[:2])
    decision = decide_hub(old, forever, NOW)
    assert not decision.delete
    assert decision.reason == "kept forever"
    plan = emergency_order([old], [forever], HUB, NOW, 1)
    assert plan.evict == ()
    assert plan.held == (("r1", "no confirmed copy off the hub"),)
    assert not plan.enough


def test_expiry_without_required_providers_deletes_when_the_days_have_passed() -> None:
    expiring = RetentionPolicy(id="expiring", keep_on_hub_days=7)
    assert decide_hub(recording(age_days=8), expiring, NOW).delete
    assert decide_hub(recording(age_days=6.5), expiring, NOW).reason == "kept 7 days: 12 h left"


def test_node_copy_is_kept_until_the_hub_confirms() -> None:
    for hub_state in NOT_CONFIRMED:
        decision = decide_node(recording(copies=copies(hub=hub_state)), ARCHIVE, NOW)
        assert not decision.delete
        assert decision.reason == "the hub has not confirmed its copy"
    decision = decide_node(recording(age_days=0.01), ARCHIVE, NOW)
    assert decision.delete
    assert decision.reason == "the hub confirmed its copy"


def test_node_copy_is_left_to_its_cache_policy_when_the_policy_says_so() -> None:
    lenient = RetentionPolicy(id="lenient", keep_on_node_until_hub_has_it=False)
    assert not decide_node(recording(), lenient, NOW).delete
    assert not decide_node(recording(), None, NOW).delete
    assert emergency_order([recording()], [lenient], NODE, NOW, 1).evict == ("r1",)  # confirmed on the hub: evictable


def test_most_specific_policy_wins() -> None:
    anything = RetentionPolicy(id="a-any", priority=100)
    hall = RetentionPolicy(id="b-hall", sites=frozenset({"hall"}))
    hall_voice = RetentionPolicy(id="c-hall-voice", sites=frozenset({"hall"}), profile_ids=frozenset({"voice"}))
    hall_voice_tagged = RetentionPolicy(
        id="d-tagged", sites=frozenset({"hall"}), profile_ids=frozenset({"voice"}), tags=frozenset({"court", "x"})
    )
    other_site = RetentionPolicy(id="e-yard", sites=frozenset({"yard"}), profile_ids=frozenset({"voice"}), tags=frozenset({"x"}))
    policies = [anything, hall, hall_voice, hall_voice_tagged, other_site]
    assert policy_for(recording(), policies) == hall_voice
    assert policy_for(recording(tags=frozenset({"court", "x", "y"})), policies) == hall_voice_tagged
    assert policy_for(recording(tags=frozenset({"court"})), policies) == hall_voice  # a policy's tags must all be there
    assert policy_for(recording(site="lobby", profile_id=None), policies) == anything
    assert policy_for(recording(site="yard"), [other_site]) is None
    # Equally specific: priority, then id, whatever the order of the list.
    twin = RetentionPolicy(id="a-twin", sites=frozenset({"hall"}), profile_ids=frozenset({"voice"}))
    assert policy_for(recording(), [hall_voice, twin]) == twin
    assert policy_for(recording(), [twin, hall_voice]) == twin
    urgent = RetentionPolicy(id="z-urgent", sites=frozenset({"hall"}), profile_ids=frozenset({"voice"}), priority=1)
    assert policy_for(recording(), [twin, urgent, hall_voice]) == urgent


def test_unconfirmed_audio_survives_while_confirmed_audio_is_evicted_oldest_first() -> None:
    library = [
        recording("new-confirmed", age_days=2),
        recording("old-unconfirmed", age_days=90, copies=copies(archive="present")),
        recording("oldest-confirmed", age_days=60),
        recording("mid-confirmed", age_days=10),
    ]
    plan = emergency_order(library, [ARCHIVE], HUB, NOW, 150 * MB)
    assert plan.evict == ("oldest-confirmed", "mid-confirmed")
    assert plan.held == (("old-unconfirmed", "not yet confirmed on provider s3-archive"),)
    assert plan.enough and plan.shortfall is None
    node_library = [
        recording("n-old-unconfirmed", age_days=90, copies=copies(hub="present")),
        recording("n-new", age_days=1),
        recording("n-old", age_days=20),
    ]
    plan = emergency_order(node_library, [ARCHIVE], NODE, NOW, 1)
    assert plan.evict == ("n-old",)
    assert plan.held == (("n-old-unconfirmed", "the hub has not confirmed its copy"),)


def test_emergency_eviction_stops_at_bytes_needed_and_reports_a_shortfall() -> None:
    library = [recording(f"r{day}", age_days=day) for day in range(1, 6)]
    plan = emergency_order(library, [ARCHIVE], HUB, NOW, 250 * MB)
    assert plan.evict == ("r5", "r4", "r3")
    assert plan.freed_bytes == 300 * MB and plan.shortfall_bytes == 0
    assert emergency_order(library, [ARCHIVE], HUB, NOW, 0).evict == ()
    plan = emergency_order([*library, recording("busy", status="uploading")], [ARCHIVE], HUB, NOW, 800 * MB)
    assert plan.evict == ("r5", "r4", "r3", "r2", "r1")
    assert plan.shortfall_bytes == 300 * MB and not plan.enough
    assert plan.shortfall == "cannot free 300.0 MB: no other recording here is confirmed where required"
    assert plan.held == (("busy", "not ended yet (status uploading)"),)


def test_preview_lists_what_would_go_and_what_is_held_with_reasons() -> None:
    library = [
        recording("expired", age_days=40),
        recording("young", age_days=20),
        recording("held", legal_hold=True),
        recording("gone-from-hub", copies=copies(hub="absent")),
    ]
    result = preview(library, [ARCHIVE], HUB, NOW)
    assert result.delete == (("expired", "kept 30 days; confirmed on s3-archive"),)
    assert result.held == (("young", "kept 30 days: 10 days left"), ("held", "legal hold"))
    node_result = preview(library, [ARCHIVE], NODE, NOW)
    assert [recording_id for recording_id, _ in node_result.delete] == ["expired", "young"]
    assert node_result.held == (("held", "legal hold"), ("gone-from-hub", "the hub has not confirmed its copy"))


# Property: whatever the recording, policies and clock, a copy is deleted or evicted only with its confirmations in place.

STATES = st.sampled_from(COPY_STATES)
SHAS = st.sampled_from([SHA, OTHER_SHA, None])
PROVIDERS = st.sampled_from(["s3", "nas", "share"])


@st.composite
def recordings(draw: st.DrawFn, index: int = 0) -> RecordingCopies:
    places = ["hub", "node"] + [f"provider:{name}" for name in draw(st.lists(PROVIDERS, unique=True))]
    return RecordingCopies(
        recording_id=f"r{index}-{draw(st.integers(0, 10**6))}",
        site=draw(st.sampled_from(["hall", "yard", None])),
        profile_id=draw(st.sampled_from(["voice", "music", None])),
        tags=frozenset(draw(st.lists(st.sampled_from(["court", "x"]), unique=True))),
        status=draw(st.sampled_from([*sorted(ENDED_STATUSES), "queued", "recording", "uploading"])),
        created_at=NOW - timedelta(days=draw(st.floats(0, 400))),
        ended_at=draw(st.one_of(st.none(), st.just(NOW - timedelta(days=draw(st.floats(-1, 400)))))),
        size_bytes=draw(st.integers(0, 10**9)),
        legal_hold=draw(st.booleans()),
        sha256=draw(SHAS),
        copies=tuple(Copy(place, draw(STATES), draw(SHAS)) for place in places),
    )


POLICIES = st.builds(
    RetentionPolicy,
    id=st.sampled_from(["p1", "p2", "p3"]),
    sites=st.frozensets(st.sampled_from(["hall", "yard"])),
    profile_ids=st.frozensets(st.sampled_from(["voice", "music"])),
    tags=st.frozensets(st.sampled_from(["court", "x"])),
    keep_on_hub_days=st.one_of(st.none(), st.floats(0, 100)),
    keep_on_node_until_hub_has_it=st.booleans(),
    required_providers=st.lists(PROVIDERS, unique=True).map(tuple),
    priority=st.integers(-2, 2),
)


def confirmed(item: RecordingCopies, place: str) -> bool:
    copy = item.copy_at(place)
    return copy is not None and copy.state == "confirmed" and item.sha256 is not None and copy.sha256 == item.sha256


def assert_safe_at(item: RecordingCopies, policies: list[RetentionPolicy], place: str) -> None:
    assert not item.legal_hold
    assert item.status in ENDED_STATUSES
    assert item.copy_at(place) is not None
    if place == NODE:
        assert confirmed(item, HUB)
        return
    policy = policy_for(item, policies)
    required = policy.required_providers if policy is not None else ()
    assert all(confirmed(item, f"provider:{name}") for name in required)
    if not required:  # the hub's copy may go only when it expired under a policy or a confirmed copy exists off the hub
        assert (policy is not None and policy.keep_on_hub_days is not None) or any(
            copy.place.startswith("provider:") and confirmed(item, copy.place) for copy in item.copies
        )


@settings(max_examples=400, deadline=None)
@given(
    library=st.lists(st.integers(0, 1000), min_size=1, max_size=6).flatmap(
        lambda keys: st.tuples(*(recordings(index) for index in range(len(keys))))
    ),
    policies=st.lists(POLICIES, max_size=4),
    bytes_needed=st.integers(-10, 5 * 10**9),
)
def test_no_decision_deletes_a_copy_whose_required_confirmations_are_missing(
    library: tuple[RecordingCopies, ...], policies: list[RetentionPolicy], bytes_needed: int
) -> None:
    by_id = {item.recording_id: item for item in library}
    for item in library:
        policy = policy_for(item, policies)
        if decide_hub(item, policy, NOW).delete:
            assert_safe_at(item, policies, HUB)
            assert policy is not None and policy.keep_on_hub_days is not None
        if decide_node(item, policy, NOW).delete:
            assert_safe_at(item, policies, NODE)
    for place in (HUB, NODE):
        plan = emergency_order(library, policies, place, NOW, bytes_needed)
        for recording_id in plan.evict:
            assert_safe_at(by_id[recording_id], policies, place)
        for recording_id, _ in preview(library, policies, place, NOW).delete:
            assert_safe_at(by_id[recording_id], policies, place)
