"""The notifier's per-delivery lookups stay cheap however many health events the fleet has open."""

from __future__ import annotations

from pathlib import Path

from hark_fleet.hub.db.models import HealthEvent
from hark_fleet.hub.services.notify_outbox import FAILED_KIND

from tests.harness import database_on


def test_the_open_notify_failed_condition_is_found_by_kind_and_state_not_by_walking_open_events(tmp_path: Path) -> None:
    with database_on("sqlite", tmp_path) as database:
        query = HealthEvent.select(HealthEvent.details).where(
            HealthEvent.node_id.is_null(), HealthEvent.kind == FAILED_KIND, HealthEvent.state == "open"
        )
        sql, params = query.sql()
        plan = " ".join(str(row) for row in database.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
        assert "health_event_kind_state" in plan, plan
