"""The node agent's composition root: state, outbox, MQTT, hub client and workers, started and stopped in order."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.node import const
from hark_fleet.node.audio_path import AudioPath
from hark_fleet.node.cache_reports import EvictionReporter
from hark_fleet.node.clock import time_quality, utc_iso
from hark_fleet.node.commands import MalformedCommand, decode_command
from hark_fleet.node.config import NodeConfig
from hark_fleet.node.credentials import Credentials
from hark_fleet.node.diagnostics import RecentLog
from hark_fleet.node.errors import HubProtocolError, HubRejected, NodeError, StateError
from hark_fleet.node.hardware import Hardware
from hark_fleet.node.health import health_payload, outbox_damaged_payload, outbox_level_payload
from hark_fleet.node.heartbeat import ClockStatus, HeartbeatWorker
from hark_fleet.node.hub_client import FetchedConfig, HubClient, answer_data, pinned_context
from hark_fleet.node.identify import Identify
from hark_fleet.node.lifecycle import LifecycleRunner
from hark_fleet.node.lifecycle_actions import NodeActions
from hark_fleet.node.listen.sender import ListenSender
from hark_fleet.node.listen.streams import ListenStreams
from hark_fleet.node.local.provision import Provisioning, format_claim_code, with_local_identity
from hark_fleet.node.local.server import LocalContext, LocalServer
from hark_fleet.node.local.technician import ACTION_KIND, TechnicianAccess
from hark_fleet.node.offsite import DirectUploadClient, DirectUploadWorker
from hark_fleet.node.privileged import PrivilegedCommands
from hark_fleet.node.recording_client import RecordingClient
from hark_fleet.node.recording_jobs import RecordingWorker
from hark_fleet.node.schedule import BOOK_FILE, Book, ScheduleRunner
from hark_fleet.node.sender import OutboxSender
from hark_fleet.node.state import StateStore, load_state, resolve_state, save_state
from hark_fleet.node.topics import NodeTopics
from hark_fleet.node.transport_mqtt import BrokerAddress, MqttTransport
from hark_fleet.node.watchdog.policy import default_watchdog
from hark_fleet.node.watchdog.runtime import Watchdog
from hark_fleet.node.worker import wait_any
from hark_fleet.protocol.backoff import backoff_delay
from hark_fleet.protocol.listen import ListenCommand
from hark_fleet.protocol.messages import Ack, ConfigChanged, JobReady, LifecycleCommand, MeterFrame, NewCredential
from hark_fleet.protocol.version import __version__
from hark_fleet.protocol.watchdog import CalibrateCommand, ConfigApplied
from hark_fleet.provision.errors import ProvisionError
from hark_fleet.provision.mdns import Advertisement, NodeAdvert, advertise_node, browse_hubs

log = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT_S = 2.0


def prepare_state(config: NodeConfig) -> StateStore:
    """Load the state file, apply what the configuration seeds, count this boot and save it."""
    stored = load_state(config.state_path)
    state = resolve_state(stored, config.node_id, config.node_credential, config.hub_url)
    state = with_local_identity(state).replace(boot_count=state.boot_count + 1)
    save_state(config.state_path, state)
    return StateStore(config.state_path, state)


class Agent:
    """One running node agent. `run(stop)` returns once `stop` is set and everything is shut down."""

    def __init__(self, config: NodeConfig, store: StateStore) -> None:
        state = store.state
        if not state.hub_url:
            raise StateError("no hub URL: set HARK_HUB_URL")
        if not state.node_id or not state.credential:
            raise StateError("not enrolled: claim the node or set HARK_NODE_ID and HARK_NODE_CREDENTIAL")
        self.config = config
        self.store = store
        self.boot_id = secrets.token_hex(8)
        self.topics = NodeTopics(state.node_id)
        self.clock = ClockStatus()
        tls = pinned_context(state.ca_pem)
        self.credentials = Credentials(state.credential, state.previous_credential)
        self.hub = HubClient(
            state.hub_url, state.node_id, state.credential, tls, config.allow_plain, on_credential=self._on_hub_answer
        )
        self.transport = MqttTransport(
            self.topics,
            state.credential,
            self.boot_id,
            __version__,
            self._on_message,
            self._on_connection,
            tls,
            config.allow_plain,
            on_login=self._on_broker_login,
        )
        self.sender = OutboxSender(
            config.outbox_path, config.outbox_capacity, self.boot_id, self._publish_reliable, self._outbox_level_report
        )
        self.heartbeat_interval_s = config.heartbeat_interval_s
        # the signal-chain watchdog (issue 18): detectors on the metering thread, ladders and calibration on the loop
        self.frame_listeners: list[Callable[[MeterFrame], None]] = []
        self.watchdog = Watchdog(
            config.data_dir,
            default_watchdog(config.node_silence_threshold_dbfs, config.node_silence_hold_s, config.node_clip_clear_s),
            self.topics,
            self._report_condition,
            lambda topic, build: self.sender.enqueue("lifecycle", topic, build),
            lambda action: self.lifecycle.run_remediation(action),
            lambda: self.recordings.current or self.schedule.current(),
            self.frame_listeners,
            lambda: self.audio.supervisor.state if self.audio.supervisor is not None else "stopped",
        )
        self.audio = AudioPath(
            config.audio_source,
            self._publish_frame,
            self._report_condition,
            const.DEFAULT_METER_INTERVAL_MS,
            self.watchdog.frames,
            self.watchdog.on_event,
        )
        # live listen (issue 23): the streams cmd/listen asks for, each on its own ring reader and thread
        self.listen_sender = ListenSender(
            self.topics, self.transport.publish, lambda: self.transport.connected, self.hub.post_listen_chunk
        )
        self.listen = ListenStreams(self.audio, self.listen_sender.send, self.listen_sender.report_error)
        self.heartbeats = HeartbeatWorker(
            self.topics.heartbeat,
            self.sender,
            self.audio.interfaces,
            config.data_dir.resolve(),
            self.clock,
            __version__,
            lambda: self.heartbeat_interval_s,
            self.topics.health,
        )
        self.heartbeats.audio_stats = self.audio.stats
        self.heartbeats.applied = self.watchdog.applied  # one dict: each config part sets its own entry
        self.heartbeats.disk_hours = self.watchdog.disk_reading
        self.cache_policy: dict[str, Any] = {}
        self.recordings = RecordingWorker(
            config.data_dir / "recordings",
            RecordingClient(self.hub),
            self.audio,
            self.clock,
            self._report_condition,
            lambda: self.cache_policy,
        )
        # scheduled recordings (issue 19): held on disk, started on this node's clock, with or without the hub
        self.schedule = ScheduleRunner(Book(config.data_dir / BOOK_FILE), self.recordings.execution, self.recordings.recovered)
        # direct uploads (issue 20): recordings from the cache straight to S3, through requests the hub signs
        self.direct_uploads = DirectUploadWorker(
            config.data_dir / "recordings",
            DirectUploadClient(self.hub),
            lambda: self.recordings.current or self.schedule.current(),
        )
        self._refetch_config = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.recent_log = RecentLog()
        self.identify = Identify()
        # the technician's endpoint: its own meter listeners, recent health, the hub as last seen
        self.recent_health: deque[dict[str, Any]] = deque(maxlen=50)
        self.hub_state: dict[str, Any] = {"reachable": None, "last_contact": None, "error": None}
        self.technician: TechnicianAccess | None = None
        actions = NodeActions(
            config.data_dir,
            PrivilegedCommands(config.node_privileged_runner),
            self._restart_audio,
            self._refresh_clock,
            self.describe,
            self.recent_log,
            self.identify,
        )
        self.lifecycle = LifecycleRunner(config.data_dir, actions.table(), self._report_lifecycle, self._request_restart)
        self.restart_requested = False
        self._restart = asyncio.Event()
        self.hardware = Hardware(
            config.node_hardware,
            self.audio,
            self.clock,
            self.identify,
            self._report_condition,
            self._power_failing,
            lambda: self.transport.connected,
        )

    # -- run -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, run until `stop` is set (or a worker fails), then stop in order."""
        state = self.store.state
        log.info(
            "hark-node %s: node %s, boot %d (%s); data in %s; hub %s; audio source %s",
            __version__,
            state.node_id,
            state.boot_count,
            self.boot_id,
            self.config.data_dir.resolve(),
            state.hub_url,
            self.config.audio_source.describe(),
        )
        workers_stop = asyncio.Event()
        workers: list[asyncio.Task[Any]] = []
        failed: list[str] = []
        logging.getLogger().addHandler(self.recent_log)
        try:
            await self.sender.open()
            if self.sender.damaged_moved_to is not None:
                moved = str(self.sender.damaged_moved_to)
                await self.sender.enqueue("health", self.topics.health, functools.partial(outbox_damaged_payload, moved_to=moved))
            await self.lifecycle.finish_restart(state.boot_count)
            await self.watchdog.start(state.boot_count)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.audio.load_interfaces)
            self.audio.start(loop)
            self.listen_sender.start(loop)
            await self.hardware.start()
            if state.mqtt_url:
                self._use_broker(state.mqtt_url, "cached")
            workers = [
                asyncio.create_task(self.sender.run(workers_stop), name="outbox-sender"),
                asyncio.create_task(self.heartbeats.run(workers_stop), name="heartbeat"),
                asyncio.create_task(self._config_worker(workers_stop), name="config"),
                asyncio.create_task(self.lifecycle.run(workers_stop), name="lifecycle"),
                asyncio.create_task(self.recordings.run(workers_stop), name="recordings"),
                asyncio.create_task(self.schedule.run(workers_stop), name="schedule"),
                asyncio.create_task(self.direct_uploads.run(workers_stop), name="direct-uploads"),
                asyncio.create_task(EvictionReporter(self.recordings.cache, self.hub).run(workers_stop), name="cache-reports"),
                asyncio.create_task(self.hardware.run(workers_stop), name="hardware"),
                asyncio.create_task(self.watchdog.run(workers_stop), name="watchdog"),
            ]
            self.hardware.ready(f"node {state.node_id} running")
            await wait_any(None, stop, self._restart, *[_done_event(t) for t in workers])
            for task in workers:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("worker %s failed: %r", task.get_name(), task.exception())
                    failed.append(task.get_name())
        finally:
            log.info("stopping")
            workers_stop.set()
            await _finish(workers, WORKER_STOP_TIMEOUT_S)  # a config request in flight is cancelled, not awaited
            await _finish(list(self._tasks), WORKER_STOP_TIMEOUT_S)
            await self.hardware.stop()
            await asyncio.get_running_loop().run_in_executor(None, self.listen.close)
            await self.listen_sender.close()
            await asyncio.get_running_loop().run_in_executor(None, self.audio.stop)
            if self.transport.started:
                await self.transport.stop()
            await self.sender.close()
            self.hub.close()
            log.info("stopped")
            logging.getLogger().removeHandler(self.recent_log)
        if failed:
            raise NodeError(f"worker {', '.join(failed)} failed")

    # -- configuration from the hub ------------------------------------------------------

    async def _config_worker(self, stop: asyncio.Event) -> None:
        """Fetch the node's config (retrying with backoff while the hub is away), again on cmd/config."""
        attempt = 0
        while not stop.is_set():
            self._refetch_config.clear()
            try:
                fetched = await self.hub.fetch_config()
                self._apply_config(fetched)
                await self._apply_channel_map()
                await self._fetch_technician_access()
                self.hub_state.update(reachable=True, last_contact=utc_iso(), error=None)
            except NodeError as err:
                self.hub_state.update(reachable=False, error=str(err))
                delay = backoff_delay(attempt, const.CONFIG_RETRY_BASE_S, const.CONFIG_RETRY_CAP_S)
                attempt += 1
                log.warning("cannot get the config from the hub (%s); retrying in %.1fs", err, delay)
                await wait_any(delay, stop)
                continue
            attempt = 0
            await wait_any(None, stop, self._refetch_config)

    def _apply_config(self, fetched: FetchedConfig) -> None:
        remote = fetched.config
        try:
            BrokerAddress.from_url(remote.mqtt_url)
        except ValueError as err:
            raise HubProtocolError(f"hub gave an unusable mqtt_url: {err}") from err
        self.clock.offset_ms = fetched.clock_offset_ms
        if remote.cache_policy is not None:
            self.cache_policy = dict(remote.cache_policy)
        if remote.held_recordings is not None:
            self.recordings.cache.held = frozenset(remote.held_recordings)  # legal hold: the cache keeps them
        if remote.heartbeat_interval_s and not self.config.is_explicit("heartbeat_interval_s"):
            self.heartbeat_interval_s = max(0.1, float(remote.heartbeat_interval_s))
        if remote.meter_interval_ms:
            self.audio.set_interval(max(10, int(remote.meter_interval_ms)))
        self._spawn(self.watchdog.apply(remote.watchdog))  # kept on disk and confirmed on `applied`
        log.info(
            "config from hub: name %r, site %r, broker %s, heartbeat every %gs, meters every %dms, "
            "clock offset %s ms (rtt %s ms)",
            remote.name,
            remote.site,
            remote.mqtt_url,
            self.heartbeat_interval_s,
            self.audio.interval_ms,
            fetched.clock_offset_ms,
            fetched.round_trip_ms,
        )
        self._use_broker(remote.mqtt_url, "from hub")
        if remote.mqtt_url != self.store.state.mqtt_url:
            self._save_state(mqtt_url=remote.mqtt_url)

    async def _apply_channel_map(self) -> None:
        """Fetch the channel map the hub assigned and apply it before metering (a map that does not fit is refused)."""
        try:
            template = await self.hub.fetch_channel_map()
        except HubRejected as err:
            if err.status == 404:  # a hub without channel maps
                return
            raise
        try:
            described = self.audio.set_channel_map(template)
        except (ValueError, KeyError, TypeError) as err:
            log.error("channel map from the hub refused: %s", err)
            self._report_condition("audio.channel_map", "open", "warning", {"message": f"channel map refused: {err}"})
            self._report_channel_map_applied(template, str(err))
            return
        log.info("applied %s", described)
        self._report_channel_map_applied(template, None)

    def _report_channel_map_applied(self, template: dict[str, Any] | None, error: str | None) -> None:
        """Tell the hub which channel map now runs (or that it was refused): `applied` through the outbox, for plans."""
        template_id = template.get("id") if template is not None else None
        version = template.get("version") if template is not None else None
        if error is None:  # what the heartbeat says runs; a refused map leaves the one before
            self.heartbeats.applied["channel_map"] = {"id": template_id, "version": version}

        def build(msg_id: str) -> bytes:
            applied = ConfigApplied(
                msg_id=msg_id,
                ts=utc_iso(),
                what="channel_map",
                ok=error is None,
                id=template_id if isinstance(template_id, str) else None,
                version=version if isinstance(version, int) and not isinstance(version, bool) else None,
                error=error,
            )
            return msgspec.json.encode(applied)

        self._spawn(self.sender.enqueue("lifecycle", self.topics.applied, build))

    async def _fetch_technician_access(self) -> None:
        """The technician PIN's hash and the hub's token key, kept on disk for when the hub is away."""
        if self.technician is None:
            return
        try:
            response = await self.hub.fetch("GET", self.hub.url("technician-access"))
        except HubRejected as err:
            if err.status == 404:  # a hub without technician access
                return
            raise
        data = answer_data(response.body, "hub technician access answer") or {}
        if not isinstance(data, dict):
            raise HubProtocolError("hub technician access answer is not understood: its data is not an object")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.technician.update, data.get("pin_hash"), data.get("public_key"))

    def report_local_action(self, entry: dict[str, Any]) -> None:
        """A technician's local action: to the hub through the outbox, audited there."""

        def build(msg_id: str) -> bytes:
            return health_payload(msg_id, ACTION_KIND, "resolved", "info", entry)

        self._spawn(self.sender.enqueue("health", self.topics.health, build))

    def _use_broker(self, url: str, origin: str) -> None:
        try:
            address = BrokerAddress.from_url(url)
        except ValueError as err:
            log.error("broker URL (%s) unusable: %s", origin, err)
            return
        if self.transport.started:
            self.transport.set_address(address)
        else:
            log.info("using broker %s (%s)", address.url(), origin)
            self.transport.start(address)

    def _save_state(self, **changes: Any) -> None:
        snapshot, version = self.store.update(**changes)
        self._spawn(self._write_state(snapshot, version))

    async def _write_state(self, snapshot: Any, version: int) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.store.save, snapshot, version)
        except StateError as err:
            log.error("state not saved: %s", err)

    # -- MQTT: from the transport, on the loop ------------------------------------------

    def _publish_reliable(self, topic: str, payload: bytes) -> bool:
        return self.transport.publish(topic, payload, qos=1)

    def _publish_frame(self, frame: MeterFrame) -> None:
        """A meter frame, at QoS 0 straight to the broker (never through the outbox: only the latest matters)."""
        for listen in self.frame_listeners:
            listen(frame)
        if self.transport.connected:
            self.transport.publish(self.topics.meters, msgspec.json.encode(frame), qos=0)

    def _report_condition(self, kind: str, state: str, severity: str, details: dict[str, Any]) -> None:
        """An audio condition opened or resolved: a health report through the outbox."""
        (log.warning if state == "open" else log.info)("%s %s: %s", kind, state, details.get("message") or details)
        self.recent_health.append({"at": utc_iso(), "kind": kind, "state": state, "severity": severity, "details": details})
        self.hardware.condition(kind, state, severity)

        def build(msg_id: str) -> bytes:
            return health_payload(msg_id, kind, state, severity, details)  # type: ignore[arg-type]

        self._spawn(self.sender.enqueue("health", self.topics.health, build))

    def _outbox_level_report(self, msg_id: str, high: bool, depth: int, capacity: int) -> tuple[str, bytes]:
        return self.topics.health, outbox_level_payload(msg_id, high, depth, capacity)

    def _on_connection(self, connected: bool) -> None:
        self.sender.set_connected(connected)
        if connected:
            self.schedule.nudge()  # the hub is likely back: pick up schedule changes made meanwhile

    def _on_message(self, topic: str, payload: bytes) -> None:
        """Every command goes through here; a malformed one is logged and ignored, never fatal."""
        kind = self.topics.command_kind(topic)
        if kind is None:
            log.debug("ignored message on %s", topic)
            return
        try:
            command = decode_command(kind, payload)
        except MalformedCommand as err:
            log.warning("ignored malformed command: %s", err)
            return
        if command is None:
            log.info("ignored unknown command cmd/%s", kind)
            return
        # Only the hub may publish under cmd/ (the broker's ACL), and it acknowledges every heartbeat:
        # the technician page's "last contact" stays seconds old while the hub is there.
        self.hub_state.update(reachable=True, last_contact=utc_iso(), error=None)
        if isinstance(command, Ack):
            self._spawn(self._ack(command))
        elif isinstance(command, NewCredential):
            self._spawn(self._rotate_credential(command))
        elif isinstance(command, JobReady):
            if command.scheduled:
                self.schedule.nudge()
            if command.stop:
                self.schedule.job_command(command.job_id, True)
            if command.stop or not command.scheduled:
                self.recordings.job_command(command.job_id, command.stop)
        elif isinstance(command, LifecycleCommand):
            self.lifecycle.submit(command)
        elif isinstance(command, CalibrateCommand):
            self.watchdog.calibrate(command)
        elif isinstance(command, ListenCommand):
            self.listen.apply(command)
        elif isinstance(command, ConfigChanged):
            log.info("hub says the config changed (%s): fetching it again", ", ".join(command.changed) or "unspecified")
            self._refetch_config.set()

    async def _ack(self, ack: Ack) -> None:
        try:
            removed = await self.sender.ack(ack.ids)
        except Exception:
            log.exception("outbox ack failed")
            return
        log.debug("hub acknowledged %d messages (%d were waiting)", len(ack.ids), removed)

    async def _rotate_credential(self, command: NewCredential) -> None:
        """A delivered credential, taken only in place of one the node holds; the replaced one is kept until confirmed."""
        updated = self.credentials.offer(command.credential, command.replaces_sha256)
        if updated is None:
            if command.credential in (self.credentials.current, self.credentials.previous):
                log.info("credential delivered again, unchanged")
            else:
                log.warning("credential delivery ignored: it does not replace a credential this node holds (stale or foreign)")
            return
        self.credentials = updated
        renewed = command.ca_pem is not None and command.ca_pem != self.store.state.ca_pem
        changes: dict[str, Any] = {"credential": updated.current, "previous_credential": updated.previous}
        if renewed:
            changes["ca_pem"] = command.ca_pem
        snapshot, version = self.store.update(**changes)
        await self._write_state(snapshot, version)  # on disk before the old one is retired
        self.hub.set_credential(self.credentials.active)
        self.transport.set_credential(self.credentials.active, reconnect=not renewed)  # renewed: the restart reconnects
        log.info("credential rotated (the old one stops working at %s)", command.valid_until_old or "once replaced")
        if renewed:
            log.info("a renewed client certificate came with it: restarting in place to use it")
            self._request_restart()

    def _on_broker_login(self, credential: str, accepted: bool) -> None:
        """The broker took or refused a login: confirms a new credential, or falls back while the hub is asked."""
        if not self.credentials.pending:
            return
        if accepted:
            self._use_credentials(self.credentials.accepted(credential), "the broker took the new credential: confirmed")
            return
        if credential == self.credentials.current:
            # A broker not caught up yet (Mosquitto takes the new password a moment later) or a bad
            # credential: the hub says which; without an answer, fall back to the one that worked.
            self._spawn(self._ask_hub(credential))
        else:
            updated = self.credentials.refused(credential, authoritative=False)
            self._use_credentials(updated, "the broker refused the previous credential too: trying the new one again", False)

    async def _ask_hub(self, credential: str) -> None:
        """Whether the hub takes the new `credential` the broker refused; without an answer, use the previous one."""
        if await self.hub.try_credential(credential):
            return  # `_on_hub_answer` has it
        updated = self.credentials.refused(credential, authoritative=False)
        self._use_credentials(
            updated, "the broker refused the new credential, the hub is away: falling back to the previous one", False
        )

    def _on_hub_answer(self, credential: str, accepted: bool) -> None:
        """The hub took (2xx) or refused (401) a request's credential: final for a new one waiting for confirmation."""
        if not self.credentials.pending:
            return
        if accepted:
            self._use_credentials(self.credentials.accepted(credential), "the hub took the new credential: confirmed")
        elif credential == self.credentials.current:
            updated = self.credentials.refused(credential, authoritative=True)
            self._use_credentials(updated, "the hub refused the new credential: falling back to the previous one")
        else:
            updated = self.credentials.refused(credential, authoritative=True)
            self._use_credentials(updated, "the hub refused the previous credential: keeping the new one")

    def _use_credentials(self, updated: Credentials | None, why: str, reconnect: bool = True) -> None:
        """Hold `updated` from now on (None: nothing changes): saved to the state file, logged in with its active one."""
        if updated is None:
            return
        before, self.credentials = self.credentials, updated
        (log.warning if updated.active != before.active else log.info)("%s", why)
        if (updated.current, updated.previous) != (before.current, before.previous):
            self._save_state(credential=updated.current, previous_credential=updated.previous)
        if updated.active != before.active:
            self.hub.set_credential(updated.active)
            self.transport.set_credential(updated.active, reconnect)

    # -- lifecycle actions -------------------------------------------------------------

    async def _report_lifecycle(self, job_id: str, build: Any) -> None:
        if await self.sender.enqueue("lifecycle", self.topics.lifecycle(job_id), build) is None:
            log.error("lifecycle job %s: the outbox refused its report", job_id)

    def _power_failing(self) -> None:
        """The UPS says the battery is nearly out: close the running recording now, while it can be finalized."""
        recorder = self.recordings.current
        if recorder is not None:
            recorder.stop("power")
        self.schedule.stop_all("power")

    def _request_restart(self) -> None:
        """`restart-agent`: stop like on SIGTERM; the command line then starts the agent again in place."""
        self.restart_requested = True
        self._restart.set()

    async def _restart_audio(self) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.audio.restart)

    async def _refresh_clock(self) -> str:
        """Measure the offset to the hub again (after a time sync) and read the clock's quality."""
        fetched = await self.hub.fetch_config()
        self.clock.offset_ms = fetched.clock_offset_ms
        self.clock.quality = await asyncio.get_running_loop().run_in_executor(None, time_quality)
        return (
            f"clock offset to the hub {fetched.clock_offset_ms} ms (round trip {fetched.round_trip_ms} ms), "
            f"quality {self.clock.quality}"
        )

    def describe(self) -> dict[str, Any]:
        """The agent's own view of itself, for diagnostics (secrets are removed by the bundle)."""
        state = self.store.state
        level = self.sender.level
        return {
            "node_id": state.node_id,
            "boot_id": self.boot_id,
            "boot_count": state.boot_count,
            "hub_url": state.hub_url,
            "mqtt_url": state.mqtt_url,
            "mqtt_connected": self.transport.connected,
            "audio_source": self.config.audio_source.describe(),
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "meter_interval_ms": self.audio.interval_ms,
            "audio": self.audio.stats(),
            "listen": {**self.listen.stats(), "sent": self.listen_sender.stats()},
            "outbox": {"depth": level.depth, "capacity": level.capacity, "in_flight": self.sender.in_flight},
            "clock": {"offset_ms": self.clock.offset_ms, "quality": self.clock.quality},
            "data_dir": str(self.config.data_dir.resolve()),
            "lifecycle_jobs_seen": len(self.lifecycle.ledger.jobs),
        }

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class NodeRunner:
    """The whole node process: the local endpoint and mDNS advertisement always, the agent once enrolled.

    A claim or a factory reset through the local endpoint stops the running agent and starts it
    again in place as the new identity (or not at all, when unprovisioned).
    """

    def __init__(self, config: NodeConfig, store: StateStore) -> None:
        if store.state.enrolled and not store.state.hub_url and config.mdns_interfaces is False:
            raise StateError("no hub URL and mDNS is off: set HARK_HUB_URL")
        self.config = config
        self.store = store
        self.provisioning = Provisioning(store, self._identity_changed)
        self.technician = TechnicianAccess(config.data_dir / "technician.json", self.provisioning)
        self.local = LocalServer(
            LocalContext(
                store,
                self.provisioning,
                __version__,
                config.audio_source.describe,
                config.data_dir,
                self.technician,
                lambda: self.agent,
            )
        )
        self.advertisement: Advertisement | None = None
        self.agent: Agent | None = None
        self.restart_requested = False
        self._changed = asyncio.Event()

    @property
    def mdns_interfaces(self) -> list[str] | None:
        interfaces = self.config.mdns_interfaces
        return None if interfaces is None or interfaces is False or interfaces is True else interfaces

    def _advert(self) -> NodeAdvert:
        state = self.store.state
        assert state.hardware_id is not None
        return NodeAdvert(
            hardware_id=state.hardware_id,
            state=state.provisioning_state,
            version=__version__,
            audio=self.config.audio_source.describe(),
            port=self.local.port or self.config.node_local_port,
            node_id=state.node_id,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve the local endpoint and advertise; run the agent while enrolled; stop everything when `stop` is set."""
        try:
            self.local.start(self.config.node_local_host, self.config.node_local_port)
        except NodeError as err:
            if not self.store.state.enrolled:
                raise  # nobody could claim it
            log.error("%s; running without it", err)
        try:
            await self._advertise()
            while not stop.is_set() and not self.restart_requested:
                self._changed.clear()
                state = self.store.state
                if not state.enrolled:
                    log.info(
                        "unprovisioned: hardware id %s, claim code %s; waiting to be claimed on port %d",
                        state.hardware_id,
                        format_claim_code(state.claim_code or ""),
                        self.local.port,
                    )
                    await wait_any(None, stop, self._changed)
                    continue
                if not state.hub_url:
                    await self._find_hub(stop)
                    continue
                await self._run_agent(stop)
        finally:
            if self.advertisement is not None:
                await self.advertisement.close()
                self.advertisement = None
            await self.local.stop()

    async def _run_agent(self, stop: asyncio.Event) -> None:
        agent = Agent(self.config, self.store)
        agent.technician = self.technician
        self.technician.log.report = agent.report_local_action
        self.agent = agent
        agent_stop = asyncio.Event()
        watcher = asyncio.create_task(_set_when_any(agent_stop, stop, self._changed))
        try:
            await agent.run(agent_stop)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self.agent = None
            self.technician.log.report = None
        if agent.restart_requested:
            self.restart_requested = True
        elif not self.store.state.enrolled:
            await asyncio.get_running_loop().run_in_executor(None, _remove_outbox, self.config.outbox_path)
        elif self._changed.is_set():
            log.info("new identity: starting the agent again as node %s", self.store.state.node_id)

    async def _find_hub(self, stop: asyncio.Event) -> None:
        """No hub URL: look for hubs by mDNS and keep the first that accepts this node's credential."""
        if self.config.mdns_interfaces is False:
            raise StateError("no hub URL and mDNS is off: set HARK_HUB_URL")
        state = self.store.state
        assert state.node_id and state.credential
        attempt = 0
        while not stop.is_set() and not self._changed.is_set():
            try:
                hubs = await browse_hubs(self.mdns_interfaces, const.HUB_SEARCH_TIMEOUT_S)
            except ProvisionError as err:
                hubs = []
                log.warning("cannot look for the hub by mDNS: %s", err)
            for found in hubs:
                client = HubClient(found.api_url, state.node_id, state.credential, pinned_context(state.ca_pem))
                try:
                    await client.fetch_config()
                except NodeError as err:
                    log.info("hub %s seen by mDNS does not take this node (%s)", found.api_url, err)
                    continue
                finally:
                    client.close()
                log.info("found the hub by mDNS: %s", found.api_url)
                snapshot, version = self.store.update(hub_url=found.api_url, mqtt_url=found.mqtt_url or state.mqtt_url)
                await asyncio.get_running_loop().run_in_executor(None, self.store.save, snapshot, version)
                return
            delay = backoff_delay(attempt, const.CONFIG_RETRY_BASE_S, const.CONFIG_RETRY_CAP_S)
            attempt += 1
            log.warning("no hub found by mDNS (%d seen); looking again in %.1fs", len(hubs), delay)
            await wait_any(delay, stop, self._changed)

    async def _advertise(self) -> None:
        if self.config.mdns_interfaces is False:
            log.info("mDNS is off: not advertising")
            return
        try:
            self.advertisement = await advertise_node(self._advert(), self.mdns_interfaces)
        except ProvisionError as err:
            log.warning("not advertised by mDNS: %s", err)

    async def _identity_changed(self) -> None:
        """A claim or reset changed the identity: update the advertisement and restart the agent."""
        self._changed.set()
        if self.advertisement is not None:
            try:
                await self.advertisement.update(self._advert().properties())
            except (OSError, RuntimeError) as err:
                log.warning("mDNS advertisement not updated: %s", err)


def _remove_outbox(path: Path) -> None:
    """After a factory reset nothing queued for the old identity may be sent."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _set_when_any(target: asyncio.Event, *events: asyncio.Event) -> None:
    await wait_any(None, *events)
    target.set()


async def _finish(tasks: list[asyncio.Task[Any]], timeout: float) -> None:
    """Let `tasks` end on their own for up to `timeout` seconds, then cancel what is left."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _done_event(task: asyncio.Task[Any]) -> asyncio.Event:
    """An event set when `task` ends, so the agent stops if a worker dies."""
    event = asyncio.Event()
    task.add_done_callback(lambda _: event.set())
    return event
