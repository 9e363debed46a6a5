"""A moto S3 server for the direct route's tests (issue 20), which presigned URLs can reach.

moto's signature checking (`tests.offsite_servers.moto_s3`) reads only the `Authorization` header and
answers 500 to a presigned request (its signature is in the query string), so the direct route's tests
use this one: the same standalone server and IAM user, without signature checks. The URLs the hub
signs are what AWS, MinIO or R2 check; what moto does check here is the composite SHA-256 it computes
from the parts it stored, which the hub compares with the digests it signed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import pytest

from tests.harness import port_open, spawn
from tests.offsite_servers import MotoS3


class PresignableMotoS3(MotoS3):
    """moto's S3 server without signature checks (presigned requests pass)."""

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
        env["MOTO_ALLOW_NONEXISTENT_REGION"] = "true"
        command = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        self.proc = spawn(command, env=env, log_path=self.workdir / "moto.log")
        deadline = time.monotonic() + 60
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto did not start: {(self.workdir / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.05)
        self.access_key, self.secret_key = "direct-route-key", "direct-route-secret"


@pytest.fixture(scope="session", name="presignable_s3")
def presignable_s3_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PresignableMotoS3]:
    """One moto S3 server for the session that takes presigned requests."""
    server = PresignableMotoS3(tmp_path_factory.mktemp("moto-direct"))
    server.start()
    yield server
    server.stop()
