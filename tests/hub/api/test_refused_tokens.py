"""Bad bearer tokens cost no disk: every one is refused, but one source's repeats are audited once a minute, not one row each."""

from __future__ import annotations

import httpx
from hark_fleet.hub.auth.refusals import RepeatedRefusals

from tests.harness import HubProcess
from tests.hub.api.test_audit import events


def test_bad_tokens_from_one_address_are_all_refused_and_audited_once_with_a_count(hub: HubProcess) -> None:
    with httpx.Client(base_url=hub.url, timeout=10) as anonymous:
        for n in range(50):
            answer = anonymous.get("/api/v1/nodes", headers={"Authorization": f"Bearer ses_not-a-token-{n}"})
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"
    [audited] = events(hub, action="auth.token")
    assert audited["outcome"] == "failure" and audited["actor"]["type"] == "anonymous"
    assert audited["source_ip"] == "127.0.0.1"


def test_the_next_audited_refusal_carries_the_count_of_those_not_written() -> None:
    now = [0.0]
    refusals = RepeatedRefusals(window_s=60, clock=lambda: now[0])
    assert refusals.admit("10.0.0.1") == 0
    assert [refusals.admit("10.0.0.1") for _ in range(5)] == [None] * 5
    assert refusals.admit("10.0.0.2") == 0  # each address on its own
    now[0] = 61.0
    assert refusals.admit("10.0.0.1") == 5
    assert refusals.admit("10.0.0.1") is None
