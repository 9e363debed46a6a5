"""`hark-hub demo`: a hub on embedded defaults (SQLite, embedded broker) in the foreground.

It runs the hub as a child process, waits until it is ready, prints where to go and how
to log in, and stops everything it started on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from hub import const
from hub.processes import free_port, stop_process

READY_TIMEOUT_S = 60.0


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, object] | None:
    """Poll `/readyz` until it answers 200; None if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.3)
    return None


def run_demo() -> int:
    data_dir = Path(os.environ.get("HARK_DEMO_DIR", "var/demo"))
    hub_dir = data_dir / "hub"
    host = os.environ.get("HARK_HTTP_HOST", const.DEFAULT_HTTP_HOST)
    port = int(
        os.environ.get("HARK_HTTP_PORT")
        or (const.DEFAULT_HTTP_PORT if _port_free(host, const.DEFAULT_HTTP_PORT) else free_port(host))
    )
    env = dict(os.environ, HARK_DATA_DIR=str(hub_dir), HARK_HTTP_HOST=host, HARK_HTTP_PORT=str(port))
    base_url = f"http://{host}:{port}"
    print(f"hark demo: starting the hub on {base_url} with its data in {hub_dir.resolve()}", flush=True)
    hub = subprocess.Popen([sys.executable, "-m", "hub", "run"], env=env)
    interrupted = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if wait_ready(base_url, hub, READY_TIMEOUT_S) is None:
            print("hark demo: the hub did not become ready; see its log above", file=sys.stderr)
            return stop_process(hub) or 1
        password_file = hub_dir / const.ADMIN_PASSWORD_FILE
        if os.environ.get("HARK_ADMIN_PASSWORD"):
            password = "(the one in HARK_ADMIN_PASSWORD)"
        elif password_file.exists():
            password = password_file.read_text(encoding="utf-8").strip()
        else:
            password = "(set when this data directory was first used)"
        print(
            "\n"
            f"  hark is running.\n"
            f"  Console:   {base_url}/\n"
            f"  API:       {base_url}/api/v1  (contract: {base_url}/api/v1/openapi.yaml)\n"
            f"  Log in as: admin / {password}\n"
            f"  Stop with Ctrl-C.\n",
            flush=True,
        )
        while not interrupted and hub.poll() is None:
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(0.5)
                continue
            interrupted = True
    except KeyboardInterrupt:
        pass
    finally:
        print("\nhark demo: stopping", flush=True)
        code = stop_process(hub)
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code
