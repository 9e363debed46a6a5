"""Node telemetry into the hub: status, outbox messages (batched, deduplicated, acknowledged), meters.

Meter frames stay in memory (the latest per node, folded per second and per minute); everything else
goes through `hub.services.telemetry` on the database worker, in batches, never one write per frame.
`hub.history` stores each node's meter and heartbeat minutes once a minute and prunes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import peewee
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.cluster.leases import SWEEP, LeaseLost
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.history import HistoryRecorder
from hark_fleet.hub.meters import MeterStore
from hark_fleet.hub.mqtt.drops import DropLog
from hark_fleet.hub.services import (
    channel_map_plans,
    health_events,
    lifecycle,
    listening,
    recording_jobs,
    telemetry,
    watchdog_calibrations,
)
from hark_fleet.hub.services.telemetry import FleetEvent, Ingested, NodeMessage, OutboxMessage
from hark_fleet.hub.services.watchdog_reports import CONFIG_CHANGED
from hark_fleet.protocol.decoding import PayloadError, decode
from hark_fleet.protocol.messages import ConfigChanged, HealthReport, Heartbeat, LifecycleReport, MeterFrame, Status
from hark_fleet.protocol.topics import NodeTopic, command_topic
from hark_fleet.protocol.watchdog import CalibrationResult, ConfigApplied, RemediationReport
from playhouse.pool import MaxConnectionsExceeded

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)

FLUSH_DELAY_S = 0.1  # outbox messages wait at most this long to share a transaction
AWAY_LOG_INTERVAL_S = 60.0  # at most one line this often while the database cannot store telemetry
SWEEP_INTERVAL_S = 2.0
DATABASE_AWAY = (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded)  # worth retrying, unlike a refusal
OUTBOX_KINDS: dict[type, str] = {  # the topic kind each outbox message arrives on (the `kind` label of the ingested counter)
    Heartbeat: "heartbeat",
    HealthReport: "health",
    LifecycleReport: "lifecycle",
    RemediationReport: "watchdog",
    CalibrationResult: "watchdog",
    ConfigApplied: "applied",
}


class FleetIngest:
    """Receives what nodes send, over MQTT or HTTP, and applies it with the same service code."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.meters = MeterStore(self._lookup_site)
        self.history = HistoryRecorder(hub, self.meters)
        self._pending: list[OutboxMessage] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._site_lookups: set[asyncio.Task[None]] = set()
        self._drops = DropLog(log)
        self._unstored = 0  # messages the database could not take since the last line about it
        self._away_logged_at = -AWAY_LOG_INTERVAL_S
        self.started_at = utcnow()  # set again by start(): from then on the hub hears nodes

    def register(self) -> None:
        bridge = self.hub.bridge
        assert bridge is not None
        bridge.route("status", self.on_status, Status, with_retain=True)
        # outbox messages count as ingested once their transaction commits (`flush`)
        bridge.route("heartbeat", self.on_outbox, Heartbeat, applied_later=True)
        bridge.route("health", self.on_outbox, HealthReport, applied_later=True)
        bridge.route("lifecycle", self.on_outbox, LifecycleReport, applied_later=True)
        bridge.route("meters", self.on_meters_batch, MeterFrame, batch=True)
        # watchdog/remediation, watchdog/calibration/{id}: decoded below
        bridge.route("watchdog", self.on_watchdog, None, applied_later=True)
        bridge.route("applied", self.on_outbox, ConfigApplied, applied_later=True)
        bridge.route("listen", self.hub.listen.on_chunk, None)  # live listen audio, relayed as it comes (issue 23)

    async def start(self) -> None:
        self.started_at = utcnow()
        self.meters.sites.update(await self.hub.db.run(telemetry.node_sites))
        await self.history.start()
        self.hub.leases.role(SWEEP, self._start_sweep, self._stop_sweep)  # the sweep runs on one hub of the deployment

    async def _start_sweep(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _stop_sweep(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    async def stop(self) -> None:
        await self._stop_sweep()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        await asyncio.gather(*self._site_lookups, return_exceptions=True)
        await self.flush()
        await self.history.stop()  # after the last heartbeats are applied

    # -- MQTT handlers (on the event loop) ------------------------------------------

    async def on_status(self, topic: NodeTopic, status: Status, retained: bool = False) -> None:
        if retained and status.state == "online":
            # A retained `online` is what the node said when it last connected, handed to the hub as it
            # subscribes: the node may be gone since, or unable to log in. Its live messages decide.
            log.debug("node %s: retained online status ignored; waiting for a live message", topic.node_id)
            return
        events = await self.hub.db.run(telemetry.apply_status, topic.node_id, status, utcnow())
        self.publish_events(events)
        if status.state == "online":
            await self.deliver_lifecycle(topic.node_id)
            await self.deliver_calibrations(topic.node_id)

    def on_watchdog(self, topic: NodeTopic, payload: bytes) -> None:
        """`watchdog/remediation` (a RemediationReport) or `watchdog/calibration/{id}` (a CalibrationResult): outbox messages."""
        schema: type[RemediationReport] | type[CalibrationResult]
        if topic.rest == "remediation":
            schema = RemediationReport
        elif topic.rest.startswith("calibration/"):
            schema = CalibrationResult
        else:
            self.hub.metrics.mqtt_dropped.labels("unknown_kind").inc()
            self._drops.dropped(topic.node_id, "unknown_kind", f"watchdog/{topic.rest}", "")
            return
        try:
            message = decode(payload, schema)
        except PayloadError as err:
            self.hub.metrics.mqtt_dropped.labels(err.reason).inc()
            self._drops.dropped(topic.node_id, err.reason, f"watchdog/{topic.rest}", str(err))
            return
        self.on_outbox(topic, message)

    def on_outbox(self, topic: NodeTopic, message: NodeMessage) -> None:
        self._pending.append(OutboxMessage(topic.node_id, message.msg_id, message))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self._start_flush)

    def on_meters(self, topic: NodeTopic, frame: MeterFrame) -> None:
        self.store_meters(topic.node_id, frame)

    def on_meters_batch(self, items: list[tuple[NodeTopic, MeterFrame]]) -> int:
        """The meter frames of one read, stored (and fanned out) in one pass; how many were applied."""
        return self.meters.add_batch([(topic.node_id, frame) for topic, frame in items])

    def store_meters(self, node_id: str, frame: MeterFrame) -> None:
        """Keep the latest frame, fold it into the second's and minute's history, pass it to live subscribers (memory only)."""
        self.meters.add(node_id, frame)

    def _lookup_site(self, node_id: str) -> None:
        task = asyncio.create_task(self._find_site(node_id))
        self._site_lookups.add(task)
        task.add_done_callback(self._site_lookups.discard)

    async def _find_site(self, node_id: str) -> None:
        try:
            found = await self.hub.db.run(telemetry.node_site, node_id)
        except Exception:
            log.exception("could not look up the site of node %s", node_id)
            self.meters.forget_site(node_id)
            return
        self.meters.set_site(node_id, found[1], known=found[0])

    # -- batching --------------------------------------------------------------------

    def _start_flush(self) -> None:
        self._flush_handle = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self.flush())
            self._flushing.add_done_callback(self._flushed)
        else:  # one flush at a time keeps the order; try again shortly
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self._start_flush)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        """A flush is awaited by no one: what went wrong in it is logged here, not lost with the task."""
        if not task.cancelled() and task.exception() is not None:
            log.error("storing node messages failed; unacknowledged, nodes send them again", exc_info=task.exception())

    async def flush(self) -> None:
        """Apply what is pending in one transaction, then acknowledge it to each node."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                acks, events, heartbeats = await self.hub.db.run(telemetry.ingest_outbox, batch)
            except DATABASE_AWAY as err:
                self._not_stored_yet(len(batch), err)
                return
            except Exception:  # noqa: BLE001 - one message the database refuses must not hold back the others
                acks, events, heartbeats = await self._ingest_each(batch)
            self._count_applied(batch, acks, heartbeats)
            self.history.add_heartbeats(heartbeats)
            bridge = self.hub.bridge
            for node_id, ids in acks.items():
                if bridge is not None:
                    bridge.publish(command_topic(node_id, "ack"), {"ids": ids})
            self.publish_events(events)
            self.send_config_changes(events)
            await self._deliver_to_returning(events)

    def _count_applied(self, batch: list[OutboxMessage], acks: dict[str, list[str]], heartbeats: list[Any]) -> None:
        """After the commit: messages of known nodes count as ingested (per topic kind), fresh heartbeats as stored."""
        metrics = self.hub.metrics
        if heartbeats:
            metrics.heartbeats_stored.inc(len(heartbeats))
        bridge = self.hub.bridge
        if bridge is None:
            return
        kinds: dict[str, int] = {}
        for item in batch:
            if item.node_id in acks:
                kind = OUTBOX_KINDS.get(type(item.message), "unknown")
                kinds[kind] = kinds.get(kind, 0) + 1
        for kind, count in kinds.items():
            bridge.count_ingested(kind, count)

    def _not_stored_yet(self, count: int, err: BaseException) -> None:
        """The database is away (down, full): say so once per interval, not at every flush (ten a second)."""
        self._unstored += count
        now = time.monotonic()
        if now - self._away_logged_at < AWAY_LOG_INTERVAL_S:
            return
        first = self._away_logged_at == -AWAY_LOG_INTERVAL_S
        self._away_logged_at = now
        log.error(
            "could not store %d node messages (%d since the last line like this): %s; they stay unacknowledged "
            "and nodes send them again",
            count,
            self._unstored,
            err,
            exc_info=first,
        )
        self._unstored = 0

    async def _ingest_each(self, batch: list[OutboxMessage]) -> Ingested:
        """Apply a batch that failed as a whole message by message: one the database refuses alone is dropped and acknowledged."""
        acks: dict[str, list[str]] = {}
        events: list[FleetEvent] = []
        heartbeats: list[tuple[str, Heartbeat]] = []
        for index, item in enumerate(batch):
            try:
                one_acks, one_events, one_heartbeats = await self.hub.db.run(telemetry.ingest_outbox, [item])
            except DATABASE_AWAY as err:
                self._not_stored_yet(len(batch) - index, err)
                break
            except Exception as err:  # noqa: BLE001 - logged with its traceback (rate-limited) and counted
                self.hub.metrics.mqtt_dropped.labels("not_stored").inc()
                what = f"{type(item.message).__name__.lower()} {item.msg_id}"
                self._drops.dropped(item.node_id, "not_stored", what, repr(err), exc_info=True)
                # acknowledged, so the node stops sending it
                one_acks, one_events, one_heartbeats = {item.node_id: [item.msg_id]}, [], []
            else:
                self._count_applied([item], one_acks, one_heartbeats)
            for node_id, ids in one_acks.items():
                acks.setdefault(node_id, []).extend(ids)
            events.extend(one_events)
            heartbeats.extend(one_heartbeats)
        return Ingested(acks, events, heartbeats)

    async def _deliver_to_returning(self, events: list[FleetEvent]) -> None:
        """Nodes a heartbeat brought back (their live `online` went unheard, e.g. across a hub restart) get their jobs."""
        for event in events:
            if event.type in ("node.online", "node.degraded") and event.data.get("reason") == "heartbeat":
                try:
                    await self.deliver_lifecycle(event.data["node_id"])
                    await self.deliver_calibrations(event.data["node_id"])
                except Exception:
                    log.exception("could not deliver lifecycle jobs or calibrations to node %s", event.data["node_id"])

    async def deliver_lifecycle(self, node_id: str) -> None:
        """Publish the node's waiting lifecycle jobs on `cmd/lifecycle` (again, until the node reports on them)."""
        bridge = self.hub.bridge
        if bridge is None:
            return
        commands = await self.hub.db.run(lifecycle.deliverable, node_id)
        sent = [c.job_id for c in commands if bridge.publish(command_topic(node_id, "lifecycle"), msgspec.json.encode(c))]
        if sent:
            log.info("node %s: %d lifecycle jobs delivered", node_id, len(sent))
            self.publish_events(await self.hub.db.run(lifecycle.mark_sent, sent))

    async def deliver_calibrations(self, node_id: str) -> None:
        """Publish the node's waiting (or interrupted) calibration on `cmd/calibrate`."""
        bridge = self.hub.bridge
        if bridge is None:
            return
        for command in await self.hub.db.run(watchdog_calibrations.deliverable, node_id):
            bridge.publish(command_topic(node_id, "calibrate"), msgspec.json.encode(command))
            log.info("node %s: calibration %s delivered", node_id, command.calibration_id)

    def send_config_changes(self, events: list[FleetEvent], changed: tuple[str, ...] = ("watchdog",)) -> None:
        """Nodes whose resolved watchdog policy moved (a `watchdog.config_changed` event) fetch their config again."""
        bridge = self.hub.bridge
        if bridge is None:
            return
        payload = msgspec.json.encode(ConfigChanged(changed=list(changed)))
        for event in events:
            if event.type == CONFIG_CHANGED:
                for node_id in event.data.get("node_ids", []):
                    bridge.publish(command_topic(node_id, "config"), payload)

    async def ingest_http(self, node_id: str, message: NodeMessage) -> None:
        """The same as MQTT, for nodes that post over HTTP: applied before the answer (400 if the database refuses it)."""
        try:
            item = OutboxMessage(node_id, message.msg_id, message)
            _, events, heartbeats = await self.hub.db.run(telemetry.ingest_outbox, [item])
        except DATABASE_AWAY:
            raise
        except Exception as err:  # noqa: BLE001 - logged with its traceback (rate-limited); a 500 would have the node resend it forever
            self._drops.dropped(
                node_id, "not_stored", f"http {type(message).__name__.lower()} {message.msg_id}", repr(err), exc_info=True
            )
            raise InvalidRequest("The hub cannot store this message.", fields={"body": "was refused by the database"}) from err
        if heartbeats:
            self.hub.metrics.heartbeats_stored.inc(len(heartbeats))
        self.history.add_heartbeats(heartbeats)
        self.publish_events(events)
        self.send_config_changes(events)

    def listening_since(self) -> datetime | None:
        """Since when the hub hears nodes over MQTT: its start or its broker reconnect (None while disconnected)."""
        bridge = self.hub.bridge
        return listening.listening_since(self.started_at, bridge.connected_since if bridge is not None else self.started_at)

    async def _sweep_forever(self) -> None:
        """The SWEEP lease's work (one hub of a deployment): each write below runs fenced by the lease."""
        fenced = self.hub.leases.fenced
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                since = self.listening_since()
                self.publish_events(await self.hub.db.run(fenced(SWEEP, telemetry.sweep_missed_heartbeats), since))
                self.publish_events(await self.hub.db.run(fenced(SWEEP, lifecycle.expire_jobs), since))
                self.publish_events(await self.hub.db.run(fenced(SWEEP, health_events.end_suppressions)))
                self.publish_events(await self.hub.db.run(fenced(SWEEP, watchdog_calibrations.expire)))
                lease, grace = self.hub.config.job_lease_timeout_s, self.hub.config.job_recovery_grace_s
                # recording jobs report over HTTP: heard from the hub's start, whatever the broker does
                self.publish_events(await self.hub.db.run(fenced(SWEEP, recording_jobs.reap), lease, grace, self.started_at))
            except LeaseLost as err:
                log.info("sweep skipped: %s", err)
            except Exception:
                log.exception("sweep of missed heartbeats, expired jobs and ended suppressions failed; retrying")
            try:
                await self.history.prune_if_due()
            except Exception:
                log.exception("pruning the history failed; retrying at the next sweep")
            try:
                await self.sweep_channel_map_plans()
            except Exception:
                log.exception("sweep of channel-map plans failed; retrying")

    async def sweep_channel_map_plans(self) -> None:
        """Plans' nodes that refused or did not confirm in time get their before template back, on `cmd/config`."""
        told, events = await self.hub.db.run(self.hub.leases.fenced(SWEEP, channel_map_plans.sweep))
        bridge = self.hub.bridge
        if bridge is not None:
            for node_id in told:
                bridge.publish(command_topic(node_id, "config"), {"changed": ["channel_map"]})
        self.publish_events(events)

    def publish_events(self, events: list[FleetEvent]) -> None:
        for event in events:
            self.hub.events.publish(event.type, event.site, event.data)

    def meter_snapshot(self, node_id: str) -> dict[str, Any] | None:
        return self.meters.latest(node_id)
