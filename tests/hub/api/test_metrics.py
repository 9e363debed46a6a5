"""`GET /metrics`: Prometheus text for holders of metrics:read."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.harness import HubProcess, running_hub


def test_metrics_need_a_token(hub: HubProcess) -> None:
    assert httpx.get(f"{hub.url}/metrics").status_code == 401


def test_metrics_count_requests_mqtt_and_database_time(hub: HubProcess) -> None:
    with hub.admin() as client:
        client.get("/api/v1/nodes")
        client.get("/api/v1/nope")
        text = client.get("/metrics").text
    assert 'hark_http_requests_total{method="GET",route="/api/v1/nodes",status="200"}' in text
    assert 'hark_http_requests_total{method="GET",route="unmatched",status="404"}' in text
    assert "hark_http_request_duration_seconds_bucket" in text
    assert "hark_db_call_duration_seconds_count" in text
    assert "hark_mqtt_connected 1.0" in text


def test_metrics_can_be_opened_to_loopback_by_configuration(tmp_path: Path) -> None:
    with running_hub(tmp_path, env_extra={"HARK_METRICS_OPEN_ON_LOOPBACK": "true"}) as hub:
        response = httpx.get(f"{hub.url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
