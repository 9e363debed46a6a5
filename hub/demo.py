"""`hark-hub demo`: a hub on embedded defaults (SQLite, embedded broker) in the foreground.

It runs the hub as a child process, waits until it is ready, prints where to go and how
to log in, and stops everything it started on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hark_fleet.hub import const
from hark_fleet.hub.processes import free_port, stop_process
from hark_fleet.protocol.atomic_file import write_atomic

READY_TIMEOUT_S = 60.0
DEMO_MDNS_INTERFACES = "127.0.0.1"
DEMO_LOCAL_HOST = "127.0.0.1"


def _port_free(host: str, port: int) -> bool:
    """Whether the hub could listen on `host:port` now (as Tornado binds: with SO_REUSEADDR, so
    connections in TIME_WAIT from a demo stopped a moment ago do not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


DEMO_NODES = (
    ("Stage left", "main-hall", ["stage"], "synthetic:sine?freq=440&dbfs=-18&channels=2"),
    ("Stage right", "main-hall", ["stage"], "synthetic:noise?dbfs=-30&channels=2"),
    ("Foyer ambience", "foyer", ["ambience"], "synthetic:sweep?dbfs=-24&channels=1"),
)
# The demo's sites (a node's site must exist): one concert house in Berlin.
DEMO_SITES = (
    {"id": "main-hall", "name": "Main hall", "time_zone": "Europe/Berlin", "latitude": 52.5099, "longitude": 13.3700},
    {"id": "foyer", "name": "Foyer", "time_zone": "Europe/Berlin", "latitude": 52.5101, "longitude": 13.3695},
)

# The demo's schedules (made on the run that enrolls the nodes): one on the sun, one on the clock.
# Selectors, so they follow the sites' boxes; each starts from today (the site's date).
DEMO_SCHEDULES = (
    {
        "name": "Dawn chorus",
        "description": "One hour from 30 minutes before sunrise, every day, on the main hall's boxes",
        "target": {"selector": {"site": "main-hall"}},
        "start_time": "00:00:00",  # a solar anchor uses only the date
        "duration_s": 3600,
        "rrule": "FREQ=DAILY",
        "solar": {"event": "sunrise", "offset_minutes": -30},
        "tags": ["birds"],
    },
    {
        "name": "Foyer on the hour",
        "description": "Ten minutes every hour from 09:00 to 17:00 on weekdays",
        "target": {"selector": {"site": "foyer"}},
        "start_time": "09:00:00",
        "duration_s": 600,
        "rrule": "FREQ=HOURLY;BYHOUR=9,10,11,12,13,14,15,16,17;BYDAY=MO,TU,WE,TH,FR",
        "tags": ["ambience"],
    },
)


def _api(base_url: str, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base_url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def demo_sites(base_url: str, token: str) -> None:
    """Make the demo's sites unless they exist."""
    for site in DEMO_SITES:
        try:
            _api(base_url, "POST", "/api/v1/sites", site, token)
        except urllib.error.HTTPError as err:
            if err.code != 409:  # 409: made by an earlier run
                raise


def demo_schedules(base_url: str, token: str) -> None:
    """Make the demo's example schedules; a hub that refuses one leaves the demo running without it."""
    today = datetime.now(ZoneInfo(str(DEMO_SITES[0]["time_zone"]))).date().isoformat()
    for schedule in DEMO_SCHEDULES:
        body = {k: v for k, v in schedule.items() if k != "start_time"}
        body["start_local"] = f"{today}T{schedule['start_time']}"
        try:
            _api(base_url, "POST", "/api/v1/schedules", body, token)
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:300]
            print(f"hark demo: the example schedule {schedule['name']!r} was not made ({err.code}): {detail}", file=sys.stderr)


def demo_offsite(base_url: str, token: str, archive_dir: Path) -> None:
    """Make the demo's off-site copy: a directory provider (standing in for a NAS), a policy sending every finished
    recording there, and a retention policy that keeps 30 days on the hub once the archive has confirmed a copy."""
    try:
        archive_dir.mkdir(parents=True, exist_ok=True)
        provider = _api(
            base_url,
            "POST",
            "/api/v1/settings/upload-providers",
            {
                "kind": "local",
                "name": "Demo archive",
                "description": "A directory standing in for a NAS share",
                "config": {"path": str(archive_dir.resolve())},
            },
            token,
        )["data"]
        _api(
            base_url,
            "POST",
            "/api/v1/settings/upload-policies",
            {"name": "Everything to the archive", "provider_ids": [provider["id"]]},
            token,
        )
        _api(
            base_url,
            "POST",
            "/api/v1/settings/retention-policies",
            {"name": "30 days on the hub once archived", "keep_on_hub_days": 30, "required_providers": [provider["id"]]},
            token,
        )
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        print(f"hark demo: the example archive was not set up ({err.code}): {detail}", file=sys.stderr)


def demo_nodes(
    base_url: str, password: str, nodes_dir: Path, local_host: str, mdns_interfaces: str
) -> list[tuple[str, dict[str, str]]]:
    """The simulated nodes (enrolled once, remembered in the demo's data dir): name and environment.

    Their local endpoints listen on `local_host` and they speak mDNS where the hub does.
    """
    registry_path = nodes_dir / "enrolled.json"
    registry: dict[str, dict[str, str]] = json.loads(registry_path.read_text()) if registry_path.exists() else {}
    token = None
    for name, site, tags, _ in DEMO_NODES:
        if name in registry:
            continue
        if token is None:
            token = _api(base_url, "POST", "/api/v1/auth/login", {"username": "admin", "password": password})["data"]["token"]
            demo_sites(base_url, token)
        enrolled = _api(base_url, "POST", "/api/v1/nodes/enroll", {"name": name, "site": site, "tags": tags}, token)["data"]
        registry[name] = {"id": enrolled["node"]["id"], "credential": enrolled["credential"]}
        nodes_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(registry_path, json.dumps(registry), mode=0o600)
    if token is not None:
        demo_schedules(base_url, token)
        demo_offsite(base_url, token, nodes_dir.parent / "archive")
    result = []
    for index, (name, _, _, source) in enumerate(DEMO_NODES):
        entry = registry[name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_") or k == "HARK_LOG_LEVEL"}
        env.update(
            HARK_DATA_DIR=str(nodes_dir / f"node-{index + 1}"),
            HARK_HUB_URL=base_url,
            HARK_NODE_ID=entry["id"],
            HARK_NODE_CREDENTIAL=entry["credential"],
            HARK_NODE_AUDIO_SOURCE=source,
            HARK_NODE_LOCAL_HOST=local_host,
            HARK_NODE_LOCAL_PORT=str(free_port(local_host)),
            HARK_MDNS_INTERFACES=mdns_interfaces,
        )
        result.append((name, env))
    return result


def run_demo() -> int:
    data_dir = Path(os.environ.get("HARK_DEMO_DIR", "var/demo"))
    hub_dir = data_dir / "hub"
    host = os.environ.get("HARK_HTTP_HOST", const.DEFAULT_HTTP_HOST)
    # The demo stays on this machine unless asked: mDNS on loopback, node endpoints on loopback.
    mdns_interfaces = os.environ.get("HARK_MDNS_INTERFACES", DEMO_MDNS_INTERFACES)
    local_host = os.environ.get("HARK_NODE_LOCAL_HOST", DEMO_LOCAL_HOST)
    port = os.environ.get("HARK_HTTP_PORT")
    if port is None:
        port = str(const.DEFAULT_HTTP_PORT if _port_free(host, const.DEFAULT_HTTP_PORT) else free_port(host))
        if port != str(const.DEFAULT_HTTP_PORT):
            print(f"hark demo: port {const.DEFAULT_HTTP_PORT} is taken; the hub listens on {port} instead", flush=True)
    env = dict(
        os.environ, HARK_DATA_DIR=str(hub_dir), HARK_HTTP_HOST=host, HARK_HTTP_PORT=port, HARK_MDNS_INTERFACES=mdns_interfaces
    )
    base_url = f"http://{host}:{port}"
    print(f"hark demo: starting the hub on {base_url} with its data in {hub_dir.resolve()}", flush=True)
    # Children get sessions of their own: Ctrl-C reaches only the demo, which then stops
    # the nodes before the hub (whose embedded broker they are connected to).
    children = [subprocess.Popen([sys.executable, "-m", "hark_fleet.hub", "run"], env=env, start_new_session=True)]
    hub = children[0]
    interrupted = False

    def on_signal(signum: int, frame: object) -> None:
        """The first SIGINT or SIGTERM stops the demo wherever it is; later ones let the stopping finish."""
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt

    # Explicitly for SIGINT too: a shell starting the demo in the background (`&`) leaves
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler of its own.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if wait_ready(base_url, hub, READY_TIMEOUT_S) is None:
            print("hark demo: the hub did not become ready; see its log above", file=sys.stderr)
            return stop_process(hub) or 1
        password_file = hub_dir / const.ADMIN_PASSWORD_FILE
        password = os.environ.get("HARK_ADMIN_PASSWORD") or (
            password_file.read_text(encoding="utf-8").strip() if password_file.exists() else None
        )
        nodes: list[str] = []
        if password:
            for name, node_env in demo_nodes(base_url, password, data_dir / "nodes", local_host, mdns_interfaces):
                children.append(subprocess.Popen([sys.executable, "-m", "hark_fleet.node"], env=node_env, start_new_session=True))
                nodes.append(name)
        else:
            print(
                "hark demo: no admin password at hand (set HARK_ADMIN_PASSWORD): running without simulated nodes", file=sys.stderr
            )
        shown = "(the one in HARK_ADMIN_PASSWORD)" if os.environ.get("HARK_ADMIN_PASSWORD") else password
        print(
            "\n"
            f"  hark is running.\n"
            f"  Console:   {base_url}/\n"
            f"  API:       {base_url}/api/v1  (contract: {base_url}/api/v1/openapi.yaml)\n"
            f"  Log in as: admin / {shown}\n"
            f"  Nodes:     {', '.join(nodes) or 'none'} (simulated, synthetic audio)\n"
            f"  Stop with Ctrl-C.\n",
            flush=True,
        )
        while hub.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nhark demo: stopping", flush=True)
        for child in reversed(children[1:]):
            stop_process(child)
        code = stop_process(hub)
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code
