"""Notification channels (issue 21): the family's shape, write-only secrets, the webhook signing secret shown once,
every problem in one 400 that changes nothing, versions, site scope, and deletes that drop only what was unsent."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Notification, NotificationChannel, NotificationDelivery, NotificationGate
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist

CHANNELS = "/api/v1/notification-channels"
PASSWORD = "notify-test-password-1"
SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/slack-secret-token-1"
MATRIX_TOKEN = "syt_matrix-secret-token-2"

_sites_exist = sites_exist("north", "south")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def slack(**extra: Any) -> dict[str, Any]:
    return {"name": unique("slack"), "kind": "slack", "secrets": {"webhook_url": SLACK_URL}, **extra}


def webhook(**extra: Any) -> dict[str, Any]:
    return {"name": unique("hook"), "kind": "webhook", "config": {"url": "https://receiver.example.org/hark"}, **extra}


def matrix(**extra: Any) -> dict[str, Any]:
    return {
        "name": unique("matrix"),
        "kind": "matrix",
        "config": {"homeserver_url": "https://matrix.example.org/", "room_id": "!ops:example.org"},
        "secrets": {"access_token": MATRIX_TOKEN},
        **extra,
    }


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(CHANNELS, json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def user(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> httpx.Client:
    """A client of a new user with these roles (limited to `sites` when given)."""
    username = unique("notify-user")
    body: dict[str, Any] = {"username": username, "password": PASSWORD, "roles": roles}
    if sites is not None:
        body["sites"] = sites
    with hub.admin() as admin:
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.client(hub.login(username, PASSWORD))


def audit_events(hub: HubProcess, **params: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        events: list[dict[str, Any]] = admin.get("/api/v1/audit-events", params={**params, "limit": "200"}).json()["data"]
    return list(reversed(events))


def channel_count(hub: HubProcess) -> int:
    with hub_database(hub):
        return int(NotificationChannel.select().count())


def test_a_channel_is_created_listed_faceted_exported_and_never_shows_its_secret(hub: HubProcess) -> None:
    with hub.admin() as admin:
        channel = create(admin, matrix(description="the ops room", site="north"))
        assert (channel["kind"], channel["site"], channel["enabled"], channel["version"]) == ("matrix", "north", True, 1)
        assert channel["secrets_set"] == ["access_token"] and "signing_secret" not in channel
        assert channel["config"] == {"homeserver_url": "https://matrix.example.org", "room_id": "!ops:example.org"}
        assert channel["target"] == "!ops:example.org on matrix.example.org"
        assert channel["subscription"]["min_severity"] == "warning"  # the default subscription
        assert {"health.opened", "node.offline", "upload.failed"} <= set(channel["subscription"]["events"])
        assert (channel["last_test"], channel["last_delivery_at"]) == (None, None)
        assert channel["created_by"]["name"] == "admin"
        detail = admin.get(f"{CHANNELS}/{channel['id']}")
        assert detail.status_code == 200
        actions = detail.json()["data"]["actions"]
        assert set(actions) == {"update", "config", "test", "enable", "disable", "delete"}
        assert actions["delete"] == {"allowed": True, "reason": None} and actions["enable"]["allowed"] is False
        assert admin.get(f"{CHANNELS}/{channel['id']}/actions").json()["data"] == actions
        listed = admin.get(CHANNELS, params={"kind": "matrix", "q": channel["name"]})
        assert [c["id"] for c in listed.json()["data"]] == [channel["id"]]
        assert admin.get(CHANNELS, params={"kind": "slack", "q": channel["name"]}).json()["data"] == []
        assert admin.get(CHANNELS, params={"site": "south", "q": channel["name"]}).json()["data"] == []
        assert admin.get(CHANNELS, params={"enabled": "maybe"}).status_code == 400
        assert admin.get(CHANNELS, params={"kind": "pager"}).status_code == 400
        facets = admin.get(f"{CHANNELS}/facets", params={"fields": "kind,site", "q": channel["name"]}).json()["data"]
        assert facets["kind"] == [{"value": "matrix", "count": 1}] and facets["site"] == [{"value": "north", "count": 1}]
        exported = admin.get(f"{CHANNELS}/export", params={"format": "csv", "q": channel["name"]})
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["id"] for r in rows] == [channel["id"]] and rows[0]["target"] == channel["target"]
        selection = admin.post(f"{CHANNELS}/export", params={"format": "ndjson"}, json={"ids": [channel["id"]]})
        assert [json.loads(line)["id"] for line in selection.text.splitlines()] == [channel["id"]]
        texts = [detail.text, listed.text, exported.text, selection.text]
    assert all(MATRIX_TOKEN not in text for text in texts)
    created = audit_events(hub, target_id=channel["id"])
    assert [e["action"] for e in created] == ["notification_channel.create"]
    assert created[0]["after"]["secrets_set"] == ["access_token"]
    assert MATRIX_TOKEN not in json.dumps(created) and MATRIX_TOKEN not in hub.log()


def test_a_webhook_signing_secret_is_made_by_the_hub_and_shown_once_then_again_new_on_put_config(hub: HubProcess) -> None:
    with hub.admin() as admin:
        channel = create(admin, webhook())
        first = channel["signing_secret"]
        assert first.startswith("whsec_") and channel["secrets_set"] == ["signing_secret"]
        assert channel["target"] == "receiver.example.org"
        detail = admin.get(f"{CHANNELS}/{channel['id']}").text
        listed = admin.get(CHANNELS, params={"q": channel["name"]}).text
        assert first not in detail and first not in listed and 'signing_secret":' not in detail

        given = admin.post(CHANNELS, json=webhook(secrets={"signing_secret": "whsec_mine"}))
        assert given.status_code == 400 and set(given.json()["error"]["fields"]) == {"secrets.signing_secret"}

        rotated = admin.put(f"{CHANNELS}/{channel['id']}/config", json={"config": {"url": "https://other.example.org/in"}})
        assert rotated.status_code == 200, rotated.text
        data = rotated.json()["data"]
        second = data["signing_secret"]
        assert second.startswith("whsec_") and second != first
        assert (data["target"], data["version"], data["last_test"]) == ("other.example.org", 2, None)
        again = admin.get(f"{CHANNELS}/{channel['id']}").json()["data"]
        assert "signing_secret" not in again and again["config"] == {"url": "https://other.example.org/in"}
    events = audit_events(hub, target_id=channel["id"])
    assert [e["action"] for e in events] == ["notification_channel.create", "notification_channel.config"]
    config = events[1]
    assert config["before"]["config"] == {"url": "https://receiver.example.org/hark"}
    assert config["after"]["secrets_set"] == ["signing_secret"]
    dumped = json.dumps(events)
    assert first not in dumped and second not in dumped and first not in hub.log() and second not in hub.log()


def test_put_config_replaces_config_and_secrets_whole_and_checks_them(hub: HubProcess) -> None:
    with hub.admin() as admin:
        channel = create(admin, slack())
        url = f"{CHANNELS}/{channel['id']}/config"
        missing = admin.put(url, json={"secrets": {}})
        assert missing.status_code == 400 and set(missing.json()["error"]["fields"]) == {"secrets.webhook_url"}
        wrong = admin.put(url, json={"config": {"url": "https://x.example.org"}, "secrets": {"webhook_url": "ftp://x"}})
        assert wrong.status_code == 400 and set(wrong.json()["error"]["fields"]) == {"config.url", "secrets.webhook_url"}
        unknown = admin.put(url, json={"config": {}, "secrets": {"webhook_url": SLACK_URL}, "colour": "red"})
        assert unknown.status_code == 400 and "colour" in json.dumps(unknown.json()["error"])
        assert admin.get(f"{CHANNELS}/{channel['id']}").json()["data"]["version"] == 1  # nothing changed
        new_url = "https://hooks.slack.com/services/T0000/B0000/slack-secret-token-9"
        replaced = admin.put(url, json={"secrets": {"webhook_url": new_url}})
        assert replaced.status_code == 200 and replaced.json()["data"]["version"] == 2
        assert "signing_secret" not in replaced.json()["data"] and new_url not in replaced.text
        assert admin.put(f"{CHANNELS}/nch_nope/config", json={"secrets": {"webhook_url": new_url}}).status_code == 404
    assert new_url not in json.dumps(audit_events(hub, target_id=channel["id"])) and new_url not in hub.log()


def test_every_problem_of_a_new_channel_is_named_in_one_400_and_nothing_is_saved(hub: HubProcess) -> None:
    before = channel_count(hub)
    with hub.admin() as admin:
        unknown = admin.post(CHANNELS, json={"name": unique("x"), "kind": "pager"})
        assert unknown.status_code == 400 and set(unknown.json()["error"]["fields"]) == {"kind"}
        nameless = admin.post(CHANNELS, json={"kind": "webhook", "config": {"url": "gopher://x"}})
        assert set(nameless.json()["error"]["fields"]) == {"name", "config.url"}
        everything = admin.post(
            CHANNELS,
            json={
                "name": " padded ",
                "kind": "email",
                "site": "atlantis",
                "description": "d" * 501,
                "config": {"host": "smtp.example.org", "port": 0, "security": "rot13", "recipients": [], "colour": "red"},
                "secrets": {"password": "pw", "api_key": "k"},
                "subscription": {"min_severity": "loud", "events": []},
            },
        )
        assert everything.status_code == 400
        fields = everything.json()["error"]["fields"]
        assert {
            "name",
            "site",
            "description",
            "config.port",
            "config.security",
            "config.recipients",
            "config.sender",
            "config.colour",
            "secrets.api_key",
            "subscription.min_severity",
            "subscription.events",
        } <= set(fields), fields
        not_json = admin.post(CHANNELS, content=b"{nope", headers={"Content-Type": "application/json"})
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_request"
        wrong_type = admin.post(CHANNELS, json={"name": unique("x"), "kind": "slack", "enabled": "yes"})
        assert wrong_type.status_code == 400 and "enabled" in wrong_type.json()["error"]["fields"]
        stranger = admin.post(CHANNELS, json={**slack(), "owner": "me"})
        assert stranger.status_code == 400
        taken = create(admin, slack())
        duplicate = admin.post(CHANNELS, json=slack(name=taken["name"]))
        assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "conflict"
    assert channel_count(hub) == before + 1


def test_a_change_names_its_fields_guards_its_version_and_points_config_at_put(hub: HubProcess) -> None:
    with hub.admin() as admin:
        channel = create(admin, slack(site="north"))
        other = create(admin, slack())
        url = f"{CHANNELS}/{channel['id']}"
        for name in ("config", "secrets"):
            refused = admin.patch(url, json={name: {"webhook_url": SLACK_URL}})
            assert refused.status_code == 400, refused.text
            assert set(refused.json()["error"]["fields"]) == {name}
            assert f"PUT {CHANNELS}/{channel['id']}/config" in refused.json()["error"]["fields"][name]
        kind = admin.patch(url, json={"kind": "discord"})
        assert kind.status_code == 400 and set(kind.json()["error"]["fields"]) == {"kind"}
        bad = admin.patch(url, json={"name": "", "site": "atlantis", "subscription": {"min_severity": "loud"}})
        assert bad.status_code == 400
        assert set(bad.json()["error"]["fields"]) == {"name", "site", "subscription.min_severity"}
        foreign_site = admin.patch(url, json={"subscription": {"sites": ["south"]}})
        assert foreign_site.status_code == 400 and set(foreign_site.json()["error"]["fields"]) == {"subscription.sites"}
        assert admin.patch(url, json={"name": other["name"]}).status_code == 409
        assert admin.get(url).json()["data"]["version"] == 1  # none of that changed anything

        quiet = {"start": "22:00", "end": "07:00", "time_zone": "Europe/London", "critical_breaks_through": True}
        changed = admin.patch(
            url,
            json={
                "enabled": False,
                "description": "night shift",
                "subscription": {"events": ["health.*"], "min_severity": "critical", "quiet_hours": quiet},
                "version": 1,
            },
        )
        assert changed.status_code == 200, changed.text
        data = changed.json()["data"]
        assert (data["enabled"], data["description"], data["version"]) == (False, "night shift", 2)
        assert data["subscription"]["events"] == ["health.*"] and data["subscription"]["quiet_hours"]["end"] == "07:00"
        stale = admin.patch(url, json={"enabled": True, "version": 1})
        assert stale.status_code == 409 and admin.get(url).json()["data"]["enabled"] is False
        moved = admin.patch(url, json={"site": None, "version": 2})
        assert moved.status_code == 200 and moved.json()["data"]["site"] is None
        assert admin.patch(f"{CHANNELS}/nch_nope", json={"enabled": True}).status_code == 404
    events = audit_events(hub, target_id=channel["id"])
    assert [e["action"] for e in events] == ["notification_channel.create"] + ["notification_channel.update"] * 2
    assert events[1]["before"]["enabled"] is True and events[1]["after"]["enabled"] is False
    assert SLACK_URL not in json.dumps(events)


def test_deleting_a_channel_drops_its_unsent_notifications_and_gate_but_keeps_what_was_delivered(hub: HubProcess) -> None:
    with hub.admin() as admin:
        channel = create(admin, slack())
    ids = {}
    with hub_database(hub):
        for state in ("queued", "retrying", "delivered", "failed"):
            ids[state] = new_id("ntf")
            Notification.create(
                id=ids[state],
                channel_id=channel["id"],
                kind="node.offline",
                severity="warning",
                thread_key="node:x",
                title="x is offline",
                state=state,
                # Not due yet: the running notifier leaves them alone (it would claim and send a due one meanwhile).
                next_attempt_at=utcnow() + timedelta(days=1) if state in ("queued", "retrying") else None,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        NotificationGate.create(channel_id=channel["id"], state={"held": {}}, updated_at=utcnow())
    with hub.admin() as admin:
        assert admin.delete(f"{CHANNELS}/{channel['id']}").status_code == 204
        assert admin.get(f"{CHANNELS}/{channel['id']}").status_code == 404
        assert admin.delete(f"{CHANNELS}/{channel['id']}").status_code == 404
    with hub_database(hub):
        left = {n.id for n in Notification.select().where(Notification.channel_id == channel["id"])}
        assert left == {ids["delivered"], ids["failed"]}
        assert NotificationGate.get_or_none(NotificationGate.channel_id == channel["id"]) is None
    events = audit_events(hub, target_id=channel["id"])
    assert [e["action"] for e in events] == ["notification_channel.create", "notification_channel.delete"]
    assert events[1]["before"]["unsent_dropped"] == 2 and events[1]["before"]["name"] == channel["name"]


def test_a_site_limited_admin_sees_and_changes_only_its_sites_channels(hub: HubProcess) -> None:
    with hub.admin() as admin:
        north = create(admin, slack(site="north"))
        south = create(admin, slack(site="south"))
        hub_wide = create(admin, slack())
    with user(hub, ["admin"], ["north"]) as limited:
        listed = {c["id"] for c in limited.get(CHANNELS, params={"limit": 200}).json()["data"]}
        assert north["id"] in listed and not listed & {south["id"], hub_wide["id"]}
        exported = limited.get(f"{CHANNELS}/export", params={"format": "ndjson"}).text
        assert south["id"] not in exported and hub_wide["id"] not in exported
        for other in (south, hub_wide):
            base = f"{CHANNELS}/{other['id']}"
            assert limited.get(base).status_code == 404
            assert limited.get(f"{base}/actions").status_code == 404
            assert limited.patch(base, json={"enabled": False}).status_code == 404
            assert limited.put(f"{base}/config", json={"secrets": {"webhook_url": SLACK_URL}}).status_code == 404
            assert limited.post(f"{base}/test").status_code == 404
            assert limited.delete(base).status_code == 404
            with_saved = limited.post(f"{CHANNELS}/test", json={"kind": "slack", "channel_id": other["id"]})
            assert with_saved.status_code == 404
        assert limited.get(f"{CHANNELS}/{north['id']}").json()["data"]["actions"]["update"]["allowed"] is True

        nowhere = limited.post(CHANNELS, json=slack())
        assert nowhere.status_code == 400 and set(nowhere.json()["error"]["fields"]) == {"site"}
        elsewhere = limited.post(CHANNELS, json=slack(site="south"))
        assert elsewhere.status_code == 400 and set(elsewhere.json()["error"]["fields"]) == {"site"}
        own = create(limited, slack(site="north"))
        assert limited.patch(f"{CHANNELS}/{own['id']}", json={"site": "south"}).status_code == 400
        assert limited.patch(f"{CHANNELS}/{own['id']}", json={"site": None}).status_code == 400
        assert limited.patch(f"{CHANNELS}/{own['id']}", json={"enabled": False}).status_code == 200
        assert limited.delete(f"{CHANNELS}/{own['id']}").status_code == 204
        # The audit trail of a north channel is north's, whoever wrote it; a south channel's is not shown.
        seen = limited.get("/api/v1/audit-events", params={"limit": 200}).json()["data"]
        targets = {e["target"]["id"] for e in seen if e["action"].startswith("notification_channel.")}
        assert {north["id"], own["id"]} <= targets and south["id"] not in targets
    with user(hub, ["viewer"], ["north"]) as viewer:
        seen = viewer.get(f"{CHANNELS}/{north['id']}")
        assert seen.status_code == 200 and seen.json()["data"]["actions"]["update"]["allowed"] is False
        assert viewer.patch(f"{CHANNELS}/{north['id']}", json={"enabled": False}).status_code == 403
    with hub.admin() as admin:
        assert admin.get(f"{CHANNELS}/{north['id']}").json()["data"]["enabled"] is True


def test_a_test_to_a_refused_destination_answers_200_not_ok_and_a_saved_channel_keeps_it(hub: HubProcess) -> None:
    metadata = {"url": "http://169.254.169.254/latest/meta-data"}  # cloud metadata: refused whatever the settings
    with hub.admin() as admin:
        unsaved = admin.post(f"{CHANNELS}/test", json={"kind": "webhook", "config": metadata})
        assert unsaved.status_code == 200, unsaved.text
        answer = unsaved.json()["data"]
        assert set(answer) == {"ok", "status_code", "latency_ms", "message"}
        assert (answer["ok"], answer["status_code"]) == (False, None) and "refused" in answer["message"]

        channel = create(admin, webhook(config=metadata, site="north"))
        tested = admin.post(f"{CHANNELS}/{channel['id']}/test")
        assert tested.status_code == 200, tested.text
        result = tested.json()["data"]
        assert result["ok"] is False and "refused" in result["message"] and result["at"].endswith("Z")
        detail = admin.get(f"{CHANNELS}/{channel['id']}").json()["data"]
        assert detail["last_test"] == result and detail["version"] == 1  # a test is not a change
        deliveries = admin.get(f"{CHANNELS}/{channel['id']}/deliveries")
        assert channel["signing_secret"] not in deliveries.text
    with hub_database(hub):
        rows = list(NotificationDelivery.select().where(NotificationDelivery.channel_id == channel["id"]))
        assert [(r.test, r.outcome, r.site, r.notification_id) for r in rows] == [(True, "failed", "north", None)]
    events = audit_events(hub, target_id=channel["id"])
    assert [e["action"] for e in events] == ["notification_channel.create", "notification_channel.test"]
    assert events[1]["after"]["ok"] is False
    assert channel["signing_secret"] not in json.dumps(events)


def test_an_unsaved_test_is_checked_like_a_create_and_saves_nothing(hub: HubProcess) -> None:
    before = channel_count(hub)
    with hub.admin() as admin:
        invalid = admin.post(f"{CHANNELS}/test", json={"kind": "matrix", "config": {"room_id": "ops"}})
        assert invalid.status_code == 400
        assert set(invalid.json()["error"]["fields"]) == {"config.homeserver_url", "config.room_id", "secrets.access_token"}
        assert admin.post(f"{CHANNELS}/test", json={"kind": "pager"}).status_code == 400
        saved = create(admin, matrix())
        other_kind = admin.post(
            f"{CHANNELS}/test", json={"kind": "slack", "channel_id": saved["id"], "secrets": {"webhook_url": SLACK_URL}}
        )
        assert other_kind.status_code == 400 and set(other_kind.json()["error"]["fields"]) == {"channel_id"}
        assert admin.post(f"{CHANNELS}/test", json={"kind": "matrix", "channel_id": "nch_nope"}).status_code == 404
        # the saved access token fills in the one left out: the configuration is complete, so it is tried (and refused)
        edited = {
            "kind": "matrix",
            "channel_id": saved["id"],
            "config": {"homeserver_url": "http://169.254.169.254", "room_id": "!a:b.c"},
        }
        tried = admin.post(f"{CHANNELS}/test", json=edited)
        assert tried.status_code == 200 and tried.json()["data"]["ok"] is False, tried.text
        assert MATRIX_TOKEN not in tried.text
    assert channel_count(hub) == before + 1
    unsaved = audit_events(hub, action="notification_channel.test_unsaved")
    assert unsaved and all(e["after"]["saved"] is False for e in unsaved)
    assert MATRIX_TOKEN not in json.dumps(unsaved) and SLACK_URL not in json.dumps(unsaved)
