"""What a hub-managed Mosquitto runs with: its binary, its configuration file and its first identities (pure).

Everything lives under `<data dir>/mosquitto/`: `mosquitto.conf` (rewritten at every start),
`dynamic-security.json` (the plugin's identities, made once with the hub's admin user and kept,
so node identities survive restarts; only the admin's password is replaced at each start),
`mosquitto.db` (persistence: QoS 1 sessions survive a broker restart) and, with TLS, the hub's
server certificate and key for the node listener.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hark_fleet.hub.mqtt.dynsec import HUB_ROLE, hub_acls

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/arm-linux-gnueabihf/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
DIRECTORY = "mosquitto"
CONFIG_FILE = "mosquitto.conf"
DYNSEC_FILE = "dynamic-security.json"
ADMIN_ROLE = "hark-dynsec-admin"
PBKDF2_ITERATIONS = 101  # what `mosquitto_ctrl dynsec init` uses: a login costs the broker little
SALT_BYTES = 12

# Sized for a fleet: Mosquitto's default of 1,000 queued messages per client silently drops QoS 1
# for a subscriber that lags (the hub's own session after a restart, with a thousand nodes' heartbeats).
MAX_QUEUED_MESSAGES = 200_000
MAX_INFLIGHT_MESSAGES = 100  # the hub's bridge allows as many in flight
AUTOSAVE_INTERVAL_S = 30  # persistence written this often (and on every clean stop)

_SAFE_PATH = re.compile(r"[^\s#]+")  # Mosquitto's configuration splits on whitespace


class MosquittoSetupError(Exception):
    """This machine or data directory cannot run a managed Mosquitto (the message says why)."""


def find_binary(configured: str | None) -> Path | None:
    """The Mosquitto binary: the configured path if it is an executable, else on PATH or a usual place."""
    if configured:
        path = Path(configured)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    return next((Path(p) for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def find_dynsec_plugin(binary: Path) -> Path | None:
    """The dynamic security plugin shipped with the binary (Debian's `mosquitto` package has it)."""
    prefix = binary.resolve().parent.parent
    candidates = [prefix / "lib" / "mosquitto_dynamic_security.so", *map(Path, DYNSEC_PLUGIN_PATHS)]
    return next((p for p in candidates if p.is_file()), None)


def check_path(path: Path) -> Path:
    """`path` if Mosquitto's configuration can name it (no whitespace, no `#`), else MosquittoSetupError."""
    if not _SAFE_PATH.fullmatch(str(path)):
        raise MosquittoSetupError(f"Mosquitto cannot use the path {str(path)!r} (it contains whitespace or '#')")
    return path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The node listener's TLS material: the hub's CA, server certificate and key, and the CRL."""

    cafile: Path
    certfile: Path
    keyfile: Path
    crlfile: Path


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    tls: TlsFiles | None = None


def render_config(
    *,
    listeners: Sequence[Listener],
    plugin: Path,
    dynsec_file: Path,
    persistence_dir: Path,
    user: str,
) -> str:
    """The whole `mosquitto.conf`: one authentication for every listener, through the dynamic security plugin."""
    lines = [
        "# Written by the hark hub at every start: edits here are lost.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"plugin {check_path(plugin)}",
        f"plugin_opt_config_file {check_path(dynsec_file)}",
        "persistence true",
        f"persistence_location {check_path(persistence_dir)}/",
        f"autosave_interval {AUTOSAVE_INTERVAL_S}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        "set_tcp_nodelay true",
        # Started as root, Mosquitto would switch to the `mosquitto` user, who cannot write the hub's data dir.
        f"user {user}",
        "log_dest stderr",
        "log_timestamp false",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    for listener in listeners:
        lines += ["", f"listener {listener.port} {listener.host}", "max_connections -1"]
        if listener.tls is not None:
            tls = listener.tls
            lines += [
                f"cafile {check_path(tls.cafile)}",
                f"certfile {check_path(tls.certfile)}",
                f"keyfile {check_path(tls.keyfile)}",
                f"crlfile {check_path(tls.crlfile)}",
                # Nodes present the client certificate their claim gave them; the CRL refuses a revoked one.
                "require_certificate true",
            ]
    return "\n".join(lines) + "\n"


def current_user() -> str:
    """The user the hub runs as (Mosquitto's `user` option, which it only uses when started as root)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "root" if os.geteuid() == 0 else str(os.geteuid())


# -- the dynamic security file ---------------------------------------------------------------


def hash_password(password: str, salt: bytes, iterations: int = PBKDF2_ITERATIONS) -> dict[str, Any]:
    """A client's password as the plugin stores it: PBKDF2-SHA512, salt and hash in base64."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def _admin_acls() -> list[dict[str, Any]]:
    control = "$CONTROL/dynamic-security/#"
    return [
        {"acltype": "publishClientSend", "topic": control, "allow": True},
        {"acltype": "publishClientReceive", "topic": control, "allow": True},
        {"acltype": "subscribePattern", "topic": control, "allow": True},
        {"acltype": "unsubscribePattern", "topic": control, "allow": True},
    ]


def initial_dynsec(username: str, password: str, salt: bytes) -> dict[str, Any]:
    """A first `dynamic-security.json`: the hub's user, allowed the plugin's commands and every node topic.

    The default access denies publishing and subscribing that no role allows, as the hub sets it anyway.
    """
    return {
        "clients": [
            {
                "username": username,
                "textName": "hark hub",
                **hash_password(password, salt),
                "roles": [{"rolename": ADMIN_ROLE}, {"rolename": HUB_ROLE}],
            }
        ],
        "roles": [
            {"rolename": ADMIN_ROLE, "acls": _admin_acls()},
            {"rolename": HUB_ROLE, "acls": [acl.as_json() for acl in hub_acls()]},
        ],
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True, "subscribe": False, "unsubscribe": True},
    }


def with_admin_password(document: dict[str, Any], username: str, password: str, salt: bytes) -> dict[str, Any]:
    """`document` with the hub user's password replaced (made anew, with the admin role, if it is missing)."""
    fresh = initial_dynsec(username, password, salt)
    clients = [c for c in document.get("clients") or [] if isinstance(c, dict)]
    mine = next((c for c in clients if c.get("username") == username), None)
    if mine is None:
        clients.append(fresh["clients"][0])
    else:
        mine.update(hash_password(password, salt))
        roles = [r for r in mine.get("roles") or [] if isinstance(r, dict)]
        for wanted in (ADMIN_ROLE, HUB_ROLE):
            if not any(r.get("rolename") == wanted for r in roles):
                roles.append({"rolename": wanted})
        mine["roles"] = roles
        mine.pop("disabled", None)
    roles_listed = [r for r in document.get("roles") or [] if isinstance(r, dict)]
    for role in fresh["roles"]:
        if not any(r.get("rolename") == role["rolename"] for r in roles_listed):
            roles_listed.append(role)
    return {**document, "clients": clients, "roles": roles_listed}


def read_dynsec(path: Path) -> dict[str, Any] | None:
    """The plugin's file, or None when there is none; MosquittoSetupError when it is not readable JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise MosquittoSetupError(f"cannot read {path}: {err.strerror}") from err
    try:
        document = json.loads(text)
    except ValueError as err:
        raise MosquittoSetupError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise MosquittoSetupError(f"{path} is not a JSON object")
    return document


def dynsec_usernames(document: dict[str, Any] | None) -> set[str]:
    """The usernames of the clients in a dynamic security document."""
    if document is None:
        return set()
    return {str(c.get("username")) for c in document.get("clients") or [] if isinstance(c, dict)}


def log_level_of(line: str) -> str:
    """How loud a line of Mosquitto's output is in the hub's log."""
    if line.startswith("Error") or "Error:" in line:
        return "error"
    if "should not be run as root" in line:
        return "debug"  # the hub runs it as its own user (`user`), root only where the hub is root
    if line.startswith("Warning") or "Warning:" in line:
        return "warning"
    if line.startswith(("New connection", "New client", "Client ", "dynsec: ")) or "disconnected" in line:
        return "debug"  # one per node (re)connect or identity change: a fleet's worth after every restart
    return "info"
