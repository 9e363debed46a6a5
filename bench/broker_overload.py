"""The in-process (amqtt) embedded broker under overload: its ceiling, and what it sheds at 2x, 5x and 10x that.

What is measured
----------------
A real hub (``python -m hark_fleet.hub run``, SQLite, ``HARK_EMBEDDED_BROKER=in-process``) with ``--nodes``
(default 1000) enrolled nodes, each on its own MQTT connection with its own credential and client id, as a
node connects: a retained ``offline`` last will, then a retained ``online`` status. Every node sends a
heartbeat every ``--heartbeat-s`` seconds (QoS 1, phases spread evenly) for the whole run, and QoS 0 meter
frames at whatever total rate the phase offers, spread over the nodes round-robin.

Each round (``--rounds``, at least 3):

1. the ceiling: meter frames offered at rising rates (``--steps``, ``--step-s`` seconds each after a 1 s
   warm-up); the ceiling is the highest meter frames/s the hub ingested with nothing shed and at least 95 %
   of what was offered;
2. the overload: 2x, 5x and 10x that ceiling (this round's), in alternating order from round to round
   (2-5-10, 10-5-2, ...), for ``--overload-s`` seconds each. Per level: meter frames ingested/s and shed/s
   (``hark_mqtt_shed_total{kind="meters"}``), heartbeats stored against heartbeats sent in the window
   (``hark_heartbeats_stored_total``; where the hub has no such counter, those received off the wire, said
   so in the output), nodes the hub marked offline, the hub's CPU (% of one core), and then, the offer back
   at half the ceiling, the seconds until it recovered: ``broker.shedding`` false in ``GET /api/load``,
   nothing shed and the ingest at least 90 % of the offer over a 0.5 s sample (so 0.0 means within the
   first 0.5 s; ``--recover-timeout-s`` at most). Heartbeats sent and stored are counted over the same
   window, so one in flight at either end can make "stored" exceed "sent" by a few.

"Ingested" is ``hark_mqtt_ingested_total{kind="meters"}`` where the hub has it (decoded and applied), else
``hark_mqtt_messages_received_total{kind="meters"}`` (read off the wire), said so in the output.

The load comes from ``--workers`` processes (default 1), each owning a share of the node connections
(non-blocking sockets, packets pre-encoded with bench/fleet.py's templates). A connection whose send buffer
is full (the broker stopped reading it) gets no new meter frames until it drains: those are counted as
"blocked" (offered, never written); heartbeats always queue, as a node's MQTT client keeps them.

Run it from the repository root::

    .venv/bin/python bench/broker_overload.py [--nodes 1000] [--rounds 3] [--workers 1] [--overload-s 15]

One worker process is a single Python loop: on a busy machine it falls behind and then sends what is due
at once, so the offered rate it reports is what it wrote, bursts included.

It prints the median and the range over the rounds of each figure, and the load average around every round.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from fleet import Bench, Generator, _mqtt_str, _varint, http_json, iso_us  # noqa: E402
from hark_fleet.protocol.topics import TOPIC_ROOT  # noqa: E402
from rounds import MIN_ROUNDS, Round, busy_warning, load_average, load_text, summarize  # noqa: E402

TICK_S = 0.01
OUT_LIMIT = 256 * 1024  # bytes waiting on one connection before its meter frames count as blocked
RECOVERED_SHARE = 0.90
CEILING_SHARE = 0.95
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# shared counters of a worker (RawArray of int64)
C_METERS, C_BLOCKED, C_BEATS, C_ACK_BYTES, C_LOST, C_RATE_MILLI = range(6)


# -- MQTT packets --------------------------------------------------------------------------


def connect_packet(node_id: str, credential: str, keepalive_s: int) -> bytes:
    """CONNECT as a node: its id as client id and username, its credential, a retained offline will at QoS 1."""
    will = b'{"state":"offline","ts":"' + iso_us(time.time()).encode() + b'"}'
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # username, password, will retain, will QoS 1, will, clean
    body = (
        _mqtt_str(b"MQTT")
        + bytes([4, flags])
        + keepalive_s.to_bytes(2, "big")
        + _mqtt_str(node_id.encode())
        + _mqtt_str(f"{TOPIC_ROOT}/{node_id}/status".encode())
        + _mqtt_str(will)
        + _mqtt_str(node_id.encode())
        + _mqtt_str(credential.encode())
    )
    return b"\x10" + _varint(len(body)) + body


def status_packet(node_id: str, packet_id: int) -> bytes:
    """The retained `online` status at QoS 1, as a node publishes it once connected."""
    payload = b'{"state":"online","ts":"' + iso_us(time.time()).encode() + b'","agent_version":"0.1.0"}'
    variable = _mqtt_str(f"{TOPIC_ROOT}/{node_id}/status".encode()) + packet_id.to_bytes(2, "big")
    return b"\x33" + _varint(len(variable) + len(payload)) + variable + payload


def subscribe_packet(node_id: str, packet_id: int) -> bytes:
    """SUBSCRIBE to the node's own commands at QoS 1, as a node does (the broker then matches its filter too)."""
    variable = packet_id.to_bytes(2, "big") + _mqtt_str(f"{TOPIC_ROOT}/{node_id}/cmd/#".encode()) + b"\x01"
    return b"\x82" + _varint(len(variable)) + variable


def acks_for(buffer: bytearray) -> bytes:
    """PUBACKs for the QoS 1 PUBLISH packets complete in `buffer` (commands the hub sends a node), consumed from it."""
    acks = []
    while len(buffer) >= 2:
        length, multiplier, offset = 0, 1, 1
        while True:
            if offset >= len(buffer):
                return b"".join(acks)
            byte = buffer[offset]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            offset += 1
            if not byte & 0x80:
                break
        if len(buffer) < offset + length:
            break
        if buffer[0] >> 4 == 3 and (buffer[0] >> 1) & 3:
            topic_length = int.from_bytes(buffer[offset : offset + 2], "big")
            packet_id = buffer[offset + 2 + topic_length : offset + 4 + topic_length]
            acks.append(b"\x40\x02" + bytes(packet_id))
        del buffer[: offset + length]
    return b"".join(acks)


def open_node(host: str, port: int, node_id: str, credential: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(node_id, credential, 60))
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            raise ConnectionError(f"node {node_id}: the broker closed the connection before CONNACK")
        connack += chunk
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"node {node_id}: the broker refused the connection: {connack.hex()}")
    sock.sendall(status_packet(node_id, 1) + subscribe_packet(node_id, 2))
    sock.setblocking(False)
    return sock


# -- the load (in worker processes) ------------------------------------------------------------


def worker_main(
    conn: Connection,
    host: str,
    port: int,
    nodes: list[tuple[str, str]],
    first: int,
    total: int,
    heartbeat_s: float,
    counters: Any,
) -> None:
    """Own the connections of `nodes`; send heartbeats all along and meter frames at the rate the parent sets."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        socks = []
        for node_id, credential in nodes:
            socks.append(open_node(host, port, node_id, credential))
    except OSError as err:
        conn.send({"error": f"{type(err).__name__}: {err}"})
        return
    conn.send({"ready": True})
    # bench/fleet.py's packet building (templates, topics, msg_id, packet ids); the connections are ours
    frames = Generator([(first + i, n, c) for i, (n, c) in enumerate(nodes)], counters, f"w{first}-{os.getpid()}")
    count = len(nodes)
    out = [bytearray() for _ in nodes]
    incoming = [bytearray() for _ in nodes]
    alive = [True] * count
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, index)
    # heartbeats: node i of the fleet beats at phase (first + i) / total of the interval
    phases = sorted(((first + i) * heartbeat_s / total, i) for i in range(count))
    start = time.monotonic()
    beat_cycle = 0
    beat_cursor = 0
    rate = 0.0
    rate_since = start
    made_since = 0
    meter_cursor = 0
    seq = 0
    try:
        while True:
            if conn.poll():
                command = conn.recv()
                if command[0] == "quit":
                    break
                rate = float(command[1])
                rate_since, made_since = time.monotonic(), 0
                counters[C_RATE_MILLI] = int(rate * 1000)
            now = time.monotonic()
            wall = time.time()
            seq += 1
            # heartbeats due
            elapsed = now - start
            while True:
                phase, index = phases[beat_cursor]
                if beat_cycle * heartbeat_s + phase > elapsed:
                    break
                if alive[index]:
                    out[index] += frames.heartbeat_packet(index, wall, seq)
                    counters[C_BEATS] += 1
                beat_cursor += 1
                if beat_cursor == count:
                    beat_cursor, beat_cycle = 0, beat_cycle + 1
            # meter frames due, round-robin over the nodes
            due = int(rate * (now - rate_since)) - made_since
            if due > 0:
                made_since += due
                payload = frames.meter_payload(wall, seq)
                per_node, extra = divmod(due, count)
                blocked = 0
                sent = 0
                for step in range(min(due, count)):
                    index = (meter_cursor + step) % count
                    k = per_node + (1 if step < extra else 0)
                    if not alive[index] or len(out[index]) > OUT_LIMIT:
                        blocked += k
                        continue
                    out[index] += frames.meter_packet(index, payload) * k
                    sent += k
                meter_cursor = (meter_cursor + due) % count
                counters[C_METERS] += sent
                counters[C_BLOCKED] += blocked
            # write what waits
            for index in range(count):
                pending = out[index]
                if pending and alive[index]:
                    try:
                        written = socks[index].send(pending)
                    except BlockingIOError:
                        continue
                    except OSError:
                        alive[index] = False
                        counters[C_LOST] += 1
                        continue
                    del pending[:written]
            # read PUBACKs (and notice closed connections)
            for key, _ in selector.select(0):
                index = key.data
                try:
                    data = socks[index].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(socks[index])
                    if alive[index]:
                        alive[index] = False
                        counters[C_LOST] += 1
                    continue
                counters[C_ACK_BYTES] += len(data)
                incoming[index] += data
                acks = acks_for(incoming[index])
                if acks:
                    out[index] += acks
            sleep = TICK_S - (time.monotonic() - now)
            if sleep > 0:
                time.sleep(sleep)
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.settimeout(1)
                sock.sendall(b"\xe0\x00")  # DISCONNECT: no last will
            sock.close()


# -- the hub -----------------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r'^(hark_[a-z_]+_total)(?:\{kind="([^"]*)"\})?\s+(\S+)$', re.M)


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Hub:
    """bench/fleet.py's hub (started, enrolled) with its in-process broker, our node workers, and what is read."""

    def __init__(self, temp_dir: Path) -> None:
        args = argparse.Namespace(broker="embedded", embedded="in-process", system_url="mqtt://127.0.0.1:1883", generators=1)
        self.bench = Bench(args, temp_dir)
        self.workers: list[tuple[Any, Connection, Any]] = []
        self.context = multiprocessing.get_context("spawn")

    @property
    def port(self) -> int:
        return self.bench.hub_port

    @property
    def token(self) -> str:
        return self.bench.token

    @property
    def pid(self) -> int:
        assert self.bench.hub is not None
        return self.bench.hub.pid

    def start(self, nodes: int) -> list[tuple[str, str]]:
        self.bench.start_hub()
        self.bench.enroll(nodes)
        return self.bench.nodes

    def tail(self) -> str:
        return self.bench.tail()

    def start_workers(self, nodes: list[tuple[str, str]], workers: int, heartbeat_s: float) -> None:
        host, port = self.bench.hub_broker
        share = -(-len(nodes) // workers)
        for w in range(workers):
            part = nodes[w * share : (w + 1) * share]
            if not part:
                continue
            receiver, sender = self.context.Pipe()
            counters = self.context.RawArray("q", 6)
            process = self.context.Process(
                target=worker_main,
                args=(sender, host, port, part, w * share, len(nodes), heartbeat_s, counters),
                name=f"overload-worker-{w}",
                daemon=True,
            )
            process.start()
            sender.close()
            self.workers.append((process, receiver, counters))
        for process, receiver, _ in self.workers:
            if not receiver.poll(300):
                raise RuntimeError(f"{process.name} did not connect its nodes in time")
            hello = receiver.recv()
            if "error" in hello:
                raise RuntimeError(f"{process.name}: {hello['error']}")

    def offer(self, meters_per_s: float) -> None:
        """Meter frames at this total rate from now on (heartbeats go on regardless)."""
        share = meters_per_s / max(1, len(self.workers))
        for _, conn, _ in self.workers:
            conn.send(("rate", share))

    def sent(self) -> dict[str, int]:
        totals = {"meters": 0, "blocked": 0, "beats": 0, "lost": 0}
        for _, _, c in self.workers:
            totals["meters"] += c[C_METERS]
            totals["blocked"] += c[C_BLOCKED]
            totals["beats"] += c[C_BEATS]
            totals["lost"] += c[C_LOST]
        return totals

    def counters(self) -> dict[str, float]:
        """The hub's counters: `name` or `name{kind}` -> value."""
        status, body = http_json(self.port, "GET", "/metrics", token=self.token, timeout=60)
        if status != 200:
            raise RuntimeError(f"GET /metrics answered HTTP {status}")
        text = body.decode() if isinstance(body, bytes) else str(body)
        out: dict[str, float] = {}
        for name, kind, value in _SAMPLE_RE.findall(text):
            out[f"{name}{{{kind}}}" if kind else name] = float(value)
        return out

    def load(self) -> dict[str, Any]:
        status, payload = http_json(self.port, "GET", "/api/load", timeout=60)
        return payload["data"] if status == 200 and isinstance(payload, dict) else {}

    def offline_nodes(self) -> int:
        status, payload = http_json(self.port, "GET", "/api/v1/status", token=self.token, timeout=60)
        if status != 200:
            raise RuntimeError(f"GET /api/v1/status answered HTTP {status}")
        return int(((payload["data"]["nodes"] or {}).get("by_status") or {}).get("offline", 0))

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def stop(self) -> None:
        for _, conn, _ in self.workers:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("quit",))
        for process, _, _ in self.workers:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
        hub = self.bench.hub
        if hub is not None and hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(30)
            except Exception:  # noqa: BLE001 - on the way out
                hub.kill()
                hub.wait()


# -- the run -----------------------------------------------------------------------------------

LEVELS = (2, 5, 10)


def _kind(counters: dict[str, float], name: str, kind: str | None = None) -> float:
    return counters.get(f"{name}{{{kind}}}" if kind else name, 0.0)


class Measure:
    """Counters, what the nodes sent and the hub's CPU at one moment; the rates between two."""

    def __init__(self, hub: Hub) -> None:
        self.at = time.monotonic()
        self.counters = hub.counters()
        self.sent = hub.sent()
        self.cpu = hub.cpu_s()
        self.ingest_name = (
            "hark_mqtt_ingested_total"
            if "hark_mqtt_ingested_total{meters}" in self.counters
            else "hark_mqtt_messages_received_total"
        )
        self.beats_name = "hark_heartbeats_stored_total" if "hark_heartbeats_stored_total" in self.counters else None

    def ingested(self) -> float:
        return _kind(self.counters, self.ingest_name, "meters")

    def shed(self) -> float:
        return _kind(self.counters, "hark_mqtt_shed_total", "meters")

    def beats(self) -> float:
        if self.beats_name is None:
            return _kind(self.counters, "hark_mqtt_messages_received_total", "heartbeat")
        return _kind(self.counters, self.beats_name)


def window(hub: Hub, seconds: float) -> dict[str, float]:
    first = Measure(hub)
    time.sleep(seconds)
    last = Measure(hub)
    wall = last.at - first.at
    offered = (last.sent["meters"] + last.sent["blocked"] - first.sent["meters"] - first.sent["blocked"]) / wall
    return {
        "offered": offered,
        "written": (last.sent["meters"] - first.sent["meters"]) / wall,
        "ingested": (last.ingested() - first.ingested()) / wall,
        "shed": (last.shed() - first.shed()) / wall,
        "beats_sent": float(last.sent["beats"] - first.sent["beats"]),
        "beats_stored": last.beats() - first.beats(),
        "cpu": 100 * (last.cpu - first.cpu) / wall,
        "lost": float(last.sent["lost"]),
    }


def find_ceiling(hub: Hub, steps: list[float], step_s: float) -> tuple[float, list[str]]:
    """The highest meter frames/s ingested with nothing shed and at least CEILING_SHARE of the offer."""
    ceiling = 0.0
    lines = []
    for rate in steps:
        hub.offer(rate)
        time.sleep(1.0)
        figures = window(hub, step_s)
        ok = figures["shed"] == 0 and figures["ingested"] >= CEILING_SHARE * figures["offered"]
        blocked = figures["offered"] - figures["written"]
        lines.append(
            f"    offer {rate:,.0f}/s (written {figures['written']:,.0f}/s, blocked {blocked:,.0f}/s): "
            f"ingested {figures['ingested']:,.0f}/s, shed {figures['shed']:,.0f}/s, hub CPU {figures['cpu']:.0f}% "
            + ("ok" if ok else "-> past the ceiling")
        )
        if not ok:
            break
        ceiling = max(ceiling, figures["ingested"])
    return ceiling, lines


def recover(hub: Hub, calm: float, timeout_s: float) -> float:
    """Seconds from now (the overload stopped, `calm` offered) until not shedding and ingesting >= 90 % of `calm`."""
    stopped = time.monotonic()
    hub.offer(calm)
    previous = Measure(hub)
    while time.monotonic() - stopped < timeout_s:
        time.sleep(0.5)
        current = Measure(hub)
        rate = (current.ingested() - previous.ingested()) / (current.at - previous.at)
        shed = current.shed() - previous.shed()
        if shed == 0 and rate >= RECOVERED_SHARE * calm and not hub.load().get("broker", {}).get("shedding", True):
            return previous.at - stopped
        previous = current
    return float("nan")


def run(args: argparse.Namespace) -> int:
    load_at_start = load_average()
    temp = Path(tempfile.mkdtemp(prefix="hark-broker-overload-"))
    hub = Hub(temp)
    rounds: list[Round] = []
    try:
        print(f"in-process broker overload: {args.nodes} nodes, each on its own connection; {args.rounds} rounds", flush=True)
        nodes = hub.start(args.nodes)
        hub.start_workers(nodes, args.workers, args.heartbeat_s)
        time.sleep(3.0)
        steps = [float(s) for s in args.steps.split(",")]
        for number in range(args.rounds):
            print(f"  round {number + 1}/{args.rounds}: ceiling", flush=True)
            search = Round("ceiling", number)
            ceiling, lines = find_ceiling(hub, steps, args.step_s)
            print("\n".join(lines), flush=True)
            rounds.append(search.done(ceiling=ceiling))
            if ceiling <= 0:
                raise RuntimeError("no ceiling found: the hub ingested less than 95 % of the lowest step")
            calm = ceiling / 2
            hub.offer(calm)
            time.sleep(3.0)
            levels = LEVELS if number % 2 == 0 else tuple(reversed(LEVELS))
            for level in levels:
                subject = Round(f"{level}x", number)
                hub.offer(ceiling * level)
                time.sleep(1.0)
                figures = window(hub, args.overload_s)
                offline = float(hub.offline_nodes())
                seconds = recover(hub, calm, args.recover_timeout_s)
                rounds.append(subject.done(**figures, offline=offline, recover_s=seconds))
                print(
                    f"  round {number + 1} {level}x ({ceiling * level:,.0f}/s offered): ingested {figures['ingested']:,.0f}/s, "
                    f"shed {figures['shed']:,.0f}/s, heartbeats {figures['beats_stored']:.0f}/{figures['beats_sent']:.0f}, "
                    f"offline {offline:.0f}, hub CPU {figures['cpu']:.0f}%, recovered in {seconds:.1f} s",
                    flush=True,
                )
                time.sleep(2.0)
        report(rounds, load_at_start, hub)
        return 0
    finally:
        hub.stop()
        shutil.rmtree(temp, ignore_errors=True)


def report(rounds: list[Round], load_at_start: float, hub: Hub) -> None:
    print()
    print("The in-process (amqtt) embedded broker under overload: median (range) over the rounds")
    ceiling = summarize(rounds, "ceiling", "ceiling")
    print(f"  ceiling (meter frames ingested/s, nothing shed): {ceiling.text('{:,.0f}', 'msg/s')}")
    for level in LEVELS:
        subject = f"{level}x"

        def s(figure: str, fmt: str = "{:,.0f}", unit: str = "", subject: str = subject) -> str:
            return summarize(rounds, subject, figure).text(fmt, unit)

        stored = summarize(rounds, subject, "beats_stored")
        sent = summarize(rounds, subject, "beats_sent")
        print(
            f"  {subject} the ceiling (offered {s('offered', unit='msg/s')}): ingested {s('ingested', unit='msg/s')}, "
            f"shed {s('shed', unit='msg/s')}, heartbeats stored {stored.text('{:,.0f}')} of {sent.text('{:,.0f}')} sent, "
            f"nodes offline {s('offline')}, hub CPU {s('cpu', '{:.0f}', '%')}, "
            f"recovered in {s('recover_s', '{:.1f}', 's')} after the overload"
        )
    first = Measure(hub)
    if first.ingest_name != "hark_mqtt_ingested_total":
        print("  (ingested: read off the wire, the hub has no hark_mqtt_ingested_total)")
    if first.beats_name is None:
        print("  (heartbeats: received, the hub has no hark_heartbeats_stored_total)")
    print(f"  {load_text(rounds)}")
    warning = busy_warning(load_at_start)
    if warning:
        print(warning)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    parser.add_argument("--workers", type=int, default=1, help="load generator processes")
    parser.add_argument("--heartbeat-s", type=float, default=10.0)
    parser.add_argument(
        "--steps", default="100,250,500,1000,1500,2000,2500,3000,4000,5000,6000,8000", help="ceiling search, meter frames/s"
    )
    parser.add_argument("--step-s", type=float, default=4.0)
    parser.add_argument("--overload-s", type=float, default=15.0)
    parser.add_argument("--recover-timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        parser.error(f"at least {MIN_ROUNDS} rounds")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # the hub and the workers are stopped on the way out
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
