"""History written by several hubs on one PostgreSQL (issue 24): heartbeat parts merge, meter minutes are fenced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from hark_fleet.hub.cluster.leases import LeaseLost
from hark_fleet.hub.db.models import MeterMinute, MetricMinute, database_proxy
from hark_fleet.hub.services import history
from hark_fleet.hub.services.history import Window

from tests.harness import database_on, wait_for
from tests.hub.db.test_history_store import T0, meters, metrics


@pytest.fixture
def db(tmp_path: Path) -> Iterator[peewee.Database]:
    with database_on("postgres", tmp_path) as database:
        yield database


def cpu(node: str, minute: int) -> dict[str, object]:
    fold = history.metric_folds(node, Window(minute, minute + 60, 60, None))[minute]
    point = fold.point(minute)
    return {"samples": point["samples"], **point["cpu_pct"]}


def test_two_hubs_storing_their_parts_of_one_minute_at_once_both_count(db: peewee.Database) -> None:
    history.store_minutes([], [metrics("n1", T0, 10.0)])  # a part stored earlier (a restart)
    done = threading.Event()
    errors: list[BaseException] = []

    def second_hub() -> None:
        try:
            with db.connection_context():
                history.store_minutes([], [metrics("n1", T0, 70.0, 100.0), metrics("n2", T0, 5.0)])
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)
        finally:
            done.set()

    with database_proxy.atomic():  # the first hub's write, not committed until the second waits for it
        history.store_minutes([], [metrics("n2", T0, 15.0), metrics("n1", T0, 40.0)])
        thread = threading.Thread(target=second_hub)
        thread.start()

        def waiting() -> bool:
            db.execute_sql("SELECT pg_stat_clear_snapshot()")  # inside a transaction the view keeps its first answer
            row = db.execute_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            return bool(row and row[0]) or done.is_set()

        wait_for(waiting, 30, "the second hub's write to wait for the first's")
    thread.join(30)
    assert not errors, errors
    assert MetricMinute.select().count() == 2
    # n1: heartbeats 10 (stored before), 40 (first hub), 70 and 100 (second hub)
    assert cpu("n1", T0) == {"samples": 4, "mean": pytest.approx(55.0), "max": 100.0}
    assert cpu("n2", T0) == {"samples": 2, "mean": pytest.approx(10.0), "max": 15.0}


def test_a_hub_that_lost_the_history_lease_stores_its_heartbeat_minutes_but_no_meter_minute(db: peewee.Database) -> None:
    def lost() -> None:
        raise LeaseLost("lease history is not held by this instance")

    assert history.store_minutes([meters("n1", T0)], [metrics("n1", T0, 10.0)], check=lost) is False
    assert MeterMinute.select().count() == 0 and MetricMinute.select().count() == 1
    assert history.store_minutes([meters("n1", T0)], [], check=lambda: None) is True
    assert MeterMinute.select().count() == 1


def test_minutes_kept_for_a_takeover_fill_only_minutes_no_hub_stored(db: peewee.Database) -> None:
    history.store_minutes([meters("n1", T0, frames=600)], [])  # the old holder stored this one before it died
    history.store_minutes(
        [meters("n1", T0 + 120, frames=600)],
        [],
        meters_if_absent=[meters("n1", T0, frames=550), meters("n1", T0 + 60, frames=600)],
    )
    stored = history.meter_summaries("n1", Window(T0, T0 + 180, 60, None))
    assert [(s.minute, s.frames) for s in stored] == [(T0, 600), (T0 + 60, 600), (T0 + 120, 600)]
