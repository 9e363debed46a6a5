"""Off-site upload throughput (issue 20): the hub's upload runner against boto3's own one-call upload, to moto's S3 server.

What is measured
----------------
A real hub (``python -m hark_fleet.hub run``, SQLite, temporary data dir) holds one recording file of
``--size-mb`` MiB of random bytes (default 500) in its storage; an ``s3`` upload provider points at a
local moto server (``python -m moto.server`` on loopback, a free port). Each round uploads that file
twice, in alternating order:

* ``runner``: a fresh Recording row sharing the stored file is queued to the provider
  (``POST /api/v1/recordings/{id}/upload-queue``, then ``POST /api/v1/upload-runner/run``); the hub's
  runner claims it and its S3 provider does the multipart upload (8 MiB parts with SHA-256 checksums,
  3 in flight, the whole file re-hashed and compared before completing). The time is the item's own,
  ``synced_at - started_at`` (from the claim to the verified copy recorded); the wall time from the
  enqueue request to seeing it synced is shown too.
* ``boto3``: ``boto3.client("s3").upload_file`` of the same file with its default ``TransferConfig``
  (8 MiB parts, 10 threads), in this process, timed around the call.

Each object is deleted after its round. The table gives MB/s per upload, the medians with their
spread (min-max) and the ratio runner / boto3 of the medians (target >= 0.8).

Memory: a thread samples the hub process's RSS (psutil) every 50 ms. For each runner upload it shows
the RSS just before the enqueue (the baseline) and the largest sample during the upload; one more
upload of a ``--small-mb`` file (default 50) shows the peak growth does not depend on the file's size.
The load average is printed before and after.

Run it from the repository root::

    .venv/bin/python bench/offsite.py [--size-mb 500] [--rounds 3] [--small-mb 50]

Needs moto[server], boto3 and psutil (the dev and hub extras). The hub and moto are stopped at the end,
also on Ctrl-C or an error, and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_http import HOST, READY_TIMEOUT_S, free_port, http_request, log_tail, start_process, stop_process, wait_for_200  # noqa: E402
from report import print_report  # noqa: E402

TITLE = "hark off-site upload benchmark (hub runner -> S3, against boto3 upload_file)"
MIB = 1024 * 1024
MB = 1_000_000
BUCKET = "hark-offsite-bench"
ACCESS_KEY, SECRET_KEY, REGION = "bench", "bench-secret", "us-east-1"
SAMPLE_S = 0.05
POLL_S = 0.5  # how often the queue is asked whether the upload is done (the times are the item's own)
UPLOAD_TIMEOUT_S = 1800.0


@dataclass
class Upload:
    round: int
    who: str
    size: int
    seconds: float
    wall_s: float | None = None
    rss_before: int | None = None
    rss_peak: int | None = None
    cpu_s: float | None = None  # the uploading process's CPU (user + system) over the upload

    @property
    def mb_s(self) -> float:
        return self.size / MB / self.seconds if self.seconds > 0 else 0.0


class RssSampler:
    """The largest RSS of a process since `reset()`, sampled every SAMPLE_S on a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    def cpu_s(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def reset(self) -> int:
        with self._lock:
            self.peak = self.now()
            return self.peak

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                rss = self.now()
            except psutil.Error:
                return
            with self._lock:
                self.peak = max(self.peak, rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )


def write_random(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(8 * MIB, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


class Bench:
    def __init__(self, workdir: Path, hub_port: int, token: str, endpoint: str) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "hub"
        self.port = hub_port
        self.token = token
        self.endpoint = endpoint
        self.node_id = ""
        self.provider_id = ""

    def api(self, path: str, body: Any = None) -> Any:
        status, payload = http_request(self.port, path, body=body, token=self.token, timeout=30)
        if status >= 300:
            raise RuntimeError(f"{path}: HTTP {status}: {payload}")
        return payload["data"] if isinstance(payload, dict) else payload

    def setup(self) -> None:
        from hark_fleet.hub.db.database import open_database
        from hark_fleet.hub.db.models import UploadProvider, database_proxy
        from hark_fleet.hub.ids import new_id
        from hark_fleet.hub.secret_box import SecretBox

        self.api("/api/v1/sites", {"id": "bench", "name": "bench", "time_zone": "UTC"})
        self.node_id = self.api("/api/v1/nodes/enroll", {"name": "bench-box", "site": "bench"})["node"]["id"]
        self.provider_id = new_id("upp")
        config = {
            "endpoint_url": self.endpoint,
            "region": REGION,
            "bucket": BUCKET,
            "path_style": True,
            "access_key_id": ACCESS_KEY,
        }
        sealed = SecretBox.open_dir(self.data_dir).seal({"secret_access_key": SECRET_KEY}, f"upload_provider:{self.provider_id}")
        db = open_database(None, self.data_dir)
        database_proxy.initialize(db)
        with db.connection_context():
            UploadProvider.create(
                id=self.provider_id,
                name="bench moto",
                kind="s3",
                config=config,
                sealed_secrets=sealed,
                secret_names=["secret_access_key"],
                max_concurrency=1,
            )
        db.close()

    def stored_file(self, name: str, size: int) -> tuple[str, str, int]:
        """A file in the hub's storage: its key, sha256 and size."""
        key = f"bench/{self.node_id}/{name}.wav"
        sha256 = write_random(self.data_dir / "recordings" / key, size)
        return key, sha256, size

    def recording(self, stored: tuple[str, str, int]) -> str:
        from hark_fleet.hub.clock import utcnow
        from hark_fleet.hub.db.database import open_database
        from hark_fleet.hub.db.models import Recording, database_proxy
        from hark_fleet.hub.ids import new_id

        key, sha256, size = stored
        recording_id = new_id("rec")
        db = open_database(None, self.data_dir)
        database_proxy.initialize(db)
        now = utcnow()
        with db.connection_context():
            Recording.create(
                id=recording_id,
                node_id=self.node_id,
                site="bench",
                name="bench",
                status="completed",
                format="wav",
                sample_rate=48000,
                bit_depth=24,
                channels=2,
                started_at=now,
                ended_at=now,
                size_bytes=size,
                sha256=sha256,
                storage_key=key,
                legal_hold=False,
            )
        db.close()
        return recording_id

    def runner_upload(self, stored: tuple[str, str, int], sampler: RssSampler, round_no: int) -> Upload:
        recording_id = self.recording(stored)
        rss_before = sampler.reset()
        cpu_before = sampler.cpu_s()
        began = time.monotonic()
        self.api(f"/api/v1/recordings/{recording_id}/upload-queue", {"provider_ids": [self.provider_id]})
        self.api("/api/v1/upload-runner/run", {})
        deadline = began + UPLOAD_TIMEOUT_S
        while True:
            items = self.api(f"/api/v1/upload-queue?recording_id={recording_id}")
            if items and items[0]["state"] == "synced":
                break
            if items and items[0]["state"] == "failed":
                raise RuntimeError(f"the runner's upload failed: {items[0]['last_error']}")
            if time.monotonic() > deadline:
                raise RuntimeError("the runner's upload did not finish in time")
            time.sleep(POLL_S)
        wall = time.monotonic() - began
        cpu = sampler.cpu_s() - cpu_before
        item = items[0]
        if item["checksum_sha256"] != stored[1]:
            raise RuntimeError(f"the runner's copy has sha256 {item['checksum_sha256']}, not {stored[1]}")
        seconds = (_when(item["synced_at"]) - _when(item["started_at"])).total_seconds()
        s3_client(self.endpoint).delete_object(Bucket=BUCKET, Key=item["remote_key"])
        return Upload(round_no, "runner", stored[2], seconds, wall, rss_before, sampler.peak, cpu)

    def boto3_upload(self, stored: tuple[str, str, int], round_no: int) -> Upload:
        client = s3_client(self.endpoint)
        key = f"boto3/{secrets.token_hex(6)}.wav"
        path = self.data_dir / "recordings" / stored[0]
        me = psutil.Process()
        cpu_before = sum(me.cpu_times()[:2])
        began = time.monotonic()
        client.upload_file(str(path), BUCKET, key)
        seconds = time.monotonic() - began
        cpu = sum(me.cpu_times()[:2]) - cpu_before
        size = client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
        if size != stored[2]:
            raise RuntimeError(f"boto3's copy is {size} bytes, not {stored[2]}")
        client.delete_object(Bucket=BUCKET, Key=key)
        return Upload(round_no, "boto3", stored[2], seconds, cpu_s=cpu)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / MIB:.1f}"


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def report(
    uploads: list[Upload], small: Upload | None, load_before: tuple[float, ...], load_after: tuple[float, ...], size: int
) -> None:
    rows = [
        [
            str(u.round),
            u.who,
            f"{u.size / MIB:.0f}",
            f"{u.seconds:.2f}",
            f"{u.mb_s:.1f}",
            "" if u.wall_s is None else f"{u.wall_s:.2f}",
            _mib(u.rss_before),
            _mib(u.rss_peak),
            "" if u.rss_peak is None or u.rss_before is None else _mib(u.rss_peak - u.rss_before),
            "" if u.cpu_s is None else f"{u.cpu_s / (u.size / 1e9):.1f}",
        ]
        for u in [*uploads, *([small] if small else [])]
    ]
    runner = [u.mb_s for u in uploads if u.who == "runner"]
    boto3 = [u.mb_s for u in uploads if u.who == "boto3"]
    ratio = statistics.median(runner) / statistics.median(boto3)
    growth = [u.rss_peak - u.rss_before for u in uploads if u.who == "runner" and u.rss_peak and u.rss_before]
    summary = [
        ["runner MB/s, median (min-max)", _spread(runner)],
        ["boto3 upload_file MB/s, median (min-max)", _spread(boto3)],
        ["ratio runner / boto3 (medians)", f"{ratio:.2f}x (target >= 0.8x: {'met' if ratio >= 0.8 else 'MISSED'})"],
        [f"hub RSS growth during a {size // MIB} MiB upload, max", f"{max(growth) / MIB:.1f} MiB"],
    ]
    if small is not None and small.rss_peak and small.rss_before:
        summary.append(
            [f"hub RSS growth during a {small.size // MIB} MiB upload", f"{(small.rss_peak - small.rss_before) / MIB:.1f} MiB"]
        )
    columns = ["round", "who", "MiB", "seconds", "MB/s", "wall s", "hub RSS before MiB", "hub RSS peak MiB", "growth MiB"]
    columns.append("CPU s/GB")
    context = [
        ("file", f"{size / MIB:.0f} MiB of random bytes in the hub's storage"),
        ("server", "moto (python -m moto.server) on loopback"),
        ("load average before", " ".join(f"{v:.2f}" for v in load_before)),
        ("load average after", " ".join(f"{v:.2f}" for v in load_after)),
        ("cpus", str(os.cpu_count())),
    ]
    tables = [("uploads (in run order)", columns, rows, 2), ("summary", ["", "value"], summary, 1)]
    notes = [
        "runner seconds: the item's synced_at - started_at (claim to verified copy recorded); wall s adds the enqueue, "
        "the pass and this script's polling (every 0.5 s).",
        "MB/s are 10^6 bytes per second. moto is a Python server sharing the machine's CPUs with both clients.",
        "CPU s/GB: the uploading process's user + system CPU over the upload (runner: the whole hub process; "
        "boto3: this script), per 10^9 bytes.",
    ]
    print_report(context, tables, notes, title=TITLE)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500, help="the recording's size in MiB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small-mb", type=int, default=50, help="one more runner upload of this size (0: none)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="hark-offsite-bench-"))
    processes = []
    sampler: RssSampler | None = None
    try:
        moto_port, hub_port, mqtt_port = free_port(), free_port(), free_port()
        moto = start_process(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(moto_port)], dict(os.environ), workdir / "moto.log"
        )
        processes.append(moto)
        password = secrets.token_urlsafe(18)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
        env.update(
            HARK_DATA_DIR=str(workdir / "hub"),
            HARK_HTTP_HOST=HOST,
            HARK_HTTP_PORT=str(hub_port),
            HARK_EMBEDDED_MQTT_BIND=f"{HOST}:{mqtt_port}",
            HARK_ADMIN_PASSWORD=password,
            HARK_LOG_LEVEL="WARNING",
            HARK_MDNS_INTERFACES="127.0.0.1",
            HARK_UPLOAD_PASS_INTERVAL_S="0.5",
        )
        hub = start_process([sys.executable, "-m", "hark_fleet.hub", "run"], env, workdir / "hub.log")
        processes.append(hub)
        wait_for_200(hub_port, "/readyz", hub, READY_TIMEOUT_S)
        endpoint = f"http://{HOST}:{moto_port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                s3_client(endpoint).create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or moto.poll() is not None:
                    raise
                time.sleep(0.2)
        status, payload = http_request(hub_port, "/api/v1/auth/login", body={"username": "admin", "password": password})
        if status != 200:
            raise RuntimeError(f"login: HTTP {status}: {payload}")
        bench = Bench(workdir, hub_port, payload["data"]["token"], endpoint)
        bench.setup()
        print(f"writing {args.size_mb} MiB into the hub's storage ...", flush=True)
        big = bench.stored_file("big", args.size_mb * MIB)
        sampler = RssSampler(hub.pid)
        load_before = os.getloadavg()
        print("warm-up: one small runner upload and one boto3 upload ...", flush=True)
        warm = bench.stored_file("warm", 16 * MIB)
        bench.runner_upload(warm, sampler, 0)
        bench.boto3_upload(warm, 0)
        uploads: list[Upload] = []
        for round_no in range(1, args.rounds + 1):
            order = ("runner", "boto3") if round_no % 2 else ("boto3", "runner")
            for who in order:
                print(f"round {round_no}: {who} ...", flush=True)
                upload = bench.runner_upload(big, sampler, round_no) if who == "runner" else bench.boto3_upload(big, round_no)
                uploads.append(upload)
        small = None
        if args.small_mb:
            print(f"one runner upload of {args.small_mb} MiB (memory against size) ...", flush=True)
            small = bench.runner_upload(bench.stored_file("small", args.small_mb * MIB), sampler, args.rounds + 1)
        load_after = os.getloadavg()
        report(uploads, small, load_before, load_after, args.size_mb * MIB)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - any failure is reported with the hub's log, then cleaned up
        print(f"bench failed: {err}\n--- hub log ---\n{log_tail(workdir / 'hub.log', 40)}", file=sys.stderr)
        return 1
    finally:
        if sampler is not None:
            sampler.stop()
        for process in reversed(processes):
            stop_process(process, 10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
