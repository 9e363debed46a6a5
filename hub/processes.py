"""Child processes and ports, for the demo, the benchmarks and the tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from pathlib import Path

LOWEST_PORT = 10_000
_given: set[int] = set()  # ports this process handed out: never twice, though the first may not be bound yet


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, for a server the caller starts next.

    Picked below the kernel's ephemeral range: a port from `bind(0)` lies in that range, where the kernel
    also picks the local port of every outgoing connection, so a busy machine (a test's fifty MQTT clients)
    could take it before the server binds it. Under pytest-xdist each worker picks from its own slice, so
    two workers starting servers at once never pick the same port.
    """
    low, high = _span()
    if high - low >= 100:
        for _ in range(1000):
            port = random.randrange(low, high)
            if port not in _given and _bindable(host, port):
                _given.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    _given.add(port)
    return port


def _span() -> tuple[int, int]:
    """The ports this process picks from: below the ephemeral range, this xdist worker's slice of them."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768  # Linux's default
    low, high = LOWEST_PORT, ephemeral_low
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0:
        size = (high - low) // int(count)
        low += int(worker[2:]) * size
        high = low + size
    return low, high


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL if it does not stop in time; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
