"""Channel kinds: every configuration problem is named in one 400, defaults are filled, targets never show a secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.notify import kinds
from hark_fleet.hub.notify.kinds import check, kinds_to_api, target

HOOK = "http://127.0.0.1:8080/services/T000/B000/XXXXsecretXXXX?token=abc"
VALID: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "webhook": ({"url": "https://receiver.example.org/hark"}, {}),
    "slack": ({}, {"webhook_url": HOOK}),
    "discord": ({}, {"webhook_url": HOOK}),
    "teams": ({}, {"webhook_url": HOOK}),
    "google_chat": ({}, {"webhook_url": HOOK}),
    "matrix": ({"homeserver_url": "https://matrix.example.org/", "room_id": "!abc123:example.org"}, {"access_token": "syt_x"}),
    "telegram": ({"chat_id": "-1001234567890"}, {"bot_token": "123456:ABC-def_ghi"}),
    "email": ({"host": "smtp.example.com", "sender": "Hark <hark@example.com>", "recipients": ["ops@example.com"]}, {}),
    "ntfy": ({"server_url": "https://ntfy.sh", "topic": "stage_mics-1"}, {}),
}


def problems(kind: Any, config: Any, secrets: Any) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as err:
        check(kind, config, secrets)
    assert str(err.value) == "The notification channel is invalid."
    fields: dict[str, str] = err.value.extra["fields"]
    return fields


def pem_certificate() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Private CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --- the table -----------------------------------------------------------------------------------


def test_the_kinds_and_their_fields_are_the_contracts_table() -> None:
    assert kinds.KINDS == ("webhook", "slack", "discord", "teams", "google_chat", "matrix", "telegram", "email", "ntfy")
    assert kinds.CONFIG_FIELDS["email"] == ("host", "port", "security", "username", "sender", "recipients", "ca_pem")
    assert kinds.CONFIG_FIELDS["telegram"] == ("chat_id", "api_url")
    assert kinds.CONFIG_FIELDS["slack"] == ()
    assert kinds.SECRET_FIELDS["webhook"] == ("signing_secret",)
    assert kinds.GENERATED_SECRETS == {"webhook": ("signing_secret",)}
    assert kinds.REQUIRED_SECRETS == {
        "webhook": (),
        "slack": ("webhook_url",),
        "discord": ("webhook_url",),
        "teams": ("webhook_url",),
        "google_chat": ("webhook_url",),
        "matrix": ("access_token",),
        "telegram": ("bot_token",),
        "email": (),
        "ntfy": (),
    }


@pytest.mark.parametrize("kind", kinds.KINDS)
def test_a_valid_configuration_of_every_kind_passes(kind: str) -> None:
    config, secrets = check(kind, *VALID[kind])
    assert set(config) == set(kinds.CONFIG_FIELDS[kind])
    assert secrets == VALID[kind][1]


def test_defaults_are_filled_and_base_urls_lose_their_trailing_slash() -> None:
    config, _ = check("email", *VALID["email"])
    assert config == {
        "host": "smtp.example.com",
        "port": 587,
        "security": "starttls",
        "username": None,
        "sender": "Hark <hark@example.com>",
        "recipients": ["ops@example.com"],
        "ca_pem": None,
    }
    assert check("telegram", *VALID["telegram"])[0]["api_url"] == "https://api.telegram.org"
    assert check("matrix", *VALID["matrix"])[0]["homeserver_url"] == "https://matrix.example.org"


def test_an_unknown_kind_is_named() -> None:
    assert set(problems("pager", {}, {})) == {"kind"}
    assert set(problems(None, {}, {})) == {"kind"}


def test_config_and_secrets_must_be_objects() -> None:
    assert set(problems("ntfy", ["x"], "token")) >= {"config", "secrets"}


def test_every_problem_is_named_at_once() -> None:
    found = problems(
        "email",
        {"port": 0, "security": "ssl", "sender": "nobody", "recipients": [], "colour": "red"},
        {"password": "pw", "api_key": "k"},
    )
    assert set(found) == {
        "config.host",
        "config.port",
        "config.security",
        "config.sender",
        "config.recipients",
        "config.colour",
        "secrets.password",
        "secrets.api_key",
    }
    assert "only with config.username" in found["secrets.password"]


def test_a_chat_webhook_given_as_config_is_pointed_at_secrets() -> None:
    found = problems("slack", {"webhook_url": HOOK}, {})
    assert "secrets.webhook_url" in found["config.webhook_url"]
    assert found["secrets.webhook_url"].startswith("required")


def test_a_secret_given_as_config_is_pointed_at_secrets() -> None:
    found = problems("matrix", {**VALID["matrix"][0], "access_token": "x"}, {"access_token": "x"})
    assert set(found) == {"config.access_token"}
    assert "secrets.access_token" in found["config.access_token"]


def test_the_webhook_signing_secret_is_refused_from_callers() -> None:
    found = problems("webhook", VALID["webhook"][0], {"signing_secret": "mine"})
    assert set(found) == {"secrets.signing_secret"}
    assert "generated by the hub" in found["secrets.signing_secret"]


@pytest.mark.parametrize("kind", ["slack", "discord", "teams", "google_chat", "matrix", "telegram"])
def test_a_missing_required_secret_is_named(kind: str) -> None:
    (name,) = kinds.REQUIRED_SECRETS[kind]
    assert set(problems(kind, VALID[kind][0], {})) == {f"secrets.{name}"}
    assert set(problems(kind, VALID[kind][0], {name: ""})) == {f"secrets.{name}"}


def test_empty_optional_secrets_are_dropped() -> None:
    assert check("ntfy", VALID["ntfy"][0], {"token": ""})[1] == {}
    assert check("ntfy", VALID["ntfy"][0], {"token": "tk_abc"})[1] == {"token": "tk_abc"}


@pytest.mark.parametrize("value", [123, "has space", "x" * 4097, "line\nbreak"])
def test_a_secret_must_be_printable_text_within_bounds(value: Any) -> None:
    assert set(problems("ntfy", VALID["ntfy"][0], {"token": value})) == {"secrets.token"}


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x",
        "example.org/hook",
        "https://user:pw@example.org/hook",
        "https://example.org/hook#frag",
        "https:///nohost",
        "https://example.org:99999/",
        "https://exa mple.org/",
        "https://example.org/\r\nX: y",
        "https://example.org/" + "a" * 2048,
        42,
    ],
)
def test_bad_urls_are_refused(url: Any) -> None:
    assert set(problems("webhook", {"url": url}, {})) == {"config.url"}
    assert set(problems("slack", {}, {"webhook_url": url})) == {"secrets.webhook_url"}


def test_loopback_and_query_urls_are_fine_for_webhooks() -> None:
    check("webhook", {"url": "http://127.0.0.1:9999/in?x=1"}, {})
    check("webhook", {"url": "http://[::1]:9999/in"}, {})


def test_base_urls_take_no_query() -> None:
    found = problems("ntfy", {"server_url": "https://ntfy.sh/?x=1", "topic": "t"}, {})
    assert set(found) == {"config.server_url"}
    assert set(problems("telegram", {"chat_id": "1", "api_url": "https://api.example/?a=b"}, {"bot_token": "1:a"})) == {
        "config.api_url"
    }


@pytest.mark.parametrize("room", ["!abc:example.org", "!abc:example.org:8448", "!x:[::1]"])
def test_matrix_room_ids_pass(room: str) -> None:
    check("matrix", {**VALID["matrix"][0], "room_id": room}, VALID["matrix"][1])


@pytest.mark.parametrize(
    "room", ["#ops:example.org", "abc:example.org", "!abc", "!:example.org", "!a b:example.org", "@user:example.org", 7]
)
def test_bad_matrix_rooms_are_named(room: Any) -> None:
    assert set(problems("matrix", {**VALID["matrix"][0], "room_id": room}, VALID["matrix"][1])) == {"config.room_id"}


@pytest.mark.parametrize("chat", ["12345", "-1001234567890", "@hark_alerts"])
def test_telegram_chat_ids_pass(chat: str) -> None:
    assert check("telegram", {"chat_id": chat}, VALID["telegram"][1])[0]["chat_id"] == chat


def test_a_numeric_telegram_chat_id_becomes_a_string() -> None:
    assert check("telegram", {"chat_id": -42}, VALID["telegram"][1])[0]["chat_id"] == "-42"


@pytest.mark.parametrize("chat", ["12a", "@ab", "hark", "--1", "", True])
def test_bad_telegram_chat_ids_are_named(chat: Any) -> None:
    assert set(problems("telegram", {"chat_id": chat}, VALID["telegram"][1])) == {"config.chat_id"}


@pytest.mark.parametrize("token", ["abc:def", "123456", "123:", "123:a b", ":abc"])
def test_bad_telegram_bot_tokens_are_named(token: str) -> None:
    assert set(problems("telegram", VALID["telegram"][0], {"bot_token": token})) == {"secrets.bot_token"}


@pytest.mark.parametrize("topic", ["", "has space", "a" * 65, "dots.not.allowed", "slash/x"])
def test_bad_ntfy_topics_are_named(topic: str) -> None:
    assert set(problems("ntfy", {"server_url": "https://ntfy.sh", "topic": topic}, {})) == {"config.topic"}


# --- email ---------------------------------------------------------------------------------------


def email(**changes: Any) -> dict[str, Any]:
    return {**VALID["email"][0], **changes}


@pytest.mark.parametrize("host", ["smtp.example.com", "127.0.0.1", "::1", "mail"])
def test_email_hosts_may_be_names_or_addresses(host: str) -> None:
    check("email", email(host=host), {})


@pytest.mark.parametrize("host", ["smtp example.com", "-bad.example", "a" * 254, "smtp.example.com\r\n", 25])
def test_bad_email_hosts_are_named(host: Any) -> None:
    assert set(problems("email", email(host=host), {})) == {"config.host"}


@pytest.mark.parametrize("port", [0, 65536, "587", True, 1.5])
def test_bad_email_ports_are_named(port: Any) -> None:
    assert set(problems("email", email(port=port), {})) == {"config.port"}


@pytest.mark.parametrize(
    "address",
    [
        "not-an-address",
        "a@b@example.com",
        "ops@example.com, evil@example.com",
        "ops@example.com\r\nBcc: evil@example.com",
        "Ops <ops@exa mple.com>",
        "@example.com",
        "",
    ],
)
def test_bad_sender_and_recipient_addresses_are_named(address: str) -> None:
    assert set(problems("email", email(sender=address), {})) == {"config.sender"}
    assert set(problems("email", email(recipients=["ok@example.com", address]), {})) == {"config.recipients"}


def test_recipients_are_one_to_twenty_and_duplicates_fold() -> None:
    assert set(problems("email", email(recipients=[]), {})) == {"config.recipients"}
    many = [f"r{i}@example.com" for i in range(21)]
    assert set(problems("email", email(recipients=many), {})) == {"config.recipients"}
    config, _ = check("email", email(recipients=["a@example.com", "A@example.com", "Bee <b@example.com>"]), {})
    assert config["recipients"] == ["a@example.com", "Bee <b@example.com>"]
    assert check("email", email(recipients="one@example.com"), {})[0]["recipients"] == ["one@example.com"]


def test_email_security_and_login() -> None:
    config, secrets = check("email", email(security="tls", port=465, username="hark"), {"password": "pw"})
    assert (config["security"], config["port"], config["username"], secrets) == ("tls", 465, "hark", {"password": "pw"})
    assert set(problems("email", email(username="bad\nuser"), {})) == {"config.username"}
    assert check("email", email(username=""), {})[0]["username"] is None


def test_a_private_ca_must_be_pem_certificates() -> None:
    pem = pem_certificate()
    assert check("email", email(ca_pem=pem + pem), {})[0]["ca_pem"] == pem + pem
    assert check("email", email(ca_pem=""), {})[0]["ca_pem"] is None
    for bad in ["not pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 5, "x" * 70000]:
        assert set(problems("email", email(ca_pem=bad), {})) == {"config.ca_pem"}


# --- targets and the console's description ------------------------------------------------------


def test_a_chat_webhook_target_shows_only_the_host() -> None:
    for kind in kinds.CHAT_WEBHOOK_KINDS:
        shown = target(kind, {}, {"webhook_url": HOOK})
        assert shown == "127.0.0.1:8080"
        assert target(kind, {}, ["webhook_url"]).startswith("a ")
        assert target(kind, {}, None).startswith("a ")
    assert target("slack", {}, {"webhook_url": "https://hooks.slack.com/services/T/B/secret"}) == "hooks.slack.com"


def test_targets_name_where_messages_go_and_never_a_secret() -> None:
    assert target("webhook", {"url": "https://user:pw@receiver.example.org/path?key=s3cret"}, []) == "receiver.example.org"
    assert target("matrix", {"homeserver_url": "https://matrix.example.org", "room_id": "!r:example.org"}) == (
        "!r:example.org on matrix.example.org"
    )
    assert target("telegram", {"chat_id": "@alerts", "api_url": kinds.DEFAULT_TELEGRAM_API}) == "chat @alerts"
    assert target("telegram", {"chat_id": "5", "api_url": "http://127.0.0.1:81"}) == "chat 5 via 127.0.0.1:81"
    assert target("email", {"host": "smtp.example.com", "port": 587, "recipients": ["a@x.org", "b@x.org"]}) == (
        "2 recipients via smtp.example.com:587"
    )
    assert target("email", {"host": "smtp.example.com", "port": 465, "recipients": ["a@x.org"]}) == (
        "1 recipient via smtp.example.com:465"
    )
    assert target("email", {"host": "::1", "port": 25, "recipients": ["a@x.org"]}) == "1 recipient via [::1]:25"
    assert target("ntfy", {"server_url": "https://ntfy.sh", "topic": "mics"}, {"token": "tk_secret"}) == "mics on ntfy.sh"
    for kind in kinds.KINDS:
        config, secrets = check(kind, *VALID[kind])
        shown = target(kind, config, secrets)
        assert "\n" not in shown and shown
        for value in secrets.values():
            assert value not in shown
        assert "secret" not in shown and "token" not in shown


def test_kinds_to_api_describes_every_field_for_the_forms() -> None:
    described = {k["kind"]: k for k in kinds_to_api()}
    assert tuple(described) == kinds.KINDS
    for kind, entry in described.items():
        assert [f["name"] for f in entry["config"]] == list(kinds.CONFIG_FIELDS[kind])
        assert [f["name"] for f in entry["secrets"]] == list(kinds.SECRET_FIELDS[kind])
        for field in entry["config"] + entry["secrets"]:
            assert field["label"] and isinstance(field["required"], bool)
    port = next(f for f in described["email"]["config"] if f["name"] == "port")
    assert (port["default"], port["required"]) == (587, False)
    security = next(f for f in described["email"]["config"] if f["name"] == "security")
    assert security["choices"] == ["starttls", "tls", "none"]
    (signing,) = described["webhook"]["secrets"]
    assert (signing["generated"], signing["required"]) == (True, False)
    assert described["slack"]["secrets"][0]["required"] is True
