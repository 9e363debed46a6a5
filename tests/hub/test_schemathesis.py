"""Schemathesis against the OpenAPI document a real hub serves: no 5xx, and every answer as documented.

Bounded and repeatable: schemathesis's deterministic mode (no randomness, no example database; the
seed is fixed too), a few examples per operation, one worker, against one `hark-hub` (SQLite) made
for this module; agent routes go with an enrolled node's credential. The checks:
no server error; status codes, content types, headers and bodies as the document says; undeclared
methods answer 405 with `Allow`; requests the document calls invalid are refused. Not checked:
`positive_data_acceptance`, since a request the schema allows may still name things that do not
exist (a group, a cursor, the current password), which the hub rightly refuses.

How the run keeps its own session: tests/hub/schemathesis_hooks.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hark_fleet.hub.app import ROUTES

from tests.harness import ROOT, HubProcess, running_hub

SEED = 20261206
MAX_EXAMPLES = 3
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "negative_data_rejection",
)
# Event streams never end: read each for a moment, then check the events that came.
CONFIG = """\
[[operations]]
include-path-regex = "/(events/stream|meter-events)$"
request-timeout = 2
max-stream-events = 5
"""
LOGOUT_PASSWORD = "schemathesis-logout-password-1"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(tmp_path_factory.mktemp("hub-schemathesis")) as process:
        yield process


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_hub_answers_as_its_openapi_document_says(hub: HubProcess, tmp_path: Path) -> None:
    token = hub.login()
    logout_user = f"st-logout-{uuid.uuid4().hex[:6]}"
    with hub.client(token) as admin:
        me = admin.get("/api/v1/auth/me").json()["data"]
        sessions = admin.get("/api/v1/auth/sessions").json()["data"]
        created = admin.post(
            "/api/v1/auth/users", json={"username": logout_user, "password": LOGOUT_PASSWORD, "roles": ["viewer"]}
        )
        assert created.status_code == 201, created.text
        enrolled = admin.post("/api/v1/nodes/enroll", json={"name": "schemathesis-node"})
        assert enrolled.status_code == 201, enrolled.text
    node = enrolled.json()["data"]
    protected = {me["user"]["id"], created.json()["data"]["id"], node["node"]["id"], *(s["id"] for s in sessions)}
    agent_operations = sorted(
        f"{method.upper()} {path}"
        for path, handler in ROUTES
        for method, needs in handler.permissions.items()
        if needs == "node:control"
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.hub.schemathesis_hooks",
        "HARK_ST_URL": hub.url,
        "HARK_ST_TOKEN": token,
        "HARK_ST_LOGOUT_USER": logout_user,
        "HARK_ST_LOGOUT_PASSWORD": LOGOUT_PASSWORD,
        "HARK_ST_PROTECTED_IDS": ",".join(sorted(protected)),
        "HARK_ST_AGENT_OPERATIONS": ",".join(agent_operations),
        "HARK_ST_NODE_ID": node["node"]["id"],
        "HARK_ST_NODE_CREDENTIAL": node["credential"],
    }
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{hub.url}/api/v1/openapi.yaml",
        "--url",
        hub.url,
        "--seed",
        str(SEED),
        "--generation-deterministic",  # no example database either
        "--generation-with-security-parameters",
        "false",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing",
        "--checks",
        ",".join(CHECKS),
        "--workers",
        "1",
        "--no-shrink",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "30",
        "--continue-on-failure",
        "--no-color",
        "--output-truncate",
        "false",
    ]
    started = time.monotonic()
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=840, check=False)
    elapsed = time.monotonic() - started
    report = result.stdout + result.stderr
    (ROOT / "var" / "test-artifacts").mkdir(parents=True, exist_ok=True)
    (ROOT / "var" / "test-artifacts" / "schemathesis.txt").write_text(report, encoding="utf-8")
    assert result.returncode == 0, f"schemathesis found problems in {elapsed:.0f}s:\n{report[-60000:]}"
    # The admin's session outlived the run.
    with hub.client(token) as admin:
        assert admin.get("/api/v1/auth/me").status_code == 200
