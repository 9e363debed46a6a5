"""The hub's composition root: database, broker, bridge and HTTP server, started and stopped in order."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from hark_fleet.hub import const
from hark_fleet.hub.app import make_app
from hark_fleet.hub.auth.authenticator import Authenticator
from hark_fleet.hub.auth.oidc import OidcClient, OidcSettings
from hark_fleet.hub.auth.tokens import new_password
from hark_fleet.hub.cluster import new_instance_id
from hark_fleet.hub.cluster.caches import invalidate_everywhere
from hark_fleet.hub.cluster.crl import CrlPublisher
from hark_fleet.hub.cluster.leases import LeaseManager
from hark_fleet.hub.cluster.messages import ClusterMessages
from hark_fleet.hub.cluster.pg_notify import PgNotify
from hark_fleet.hub.config import HubConfig
from hark_fleet.hub.db.database import HubDatabase, describe, open_database
from hark_fleet.hub.db.integrity import record_database
from hark_fleet.hub.disk_watch import DiskWatch
from hark_fleet.hub.errors import StartupError
from hark_fleet.hub.events import EventBus
from hark_fleet.hub.ingest import FleetIngest
from hark_fleet.hub.listen.runtime import ListenHub
from hark_fleet.hub.load import LoadMonitor
from hark_fleet.hub.metrics import HubMetrics
from hark_fleet.hub.mqtt.access import BrokerAccess
from hark_fleet.hub.mqtt.bridge import BrokerAddress, MqttBridge, bridge_client_id, shared_client_id
from hark_fleet.hub.mqtt.dynsec import DynsecClient, DynsecError
from hark_fleet.hub.mqtt.embedded import EmbeddedBroker
from hark_fleet.hub.mqtt.mosquitto import ManagedMosquitto, ServerTls
from hark_fleet.hub.mqtt.mosquitto_conf import dynsec_usernames, find_binary, find_dynsec_plugin, read_dynsec
from hark_fleet.hub.notify.worker import Notifier
from hark_fleet.hub.offsite.runner import UploadRunner
from hark_fleet.hub.retention_runner import RetentionRunner
from hark_fleet.hub.schedule_dispatcher import ScheduleDispatcher
from hark_fleet.hub.secret_box import SecretBox
from hark_fleet.hub.services.auth import ensure_first_admin
from hark_fleet.hub.services.discovery import NodeDiscovery
from hark_fleet.hub.services.nodes import credential_table
from hark_fleet.hub.services.recording_profiles import ensure_default as ensure_default_profile
from hark_fleet.hub.storage import LocalStorage, PartialUploads, RecordingStorage
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.protocol.tls import make_bundle, reload_crl, server_context
from hark_fleet.protocol.topics import command_topic
from hark_fleet.provision.ca import CLIENT, SERVER, CertificateAuthority, CertificateNotFound
from hark_fleet.provision.mdns import HubAdvert
from hark_fleet.provision.revocation import revoke
from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_UPLOAD_BYTES = 64 * 1024**3  # streaming handlers lower this per request
# Tornado (6.5.5+) refuses a query string of more than 1,000 fields before any handler runs, with a bare 400 and
# no body. It parses up to this many instead (a request head is at most 64 KiB anyway) and the API answers past
# MAX_QUERY_FIELDS in its error shape. The same limit applies to urlencoded bodies, which the API does not take.
QUERY_FIELDS_PARSED = 20_000
CRL_POLL_S = 2.0  # `hark-provision ca revoke` rewrites the CRL beside a running hub


class Hub:
    """One running hub. Handlers receive it through `initialize(hub=...)`."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.instance_id = new_instance_id()  # this process in the deployment (issue 24)
        self.metrics = HubMetrics()
        self.db = HubDatabase(
            open_database(config.database_url, config.data_dir, config.database_pool_size),
            observe=self.metrics.db_latency.observe,
        )
        # PostgreSQL: LISTEN for the other instances' events and messages (issue 24); None on SQLite
        self.pg_notify = PgNotify(config.database_url) if config.on_postgres and config.database_url else None
        self.cluster_messages = ClusterMessages(self.instance_id, self.db, self.pg_notify)
        self.authenticator = Authenticator(self.db)
        self.leases = LeaseManager(self)  # singleton work on one instance of the deployment (issue 24)
        self.broker: EmbeddedBroker | None = None  # the in-process (amqtt) broker
        self.mosquitto: ManagedMosquitto | None = None  # or the Mosquitto the hub runs as its embedded broker
        self.bridge: MqttBridge | None = None
        self.broker_address: BrokerAddress | None = None
        self.http_server: HTTPServer | None = None
        self.oidc: OidcClient | None = None
        self.events = EventBus()
        if self.pg_notify is not None:  # numbered by the shared event log, delivered on every instance (issue 24)
            self.events.share(self.db, self.pg_notify)
        self.ingest = FleetIngest(self)
        self.schedules = ScheduleDispatcher(self)  # schedules into jobs ahead of time (issue 19)
        self.upload_runner = UploadRunner(self)  # recordings to the off-site providers (issue 20)
        self.retention = RetentionRunner(self)  # evicts confirmed copies by policy and when space is short (issue 20)
        self.notifier = Notifier(self)  # fleet events to notification channels, through a durable outbox (issue 21)
        self.listen = ListenHub(self)  # live listen: node streams fanned out to listeners, sessions (issue 23)
        invalidate_everywhere(self)  # PostgreSQL: identity caches and meter sites follow the other instances' changes
        self.crl_publisher = CrlPublisher(self)  # the CRL lease: publishes the CRL again before it expires (issue 24)
        self.storage: RecordingStorage = LocalStorage(config.data_dir / "recordings")
        self.uploads = PartialUploads(config.data_dir / "uploads")
        self.secrets = SecretBox.open_dir(config.data_dir)  # provider credentials sealed at rest (issue 20)
        self.disk = DiskWatch(self)
        self.load = LoadMonitor(self)  # `GET /api/load`
        self.dynsec: DynsecClient | None = None
        self.ca: CertificateAuthority | None = None
        self.tls = config.tls_enabled
        self.tls_contexts: list[ssl.SSLContext] = []  # the listeners', reloaded when the CRL changes
        self._server_tls: tuple[str, str] | None = None  # the server certificate and key of this run (PEM)
        self._crl_mtime = 0.0
        self._crl_watch: asyncio.Task[None] | None = None
        self._public_mqtt: str | None = None
        interfaces = config.mdns_interfaces
        self.discovery = NodeDiscovery(None if interfaces is None or isinstance(interfaces, bool) else interfaces)
        self._streams: set[Any] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._pending_switches: dict[str, asyncio.Task[None]] = {}  # node id -> its delayed broker password change
        self.http_port = 0
        self.started_at = time.time()
        self._cpu = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hark-cpu")
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy work (password hashing) on a small pool, off the loop and the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    def after(self, delay_s: float, work: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        """Run `work` after `delay_s`, tracked so the hub waits for it when stopping; cancelling the task drops it."""

        async def delayed() -> None:
            try:
                await asyncio.sleep(delay_s)
            except asyncio.CancelledError:
                work.close()
                raise
            try:
                await work
            except Exception:
                log.exception("delayed work failed")

        task = asyncio.create_task(delayed())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def node_credentials_changed_later(self, node_id: str, credential: str, delay_s: float) -> None:
        """`node_credentials_changed` without a kick after `delay_s`, unless another change for the node comes first."""
        self._cancel_pending_switch(node_id)
        self._pending_switches[node_id] = self.after(delay_s, self.node_credentials_changed(node_id, credential, kick=False))

    def _cancel_pending_switch(self, node_id: str) -> None:
        """A newer credential supersedes one still waiting to reach the broker (it would overwrite the newer one)."""
        pending = self._pending_switches.pop(node_id, None)
        if pending is not None and pending is not asyncio.current_task() and not pending.done():
            pending.cancel()

    # -- streams -----------------------------------------------------------------------

    def streams_opened(self, handler: Any) -> None:
        self._streams.add(handler)

    def streams_closed(self, handler: Any) -> None:
        self._streams.discard(handler)

    # -- node identities on the broker ---------------------------------------------------

    async def refresh_broker_identities(self) -> None:
        """Hand the embedded broker the current node credentials (hashes only)."""
        if self.broker is not None:
            table = await self.db.run(credential_table)
            self.broker.access.set_node_credentials(table)

    async def node_credentials_changed(self, node_id: str, credential: str, kick: bool) -> None:
        """A node was enrolled or its credential rotated: update the broker; with `kick`, drop its session."""
        self._cancel_pending_switch(node_id)
        self.authenticator.forget_all()
        await self.refresh_broker_identities()
        if self.broker is not None and kick:
            await self.broker.kick(node_id)
        if self.dynsec is not None:
            await self.dynsec.upsert_node(node_id, credential)  # Mosquitto drops a session whose password changes
            if kick:
                await self.dynsec.kick(node_id)

    def drop_credential_deliveries(self, node_id: str) -> None:
        """A rotation makes earlier deliveries stale: drop those still waiting for the node (embedded broker only).

        Mosquitto has no way to do this; there the node ignores a delivery that does not name the
        credential it holds, and falls back to its previous credential when a new one is refused.
        """
        if self.broker is not None:
            dropped = self.broker.drop_queued(node_id, command_topic(node_id, "credentials"))
            if dropped:
                log.info("dropped %d stale credential deliveries waiting for node %s", dropped, node_id)

    async def node_removed(self, node_id: str) -> None:
        self._cancel_pending_switch(node_id)
        if self.ca is not None:
            await self.revoke_certificates(node_id)
        self.authenticator.forget_all()
        await self.refresh_broker_identities()
        if self.broker is not None:
            await self.broker.forget(node_id)
        if self.dynsec is not None:
            await self.dynsec.delete_node(node_id)

    # -- certificates ------------------------------------------------------------------

    async def node_bundle(self, node_id: str) -> str | None:
        """What a claim hands the node as `ca_pem` with TLS on: the CA, a new client certificate and its key."""
        if not self.tls or self.ca is None:
            return None
        ca = self.ca
        issued = await asyncio.get_running_loop().run_in_executor(None, ca.issue, node_id, CLIENT)
        return make_bundle(ca.ca_pem, issued.cert_pem, issued.key_pem)

    async def revoke_certificates(self, subject: str) -> None:
        """Revoke every certificate of `subject` (a node id), refused from its next connection on."""
        if self.ca is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(None, revoke, self.ca, subject)
        except CertificateNotFound:
            return
        self._reload_crl()

    def _reload_crl(self) -> None:
        if self.ca is None:
            return
        try:
            mtime = self.ca.crl_path.stat().st_mtime
        except OSError:
            return
        if mtime == self._crl_mtime:
            return
        self._crl_mtime = mtime
        for context in self.tls_contexts:
            reload_crl(context, self.ca.crl_path)
        if self.mosquitto is not None:
            self.mosquitto.reload_tls()  # it rereads its certificate, key and CRL on SIGHUP
        log.info("certificate revocation list reloaded")

    async def _watch_crl(self) -> None:
        while True:
            await asyncio.sleep(CRL_POLL_S)
            self._reload_crl()

    def _server_hosts(self) -> tuple[str, ...]:
        hosts = [socket.gethostname(), "localhost", "127.0.0.1", "::1"]
        for url in (self.config.public_url, self.config.public_mqtt_url):
            if url and urlsplit(url).hostname:
                hosts.insert(0, str(urlsplit(url).hostname))
        for host in (self.config.http_host, self.config.embedded_mqtt_address[0]):
            if host not in ("0.0.0.0", "::", ""):
                hosts.append(host)
        return tuple(dict.fromkeys(hosts))

    def _start_tls(self) -> None:
        """The CA (created on first start) and, with TLS on, the hub's server certificate and context."""
        self.ca = CertificateAuthority.open(self.config.data_dir)
        self._crl_mtime = self.ca.crl_path.stat().st_mtime
        if not self.tls:
            return
        issued = self.ca.issue(self.config.public_url or socket.gethostname(), SERVER, self._server_hosts())
        self.tls_contexts = [server_context(self.ca.ca_pem, self.ca.crl_path, issued.cert_pem, issued.key_pem)]
        self._server_tls = (issued.cert_pem, issued.key_pem)

    # -- request accounting (for a graceful stop) ------------------------------

    def requests_started(self) -> None:
        self._in_flight += 1
        self._idle.clear()
        self.metrics.http_in_flight.set(self._in_flight)

    def requests_finished(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        if self._in_flight == 0:
            self._idle.set()
        self.metrics.http_in_flight.set(self._in_flight)

    @property
    def requests_in_flight(self) -> int:
        return self._in_flight

    @property
    def stream_count(self) -> int:
        """Open event streams (SSE clients)."""
        return len(self._streams)

    # -- addresses ---------------------------------------------------------------

    @property
    def public_url(self) -> str:
        if self.config.public_url:
            return self.config.public_url
        host = self.config.http_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"{'https' if self.tls else 'http'}://{host}:{self.http_port}"

    @property
    def public_mqtt_url(self) -> str | None:
        """The broker address nodes are told (no credentials)."""
        if self.config.public_mqtt_url:
            return self.config.public_mqtt_url
        if self._public_mqtt:
            return self._public_mqtt
        return self.broker_address.url() if self.broker_address else None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._start_tls)
        self._crl_watch = asyncio.create_task(self._watch_crl())
        applied = await loop.run_in_executor(None, self.db.start)
        if applied:
            log.info("database migrated: %s", ", ".join(applied))
        await loop.run_in_executor(None, record_database, config.database_url, config.data_dir)
        if self.pg_notify is not None:
            await self.pg_notify.start()  # before anything publishes: the other instances' messages from now on
        await self.events.start()
        generated = await self.db.run(ensure_first_admin, config.admin_password, new_password)
        if generated:
            self._announce_admin_password(generated)
        await self.db.run(ensure_default_profile)  # made here, not by the first read of the profiles
        await self._start_mqtt()
        await self.ingest.start()
        await self.disk.start()  # before the listener: a full disk refuses writes from the first request
        await self.load.start()
        self._start_http()
        await self.schedules.start()  # after the listener: its first pass may be long, requests are served meanwhile
        await self.upload_runner.start()
        await self.retention.start()
        await self.notifier.start()
        await self.listen.start()
        self.crl_publisher.register()
        await self.leases.start()  # the singleton roles registered above start here (on PostgreSQL: where held)
        # before anything slow (mDNS probing): requests arrive as soon as the listener is up
        if config.oidc_issuer and config.oidc_client_id and config.oidc_client_secret:
            self.oidc = OidcClient(
                OidcSettings(
                    issuer=config.oidc_issuer,
                    client_id=config.oidc_client_id,
                    client_secret=config.oidc_client_secret,
                    scopes=config.oidc_scopes,
                    redirect_url=config.oidc_redirect_url or f"{self.public_url}/api/v1/auth/oidc/callback",
                )
            )
            log.info("single sign-on with %s", config.oidc_issuer)
        if config.mdns_interfaces is not False:
            fingerprint = self.ca.fingerprint if self.tls and self.ca is not None else None
            await self.discovery.start(HubAdvert(self.public_url, self.public_mqtt_url, self.http_port, fingerprint))
        log.info(
            "hark hub listening on %s (api %s/api/v1); data in %s; database %s; mqtt %s (%s)",
            f"{'https' if self.tls else 'http'}://{config.http_host}:{self.http_port}",
            self.public_url,
            config.data_dir.resolve(),
            describe(self.db.db),
            self.public_mqtt_url,
            {"mosquitto": "embedded Mosquitto", "in-process": "embedded, in-process"}.get(self.broker_kind, "external"),
        )

    @property
    def broker_kind(self) -> str:
        """Which broker the hub uses: `mosquitto` or `in-process` (both embedded: the hub runs them), or `external`."""
        if self.mosquitto is not None:
            return "mosquitto"
        return "in-process" if self.broker is not None else "external"

    def broker_figures(self) -> dict[str, Any]:
        """The broker's kind and whether it runs (an external one: whether the hub reaches it), for `/api/load`."""
        if self.mosquitto is not None:
            running = self.mosquitto.running
        elif self.broker is not None:
            running = self.broker.running
        else:
            running = self.bridge is not None and self.bridge.connected
        return {"kind": self.broker_kind, "running": running}

    async def _mosquitto_to_run(self) -> Path | None:
        """The Mosquitto binary to run as the embedded broker, or None for the in-process one (HARK_EMBEDDED_BROKER)."""
        choice = self.config.embedded_broker
        if choice == "in-process":
            return None
        configured = self.config.mosquitto_bin
        binary = find_binary(configured)
        missing = None
        if binary is None:
            missing = f"HARK_MOSQUITTO_BIN {configured} is not an executable" if configured else "no mosquitto binary installed"
        elif find_dynsec_plugin(binary) is None:
            missing = f"no dynamic security plugin beside {binary}"
        if missing is not None:
            if choice == "mosquitto":
                raise StartupError(
                    f"HARK_EMBEDDED_BROKER=mosquitto: {missing}; install Debian's `mosquitto` package, "
                    "set HARK_MOSQUITTO_BIN, or choose HARK_EMBEDDED_BROKER=in-process"
                )
            log.info("embedded broker: in-process (%s; Debian's `mosquitto` package gives the faster one)", missing)
            return None
        assert binary is not None
        # Nodes enrolled on the in-process broker have only a hash of their credential here: Mosquitto
        # cannot take them over. `auto` stays in-process for such a hub; `mosquitto` says who is locked out.
        enrolled = set(await self.db.run(credential_table))
        loop = asyncio.get_running_loop()
        dynsec_file = self.config.data_dir / "mosquitto" / "dynamic-security.json"
        try:
            known = dynsec_usernames(await loop.run_in_executor(None, read_dynsec, dynsec_file))
        except Exception as err:  # noqa: BLE001 - an unreadable file is reported where Mosquitto starts
            log.warning("%s", err)
            known = set()
        strangers = sorted(enrolled - known)
        if strangers and choice == "auto":
            log.warning(
                "embedded broker: in-process, as %d node(s) were enrolled on it and Mosquitto cannot take over their "
                "credentials (kept as hashes only); set HARK_EMBEDDED_BROKER=mosquitto and rotate their credentials to move",
                len(strangers),
            )
            return None
        if strangers:
            log.warning(
                "%d node(s) enrolled on the in-process broker cannot log in to Mosquitto until their credential is rotated: %s",
                len(strangers),
                ", ".join(strangers[:20]),
            )
        return binary

    async def _start_mosquitto(self, binary: Path) -> BrokerAddress:
        """Run Mosquitto as the embedded broker; node identities through its dynamic security plugin."""
        secret = new_password(32)
        tls = None
        if self.tls and self.ca is not None and self._server_tls is not None:
            tls = ServerTls(self.ca.cert_path, self.ca.crl_path, *self._server_tls)
        self.mosquitto = ManagedMosquitto(binary, self.config.data_dir, const.HUB_MQTT_USERNAME, secret, tls)
        host, port = self.config.embedded_mqtt_address
        host, port = await self.mosquitto.start(host, port, fallback_to_free_port=not self.config.embedded_bind_is_explicit)
        log.info("embedded mqtt broker listening on %s:%d%s (Mosquitto, %s)", host, port, " (mqtts)" if self.tls else "", binary)
        address = self._embedded_address(host, port, self.mosquitto.local_port, secret)
        await self._start_dynsec(address, prune=True)
        return address

    async def _start_mqtt(self) -> None:
        binary = None if self.config.mqtt_url else await self._mosquitto_to_run()
        if self.config.mqtt_url:
            address = BrokerAddress.from_url(self.config.mqtt_url)
            if self.config.mqtt_dynsec:
                await self._start_dynsec(address)
        elif binary is not None:
            address = await self._start_mosquitto_or_fall_back(binary)
        else:
            address = await self._start_in_process()
        self.broker_address = address
        client_id, group = bridge_client_id(self.config.data_dir), None
        if self.config.shared_subscriptions:  # several hubs share the ingest: a clean session of this process's own
            client_id, group = shared_client_id(client_id, self.instance_id), self.config.mqtt_share_group
        self.bridge = MqttBridge(address, client_id=client_id, metrics=self.metrics, share_group=group)
        self.ingest.register()
        self.bridge.start()
        if not await self.bridge.wait_connected(5.0):
            log.warning("mqtt broker %s not reachable yet; retrying in the background", address.url())

    async def _start_in_process(self) -> BrokerAddress:
        """Run the in-process (amqtt) broker; it checks node logins against the database's credential hashes."""
        secret = new_password(32)
        self.broker = EmbeddedBroker(BrokerAccess(secret), self.tls_contexts[0] if self.tls_contexts else None)
        self.broker.access.set_node_credentials(await self.db.run(credential_table))
        host, port = self.config.embedded_mqtt_address
        host, port = await self.broker.start(host, port, fallback_to_free_port=not self.config.embedded_bind_is_explicit)
        log.info("embedded mqtt broker listening on %s:%d%s", host, port, " (mqtts)" if self.tls else "")
        return self._embedded_address(host, port, self.broker.local_port, secret)

    def _embedded_address(self, host: str, port: int, local_port: int, secret: str) -> BrokerAddress:
        """How the hub logs in to its embedded broker listening on `host:port`; with TLS, nodes are told the mqtts
        address and the hub uses the plain listener on loopback (`local_port`)."""
        if not self.tls:
            return BrokerAddress(host, port, username=const.HUB_MQTT_USERNAME, password=secret)
        public = BrokerAddress(host, port, tls=True)
        if host in ("0.0.0.0", "::", ""):
            public = BrokerAddress(urlsplit(self.public_url).hostname or socket.gethostname(), port, tls=True)
        self._public_mqtt = public.url()
        return BrokerAddress("127.0.0.1", local_port, username=const.HUB_MQTT_USERNAME, password=secret)

    async def _start_mosquitto_or_fall_back(self, binary: Path) -> BrokerAddress:
        """Mosquitto; under `auto`, the in-process broker when it cannot start (a full disk: its files cannot be written).

        Every node can log in to the in-process broker: it checks the credential hashes the database keeps for all of them.
        """
        try:
            return await self._start_mosquitto(binary)
        except StartupError as err:
            if self.config.embedded_broker != "auto":
                raise
            if self.dynsec is not None:
                await self.dynsec.close()
            if self.mosquitto is not None:
                await self.mosquitto.stop()
            self.dynsec = self.mosquitto = None
            self._public_mqtt = None
            log.warning("embedded broker: in-process, as Mosquitto cannot start: %s", err)
            return await self._start_in_process()

    async def _start_dynsec(self, address: BrokerAddress, prune: bool = False) -> None:
        """Manage node identities on Mosquitto through its dynamic security plugin (`prune`: drop unknown clients)."""
        self.dynsec = DynsecClient(address)
        try:
            await self.dynsec.start()
            await self.dynsec.set_default_acl_access()
            username = address.username or const.HUB_MQTT_USERNAME
            group = self.config.mqtt_share_group
            try:
                await self.dynsec.ensure_hub_role(username, share_group=group)
            except DynsecError:
                # Mosquitto drops every session of a user whose roles change, this one included:
                # the answer was lost with it. Once reconnected the role is there and this is a no-op.
                await self.dynsec.ensure_hub_role(username, share_group=group)
            # Nodes an earlier hub made: today's ACLs, and their node id bound as client id.
            node_ids = sorted(await self.db.run(credential_table))
            await self.dynsec.ensure_node_roles(node_ids)
            await self.dynsec.bind_client_ids(node_ids)
            if prune:  # the hub's own broker: a client no node has any more was deleted while it was not running
                for stale in sorted(set(await self.dynsec.list_clients()) - {*node_ids, username}):
                    await self.dynsec.delete_node(stale)
        except DynsecError as err:
            raise StartupError(f"cannot manage node identities on {address.url()}: {err}") from err
        log.info("node identities managed on %s (dynamic security)", address.url())

    def _start_http(self) -> None:
        allow_query_fields(QUERY_FIELDS_PARSED)
        app = make_app(self)
        server = HTTPServer(
            app,
            max_body_size=MAX_UPLOAD_BYTES,
            idle_connection_timeout=60,
            body_timeout=120,
            ssl_options=self.tls_contexts[0] if self.tls_contexts else None,
        )
        try:
            sockets = bind_sockets(self.config.http_port, self.config.http_host)
        except OSError as err:
            raise StartupError(f"cannot listen on {self.config.http_host}:{self.config.http_port}: {err.strerror}") from err
        server.add_sockets(sockets)
        self.http_port = sockets[0].getsockname()[1]
        self.http_server = server

    def _announce_admin_password(self, password: str) -> None:
        path = self.config.data_dir / const.ADMIN_PASSWORD_FILE
        write_atomic(path, password + "\n", mode=0o600)
        print(
            f"\nFirst start: created user 'admin' with password {password}\n"
            f"(also saved, readable only by you, in {path.resolve()})\n",
            file=sys.stderr,
            flush=True,
        )

    async def readiness(self) -> dict[str, dict[str, Any]]:
        """Each dependency and whether it answers."""
        checks: dict[str, dict[str, Any]] = {}
        try:
            await asyncio.wait_for(self.db.ping(), timeout=2.0)
            checks["database"] = {"ok": True}
        except Exception as err:  # noqa: BLE001 - readiness reports any failure
            checks["database"] = {"ok": False, "reason": f"database not reachable: {type(err).__name__}: {err}"}
        if self.broker is not None:
            checks["embedded_broker"] = (
                {"ok": True} if self.broker.running else {"ok": False, "reason": "embedded broker not running"}
            )
        if self.mosquitto is not None:
            checks["embedded_broker"] = (
                {"ok": True} if self.mosquitto.running else {"ok": False, "reason": f"embedded Mosquitto {self.mosquitto.reason}"}
            )
        connected = self.bridge is not None and self.bridge.connected
        checks["mqtt"] = {"ok": True} if connected else {"ok": False, "reason": f"not connected to {self.public_mqtt_url}"}
        checks["storage"] = self.disk.readiness()
        return checks

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then close MQTT and the database."""
        await self.discovery.stop()
        if self._crl_watch is not None:
            self._crl_watch.cancel()
            await asyncio.gather(self._crl_watch, return_exceptions=True)
        if self.http_server is not None:
            self.http_server.stop()
            for stream in list(self._streams):
                stream.close_stream()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=const.SHUTDOWN_GRACE_S)
            except TimeoutError:
                log.warning("%d requests still running after %.0fs; closing them", self._in_flight, const.SHUTDOWN_GRACE_S)
            await self.http_server.close_all_connections()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.leases.stop()  # the singleton roles stop, then their leases are released for another instance
        await self.crl_publisher.stop()
        await self.schedules.stop()
        await self.upload_runner.stop()  # uploads in flight go back to the queue, resume kept
        await self.retention.stop()
        await self.listen.stop()
        await self.notifier.stop()
        await self.disk.stop()
        await self.load.stop()
        await self.ingest.stop()
        if self.bridge is not None:
            await self.bridge.stop()
        if self.broker is not None:
            await self.broker.stop()
        if self.dynsec is not None:
            await self.dynsec.close()
        if self.mosquitto is not None:
            await self.mosquitto.stop()
        await self.events.stop()  # what is still queued goes to the shared event log
        await self.cluster_messages.stop()
        if self.pg_notify is not None:
            await self.pg_notify.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.db.close)
        self._cpu.shutdown(wait=True)
        log.info("hark hub stopped")


def allow_query_fields(count: int) -> None:
    """Let Tornado parse a query string of up to `count` fields (its own limit, where it has one, is 1,000)."""
    if hasattr(httputil, "set_parse_body_config"):
        httputil.set_parse_body_config(httputil.ParseBodyConfig(urlencoded=httputil.ParseUrlEncodedConfig(max_arguments=count)))
