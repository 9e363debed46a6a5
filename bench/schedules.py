"""The schedule dispatcher of the hark hub: time to expand and dispatch 24 h for 1,000 nodes with 5 schedules each,
and the hub's API latency while it runs against while it is idle.

What is measured
----------------
A real ``hark-hub run`` process (SQLite in a fresh data directory, or ``--database-url``) with
``--nodes`` nodes on one site (Europe/Berlin, 52.5 N 13.4 E) and ``--per-node`` schedules for each node
(targeting that node), a mix a field fleet runs (``on_conflict: allow``):

* every hour for 10 minutes (24 occurrences a day),
* the dawn chorus: 30 minutes before sunrise for 2 hours (a solar anchor, 1 a day),
* weekdays 09:00 for 8 hours (1 on a weekday),
* every 4 hours for 30 minutes (6 a day),
* nightly 22:00 for an hour (1 a day),

(with ``--per-node`` above 5 the mix repeats). The rows are written straight into the hub's
database (nodes as the enroll API makes them, schedules as the schedules API stores them),
disabled; a busy round clears what an earlier round dispatched, enables them all, and waits for
the dispatcher's next pass (``HARK_SCHEDULE_DISPATCH_INTERVAL_S=1``), which expands every
schedule over the 24 h lead window and makes one occurrence row, one recording and one job per
occurrence, in batches on the database worker. The pass's own time is the figure (the hub logs
``schedule dispatch: ... in N s``), with the rows it made.

While a pass runs, and for as long again while the hub is idle, one client per endpoint
(keep-alive, one request at a time, 20 a second: paced, so the figure is latency, not a
saturated server's queue) times ``GET /healthz`` (no database),
``GET /api/v1/nodes?limit=50`` (authenticated, a database query) and, when the hub has it,
``GET /api/v1/schedules?limit=50``; the table shows p50 and p99 in milliseconds idle and busy. A
dispatcher that stalled the event loop would show in ``/healthz``; one that held the database
worker too long in the two others.

Each round is an idle window (sampled), a pass alone (no API traffic: the dispatcher's own time),
and a pass under the API load (sampled); the headlines are medians over ``--rounds`` rounds with the
spread (min-max); the load average is printed before and after.

Run it from the repository root::

    .venv/bin/python bench/schedules.py [--nodes 1000] [--per-node 5] [--rounds 3] [--database-url URL]

The hub is stopped at the end (SIGTERM), also on Ctrl-C or an error, and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hark_fleet.hub.db.database import open_database  # noqa: E402
from hark_fleet.hub.db.models import (  # noqa: E402
    Node,
    Recording,
    RecordingJob,
    Schedule,
    ScheduleOccurrence,
    Site,
    database_proxy,
)
from hark_fleet.hub.processes import free_port, stop_process  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SITE = "bench-hall"
INTERVAL_S = 0.05  # each endpoint is asked 20 times a second
IDLE_S = 30.0  # the idle window of each round
PASS_LINE = re.compile(
    r"schedule dispatch: (\d+) schedules looked at, (\d+) occurrences and (\d+) jobs in ([0-9.]+) s "
    r"\((\d+) batches, median ([0-9.]+) ms, longest ([0-9.]+) ms\)"
)
# name, rrule, local start time, duration, solar anchor
MIX: tuple[tuple[str, str | None, str, int, dict[str, Any] | None], ...] = (
    ("hourly", "FREQ=HOURLY", "00:05:00", 600, None),
    ("dawn chorus", "FREQ=DAILY", "00:00:00", 7200, {"event": "sunrise", "offset_minutes": -30}),
    ("workday", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "09:00:00", 8 * 3600, None),
    ("every 4 h", "FREQ=HOURLY;INTERVAL=4", "02:30:00", 1800, None),
    ("nightly", "FREQ=DAILY", "22:00:00", 3600, None),
)


# -- the hub ---------------------------------------------------------------------------------------------


def start_hub(
    data_dir: Path, log_path: Path, password: str, database_url: str | None, switch_interval: float | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
    env.update(
        HARK_DATA_DIR=str(data_dir),
        HARK_HTTP_HOST=HOST,
        HARK_HTTP_PORT=str(port),
        HARK_EMBEDDED_MQTT_BIND=f"{HOST}:{free_port()}",
        HARK_ADMIN_PASSWORD=password,
        HARK_LOG_LEVEL="INFO",
        HARK_MDNS_INTERFACES="off",
        HARK_SCHEDULE_DISPATCH_INTERVAL_S="1",
    )
    if database_url:
        env["HARK_DATABASE_URL"] = database_url
    with open(log_path, "wb") as log:
        command = [sys.executable, "-m", "hark_fleet.hub", "run"]
        if switch_interval is not None:  # an experiment: the interpreter's GIL switch interval in the hub
            source = (
                f"import sys; sys.setswitchinterval({switch_interval!r}); sys.argv = ['hark-hub', 'run']; "
                "from hark_fleet.hub.cli import main; raise SystemExit(main())"
            )
            command = [sys.executable, "-c", source]
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the hub was not ready within 60 s")


def seed(nodes: int, per_node: int) -> list[str]:
    """The site, the nodes and their schedules (disabled), in the hub's database; the schedule ids."""
    day0 = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%d")
    now = datetime.now(UTC).replace(tzinfo=None)
    Site.insert(
        id=SITE, name="Bench hall", time_zone="Europe/Berlin", latitude=52.5, longitude=13.4
    ).on_conflict_ignore().execute()
    node_rows = [
        {"id": f"nod_bench{i:05d}", "name": f"bench box {i}", "site": SITE, "tags": [], "status": "online", "created_at": now}
        for i in range(nodes)
    ]
    schedule_rows = []
    for i in range(nodes):
        for k in range(per_node):
            name, rule, at, duration, solar = MIX[k % len(MIX)]
            schedule_rows.append(
                {
                    "id": f"sch_bench{i:05d}_{k}",
                    "name": f"{name} {i}",
                    "enabled": False,
                    "target": {"node_ids": [f"nod_bench{i:05d}"]},
                    "site": SITE,
                    "time_zone": "Europe/Berlin",
                    "start_local": f"{day0}T{at}",
                    "duration_s": duration,
                    "rrule": rule,
                    "solar": solar,
                    "profile_id": "default",
                    "metadata": {"project": "bench"},
                    "on_conflict": "allow",
                    "created_by": {"type": "user", "id": "usr_bench", "name": "bench"},
                    "created_at": now,
                    "updated_at": now,
                }
            )
    with database_proxy.atomic():
        for first in range(0, len(node_rows), 500):
            Node.insert_many(node_rows[first : first + 500]).execute()
        for first in range(0, len(schedule_rows), 500):
            Schedule.insert_many(schedule_rows[first : first + 500]).execute()
    return [row["id"] for row in schedule_rows]


def clear_and_enable() -> None:
    """Forget what an earlier round dispatched, then enable every schedule (a new version: the dispatcher looks again)."""
    with database_proxy.atomic():
        RecordingJob.delete().where(RecordingJob.schedule_id.startswith("sch_bench")).execute()
        Recording.delete().where(Recording.schedule_id.startswith("sch_bench")).execute()
        ScheduleOccurrence.delete().where(ScheduleOccurrence.schedule_id.startswith("sch_bench")).execute()
        Schedule.update(enabled=True, version=Schedule.version + 1).where(Schedule.id.startswith("sch_bench")).execute()


def disable() -> None:
    Schedule.update(enabled=False).where(Schedule.id.startswith("sch_bench")).execute()


# -- latency ---------------------------------------------------------------------------------------------


class Sampler:
    """One keep-alive client per endpoint, asking every `INTERVAL_S` (or as soon as the last answer came), timing each answer."""

    def __init__(self, port: int, token: str, paths: list[str]) -> None:
        self.port, self.token, self.paths = port, token, paths
        self.samples: dict[str, list[float]] = {p: [] for p in paths}
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(p,), daemon=True) for p in paths]

    def _loop(self, path: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=f"http://{HOST}:{self.port}", headers=headers, timeout=30) as client:
            tick = time.perf_counter()
            while not self._stop.is_set():
                tick += INTERVAL_S  # paced, not flat out: a saturating client would measure throughput, not latency
                self._stop.wait(max(0.0, tick - time.perf_counter()))
                started = time.perf_counter()
                try:
                    ok = client.get(path).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                if ok:
                    self.samples[path].append(elapsed)
                else:
                    self.errors += 1
                    time.sleep(0.05)

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


Pass = tuple[int, int, int, float, int, float, float]  # schedules, occurrences, jobs, seconds, batches, median ms, longest ms


def wait_for_pass(log_path: Path, seen: int, timeout: float) -> Pass:
    """The next `schedule dispatch:` line after the first `seen` ones."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = PASS_LINE.findall(log_path.read_text(errors="replace"))
        if len(lines) > seen:
            a, b, c, d, e, f, g = lines[seen]
            return int(a), int(b), int(c), float(d), int(e), float(f), float(g)
        time.sleep(0.05)
    raise RuntimeError(f"no dispatch pass within {timeout:.0f} s")


# -- the run ---------------------------------------------------------------------------------------------


def dispatch_round(log_path: Path, seen: int, sampler: Sampler | None) -> Pass:
    """Clear, enable, and wait for the dispatcher's pass (with the API sampled, or quiet)."""
    clear_and_enable()
    if sampler is None:
        found = wait_for_pass(log_path, seen, 900)
    else:
        with sampler:
            found = wait_for_pass(log_path, seen, 900)
    disable()
    print(
        f"  {'under API load' if sampler else 'alone':14} {found[2]} jobs, {found[1]} occurrences from {found[0]} schedules "
        f"in {found[3]:.2f} s ({found[4]} batches on the database worker, median {found[5]:.1f} ms, longest {found[6]:.1f} ms)",
        flush=True,
    )
    time.sleep(2)  # a pass after disabling forgets them; the next round enables them again
    return found


def run(nodes: int, per_node: int, rounds: int, database_url: str | None, switch_interval: float | None = None) -> int:
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-bench-schedules-"))
    log_path = temp_dir / "hub.log"
    password = secrets.token_urlsafe(24)
    proc: subprocess.Popen[bytes] | None = None
    load_before = os.getloadavg()
    try:
        proc, port = start_hub(temp_dir / "data", log_path, password, database_url, switch_interval)
        token = httpx.post(f"http://{HOST}:{port}/api/v1/auth/login", json={"username": "admin", "password": password}).json()[
            "data"
        ]["token"]
        db = open_database(database_url, temp_dir / "data")
        database_proxy.initialize(db)
        print(f"seeding {nodes} nodes with {per_node} schedules each ...", flush=True)
        seed(nodes, per_node)
        paths = ["/healthz", "/api/v1/nodes?limit=50"]
        with httpx.Client(base_url=f"http://{HOST}:{port}", headers={"Authorization": f"Bearer {token}"}) as client:
            if client.get("/api/v1/schedules?limit=50").status_code == 200:
                paths.append("/api/v1/schedules?limit=50")
        alone: list[Pass] = []
        loaded: list[Pass] = []
        idle: dict[str, list[float]] = {p: [] for p in paths}
        busy: dict[str, list[float]] = {p: [] for p in paths}
        errors = 0
        seen = len(PASS_LINE.findall(log_path.read_text(errors="replace")))
        for index in range(rounds):
            print(
                f"round {index + 1}/{rounds}: idle for {IDLE_S:.0f} s, then a pass alone, then one under API load ...", flush=True
            )
            with Sampler(port, token, paths) as sampler:
                time.sleep(IDLE_S)
            errors += sampler.errors
            for p in paths:
                idle[p] += sampler.samples[p]
            alone.append(dispatch_round(log_path, seen, None))
            seen += 1
            sampler = Sampler(port, token, paths)
            loaded.append(dispatch_round(log_path, seen, sampler))
            seen += 1
            errors += sampler.errors
            for p in paths:
                busy[p] += sampler.samples[p]
        load_after = os.getloadavg()
        report(nodes, per_node, alone, loaded, idle, busy, errors, load_before, load_after, database_url)
        return 0
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def report(
    nodes: int,
    per_node: int,
    alone: list[Pass],
    loaded: list[Pass],
    idle: dict[str, list[float]],
    busy: dict[str, list[float]],
    errors: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    database_url: str | None,
) -> None:
    jobs = alone[-1][2]
    database = "PostgreSQL" if database_url else "SQLite"
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, database {database}")
    print(
        f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
        f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )
    print(f"fleet: {nodes} nodes x {per_node} schedules = {nodes * per_node} schedules; 24 h lead window")
    print(f"a dispatch pass makes {jobs} jobs + {jobs} recordings and {alone[-1][1]} occurrence rows")
    for label, passes in (("alone", alone), ("under API load", loaded)):
        seconds = [p[3] for p in passes]
        median = statistics.median(seconds)
        print(
            f"  {label:15} median {median:.2f} s (spread {min(seconds):.2f}-{max(seconds):.2f} s, {len(seconds)} rounds), "
            f"{jobs / median:.0f} jobs/s; batches median {statistics.median(p[5] for p in passes):.1f} ms, "
            f"longest {max(p[6] for p in passes):.1f} ms"
        )
    print()
    heads = ("idle p50", "idle p99", "busy p50", "busy p99")
    print(f"{'endpoint (20 requests/s each)':34} " + " ".join(f"{h:>9}" for h in heads) + f" {'n idle':>7} {'n busy':>7}")
    for path in idle:
        a, b = idle[path], busy[path]
        print(
            f"{'GET ' + path:34} {percentile(a, 0.5) * 1000:8.1f}ms {percentile(a, 0.99) * 1000:8.1f}ms "
            f"{percentile(b, 0.5) * 1000:8.1f}ms {percentile(b, 0.99) * 1000:8.1f}ms {len(a):7d} {len(b):7d}"
        )
    print(f"errors (non-200 or broken connections): {errors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--per-node", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a fresh PostgreSQL database (default: SQLite in the data dir)")
    parser.add_argument("--switch-interval", type=float, default=None, help="experiment: the hub's sys.setswitchinterval")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    return run(args.nodes, args.per_node, args.rounds, args.database_url, args.switch_interval)


if __name__ == "__main__":
    sys.exit(main())
