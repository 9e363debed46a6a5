"""Where notifications may go: schemes, credentials, and every resolved address."""

from __future__ import annotations

import ipaddress

import pytest
from hark_fleet.hub.notify.outbound import Destination, DestinationRefused, check_destination, check_smtp_destination


def resolving(*addresses: str):
    seen: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return list(addresses)

    resolve.seen = seen  # type: ignore[attr-defined]
    return resolve


def refused(url: str, *addresses: str, allow_private: bool = False) -> str:
    with pytest.raises(DestinationRefused) as caught:
        check_destination(url, resolve=resolving(*addresses), allow_private=allow_private)
    return caught.value.reason


def test_public_https_host_is_pinned_to_its_resolved_addresses() -> None:
    resolve = resolving("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    destination = check_destination("https://hooks.example.com/services/x", resolve=resolve)
    assert destination == Destination(
        scheme="https", host="hooks.example.com", port=443, addresses=("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    )
    assert resolve.seen == [("hooks.example.com", 443)]


def test_explicit_port_and_http_default_port() -> None:
    assert check_destination("http://example.com:8080/x", resolve=resolving("93.184.216.34")).port == 8080
    assert check_destination("HTTP://Example.COM./x", resolve=resolving("93.184.216.34")).port == 80


def test_ip_literal_is_not_resolved() -> None:
    def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError("literal addresses need no DNS")

    assert check_destination("https://[2606:4700::1111]/", resolve=no_dns).addresses == ("2606:4700::1111",)
    assert check_destination("https://1.1.1.1/", resolve=no_dns).addresses == ("1.1.1.1",)


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "gopher://example.com/", "example.com/x"])
def test_schemes_other_than_http_are_refused(url: str) -> None:
    assert "scheme" in refused(url, "93.184.216.34")


@pytest.mark.parametrize("url", ["https://user:pw@example.com/", "https://user@example.com/", "https://:pw@example.com/"])
def test_credentials_in_the_url_are_refused(url: str) -> None:
    assert "credentials" in refused(url, "93.184.216.34")


def test_url_without_host_or_with_bad_port_is_refused() -> None:
    assert "no host" in refused("https:///path", "93.184.216.34")
    assert "not valid" in refused("https://example.com:99999/", "93.184.216.34")


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.google.internal.", "metadata"])
def test_metadata_names_are_refused_without_resolving(host: str) -> None:
    def no_dns(name: str, port: int) -> list[str]:
        raise AssertionError("metadata names are refused before DNS")

    with pytest.raises(DestinationRefused, match="cloud metadata"):
        check_destination(f"http://{host}/computeMetadata/v1/", resolve=no_dns, allow_private=True)


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "::ffff:169.254.169.254"])
def test_metadata_addresses_are_refused_even_when_private_is_allowed(address: str) -> None:
    reason = refused("http://hooks.example.com/", address, allow_private=True)
    assert "cloud metadata" in reason and address in reason


@pytest.mark.parametrize("address", ["169.254.1.1", "fe80::1", "febf::1", "::ffff:169.254.0.5"])
def test_link_local_addresses_are_refused_even_when_private_is_allowed(address: str) -> None:
    reason = refused("http://hooks.example.com/", address, allow_private=True)
    assert "link-local" in reason and address in reason


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:240.0.0.1", "reserved"),
    ],
)
def test_unroutable_addresses_are_refused_even_when_private_is_allowed(address: str, problem: str) -> None:
    reason = refused("http://hooks.example.com/", address, allow_private=True)
    assert problem in reason and address in reason


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.20", "private"),
        ("::ffff:192.168.1.20", "private"),
        ("100.64.0.1", "private"),
        ("fd12:3456::1", "private"),
    ],
)
def test_private_loopback_cgnat_and_ula_addresses_are_refused_unless_allowed(address: str, problem: str) -> None:
    reason = refused("https://hooks.example.com/", address)
    assert problem in reason and address in reason
    allowed = check_destination("https://hooks.example.com/", resolve=resolving(address), allow_private=True)
    assert allowed.addresses == (str(ipaddress.ip_address(address)),)


def test_one_bad_resolution_refuses_the_whole_destination() -> None:
    reason = refused("https://hooks.example.com/", "93.184.216.34", "2606:4700::1111", "10.0.0.5")
    assert "10.0.0.5" in reason
    reason = refused("https://hooks.example.com/", "fe80::1", "93.184.216.34")
    assert "fe80::1" in reason


def test_mapped_public_address_passes_as_ipv4() -> None:
    destination = check_destination("https://x.example/", resolve=resolving("::ffff:93.184.216.34"))
    assert destination.addresses == (str(ipaddress.ip_address("::ffff:93.184.216.34")),)


def test_host_resolving_to_nothing_or_garbage_is_refused() -> None:
    assert "no address" in refused("https://hooks.example.com/")
    assert "not an IP address" in refused("https://hooks.example.com/", "not-an-ip")


def test_literal_loopback_url_is_refused_then_allowed_for_tests() -> None:
    assert "loopback" in refused("http://127.0.0.1:8000/hook")
    assert check_destination("http://127.0.0.1:8000/hook", allow_private=True).addresses == ("127.0.0.1",)


def test_smtp_destination_is_checked_like_a_url_host() -> None:
    destination = check_smtp_destination("smtp.example.com", 587, resolve=resolving("93.184.216.34"))
    assert destination == Destination(scheme="smtp", host="smtp.example.com", port=587, addresses=("93.184.216.34",))
    assert check_smtp_destination("smtp.example.com", 465, resolve=resolving("93.184.216.34"), tls=True).scheme == "smtps"
    with pytest.raises(DestinationRefused, match="private"):
        check_smtp_destination("mail.lan", 25, resolve=resolving("192.168.0.2"))
    with pytest.raises(DestinationRefused, match="cloud metadata"):
        check_smtp_destination("169.254.169.254", 25, resolve=resolving(), allow_private=True)
    with pytest.raises(DestinationRefused, match="out of range"):
        check_smtp_destination("smtp.example.com", 0, resolve=resolving("93.184.216.34"))
    with pytest.raises(DestinationRefused, match="not a host"):
        check_smtp_destination("user@smtp.example.com", 25, resolve=resolving("93.184.216.34"))
