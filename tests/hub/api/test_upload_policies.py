"""Upload policies: create/read/update/delete with every problem in one 400, versions, the direct route's S3-only rule,
list filters, facets and export, hub-wide writes, audit, and applying a policy to the recordings already there."""

from __future__ import annotations

import csv
import io
import json

from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist
from tests.hub.api.test_recording_upload import completed_recording
from tests.hub.api.uploads import (
    POLICIES,
    QUEUE,
    audit_actions,
    create_policy,
    disable_other_policies,
    item_row,
    provider,
    unique,
    user,
)

_sites_exist = sites_exist("north", "south")


def test_a_policy_takes_the_defaults_reads_back_with_its_providers_and_is_audited(hub: HubProcess) -> None:
    local = provider(hub)
    policy = create_policy(hub, [local])
    assert policy["criteria"] == {
        "sites": [],
        "node_ids": [],
        "profile_ids": [],
        "tags": [],
        "statuses": ["completed", "interrupted"],
    }
    assert policy["key_template"] == "{site}/{node}/{yyyy}/{mm}/{dd}/{recording_id}.{ext}"
    assert (policy["key_time_zone"], policy["when"], policy["route"], policy["enabled"]) == ("utc", "completed", "via_hub", True)
    assert (policy["window_start"], policy["window_end"], policy["bandwidth_cap_bps"], policy["version"]) == (None, None, None, 1)
    with hub.admin() as admin:
        detail = admin.get(f"{POLICIES}/{policy['id']}").json()["data"]
        assert detail["providers"] == [{"id": local, "name": detail["providers"][0]["name"], "kind": "local", "enabled": False}]
        assert detail["actions"]["apply"] == {"allowed": True, "reason": None}
        assert admin.get(f"{POLICIES}/{policy['id']}/actions").json()["data"] == detail["actions"]
        assert admin.get(f"{POLICIES}/nope").status_code == 404
        disable_other_policies(hub)
    assert audit_actions(hub, policy["id"])[:1] == ["upload_policy.create"]


def test_every_problem_is_named_in_one_400_and_nothing_is_made(hub: HubProcess) -> None:
    name = unique("bad")
    body = {
        "name": name,
        "provider_ids": ["upp_missing"],
        "criteria": {"sites": ["atlantis"], "statuses": ["failed"], "tags": [""]},
        "key_template": "{site}/{nope}.wav",
        "key_time_zone": "mars",
        "when": "window",
        "window_start": "25:00",
        "bandwidth_cap_bps": 10,
        "priority": 5000,
    }
    with hub.admin() as admin:
        refused = admin.post(POLICIES, json=body)
        assert refused.status_code == 400, refused.text
        fields = refused.json()["error"]["fields"]
        assert set(fields) == {
            "provider_ids",
            "criteria.sites",
            "criteria.statuses",
            "criteria.tags",
            "key_template",
            "key_time_zone",
            "window_start",
            "window_end",
            "bandwidth_cap_bps",
            "priority",
        }, fields
        assert "upp_missing" in fields["provider_ids"] and "atlantis" in fields["criteria.sites"]
        assert "{nope}" in fields["key_template"]
        assert admin.get(POLICIES, params={"name": name}).json()["data"] == []
        missing = admin.post(POLICIES, json={})
        assert missing.status_code == 400 and {"name", "provider_ids"} <= set(missing.json()["error"]["fields"])
        unknown = admin.post(POLICIES, json={"name": unique("p"), "provider_ids": [provider(hub)], "criteria": {"colour": []}})
        assert unknown.status_code == 400 and "criteria.colour" in unknown.json()["error"]["fields"]
        no_id = admin.post(POLICIES, json={"name": unique("p"), "provider_ids": [provider(hub)], "key_template": "{site}.wav"})
        assert "recording_id" in no_id.json()["error"]["fields"]["key_template"]
        window_without_when = admin.post(
            POLICIES, json={"name": unique("p"), "provider_ids": [provider(hub)], "window_start": "01:00"}
        )
        assert window_without_when.json()["error"]["fields"] == {"window_start": "only with when=window (null otherwise)"}


def test_the_direct_route_takes_only_s3_providers_and_the_400_names_the_other(hub: HubProcess) -> None:
    s3, local = provider(hub, "s3"), provider(hub, "local")
    with hub.admin() as admin:
        refused = admin.post(POLICIES, json={"name": unique("direct"), "provider_ids": [s3, local], "route": "direct"})
        assert refused.status_code == 400
        why = refused.json()["error"]["fields"]["route"]
        assert "is local" in why and "S3" in why, why
    policy = create_policy(hub, [s3], route="direct", enabled=False)
    assert policy["route"] == "direct"


def test_a_window_may_wrap_midnight_a_stale_version_is_409_and_leaving_the_window_drops_it(hub: HubProcess) -> None:
    policy = create_policy(hub, [provider(hub)], when="window", window_start="22:00", window_end="04:30", enabled=False)
    assert (policy["window_start"], policy["window_end"]) == ("22:00", "04:30")
    url = f"{POLICIES}/{policy['id']}"
    with hub.admin() as admin:
        same = admin.post(
            POLICIES,
            json={
                "name": unique("p"),
                "provider_ids": [provider(hub)],
                "when": "window",
                "window_start": "03:00",
                "window_end": "03:00",
            },
        )
        assert set(same.json()["error"]["fields"]) == {"window_end"}
        changed = admin.patch(url, json={"bandwidth_cap_bps": 1_000_000, "version": 1})
        assert changed.status_code == 200 and changed.json()["data"]["version"] == 2
        stale = admin.patch(url, json={"priority": 3, "version": 1})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
        unchanged = admin.patch(url, json={"bandwidth_cap_bps": 1_000_000})
        assert unchanged.json()["data"]["version"] == 2  # nothing changed: no new version
        plain = admin.patch(url, json={"when": "completed"}).json()["data"]
        assert (plain["when"], plain["window_start"], plain["window_end"], plain["version"]) == ("completed", None, None, 3)
        bad = admin.patch(url, json={"route": "sideways", "provider_ids": []})
        assert set(bad.json()["error"]["fields"]) == {"route", "provider_ids"}
        assert admin.get(url).json()["data"]["version"] == 3
        taken = admin.post(POLICIES, json={"name": plain["name"], "provider_ids": [provider(hub)]})
        assert taken.status_code == 409
    assert audit_actions(hub, policy["id"]) == ["upload_policy.create", "upload_policy.update", "upload_policy.update"]


def test_filters_facets_and_export_of_policies(hub: HubProcess) -> None:
    s3 = provider(hub, "s3")
    direct = create_policy(hub, [s3], route="direct", enabled=False, description="to the bucket")
    with hub.admin() as admin:
        by_provider = admin.get(POLICIES, params={"provider_id": s3}).json()["data"]
        assert [p["id"] for p in by_provider] == [direct["id"]]
        assert direct["id"] in [
            p["id"] for p in admin.get(POLICIES, params={"route": "direct", "enabled": "false"}).json()["data"]
        ]
        assert direct["id"] not in [p["id"] for p in admin.get(POLICIES, params={"enabled": "true"}).json()["data"]]
        bad = admin.get(POLICIES, params={"route": "sideways", "enabled": "maybe", "colour": "red"})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"route", "enabled", "colour"}
        facets = admin.get(f"{POLICIES}/facets", params={"fields": "route,provider_id", "provider_id": s3}).json()["data"]
        assert facets == {"route": [{"value": "direct", "count": 1}], "provider_id": [{"value": s3, "count": 1}]}
        exported = admin.get(f"{POLICIES}/export", params={"format": "csv", "q": "to the bucket"})
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["id"] for r in rows] == [direct["id"]] and rows[0]["provider_ids"] == s3
        selected = admin.post(f"{POLICIES}/export", params={"format": "ndjson"}, json={"ids": [direct["id"]]})
        assert [json.loads(line)["id"] for line in selected.text.splitlines()] == [direct["id"]]


def test_policies_are_hub_wide_a_site_limited_manager_reads_them_but_cannot_change_them(hub: HubProcess) -> None:
    policy = create_policy(hub, [provider(hub)], enabled=False)
    north_admin = user(hub, ["admin"], ["north"])
    viewer = user(hub, ["viewer"])
    with hub.client(north_admin) as client:
        assert client.get(f"{POLICIES}/{policy['id']}").status_code == 200
        refused = client.patch(f"{POLICIES}/{policy['id']}", json={"priority": 1})
        assert refused.status_code == 403 and "on every site" in refused.json()["error"]["message"]
        assert client.post(POLICIES, json={"name": unique("p"), "provider_ids": []}).status_code == 403
        assert client.delete(f"{POLICIES}/{policy['id']}").status_code == 403
    with hub.client(viewer) as client:
        assert client.get(POLICIES).status_code == 200
        denied = client.post(f"{POLICIES}/{policy['id']}/apply")
        assert denied.status_code == 403 and denied.json()["error"]["required"] == ["settings:manage"]


def test_applying_a_policy_queues_the_matching_recordings_already_there_and_deleting_it_drops_unstarted_items(
    hub: HubProcess,
) -> None:
    disable_other_policies(hub)
    north, _ = completed_recording(hub, site="north")
    south, _ = completed_recording(hub, site="south")
    target = provider(hub)
    policy = create_policy(hub, [target], criteria={"sites": ["north"]})
    with hub.admin() as admin:
        applied = admin.post(f"{POLICIES}/{policy['id']}/apply")
        assert applied.status_code == 200, applied.text
        result = applied.json()["data"]
        assert result["policy_id"] == policy["id"] and result["created"] >= 1 and result["matched"] >= result["created"]
        items = admin.get(QUEUE, params={"provider_id": target}).json()["data"]
        assert north.recording_id in {i["recording_id"] for i in items}
        assert south.recording_id not in {i["recording_id"] for i in items}
        again = admin.post(f"{POLICIES}/{policy['id']}/apply").json()["data"]
        assert again["created"] == 0 and again["matched"] == result["matched"]  # applying twice queues nothing new
        synced = item_row(hub, south.recording_id, target, "south", "synced", policy_id=policy["id"], node_id=south.node_id)
        assert admin.delete(f"{POLICIES}/{policy['id']}").status_code == 204
        left = admin.get(QUEUE, params={"provider_id": target}).json()["data"]
        assert [i["id"] for i in left] == [synced]  # pending items went with the policy; the synced one is history
        assert admin.get(f"{POLICIES}/{policy['id']}").status_code == 404
    assert audit_actions(hub, policy["id"]) == [
        "upload_policy.create",
        "upload.enqueue",
        "upload.enqueue",
        "upload_policy.delete",
    ]
    disabled = create_policy(hub, [target], enabled=False)
    with hub.admin() as admin:
        refused = admin.post(f"{POLICIES}/{disabled['id']}/apply")
        assert refused.status_code == 409
