"""Which SFTP client the hub's upload provider should use: asyncssh or paramiko, measured on one file (issue 20).

What is measured
----------------
OpenSSH's sshd is started on loopback on a free port with its own host key and key auth for the
current user (the test fixture `tests.offsite_servers.Sshd`). One file of ``--size-mb`` random bytes
(default 200 MB) is uploaded by each candidate, in alternating rounds (every candidate once per round,
the order rotated each round), ``--rounds`` rounds after one warm-up round of all:

* ``asyncssh-put``: ``SFTPClient.put`` (the library's one call, its parallel block requests);
* ``asyncssh-loop``: what the provider runs: the remote ``.part`` file opened for append, 1 MiB chunks
  read from disk and written in order with ``SFTPClientFile.write`` (which splits a chunk into
  parallel requests), a throttle hook and a SHA-256 per chunk, then a rename; on a private event loop
  in the calling thread, as the blocking provider would;
* ``paramiko-put``: ``SFTPClient.put`` (pipelined writes, its default);
* ``paramiko-loop``: the same loop as asyncssh-loop with a pipelined paramiko file.

Each upload runs in a fresh child process (this script with ``--child``), so its memory is its own: the
child imports the client, connects (host key pinned), notes its RSS (VmRSS, VmHWM reset through
``/proc/self/clear_refs``), uploads, and reports seconds, peak RSS growth during the upload and its
CPU time per GB (user + system: the client's side, sshd's CPU is not counted). The parent checks the
uploaded file's SHA-256, deletes it, and prints MB/s (median of the rounds, min-max), the peak RSS growth
(median, max), the client's CPU per GB (median), the import + connect time, and the load average
before and after.

The server and the client share the machine (2 CPUs on the test box), and the transfer is loopback:
the figures compare the clients' costs; a real NAS link will usually be the bottleneck.

Needs (paramiko is not a hark dependency; the bench only)::

    .venv/bin/pip install -q paramiko

Run it from the repository root::

    .venv/bin/python bench/sftp_clients.py [--size-mb 200] [--rounds 3] [--only asyncssh-loop,paramiko-loop]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLIENTS = ("asyncssh-put", "asyncssh-loop", "paramiko-put", "paramiko-loop")
MB = 1024 * 1024
CHUNK = MB


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return status_kb("VmRSS")


# --- the child: one upload -----------------------------------------------------------------------


def upload_asyncssh(args: argparse.Namespace, loop_mode: bool) -> dict[str, Any]:
    import asyncio

    import asyncssh

    loop = asyncio.new_event_loop()
    started_import = time.perf_counter()

    async def connect() -> Any:
        known = asyncssh.import_known_hosts(f"[{args.host}]:{args.port} {args.host_key}\n")
        conn = await asyncssh.connect(
            args.host,
            port=args.port,
            username=args.user,
            client_keys=[asyncssh.import_private_key(Path(args.key_file).read_text())],
            known_hosts=known,
        )
        return conn, await conn.start_sftp_client()

    conn, sftp = loop.run_until_complete(connect())
    connect_s = time.perf_counter() - started_import
    before = reset_peak()
    started = time.perf_counter()

    async def put() -> None:
        await sftp.put(args.file, args.remote)

    async def loop_upload() -> None:
        part = args.remote + ".part"
        async with sftp.open(part, "ab") as remote:
            with open(args.file, "rb") as source:
                for block in iter(lambda: source.read(CHUNK), b""):
                    hashlib.sha256(block)
                    await remote.write(block)
        await sftp.posix_rename(part, args.remote)

    loop.run_until_complete(loop_upload() if loop_mode else put())
    seconds = time.perf_counter() - started
    conn.close()
    loop.run_until_complete(conn.wait_closed())
    loop.close()
    return {"seconds": seconds, "rss_before_kb": before, "connect_s": connect_s}


def upload_paramiko(args: argparse.Namespace, loop_mode: bool) -> dict[str, Any]:
    import io

    import paramiko

    started_import = time.perf_counter()
    client = paramiko.SSHClient()
    key_type, key_data = args.host_key.split()[:2]
    pinned = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
    client.get_host_keys().add(f"[{args.host}]:{args.port}", key_type, pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(Path(args.key_file).read_text()))
    client.connect(args.host, port=args.port, username=args.user, pkey=key, allow_agent=False, look_for_keys=False)
    sftp = client.open_sftp()
    connect_s = time.perf_counter() - started_import
    before = reset_peak()
    started = time.perf_counter()
    if loop_mode:
        part = args.remote + ".part"
        with sftp.open(part, "ab") as remote, open(args.file, "rb") as source:
            remote.set_pipelined(True)
            for block in iter(lambda: source.read(CHUNK), b""):
                hashlib.sha256(block)
                remote.write(block)
        sftp.posix_rename(part, args.remote)
    else:
        sftp.put(args.file, args.remote)
    seconds = time.perf_counter() - started
    sftp.close()
    client.close()
    return {"seconds": seconds, "rss_before_kb": before, "connect_s": connect_s}


def child(args: argparse.Namespace) -> int:
    cpu = os.times()
    name = args.child
    if name.startswith("asyncssh"):
        result = upload_asyncssh(args, name.endswith("loop"))
    else:
        result = upload_paramiko(args, name.endswith("loop"))
    result["rss_peak_kb"] = status_kb("VmHWM")
    now = os.times()
    result["cpu_s"] = now.user + now.system - cpu.user - cpu.system
    print(json.dumps(result), flush=True)
    return 0


# --- the parent ----------------------------------------------------------------------------------


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(size // MB):
            block = os.urandom(MB)
            out.write(block)
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MB), b""):
            digest.update(block)
    return digest.hexdigest()


def run_one(name: str, server: Any, key_file: Path, source: Path, remote: Path) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--child", name, "--file", str(source), "--remote", str(remote),
        "--host", server.host, "--port", str(server.port), "--user", server.user,
        "--key-file", str(key_file), "--host-key", server.host_key,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(CLIENTS))
    parser.add_argument("--child")
    for name in ("--file", "--remote", "--host", "--user", "--key-file", "--host-key"):
        parser.add_argument(name)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from tests.offsite_servers import Sshd

    clients = [c for c in args.only.split(",") if c]
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hark-sftp-bench-") as tmp:
        work = Path(tmp)
        server = Sshd(work / "sshd")
        server.start()
        try:
            key_file = server.workdir / "client_ed25519"
            source = work / "source.bin"
            expected = make_file(source, args.size_mb * MB)
            remote_dir = work / "remote"
            remote_dir.mkdir()
            results: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
            for round_no in range(args.rounds + 1):
                order = clients[round_no % len(clients) :] + clients[: round_no % len(clients)]
                for name in order:
                    remote = remote_dir / f"{name}.bin"
                    result = run_one(name, server, key_file, source, remote)
                    if file_sha256(remote) != expected:
                        raise RuntimeError(f"{name}: the uploaded file differs")
                    remote.unlink()
                    if round_no:  # round 0 warms up
                        results[name].append(result)
                print(f"round {round_no}{' (warm-up)' if not round_no else ''} done", flush=True)
        finally:
            server.stop()
    size = args.size_mb * MB
    print(f"\n{args.size_mb} MB file, {args.rounds} rounds, medians [min-max]; upload verified by SHA-256 each time")
    print(f"{'client':16} {'MB/s':>22} {'peak RSS +MiB':>16} {'CPU s/GB':>10} {'connect s':>10}")
    for name in clients:
        rows = results[name]
        speeds = [size / MB / r["seconds"] for r in rows]
        rss = [(r["rss_peak_kb"] - r["rss_before_kb"]) / 1024 for r in rows]
        cpu = [r["cpu_s"] / (size / 1e9) for r in rows]
        connect = [r["connect_s"] for r in rows]
        print(
            f"{name:16} {statistics.median(speeds):8.1f} [{min(speeds):5.1f}-{max(speeds):5.1f}]"
            f" {statistics.median(rss):9.1f} ({max(rss):4.1f}) {statistics.median(cpu):10.2f} {statistics.median(connect):10.2f}"
        )
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
