"""Liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import ipaddress
from importlib import resources

from hark_fleet.hub.api.base import PUBLIC, BaseHandler


class HealthzHandler(BaseHandler):
    """`GET /healthz`: the process answers."""

    permissions = {"get": PUBLIC}

    def get(self) -> None:
        self.write_json({"status": "ok"})


class ReadyzHandler(BaseHandler):
    """`GET /readyz`: the database and the broker are reachable (503 with reasons otherwise)."""

    permissions = {"get": PUBLIC}

    async def get(self) -> None:
        checks = await self.hub.readiness()
        ready = all(c["ok"] for c in checks.values())
        self.write_json({"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503)


class MetricsHandler(BaseHandler):
    """`GET /metrics`: Prometheus text; `metrics:read`, or open on loopback when configured."""

    permissions = {"get": "metrics:read"}

    def open_to_caller(self) -> bool:
        """Loopback callers without credentials, when configured; credentials sent are always checked."""
        return (
            self.hub.config.metrics_open_on_loopback
            and _is_loopback(self.request.remote_ip)
            and self.bearer_token() is None
            and self.session_cookie() is None
        )

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.hub.metrics.render())


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class OpenApiHandler(BaseHandler):
    """`GET /api/v1/openapi.yaml`: the contract this hub serves."""

    permissions = {"get": PUBLIC}

    def get(self) -> None:
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        self.finish(resources.files("hark_fleet.hub").joinpath("openapi.yaml").read_bytes())
