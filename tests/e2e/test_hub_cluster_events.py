"""Two real `hark-hub` processes on one PostgreSQL (issue 24): what happens on one reaches the clients of the
other. An event caused on hub 1 reaches an SSE client on hub 2 with the id it has on hub 1; a client that read
events on hub 1 resumes on hub 2 with `Last-Event-ID` and misses nothing, also after hub 1 was killed with -9;
a session logged out on hub 1 is refused by hub 2 within a second, though hub 2 had just cached it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hark_fleet.hub.auth.authenticator import CACHE_TTL_S

from tests.e2e.test_notifications import add_channel, set_notify, webhook_bodies
from tests.harness import HubProcess, create_database, drop_database, running_hub, wait_for
from tests.hub.api.test_fleet import EventReader, enroll
from tests.notify_receivers import Receivers, receivers

CLUSTER_ENV = {"HARK_EMBEDDED_BROKER": "in-process"}


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def hubs(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, HubProcess]]:
    """Hub 1 and hub 2 on one database (started one after the other: the first migrates it)."""
    with running_hub(tmp_path_factory.mktemp("hub-1"), database_url=database, env_extra=CLUSTER_ENV) as one:
        with running_hub(tmp_path_factory.mktemp("hub-2"), database_url=database, env_extra=CLUSTER_ENV) as two:
            yield one, two


def of_node(reader: EventReader, kind: str, node_id: str) -> list[str]:
    """The ids of the `kind` events about `node_id` the reader got."""
    return [event_id for event_id, event_kind, data in reader.events if event_kind == kind and data.get("node_id") == node_id]


def enrolled(reader: EventReader) -> list[tuple[str, str]]:
    return [(event_id, data["node_id"]) for event_id, kind, data in reader.events if kind == "node.enrolled"]


def test_an_event_caused_on_hub_1_reaches_a_client_on_hub_2_with_the_same_id(hubs: tuple[HubProcess, HubProcess]) -> None:
    one, two = hubs
    node, _ = enroll(one)
    on_one = EventReader(one, one.login(), params={"type": "node.updated"})
    on_two = EventReader(two, two.login(), params={"type": "node.updated"})
    try:
        with one.admin() as admin:
            assert admin.patch(f"/api/v1/nodes/{node['id']}", json={"name": "renamed-on-hub-1"}).status_code == 200
        wait_for(lambda: of_node(on_one, "node.updated", node["id"]), 10, "the event on hub 1")
        wait_for(lambda: of_node(on_two, "node.updated", node["id"]), 10, "the event on hub 2")
    finally:
        on_one.close()
        on_two.close()
    assert of_node(on_one, "node.updated", node["id"]) == of_node(on_two, "node.updated", node["id"])
    assert len(of_node(on_two, "node.updated", node["id"])) == 1


def test_a_client_that_read_on_hub_1_resumes_on_hub_2_and_misses_nothing(hubs: tuple[HubProcess, HubProcess]) -> None:
    one, two = hubs
    token = one.login()
    everything = EventReader(two, token, params={"type": "node.enrolled"})  # open throughout: what there is to miss
    live = EventReader(one, token, params={"type": "node.enrolled"})
    first, _ = enroll(one)
    wait_for(lambda: of_node(live, "node.enrolled", first["id"]), 10, "the live event on hub 1")
    last_id = of_node(live, "node.enrolled", first["id"])[0]
    live.close()
    missed = [enroll(one if n % 2 else two)[0]["id"] for n in range(4)]  # on both hubs, while the client is away
    resumed = EventReader(two, token, params={"type": "node.enrolled"}, last_event_id=last_id)
    later, _ = enroll(one)
    try:
        wait_for(lambda: of_node(resumed, "node.enrolled", later["id"]), 10, "the live event after the replay")
        wait_for(lambda: of_node(everything, "node.enrolled", later["id"]), 10, "the last event on the reference reader")
    finally:
        resumed.close()
        everything.close()
    assert [node_id for _, node_id in enrolled(resumed)] == [*missed, later["id"]]
    after = [entry for entry in enrolled(everything) if int(entry[0]) > int(last_id)]
    assert enrolled(resumed) == after  # the same ids, in the same order


def test_a_client_of_a_hub_killed_with_9_resumes_on_the_other_and_misses_nothing(
    hubs: tuple[HubProcess, HubProcess], database: str, tmp_path: Path
) -> None:
    _, two = hubs
    victim = HubProcess(tmp_path / "victim", database_url=database, env_extra=CLUSTER_ENV)
    victim.start()
    try:
        token = victim.login()
        everything = EventReader(two, token, params={"type": "node.enrolled"})
        live = EventReader(victim, token, params={"type": "node.enrolled"})
        seen = [enroll(victim)[0]["id"] for _ in range(2)]
        wait_for(lambda: of_node(live, "node.enrolled", seen[-1]), 10, "the events on the hub about to die")
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait(10)
        live.close()
        last_id = live.events[-1][0]
        missed = [enroll(two)[0]["id"] for _ in range(3)]
        resumed = EventReader(two, token, params={"type": "node.enrolled"}, last_event_id=last_id)
        try:
            wait_for(lambda: of_node(resumed, "node.enrolled", missed[-1]), 10, "the events missed while reconnecting")
            wait_for(lambda: of_node(everything, "node.enrolled", missed[-1]), 10, "the reference reader")
        finally:
            resumed.close()
            everything.close()
        assert [node_id for _, node_id in enrolled(resumed)] == missed
        assert enrolled(resumed) == [entry for entry in enrolled(everything) if int(entry[0]) > int(last_id)]
    finally:
        if victim.proc is not None and victim.proc.poll() is None:  # the test failed before the kill
            victim.proc.kill()
            victim.proc.wait(10)
        victim.proc = None


def test_a_session_logged_out_on_hub_1_is_refused_by_hub_2_at_once(hubs: tuple[HubProcess, HubProcess]) -> None:
    one, two = hubs
    assert CACHE_TTL_S > 1.0  # otherwise the cache's own expiry would pass this test
    token = one.login()
    with two.client(token) as on_two, one.client(token) as on_one:
        assert on_two.get("/api/v1/auth/me").status_code == 200  # hub 2 has the session in its cache now
        assert on_one.post("/api/v1/auth/logout").status_code == 204
        wait_for(lambda: on_two.get("/api/v1/auth/me").status_code == 401, 1.0, "hub 2 to refuse the session", 0.02)
        assert on_one.get("/api/v1/auth/me").status_code == 401


def test_an_api_key_revoked_on_hub_2_is_refused_by_hub_1_at_once(hubs: tuple[HubProcess, HubProcess]) -> None:
    one, two = hubs
    with two.admin() as admin:
        created = admin.post("/api/v1/auth/keys", json={"name": "cluster-key", "scopes": ["node:read"]})
        assert created.status_code == 201, created.text
        key, secret = created.json()["data"]["key"], created.json()["data"]["secret"]
    with httpx.Client(base_url=one.url, headers={"Authorization": f"Bearer {secret}"}, timeout=10) as on_one:
        assert on_one.get("/api/v1/nodes").status_code == 200
        with two.admin() as admin:
            assert admin.delete(f"/api/v1/auth/keys/{key['id']}").status_code == 204
        wait_for(lambda: on_one.get("/api/v1/nodes").status_code == 401, 1.0, "hub 1 to refuse the revoked key", 0.02)


notify_receivers = pytest.fixture(receivers)


def test_a_channel_made_on_hub_1_takes_in_the_events_of_hub_2_at_once(
    hubs: tuple[HubProcess, HubProcess], notify_receivers: Receivers
) -> None:
    """Each instance's intake keeps only the event types some channel subscribes to: a channel saved on hub 1 tells
    hub 2 at once (a cluster message), not at its next periodic read of the subscriptions, 30 s later."""
    one, two = hubs
    set_notify(one)
    node, _ = enroll(one)
    add_channel(one, notify_receivers, "webhook", {"events": ["node.updated"], "min_severity": "info"})
    time.sleep(1.0)  # the bound for what one instance changes to reach the others
    with two.admin() as admin:
        assert admin.patch(f"/api/v1/nodes/{node['id']}", json={"name": "renamed-on-hub-2"}).status_code == 200
    notify_receivers.wait_for("webhook", 1, timeout_s=20)
    assert node["id"] in json.dumps(webhook_bodies(notify_receivers))
