"""The public share page (issue 23) over plain HTTP: no account, a page with the player, Range audio that matches the
stored file, passwords refused then locked like logins, expired/revoked/used-up/unknown pages, download only when
allowed, and every open audited with the client's address."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import ShareLink
from hark_fleet.hub.services import login_throttle
from hark_fleet.hub.services.share_links import address_key

from tests.conftest import hub_database
from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist
from tests.hub.api.test_recording_upload import audit_of, completed_recording

PASSWORD = "open sesame 42"

_sites_exist = sites_exist("north")


@pytest.fixture(scope="module")
def stored(hub: HubProcess) -> tuple[Any, bytes]:
    return completed_recording(hub, seconds=1.0, name="Evening <take>")


def share(hub: HubProcess, recording_id: str, **body: Any) -> tuple[str, dict[str, Any]]:
    expires = iso(utcnow() + timedelta(days=1))
    with hub.admin() as admin:
        answer = admin.post(f"/api/v1/recordings/{recording_id}/share-links", json={"expires_at": expires, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]["token"], answer.json()["data"]["share_link"]


def visitor(hub: HubProcess) -> httpx.Client:
    """A browser-like client with no account (it keeps cookies)."""
    return httpx.Client(base_url=hub.url, timeout=15, follow_redirects=False)


def accesses(hub: HubProcess, recording_id: str, link_id: str) -> list[dict[str, Any]]:
    found = [a for a in audit_of(hub, recording_id) if a["action"] == "share_link.access"]
    return [a for a in found if a["after"]["share_link_id"] == link_id]


def test_the_page_plays_with_range_and_counts_each_open(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, data = stored
    token, link = share(hub, take.recording_id)
    with visitor(hub) as browser:
        page = browser.get(f"/s/{token}")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "Evening &lt;take&gt;" in page.text and f'src="/s/{token}/audio"' in page.text and "0:01" in page.text
        assert "expires" in page.text and "Download</a>" not in page.text
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and f"path=/s/{token}".lower() in cookie
        whole = browser.get(f"/s/{token}/audio")
        assert whole.status_code == 200 and whole.content == data
        part = browser.get(f"/s/{token}/audio", headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == data[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
        assert browser.get(f"/s/{token}/download").status_code == 403  # not allowed on this link
        assert browser.get(f"/s/{token}").status_code == 200
    with visitor(hub) as stranger:
        assert stranger.get(f"/s/{token}/audio").status_code == 403  # the audio needs an open of the page
    opens = accesses(hub, take.recording_id, link["id"])
    assert len(opens) == 2  # two page views; audio requests are not uses
    assert all(a["source_ip"] == "127.0.0.1" and a["after"]["client_address"] == "127.0.0.1" and a["at"] for a in opens)
    with hub.admin() as admin:
        assert admin.get(f"/api/v1/share-links/{link['id']}").json()["data"]["uses"] == 2


def test_a_used_up_link_says_so_but_the_granted_open_keeps_playing(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, data = stored
    token, link = share(hub, take.recording_id, max_uses=1, allow_download=True)
    with visitor(hub) as browser:
        assert browser.get(f"/s/{token}").status_code == 200
        assert browser.get(f"/s/{token}/audio", headers={"Range": "bytes=0-9"}).content == data[:10]
        download = browser.get(f"/s/{token}/download")
        assert download.status_code == 200 and download.content == data
        assert download.headers["content-disposition"].startswith("attachment")
        again = browser.get(f"/s/{token}")
        assert again.status_code == 410 and "used as many times" in again.text
        assert again.headers["content-type"].startswith("text/html")
    assert len(accesses(hub, take.recording_id, link["id"])) == 1
    assert any(a["action"] == "share_link.download" for a in audit_of(hub, take.recording_id))


def test_expired_revoked_and_unknown_links_say_which(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, _ = stored
    revoked_token, revoked = share(hub, take.recording_id)
    expired_token, expired = share(hub, take.recording_id)
    with visitor(hub) as browser:
        assert browser.get(f"/s/{revoked_token}").status_code == 200
        with hub.admin() as admin:
            assert admin.delete(f"/api/v1/share-links/{revoked['id']}").status_code == 204
        page = browser.get(f"/s/{revoked_token}")
        assert page.status_code == 410 and "revoked" in page.text
        assert browser.get(f"/s/{revoked_token}/audio").status_code == 410  # a revoke also stops an open already granted
        with hub_database(hub):
            ShareLink.update(expires_at=utcnow() - timedelta(seconds=1)).where(ShareLink.id == expired["id"]).execute()
        page = browser.get(f"/s/{expired_token}")
        assert page.status_code == 410 and "expired" in page.text
        unknown = browser.get("/s/not-a-real-token")
        assert unknown.status_code == 404 and "No share link" in unknown.text
        assert unknown.headers["referrer-policy"] == "no-referrer"


def test_a_password_is_asked_refused_when_wrong_and_locks_after_ten(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, data = stored
    token, link = share(hub, take.recording_id, password=PASSWORD)
    with visitor(hub) as browser:
        form = browser.get(f"/s/{token}")
        assert form.status_code == 200 and 'type="password"' in form.text and "<audio" not in form.text
        assert browser.get(f"/s/{token}/audio").status_code == 403
        wrong = browser.post(f"/s/{token}", data={"password": "not the password"})
        assert wrong.status_code == 403 and "The password is wrong." in wrong.text and 'type="password"' in wrong.text
        right = browser.post(f"/s/{token}", data={"password": PASSWORD})
        assert right.status_code == 303 and right.headers["location"] == f"/s/{token}"
        assert browser.get(f"/s/{token}/audio").status_code == 403  # unlocked, but the page was not opened yet
        page = browser.get(f"/s/{token}")
        assert page.status_code == 200 and "<audio" in page.text
        assert browser.get(f"/s/{token}/audio", headers={"Range": "bytes=-10"}).content == data[-10:]
    with visitor(hub) as attacker:
        for _ in range(10):  # the right password cleared the earlier wrong one: ten more lock the link
            answer = attacker.post(f"/s/{token}", json={"password": "guess guess"})
            assert answer.status_code == 403 and answer.json()["error"]["code"] == "wrong_password"
        locked = attacker.post(f"/s/{token}", json={"password": PASSWORD})
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
        assert locked.json()["error"]["code"] == "rate_limited"
        page = attacker.post(f"/s/{token}", data={"password": PASSWORD})
        assert page.status_code == 429 and "Too many wrong passwords" in page.text
    audit = audit_of(hub, take.recording_id)
    failures = [a for a in audit if a["action"] == "share_link.password"]
    assert len(failures) == 11 and all(a["outcome"] == "failure" and a["source_ip"] == "127.0.0.1" for a in failures)
    assert any(a["action"] == "share_link.lockout" for a in audit)
    assert len(accesses(hub, take.recording_id, link["id"])) == 1


def test_an_address_locked_out_is_refused_on_every_link(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, _ = stored
    token, _ = share(hub, take.recording_id, password=PASSWORD)
    now = utcnow()
    with hub_database(hub):
        state = login_throttle.ThrottleState(0, now, now + timedelta(minutes=1), 1)
        login_throttle.store(address_key("127.0.0.1"), state)
    try:
        with visitor(hub) as browser:
            answer = browser.post(f"/s/{token}", json={"password": PASSWORD})
            assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    finally:
        with hub_database(hub):
            login_throttle.clear(address_key("127.0.0.1"))
    with visitor(hub) as browser:
        assert browser.post(f"/s/{token}", json={"password": PASSWORD}).status_code == 200
