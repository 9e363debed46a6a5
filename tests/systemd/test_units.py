"""The systemd units verify, stay hardened, and the install and lifecycle paths do exactly what they say.

`systemd-analyze verify` checks a unit against the systemd on this machine, which needs no running
systemd (tests may run in a container). It insists that ExecStart's program exists, so each unit
is verified as a copy in a temporary directory whose ExecStart points at this checkout's
`.venv/bin/hark-*` (or /bin/true for the chrony helper): every other line is the shipped one.
`User=hark` stays: systemd 252 resolves users only when it starts a unit, not when it verifies
one, so no user has to be created on the test machine (and `--root` would need a whole system
tree with sysinit.target). Verify reports unknown keys and bad values as warnings with exit
code 0, so a test fails on any output at all.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hark_fleet.node.privileged import PRIVILEGED_COMMANDS

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
VENV_BIN = Path(sys.executable).parent
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "CapabilityBoundingSet": "",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "User": "hark",
}


def unit_copy(tmp_path: Path, name: str, program: Path) -> Path:
    """The shipped unit with its ExecStart program replaced by `program`."""
    lines = []
    for line in (SYSTEMD / name).read_text().splitlines():
        if line.startswith("ExecStart="):
            _, _, rest = line.partition("=")
            arguments = rest.split()[1:]
            line = "ExecStart=" + " ".join([str(program), *arguments])
        lines.append(line)
    copy = tmp_path / name
    copy.write_text("\n".join(lines) + "\n")
    return copy


def settings(name: str) -> dict[str, dict[str, str]]:
    """A unit's [Unit] and [Service] keys (the last value of a repeated key)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"), delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return {section: dict(parser[section]) for section in parser.sections()}


@pytest.mark.parametrize(
    ("name", "program"),
    [
        ("hark-node.service", VENV_BIN / "hark-node"),
        ("hark-hub.service", VENV_BIN / "hark-hub"),
        ("hark-time-step.service", Path("/bin/true")),
    ],
)
def test_units_verify_without_a_single_warning(tmp_path: Path, name: str, program: Path) -> None:
    assert program.exists(), f"{program} missing: install hark into the venv first"
    done = subprocess.run(
        [ANALYZE, "verify", str(unit_copy(tmp_path, name, program))], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


@pytest.mark.parametrize(("name", "program"), [("hark-node.service", "hark-node"), ("hark-hub.service", "hark-hub")])
def test_units_keep_a_low_exposure_score(tmp_path: Path, name: str, program: str) -> None:
    copy = unit_copy(tmp_path, name, VENV_BIN / program)
    # The score is out of 100 here (shown divided by ten): 25 is "2.5 OK" at most.
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--threshold=25", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_the_node_unit_is_notify_with_a_watchdog_restart_limits_and_hardening() -> None:
    unit = settings("hark-node.service")
    service = unit["Service"]
    assert (service["Type"], service["WatchdogSec"], service["Restart"]) == ("notify", "30s", "on-failure")
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= set(unit["Unit"])
    assert service["ExecStart"] == "/opt/hark/.venv/bin/hark-node"
    assert {"audio", "dialout"} <= set(service["SupplementaryGroups"].split())
    assert service["EnvironmentFile"] == "-/etc/hark/node.env"
    assert service["ReadWritePaths"] == "/var/lib/hark-node"
    for key, value in HARDENING.items():
        assert service.get(key) == value, key


def test_the_hub_unit_is_exec_because_the_hub_sends_no_ready() -> None:
    unit = settings("hark-hub.service")
    service = unit["Service"]
    assert service["Type"] == "exec" and "WatchdogSec" not in service
    assert service["ExecStart"] == "/opt/hark/.venv/bin/hark-hub"
    assert service["EnvironmentFile"] == "-/etc/hark/hub.env"
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= set(unit["Unit"])
    for key, value in HARDENING.items():
        assert service.get(key) == value, key


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SYSTEMD / "install.sh"), *args], capture_output=True, text=True, timeout=60)


def test_install_dry_run_names_every_step_and_changes_nothing() -> None:
    existed = {path: path.exists() for path in (Path("/etc/hark"), Path("/opt/hark"), Path("/var/lib/hark-node"))}
    done = run_install("--hub", "--node", "--dry-run")
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stdout.splitlines() if line.startswith("== ")]
    for word in ("packages:", "user: system user hark", "directories:", "settings:", "venv:", "units:", "lifecycle:", "systemd:"):
        assert any(word in step for step in steps), f"no step {word!r} in {steps}"
    commands = "\n".join(line for line in done.stdout.splitlines() if line.startswith("+ "))
    for expected in (
        "install -d -o hark -g hark -m 0750 /var/lib/hark-hub /var/lib/hark-node",
        "/opt/hark/.venv/bin/pip install",
        "/etc/systemd/system/hark-node.service",
        "/etc/systemd/system/hark-hub.service",
        "/etc/polkit-1/rules.d/49-hark-node.rules",
        "/opt/hark/bin/hark-privileged",
        "systemctl daemon-reload",
        "systemctl enable hark-hub.service hark-node.service",
    ):
        assert expected in commands, expected
    assert {path: path.exists() for path in existed} == existed


def test_a_hub_only_install_has_no_node_steps() -> None:
    done = run_install("--hub", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "hark-node" not in done.stdout and "polkit" not in done.stdout
    assert "systemctl enable hark-hub.service" in done.stdout


@pytest.mark.parametrize("args", [(), ("--dry-run",), ("--node", "--force")])
def test_install_refuses_to_guess(args: tuple[str, ...]) -> None:
    done = run_install(*args)
    assert done.returncode == 2 and "usage:" in done.stderr


@pytest.fixture
def fake_systemctl(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A `systemctl` on PATH that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "calls"
    program = bin_dir / "systemctl"
    program.write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
    program.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, record


def test_every_privileged_command_of_the_node_maps_to_a_polkit_allowed_call(fake_systemctl: tuple[dict[str, str], Path]) -> None:
    env, record = fake_systemctl
    commands = [argv for candidates in PRIVILEGED_COMMANDS.values() for argv in candidates]
    for argv in commands:
        done = subprocess.run([str(SYSTEMD / "hark-privileged"), *argv], env=env, capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, (argv, done.stderr)
    assert record.read_text().splitlines() == [
        {
            ("systemctl", "reboot"): "--no-ask-password reboot",
            ("chronyc", "-a", "makestep"): "--no-ask-password start hark-time-step.service",
            ("systemctl", "restart", "systemd-timesyncd"): "--no-ask-password restart systemd-timesyncd.service",
        }[argv]
        for argv in commands
    ]


@pytest.mark.parametrize("argv", [("systemctl", "poweroff"), ("systemctl", "reboot", "--force"), ("sh", "-c", "id"), ()])
def test_the_privileged_runner_refuses_anything_else(fake_systemctl: tuple[dict[str, str], Path], argv: tuple[str, ...]) -> None:
    env, record = fake_systemctl
    done = subprocess.run([str(SYSTEMD / "hark-privileged"), *argv], env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 126 and "refusing" in done.stderr
    assert not record.exists()


POLKIT_HARNESS = """  // `node -e`: argv[1] is the rule file, argv[2] the cases
const fs = require("fs");
let rule;
const polkit = {Result: {YES: "yes", NO: "no", NOT_HANDLED: "not_handled"}, addRule: (f) => { rule = f; }};
new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map(([user, id, details]) =>
  rule({id, lookup: (key) => details[key]}, {user}))));
"""


def test_the_polkit_rule_allows_the_hark_user_exactly_reboot_and_time_sync(tmp_path: Path) -> None:
    cases = [
        (("hark", "org.freedesktop.login1.reboot", {}), "yes"),
        (("hark", "org.freedesktop.login1.reboot-multiple-sessions", {}), "yes"),
        (("hark", "org.freedesktop.systemd1.manage-units", {"unit": "systemd-timesyncd.service", "verb": "restart"}), "yes"),
        (("hark", "org.freedesktop.systemd1.manage-units", {"unit": "hark-time-step.service", "verb": "start"}), "yes"),
        (("hark", "org.freedesktop.systemd1.manage-units", {"unit": "systemd-timesyncd.service", "verb": "stop"}), "not_handled"),
        (("hark", "org.freedesktop.systemd1.manage-units", {"unit": "ssh.service", "verb": "restart"}), "not_handled"),
        (("hark", "org.freedesktop.login1.power-off", {}), "not_handled"),
        (("hark", "org.freedesktop.systemd1.manage-unit-files", {}), "not_handled"),
        (("alice", "org.freedesktop.login1.reboot", {}), "not_handled"),
    ]
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node.js missing: tests/services.sh installs it"
    done = subprocess.run(
        [node, "-e", POLKIT_HARNESS, str(SYSTEMD / "polkit/49-hark-node.rules"), json.dumps([c for c, _ in cases])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [expected for _, expected in cases]
