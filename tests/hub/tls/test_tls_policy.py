"""When TLS is on (HARK_TLS) and when a node may still talk plain."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hark_fleet.hub.config import HubConfig
from hark_fleet.node.hub_client import pinned_context, plain_refused
from hark_fleet.protocol.errors import ConfigError
from hark_fleet.provision.ca import CertificateAuthority


def _config(tmp_path: Path, **env: str) -> HubConfig:
    return HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path), **env})


def test_tls_is_on_by_default_outside_loopback_and_off_only_on_loopback_or_when_asked(tmp_path: Path) -> None:
    assert not _config(tmp_path).tls_enabled  # both listeners on 127.0.0.1
    assert _config(tmp_path, HARK_HTTP_HOST="0.0.0.0").tls_enabled
    assert not _config(tmp_path, HARK_HTTP_HOST="0.0.0.0", HARK_TLS="off").tls_enabled
    assert _config(tmp_path, HARK_TLS="on").tls_enabled
    assert not _config(tmp_path, HARK_TLS="auto").tls_enabled  # both listeners on 127.0.0.1
    assert _config(tmp_path, HARK_TLS="auto", HARK_HTTP_HOST="0.0.0.0").tls_enabled
    assert _config(tmp_path, HARK_TLS="auto", HARK_EMBEDDED_MQTT_BIND="0.0.0.0:1883").tls_enabled
    with pytest.raises(ConfigError, match="HARK_TLS"):
        _config(tmp_path, HARK_TLS="maybe")


def test_a_node_holding_the_hubs_ca_talks_plain_only_on_loopback_or_when_allowed(tmp_path: Path) -> None:
    tls = pinned_context(CertificateAuthority.open(tmp_path).ca_pem)
    assert isinstance(tls, ssl.SSLContext)
    assert plain_refused("http://hub.lan:8080/api/v1/x", tls, allow_plain=False)
    assert plain_refused("mqtt://10.0.0.2:1883", tls, allow_plain=False)
    assert not plain_refused("mqtt://10.0.0.2:1883", tls, allow_plain=True)
    assert not plain_refused("http://127.0.0.1:8080/api/v1/x", tls, allow_plain=False)
    assert not plain_refused("https://hub.lan/api/v1/x", tls, allow_plain=False)
    assert not plain_refused("http://hub.lan:8080/api/v1/x", None, allow_plain=False)  # a hub without TLS
