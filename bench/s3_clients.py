"""Which S3 client the hub's upload provider should use: boto3, minio or obstore, measured on one file (issue 20).

What is measured
----------------
A local S3-compatible server (moto's standalone server, ``python -m moto.server``, started on
loopback on a free port) gets a bucket; one file of ``--size-mb`` random bytes (default 200 MB,
in a temporary directory) is uploaded by each candidate, in alternating rounds (every candidate
once per round, the order rotated each round), ``--rounds`` rounds after one warm-up round of all:

* ``boto3-transfer``: ``upload_file`` with a ``TransferConfig`` (multipart, ``--part-mb`` parts,
  ``--threads`` threads), the library's own one-call upload;
* ``boto3-parts``: the loop a resumable runner would run: ``create_multipart_upload``
  (``ChecksumAlgorithm=SHA256``), ``upload_part`` with the part streamed from disk (a seekable
  window on the file, ``--threads`` parts in flight, a SHA-256 per part answered by the server),
  ``list_parts`` (what the runner reads back after a restart) and ``complete_multipart_upload``;
* ``boto3-presigned``: the "direct" route: boto3 opens the upload and presigns one
  ``upload_part`` URL per part (what the hub would issue), the parts go up with ``http.client``
  alone (what the node would run, no S3 library), streamed from disk, each part's ETag checked
  against its MD5, then boto3 completes the upload;
* ``minio``: ``fput_object`` with ``part_size`` ``--part-mb`` and ``--threads`` parallel uploads;
* ``obstore``: ``obstore.put`` from the file's ``Path`` with ``chunk_size`` ``--part-mb`` and
  ``max_concurrency`` ``--threads`` (its own multipart).

Each upload runs in a fresh child process (this script with ``--child``) so that its memory is
its own: the child imports the client and makes it, notes its RSS (VmRSS, with VmHWM reset to it
through ``/proc/self/clear_refs``), uploads, and reports the seconds, the peak RSS growth during
the upload (VmHWM after minus VmRSS before) and its CPU time (user + system, per GB uploaded).
The parent then checks the object (HEAD size and a streamed read-back SHA-256 against the
file's), deletes it, and prints MB/s (median of the rounds, min-max in brackets), the peak RSS
growth (median, max) and the CPU. Once per client it also times the import and the first client
construction in a fresh interpreter (median of 3) with the peak RSS after both, and sums the
installed size of the client's distribution and its dependencies. The load average is printed
before and after.

All the candidates share one server on the same machine, so the absolute MB/s is bounded by
moto (a Python server, which takes most of the 2 CPUs of a small machine); the memory and the
client's CPU per GB are the figures that carry over to AWS, MinIO or R2.

Needs (not hark dependencies; the bench only)::

    .venv/bin/pip install -q 'moto[server]' boto3 minio obstore psutil

Run it from the repository root::

    .venv/bin/python bench/s3_clients.py [--size-mb 200] [--rounds 3] [--part-mb 16] [--threads 4] [--only boto3-parts,obstore]

The server is stopped at the end (SIGTERM), also on Ctrl-C or an error, and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

CLIENTS = ("boto3-transfer", "boto3-parts", "boto3-presigned", "minio", "obstore")
MODULES = {"boto3": "boto3", "minio": "minio", "obstore": "obstore"}
ACCESS_KEY = "hark-bench"
SECRET_KEY = "hark-bench-secret"
REGION = "us-east-1"
BUCKET = "hark-bench"
MB = 1024 * 1024


# --- the child: one upload -------------------------------------------------------------------


def status_kb(field: str) -> int:
    """A KiB figure of this process from /proc/self/status (VmRSS now, VmHWM its peak).

    ``getrusage``'s ``ru_maxrss`` is no use here: Linux keeps it across ``execve``, so a child
    starts with its parent's peak; VmHWM belongs to the process's own address space.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_kb() -> int:
    """RSS now, with the peak (VmHWM) reset to it where the kernel allows, so VmHWM later is the upload's peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return status_kb("VmRSS")


def boto3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


def upload_boto3_transfer(endpoint: str, path: Path, key: str, part: int, threads: int) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig

    client = boto3_client(endpoint)
    config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=threads, use_threads=True)
    before = peak_rss_kb()
    started = time.perf_counter()
    client.upload_file(str(path), BUCKET, key, Config=config)
    return {"seconds": time.perf_counter() - started, "rss_before_kb": before}


class PartReader(io.RawIOBase):
    """One part of a file as a seekable stream, so a part is read from disk as it is sent, not held in memory."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        self._file = path.open("rb", buffering=0)
        self._start = start
        self._length = length
        self._pos = 0
        self._file.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = self._length - self._pos
        n = left if n is None or n < 0 else min(n, left)
        data = self._file.read(n) if n else b""
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        self._file.seek(self._start + self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._file.close()
        super().close()


def upload_boto3_parts(endpoint: str, path: Path, key: str, part: int, threads: int) -> dict[str, Any]:
    client = boto3_client(endpoint)
    size = path.stat().st_size
    numbers = list(range(1, (size + part - 1) // part + 1))
    before = peak_rss_kb()
    started = time.perf_counter()
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]

    def send(number: int) -> dict[str, Any]:
        start = (number - 1) * part
        with PartReader(path, start, min(part, size - start)) as body:
            answer = client.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ChecksumAlgorithm="SHA256"
            )
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": answer.get("ChecksumSHA256")}

    with ThreadPoolExecutor(threads) as pool:
        sent = list(pool.map(send, numbers))
    listed = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id, MaxParts=1000)["Parts"]
    if [p["PartNumber"] for p in listed] != numbers:
        raise RuntimeError(f"list_parts answered {len(listed)} parts, {len(numbers)} were sent")
    parts = [{k: v for k, v in p.items() if v is not None} for p in sent]
    client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    checksummed = sum(1 for p in sent if p["ChecksumSHA256"])
    return {
        "seconds": time.perf_counter() - started,
        "rss_before_kb": before,
        "note": f"{checksummed}/{len(numbers)} parts SHA-256",
    }


def put_presigned(url: str, body: PartReader, length: int) -> str:
    """PUT one part to a presigned URL with the standard library, streamed from disk; the ETag the server answers."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300, blocksize=MB)
    try:
        connection.request("PUT", f"{parsed.path}?{parsed.query}", body=body, headers={"Content-Length": str(length)})
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"presigned PUT answered {answer.status}")
        return answer.getheader("ETag", "")
    finally:
        connection.close()


def upload_boto3_presigned(endpoint: str, path: Path, key: str, part: int, threads: int) -> dict[str, Any]:
    """The direct route: boto3 (the hub) opens the upload and signs one URL per part; plain HTTP (the node) sends them."""
    client = boto3_client(endpoint)
    size = path.stat().st_size
    numbers = list(range(1, (size + part - 1) // part + 1))
    before = peak_rss_kb()
    started = time.perf_counter()
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    urls = {
        n: client.generate_presigned_url(
            "upload_part", Params={"Bucket": BUCKET, "Key": key, "UploadId": upload_id, "PartNumber": n}, ExpiresIn=900
        )
        for n in numbers
    }

    def send(number: int) -> dict[str, Any]:
        start = (number - 1) * part
        length = min(part, size - start)
        digest = hashlib.md5(usedforsecurity=False)
        with PartReader(path, start, length) as body:
            for block in iter(lambda: body.read(MB), b""):
                digest.update(block)
            body.seek(0)
            etag = put_presigned(urls[number], body, length)
        return {"PartNumber": number, "ETag": etag, "md5_ok": etag.strip('"') == digest.hexdigest()}

    with ThreadPoolExecutor(threads) as pool:
        sent = list(pool.map(send, numbers))
    parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in sent]
    client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    matched = sum(1 for p in sent if p["md5_ok"])
    return {
        "seconds": time.perf_counter() - started,
        "rss_before_kb": before,
        "note": f"{matched}/{len(numbers)} part ETags = MD5",
    }


def upload_minio(endpoint: str, path: Path, key: str, part: int, threads: int) -> dict[str, Any]:
    from minio import Minio

    host = endpoint.split("://", 1)[1]
    client = Minio(host, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, secure=False)
    before = peak_rss_kb()
    started = time.perf_counter()
    client.fput_object(BUCKET, key, str(path), part_size=part, num_parallel_uploads=threads)
    return {"seconds": time.perf_counter() - started, "rss_before_kb": before}


def obstore_store(endpoint: str) -> Any:
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def upload_obstore(endpoint: str, path: Path, key: str, part: int, threads: int) -> dict[str, Any]:
    import obstore

    store = obstore_store(endpoint)
    before = peak_rss_kb()
    started = time.perf_counter()
    obstore.put(store, key, path, use_multipart=True, chunk_size=part, max_concurrency=threads)
    return {"seconds": time.perf_counter() - started, "rss_before_kb": before}


UPLOADS = {
    "boto3-transfer": upload_boto3_transfer,
    "boto3-parts": upload_boto3_parts,
    "boto3-presigned": upload_boto3_presigned,
    "minio": upload_minio,
    "obstore": upload_obstore,
}


def child(args: argparse.Namespace) -> int:
    cpu = os.times()
    result = UPLOADS[args.child](args.endpoint, Path(args.file), args.key, args.part_mb * MB, args.threads)
    result["rss_peak_kb"] = status_kb("VmHWM")
    now = os.times()
    result["cpu_s"] = now.user + now.system - cpu.user - cpu.system  # includes making the client: small against an upload
    print(json.dumps(result), flush=True)
    return 0


# --- the parent ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("moto did not listen within 60 s")


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = secrets.token_bytes(min(left, 8 * MB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def verify(client: Any, key: str, size: int, sha256: str) -> str:
    """'ok' when the object has the file's size and SHA-256 (streamed back), else what differs."""
    head = client.head_object(Bucket=BUCKET, Key=key)
    if head["ContentLength"] != size:
        return f"size {head['ContentLength']} != {size}"
    digest = hashlib.sha256()
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    for chunk in body.iter_chunks(MB):
        digest.update(chunk)
    return "ok" if digest.hexdigest() == sha256 else "sha256 differs"


def run_upload(name: str, endpoint: str, path: Path, key: str, part_mb: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", name, "--endpoint", endpoint, "--file", str(path), "--key", key]
    command += ["--part-mb", str(part_mb), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def requirement_closure(dist_name: str) -> set[str]:
    """The distribution and everything it requires (no extras), by normalised name."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [dist_name]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def installed_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        for file in metadata.distribution(name).files or []:
            located = Path(str(file.locate()))
            if located.is_file():
                total += located.stat().st_size
    return total / MB


def import_cost(module: str, endpoint: str) -> tuple[float, float, float]:
    """Median seconds to import `module` and to make its first client in a fresh interpreter, and the RSS after (MiB)."""
    maker = {"boto3": "boto3_client(E)", "minio": "Minio('127.0.0.1:1', 'a', 'b', secure=False)", "obstore": "obstore_store(E)"}
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "t0 = time.perf_counter()\n"
        f"import {module}\n"
        "t1 = time.perf_counter()\n"
        "from s3_clients import boto3_client, obstore_store, status_kb\n"
        + ("from minio import Minio\n" if module == "minio" else "")
        + f"E = {endpoint!r}\n"
        "t2 = time.perf_counter()\n"
        f"c = {maker[module]}\n"
        "t3 = time.perf_counter()\n"
        "print(t1 - t0, t3 - t2, status_kb('VmHWM'))\n"
    )
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        runs.append((float(out[0]), float(out[1]), int(out[2]) / 1024))
    return tuple(statistics.median(r[i] for r in runs) for i in range(3))  # type: ignore[return-value]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} [{min(values):.1f} .. {max(values):.1f}]"


def run(size_mb: int, rounds: int, part_mb: int, threads: int, names: list[str]) -> int:
    import boto3
    import botocore
    import minio
    import obstore

    print("hark S3 client benchmark (issue 20)")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    print(f"  machine   {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({usable} usable)")
    print(
        f"  python    {platform.python_version()}; boto3 {boto3.__version__} (botocore {botocore.__version__}), "
        f"minio {minio.__version__}, obstore {obstore.__version__}, moto {metadata.version('moto')}"
    )
    print(f"  params    {size_mb} MB file, {part_mb} MB parts, {threads} in flight, {rounds} alternating rounds after a warm-up")
    load = os.getloadavg()
    print(f"  load      {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min) before")
    tmp = Path(tempfile.mkdtemp(prefix="hark-s3-bench-"))
    server = None
    try:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        server = start_moto(port, tmp / "moto.log")
        client = boto3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        path = tmp / "take.bin"
        size = size_mb * MB
        sha256 = make_file(path, size)
        speeds: dict[str, list[float]] = {n: [] for n in names}
        growth: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        checks: dict[str, list[str]] = {n: [] for n in names}
        notes: dict[str, str] = {}
        for i in range(rounds + 1):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                key = f"bench/{name}/{i}.bin"
                result = run_upload(name, endpoint, path, key, part_mb, threads)
                checks[name].append(verify(client, key, size, sha256))
                client.delete_object(Bucket=BUCKET, Key=key)
                if i == 0:
                    continue  # warm-up: page cache, server state
                speeds[name].append(size_mb / result["seconds"])
                cpu[name].append(result["cpu_s"] / (size / 1e9))
                growth[name].append((result["rss_peak_kb"] - result["rss_before_kb"]) / 1024)
                notes[name] = result.get("note", "")
        load = os.getloadavg()
        print(f"  load      {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min) after")
        print()
        print(f"upload of {size_mb} MB to moto on loopback (median [min .. max] over {rounds} rounds; each in a fresh process)")
        print(f"  {'client':16} {'MB/s':>26} {'peak RSS growth MiB':>22} {'client CPU s/GB':>16}  verified (HEAD size, SHA-256)")
        for name in names:
            grown = f"{statistics.median(growth[name]):7.1f} (max {max(growth[name]):.1f})"
            verified = "all ok" if all(c == "ok" for c in checks[name]) else ", ".join(checks[name])
            note = f"; {notes[name]}" if notes.get(name) else ""
            cpu_gb = f"{statistics.median(cpu[name]):.2f}"
            print(f"  {name:16} {spread(speeds[name]):>26} {grown:>22} {cpu_gb:>16}  {verified}{note}")
        print()
        print("footprint (fresh interpreter, median of 3)")
        bare = subprocess.run(
            [sys.executable, "-c", "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(f"  (a bare interpreter peaks at {int(bare) / 1024:.1f} MiB RSS)")
        print(f"  {'module':10} {'import s':>9} {'client s':>9} {'RSS MiB':>8} {'installed MiB':>14}  distributions")
        for module in sorted({n.split("-")[0] for n in names}):
            imp, make, rss = import_cost(module, endpoint)
            dists = requirement_closure(module)
            print(f"  {module:10} {imp:9.3f} {make:9.3f} {rss:8.1f} {installed_mb(dists):14.1f}  {', '.join(sorted(dists))}")
        bad = [n for n in names if any(c != "ok" for c in checks[n])]
        return 1 if bad else 0
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Upload one file to a local S3 server with boto3, minio and obstore.")
    parser.add_argument("--size-mb", type=int, default=200, help="file size in MB (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds after a warm-up (default 3)")
    parser.add_argument("--part-mb", type=int, default=16, help="multipart part size in MB (default 16)")
    parser.add_argument("--threads", type=int, default=4, help="parts in flight (default 4)")
    parser.add_argument("--only", default=",".join(CLIENTS), help=f"comma-separated subset of {', '.join(CLIENTS)}")
    parser.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if not names or any(n not in CLIENTS for n in names):
        parser.error(f"--only takes names from {', '.join(CLIENTS)}")
    if args.size_mb < 1 or args.rounds < 1 or args.part_mb < 5 or args.threads < 1:
        parser.error("--size-mb and --rounds at least 1, --part-mb at least 5 (S3's minimum part), --threads at least 1")
    return run(args.size_mb, args.rounds, args.part_mb, args.threads, names)


if __name__ == "__main__":
    sys.exit(main())
