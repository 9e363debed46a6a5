"""Legal hold on a recording: placed with a reason, released, audited; a held recording is never deleted.

Placing a hold on a held recording with the same reason changes nothing (no audit entry, the first time and
who stay); with another reason it updates the reason, time and who, audited as another `recording.legal_hold.set`.
Releasing a recording that is not held changes nothing either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Recording, database_proxy
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.recordings import latest_job, recording_to_api
from hark_fleet.hub.services.recordings_library import get_recording

PERMISSION = "recording:edit"
MAX_REASON = 500


def check_reason(reason: str) -> str:
    """The reason as stored: 1-500 printable characters, surrounding spaces removed; else a 400 naming `reason`."""
    text = reason.strip()
    if not 1 <= len(text) <= MAX_REASON or not text.isprintable():
        raise InvalidRequest("The legal hold needs a reason.", fields={"reason": f"1-{MAX_REASON} printable characters"})
    return text


def _api(recording: Recording) -> dict[str, Any]:
    job = latest_job(recording.id)
    return recording_to_api(recording, job.id if job else None)


def set_hold(actor: Actor, scope: SiteScope, recording_id: str, reason: str) -> tuple[dict[str, Any], list[FleetEvent]]:
    """Place (or re-word) the legal hold; the recording and the events to publish."""
    text = check_reason(reason)
    changes = {
        "legal_hold": True,
        "legal_hold_reason": text,
        "legal_hold_at": utcnow(),
        "legal_hold_by": {"type": actor.type, "id": actor.id, "name": actor.name},
    }
    return _change(actor, scope, recording_id, "set", changes, lambda r: bool(r.legal_hold) and r.legal_hold_reason == text)


def release_hold(actor: Actor, scope: SiteScope, recording_id: str) -> tuple[dict[str, Any], list[FleetEvent]]:
    """Release the legal hold; the recording and the events to publish."""
    changes = {"legal_hold": False, "legal_hold_reason": None, "legal_hold_at": None, "legal_hold_by": None}
    return _change(actor, scope, recording_id, "release", changes, lambda r: not r.legal_hold)


def _change(
    actor: Actor,
    scope: SiteScope,
    recording_id: str,
    action: str,
    changes: dict[str, Any],
    already: Callable[[Recording], bool],
) -> tuple[dict[str, Any], list[FleetEvent]]:
    """Write `changes` unless the recording `already` is so (then nothing happens), audited as `recording.legal_hold.<action>`."""
    with database_proxy.atomic():
        recording = get_recording(scope, recording_id)
        before = _api(recording)
        if already(recording):
            return before, []
        Recording.update(**changes, updated_at=utcnow()).where(Recording.id == recording.id).execute()
        after = _api(Recording.get_by_id(recording.id))
        record(
            actor,
            f"recording.legal_hold.{action}",
            permission=PERMISSION,
            target=("recording", recording.id),
            before=before,
            after=after,
        )
    return after, [FleetEvent("recording.updated", after["site"], after)]
