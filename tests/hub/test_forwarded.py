"""Behind a load balancer the hub sees the client's address, from the proxies HARK_TRUSTED_PROXIES names only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hark_fleet.hub.config import HubConfig
from hark_fleet.hub.forwarded import client_address, parse_trusted_proxies
from hark_fleet.protocol.errors import ConfigError

from tests.harness import ADMIN_PASSWORD, running_hub

PROXIES = parse_trusted_proxies("10.0.0.5, 10.1.0.0/16, ::1")


def test_a_trusted_proxy_names_the_rightmost_address_that_is_not_one_of_ours() -> None:
    assert client_address("10.0.0.5", "203.0.113.9", PROXIES) == "203.0.113.9"
    # a client may send its own X-Forwarded-For: only the hop our proxy appended counts
    assert client_address("10.0.0.5", "1.2.3.4, 203.0.113.9", PROXIES) == "203.0.113.9"
    # two proxies of ours in a row
    assert client_address("10.0.0.5", "198.51.100.7, 10.1.2.3", PROXIES) == "198.51.100.7"
    assert client_address("::1", "[2001:db8::1]:5123", PROXIES) == "2001:db8::1"
    assert client_address("10.0.0.5", "203.0.113.9:4711", PROXIES) == "203.0.113.9"


def test_a_header_from_anyone_else_or_a_malformed_one_is_not_believed() -> None:
    assert client_address("203.0.113.50", "1.2.3.4", PROXIES) == "203.0.113.50"
    assert client_address("10.0.0.5", "not-an-address", PROXIES) == "10.0.0.5"
    assert client_address("10.0.0.5", None, PROXIES) == "10.0.0.5"
    assert client_address("10.0.0.5", "10.0.0.5, 10.1.0.9", PROXIES) == "10.0.0.5"
    assert client_address("10.0.0.5", "203.0.113.9", ()) == "10.0.0.5"


def test_the_setting_names_a_bad_entry() -> None:
    assert HubConfig.from_env({"HARK_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}).trusted_proxies == parse_trusted_proxies(
        "10.0.0.0/8,127.0.0.1"
    )
    assert HubConfig.from_env({}).trusted_proxies == ()
    with pytest.raises(ConfigError, match="HARK_TRUSTED_PROXIES.*'balancer'"):
        HubConfig.from_env({"HARK_TRUSTED_PROXIES": "10.0.0.5, balancer"})


def _session_sources(hub_url: str, token: str) -> list[str | None]:
    with httpx.Client(base_url=hub_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        response = client.get("/api/v1/auth/sessions")
    assert response.status_code == 200, response.text
    return [s.get("source_ip") for s in response.json()["data"]]


def _login(hub_url: str, forwarded_for: str) -> str:
    response = httpx.post(
        f"{hub_url}/api/v1/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]["token"]


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_a_login_through_the_balancer_records_the_client_only_when_the_balancer_is_trusted(tmp_path: Path, trusted: bool) -> None:
    env = {"HARK_TRUSTED_PROXIES": "127.0.0.1"} if trusted else {}
    with running_hub(tmp_path, env_extra=env) as hub:
        token = _login(hub.url, "198.51.100.23")
        sources = _session_sources(hub.url, token)
    assert sources == (["198.51.100.23"] if trusted else ["127.0.0.1"])
