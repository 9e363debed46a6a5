"""Calibrating a node for a watchdog policy: ask it to measure its channels, keep the baseline it reports.

A calibration is `requested` until `cmd/calibrate` reaches the connected node (`running`), then
`completed` with the node's baseline (stored in the policy: a new version, audited as
`watchdog_policy.calibrate` with the baseline before and after) or `failed`. A node that is away
gets the command when it connects; one that never does fails after REQUEST_TTL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Node, WatchdogCalibration, WatchdogPolicy, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.audit import SYSTEM, Actor, record
from hark_fleet.hub.services.listing import Filter, ListSpec, get_scoped, one_of
from hark_fleet.hub.services.watchdog_policies import MANAGE, get_policy
from hark_fleet.hub.services.watchdog_resolve import PolicyIndex, changed_nodes, fleet_resolution
from hark_fleet.protocol.watchdog import CalibrateCommand, CalibrationResult

STATES = ("requested", "running", "completed", "failed")
DURATION_RANGE_S = (1.0, 3600.0)
REQUEST_TTL = timedelta(hours=24)  # a node away this long: the calibration fails
RESULT_GRACE = timedelta(minutes=2)  # past its duration, a running calibration waits this long for the result
CONNECTED = ("online", "degraded")


def calibration_to_api(row: WatchdogCalibration) -> dict[str, Any]:
    return {
        "id": row.id,
        "policy_id": row.policy_id,
        "node_id": row.node_id,
        "site": row.site,
        "duration_s": row.duration_s,
        "state": row.state,
        "requested_at": iso(row.requested_at),
        "sent_at": iso(row.sent_at),
        "completed_at": iso(row.completed_at),
        "requested_by": row.requested_by or {},
        "baseline": row.baseline,
        "error": row.error,
    }


CALIBRATION_LIST = ListSpec(
    model=WatchdogCalibration,
    serialize=calibration_to_api,
    filters=(
        Filter("policy_id", WatchdogCalibration.policy_id),
        Filter("node_id", WatchdogCalibration.node_id),
        Filter("state", WatchdogCalibration.state, one_of(STATES)),
    ),
    time_field=WatchdogCalibration.requested_at,
    site_field=WatchdogCalibration.site,
    descending=True,
)


def request_calibration(
    actor: Actor, scope: SiteScope, policy_id: str, node_id: str, duration_s: float
) -> tuple[dict[str, Any], CalibrateCommand | None]:
    """A new calibration of one of the caller's nodes, and the command to send now (None while the node is away)."""
    policy = get_policy(policy_id)
    low, high = DURATION_RANGE_S
    if not low <= duration_s <= high:
        raise InvalidRequest("The calibration is invalid.", fields={"duration_s": f"from {low:g} to {high:g} s"})
    node: Node = get_scoped(Node, node_id, Node.site, scope)
    resolved = PolicyIndex.load().resolve(node.id, node.site)
    if policy.id != resolved.node_policy and policy.id not in resolved.channels.values():
        raise Conflict(f"Node {node.id} does not run the watchdog policy {policy.name}; assign it there first.")
    busy = WatchdogCalibration.select().where(
        WatchdogCalibration.node_id == node.id, WatchdogCalibration.state.in_(("requested", "running"))
    )
    if busy.exists():
        raise Conflict(f"Node {node.id} is being calibrated already; wait for that calibration to finish.")
    now = utcnow()
    connected = node.status in CONNECTED
    with database_proxy.atomic():
        row = WatchdogCalibration.create(
            id=new_id("wdc"),
            policy_id=policy.id,
            node_id=node.id,
            site=node.site,
            duration_s=float(duration_s),
            state="running" if connected else "requested",
            requested_at=now,
            sent_at=now if connected else None,
            requested_by={"type": actor.type, "id": actor.id, "name": actor.name},
        )
        after = calibration_to_api(row)
        record(
            actor,
            "watchdog_policy.calibrate",
            permission=MANAGE,
            target=("watchdog_policy", policy.id),
            after={"calibration": after},
        )
    command = CalibrateCommand(calibration_id=row.id, duration_s=float(duration_s)) if connected else None
    return after, command


def calibration_detail(scope: SiteScope, policy_id: str, calibration_id: str) -> dict[str, Any]:
    get_policy(policy_id)
    row: WatchdogCalibration = get_scoped(WatchdogCalibration, calibration_id, WatchdogCalibration.site, scope)
    if row.policy_id != policy_id:
        raise NotFound(f"No watchdog calibration {calibration_id}.")
    return calibration_to_api(row)


def deliverable(node_id: str) -> list[CalibrateCommand]:
    """What a node that just connected should measure: its requested (or interrupted) calibration, marked running."""
    now = utcnow()
    rows = list(
        WatchdogCalibration.select().where(
            WatchdogCalibration.node_id == node_id, WatchdogCalibration.state.in_(("requested", "running"))
        )
    )
    if not rows:
        return []
    WatchdogCalibration.update(state="running", sent_at=now).where(
        WatchdogCalibration.id.in_([r.id for r in rows]), WatchdogCalibration.state.in_(("requested", "running"))
    ).execute()
    return [CalibrateCommand(calibration_id=r.id, duration_s=r.duration_s) for r in rows]


def apply_result(node: Node, result: CalibrationResult, at: datetime, events: list[FleetEvent]) -> list[str]:
    """A node's calibration result: store the baseline in the policy (a new version); the nodes whose policy changed."""
    row = WatchdogCalibration.get_or_none(WatchdogCalibration.id == result.calibration_id)
    if row is None or row.node_id != node.id or row.state in ("completed", "failed"):
        return []  # not this node's, or already settled
    actor = Actor("node", node.id, getattr(node, "name", None))
    if result.baseline is None or result.error is not None:
        error = (result.error or "the node reported no baseline")[:2000]
        WatchdogCalibration.update(state="failed", completed_at=at, error=error).where(WatchdogCalibration.id == row.id).execute()
        events.append(_event(node, row.id, row.policy_id, "failed"))
        return []
    baseline = msgspec.to_builtins(result.baseline)
    WatchdogCalibration.update(state="completed", completed_at=at, baseline=baseline).where(
        WatchdogCalibration.id == row.id
    ).execute()
    policy = WatchdogPolicy.get_or_none(WatchdogPolicy.id == row.policy_id)
    if policy is None:  # deleted meanwhile: the measurement stays with the calibration
        events.append(_event(node, row.id, row.policy_id, "completed"))
        return []
    resolved_before = fleet_resolution()
    baselines = dict(policy.baselines or {})
    before = {"version": policy.version, "node_id": node.id, "baseline": baselines.get(node.id)}
    baselines[node.id] = baseline
    WatchdogPolicy.update(baselines=baselines, version=WatchdogPolicy.version + 1, updated_at=at).where(
        WatchdogPolicy.id == policy.id
    ).execute()
    after = {"version": policy.version + 1, "node_id": node.id, "baseline": baseline, "calibration_id": row.id}
    record(actor, "watchdog_policy.calibrate", target=("watchdog_policy", policy.id), before=before, after=after)
    events.append(_event(node, row.id, policy.id, "completed"))
    return changed_nodes(resolved_before, fleet_resolution())


def _event(node: Node, calibration_id: str, policy_id: str, state: str) -> FleetEvent:
    data = {"node_id": node.id, "calibration_id": calibration_id, "policy_id": policy_id, "state": state}
    return FleetEvent(f"watchdog.calibration_{state}", node.site, data)


def expire(at: datetime | None = None) -> list[FleetEvent]:
    """Calibrations a node never took up (REQUEST_TTL) or never answered (duration + RESULT_GRACE) fail."""
    at = at or utcnow()
    events: list[FleetEvent] = []
    with database_proxy.atomic():
        pending = WatchdogCalibration.select().where(WatchdogCalibration.state.in_(("requested", "running")))
        for row in pending:
            if row.state == "requested" and at - row.requested_at > REQUEST_TTL:
                error = "the node did not connect in time"
            elif (
                row.state == "running"
                and row.sent_at is not None
                and at - row.sent_at > timedelta(seconds=row.duration_s) + RESULT_GRACE
            ):
                error = "the node sent no result in time"
            else:
                continue
            WatchdogCalibration.update(state="failed", completed_at=at, error=error).where(
                WatchdogCalibration.id == row.id, WatchdogCalibration.state == row.state
            ).execute()
            record(
                SYSTEM, "watchdog_policy.calibrate", target=("watchdog_policy", row.policy_id), outcome="failure", reason=error
            )
            events.append(FleetEvent("watchdog.calibration_failed", row.site, {"node_id": row.node_id, "calibration_id": row.id}))
    return events
