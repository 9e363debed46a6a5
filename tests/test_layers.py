"""The layers, enforced by import-linter's contracts in setup.cfg: a box carries the node, never the hub."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# Where each part of the `hark_fleet` namespace lives in the repository (setup.cfg's package_dir).
SOURCES = {
    "hub": ROOT / "hub",
    "node": ROOT / "node",
    "audio": ROOT / "audio",
    "hw": ROOT / "hw",
    "provision": ROOT / "provision",
    "protocol": ROOT / "provision" / "protocol",
}


def lint_imports(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    args = [str(LINT_IMPORTS), "--config", str(ROOT / "setup.cfg"), "--no-cache"]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_every_import_contract_is_kept() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 6 kept, 0 broken." in result.stdout, result.stdout


def test_a_node_module_importing_the_hub_breaks_the_contracts_and_names_both_modules(tmp_path: Path) -> None:
    """The same source tree (linked, not copied) with one module added to the node that imports the hub."""
    package = tmp_path / "hark_fleet"
    package.mkdir()
    for name, source in SOURCES.items():
        if name != "node":
            (package / name).symlink_to(source, target_is_directory=True)
    node = package / "node"
    node.mkdir()
    for entry in SOURCES["node"].iterdir():
        if entry.name != "__pycache__":
            (node / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (node / "wrong_layer.py").write_text("from hark_fleet.hub.server import Hub\n")
    try:
        result = lint_imports(tmp_path)
    finally:
        shutil.rmtree(tmp_path / "hark_fleet", ignore_errors=True)
    assert result.returncode != 0
    assert "the node never imports the hub, the installer's tool or the CA BROKEN" in result.stdout, result.stdout
    assert "hark_fleet.node is not allowed to import hark_fleet.hub:" in result.stdout
    assert "hark_fleet.node.wrong_layer -> hark_fleet.hub.server (l.1)" in result.stdout
    # the hub's stack follows it onto the box: the database and the embedded broker
    assert "hark_fleet.node is not allowed to import peewee:" in result.stdout
    assert "hark_fleet.node is not allowed to import amqtt:" in result.stdout
