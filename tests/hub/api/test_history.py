"""History that lasts: meter and heartbeat minutes stored once per node and minute, read back over up to 30 days.

Real hubs (SQLite and PostgreSQL), real nodes' MQTT sessions on the embedded broker, and the hub's own
database read from the test to count what was written.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import peewee
import pytest
from hark_fleet.hub.db.models import MeterMinute, MetricMinute
from hark_fleet.hub.history import FLUSH_LAG_S
from hark_fleet.hub.services import history
from hark_fleet.hub.services.history import COLUMNS, MeterSummary, MetricSummary

from tests.conftest import hub_database
from tests.harness import HubProcess, tmpfs, wait_for
from tests.hub.api.test_fleet import close, enroll, heartbeat, mqtt_client
from tests.hub.api.test_meters import frame, post_frame, user_token
from tests.hub.test_full_disk import fill, storage_check

HOUR = 3600
DAY = 86400


def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def get(hub: HubProcess, path: str, **params: Any) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def cpu(mean: float, high: float | None = None) -> tuple[float | None, ...]:
    """A stored minute's values with only the CPU known (mean and maximum come first in COLUMNS)."""
    return (mean, mean if high is None else high, *([None] * (len(COLUMNS) - 2)))


def beat_metrics(cpu: float, depth: int) -> dict[str, Any]:
    return {"cpu_pct": cpu, "outbox": {"depth": depth, "capacity": 100}, "clock": {"offset_ms": -cpu / 10, "quality": "ntp"}}


# -- stored while nodes send, one batch a minute, read back after a restart, pruned after the retention --


def publish_for_a_minute(nodes: list[tuple[dict, str]], clients: list[mqtt.Client], hub: HubProcess) -> tuple[dict, dict]:
    """10 Hz meter frames and a heartbeat every 5 s from every node for 60 s; what each node sent."""
    frames: dict[str, list[float]] = defaultdict(list)  # node id -> the peaks sent
    beats: dict[str, list[tuple[float, float]]] = defaultdict(list)  # node id -> (ts, cpu)
    start = time.time()
    tick = 0
    checked = False
    while time.time() < start + 60:
        for (node, _), client in zip(nodes, clients, strict=True):
            peak = -6.0 - tick % 30
            client.publish(f"hark/v1/nodes/{node['id']}/meters", json.dumps(frame(tick, peak=peak, rms=peak - 6)), qos=0)
            frames[node["id"]].append(peak)
            if tick % 50 == 0:
                sent, cpu = time.time(), float(5 + tick % 37)
                body = heartbeat(f"hb-{tick}", seq=tick, **beat_metrics(cpu, tick % 7))
                body["ts"] = iso(sent)
                client.publish(f"hark/v1/nodes/{node['id']}/heartbeat", json.dumps(body), qos=1)
                beats[node["id"]].append((sent, cpu))
        if not checked and time.time() > start + 30:
            now = time.time()
            with hub_database(hub):  # nothing of the minute in progress is in the database: no write per frame
                assert MeterMinute.select().where(MeterMinute.minute >= now - now % 60).count() == 0
                assert MetricMinute.select().where(MetricMinute.minute >= now - now % 60).count() == 0
            checked = True
        tick += 1
        time.sleep(max(0.0, start + tick * 0.1 - time.time()))
    return frames, beats


def expected_minutes(beats: list[tuple[float, float]]) -> dict[int, dict[str, Any]]:
    """Per minute of the heartbeats' own time: how many, and the CPU mean and maximum."""
    cpus: dict[int, list[float]] = defaultdict(list)
    for sent, cpu in beats:
        cpus[int(sent) - int(sent) % 60].append(cpu)
    return {m: {"samples": len(v), "cpu_pct": {"mean": round(sum(v) / len(v), 2), "max": max(v)}} for m, v in cpus.items()}


def distinct_transactions_per_minute(db: peewee.Database, node_ids: list[str]) -> dict[int, int]:
    """PostgreSQL: how many transactions wrote each minute's rows, both tables of the nodes together (xmin)."""
    marks = ", ".join(["%s"] * len(node_ids))
    rows = db.execute_sql(
        f"SELECT minute, count(DISTINCT xmin::text) FROM (SELECT minute, xmin FROM meter_minute WHERE node_id IN ({marks}) "
        f"UNION ALL SELECT minute, xmin FROM metric_minute WHERE node_id IN ({marks})) t GROUP BY minute",
        (*node_ids, *node_ids),
    ).fetchall()
    return {int(minute): count for minute, count in rows}


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.timeout(300)
def test_a_minute_of_frames_and_heartbeats_is_one_row_per_node_and_minute_and_outlasts_a_restart(
    tmp_path: Path, database_url: str | None
) -> None:
    hub = HubProcess(tmp_path / "hub", database_url=database_url, env_extra={"HARK_HISTORY_RETENTION_DAYS": "2"})
    hub.start()
    try:
        nodes = [enroll(hub, site="north") for _ in range(3)]
        ids = [node["id"] for node, _ in nodes]
        clients = [mqtt_client(hub, node["id"], credential)[0] for node, credential in nodes]
        try:
            frames, beats = publish_for_a_minute(nodes, clients, hub)

            def all_arrived() -> bool:  # reads add what is not stored yet: everything sent shows before the stop
                for node_id in ids:
                    meters = get(hub, f"/api/v1/nodes/{node_id}/meters/history", range="24h")["points"]
                    metrics = get(hub, f"/api/v1/nodes/{node_id}/metrics/history", range="1h")["points"]
                    if sum(p["frames"] for p in meters) != len(frames[node_id]):
                        return False
                    if sum(p["samples"] for p in metrics) != len(beats[node_id]):
                        return False
                return True

            wait_for(all_arrived, 15, "every frame and heartbeat in the history reads")
        finally:
            for client in clients:
                close(client)
        assert hub.stop() == 0  # a clean stop stores the minute in progress

        with hub_database(hub) as db:
            for node_id in ids:
                rows = list(MeterMinute.select().where(MeterMinute.node_id == node_id))
                assert 0 < len(rows) <= 2, [(r.minute, r.frames) for r in rows]  # a minute of frames spans one or two
                assert sum(r.frames for r in rows) == len(frames[node_id])
                stored = history.meter_summaries(node_id, history.Window(0, 4e9, 60, None))
                assert max(s.channels[0][0] for s in stored) == -6.0
                metric_rows = list(MetricMinute.select().where(MetricMinute.node_id == node_id))
                expected = expected_minutes(beats[node_id])
                assert {r.minute: r.samples for r in metric_rows} == {m: e["samples"] for m, e in expected.items()}
            if not isinstance(db, peewee.SqliteDatabase):
                written = distinct_transactions_per_minute(db, ids)
                assert written and set(written.values()) == {1}, written  # every minute's rows in one transaction
            # minutes past the retention (2 days), written as an earlier hub would have
            old, recent = int(time.time()) // 60 * 60 - 3 * DAY, int(time.time()) // 60 * 60 - DAY
            history.store_minutes(
                [MeterSummary(ids[0], m, 600, ((-1.0, -2.0, -3.0, -4.0),)) for m in (old, recent)],
                [MetricSummary(ids[0], m, 1, cpu(1.0)) for m in (old, recent)],
            )

        hub.start()
        for node_id in ids[1:]:
            meters = get(hub, f"/api/v1/nodes/{node_id}/meters/history", range="24h")
            assert meters["interval_s"] == 60 and meters["range"] == "24h"
            assert sum(p["frames"] for p in meters["points"]) == 600
            assert max(p["channels"][0]["peak_dbfs"] for p in meters["points"]) == -6.0
            metrics = get(hub, f"/api/v1/nodes/{node_id}/metrics/history", range="1h")
            expected = expected_minutes(beats[node_id])
            assert metrics["interval_s"] == 60
            assert {p["ts"]: {"samples": p["samples"], "cpu_pct": p["cpu_pct"]} for p in metrics["points"]} == {
                iso(m).replace(".000Z", "Z"): e for m, e in expected.items()
            }
        wait_for(lambda: minutes_of(hub, ids[0]) == {recent}, 15, "the minutes past the retention pruned")
        week = get(hub, f"/api/v1/nodes/{ids[0]}/metrics/history", range="7d")["points"]
        assert iso(recent - recent % 600).replace(".000Z", "Z") in [p["ts"] for p in week]
        assert "history pruned" in hub.log()
    finally:
        assert hub.stop() == 0, hub.log()


def minutes_of(hub: HubProcess, node_id: str) -> set[int]:
    """The node's stored minutes older than an hour."""
    with hub_database(hub):
        query = MeterMinute.select(MeterMinute.minute).where(
            MeterMinute.node_id == node_id, MeterMinute.minute < time.time() - HOUR
        )
        return {row.minute for row in query}


# -- reads: bucket sizes, what is not stored yet, scope and bad requests --------------------------------


@pytest.fixture(scope="module")
def month(hub: HubProcess) -> tuple[str, int]:
    """A node with 30 days of stored minutes (and ten ahead, so no window runs past them): CPU and peak constant per hour."""
    node, _ = enroll(hub, site="north")
    now = int(time.time())
    last = now - now % 60 - 60  # the last whole minute
    metric_rows = []
    meter_rows = []
    for minute in range(last - 30 * DAY + 60, last + 600, 60):
        hour = minute // HOUR
        metric_rows.append(MetricSummary(node["id"], minute, 6, cpu(float(hour % 50), float(hour % 50 + 10))))
        peak = -float(hour % 40)
        meter_rows.append(MeterSummary(node["id"], minute, 600, ((peak, peak - 1, peak - 3, peak - 6),), -20.0, -21.0, -23.0))
    with hub_database(hub):
        history.store_minutes(meter_rows, metric_rows)
    return node["id"], last


@pytest.mark.parametrize(
    ("name", "interval", "buckets"), [("1h", 60, 60), ("24h", 60, 1440), ("7d", 600, 1008), ("30d", 3600, 720)]
)
def test_each_range_rolls_the_stored_minutes_into_its_bucket_size(
    hub: HubProcess, month: tuple[str, int], name: str, interval: int, buckets: int
) -> None:
    node_id, _ = month
    for path in ("metrics", "meters") if name != "1h" else ("metrics",):  # meters up to an hour: per second, from memory
        data = get(hub, f"/api/v1/nodes/{node_id}/{path}/history", range=name)
        points = data["points"]
        assert (data["range"], data["interval_s"]) == (name, interval)
        assert buckets - 1 <= len(points) <= buckets + 1  # the first and last buckets may be partial
        starts = [datetime.fromisoformat(p["ts"].replace("Z", "+00:00")).timestamp() for p in points]
        assert all(s % interval == 0 for s in starts) and starts == sorted(starts)
        full = points[1]  # a whole bucket: every minute of it
        per_minute = "samples" if path == "metrics" else "frames"
        assert full[per_minute] == interval // 60 * (6 if path == "metrics" else 600)
        if name == "30d":  # hour buckets: the hour's own values
            hour = int(starts[1]) // HOUR
            if path == "metrics":
                assert full["cpu_pct"] == {"mean": float(hour % 50), "max": float(hour % 50 + 10)}
            else:
                assert full["channels"][0]["peak_dbfs"] == -float(hour % 40)


def test_from_and_to_choose_the_bucket_by_the_span(hub: HubProcess, month: tuple[str, int]) -> None:
    node_id, last = month
    two_days = get(hub, f"/api/v1/nodes/{node_id}/metrics/history", **{"from": iso(last - 2 * DAY), "to": iso(last)})
    assert (two_days["range"], two_days["interval_s"], two_days["from"]) == (None, 600, iso(last - 2 * DAY).replace(".000Z", "Z"))
    assert len(two_days["points"]) in (288, 289)
    season = get(hub, f"/api/v1/nodes/{node_id}/meters/history", **{"from": iso(last - 100 * DAY), "to": iso(last + 60)})
    assert season["interval_s"] == DAY and 30 <= len(season["points"]) <= 31


def test_the_minute_in_progress_is_read_from_memory_before_it_is_stored(hub: HubProcess) -> None:
    node, credential = enroll(hub, site="north")
    assert post_frame(hub, node["id"], credential, frame(1, peak=-3.0)).status_code == 204
    with hub.client(credential) as agent:
        sent = agent.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat("now", **beat_metrics(42.0, 3)))
        assert sent.status_code == 200, sent.text
    meters = get(hub, f"/api/v1/nodes/{node['id']}/meters/history", range="24h")["points"]
    assert [(p["frames"], p["channels"][0]["peak_dbfs"]) for p in meters] == [(1, -3.0)]
    (point,) = get(hub, f"/api/v1/nodes/{node['id']}/metrics/history")["points"]  # 24 h by default
    assert point["samples"] == 1 and point["cpu_pct"] == {"mean": 42.0, "max": 42.0}
    assert point["outbox_depth"] == {"mean": 3.0, "max": 3.0} and point["clock_offset_ms"] == {"mean": -4.2, "max_abs": 4.2}
    short = get(hub, f"/api/v1/nodes/{node['id']}/meters/history", range="5m")
    assert short["interval_s"] == 1 and short["range"] == "5m"  # up to an hour: per second, from memory, as before


def test_history_of_a_node_outside_the_callers_sites_is_404(hub: HubProcess) -> None:
    south, _ = enroll(hub, site="south")
    north, _ = enroll(hub, site="north")
    with hub.client(user_token(hub, ["north"])) as client:
        for path in ("metrics/history", "meters/history"):
            assert client.get(f"/api/v1/nodes/{south['id']}/{path}", params={"range": "7d"}).status_code == 404
            assert client.get(f"/api/v1/nodes/{north['id']}/{path}", params={"range": "7d"}).status_code == 200
            assert client.get(f"/api/v1/nodes/nod_missing/{path}").status_code == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"range": "2d"}, "range"),
        ({"range": "7d", "bucket": "60"}, "bucket"),  # unknown parameters are named, as on every route
        ({"range": "24h", "from": "2026-01-01T00:00:00Z"}, "range"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-01-01T00:00:00"}, "to"),  # no zone
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),  # longer than a year
    ],
)
def test_a_bad_range_is_a_400_naming_the_parameter(hub: HubProcess, params: dict[str, str], field: str) -> None:
    node, _ = enroll(hub, site="north")
    with hub.admin() as admin:
        for path in ("metrics/history", "meters/history"):
            response = admin.get(f"/api/v1/nodes/{node['id']}/{path}", params=params)
            assert response.status_code == 400, response.text
            assert field in response.json()["error"]["fields"]


# -- a full data disk ---------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_while_the_data_disk_is_full_the_history_waits_in_memory_and_is_stored_once_there_is_room(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    with tmpfs(hub.data_dir, "48m"):
        hub.start()
        try:
            node, credential = enroll(hub, site="north")
            client, _ = mqtt_client(hub, node["id"], credential)
            filler = fill(hub.data_dir)
            wait_for(lambda: not storage_check(hub).get("ok", True), 15, "readyz to report the full disk")
            try:
                for seq in range(5):
                    client.publish(f"hark/v1/nodes/{node['id']}/meters", json.dumps(frame(seq)), qos=0)

                def frames_read() -> int:
                    points = get(hub, f"/api/v1/nodes/{node['id']}/meters/history", range="24h")["points"]
                    return sum(p["frames"] for p in points)

                wait_for(lambda: frames_read() == 5, 10, "the frames in the history read")
                now = time.time()
                time.sleep(60 - now % 60 + FLUSH_LAG_S + 2)  # the minute ended and the hub tried to store it
                assert "history: the data disk is full; kept in memory" in hub.log()
                assert frames_read() == 5  # still served, from memory
            finally:
                close(client)
                filler.unlink()
            wait_for(lambda: storage_check(hub) == {"ok": True}, 15, "the disk to have room again")
            assert hub.stop() == 0  # a clean stop stores what waited
            with hub_database(hub):
                rows = list(MeterMinute.select().where(MeterMinute.node_id == node["id"]))
            assert sum(r.frames for r in rows) == 5
        finally:
            assert hub.stop() == 0, hub.log()
