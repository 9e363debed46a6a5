"""The technician's routes under `/local/v1/` and the page at `/`: status, live meters, a test recording,
identify, diagnostics, the hub URL and the commissioning report. Every route but `login` needs a session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil
import tornado.iostream
from hark_fleet.node.diagnostics import collect, without_secrets
from hark_fleet.node.errors import HubProtocolError, NodeError
from hark_fleet.node.hub_client import answer_data
from hark_fleet.node.local.errors import InvalidRequest, LocalError, NotFound
from hark_fleet.node.local.server import LOCAL_PREFIX, LocalHandler
from hark_fleet.node.local.technician import SESSION_COOKIE, SESSION_TTL_S, Session, TechnicianAccess
from hark_fleet.node.metrics import read_system
from hark_fleet.node.recorder import Recorder, RecorderError, RecordingProfile
from hark_fleet.protocol.messages import MeterFrame

log = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().parent / "page"  # resolved: the files it serves are checked against it resolved
TEST_RECORDING_S = 5.0
MAX_TEST_RECORDING_S = 30.0
COMMISSIONING_S = 10.0
CLIP_DBFS = -0.1


class AgentNotRunning(LocalError):
    status = 503
    code = "agent_not_running"


class TechnicianHandler(LocalHandler):
    """A route for a logged-in technician (session cookie, or `Authorization: Bearer <session or node credential>`)."""

    session: Session

    @property
    def access(self) -> TechnicianAccess:
        assert self.ctx.technician is not None
        return self.ctx.technician

    def prepare(self) -> None:
        super().prepare()
        bearer = self.bearer()
        self.session = self.access.session(bearer or self.get_cookie(SESSION_COOKIE), bearer)

    def acted(self, action: str, outcome: str = "success", **details: Any) -> None:
        session = self.session
        self.access.log.add(action, session.who, self.source, outcome, method=session.method, subject=session.subject, **details)

    def agent(self) -> Any:
        agent = self.ctx.agent()
        if agent is None:
            raise AgentNotRunning("The node is not running as an enrolled node (claim it first).")
        return agent


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    pin: str | None = None
    token: str | None = None
    claim_code: str | None = None


class LoginHandler(LocalHandler):
    """`POST /local/v1/login`: a session for the PIN, a hub-signed token or (before enrollment) the claim code."""

    methods = frozenset({"POST"})

    async def post(self) -> None:
        assert self.ctx.technician is not None
        body = self.parse_body(LoginBody)
        session = await self.ctx.technician.login(self.source, body.pin, body.token, body.claim_code)
        self.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="Strict", max_age=int(SESSION_TTL_S))
        self.write_data({"session": session.id, "who": session.who, "method": session.method, "expires_in_s": SESSION_TTL_S})


class LogoutHandler(TechnicianHandler):
    methods = frozenset({"POST"})

    def post(self) -> None:
        self.acted("logout")
        self.access.logout(self.session.id)
        self.clear_cookie(SESSION_COOKIE)
        self.write_data({"logged_out": True})


def network_addresses() -> list[dict[str, Any]]:
    """Every interface's IPv4/IPv6 addresses (psutil)."""
    found = []
    for name, addresses in psutil.net_if_addrs().items():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.append({"interface": name, "address": address.address.split("%")[0], "family": address.family.name})
    return found


def directory_usage(path: Path) -> dict[str, Any]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return {"path": str(path), "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


class StatusHandler(TechnicianHandler):
    """`GET /local/v1/status`: identity, connections, audio, outbox, cache, disk, temperature, clock, addresses."""

    methods = frozenset({"GET"})

    async def get(self) -> None:
        state = self.ctx.store.state
        agent = self.ctx.agent()
        data_dir = self.ctx.data_dir.resolve()
        loop = asyncio.get_running_loop()
        system = await loop.run_in_executor(None, read_system, data_dir, None)
        addresses = await loop.run_in_executor(None, network_addresses)
        cache = await loop.run_in_executor(None, directory_usage, data_dir / "recordings")
        data: dict[str, Any] = {
            "identity": {
                "hardware_id": state.hardware_id,
                "node_id": state.node_id,
                "state": state.provisioning_state,
                "version": self.ctx.version,
                "audio": self.ctx.audio_summary(),
            },
            "session": {"who": self.session.who, "method": self.session.method},
            "hub": {"url": state.hub_url, "reachable": None, "last_contact": None, "error": None},
            "broker": {"url": state.mqtt_url, "connected": False},
            "system": msgspec.to_builtins(system),
            "cache": cache,
            "network": addresses,
            "actions": list(self.access.log.entries)[-20:],
        }
        if agent is not None:
            level = agent.sender.level
            data["hub"].update(agent.hub_state)
            data["broker"]["connected"] = agent.transport.connected
            data["audio"] = agent.audio.stats()
            data["channel_map"] = agent.audio.channel_map.describe()
            data["outbox"] = {"depth": level.depth, "capacity": level.capacity, "in_flight": agent.sender.in_flight}
            data["clock"] = {"offset_ms": agent.clock.offset_ms, "quality": agent.clock.quality}
            data["health"] = list(agent.recent_health)
        self.write_data(data)


class ActionsHandler(TechnicianHandler):
    """`GET /local/v1/actions`: what technicians did here lately (also reported to the hub)."""

    methods = frozenset({"GET"})

    def get(self) -> None:
        self.write_data(list(self.access.log.entries))


class MetersHandler(TechnicianHandler):
    """`GET /local/v1/meters`: live meter frames as server-sent events, from the node's own audio path."""

    methods = frozenset({"GET"})
    _closed: asyncio.Event

    async def get(self) -> None:
        agent = self.agent()
        frames: asyncio.Queue[MeterFrame] = asyncio.Queue(maxsize=50)
        self._closed = asyncio.Event()

        def listen(frame: MeterFrame) -> None:
            if not frames.full():
                frames.put_nowait(frame)

        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        agent.frame_listeners.append(listen)
        try:
            self.write(": meters\n\n")
            await self.flush()
            while not self._closed.is_set():
                getter = asyncio.ensure_future(frames.get())
                closed = asyncio.ensure_future(self._closed.wait())
                done, pending = await asyncio.wait({getter, closed}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                if getter in done:
                    self.write(b"data: " + msgspec.json.encode(getter.result()) + b"\n\n")
                elif not done:
                    self.write(": keepalive\n\n")
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            agent.frame_listeners.remove(listen)

    def on_connection_close(self) -> None:
        if hasattr(self, "_closed"):
            self._closed.set()


class RecordBody(msgspec.Struct, forbid_unknown_fields=True):
    duration_s: float = TEST_RECORDING_S


def _record(agent: Any, directory: Path, duration_s: float) -> dict[str, Any]:
    """A short WAV from the ring, through the node's recorder, into `directory` (blocking)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    inputs = list(agent.audio.channel_map.inputs)[:2]  # stereo at most: for a browser to play
    profile = RecordingProfile(format="wav", sample_rate=agent.audio.rate, bit_depth=16, segment_s=3600.0)
    recorder = Recorder(
        f"test-{secrets.token_hex(4)}", directory, agent.audio.rate, len(inputs), profile, duration_s=duration_s, inputs=inputs
    )
    recorder.start(agent.audio.ring)
    if not recorder.wait(duration_s + 20):
        recorder.stop()
        recorder.wait(5)
    result = recorder.result
    if result is None or result.path is None or result.state != "finalized":
        raise RecorderError(f"the test recording failed: {result.error if result else 'no result'}")
    return {"path": str(result.path), "size_bytes": result.size_bytes, "channels": len(inputs), "duration_s": duration_s}


class TestRecordingHandler(TechnicianHandler):
    """`POST /local/v1/test-recording` records (5 s by default); `GET` serves the last one as audio/wav."""

    methods = frozenset({"GET", "POST"})

    @property
    def directory(self) -> Path:
        return self.ctx.data_dir / "technician-test"

    async def post(self) -> None:
        agent = self.agent()
        body = self.parse_body(RecordBody)
        if not 0 < body.duration_s <= MAX_TEST_RECORDING_S:
            raise InvalidRequest(f"duration_s must be above 0 and at most {MAX_TEST_RECORDING_S:g}.")
        try:
            done = await asyncio.get_running_loop().run_in_executor(None, _record, agent, self.directory, body.duration_s)
        except (RecorderError, NodeError, OSError) as err:
            self.acted("test_recording", "failure", error=str(err))
            raise LocalError(str(err)) from err
        self.acted("test_recording", duration_s=body.duration_s)
        self.write_data({"url": f"{LOCAL_PREFIX}/test-recording", **{k: v for k, v in done.items() if k != "path"}})

    async def get(self) -> None:
        files = sorted(self.directory.glob("**/*.wav")) if self.directory.exists() else []
        if not files:
            raise LocalError("No test recording yet.")
        self.set_header("Content-Type", "audio/wav")
        self.set_header("Cache-Control", "no-store")
        self.finish(await asyncio.get_running_loop().run_in_executor(None, files[-1].read_bytes))


class IdentifyBody(msgspec.Struct, forbid_unknown_fields=True):
    duration_s: float = 5.0


class IdentifyHandler(TechnicianHandler):
    """`POST /local/v1/identify`: tone and blink, if the box has them."""

    methods = frozenset({"POST"})

    async def post(self) -> None:
        agent = self.agent()
        body = self.parse_body(IdentifyBody)
        if not 0 < body.duration_s <= 60:
            raise InvalidRequest("duration_s must be above 0 and at most 60.")
        done = await agent.identify.run(body.duration_s)
        self.acted("identify", duration_s=body.duration_s)
        self.write_data({"done": done})


class DiagnosticsHandler(TechnicianHandler):
    """`GET /local/v1/diagnostics`: a bundle (logs, config without secrets, health events, audio devices) to download."""

    methods = frozenset({"GET"})

    async def get(self) -> None:
        agent = self.ctx.agent()
        info: dict[str, Any] = {"state": self.ctx.store.state.provisioning_state, "hardware_id": self.ctx.store.state.hardware_id}
        lines: list[str] = []
        if agent is not None:
            info = agent.describe()
            info["health"] = list(agent.recent_health)
            info["audio_devices"] = [msgspec.to_builtins(i) for i in agent.audio.interfaces()]
            info["config"] = {f.name: str(getattr(agent.config, f.name)) for f in dataclasses.fields(agent.config)}
            lines = list(agent.recent_log.lines)
        bundle = await asyncio.get_running_loop().run_in_executor(None, collect, self.ctx.data_dir, info, lines)
        bundle["technician_actions"] = list(self.access.log.entries)
        self.acted("diagnostics")
        name = f"hark-diagnostics-{self.ctx.store.state.node_id or self.ctx.store.state.hardware_id}-{int(time.time())}.json"
        self.set_header("Content-Type", "application/json")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(json.dumps(without_secrets(bundle), indent=1, default=str))


class HubUrlBody(msgspec.Struct, forbid_unknown_fields=True):
    hub_url: str


class HubUrlHandler(TechnicianHandler):
    """`PUT /local/v1/hub-url`: point the node at another hub URL (the agent restarts with it)."""

    methods = frozenset({"PUT"})

    async def put(self) -> None:
        body = self.parse_body(HubUrlBody)
        url = body.hub_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")) or len(url) > 500:
            raise InvalidRequest("hub_url must be an http:// or https:// URL.")
        before = self.ctx.store.state.hub_url
        snapshot, version = self.ctx.store.update(hub_url=url)
        await asyncio.get_running_loop().run_in_executor(None, self.ctx.store.save, snapshot, version)
        self.acted("set_hub_url", before=before, after=url)
        await self.ctx.provisioning._changed()
        self.write_data({"hub_url": url})


class CommissioningBody(msgspec.Struct, forbid_unknown_fields=True):
    duration_s: float = COMMISSIONING_S


def channel_levels(frames: list[MeterFrame]) -> list[dict[str, Any]]:
    """Per channel over the frames: the highest peak, the mean RMS, clipped samples."""
    channels: dict[int, dict[str, Any]] = {}
    for frame in frames:
        for channel in frame.channels:
            row = channels.setdefault(
                channel.index, {"index": channel.index, "name": channel.name, "peak_dbfs": None, "rms": [], "clipped_samples": 0}
            )
            if channel.peak_dbfs is not None:
                row["peak_dbfs"] = channel.peak_dbfs if row["peak_dbfs"] is None else max(row["peak_dbfs"], channel.peak_dbfs)
            if channel.rms_dbfs is not None:
                row["rms"].append(channel.rms_dbfs)
            row["clipped_samples"] += int(channel.clip or 0)
    out = []
    for row in channels.values():
        values = row.pop("rms")
        row["rms_dbfs"] = round(sum(values) / len(values), 1) if values else None
        row["clipping"] = row["clipped_samples"] > 0 or (row["peak_dbfs"] is not None and row["peak_dbfs"] >= CLIP_DBFS)
        row["signal"] = row["peak_dbfs"] is not None and row["peak_dbfs"] > -80.0
        out.append(row)
    return sorted(out, key=lambda r: r["index"])


class CommissioningHandler(TechnicianHandler):
    """`POST /local/v1/commissioning`: levels and clipping per channel, channel map, time sync, hub reachability,
    and the report uploaded to the hub (the test upload)."""

    methods = frozenset({"POST"})

    async def post(self) -> None:
        agent = self.agent()
        body = self.parse_body(CommissioningBody)
        if not 0 < body.duration_s <= 120:
            raise InvalidRequest("duration_s must be above 0 and at most 120.")
        frames: list[MeterFrame] = []
        agent.frame_listeners.append(frames.append)
        try:
            await asyncio.sleep(body.duration_s)
        finally:
            agent.frame_listeners.remove(frames.append)
        report: dict[str, Any] = {
            "duration_s": body.duration_s,
            "frames": len(frames),
            "channels": channel_levels(frames),
            "channel_map": agent.audio.channel_map.describe(),
            "time_sync": {"offset_ms": agent.clock.offset_ms, "quality": agent.clock.quality},
            "technician": self.session.who,
        }
        started = time.monotonic()
        try:
            await agent.hub.fetch_config()
            report["hub"] = {"reachable": True, "round_trip_ms": round((time.monotonic() - started) * 1000, 1)}
        except NodeError as err:
            report["hub"] = {"reachable": False, "error": str(err)}
        report["upload"] = await upload_report(agent, report)
        report["passed"] = bool(
            report["hub"]["reachable"]
            and report["upload"]["ok"]
            and report["channels"]
            and all(c["signal"] and not c["clipping"] for c in report["channels"])
        )
        self.acted("commissioning", passed=report["passed"])
        self.write_data(report)


async def upload_report(agent: Any, report: dict[str, Any]) -> dict[str, Any]:
    """POST the report to the hub (the test upload); what happened."""
    started = time.monotonic()
    try:
        response = await agent.hub.fetch(
            "POST",
            agent.hub.url("commissioning-reports"),
            body=json.dumps(report).encode(),
            headers={"Content-Type": "application/json"},
            expected=(201,),
        )
    except NodeError as err:
        return {"ok": False, "error": str(err)}
    try:
        stored = answer_data(response.body, "the hub's answer to the report")
    except HubProtocolError as err:
        return {"ok": False, "error": str(err)}
    report_id = stored.get("id") if isinstance(stored, dict) else None
    return {"ok": True, "report_id": report_id, "round_trip_ms": round((time.monotonic() - started) * 1000, 1)}


class PageHandler(LocalHandler):
    """`/` and `/local/page/*`: the technician's page (plain HTML and one ES module)."""

    methods = frozenset({"GET"})
    TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

    def get(self, name: str = "index.html") -> None:
        path = (PAGE_DIR / name).resolve()
        if path.parent != PAGE_DIR or not path.is_file() or path.suffix not in self.TYPES:
            raise NotFound("No such file.")
        self.set_header("Content-Type", self.TYPES[path.suffix])
        self.set_header("Cache-Control", "no-store")
        self.finish(path.read_bytes())


TECHNICIAN_ROUTES: tuple[tuple[str, type[LocalHandler]], ...] = (
    (f"{LOCAL_PREFIX}/login", LoginHandler),
    (f"{LOCAL_PREFIX}/logout", LogoutHandler),
    (f"{LOCAL_PREFIX}/status", StatusHandler),
    (f"{LOCAL_PREFIX}/actions", ActionsHandler),
    (f"{LOCAL_PREFIX}/meters", MetersHandler),
    (f"{LOCAL_PREFIX}/test-recording", TestRecordingHandler),
    (f"{LOCAL_PREFIX}/identify", IdentifyHandler),
    (f"{LOCAL_PREFIX}/diagnostics", DiagnosticsHandler),
    (f"{LOCAL_PREFIX}/hub-url", HubUrlHandler),
    (f"{LOCAL_PREFIX}/commissioning", CommissioningHandler),
)
