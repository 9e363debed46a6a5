"""What history that lasts costs the hub: the per-frame fold, a minute's end, the write, reads and prunes.

What is measured
----------------
1. The meter hot path: ``MeterStore.add`` for ``--nodes`` nodes (default 1,000) at 10 Hz over 60 s of
   hub time (seconds and a minute end included; no SSE subscriber), for 2, 8 and 32 channels: the
   median of ``--repeat`` runs in microseconds per frame, and the container objects (lists, dicts,
   class instances: gc generation-0 count; floats are not tracked) made per frame while a second
   is open: 0 means a frame only updates running sums and maxima in place.
2. A minute's end on the loop: ``MeterStore.take_minutes`` when every node's minute is still open
   (all nodes silent since; with nodes sending, each node's minute closes with its first frame of
   the next minute instead, spread over that 100 ms).
3. The database, on a fresh SQLite file (and PostgreSQL with ``--postgres URL``): one
   ``store_minutes`` of every node's meter and heartbeat minute (one transaction), the on-disk size
   per row (SQLite), reads of 24 h, 7 d and 30 d for one node holding 30 days of minutes, as the
   API does them (``meter_history``, ``metric_history``), and one bounded prune.

Run it from the repository root::

    .venv/bin/python bench/history.py [--nodes 1000] [--repeat 5] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hark_fleet.hub.db.database import migrate, open_database
from hark_fleet.hub.db.models import MeterMinute, MetricMinute, database_proxy
from hark_fleet.hub.meters import MeterStore
from hark_fleet.hub.services import history
from hark_fleet.hub.services.history import COLUMNS, MeterSummary, MetricSummary, Window
from hark_fleet.protocol.messages import Loudness, MeterChannel, MeterFrame

T0 = 1_800_000_000  # a minute boundary
DAY = 86400


def meter_frame(channels: int) -> MeterFrame:
    return MeterFrame(
        ts="2026-12-01T12:00:00Z",
        seq=1,
        interval_ms=100,
        channels=[MeterChannel(i, -6.0 - i, -12.0 - i) for i in range(channels)],
        loudness=Loudness(-20.0, -21.0, -22.0, 3.0),
    )


def per_frame_us(channels: int, nodes: int) -> float:
    store, frame, ids = MeterStore(), meter_frame(channels), [f"nod_{n}" for n in range(nodes)]
    started = time.perf_counter()
    for tick in range(601):  # 60 s and the first frame of the next minute
        now = T0 + tick / 10
        for node_id in ids:
            store.add(node_id, frame, now)
    return (time.perf_counter() - started) / (601 * nodes) * 1e6


def containers_per_frame(channels: int) -> float:
    store, frame = MeterStore(), meter_frame(channels)
    store.add("n", frame, T0)
    gc.disable()
    try:
        gc.collect()
        before = gc.get_count()[0]
        for i in range(1000):
            store.add("n", frame, T0 + i * 1e-4)  # the same second
        return (gc.get_count()[0] - before) / 1000
    finally:
        gc.enable()


def minute_end_ms(nodes: int) -> float:
    store, frame = MeterStore(), meter_frame(8)
    for n in range(nodes):
        store.add(f"nod_{n}", frame, T0 + 30)
    started = time.perf_counter()
    store.take_minutes(T0 + 61)
    return (time.perf_counter() - started) * 1e3


def minutes(node_id: str, starts: range) -> tuple[list[MeterSummary], list[MetricSummary]]:
    levels = ((-6.1, -9.35, -12.27, -15.02), (-7.4, -10.2, -13.9, -16.1))
    meters = [MeterSummary(node_id, m, 600, levels, -20.1, -21.3, -23.4) for m in starts]
    metrics = [MetricSummary(node_id, m, 6, tuple(12.5 + i for i in range(len(COLUMNS)))) for m in starts]
    return meters, metrics


def database_figures(name: str, url: str | None, nodes: int, repeat: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="hark-bench-history-"))
    db = open_database(url, directory)
    migrate(db)
    database_proxy.initialize(db)
    with db.connection_context():
        writes = []
        for i in range(repeat):
            meters, metrics = [], []
            for n in range(nodes):
                one, two = minutes(f"nod_{n}", range(T0 + 60 * i, T0 + 60 * i + 1, 60))
                meters += one
                metrics += two
            started = time.perf_counter()
            history.store_minutes(meters, metrics)
            writes.append(time.perf_counter() - started)
        print(f"{name}: a minute of {nodes} nodes stored (one transaction): median {statistics.median(writes) * 1e3:.0f} ms")
        month_meters, month_metrics = minutes("nod_month", range(T0 - 30 * DAY, T0, 60))
        for i in range(0, len(month_meters), 5000):
            history.store_minutes(month_meters[i : i + 5000], month_metrics[i : i + 5000])
        if url is None:
            db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            size = sum(p.stat().st_size for p in directory.glob("*.sqlite3*"))
            rows = MeterMinute.select().count() + MetricMinute.select().count()
            print(f"{name}: {size / rows:.0f} bytes per row on disk with indexes (2-channel meter rows and heartbeat rows)")
        for label, span in (("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY)):
            win = Window(T0 - span, T0, history.interval_for(span), label)
            meter_times, metric_times = [], []
            for _ in range(repeat):
                started = time.perf_counter()
                points = history.meter_history("nod_month", win, [])
                meter_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                history.metric_history("nod_month", win, [])
                metric_times.append(time.perf_counter() - started)
            print(
                f"{name}: read {label} of one node ({len(points)} points): meters {statistics.median(meter_times) * 1e3:.0f} ms, "
                f"heartbeat metrics {statistics.median(metric_times) * 1e3:.0f} ms"
            )
        started = time.perf_counter()
        deleted = history.prune(T0 - 10 * DAY)
        print(f"{name}: one prune batch ({deleted[0]} + {deleted[1]} rows): {(time.perf_counter() - started) * 1e3:.0f} ms")
    if url is None:
        db.close()
    else:
        db.close_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", help="an empty PostgreSQL database to measure too (drop it after)")
    args = parser.parse_args(argv)
    for channels in (2, 8, 32):
        runs = [per_frame_us(channels, args.nodes) for _ in range(args.repeat)]
        print(
            f"meter frame, {channels} channels, {args.nodes} nodes at 10 Hz: median {statistics.median(runs):.2f} us "
            f"(min {min(runs):.2f}); containers made per frame: {containers_per_frame(channels):.2f}"
        )
    print(f"a minute's end with every node's minute open ({args.nodes} nodes, 8 channels): {minute_end_ms(args.nodes):.1f} ms")
    database_figures("sqlite", None, args.nodes, args.repeat)
    if args.postgres:
        database_figures("postgresql", args.postgres, args.nodes, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
