"""The layers, enforced by import-linter's contracts in setup.cfg: a box carries the node, never the hub."""

from __future__ import annotations

import ast
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


OUR_FOLDERS = ("hub", "node", "audio", "hw", "provision")


def old_top_level_names(path: Path) -> list[str]:
    """Imports and resource lookups of our folders by their bare names (they are `hark_fleet.*` when installed)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("files", "import_module", "find_spec"):
            names = [arg.value for arg in node.args[:1] if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names if name.split(".")[0] in OUR_FOLDERS]
    return found


def test_nothing_reaches_our_code_by_a_bare_folder_name() -> None:
    folders = (*OUR_FOLDERS, "tests", "bench")
    files = [f for folder in folders for f in (ROOT / folder).rglob("*.py") if "node_modules" not in f.parts]
    assert len(files) > 300
    assert [hit for f in files for hit in old_top_level_names(f)] == []
