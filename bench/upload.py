"""Recording upload from node to hub: the node's real uploader against a plain ``curl --upload-file``.

What is measured
----------------
One hub, one enrolled node, one WAV file of ``--size-mb`` MB (10^6 bytes; default 200) on disk.
Each round uploads the file twice to the hub's ``PUT /api/v1/recordings/{rid}/cache-file``, each
time for a fresh recording whose job the bench has claimed as the node
(``POST /api/v1/nodes/{id}/recording-jobs/claim-next``) and moved to ``uploading`` with a job
heartbeat carrying the capture's ``recording`` fields, as the node does when capture ends:

* ``node``: the node's own ``RecordingClient.upload`` (node/recording_client.py: a ``HEAD`` for
  the offset, then 64 MiB PUTs (``UPLOAD_CHUNK_BYTES``) streamed in 256 KiB reads through Tornado's HTTP client) in a
  child process of its own, with the progress callback the node's job runner passes (one job
  heartbeat after each chunk, whose time is shown apart). Before the upload the child computes the file's sha256 with the
  node's ``file_sha256``, timed separately (the node does it when it finalizes a recording, not
  during the upload). The upload time is from the call to its return, in the child.
* ``curl``: ``curl --upload-file <file> -X PUT`` with ``Content-Range: bytes 0-N/total``,
  ``X-Content-SHA256``, ``X-Lease-Epoch`` and the node's bearer credential: the whole file in
  one PUT (the hub takes chunks of up to 4 GiB, so one PUT is allowed). Its time is curl's own
  ``%{time_total}``.

Both end with the hub's final-chunk work (the whole file's sha256 check, fsync, move into
storage, the database update), so both figures are what a node waits for. After each upload
the recording is read back: it must be ``completed`` with the file's size and sha256; it is then
deleted (``DELETE /api/v1/recordings/{rid}``) to keep the disk use to one copy.

Memory: a thread here samples the node child's RSS (psutil) every 50 ms; the table shows its
RSS just before the upload (after the imports and the sha256, the baseline), the largest
sample during the upload, and the kernel's high-water mark (``VmHWM``) at the end of the upload
(it catches peaks between samples; it covers the child's whole life, sha256 included).

CPU: the hub's utime + stime from ``/proc`` over each upload (% of one core; its main thread,
the asyncio loop, and its other threads, where it hashes and writes on executors), the
client's (the node child's over the upload, or curl's whole process), and how busy the whole
machine was (other work on a shared machine makes the figures noisy).

``--repeat`` rounds (default 3) alternate the order (node first, then curl first, ...); the
summary gives the best and the median MB/s of each and their ratios node / curl.

How
---
The hub is a real ``python -m hark_fleet.hub run`` (SQLite, embedded MQTT broker, temporary data
directory, free ports, ``HARK_LOG_LEVEL=WARNING``, ``HARK_JOB_LEASE_TIMEOUT_S=3600`` so that the
lease reaper never interferes), started, awaited and stopped with bench/hub_http.py's helpers;
the node is enrolled with ``POST /api/v1/nodes/enroll``. The file is a valid WAV header
(48 kHz, 24 bit, stereo) followed by random bytes, written to the same temporary directory,
so it is in the page cache for both uploads. Everything talks over loopback.

Run it from the repository root::

    .venv/bin/python bench/upload.py [--size-mb 200] [--repeat 3] [--node-chunk-mib 64]

``--node-chunk-mib`` is for diagnosis: it sets the node's bytes per PUT in the child
(``UPLOAD_CHUNK_BYTES``, 64 MiB by default) to see what the chunking costs.

The hub, the node child and curl are stopped at the end, also on Ctrl-C, SIGTERM or an error,
and the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hub_http  # noqa: E402
from hark_fleet.node.recording_client import READ_BYTES, UPLOAD_CHUNK_BYTES, file_sha256  # noqa: E402
from hub_http import (  # noqa: E402
    HOST,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    free_port,
    log_tail,
    start_process,
    stop_process,
    wait_for_200,
)
from report import TextTable, pct, print_report  # noqa: E402
from rounds import machine_busy_s, thread_cpu_s  # noqa: E402

TITLE = "hark recording upload benchmark (node -> hub)"
MB = 1_000_000
MIB = 1024 * 1024
SAMPLE_INTERVAL_S = 0.05
BASELINE_SETTLE_S = 0.3  # the child idles this long before the upload, so the baseline has samples
UPLOAD_TIMEOUT_S = 1800.0
SAMPLE_RATE, CHANNELS, BIT_DEPTH = 48000, 2, 24

# The node side, run as `python -c` from the repository root: only the node's modules are imported,
# so its memory is that of a process doing the node's upload. It reads its job as one JSON line on
# stdin, reports events as JSON lines on stdout, and waits for "go" before the upload.
NODE_CHILD_SOURCE = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path

    from hark_fleet.node.hub_client import HubClient
    import hark_fleet.node.recording_client
    from hark_fleet.node.errors import HubRejected, HubUnreachable
    from hark_fleet.node.recording_client import ClaimedJob, RecordingClient, StaleLease, file_sha256


    def memory():
        out = {}
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    out[name] = int(value.split()[0]) * 1024
        return out


    def emit(event, **fields):
        print(json.dumps({"event": event, "t": time.monotonic(), **memory(), **fields}), flush=True)


    async def main():
        spec = json.loads(sys.stdin.readline())
        path = Path(spec["path"])
        hark_fleet.node.recording_client.UPLOAD_CHUNK_BYTES = spec["chunk_bytes"]  # the node's own value unless --node-chunk-mib
        loop = asyncio.get_running_loop()
        started, cpu = time.perf_counter(), time.process_time()
        sha256 = await loop.run_in_executor(None, file_sha256, path)
        emit("sha256", seconds=time.perf_counter() - started, cpu_s=time.process_time() - cpu, sha256=sha256)
        await asyncio.sleep(spec["settle_s"])
        emit("ready")
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        hub = HubClient(spec["base_url"], spec["node_id"], spec["credential"])
        client = RecordingClient(hub)
        job = ClaimedJob(spec["job"], spec["recording"])
        beats, beat_s, refused = 0, 0.0, []

        async def progress(sent, total):
            # What the node's job runner passes (NodeJobs._beat): one job heartbeat per chunk, whose
            # refusals do not stop the upload. StaleLease is caught here too (the runner lets it out).
            nonlocal beats, beat_s
            beats += 1
            started = time.perf_counter()
            try:
                await client.heartbeat(job, "uploading", {"bytes": sent, "total": total})
            except (HubUnreachable, HubRejected, StaleLease) as err:
                refused.append(f"after byte {sent}/{total}: {type(err).__name__} {err}")
            beat_s += time.perf_counter() - started

        emit("upload_start")
        started, cpu = time.perf_counter(), time.process_time()
        await client.upload(job, path, sha256, progress)
        seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        emit("upload_end", seconds=seconds, cpu_s=cpu_s, heartbeats=beats, heartbeat_s=beat_s, refused=refused)
        hub.close()


    asyncio.run(main())
    """
)


# -- the hub's API, as the admin and as the node ---------------------------------------------


def api(port: int, method: str, path: str, token: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    """One JSON request (setup and checks only)."""
    headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        payload = err.read()
        with contextlib.suppress(ValueError):
            return err.code, json.loads(payload)
        return err.code, payload.decode(errors="replace")


def expect(status: int, payload: Any, wanted: int, what: str) -> Any:
    if status != wanted:
        raise RuntimeError(f"{what} answered HTTP {status}: {payload}")
    return payload


@dataclass(frozen=True, slots=True)
class Claimed:
    """A fresh recording whose job the node holds, in `uploading`."""

    recording: dict[str, Any]
    job: dict[str, Any]

    @property
    def rid(self) -> str:
        return str(self.recording["id"])

    @property
    def lease_epoch(self) -> int:
        return int(self.job["lease_epoch"])


def recording_fields(size: int) -> dict[str, Any]:
    """The `recording` object the node sends with its first `uploading` heartbeat."""
    frames = (size - 44) // (CHANNELS * BIT_DEPTH // 8)
    now = time.time()
    duration = frames / SAMPLE_RATE
    iso = lambda at: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + "Z"  # noqa: E731
    return {
        "started_at": iso(now - duration),
        "ended_at": iso(now),
        "duration_s": duration,
        "sample_rate": SAMPLE_RATE,
        "channels": CHANNELS,
        "bit_depth": BIT_DEPTH,
        "format": "wav",
        "integrity": {"frames_written": frames, "gaps": []},
        "interrupted": False,
        "time_quality": "unsynced",
    }


def claim_fresh(port: int, admin: str, node_id: str, credential: str, name: str, size: int) -> Claimed:
    """Start a recording as the admin, claim its job as the node and move it to `uploading`."""
    created = expect(
        *api(port, "POST", "/api/v1/recordings", admin, {"node_id": node_id, "name": name}), 201, "POST /recordings"
    )["data"]
    status, payload = api(port, "POST", f"/api/v1/nodes/{node_id}/recording-jobs/claim-next", credential, {})
    data = expect(status, payload, 200, "claim-next")["data"]
    if data["recording"]["id"] != created["recording"]["id"]:
        raise RuntimeError(f"claim-next handed out {data['recording']['id']}, not the new {created['recording']['id']}")
    job = data["job"]
    beat = {"lease_epoch": job["lease_epoch"], "state": "uploading", "progress": {"bytes": 0, "total": size}}
    beat["recording"] = recording_fields(size)
    expect(*api(port, "POST", f"/api/v1/recording-jobs/{job['id']}/heartbeat", credential, beat), 200, "job heartbeat")
    return Claimed(data["recording"], job)


def check_and_delete(port: int, admin: str, rid: str, size: int, sha256: str) -> None:
    """The recording is completed with the file's size and sha256; then delete it (disk space)."""
    recording = expect(*api(port, "GET", f"/api/v1/recordings/{rid}", admin), 200, "GET /recordings/{id}")["data"]
    recording = recording.get("recording", recording)
    got = (recording.get("status"), recording.get("size_bytes"), recording.get("sha256"))
    if got != ("completed", size, sha256):
        raise RuntimeError(f"recording {rid} ended as {got}, expected ('completed', {size}, {sha256})")
    status, payload = api(port, "DELETE", f"/api/v1/recordings/{rid}", admin)
    if status != 204:
        print(f"  (could not delete recording {rid}: HTTP {status} {payload})", flush=True)


# -- the file --------------------------------------------------------------------------------


def write_wav(path: Path, size: int) -> None:
    """A valid 48 kHz / 24 bit / stereo WAV header, then random sample bytes, `size` bytes in all."""
    align = CHANNELS * BIT_DEPTH // 8
    data_len = (size - 44) // align * align
    header = b"RIFF" + struct.pack("<I", 36 + data_len) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, CHANNELS, SAMPLE_RATE, SAMPLE_RATE * align, align, BIT_DEPTH)
    header += b"data" + struct.pack("<I", data_len)
    with open(path, "wb") as out:
        out.write(header)
        left = data_len
        while left > 0:
            piece = os.urandom(min(4 * MIB, left))
            out.write(piece)
            left -= len(piece)
        out.write(b"\0" * (size - 44 - data_len))  # pad to the exact size asked (a few bytes at most)


# -- measurements ----------------------------------------------------------------------------


@dataclass
class CpuWindow:
    """CPU seconds of the hub (per thread) and of the machine, at the start of a window."""

    at: float
    hub: dict[int, float]
    machine: tuple[float, float] | None

    @classmethod
    def now(cls, hub_pid: int) -> CpuWindow:
        return cls(time.monotonic(), thread_cpu_s(hub_pid), machine_busy_s())

    def since(self, hub_pid: int) -> tuple[float, float, float | None]:
        """(hub loop %, hub other threads %, machine busy % of all cores) since this snapshot."""
        after, machine, wall = thread_cpu_s(hub_pid), machine_busy_s(), time.monotonic() - self.at
        deltas = {tid: after[tid] - self.hub.get(tid, 0.0) for tid in after}
        loop = deltas.pop(hub_pid, 0.0)
        busy = None
        if machine and self.machine and machine[1] > self.machine[1]:
            busy = 100 * (machine[0] - self.machine[0]) / (machine[1] - self.machine[1])
        return 100 * loop / wall, 100 * sum(deltas.values()) / wall, busy


@dataclass
class Result:
    """One upload."""

    who: str
    round: int
    seconds: float
    size: int
    hub_loop_pct: float
    hub_other_pct: float
    machine_pct: float | None
    client_cpu_s: float
    notes: list[str] = field(default_factory=list)
    # node only
    sha256_s: float | None = None
    rss_baseline: int | None = None
    rss_peak_sampled: int | None = None
    rss_hwm: int | None = None
    samples: int = 0
    heartbeat_s: float = 0.0  # of `seconds`, spent in the job heartbeats between chunks
    refused: list[str] = field(default_factory=list)  # job heartbeats the hub refused during the upload

    @property
    def mb_s(self) -> float:
        return self.size / MB / self.seconds if self.seconds > 0 else 0.0


class RssSampler(threading.Thread):
    """Samples one process's RSS every SAMPLE_INTERVAL_S until stopped or the process is gone."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.samples.append((time.monotonic(), self.process.memory_info().rss))
            except psutil.Error:
                return
            self.halt.wait(SAMPLE_INTERVAL_S)

    def between(self, start: float, end: float) -> list[int]:
        return [rss for at, rss in self.samples if start <= at <= end]


class Bench:
    def __init__(self, args: argparse.Namespace, temp_dir: Path) -> None:
        self.args = args
        self.temp_dir = temp_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.hub: subprocess.Popen[bytes] | None = None
        self.hub_log = temp_dir / "hub.log"
        self.port = 0
        self.admin = ""
        self.node_id = ""
        self.credential = ""
        self.path = temp_dir / "recording.wav"
        self.size = 0
        self.sha256 = ""
        self.chunk_bytes = int(args.node_chunk_mib * MIB) if args.node_chunk_mib else UPLOAD_CHUNK_BYTES

    # -- setup --

    def start_hub(self) -> None:
        self.port, mqtt_port = free_port(), free_port()
        password = secrets.token_urlsafe(24)
        env = dict(
            os.environ,
            HARK_DATA_DIR=str(self.temp_dir / "hub"),
            HARK_HTTP_HOST=HOST,
            HARK_HTTP_PORT=str(self.port),
            HARK_EMBEDDED_MQTT_BIND=f"{HOST}:{mqtt_port}",
            HARK_ADMIN_PASSWORD=password,
            HARK_LOG_LEVEL="WARNING",
            HARK_JOB_LEASE_TIMEOUT_S="3600",
        )
        self.hub = start_process([sys.executable, "-m", "hark_fleet.hub", "run"], env, self.hub_log)
        self.processes.append(self.hub)
        try:
            wait_for_200(self.port, "/readyz", self.hub, READY_TIMEOUT_S)
        except RuntimeError as err:
            raise RuntimeError(f"hub: {err}\n{log_tail(self.hub_log)}") from None
        status, payload = hub_http.http_request(self.port, "/api/v1/auth/login", body={"username": "admin", "password": password})
        self.admin = expect(status, payload, 200, "login")["data"]["token"]

    def enroll(self) -> None:
        body = {"name": "bench-upload-node", "site": None}
        data = expect(*api(self.port, "POST", "/api/v1/nodes/enroll", self.admin, body), 201, "enroll")["data"]
        self.node_id, self.credential = data["node"]["id"], data["credential"]

    def make_file(self) -> float:
        self.size = int(self.args.size_mb * MB)
        write_wav(self.path, self.size)
        started = time.perf_counter()
        self.sha256 = file_sha256(self.path)
        return time.perf_counter() - started

    def check_hub(self) -> None:
        if self.hub is not None and self.hub.poll() is not None:
            raise RuntimeError(f"the hub exited with code {self.hub.returncode}\n{log_tail(self.hub_log)}")

    # -- the two uploads --

    def upload_node(self, round_no: int) -> Result:
        assert self.hub is not None
        claimed = claim_fresh(self.port, self.admin, self.node_id, self.credential, f"node upload {round_no}", self.size)
        child = subprocess.Popen(
            [sys.executable, "-c", NODE_CHILD_SOURCE],
            cwd=hub_http.REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.temp_dir / f"node-{round_no}.log", "wb"),  # noqa: SIM115 - closed with the process
            start_new_session=True,
        )
        self.processes.append(child)
        assert child.stdin is not None and child.stdout is not None
        sampler = RssSampler(child.pid)
        sampler.start()
        try:
            spec = {
                "path": str(self.path),
                "base_url": f"http://{HOST}:{self.port}",
                "node_id": self.node_id,
                "credential": self.credential,
                "job": claimed.job,
                "recording": claimed.recording,
                "settle_s": BASELINE_SETTLE_S,
                "chunk_bytes": self.chunk_bytes,
            }
            child.stdin.write(json.dumps(spec).encode() + b"\n")
            child.stdin.flush()
            events: dict[str, dict[str, Any]] = {}
            window: CpuWindow | None = None
            deadline = time.monotonic() + UPLOAD_TIMEOUT_S
            while "upload_end" not in events:
                line = child.stdout.readline()
                if not line or time.monotonic() > deadline:
                    child.wait(5)
                    log = log_tail(self.temp_dir / f"node-{round_no}.log")
                    raise RuntimeError(f"the node child ended (code {child.returncode}) before the upload finished\n{log}")
                event = json.loads(line)
                events[event["event"]] = event
                if event["event"] == "ready":
                    window = CpuWindow.now(self.hub.pid)
                    child.stdin.write(b"go\n")
                    child.stdin.flush()
            assert window is not None
            hub_loop, hub_other, machine = window.since(self.hub.pid)
            child.wait(30)
        finally:
            sampler.halt.set()
            sampler.join(5)
        if events["sha256"]["sha256"] != self.sha256:
            raise RuntimeError("the node's file_sha256 disagrees with this process's")
        start, end = events["upload_start"], events["upload_end"]
        during = sampler.between(start["t"], end["t"])
        self.check_hub()
        check_and_delete(self.port, self.admin, claimed.rid, self.size, self.sha256)
        chunks = -(-self.size // self.chunk_bytes)
        return Result(
            "node",
            round_no,
            end["seconds"],
            self.size,
            hub_loop,
            hub_other,
            machine,
            end["cpu_s"],
            notes=[
                f"{chunks} PUT + {end['heartbeats']} HB ({end['heartbeat_s']:.2f} s"
                + (f", {len(end['refused'])} refused)" if end["refused"] else ")")
            ],
            heartbeat_s=end["heartbeat_s"],
            refused=end["refused"],
            sha256_s=events["sha256"]["seconds"],
            rss_baseline=start["VmRSS"],
            rss_peak_sampled=max(during, default=None),
            rss_hwm=end["VmHWM"],
            samples=len(during),
        )

    def upload_curl(self, round_no: int) -> Result:
        assert self.hub is not None
        claimed = claim_fresh(self.port, self.admin, self.node_id, self.credential, f"curl upload {round_no}", self.size)
        body_path = self.temp_dir / f"curl-{round_no}.json"
        command = [
            "curl",
            "--silent",
            "--show-error",
            "--upload-file",
            str(self.path),
            "-X",
            "PUT",
            "-H",
            f"Authorization: Bearer {self.credential}",
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            f"Content-Range: bytes 0-{self.size - 1}/{self.size}",
            "-H",
            f"X-Content-SHA256: {self.sha256}",
            "-H",
            f"X-Lease-Epoch: {claimed.lease_epoch}",
            "-o",
            str(body_path),
            "-w",
            "%{http_code} %{time_total} %{time_starttransfer}",
            f"http://{HOST}:{self.port}/api/v1/recordings/{claimed.rid}/cache-file",
        ]
        window = CpuWindow.now(self.hub.pid)
        curl = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
        self.processes.append(curl)
        _, wait_status, usage = os.wait4(curl.pid, 0)
        curl.returncode = os.waitstatus_to_exitcode(wait_status)
        hub_loop, hub_other, machine = window.since(self.hub.pid)
        assert curl.stdout is not None
        written = curl.stdout.read().decode().split()
        curl.stdout.close()
        if curl.returncode != 0 or not written or written[0] != "200":
            body = body_path.read_text(errors="replace") if body_path.exists() else ""
            raise RuntimeError(f"curl exited {curl.returncode}, wrote {written}: {body[:500]}")
        self.check_hub()
        check_and_delete(self.port, self.admin, claimed.rid, self.size, self.sha256)
        return Result(
            "curl",
            round_no,
            float(written[1]),
            self.size,
            hub_loop,
            hub_other,
            machine,
            usage.ru_utime + usage.ru_stime,
            notes=["1 PUT"],
        )

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(OSError):
                stop_process(process, STOP_TIMEOUT_S)


# -- report ----------------------------------------------------------------------------------


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f}"


def report(bench: Bench, results: list[Result], sha_here_s: float) -> None:
    rows = []
    for r in results:
        rows.append(
            [
                str(r.round),
                r.who,
                f"{r.seconds:.2f}",
                f"{r.mb_s:.1f}",
                pct(r.hub_loop_pct),
                pct(r.hub_other_pct),
                pct(100 * r.client_cpu_s / r.seconds if r.seconds > 0 else None),
                pct(r.machine_pct),
                _mib(r.rss_baseline),
                _mib(r.rss_peak_sampled),
                _mib(r.rss_hwm),
                "; ".join(r.notes),
            ]
        )
    columns = [
        "round",
        "client",
        "seconds",
        "MB/s",
        "hub loop CPU",
        "hub other CPU",
        "client CPU",
        "machine busy",
        "RSS before MiB",
        "RSS peak MiB",
        "VmHWM MiB",
        "requests",
    ]
    node = [r.mb_s for r in results if r.who == "node"]
    curl = [r.mb_s for r in results if r.who == "curl"]
    nodes = [r for r in results if r.who == "node"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b > 0 else "n/a"

    summary = [
        ["node MB/s", f"{max(node):.1f}", f"{statistics.median(node):.1f}"],
        ["curl MB/s", f"{max(curl):.1f}", f"{statistics.median(curl):.1f}"],
        ["ratio node / curl", ratio(max(node), max(curl)), ratio(statistics.median(node), statistics.median(curl))],
        [
            "node upload s in job heartbeats",
            f"{min(r.heartbeat_s for r in nodes):.2f}",
            f"{statistics.median(r.heartbeat_s for r in nodes):.2f}",
        ],
        [
            "node sha256 s (file_sha256)",
            f"{min(r.sha256_s or 0 for r in nodes):.2f}",
            f"{statistics.median(r.sha256_s or 0 for r in nodes):.2f}",
        ],
        [
            "node RSS before upload MiB",
            _mib(min(r.rss_baseline or 0 for r in nodes)),
            _mib(int(statistics.median(r.rss_baseline or 0 for r in nodes))),
        ],
        [
            "node RSS peak during upload MiB",
            _mib(max((r.rss_peak_sampled or 0) for r in nodes)),
            _mib(int(statistics.median((r.rss_peak_sampled or 0) for r in nodes))),
        ],
    ]
    tables: list[TextTable] = [
        ("uploads (in run order)", columns, rows, 2),
        (f"summary over {len(node)} round(s)", ["", "best", "median"], summary, 1),
    ]
    cpu_count = os.cpu_count() or 1
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    import tornado

    curl_version = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0].split(" (")[0]
    context = [
        ("machine", f"{platform.machine()} {platform.system()} {platform.release()}"),
        (
            "CPUs",
            f"{cpu_count} (usable by this process: {usable}); load average at the end " + (f"{load[0]:.2f}" if load else "n/a"),
        ),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}; tornado {tornado.version}; {curl_version}"),
        ("file", f"{bench.size:,} bytes ({bench.size / MB:g} MB) WAV, in the page cache; sha256 here {sha_here_s:.2f} s"),
        (
            "node",
            f"RecordingClient.upload in its own process: {bench.chunk_bytes / MIB:g} MiB PUTs"
            + (
                f" (--node-chunk-mib; the node's: {UPLOAD_CHUNK_BYTES / MIB:g} MiB)"
                if bench.chunk_bytes != UPLOAD_CHUNK_BYTES
                else ""
            )
            + f", {READ_BYTES // 1024} KiB reads, a job heartbeat per chunk; RSS sampled every {SAMPLE_INTERVAL_S * 1000:.0f} ms",
        ),
        ("curl", "curl --upload-file -X PUT, the whole file in one PUT, time_total"),
        ("hub", "python -m hark_fleet.hub run, SQLite, embedded broker, loopback; CPU in % of one core over each upload"),
        ("units", "MB = 10^6 bytes, MiB = 2^20 bytes; HB = job heartbeat"),
    ]
    notes = []
    busy = [r.machine_pct for r in results if r.machine_pct is not None]
    if busy and max(busy) > 100 * 1.6 / cpu_count:
        notes.append(
            f"the machine was up to {max(busy):.0f} % busy (all {cpu_count} cores) during an upload: "
            "other work shares it, so the figures are noisy"
        )
    refused = sorted(
        {line.split(": ", 1)[1].split(" POST ")[0] + " " + line.rsplit(": ", 1)[1] for r in nodes for line in r.refused}
    )
    if refused:
        notes.append(
            "node: the job heartbeat after the final chunk was refused in "
            f"{sum(1 for r in nodes if r.refused)}/{len(nodes)} uploads ({'; '.join(refused)}): the final PUT "
            "completes the job, so the progress callback's heartbeat finds it no longer active; the node's job "
            "runner lets that StaleLease out of the upload (this bench catches it)"
        )
    print_report(context, tables, notes, title=TITLE)


# -- main ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, hub_http._raise_keyboard_interrupt)  # a SIGTERM cleans up like Ctrl-C
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-upload-"))
    bench = Bench(args, temp_dir)
    try:
        if shutil.which("curl") is None:
            raise RuntimeError("curl is not installed")
        print("starting the hub ...", flush=True)
        bench.start_hub()
        print("enrolling a node ...", flush=True)
        bench.enroll()
        print(f"writing a {args.size_mb:g} MB WAV file ...", flush=True)
        sha_here_s = bench.make_file()
        results: list[Result] = []
        for round_no in range(1, args.repeat + 1):
            order = ("node", "curl") if round_no % 2 else ("curl", "node")
            for who in order:
                print(f"round {round_no}/{args.repeat}: {who} upload ...", flush=True)
                result = bench.upload_node(round_no) if who == "node" else bench.upload_curl(round_no)
                extra = ""
                if who == "node":
                    extra = (
                        f", sha256 {result.sha256_s:.2f} s, RSS {_mib(result.rss_baseline)} -> "
                        f"peak {_mib(result.rss_peak_sampled)} MiB"
                    )
                print(
                    f"  {result.seconds:.2f} s, {result.mb_s:.1f} MB/s, hub CPU "
                    f"{result.hub_loop_pct + result.hub_other_pct:.0f} %{extra}; verified completed",
                    flush=True,
                )
                results.append(result)
        print()
        report(bench, results, sha_here_s)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        # Cleanup is bounded; do not let a second Ctrl-C cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.stop_all()
        shutil.rmtree(temp_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Upload throughput of a recording from node to hub, against curl.")
    parser.add_argument("--size-mb", type=float, default=200.0, help="the file's size in MB (10^6 bytes; default 200)")
    parser.add_argument(
        "--node-chunk-mib",
        type=float,
        default=None,
        help=f"diagnosis: the node's bytes per PUT (default its own, {UPLOAD_CHUNK_BYTES // MIB} MiB)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds of node + curl, order alternating (default 3)")
    args = parser.parse_args(argv)
    if args.size_mb < 0.001 or args.repeat < 1 or (args.node_chunk_mib is not None and args.node_chunk_mib * MIB < 1):
        parser.error("--size-mb must be at least 0.001, --repeat at least 1 and --node-chunk-mib at least one byte")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
