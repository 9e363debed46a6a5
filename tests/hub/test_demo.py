"""`hark-hub demo`: runs on embedded defaults, tells how to log in, stops everything on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
from hark_fleet.hub.mqtt.mosquitto_conf import find_binary

from tests.harness import ROOT, free_port, port_open, wait_for


def started_by_demo(demo_dir: Path) -> list[int]:
    """Processes still running with a data directory inside the demo's."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("HARK_DATA_DIR", "").startswith(str(demo_dir)):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_demo(demo: subprocess.Popen[bytes], demo_dir: Path) -> list[int]:
    """Kill a demo still running (a failed test) and whatever it started; the pids found left behind before that."""
    if demo.poll() is None:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.wait()
    left = started_by_demo(demo_dir)
    for pid in left:  # its hub and nodes run in sessions of their own: the demo's group does not reach them
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    return left


def test_demo_runs_three_nodes_prints_the_login_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
    env.update(HARK_DEMO_DIR=str(tmp_path / "demo"), HARK_HTTP_PORT=str(port))
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "hark_fleet.hub", "demo"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "Stop with Ctrl-C" in log.read_text(), 60, "the demo banner")
        text = log.read_text()
        assert f"Console:   http://127.0.0.1:{port}/" in text
        password = re.search(r"Log in as: admin / (\S+)", text).group(1)
        login = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/login", json={"username": "admin", "password": password})
        assert login.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["status"] == "ready"
        assert "Nodes:     Stage left, Stage right, Foyer ambience" in text
        token = login.json()["data"]["token"]

        def all_online() -> bool:
            nodes = httpx.get(f"http://127.0.0.1:{port}/api/v1/nodes", headers={"Authorization": f"Bearer {token}"}).json()[
                "data"
            ]
            return len(nodes) == 3 and all(n["status"] == "online" for n in nodes)

        wait_for(all_online, 30, "the three simulated nodes online")
        if find_binary(None) is not None:  # where Mosquitto is installed, the demo runs on it
            assert "(embedded Mosquitto)" in log.read_text()
        sites = httpx.get(f"http://127.0.0.1:{port}/api/v1/sites", headers={"Authorization": f"Bearer {token}"}).json()["data"]
        assert {(s["id"], s["time_zone"], s["node_count"]) for s in sites} == {
            ("main-hall", "Europe/Berlin", 2),
            ("foyer", "Europe/Berlin", 1),
        }
        schedules = httpx.get(f"http://127.0.0.1:{port}/api/v1/schedules", headers={"Authorization": f"Bearer {token}"}).json()[
            "data"
        ]
        assert {(s["name"], s["site"], (s["solar"] or {}).get("event")) for s in schedules} == {
            ("Dawn chorus", "main-hall", "sunrise"),
            ("Foyer on the hour", "foyer", None),
        }
        assert all(s["next_occurrence"] for s in schedules), schedules
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert demo.wait(30) == 0
    finally:
        left = stop_demo(demo, tmp_path)
    assert not port_open("127.0.0.1", port)
    assert left == [], "the demo left processes behind"
    brokers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert brokers == [], "the demo's broker left behind"
    assert "Traceback" not in log.read_text()


def listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    """The TCP addresses these processes listen on."""
    found = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def test_demo_started_in_the_background_stays_on_loopback_and_stops_on_sigint(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
    env.update(HARK_DEMO_DIR=str(tmp_path / "demo"), HARK_HTTP_PORT=str(port))
    log = tmp_path / "demo.log"

    def as_a_background_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a non-interactive shell does for `hark-hub demo &`

    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "hark_fleet.hub", "demo"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=as_a_background_job,
        )
    try:
        wait_for(lambda: "Stop with Ctrl-C" in log.read_text(), 60, "the demo banner")
        wait_for(lambda: len(started_by_demo(tmp_path)) == 4, 30, "the hub and three nodes")
        children = started_by_demo(tmp_path)
        for pid in children:
            assert psutil.Process(pid).environ().get("HARK_MDNS_INTERFACES") == "127.0.0.1"
        family = children + [c.pid for pid in children for c in psutil.Process(pid).children()]  # the hub's Mosquitto
        wait_for(lambda: len(listening_addresses(family)) >= 5, 30, "the hub, its broker and three node endpoints listening")
        listening = listening_addresses(family)
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        os.kill(demo.pid, signal.SIGINT)
        assert demo.wait(30) == 0
    finally:
        left = stop_demo(demo, tmp_path)
    assert left == [], "the demo left processes behind"
    assert "Traceback" not in log.read_text()


def test_a_port_left_in_time_wait_by_a_stopped_demo_counts_as_free() -> None:
    from hark_fleet.hub.demo import _port_free

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
    listener.close()
    client.close()
    assert _port_free("127.0.0.1", port)
