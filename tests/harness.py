"""Real processes for tests: hark hubs, Mosquitto brokers and PostgreSQL databases."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg2
from hark_fleet.hub.processes import free_port
from hark_fleet.hub.processes import stop_process as terminate
from hark_fleet.hw.watchdog import notify_address
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get("HARK_TEST_POSTGRES_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")
ADMIN_PASSWORD = "correct-horse-battery-staple"
MDNS_INTERFACES = "127.0.0.1"  # test processes speak mDNS on loopback only, never on the real LAN

_children: list[subprocess.Popen[bytes]] = []


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def spawn(args: list[str], env: dict[str, str] | None = None, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a child process whose output goes to `log_path`; it is tracked for the leak check.

    Python children run as installed: the checkout's folders (`hub/`, `node/`...) are not on
    their path (PYTHONSAFEPATH), so a module reached by its old top-level name fails here too.
    """
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    env = {**(os.environ if env is None else env), "PYTHONSAFEPATH": "1"}
    proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    if log_path:
        out.close()  # the child holds its own descriptor
    _children.append(proc)
    return proc


@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real small disk at `mount` (a tmpfs of `size`, e.g. `8m`; needs root), unmounted at the end."""
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def enable_loopback_multicast() -> None:
    """mDNS tests run on loopback: give `lo` the MULTICAST flag (root; harmless and idempotent)."""
    subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True, timeout=10)


def leftover_children() -> list[subprocess.Popen[bytes]]:
    """Children a test started and did not stop."""
    return [p for p in _children if p.poll() is None]


# -- PostgreSQL -------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def create_database() -> str:
    """A fresh, empty PostgreSQL database; returns its URL."""
    name = f"hark_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn = psycopg2.connect(POSTGRES_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn.close()
    return _with_database(POSTGRES_ADMIN_URL, name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = psycopg2.connect(POSTGRES_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    conn.close()


# -- Mosquitto ----------------------------------------------------------------------


@dataclass
class Mosquitto:
    """A Mosquitto broker of the test's own, on a free loopback port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    extra_config: str = ""

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + self.extra_config,
            encoding="utf-8",
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = spawn([binary, "-c", str(conf)], log_path=self.workdir / "mosquitto.log")
        wait_for(lambda: port_open(self.host, self.port) or self.proc.poll() is not None, 10, "mosquitto to listen")
        if self.proc.poll() is not None:
            raise RuntimeError((self.workdir / "mosquitto.log").read_text())

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None


# -- hark-hub -------------------------------------------------------------------------


@dataclass
class HubProcess:
    """A real `hark-hub` process on free ports with its own data directory."""

    workdir: Path
    database_url: str | None = None
    mqtt_url: str | None = None
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _token: str | None = None
    tls: bool = False  # HARK_TLS=on: HTTPS and mqtts, clients trust the hub's CA

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What httpx should trust: the hub's CA with TLS."""
        return ssl.create_default_context(cafile=str(self.data_dir / "ca" / "ca.pem")) if self.tls else True

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "hub.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
        env.update(
            HARK_DATA_DIR=str(self.data_dir),
            HARK_HTTP_HOST="127.0.0.1",
            HARK_HTTP_PORT=str(self.port),
            HARK_ADMIN_PASSWORD=ADMIN_PASSWORD,
            HARK_LOG_LEVEL="INFO",
            HARK_MDNS_INTERFACES=MDNS_INTERFACES,
        )
        if self.tls:
            env["HARK_TLS"] = "on"
        if self.database_url:
            env["HARK_DATABASE_URL"] = self.database_url
        if self.mqtt_url:
            env["HARK_MQTT_URL"] = self.mqtt_url
        else:
            env["HARK_EMBEDDED_MQTT_BIND"] = f"127.0.0.1:{self.mqtt_port}"
        env.update(self.env_extra)
        return {k: v for k, v in env.items() if v is not None}

    def start(self, wait_ready: bool = True) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn([sys.executable, "-m", "hark_fleet.hub", "run"], env=self.env(), log_path=self.log_path)
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"hark-hub exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1, verify=self.verify).status_code == 200
            except (httpx.HTTPError, FileNotFoundError):  # with TLS, the CA appears on the hub's first start
                return False

        wait_for(ready, timeout, "hark-hub to be ready", interval=0.1)

    def stop(self) -> int:
        """SIGTERM and wait; return the exit code."""
        code = terminate(self.proc) if self.proc is not None else 0
        self.proc = None
        self._token = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, verify=self.verify)

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        response = httpx.post(
            f"{self.url}/api/v1/auth/login",
            json={"username": username, "password": password},
            timeout=10,
            verify=self.verify,
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]["token"]

    def admin(self) -> httpx.Client:
        """A client logged in as the first admin (one session per hub process)."""
        if self._token is None:
            self._token = self.login()
        return self.client(self._token)

    def ensure_site(self, site_id: str, time_zone: str = "UTC", **fields: Any) -> None:
        """Make the site `site_id` unless it exists (a node's or grant's site must exist)."""
        with self.admin() as admin:
            response = admin.post("/api/v1/sites", json={"id": site_id, "name": site_id, "time_zone": time_zone, **fields})
        assert response.status_code in (201, 409), response.text


@contextmanager
def running_hub(workdir: Path, **kwargs: Any) -> Iterator[HubProcess]:
    hub = HubProcess(workdir, **kwargs)
    hub.start()
    try:
        yield hub
    finally:
        code = hub.stop()
        assert code == 0, f"hark-hub exited with {code}:\n{hub.log()}"


@contextmanager
def hub_on(backend: str, workdir: Path, **kwargs: Any) -> Iterator[HubProcess]:
    """A running hub on `backend`: "sqlite" in its data dir, or "postgres" on a fresh database dropped afterwards."""
    url = create_database() if backend == "postgres" else None
    try:
        with running_hub(workdir, database_url=url, **kwargs) as hub:
            yield hub
    finally:
        if url:
            drop_database(url)


@contextmanager
def database_on(backend: str, workdir: Path) -> Iterator[Any]:
    """A migrated hub database on `backend` ("sqlite" in `workdir`, or "postgres" on a fresh database dropped
    afterwards), bound to the models and inside a connection, for tests of the services without a hub process."""
    import peewee
    from hark_fleet.hub.db.database import migrate, open_database
    from hark_fleet.hub.db.models import database_proxy

    url = create_database() if backend == "postgres" else None
    database = open_database(url, workdir)
    migrate(database)
    previous = database_proxy.obj
    database_proxy.initialize(database)
    try:
        with database.connection_context():
            yield database
    finally:
        database_proxy.initialize(previous)
        if isinstance(database, peewee.SqliteDatabase):
            database.close()
        else:
            database.close_all()
            if url:
                drop_database(url)


# -- Mosquitto with the dynamic security plugin ---------------------------------------

DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


def dynsec_plugin_path() -> Path | None:
    """Where this machine's Mosquitto dynamic security plugin is, if anywhere."""
    return next((Path(p) for p in DYNSEC_PLUGIN_PATHS if Path(p).exists()), None)


@dataclass
class MosquittoDynsec:
    """A Mosquitto of the test's own that authenticates through the dynamic security plugin.

    Identities live in `workdir/dynamic-security.json`, made once by `mosquitto_ctrl dynsec
    init` with an admin client; `restart()` keeps the file, so they survive it.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    admin_username: str = "dynsec-admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"mqtt://{self.admin_username}:{self.admin_password}@{self.host}:{self.port}"

    @property
    def dynsec_file(self) -> Path:
        return self.workdir / "dynamic-security.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def start(self) -> None:
        plugin = dynsec_plugin_path()
        ctrl = shutil.which("mosquitto_ctrl")
        if plugin is None or ctrl is None:
            raise RuntimeError("the Mosquitto dynamic security plugin or mosquitto_ctrl is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.dynsec_file.exists():
            subprocess.run(
                [ctrl, "dynsec", "init", str(self.dynsec_file), self.admin_username, self.admin_password],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                timeout=10,
            )
        conf = self.workdir / "mosquitto.conf"
        # Started as root, Mosquitto drops to the `mosquitto` user, which could not save the file.
        stay_root = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            "per_listener_settings false\n"
            f"listener {self.port} {self.host}\n"
            "allow_anonymous false\n"
            "persistence false\n"
            f"plugin {plugin}\n"
            f"plugin_opt_config_file {self.dynsec_file}\n"
            f"{stay_root}"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n",
            encoding="utf-8",
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = spawn([binary, "-c", str(conf)], log_path=self.log_path)
        wait_for(lambda: port_open(self.host, self.port) or self.proc.poll() is not None, 10, "mosquitto to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(self.log())

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def restart(self) -> None:
        """Stop and start on the same port, keeping the dynamic security file."""
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- hark-node ----------------------------------------------------------------------------


@dataclass
class NodeProcess:
    """A real `hark-node` process with its own data directory.

    Without `hub_url`, `node_id` and `credential` it starts unprovisioned: it advertises itself
    by mDNS (on loopback) and waits to be claimed on its local endpoint (`local_url`).
    """

    workdir: Path
    hub_url: str | None = None
    node_id: str | None = None
    credential: str | None = None
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    local_port: int = field(default_factory=free_port)
    python: str = sys.executable  # another environment's interpreter runs the node as installed there

    @property
    def local_url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def state_path(self) -> Path:
        return self.workdir / "data" / "state.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "node.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
        env.update(
            HARK_DATA_DIR=str(self.workdir / "data"),
            HARK_NODE_LOCAL_PORT=str(self.local_port),
            HARK_NODE_LOCAL_HOST="127.0.0.1",
            HARK_MDNS_INTERFACES=MDNS_INTERFACES,
            HARK_HEARTBEAT_INTERVAL_S="1",
            HARK_LOG_LEVEL="INFO",
        )
        seeds = {"HARK_HUB_URL": self.hub_url, "HARK_NODE_ID": self.node_id, "HARK_NODE_CREDENTIAL": self.credential}
        env.update({k: v for k, v in seeds.items() if v is not None})
        env.update(self.env_extra)
        return env

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn([self.python, "-m", "hark_fleet.node"], env=self.env(), log_path=self.log_path)

    def stop(self) -> int:
        code = terminate(self.proc) if self.proc is not None else 0
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no goodbye, as in a power cut."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def mqtt_login(
    port: int, username: str | None, password: str | None, host: str = "127.0.0.1", client_id: str | None = None
) -> bool:
    """Whether a broker accepts a CONNECT with these credentials (the probe disconnects at once).

    The client id is the username unless given: a node's broker login is bound to its id as client id.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or username or f"probe-{secrets.token_hex(3)}")
    if username is not None:
        client.username_pw_set(username, password)
    outcome: list[bool] = []
    done = threading.Event()

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        outcome.append(not reason.is_failure)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *args: done.set()
    client.connect(host, port)
    client.loop_start()
    done.wait(5)
    client.disconnect()
    client.loop_stop()
    return outcome == [True]


class NotifySocket:
    """What systemd would receive: a datagram socket bound where NOTIFY_SOCKET points."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = notify_address(name)
        assert address is not None
        self.sock.bind(address)

    def receive(self, timeout: float = 2.0) -> tuple[float, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096)
        return time.monotonic(), data.decode()

    def messages_for(self, seconds: float) -> list[tuple[float, str]]:
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.receive(left))
            except TimeoutError:
                break
        return got

    def close(self) -> None:
        self.sock.close()
