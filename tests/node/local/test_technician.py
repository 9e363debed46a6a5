"""The technician's endpoint on a real enrolled node with a real hub: PIN and token, rate limit, the routes
with the hub stopped, and the local-action log reaching the hub's audit log once it is back."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.harness import wait_for
from tests.node.local.technician_site import PIN, Site, start_site

pytestmark = pytest.mark.slow


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    started = start_site(tmp_path)
    yield started
    assert started.node.stop() == 0, started.node.log()
    if started.hub.proc is not None:
        assert started.hub.stop() == 0, started.hub.log()


def test_the_hub_keeps_only_a_hash_of_the_pin_and_the_node_accepts_it(site: Site) -> None:
    stored = json.loads(site.access_file.read_text())
    assert stored["pin_hash"].startswith("$argon2id$") and PIN not in site.access_file.read_text()
    assert PIN not in site.hub.log() and PIN not in site.node.log()
    assert httpx.get(site.local("status")).status_code == 401
    with site.session(pin=PIN) as technician:
        status = technician.get(site.local("status")).json()["data"]
    assert status["identity"]["node_id"] == site.node_id and status["session"]["method"] == "pin"
    assert status["broker"]["connected"] is True and status["hub"]["reachable"] is True
    assert status["system"]["disk"]["free_bytes"] > 0 and status["network"]
    assert status["audio"]["inputs"] == 2 and status["outbox"]["capacity"] > 0


def test_the_hub_last_contact_follows_the_hubs_acknowledgements_not_only_the_config_fetch(site: Site) -> None:
    with site.session(pin=PIN) as technician:
        def last_contact() -> datetime:
            return datetime.fromisoformat(technician.get(site.local("status")).json()["data"]["hub"]["last_contact"])

        first = last_contact()
        # Heartbeats go every second in the tests and the hub acknowledges each: the contact moves on.
        later = wait_for(lambda: (t := last_contact()) > first and t, 15, "a later hub contact", interval=0.5)
    assert (datetime.now(UTC) - later).total_seconds() < 10


def test_a_hub_signed_token_is_accepted_and_a_forged_or_other_nodes_token_is_refused(site: Site) -> None:
    with site.hub.admin() as admin:
        issued = admin.post(f"/api/v1/nodes/{site.node_id}/technician-token", json={"ttl_s": 600})
        assert issued.status_code == 201, issued.text
        token = issued.json()["data"]["token"]
        other = admin.post("/api/v1/nodes/enroll", json={"name": "Other", "site": "hall"}).json()["data"]["node"]["id"]
        foreign = admin.post(f"/api/v1/nodes/{other}/technician-token", json={}).json()["data"]["token"]
    with site.session(token=token) as technician:
        assert technician.get(site.local("status")).json()["data"]["session"]["who"] == "admin"
    assert site.login(token=foreign).status_code == 403
    head, body, _ = token.split(".")
    assert site.login(token=f"{head}.{body}.AAAA").status_code == 403


def test_wrong_pins_are_refused_and_limited_to_five_a_minute(site: Site) -> None:
    answers = [site.login(pin="000000") for _ in range(6)]
    assert [a.status_code for a in answers] == [403] * 5 + [429]
    assert int(answers[5].headers["Retry-After"]) > 0
    assert site.login(pin=PIN).status_code == 429  # even the right PIN waits


def test_with_the_hub_stopped_the_endpoint_works_and_its_log_reaches_the_hub_when_it_returns(site: Site) -> None:
    assert site.hub.stop() == 0
    with site.session(pin=PIN) as technician:
        status = technician.get(site.local("status")).json()["data"]
        recorded = technician.post(site.local("test-recording"), json={"duration_s": 2})
        assert recorded.status_code == 200, recorded.text
        wav = technician.get(site.local("test-recording"))
        assert wav.headers["Content-Type"] == "audio/wav"
        with wave.open(io.BytesIO(wav.content)) as parsed:
            assert parsed.getnchannels() == 2 and 1.9 <= parsed.getnframes() / parsed.getframerate() <= 2.1
        assert technician.post(site.local("identify"), json={"duration_s": 0.2}).status_code == 200
        bundle = technician.get(site.local("diagnostics"))
        assert "attachment" in bundle.headers["Content-Disposition"]
        assert site.credential not in bundle.text and "$argon2" not in bundle.text and bundle.json()["log"]
        report = technician.post(site.local("commissioning"), json={"duration_s": 2}).json()["data"]
        with technician.stream("GET", site.local("meters")) as stream:
            frames = []
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line[6:]))
                if len(frames) == 3:
                    break
    assert status["identity"]["node_id"] == site.node_id
    assert report["hub"]["reachable"] is False and report["upload"]["ok"] is False and report["passed"] is False
    assert [c["signal"] for c in report["channels"]] == [True, True]
    assert frames[0]["channels"][0]["peak_dbfs"] > -20
    site.hub.start()
    wanted = {"technician.login", "technician.test_recording", "technician.identify", "technician.diagnostics"}
    wait_for(lambda: wanted <= {r["action"] for r in site.audit_actions()}, 40, "the local actions in the hub's audit log")
    login = next(r for r in site.audit_actions() if r["action"] == "technician.login")
    assert login["actor"] == {"type": "technician", "id": f"pin@{site.node_id}", "name": "PIN user at Box"}
    assert login["target"] == {"type": "node", "id": site.node_id} and login["after"]["who"] == "PIN holder"


def test_the_hub_audits_local_actions_with_the_technician_as_actor_and_the_node_as_target(site: Site) -> None:
    with site.hub.admin() as admin:
        me = admin.get("/api/v1/auth/me").json()["data"]["user"]
        token = admin.post(f"/api/v1/nodes/{site.node_id}/technician-token", json={"ttl_s": 600}).json()["data"]["token"]
    with site.session(token=token) as technician:
        assert technician.post(site.local("identify"), json={"duration_s": 0.2}).status_code == 200
    with site.session(pin=PIN) as technician:
        assert technician.post(site.local("identify"), json={"duration_s": 0.2}).status_code == 200
    assert site.login(pin="000000").status_code == 403
    head, body, _ = token.split(".")
    assert site.login(token=f"{head}.{body}.AAAA").status_code == 403

    def settled() -> bool:
        rows = site.audit_actions()
        identified = [r for r in rows if r["action"] == "technician.identify"]
        refused = [r for r in rows if r["action"] == "technician.login" and r["outcome"] == "failure"]
        return len(identified) == 2 and len(refused) == 2

    wait_for(settled, 40, "the local actions in the hub's audit log")
    rows = site.audit_actions()
    by_pin, by_token = [r for r in rows if r["action"] == "technician.identify"]  # newest first
    node = {"id": site.node_id, "name": "Box"}
    assert by_token["actor"] == {"type": "technician", "id": me["id"], "name": "admin"}
    assert by_pin["actor"] == {"type": "technician", "id": f"pin@{site.node_id}", "name": "PIN user at Box"}
    for row in (by_token, by_pin):
        assert row["target"] == {"type": "node", "id": site.node_id} and row["site"] == "hall"
        assert row["after"]["node"] == node and row["source_ip"] == "127.0.0.1" and row["outcome"] == "success"
    assert (by_token["after"]["method"], by_token["after"]["subject"], by_pin["after"]["method"]) == ("token", me["id"], "pin")
    forged, wrong_pin = [r for r in rows if r["action"] == "technician.login" and r["outcome"] == "failure"]
    for row, method in ((wrong_pin, "pin"), (forged, "token")):
        assert row["actor"] == {"type": "technician", "id": None, "name": "unidentified technician at Box"}
        assert row["target"] == {"type": "node", "id": site.node_id} and row["after"]["node"] == node
        assert row["after"]["method"] == method
    assert forged["after"]["claimed_subject"] == me["id"]  # what the refused token said, not who it proves
    with site.hub.admin() as admin:
        mine = admin.get("/api/v1/audit-events", params={"actor_id": me["id"], "actor_type": "technician"}).json()["data"]
    assert [r["action"] for r in mine] == ["technician.identify", "technician.login"]


def test_a_commissioning_report_is_stored_with_the_node_at_the_hub(site: Site) -> None:
    with site.session(pin=PIN) as technician:
        report = technician.post(site.local("commissioning"), json={"duration_s": 2}).json()["data"]
    assert report["hub"]["reachable"] is True and report["upload"]["ok"] is True, report
    assert report["passed"] is True and len(report["channels"]) == 2
    assert all(-20 < c["peak_dbfs"] < -6 and not c["clipping"] for c in report["channels"])
    with site.hub.admin() as admin:
        stored = admin.get(f"/api/v1/nodes/{site.node_id}/commissioning-reports").json()["data"]
    assert stored[0]["id"] == report["upload"]["report_id"] and stored[0]["report"]["channel_map"] == report["channel_map"]
