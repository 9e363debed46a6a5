"""Real mDNS traffic on loopback: nodes and hubs advertise, browsers see them come, change and go."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from hark_fleet.provision.mdns import (
    HubAdvert,
    NodeAdvert,
    advertise_hub,
    advertise_node,
    browse_hubs,
    browse_nodes,
    parse_interfaces,
)

LOOPBACK = ["127.0.0.1"]


async def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_interfaces_setting_takes_all_off_or_addresses() -> None:
    assert parse_interfaces("all") is None
    assert parse_interfaces("off") is False
    assert parse_interfaces("127.0.0.1, 10.0.0.2") == ["127.0.0.1", "10.0.0.2"]
    with pytest.raises(ValueError, match="eth0"):
        parse_interfaces("eth0")


@pytest.mark.usefixtures("no_thread_leak")
def test_a_browser_sees_a_node_appear_get_enrolled_and_leave() -> None:
    hardware_id = f"hw-{secrets.token_hex(8)}"

    async def scenario() -> None:
        browser = await browse_nodes(LOOPBACK)
        advert = NodeAdvert(hardware_id, "unprovisioned", "0.1.0", "synthetic sine", 18081)
        advertisement = await advertise_node(advert, LOOPBACK)
        try:
            await _until(lambda: hardware_id in browser.nodes())
            seen = browser.nodes()[hardware_id]
            assert (seen.state, seen.node_id, seen.audio, seen.local_url) == (
                "unprovisioned",
                None,
                "synthetic sine",
                "http://127.0.0.1:18081",
            )
            enrolled = NodeAdvert(hardware_id, "enrolled", "0.1.0", "synthetic sine", 18081, node_id="nod_1")
            await advertisement.update(enrolled.properties())
            await _until(lambda: getattr(browser.nodes().get(hardware_id), "state", None) == "enrolled")
            assert browser.nodes()[hardware_id].node_id == "nod_1"
        finally:
            await advertisement.close()
        await _until(lambda: hardware_id not in browser.nodes())
        await browser.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("no_thread_leak")
def test_a_hub_is_found_with_its_api_and_mqtt_urls() -> None:
    port = 20000 + secrets.randbelow(20000)

    async def scenario() -> None:
        advertisement = await advertise_hub(HubAdvert(f"http://127.0.0.1:{port}", "mqtt://127.0.0.1:1883", port), LOOPBACK)
        try:
            hubs = await browse_hubs(LOOPBACK, 10.0)
            ours = [h for h in hubs if h.api_url == f"http://127.0.0.1:{port}"]
            assert ours and ours[0].mqtt_url == "mqtt://127.0.0.1:1883"
        finally:
            await advertisement.close()

    asyncio.run(scenario())
