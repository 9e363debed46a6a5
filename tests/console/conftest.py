"""A real hub with two real nodes, and headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.browser import headless_chromium
from tests.harness import ROOT, HubProcess, NodeProcess, wait_for

ARTIFACTS = ROOT / "var" / "test-artifacts" / "console"
SOURCES = {
    "Stage left": ("main-hall", ["stage"], "synthetic:sine?freq=440&dbfs=-12&channels=2"),
    "Foyer": ("foyer", ["ambience"], "synthetic:noise?dbfs=-24&channels=1"),
}
# Sites the console tests name besides the nodes' (a node's site must exist; the forms suggest these).
MORE_SITES = ("north", "store-room", "lobby")


@dataclass
class ConsoleFleet:
    """The hub, its nodes by name, and an admin token for set-up through the API."""

    hub: HubProcess
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    def node_id(self, name: str) -> str:
        node_id = self.nodes[name].node_id
        assert node_id is not None, f"{name} was started without a node id"
        return node_id


@pytest.fixture(scope="module")
def console_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    workdir = tmp_path_factory.mktemp("console")
    hub = HubProcess(workdir / "hub")
    hub.start()
    fleet = ConsoleFleet(hub)
    try:
        for site in sorted({s for s, _, _ in SOURCES.values()} | set(MORE_SITES)):
            hub.ensure_site(site)
        with hub.admin() as admin:
            for name, (site, tags, source) in SOURCES.items():
                response = admin.post("/api/v1/nodes/enroll", json={"name": name, "site": site, "tags": tags})
                assert response.status_code == 201, response.text
                data = response.json()["data"]
                node = NodeProcess(
                    workdir / f"node-{uuid.uuid4().hex[:6]}",
                    hub.url,
                    data["node"]["id"],
                    data["credential"],
                    env_extra={"HARK_NODE_AUDIO_SOURCE": source},
                )
                node.start()
                fleet.nodes[name] = node

            def all_online() -> bool:
                rows = admin.get("/api/v1/nodes").json()["data"]
                return len(rows) == len(SOURCES) and all(r["status"] == "online" for r in rows)

            wait_for(all_online, 30, "the console's nodes to be online", interval=0.2)
        yield fleet
    finally:
        for node in fleet.nodes.values():
            node.stop()
        code = hub.stop()
        assert code == 0, f"hark-hub exited with {code}:\n{hub.log()}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def checked(browser: Browser) -> Iterator[BrowserContext]:
    """A context axe may run in (the console's CSP refuses inline scripts otherwise)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page whose script errors fail the test."""
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    assert not errors, f"errors in the console's scripts: {errors}"


def report_hub_storage_full(hub: HubProcess) -> dict:
    """The hub's own critical event for a full data disk, raised through the API as the disk watch would; the event."""
    with hub.admin() as admin:
        answer = admin.post(
            "/api/v1/health-events",
            json={
                "kind": "hub.storage_full",
                "severity": "critical",
                "details": {"path": "/var/lib/hark-hub", "free_bytes": 0, "recover_above_bytes": 25165824},
            },
        )
    assert answer.status_code == 201, answer.text
    event: dict = answer.json()["data"]
    return event
