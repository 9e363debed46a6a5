"""A fleet of 200 for the console's fleet page, and what the page costs in headless Chromium.

`ScaleFleet` starts a plain anonymous Mosquitto on a free loopback port, a hub with
`HARK_MQTT_URL` to it, and enrolls `nodes` nodes through the API over four sites: 2 real
`hark-node` processes with synthetic audio (they log in to the broker with their credential,
which an anonymous Mosquitto accepts), the rest simulated by `bench/fleet.py`'s generator (one
process, raw MQTT: a meter frame per node at 10 Hz, a heartbeat every 10 s) so they are online
with live meters. For variety, of the simulated nodes: `OFFLINE` send one heartbeat over HTTP
with a 2 s heartbeat interval and then nothing (offline after 3 intervals), `DEGRADED` get an
open critical health event, `PENDING` never send anything.

`measure_fleet_page` opens the fleet page in a new browser context (signed in as admin) and
gives: the load time, from navigation to the moment every node has an element with its
`data-node-id` in `#view` (a MutationObserver in the page, `performance.now()`, so from the
navigation's start), and, over a window once live, the page's main-thread costs from CDP
`Performance.getMetrics` (ScriptDuration, TaskDuration, LayoutDuration, RecalcStyleDuration,
ThreadTime) as % of one core, and the meter frames the page received per second (its
`EventSource` for `/api/v1/meter-events` is wrapped to count them). `serve_console` routes the
console's files (`/` and `/console/**`) from a git commit instead of the hub, so that an older
page can be measured against the same hub.

The generator is `bench/fleet.py`'s (imported from `bench/`): the one place tests reach into
the benchmarks, so that the test and `bench/console_fleet.py` load the hub the same way.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, Route, StorageState, ViewportSize
from playwright.sync_api import Error as PlaywrightError

from tests.harness import ADMIN_PASSWORD, ROOT, HubProcess, Mosquitto, NodeProcess, wait_for

BENCH_DIR = ROOT / "bench"
SITES = ("main-hall", "foyer", "studio-b", "outdoor")
TAGS: tuple[list[str], ...] = (["stage"], ["ambience"], ["booth", "spare"], [])
REAL_SOURCES = (
    ("Stage left", "synthetic:sine?freq=440&dbfs=-12&channels=2"),
    ("Foyer", "synthetic:noise?dbfs=-24&channels=1"),
)
OFFLINE = 4
GENERATOR_SECONDS = 3600.0  # longer than any measurement; stop() ends the generator sooner
DEGRADED = 4
PENDING = 2
VIEWPORT: ViewportSize = {"width": 1440, "height": 900}
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
METRICS = ("ScriptDuration", "TaskDuration", "LayoutDuration", "RecalcStyleDuration", "ThreadTime")

# Installed before the console's own scripts: when the view first shows a node and when it shows
# `want` distinct ones (and the animation frame after that), from the navigation's start or from
# `arm()` (an in-app visit), and a count of the meter frames the page receives.
PAGE_PROBE = """
(() => {
  const want = %d;
  const probe = window.__fleetScale = {
    from: 0, first: null, all: null, painted: null, count: 0, frames: 0, resets: 0, meterUrl: null,
  };
  const Original = window.EventSource;
  window.EventSource = class extends Original {
    constructor(url, options) {
      super(url, options);
      if (String(url).includes("/api/v1/meter-events")) {
        probe.meterUrl = String(url);
        this.addEventListener("meter", () => { probe.frames++; });
        // A coalesced stream: the frames of each tick (a key per node, counted without parsing the event).
        this.addEventListener("meters", (event) => { probe.frames += (event.data.match(/"seq":/g) || []).length; });
        this.addEventListener("reset", () => { probe.resets++; });
      }
    }
  };
  const check = () => {
    const view = document.getElementById("view");
    if (!view) return false;
    const ids = new Set();
    for (const el of view.querySelectorAll("[data-node-id]")) ids.add(el.dataset.nodeId);
    probe.count = ids.size;
    if (ids.size && probe.first === null) probe.first = performance.now() - probe.from;
    if (ids.size < want) return false;
    probe.all = performance.now() - probe.from;
    requestAnimationFrame(() => setTimeout(() => { probe.painted = performance.now() - probe.from; }));
    return true;
  };
  const observer = new MutationObserver(() => { if (check()) observer.disconnect(); });
  probe.arm = () => {
    Object.assign(probe, { from: performance.now(), first: null, all: null, painted: null, count: 0 });
    observer.observe(document, { childList: true, subtree: true });
  };
  observer.observe(document, { childList: true, subtree: true });
})();
"""


@dataclass
class ScaleFleet:
    """The broker, the hub, the real nodes and the generator of one run."""

    workdir: Path
    nodes: int = 200
    real: int = 2
    broker: Mosquitto | None = None
    hub: HubProcess | None = None
    real_nodes: list[NodeProcess] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)  # every enrolled node, the real ones first
    live_ids: list[str] = field(default_factory=list)  # the simulated nodes with meters and heartbeats
    live: list[tuple[str, str]] = field(default_factory=list)  # their (id, credential): each logs in with its own
    generator: Any = None  # multiprocessing process
    _conn: Any = None
    _counters: Any = None
    token: str = ""

    # -- processes ---------------------------------------------------------------------------

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        if self.nodes < self.real + OFFLINE + DEGRADED + PENDING + 1:
            raise ValueError(f"at least {self.real + OFFLINE + DEGRADED + PENDING + 1} nodes are needed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        progress("starting Mosquitto and the hub ...")
        self.broker = Mosquitto(self.workdir / "mosquitto", extra_config="max_queued_messages 100000\n")
        self.broker.start()
        self.hub = HubProcess(self.workdir / "hub", mqtt_url=self.broker.url, env_extra={"HARK_LOG_LEVEL": "WARNING"})
        self.hub.start()
        self.token = self.hub.login()
        for site in SITES:
            self.hub.ensure_site(site)
        progress(f"enrolling {self.nodes} nodes ...")
        enrolled = self._enroll()
        self.node_ids = [node_id for node_id, _ in enrolled]
        for (node_id, credential), (_, source) in zip(enrolled, REAL_SOURCES[: self.real], strict=False):
            node = NodeProcess(
                self.workdir / f"node-{uuid.uuid4().hex[:6]}",
                self.hub.url,
                node_id,
                credential,
                env_extra={"HARK_NODE_AUDIO_SOURCE": source},
            )
            node.start()
            self.real_nodes.append(node)
        simulated = enrolled[self.real :]
        offline = simulated[:OFFLINE]
        pending = simulated[OFFLINE : OFFLINE + PENDING]
        self.live = simulated[OFFLINE + PENDING :]
        self.live_ids = [node_id for node_id, _ in self.live]
        progress(f"{len(self.live_ids)} simulated nodes publishing, {self.real} real nodes starting ...")
        self._start_generator()
        with self.client() as admin:
            for node_id, credential in offline:
                assert admin.patch(f"/api/v1/nodes/{node_id}", json={"heartbeat_interval_s": 2}).status_code == 200
                with self.hub.client(credential) as box:
                    beat = box.post(f"/api/v1/nodes/{node_id}/heartbeat", json=_heartbeat())
                    assert beat.status_code == 200, beat.text
        self.wait_live(timeout=60)
        with self.client() as admin:
            for node_id in self.live_ids[:DEGRADED]:
                raised = admin.post(
                    "/api/v1/health-events",
                    json={"kind": "disk.low", "severity": "critical", "node_id": node_id, "details": {"free_mb": 120}},
                )
                assert raised.status_code == 201, raised.text
        del pending  # enrolled, never seen

        def varied() -> bool:
            statuses = self.statuses()
            return statuses.get("offline", 0) >= OFFLINE and statuses.get("degraded", 0) >= DEGRADED

        wait_for(varied, 30, "offline and degraded nodes", interval=0.5)
        progress(f"fleet ready: {self.statuses()}")

    def _enroll(self) -> list[tuple[str, str]]:
        assert self.hub is not None

        def enroll(i: int) -> tuple[str, str]:
            name = REAL_SOURCES[i][0] if i < self.real else f"sim-{i:03d}"
            body = {"name": name, "site": SITES[i % len(SITES)], "tags": TAGS[i % len(TAGS)]}
            with self.client() as admin:
                response = admin.post("/api/v1/nodes/enroll", json=body)
            assert response.status_code == 201, response.text
            data = response.json()["data"]
            return data["node"]["id"], data["credential"]

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(enroll, range(self.nodes)))

    def _start_generator(self) -> None:
        assert self.broker is not None
        if str(BENCH_DIR) not in sys.path:
            sys.path.insert(0, str(BENCH_DIR))
        import fleet  # bench/fleet.py

        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe()
        self._counters = context.RawArray("q", 3)
        self._counters[fleet.C_CREDIT] = fleet.NO_LIMIT
        nodes = [(index, node_id, credential) for index, (node_id, credential) in enumerate(self.live)]
        self.generator = context.Process(
            target=fleet.generator_main,
            args=(sender, nodes, f"scale-{uuid.uuid4().hex[:4]}", self._counters),
            name="fleet-scale-generator",
        )
        self.generator.start()
        sender.close()
        receiver.send(("connect", self.broker.host, self.broker.port))
        if not receiver.poll(30):
            raise RuntimeError("the generator did not connect")
        hello = receiver.recv()
        if "error" in hello:
            raise RuntimeError(f"generator: {hello['error']}")
        self._conn = receiver
        receiver.send(("load", GENERATOR_SECONDS))  # runs until then or until stop() ends the process

    def wait_live(self, timeout: float) -> None:
        """Until every publishing node (real and simulated) is online (simulated heartbeats are spread over 10 s)."""
        publishing = set(self.live_ids) | {n.node_id for n in self.real_nodes if n.node_id}

        def live() -> bool:
            statuses = self.status_of()
            return all(statuses.get(node_id) in ("online", "degraded") for node_id in publishing)

        wait_for(live, timeout, f"{len(publishing)} nodes online", interval=0.5)

    def check_alive(self) -> None:
        assert self.hub is not None and self.hub.proc is not None
        if self.hub.proc.poll() is not None:
            raise RuntimeError(f"the hub exited with {self.hub.proc.returncode}:\n{self.hub.log()[-3000:]}")
        if self.generator is not None and not self.generator.is_alive():
            raise RuntimeError("the generator exited")

    def stop(self) -> int:
        """Stop everything; the hub's exit code."""
        if self.generator is not None:
            if self.generator.is_alive():  # busy in its "load": it reads no command until that ends
                self.generator.terminate()
                self.generator.join(5)
            self.generator = None
        for node in self.real_nodes:
            node.stop()
        code = self.hub.stop() if self.hub is not None else 0
        if self.broker is not None:
            self.broker.stop()
        return code

    # -- reads -------------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        assert self.hub is not None
        return self.hub.client(self.token)

    def status_of(self) -> dict[str, str]:
        """Every node's status (by id), from the API."""
        statuses: dict[str, str] = {}
        cursor = None
        with self.client() as admin:
            while True:
                params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                body = admin.get("/api/v1/nodes", params=params).json()
                statuses.update((row["id"], row["status"]) for row in body["data"])
                cursor = body["meta"]["next_cursor"]
                if not cursor:
                    return statuses

    def statuses(self) -> dict[str, int]:
        """How many nodes are in each status."""
        counts: dict[str, int] = {}
        for status in self.status_of().values():
            counts[status] = counts.get(status, 0) + 1
        return counts

    def pids(self) -> dict[str, list[int]]:
        """The processes of this fleet by role, for CPU accounting."""
        out: dict[str, list[int]] = {"hub": [], "broker": [], "generator": [], "real nodes": []}
        if self.hub is not None and self.hub.proc is not None:
            out["hub"].append(self.hub.proc.pid)
        if self.broker is not None and self.broker.proc is not None:
            out["broker"].append(self.broker.proc.pid)
        if self.generator is not None and self.generator.pid:
            out["generator"].append(self.generator.pid)
        out["real nodes"] = [n.proc.pid for n in self.real_nodes if n.proc is not None]
        return out


@contextlib.contextmanager
def running_scale_fleet(
    workdir: Path, nodes: int = 200, progress: Callable[[str], None] = lambda _: None
) -> Iterator[ScaleFleet]:
    fleet = ScaleFleet(workdir, nodes)
    try:
        fleet.start(progress)
        yield fleet
    finally:
        code = fleet.stop()
        if code != 0:
            raise RuntimeError(f"the hub exited with {code}")


def _heartbeat() -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"msg_id": uuid.uuid4().hex, "ts": now, "seq": 1, "agent_version": "0.1.0", "uptime_s": 60.0}


# -- the page -------------------------------------------------------------------------------


def console_files_at(commit: str | None) -> Callable[[str], bytes | None]:
    """The console's file at a path under hub/console/ (None: missing), from `commit` or (None) the working tree."""
    cache: dict[str, bytes | None] = {}

    def read(path: str) -> bytes | None:
        if path not in cache:
            if commit is None:
                file = ROOT / "hub" / "console" / path
                cache[path] = file.read_bytes() if file.is_file() else None
            else:
                shown = subprocess.run(
                    ["git", "show", f"{commit}:hub/console/{path}"], cwd=ROOT, capture_output=True, check=False
                )
                cache[path] = shown.stdout if shown.returncode == 0 else None
        return cache[path]

    return read


def serve_console(context: BrowserContext, hub_url: str, read: Callable[[str], bytes | None]) -> None:
    """Answer `/` and `/console/**` of the hub from `read` (routing also turns the HTTP cache off, for both variants)."""

    def console_path(url: str) -> str | None:
        if not url.startswith(hub_url):
            return None
        path = url[len(hub_url) :].split("?", 1)[0].split("#", 1)[0]
        if path in ("", "/"):
            return "index.html"
        return path[len("/console/") :] if path.startswith("/console/") else None

    def handle(route: Route) -> None:
        path = console_path(route.request.url)
        assert path is not None
        body = read(path)
        if body is None:
            route.fulfill(status=404, content_type="application/json", body=json.dumps({"error": {"code": "not_found"}}))
            return
        route.fulfill(status=200, body=body, content_type=CONTENT_TYPES.get(Path(path).suffix, "application/octet-stream"))

    context.route(lambda url: console_path(url) is not None, handle)


@dataclass
class PageFigures:
    """One fleet page: its load from navigation, an in-app visit, and its live window."""

    load_ms: float | None  # navigation start to every node in the view (None: not all shown in time)
    painted_ms: float | None  # ... and the animation frame after it
    first_ms: float | None  # navigation start to the first node in the view
    visit_ms: float | None  # an in-app visit (hash change from #/me) to every node in the view
    parts_ms: dict[str, float | None]  # in the load: when the console's files were in, the API's answers
    shown: int  # distinct nodes in the view after the load
    window_s: float
    costs_pct: dict[str, float]  # CDP metric -> % of one core over the window
    frames_per_s: float  # meter frames received by the page
    resets: int  # `event: reset` on the meter stream (the hub dropped the page)
    meter_url: str | None

    @property
    def script_pct(self) -> float:
        return self.costs_pct.get("ScriptDuration", float("nan"))

    def to_json(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "load_ms": ms(self.load_ms),
            "painted_ms": ms(self.painted_ms),
            "first_node_ms": ms(self.first_ms),
            "in_app_visit_ms": ms(self.visit_ms),
            "load_parts_ms": {k: ms(v) for k, v in self.parts_ms.items()},
            "nodes_shown": self.shown,
            "window_s": round(self.window_s, 2),
            "main_thread_pct_of_one_core": {k: round(v, 2) for k, v in self.costs_pct.items()},
            "meter_frames_per_s": round(self.frames_per_s, 1),
            "meter_stream_resets": self.resets,
            "meter_stream_url": self.meter_url,
        }


# Where a load's time went, from the resource timings (ms from the navigation's start): the last
# console file in, the session check, the node list (its last page), the last API answer before
# every node was shown.
LOAD_PARTS = """
(() => {
  const shownAt = window.__fleetScale.all ?? Infinity;
  const entries = performance.getEntriesByType("resource").filter((e) => e.responseEnd <= shownAt);
  const last = (test) => {
    const found = entries.filter((e) => test(new URL(e.name).pathname));
    return found.length ? Math.max(...found.map((e) => e.responseEnd)) : null;
  };
  return {
    files: last((p) => p.startsWith("/console/")),
    session: last((p) => p === "/api/v1/auth/me"),
    nodes: last((p) => p === "/api/v1/nodes"),
    api: last((p) => p.startsWith("/api/")),
  };
})()
"""


def signed_in_state(browser: Browser, hub_url: str) -> StorageState:
    """Storage state with the admin's session cookie, for new contexts."""
    context = browser.new_context()
    try:
        answer = context.request.post(
            f"{hub_url}/api/v1/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD, "cookie": True}
        )
        assert answer.status == 200, answer.text()
        return context.storage_state()
    finally:
        context.close()


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def _wait_shown(page: Page, timeout_s: float) -> dict[str, Any]:
    with contextlib.suppress(PlaywrightError):  # a page that never shows them all is reported, not raised
        page.wait_for_function("window.__fleetScale.painted !== null", timeout=timeout_s * 1000, polling=50)
    probe: dict[str, Any] = page.evaluate("window.__fleetScale")
    return probe


def measure_fleet_page(
    browser: Browser,
    hub_url: str,
    state: StorageState,
    nodes: int,
    read: Callable[[str], bytes | None] | None = None,
    settle_s: float = 3.0,
    window_s: float = 20.0,
    load_timeout_s: float = 15.0,
    check: Callable[[Page], None] | None = None,
    on_window: Callable[[str], None] | None = None,
    meter_params: str = "",
) -> PageFigures:
    """Load `#/fleet` in a new context (console files from `read`, or the hub's), visit it again from
    `#/me`, then watch it live for `window_s` (`check` runs on the live page before the settling time;
    `on_window` is called with "start" and "end" at the window's edges). `meter_params` (e.g. "max_rate=2") is added to the
    page's meter stream request, to try a query the page does not send yet (with `max_rate`, in place of the page's
    `coalesce`: the two do not go together)."""
    # bypass_csp: the probe's waits evaluate strings, which the hub's policy forbids.
    context = browser.new_context(viewport=VIEWPORT, storage_state=state, bypass_csp=True)
    try:
        context.add_init_script(PAGE_PROBE % nodes)
        if read is not None:
            serve_console(context, hub_url, read)
        if meter_params:
            stream = f"{hub_url}/api/v1/meter-events"
            context.route(
                lambda url: url.startswith(stream),
                lambda route: route.continue_(url=_with_params(route.request.url, meter_params)),
            )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        cdp = context.new_cdp_session(page)
        # Durations in thread ticks: the main thread's CPU time, which a busy machine inflates less than wall time.
        cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
        page.goto(f"{hub_url}/#/fleet")
        loaded = _wait_shown(page, load_timeout_s)
        parts = page.evaluate(LOAD_PARTS)
        page.evaluate("location.hash = '#/me'")
        page.wait_for_timeout(500)
        page.evaluate("window.__fleetScale.arm(); location.hash = '#/fleet'")
        visited = _wait_shown(page, load_timeout_s)
        if check is not None:
            check(page)
        page.wait_for_timeout(settle_s * 1000)
        if on_window is not None:
            on_window("start")
        before = _metrics(cdp)
        frames_before = page.evaluate("window.__fleetScale.frames")
        started = time.monotonic()
        page.wait_for_timeout(window_s * 1000)
        after = _metrics(cdp)
        elapsed = time.monotonic() - started
        if on_window is not None:
            on_window("end")
        end = page.evaluate("window.__fleetScale")
        if errors:
            raise RuntimeError(f"errors in the console's scripts: {errors}")
        wall = after["Timestamp"] - before["Timestamp"]
        costs = {name: 100 * (after[name] - before.get(name, 0.0)) / wall for name in METRICS if name in after}
        return PageFigures(
            load_ms=loaded["all"],
            painted_ms=loaded["painted"],
            first_ms=loaded["first"],
            visit_ms=visited["all"],
            parts_ms=parts,
            shown=loaded["count"],
            window_s=wall,
            costs_pct=costs,
            frames_per_s=(end["frames"] - frames_before) / elapsed,
            resets=end["resets"],
            meter_url=end["meterUrl"],
        )
    finally:
        context.close()


def _with_params(url: str, params: str) -> str:
    """`url` with `params` added; a `max_rate` replaces the URL's `coalesce` (the hub takes one or the other)."""
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    added = urllib.parse.parse_qsl(params, keep_blank_values=True)
    if any(name == "max_rate" for name, _ in added):
        pairs = [(name, value) for name, value in pairs if name != "coalesce"]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(pairs + added)))
