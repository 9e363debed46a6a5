"""The distribution as users get it: one wheel, one import name, and a node extra that leaves the hub's stack behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, HubProcess, NodeProcess, wait_for

pytestmark = pytest.mark.slow

DIST = "hark-fleet"
IMPORT_NAME = "hark_fleet"
HUB_ONLY = ("peewee", "amqtt", "prometheus-client", "psycopg2-binary", "psycopg2", "rich")
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "var", "build", "node_modules", "__pycache__", "*.egg-info", ".*_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout (the checkout itself stays untouched)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE, symlinks=True)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (found,) = (work / "dist").glob("*.whl")
    return found


@pytest.fixture(scope="module")
def node_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel installed as a recording box gets it: the node extra only."""
    venv = tmp_path_factory.mktemp("node-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--quiet", f"{wheel}[node]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    yield venv


def test_the_wheel_holds_one_top_level_import_name_with_the_node_page_and_the_console(wheel: Path) -> None:
    assert wheel.name.startswith("hark_fleet-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = archive.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
    tops = {name.split("/", 1)[0] for name in names if ".dist-info/" not in name}
    assert tops == {IMPORT_NAME} and top_level == [IMPORT_NAME]
    for part in ("hub", "node", "audio", "hw", "provision", "protocol"):
        assert f"{IMPORT_NAME}/{part}/__init__.py" in names, part
    assert f"{IMPORT_NAME}/provision/protocol/__init__.py" not in names  # installed once, as hark_fleet.protocol
    assert f"{IMPORT_NAME}/node/local/page/index.html" in names
    assert f"{IMPORT_NAME}/hub/console/index.html" in names and f"{IMPORT_NAME}/hub/openapi.yaml" in names
    assert any(n.startswith(f"{IMPORT_NAME}/hub/db/migrations/0001_") for n in names)


def test_the_node_extra_installs_no_hub_only_dependency(node_venv: Path) -> None:
    listed = subprocess.run(
        [str(node_venv / "bin" / "pip"), "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert DIST in installed
    assert not installed & set(HUB_ONLY), installed & set(HUB_ONLY)
    python = str(node_venv / "bin" / "python")
    hub = subprocess.run([python, "-c", "import hark_fleet.hub.server"], capture_output=True, text=True, cwd=node_venv)
    assert hub.returncode != 0 and "No module named 'peewee'" in hub.stderr, hub.stderr
    shown = subprocess.run([str(node_venv / "bin" / "hark-node"), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "hark-node" in shown.stdout, shown.stdout + shown.stderr


def test_a_node_installed_from_the_wheel_goes_online_at_a_running_hub(node_venv: Path, tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    hub.start()
    try:
        with hub.admin() as admin:
            answer = admin.post("/api/v1/nodes/enroll", json={"name": f"wheel-{uuid.uuid4().hex[:6]}"})
        assert answer.status_code == 201, answer.text
        enrolled = answer.json()["data"]
        node = NodeProcess(
            tmp_path / "node",
            hub.url,
            enrolled["node"]["id"],
            enrolled["credential"],
            python=str(node_venv / "bin" / "python"),
        )
        node.start()
        try:

            def online() -> bool:
                with hub.admin() as admin:
                    return bool(admin.get(f"/api/v1/nodes/{node.node_id}").json()["data"]["status"] == "online")

            def metering() -> bool:
                with hub.admin() as admin:
                    return admin.get(f"/api/v1/nodes/{node.node_id}/meters").status_code == 200

            wait_for(online, 30, "the node from the wheel online")
            wait_for(metering, 10, "its meter frames at the hub")
            page = httpx.get(f"{node.local_url}/", timeout=5)
            assert page.status_code == 200 and "<html" in page.text.lower()  # the technician's page came with it
        finally:
            assert node.stop() == 0, node.log()
    finally:
        hub.stop()
