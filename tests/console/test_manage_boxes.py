"""Managing boxes in the console, in real headless Chromium against a real hub and real nodes: a new
box found by mDNS and claimed from its form, a box enrolled by hand, renaming, retagging and moving a
node, deleting after a preview that names what stands in the way, a technician PIN and token that
let a technician in at the box, and none of it for a viewer. Phone and desktop screenshots."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.axe import FAILING_IMPACTS, axe_source, describe
from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.console.test_console import sign_in, sign_in_as_viewer
from tests.harness import NodeProcess, enable_loopback_multicast, wait_for

SHOTS = ARTIFACTS / "manage"
VIEWER_PASSWORD = "a quiet listener 2024"


@pytest.fixture(scope="module", autouse=True)
def loopback_multicast() -> None:
    """The hub browses mDNS on loopback from its start: `lo` needs the MULTICAST flag before it."""
    enable_loopback_multicast()
    SHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture
def new_box(tmp_path: Path) -> Iterator[NodeProcess]:
    """A box just plugged in: no hub URL, no identity; it announces itself and waits to be claimed."""
    box = NodeProcess(tmp_path / "box", env_extra={"HARK_NODE_AUDIO_SOURCE": "synthetic:sine?freq=1000&dbfs=-18&channels=1"})
    box.start()
    try:
        wait_for(lambda: box.state_path.exists() and "waiting to be claimed" in box.log(), 30, "an unprovisioned node")
        yield box
    finally:
        box.stop()


def label(box: NodeProcess) -> tuple[str, str]:
    """(hardware id, claim code) as printed on the box's label."""
    state = json.loads(box.state_path.read_text())
    return state["hardware_id"], f"{state['claim_code'][:4]}-{state['claim_code'][4:]}"


def overflow(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def node_by_name(fleet: ConsoleFleet, name: str) -> dict | None:
    with fleet.hub.admin() as admin:
        rows = admin.get("/api/v1/nodes", params={"q": name}).json()["data"]
    return next((row for row in rows if row["name"] == name), None)


def open_node(page: Page, fleet: ConsoleFleet, node_id: str, name: str) -> None:
    page.goto(f"{fleet.hub.url}/#/nodes/{node_id}")
    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Administration")).to_be_visible()


def test_a_new_box_on_the_network_is_listed_claimed_from_its_form_and_becomes_a_node(
    console_fleet: ConsoleFleet, page: Page, new_box: NodeProcess
) -> None:
    hardware_id, claim_code = label(new_box)
    sign_in(page, console_fleet.hub.url)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="New boxes").click()
    expect(page.get_by_role("heading", name="New boxes")).to_be_visible()
    card = page.locator(".box-card", has=page.get_by_role("heading", name=hardware_id))
    expect(card).to_be_visible(timeout=30_000)  # mDNS, then the page's 10 s refresh
    expect(card).to_contain_text("synthetic")
    page.set_viewport_size({"width": 1440, "height": 900})
    page.screenshot(path=str(SHOTS / "discovered-1440.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 860})
    assert overflow(page) <= 0, "the new boxes page scrolls sideways on a phone"
    page.screenshot(path=str(SHOTS / "discovered-390.png"), full_page=True)

    # A wrong code is refused by the box, said in words, and enrolls nothing.
    card.get_by_label("Claim code").fill("0000-0000")
    card.get_by_label("Name").fill("Roof box")
    card.get_by_role("button", name="Claim this box").click()
    expect(card.get_by_role("alert")).to_contain_text("The box refused the claim code")
    assert node_by_name(console_fleet, "Roof box") is None

    card.get_by_label("Claim code").fill(claim_code.lower())
    card.get_by_label("Site").fill("north")
    card.get_by_label("Tags").fill("roof, west")
    card.get_by_role("button", name="Claim this box").click()
    expect(card.get_by_role("status")).to_contain_text("Claimed as Roof box at north")
    card.get_by_role("link", name="Roof box").click()
    expect(page.get_by_role("heading", name="Roof box", exact=True)).to_be_visible()

    node = node_by_name(console_fleet, "Roof box")
    assert node and node["hardware_id"] == hardware_id and node["site"] == "north" and node["tags"] == ["roof", "west"], node
    with console_fleet.hub.admin() as admin:

        def online() -> bool:
            return admin.get(f"/api/v1/nodes/{node['id']}").json()["data"]["status"] == "online"

        wait_for(online, 30, "the claimed box online", interval=0.3)
    expect(page.locator(".status-online")).to_be_visible()

    # Claimed, it no longer waits on the network: the page says no new box is there.
    page.goto(f"{console_fleet.hub.url}/#/discovered")
    expect(page.get_by_text("No new boxes are on the network.")).to_be_visible(timeout=20_000)
    page.set_viewport_size({"width": 390, "height": 860})
    assert overflow(page) <= 0, "the new boxes page scrolls sideways on a phone"
    page.screenshot(path=str(SHOTS / "discovered-empty-390.png"), full_page=True)

    # Online, it can be deleted only with force, after the preview says why.
    open_node(page, console_fleet, node["id"], "Roof box")
    page.get_by_role("button", name="Delete this node…").click()
    preview = page.get_by_role("group", name="What deleting would do")
    expect(preview).to_contain_text("The node is online")
    preview.get_by_role("button", name="Delete anyway (force)").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete anyway").click()
    expect(page).to_have_url(re.compile(r"#/fleet$"))
    with console_fleet.hub.admin() as admin:
        assert admin.get(f"/api/v1/nodes/{node['id']}").status_code == 404
        forced = admin.get("/api/v1/audit-events", params={"action": "node.delete", "target_id": node["id"]}).json()["data"]
    assert forced and forced[0]["after"]["forced"] is True, forced


def test_a_box_enrolled_by_hand_shows_its_credential_once(console_fleet: ConsoleFleet, page: Page) -> None:
    sign_in(page, console_fleet.hub.url)
    page.goto(f"{console_fleet.hub.url}/#/discovered")
    form = page.get_by_role("form", name="Enroll a box by hand")
    form.get_by_label("Name").fill("Spare")
    form.get_by_label("Site").fill("store room")
    form.get_by_label("Tags").fill("spare bad/tag")
    form.get_by_role("button", name="Enroll").click()
    expect(page.get_by_role("alert").filter(has_text="cannot be a site name")).to_contain_text("e.g. store-room")
    form.get_by_label("Site").fill("store-room")
    form.get_by_role("button", name="Enroll").click()
    expect(page.get_by_role("alert").filter(has_text="cannot be a tag")).to_contain_text("“bad/tag”")
    form.get_by_label("Tags").fill("spare")
    form.get_by_label("Hardware id").fill(f"spare-{uuid.uuid4().hex[:8]}")
    form.get_by_role("button", name="Enroll").click()
    secret = page.get_by_role("textbox", name="Credential of Spare")
    expect(secret).to_have_value(re.compile(r"^hkn_"))
    credential = secret.input_value()
    node = node_by_name(console_fleet, "Spare")
    assert node and node["status"] == "pending" and node["site"] == "store-room" and node["tags"] == ["spare"], node
    config = httpx.get(
        f"{console_fleet.hub.url}/api/v1/nodes/{node['id']}/config", headers={"Authorization": f"Bearer {credential}"}
    )
    assert config.status_code == 200, config.text  # the credential shown is the node's
    page.set_viewport_size({"width": 390, "height": 860})
    assert overflow(page) <= 0, "the enrolment form scrolls sideways on a phone"
    page.screenshot(path=str(SHOTS / "enrolled-by-hand-390.png"), full_page=True)
    page.reload()
    expect(page.get_by_role("heading", name="Enroll a box by hand")).to_be_visible()
    assert credential not in page.content()


def test_rename_retag_and_move_change_the_node(console_fleet: ConsoleFleet, page: Page) -> None:
    node_id = console_fleet.node_id("Foyer")
    sign_in(page, console_fleet.hub.url)
    open_node(page, console_fleet, node_id, "Foyer")
    form = page.get_by_role("form", name="Name, tags and site")
    expect(form.get_by_label("Name")).to_have_value("Foyer")
    expect(form.get_by_label("Site")).to_have_value("foyer")
    # The site suggestions are the fleet's sites; a new one may be typed.
    expect(form.locator("datalist option[value='main-hall']")).to_have_count(1)
    form.get_by_label("Name").fill("Foyer east")
    form.get_by_label("Tags").fill("ambience, east")
    form.get_by_label("Site").fill("lobby")
    form.get_by_role("button", name="Save changes").click()
    expect(form.get_by_role("status")).to_have_text("Saved: renamed to “Foyer east”; tags ambience, east; moved to lobby.")
    expect(page.get_by_role("heading", name="Foyer east", exact=True)).to_be_visible()
    with console_fleet.hub.admin() as admin:
        node = admin.get(f"/api/v1/nodes/{node_id}").json()["data"]
    assert (node["name"], node["tags"], node["site"]) == ("Foyer east", ["ambience", "east"], "lobby"), node
    # The page's refreshes keep the saved values in the form.
    page.wait_for_function("() => document.title.startsWith('Foyer east')")
    expect(form.get_by_label("Tags")).to_have_value("ambience, east")


def test_the_delete_preview_names_what_stands_in_the_way_and_a_free_node_is_deleted(
    console_fleet: ConsoleFleet, page: Page
) -> None:
    sign_in(page, console_fleet.hub.url)
    live = console_fleet.node_id("Stage left")
    page.set_viewport_size({"width": 1440, "height": 900})
    open_node(page, console_fleet, live, "Stage left")
    page.get_by_role("button", name="Delete this node…").click()
    preview = page.get_by_role("group", name="What deleting would do")
    expect(preview).to_contain_text("Stands in the way:")
    expect(preview).to_contain_text("The node is online: it is connected now.")
    expect(preview.get_by_role("button", name="Delete node")).to_have_count(0)
    expect(preview.get_by_role("button", name="Delete anyway (force)")).to_be_visible()
    page.locator(".node-admin").screenshot(path=str(SHOTS / "node-delete-preview-1440.png"))
    page.set_viewport_size({"width": 390, "height": 860})
    page.locator(".node-admin").screenshot(path=str(SHOTS / "node-delete-preview-390.png"))
    preview.get_by_role("button", name="Cancel").click()
    expect(preview).to_have_count(0)

    with console_fleet.hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": "Unused box", "site": "store-room"})
    assert response.status_code == 201, response.text
    free = response.json()["data"]["node"]["id"]
    open_node(page, console_fleet, free, "Unused box")
    page.get_by_role("button", name="Delete this node…").click()
    expect(preview).to_contain_text("Nothing stands in the way.")
    expect(preview.get_by_role("button", name="Delete anyway (force)")).to_have_count(0)
    preview.get_by_role("button", name="Delete node").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete Unused box?")
    dialog.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"#/fleet$"))
    with console_fleet.hub.admin() as admin:
        assert admin.get(f"/api/v1/nodes/{free}").status_code == 404


def test_a_technician_pin_and_a_token_issued_once_let_a_technician_in_at_the_box(console_fleet: ConsoleFleet, page: Page) -> None:
    box = console_fleet.nodes["Stage left"]
    assert box.node_id is not None
    page.set_viewport_size({"width": 1440, "height": 900})
    sign_in(page, console_fleet.hub.url)
    open_node(page, console_fleet, box.node_id, "Stage left")
    pin_form = page.get_by_role("form", name="Technician PIN")
    pin_form.get_by_label("New PIN").fill("12")
    pin_form.get_by_role("button", name="Set PIN").click()
    expect(pin_form.get_by_role("alert")).to_have_text("A PIN is 4 to 12 digits (0–9), nothing else.")
    pin_form.get_by_label("New PIN").fill("482913")
    pin_form.get_by_role("button", name="Set PIN").click()
    expect(pin_form.get_by_role("status")).to_contain_text("PIN set.")

    def pin_login() -> bool:
        return httpx.post(f"{box.local_url}/local/v1/login", json={"pin": "482913"}).status_code == 200

    wait_for(pin_login, 20, "the box to take the PIN", interval=0.3)
    assert httpx.post(f"{box.local_url}/local/v1/login", json={"pin": "000000"}).status_code != 200

    token_form = page.get_by_role("form", name="Technician token")
    token_form.get_by_label("Valid for").select_option(label="1 hour")
    issued_at = time.time()
    token_form.get_by_role("button", name="Issue a technician token").click()
    secret = page.get_by_role("textbox", name="Technician token for Stage left")
    expect(secret).to_be_visible()
    token = secret.input_value()
    expiry = page.locator(".token-expiry time")
    expect(expiry).to_have_text(re.compile(r"\d{1,2}:\d{2}:\d{2}.*(UTC|GMT|[A-Z]{2,5}|[+-]\d)"))
    expires = expiry.get_attribute("datetime")
    assert expires and abs(datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp() - issued_at - 3600) < 120, expires
    login = httpx.post(f"{box.local_url}/local/v1/login", json={"token": token})
    assert login.status_code == 200 and login.json()["data"]["method"] == "token", login.text
    page.locator(".node-admin").screenshot(path=str(SHOTS / "node-token-1440.png"))

    # The page's own refresh of the node (every 10 s) keeps the token on screen; a reload does not show it again.
    with page.expect_response(lambda r: r.url.endswith(f"/api/v1/nodes/{box.node_id}"), timeout=20_000):
        pass
    expect(secret).to_have_value(token)
    page.reload()
    expect(page.get_by_role("heading", name="Administration")).to_be_visible()
    expect(page.get_by_role("textbox", name="Technician token for Stage left")).to_have_count(0)
    assert token not in page.content()

    page.set_viewport_size({"width": 390, "height": 860})
    admin_box = page.locator(".node-admin").bounding_box()
    assert admin_box and admin_box["x"] >= 0 and admin_box["x"] + admin_box["width"] <= 390, admin_box
    page.locator(".node-admin").screenshot(path=str(SHOTS / "node-admin-390.png"))
    page.set_viewport_size({"width": 768, "height": 1000})
    admin_box = page.locator(".node-admin").bounding_box()
    assert admin_box and admin_box["x"] + admin_box["width"] <= 768, admin_box


def test_a_viewer_sees_none_of_it(console_fleet: ConsoleFleet, context: BrowserContext, page: Page) -> None:
    hub = console_fleet.hub
    sign_in_as_viewer(page, hub)
    expect(page.get_by_role("navigation", name="Sections").get_by_role("link", name="New boxes")).to_be_hidden()
    node_id = console_fleet.node_id("Stage left")
    page.goto(f"{hub.url}/#/nodes/{node_id}")
    expect(page.get_by_role("heading", name="Stage left", exact=True)).to_be_visible()
    expect(page.locator(".node-page dl.facts")).to_contain_text(node_id)
    expect(page.get_by_role("heading", name="Administration")).to_have_count(0)
    expect(page.get_by_role("button", name="Set PIN")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete this node…")).to_have_count(0)
    page.goto(f"{hub.url}/#/discovered")
    expect(page.get_by_role("alert")).to_have_text(
        "Your roles do not allow this page: it needs the permission node:manage. Ask an administrator."
    )
    expect(page.get_by_role("form", name="Enroll a box by hand")).to_have_count(0)


def axe_violations(page: Page, selector: str) -> list[dict]:
    """Serious and critical axe findings inside `selector` only (the rest of the page is other areas' work)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(content=axe_source())
    found = page.evaluate(
        """async (selector) => (await axe.run({ include: [[selector]] }, {
            runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
            resultTypes: ["violations"],
        })).violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map((n) => ({ target: n.target.join(" "), summary: n.failureSummary, impact: n.impact })) }))""",
        selector,
    )
    return [v for v in found if v["impact"] in FAILING_IMPACTS]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_forms_with_their_results_pass_axe_in_light_and_dark(
    console_fleet: ConsoleFleet, browser: Browser, scheme: Literal["light", "dark"]
) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme=scheme, bypass_csp=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        sign_in(page, console_fleet.hub.url)
        page.goto(f"{console_fleet.hub.url}/#/discovered")
        form = page.get_by_role("form", name="Enroll a box by hand")
        form.get_by_label("Name").fill(f"Axe {scheme}")
        form.get_by_role("button", name="Enroll").click()
        expect(page.get_by_role("textbox", name=f"Credential of Axe {scheme}")).to_be_visible()
        found = axe_violations(page, ".discovered")
        assert not found, describe(found)
        page.screenshot(path=str(SHOTS / f"discovered-{scheme}-1440.png"), full_page=True)

        open_node(page, console_fleet, console_fleet.node_id("Stage left"), "Stage left")
        page.get_by_role("button", name="Issue a technician token").click()
        expect(page.locator(".token-expiry")).to_be_visible()
        page.get_by_role("button", name="Delete this node…").click()
        expect(page.get_by_role("group", name="What deleting would do")).to_contain_text("Stands in the way:")
        found = axe_violations(page, ".node-admin")
        assert not found, describe(found)
        page.locator(".node-admin").screenshot(path=str(SHOTS / f"node-admin-{scheme}-1440.png"))
    finally:
        context.close()
    assert not errors, f"errors in the console's scripts: {errors}"
