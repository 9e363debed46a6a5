"""What the live listen benches share (bench/listen.py, bench/listen_webrtc.py): a real hub and node with a clicking
synthetic source, the API calls of a listen session, Chromium through Playwright, the console's own player, a
plain WebSocket listener, and the small helpers around them (CPU of a process, percentiles, waiting on a condition).

`ListenFleet` owns the processes: `start_fleet` starts a hub (``tests.harness.HubProcess``: SQLite, embedded
broker) and one node enrolled through the API (``tests.harness.NodeProcess``) whose ``HARK_NODE_AUDIO_SOURCE`` is
the given source, raises the listen limits so that one user may hold every session, and waits for the node to be
online; `start_browser` launches Debian's Chromium headless with autoplay allowed; `close` stops all of it.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

CHROMIUM = "/usr/bin/chromium"
NODE_ONLINE_TIMEOUT_S = 60.0


def cpu_s(process: psutil.Process | None) -> float:
    """User plus system CPU seconds of a process (0 when there is none or it is gone)."""
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` 0..1) of `values`; NaN without values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def wait_until(condition: Any, timeout: float, what: str, alive: Any = None, interval: float = 0.1) -> Any:
    """Poll `condition` until it is truthy (its value) or `timeout` passes (RuntimeError); `alive()` may raise meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ListenFleet:
    """A hub and one node of a listen bench, its admin's API client, and Chromium."""

    def __init__(self, temp_dir: Path, name: str = "listen-bench") -> None:
        self.temp_dir = temp_dir
        self.name = name
        self.hub: Any = None
        self.node: Any = None
        self.admin: Any = None
        self.token = ""
        self.node_id = ""
        self.credential = ""
        self.playwright: Any = None
        self.browser: Any = None
        self.context: Any = None

    # the hub and the node

    def start_fleet(self, source: str, hub_env: dict[str, str] | None = None, settings: dict[str, Any] | None = None) -> None:
        """A hub (`hub_env` added to its environment) and a node whose audio source is `source`, online."""
        from tests.harness import HubProcess, NodeProcess

        self.hub = HubProcess(self.temp_dir / f"{self.name}-hub", env_extra={"HARK_LOG_LEVEL": "WARNING", **(hub_env or {})})
        self.hub.start()
        self.token = self.hub.login()
        self.admin = self.hub.client(self.token)
        limits = {"max_listeners_per_node": 64, "max_listeners_per_user": 64, **(settings or {})}
        self.api("PUT", "/api/v1/settings/listen", 200, limits)
        enrolled = self.api("POST", "/api/v1/nodes/enroll", 201, {"name": self.name, "site": None})
        self.node_id = enrolled["node"]["id"]
        self.credential = enrolled["credential"]
        self.node = NodeProcess(
            self.temp_dir / f"{self.name}-node",
            self.hub.url,
            self.node_id,
            self.credential,
            env_extra={"HARK_NODE_AUDIO_SOURCE": source},
        )
        self.node.start()
        wait_until(
            lambda: self.api("GET", f"/api/v1/nodes/{self.node_id}", 200)["status"] == "online",
            NODE_ONLINE_TIMEOUT_S,
            "the node to be online",
            self.alive,
        )

    def api(self, method: str, path: str, wanted: int, body: Any = None) -> Any:
        """The `data` of an API answer with the `wanted` status (a node's detail: the node); RuntimeError otherwise."""
        response = self.admin.request(method, path, json=body)
        if response.status_code != wanted:
            raise RuntimeError(f"{method} {path} answered HTTP {response.status_code}: {response.text[:500]}")
        if not response.content:
            return None
        data = response.json()["data"]
        return data.get("node", data) if path == f"/api/v1/nodes/{self.node_id}" else data

    def open_session(self, body: dict[str, Any]) -> dict[str, Any]:
        """A listen session on the node (`body`: the POST /nodes/{id}/listen request)."""
        session: dict[str, Any] = self.api("POST", f"/api/v1/nodes/{self.node_id}/listen", 201, body)
        return session

    def end_session(self, session: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            self.admin.delete(f"/api/v1/nodes/{self.node_id}/listen/{session['id']}")

    def ws_url(self, session: dict[str, Any]) -> str:
        return "ws" + self.hub.url.removeprefix("http") + session["stream_url"]

    def hub_process(self) -> psutil.Process | None:
        return psutil.Process(self.hub.proc.pid) if self.hub is not None and self.hub.proc is not None else None

    def node_process(self) -> psutil.Process | None:
        return psutil.Process(self.node.proc.pid) if self.node is not None and self.node.proc is not None else None

    def node_listen_stats(self) -> dict[str, Any] | None:
        """The node's own listen counters (its diagnostics: streams, bytes_sent, encode_cpu_s, sent.mqtt_bytes...),
        or None when its local endpoint does not answer."""
        import httpx

        try:
            response = httpx.get(
                f"{self.node.local_url}/local/v1/diagnostics", headers={"Authorization": f"Bearer {self.credential}"}, timeout=10
            )
            response.raise_for_status()
            bundle = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        found = _find_key(bundle, "listen")
        return found if isinstance(found, dict) else None

    def alive(self) -> None:
        for name, proc, log in (("hub", self.hub, "hub.log"), ("node", self.node, "node.log")):
            if proc is not None and (proc.proc is None or proc.proc.poll() is not None):
                raise RuntimeError(f"the {name} exited:\n{log_tail(proc.workdir / log)}")

    # the browser

    def start_browser(self, extra_args: tuple[str, ...] = ()) -> None:
        from playwright.sync_api import sync_playwright

        if not Path(CHROMIUM).exists():
            raise RuntimeError(f"{CHROMIUM} is missing: tests/services.sh installs the Debian package chromium")
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", *extra_args, "--mute-audio"],
        )
        self.context = self.browser.new_context()
        self.context.set_default_timeout(30_000)

    def new_page(self) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda error: print(f"  page error: {error}", flush=True))
        return page

    def console_player(self, codec: str = "opus", source: str | None = None, timeout_s: float = 45.0) -> Any:
        """A new page signed in to the console, on the node's page, its Listen panel playing `codec` (and the
        "Listen to" choice `source`, an option's value, when given): the page once `window.harkListen` plays
        (RuntimeError with the player's state when it does not within `timeout_s`)."""
        from playwright.sync_api import Error as PlaywrightError

        from tests.harness import ADMIN_PASSWORD

        hub_url = self.hub.url
        page = self.new_page()
        page.goto(f"{hub_url}/")
        shown = "(e) => e !== null && e.offsetParent !== null"
        page.wait_for_function(f"() => ['#logout', '#username'].some((s) => ({shown})(document.querySelector(s)))")
        if not page.locator("#logout").is_visible():  # the context signed in during an earlier page
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.locator("#logout").wait_for()
        page.goto(f"{hub_url}/#/nodes/{self.node_id}")
        panel = page.locator(".listen-panel")
        panel.wait_for()
        if source is not None:
            choice = panel.get_by_label("Listen to")
            choice.locator(f"option[value='{source}']").wait_for(state="attached")
            choice.select_option(source)
        panel.get_by_label("Quality").select_option(codec)
        panel.get_by_role("button", name="Listen").click()
        settled = "() => window.harkListen && !['idle', 'starting'].includes(window.harkListen.state)"
        try:
            page.wait_for_function(settled, timeout=timeout_s * 1000)
        except PlaywrightError:
            stats = page.evaluate("window.harkListen ?? null")
            raise RuntimeError(f"the console's player did not start playing: {stats}") from None
        state, error = page.evaluate("[window.harkListen.state, window.harkListen.error]")
        if state != "playing":
            raise RuntimeError(f"the console's player is {state}: {error} ({panel.locator('.listen-status').text_content()})")
        return page

    @staticmethod
    def stop_console_player(page: Any) -> None:
        """Stop (which ends the session at the hub) and close the page."""
        with contextlib.suppress(Exception):
            page.locator(".listen-panel").get_by_role("button", name="Stop").click(timeout=5000)
            page.wait_for_function("() => ['stopped', 'ended'].includes(window.harkListen.state)", timeout=5000)
        with contextlib.suppress(Exception):
            page.close()

    def close(self) -> None:
        for closing in (
            lambda: self.context.close(),
            lambda: self.browser.close(),
            lambda: self.playwright.stop(),
            lambda: self.node.stop(),
            lambda: self.hub.stop(),
        ):
            with contextlib.suppress(Exception):
                closing()


def _find_key(value: Any, key: str) -> Any:
    """The first value under `key` anywhere in nested dicts and lists (None if absent)."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        found = _find_key(child, key)
        if found is not None:
            return found
    return None


class StreamReader(threading.Thread):
    """One more listener of the hub: a listen session's WebSocket read and counted, nothing played. `on_chunk(bytes,
    arrival wall time)` sees every binary message when given."""

    def __init__(
        self, fleet: ListenFleet, session: dict[str, Any], on_chunk: Callable[[bytes, float], None] | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.fleet = fleet
        self.session = session
        self.url = fleet.ws_url(session)
        self.on_chunk = on_chunk
        self.bytes = 0
        self.chunks = 0
        self.error: str | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        try:
            with connect(
                self.url, additional_headers={"Authorization": f"Bearer {self.fleet.token}"}, max_size=1 << 20
            ) as socket:
                while not self.stopping.is_set():
                    try:
                        message = socket.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    if isinstance(message, bytes):
                        arrival = time.time()
                        self.bytes += len(message)
                        self.chunks += 1
                        if self.on_chunk is not None:
                            self.on_chunk(message, arrival)
        except ConnectionClosed as err:
            if not self.stopping.is_set():
                self.error = f"the hub closed the socket: {err}"
        except (OSError, ValueError) as err:
            self.error = f"{type(err).__name__}: {err}"

    def halt(self) -> None:
        self.stopping.set()
        self.join(5)
        self.fleet.end_session(self.session)
