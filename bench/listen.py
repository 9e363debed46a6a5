"""Live listen (issue 23): the capture-to-playback delay, the node's CPU for encoding, bytes per second per stream,
the transport the node sends by, and what ten listeners cost against one.

What it measures
----------------
A real hub and one real node whose synthetic source is ``synthetic:click?period=P&channels=2&rate=48000`` (default
P = 0.5 s): a 1 ms click whose first sample is captured at every whole multiple of P seconds of the node's wall clock.
Hub, node, Chromium and this script share the machine's clock. The formats are the product's: ``opus`` 64 kbit/s
48 kHz stereo and ``pcm16`` 48 kHz stereo (both channels of the node, one stream each).

1. **Delay** (``delay``): the console's own player (the node page's Listen panel, hub/console/js/listen_player.js and
   listen_worklet.js) in headless Chromium. A click's delay is the wall time its first sample reaches the audio
   output (``window.harkListen.clicks[].played_ms``) minus the click's known instant (the whole P nearest the
   capture time its chunk carries). p50/p95/max over the clicks played in a ``--seconds`` window, the clicks missed,
   gaps (seq jumps), underruns, and the bytes per second the player received (chunk bytes) next to what the node
   sent (its own counters, ``GET /local/v1/diagnostics``). Opus and PCM16 alternate, a new page each round.
2. **Encoding CPU** (``cpu``): the node process's CPU (psutil, user + system, % of one core) while one stream runs
   with no listener (a listen session opened and never connected: the node encodes and sends, the hub drops),
   alternating with no stream at all; the encoding cost is the difference within each round. Also the node's own
   count of its encoder's CPU, and the bytes per second it sent (chunks, and the codec payload alone).
3. **Transport** (``transport``): the wire delay from a chunk's capture time (each frame's first sample) to its
   arrival at a python WebSocket listener of the hub, on loopback, with the node sending MQTT QoS 0 chunks of one
   frame (hub ``HARK_LISTEN_TRANSPORT=mqtt``) against agent HTTP POSTs batching what piled up meanwhile (a second hub
   with ``HARK_LISTEN_TRANSPORT=http`` and its own identical node, both running through the section). The frame's
   own 20 ms (its last sample is captured 20 ms after its first) is part of every figure.
4. **Listeners** (``listeners``): 1 and ``--listeners`` (default 10) plain WebSocket listeners of the same format
   (opus): the node's CPU, its bytes per second and its running streams (ten listeners must cost one stream), and
   the hub's CPU per extra listener, (CPU with N - CPU with 1) / (N - 1), paired within a round.

Each section runs its subjects in alternating rounds (``bench/rounds.py``: AB BA ...), at least 3 rounds of
``--seconds`` (default 20) each; every table gives the median and range over the rounds, the 1-minute load average
over them, and the target beside the figure (delay p95 < 300 ms). ``--quick`` is one round of 6 s per subject: a
smoke run, not figures. The bench warns when the machine was busy before it started.

Run it from the repository root::

    .venv/bin/python bench/listen.py [--rounds 3] [--seconds 20] [--listeners 10] [--only delay,cpu,transport,listeners]
    .venv/bin/python bench/listen.py --quick

Every process is stopped at the end, also on Ctrl-C or an error, and the temporary directory removed (``--keep``
keeps it, with the hub and node logs).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from hark_fleet.protocol.listen import ChunkError, parse_chunk  # noqa: E402
from listen_common import ListenFleet, StreamReader, cpu_s, percentile, wait_until  # noqa: E402
from report import TextTable, print_report  # noqa: E402
from rounds import MIN_ROUNDS, Round, Summary, alternate, busy_warning, load_average, load_text, summarize  # noqa: E402

SECTIONS = ("delay", "cpu", "transport", "listeners")
CODECS = ("opus", "pcm16")
FORMATS: dict[str, dict[str, Any]] = {
    "opus": {"channels": [0, 1], "codec": "opus", "bitrate": 64000, "sample_rate": 48000},
    "pcm16": {"channels": [0, 1], "codec": "pcm16", "sample_rate": 48000},
}
STEREO = '{"channels":[0,1]}'  # the Listen panel's option for both channels
TARGET_P95_MS = 300.0
FIRST_CLICK_TIMEOUT_S = 45.0
WARMUP_S = 3.0  # after the first click / the first chunk, before a window: buffers and the stream settle
STREAM_TIMEOUT_S = 20.0
GRACE_S = 3600  # a session never connected stays open this long (the CPU rounds hold one with no listener)
QUICK_SECONDS = 6.0


def source_of(period: float) -> str:
    return f"synthetic:click?period={period:g}&dbfs=-6&channels=2&rate=48000"


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Bench:
    """The fleets (the MQTT hub, and the HTTP one for the transport section), Chromium, and the rounds."""

    def __init__(self, args: argparse.Namespace, temp_dir: Path) -> None:
        self.args = args
        self.fleet = ListenFleet(temp_dir, "listen-mqtt")
        self.http_fleet: ListenFleet | None = None
        self.temp_dir = temp_dir

    # -- helpers ---------------------------------------------------------------------------------------------------

    def window(self, seconds: float, alive: Callable[[], None]) -> float:
        """Sleep through a window, checking `alive` twice a second; the seconds it lasted."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            time.sleep(min(0.5, max(0.0, seconds - (time.monotonic() - start))))
            alive()
        return time.monotonic() - start

    @staticmethod
    def node_counters(fleet: ListenFleet) -> tuple[float, float, float, float, int, str]:
        """(chunk bytes sent, payload bytes sent, encoder CPU s, wall time, running streams, transport) of the node."""
        stats = fleet.node_listen_stats() or {}
        sent = stats.get("sent", {})
        chunk_bytes = float(sent.get("mqtt_bytes", 0)) + float(sent.get("http_bytes", 0))
        return (
            chunk_bytes,
            float(stats.get("bytes_sent", 0)),
            float(stats.get("encode_cpu_s", 0.0)),
            time.time(),
            int(stats.get("running", 0)),
            str(stats.get("transport", "?")),
        )

    def wait_streams(self, fleet: ListenFleet, count: int) -> None:
        wait_until(
            lambda: self.node_counters(fleet)[4] == count,
            STREAM_TIMEOUT_S,
            f"the node to run {count} listen streams",
            fleet.alive,
        )

    # -- 1. delay through the console's player ---------------------------------------------------------------------

    def delay_round(self, codec: str, number: int) -> Round:
        result = Round(codec, number)
        fleet = self.fleet
        page = fleet.console_player(codec, STEREO)
        try:

            def alive() -> None:
                fleet.alive()
                state, error = page.evaluate("[window.harkListen.state, window.harkListen.error]")
                if state not in ("starting", "playing"):
                    raise RuntimeError(f"the console's player is {state}: {error}")

            wait_until(lambda: page.evaluate("window.harkListen.clicks.length"), FIRST_CLICK_TIMEOUT_S, "the first click", alive)
            time.sleep(WARMUP_S)
            snapshot = "({gaps: window.harkListen.gaps, underruns: window.harkListen.underruns, bytes: window.harkListen.bytes})"
            before, node0, wall0 = page.evaluate(snapshot), self.node_counters(fleet), time.time() * 1000
            seconds = self.window(self.args.seconds, alive)
            after, node1, wall1 = page.evaluate(snapshot), self.node_counters(fleet), time.time() * 1000
            clicks = page.evaluate("window.harkListen.clicks")
        finally:
            fleet.stop_console_player(page)
        period_ms = self.args.period * 1000
        delays = [
            c["played_ms"] - round(c["capture_ms"] / period_ms) * period_ms for c in clicks if wall0 <= c["played_ms"] < wall1
        ]
        expected = round(seconds / self.args.period)
        node_s = node1[3] - node0[3]
        figures = {
            "p50_ms": statistics.median(delays) if delays else float("nan"),
            "p95_ms": percentile(delays, 0.95),
            "max_ms": max(delays, default=float("nan")),
            "clicks": float(len(delays)),
            "missed": float(max(0, expected - len(delays))),
            "gaps": float(after["gaps"] - before["gaps"]),
            "underruns": float(after["underruns"] - before["underruns"]),
            "received_bps": (after["bytes"] - before["bytes"]) / seconds,
            "node_sent_bps": (node1[0] - node0[0]) / node_s if node_s > 0 else float("nan"),
        }
        result.done(**figures)
        print(
            f"  delay     round {number + 1} {codec:6} p50 {figures['p50_ms']:6.1f} ms  p95 {figures['p95_ms']:6.1f} ms"
            f"  max {figures['max_ms']:6.1f} ms  clicks {len(delays)}/{expected}  gaps {figures['gaps']:.0f}"
            f"  underruns {figures['underruns']:.0f}  {figures['received_bps'] / 1000:.1f} kB/s"
            f"  load {result.load_before:.2f}->{result.load_after:.2f}",
            flush=True,
        )
        return result

    # -- 2. the node's CPU for encoding, no listener --------------------------------------------------------------

    def cpu_round(self, subject: str, number: int) -> Round:
        result = Round(subject, number)
        fleet = self.fleet
        session = fleet.open_session(FORMATS[subject]) if subject != "none" else None
        try:
            if session is not None:
                self.wait_streams(fleet, 1)
                time.sleep(WARMUP_S)
            node = fleet.node_process()
            counters0, cpu0 = self.node_counters(fleet), cpu_s(node)
            seconds = self.window(self.args.seconds, fleet.alive)
            cpu1, counters1 = cpu_s(node), self.node_counters(fleet)
        finally:
            if session is not None:
                fleet.end_session(session)
        self.wait_streams(fleet, 0)  # the next round starts from a node with no stream
        node_s = counters1[3] - counters0[3]
        figures = {
            "node_cpu_pct": 100.0 * (cpu1 - cpu0) / seconds,
            "encoder_cpu_pct": 100.0 * (counters1[2] - counters0[2]) / node_s,
            "sent_bps": (counters1[0] - counters0[0]) / node_s,
            "payload_bps": (counters1[1] - counters0[1]) / node_s,
        }
        result.done(**figures)
        print(
            f"  cpu       round {number + 1} {subject:6} node {figures['node_cpu_pct']:5.2f} % core"
            f"  encoder {figures['encoder_cpu_pct']:5.2f} %  sent {figures['sent_bps'] / 1000:6.1f} kB/s"
            f"  load {result.load_before:.2f}->{result.load_after:.2f}",
            flush=True,
        )
        return result

    # -- 3. transport: MQTT chunks against HTTP POSTs --------------------------------------------------------------

    def transport_round(self, transport: str, number: int) -> Round:
        result = Round(transport, number)
        fleet = self.fleet if transport == "mqtt" else self.http_fleet
        assert fleet is not None
        delays: list[float] = []
        frames_per_chunk: list[int] = []
        recording = threading.Event()

        def on_chunk(data: bytes, arrival: float) -> None:
            if not recording.is_set():
                return
            try:
                chunk = parse_chunk(data)
            except ChunkError:
                return
            frames_per_chunk.append(len(chunk.frames))
            delays.extend(arrival * 1000 - (chunk.capture_us / 1000 + i * chunk.frame_ms) for i in range(len(chunk.frames)))

        reader = StreamReader(fleet, fleet.open_session(FORMATS["opus"]), on_chunk)
        reader.start()

        def alive() -> None:
            fleet.alive()
            if reader.error:
                raise RuntimeError(f"the {transport} listener failed: {reader.error}")

        try:
            wait_until(lambda: reader.chunks, STREAM_TIMEOUT_S, f"the first chunk over {transport}", alive)
            time.sleep(WARMUP_S)
            node, hub = fleet.node_process(), fleet.hub_process()
            node0, hub0, counters0 = cpu_s(node), cpu_s(hub), self.node_counters(fleet)
            recording.set()
            seconds = self.window(self.args.seconds, alive)
            recording.clear()
            node1, hub1, counters1 = cpu_s(node), cpu_s(hub), self.node_counters(fleet)
        finally:
            reader.halt()
        if counters1[5] != transport:
            raise RuntimeError(f"the node said its transport was {counters1[5]!r} in a {transport} round")
        figures = {
            "p50_ms": statistics.median(delays) if delays else float("nan"),
            "p95_ms": percentile(delays, 0.95),
            "max_ms": max(delays, default=float("nan")),
            "frames_per_chunk": statistics.mean(frames_per_chunk) if frames_per_chunk else float("nan"),
            "node_cpu_pct": 100.0 * (node1 - node0) / seconds,
            "hub_cpu_pct": 100.0 * (hub1 - hub0) / seconds,
            "sent_bps": (counters1[0] - counters0[0]) / (counters1[3] - counters0[3]),
        }
        result.done(**figures)
        print(
            f"  transport round {number + 1} {transport:6} p50 {figures['p50_ms']:6.1f} ms  p95 {figures['p95_ms']:6.1f} ms"
            f"  max {figures['max_ms']:6.1f} ms  {figures['frames_per_chunk']:.2f} frames/chunk"
            f"  node {figures['node_cpu_pct']:5.2f} %  hub {figures['hub_cpu_pct']:5.2f} %"
            f"  load {result.load_before:.2f}->{result.load_after:.2f}",
            flush=True,
        )
        return result

    # -- 4. one listener against ten --------------------------------------------------------------------------------

    def listeners_round(self, subject: str, number: int) -> Round:
        result = Round(subject, number)
        fleet = self.fleet
        count = int(subject)
        readers = [StreamReader(fleet, fleet.open_session(FORMATS["opus"])) for _ in range(count)]
        for reader in readers:
            reader.start()

        def alive() -> None:
            fleet.alive()
            failed = [r.error for r in readers if r.error]
            if failed:
                raise RuntimeError(f"a listener failed: {failed[0]}")

        try:
            wait_until(lambda: all(r.bytes for r in readers), STREAM_TIMEOUT_S, f"{count} listeners to receive audio", alive)
            time.sleep(WARMUP_S)
            node, hub = fleet.node_process(), fleet.hub_process()
            node0, hub0, counters0, got0 = cpu_s(node), cpu_s(hub), self.node_counters(fleet), [r.bytes for r in readers]
            seconds = self.window(self.args.seconds, alive)
            node1, hub1, counters1, got1 = cpu_s(node), cpu_s(hub), self.node_counters(fleet), [r.bytes for r in readers]
        finally:
            for reader in readers:
                reader.halt()
        self.wait_streams(fleet, 0)
        figures = {
            "streams": float(counters1[4]),
            "node_cpu_pct": 100.0 * (node1 - node0) / seconds,
            "sent_bps": (counters1[0] - counters0[0]) / (counters1[3] - counters0[3]),
            "hub_cpu_pct": 100.0 * (hub1 - hub0) / seconds,
            "listener_bps": statistics.mean(b1 - b0 for b0, b1 in zip(got0, got1, strict=True)) / seconds,
        }
        result.done(**figures)
        print(
            f"  listeners round {number + 1} {count:2d} listener(s)  node streams {counters1[4]}"
            f"  node {figures['node_cpu_pct']:5.2f} %  sent {figures['sent_bps'] / 1000:5.1f} kB/s"
            f"  hub {figures['hub_cpu_pct']:5.2f} %  load {result.load_before:.2f}->{result.load_after:.2f}",
            flush=True,
        )
        return result

    # -- running ---------------------------------------------------------------------------------------------------

    def run_section(self, section: str) -> list[Round]:
        if section == "delay":
            subjects, measure = list(CODECS), self.delay_round
        elif section == "cpu":
            subjects, measure = ["none", *CODECS], self.cpu_round
        elif section == "transport":
            self.http_fleet = ListenFleet(self.temp_dir, "listen-http")
            self.http_fleet.start_fleet(
                source_of(self.args.period), {"HARK_LISTEN_TRANSPORT": "http"}, {"disconnect_grace_s": GRACE_S}
            )
            subjects, measure = ["mqtt", "http"], self.transport_round
        else:
            subjects, measure = ["1", str(self.args.listeners)], self.listeners_round
        try:
            return [measure(subject, number) for number, subject in alternate(subjects, self.args.rounds)]
        finally:
            if section == "transport" and self.http_fleet is not None:
                self.http_fleet.close()
                self.http_fleet = None

    def close(self) -> None:
        if self.http_fleet is not None:
            self.http_fleet.close()
        self.fleet.close()


# -- the report -------------------------------------------------------------------------------------------------------


def cells(rounds: list[Round], subjects: list[str], figure: str, fmt: str, unit: str = "") -> list[str]:
    return [summarize(rounds, s, figure).text(fmt, unit) for s in subjects]


def paired(rounds: list[Round], subject: str, baseline: str, figure: str, scale: float = 1.0) -> Summary:
    """(subject's figure - baseline's) * scale, round by round."""
    base = {r.number: r.figures[figure] for r in rounds if r.subject == baseline and figure in r.figures}
    return Summary.of([(r.figures[figure] - base[r.number]) * scale for r in rounds if r.subject == subject and r.number in base])


def delay_table(rounds: list[Round]) -> tuple[TextTable, str]:
    head = ["figure", *CODECS, "target"]
    body = [
        ["delay p50", *cells(rounds, list(CODECS), "p50_ms", "{:.0f}", "ms"), ""],
        ["delay p95", *cells(rounds, list(CODECS), "p95_ms", "{:.0f}", "ms"), f"< {TARGET_P95_MS:.0f} ms"],
        ["delay max", *cells(rounds, list(CODECS), "max_ms", "{:.0f}", "ms"), ""],
        ["clicks heard per round", *cells(rounds, list(CODECS), "clicks", "{:.0f}"), ""],
        ["clicks missed per round", *cells(rounds, list(CODECS), "missed", "{:.0f}"), "0"],
        ["gaps per round", *cells(rounds, list(CODECS), "gaps", "{:.0f}"), "0"],
        ["underruns per round", *cells(rounds, list(CODECS), "underruns", "{:.0f}"), "0"],
        ["bytes/s the player received", *cells(rounds, list(CODECS), "received_bps", "{:,.0f}", "B/s"), "= sent"],
        ["bytes/s the node sent", *cells(rounds, list(CODECS), "node_sent_bps", "{:,.0f}", "B/s"), ""],
    ]
    worst = {c: summarize(rounds, c, "p95_ms").high for c in CODECS}
    verdict = ", ".join(
        f"{c} p95 {'under' if worst[c] < TARGET_P95_MS else 'NOT under'} {TARGET_P95_MS:.0f} ms in every round" for c in CODECS
    )
    title = f"1. End-to-end delay, capture -> playback in Chromium (the console's player); {load_text(rounds)}"
    return (title, head, body, 1), f"delay: {verdict}"


def cpu_table(rounds: list[Round]) -> tuple[TextTable, str]:
    subjects = ["none", *CODECS]
    head = ["figure", "no stream", *CODECS, "target"]
    body = [
        ["node process CPU", *cells(rounds, subjects, "node_cpu_pct", "{:.2f}", "% core"), ""],
        [
            "  of which one stream (paired)",
            "",
            *[paired(rounds, c, "none", "node_cpu_pct").text("{:.2f}", "% core") for c in CODECS],
            "small",
        ],
        ["node's encoder thread CPU", "", *cells(rounds, list(CODECS), "encoder_cpu_pct", "{:.2f}", "% core"), ""],
        ["bytes/s per stream (chunks)", "", *cells(rounds, list(CODECS), "sent_bps", "{:,.0f}", "B/s"), ""],
        [
            "bytes/s per stream (codec payload)",
            "",
            *cells(rounds, list(CODECS), "payload_bps", "{:,.0f}", "B/s"),
            "8,000 / 192,000",
        ],
    ]
    stream = {c: paired(rounds, c, "none", "node_cpu_pct").median for c in CODECS}
    note = "encoding: one stream costs the node " + ", ".join(f"{c} {stream[c]:.2f} % of a core" for c in CODECS)
    title = f"2. The node's CPU for encoding, one stream and no listener; {load_text(rounds)}"
    return (title, head, body, 1), note


def transport_table(rounds: list[Round]) -> tuple[TextTable, str]:
    subjects = ["mqtt", "http"]
    head = ["figure", "MQTT QoS 0", "HTTP POST", "target"]
    body = [
        ["wire delay p50 (capture -> listener)", *cells(rounds, subjects, "p50_ms", "{:.1f}", "ms"), "lower"],
        ["wire delay p95", *cells(rounds, subjects, "p95_ms", "{:.1f}", "ms"), "lower"],
        ["wire delay max", *cells(rounds, subjects, "max_ms", "{:.1f}", "ms"), ""],
        ["frames per chunk", *cells(rounds, subjects, "frames_per_chunk", "{:.2f}"), "1"],
        ["node process CPU", *cells(rounds, subjects, "node_cpu_pct", "{:.2f}", "% core"), ""],
        ["hub process CPU", *cells(rounds, subjects, "hub_cpu_pct", "{:.2f}", "% core"), ""],
        ["bytes/s the node sent", *cells(rounds, subjects, "sent_bps", "{:,.0f}", "B/s"), ""],
    ]
    mqtt, http = summarize(rounds, "mqtt", "p95_ms"), summarize(rounds, "http", "p95_ms")
    if mqtt.high < http.low:
        verdict = f"MQTT has the lower p95 in every round ({mqtt.median:.1f} ms against {http.median:.1f} ms over HTTP)"
    elif http.high < mqtt.low:
        verdict = f"HTTP has the lower p95 in every round ({http.median:.1f} ms against {mqtt.median:.1f} ms over MQTT)"
    else:
        verdict = f"a tie at p95 within the rounds' spread (MQTT {mqtt.median:.1f} ms, HTTP {http.median:.1f} ms)"
    p50 = {t: summarize(rounds, t, "p50_ms").median for t in subjects}
    node = paired(rounds, "http", "mqtt", "node_cpu_pct").median
    hub = paired(rounds, "http", "mqtt", "hub_cpu_pct").median
    verdict += (
        f"; p50 MQTT {p50['mqtt']:.1f} ms, HTTP {p50['http']:.1f} ms; HTTP costs {node:+.2f} % of a core at the node"
        f" and {hub:+.2f} % at the hub per stream against MQTT"
    )
    title = f"3. Transport node -> hub -> WebSocket listener, loopback, opus; {load_text(rounds)}"
    return (title, head, body, 1), f"transport: {verdict}"


def listeners_table(rounds: list[Round], many: int) -> tuple[TextTable, str]:
    subjects = ["1", str(many)]
    head = ["figure", "1 listener", f"{many} listeners", "target"]
    ratio_bytes = Summary.of(
        [
            r.figures["sent_bps"] / base.figures["sent_bps"]
            for r in rounds
            if r.subject == subjects[1]
            for base in rounds
            if base.subject == "1" and base.number == r.number and base.figures["sent_bps"]
        ]
    )
    extra = paired(rounds, subjects[1], "1", "hub_cpu_pct", 1 / (many - 1))
    body = [
        ["node streams running", *cells(rounds, subjects, "streams", "{:.0f}"), "1 and 1"],
        ["node process CPU", *cells(rounds, subjects, "node_cpu_pct", "{:.2f}", "% core"), "equal"],
        ["bytes/s the node sent", *cells(rounds, subjects, "sent_bps", "{:,.0f}", "B/s"), "equal"],
        [f"  {many} over 1", "", ratio_bytes.text("{:.2f}x"), "1.00x"],
        ["bytes/s per listener", *cells(rounds, subjects, "listener_bps", "{:,.0f}", "B/s"), ""],
        ["hub process CPU", *cells(rounds, subjects, "hub_cpu_pct", "{:.2f}", "% core"), ""],
        ["hub CPU per extra listener (paired)", "", extra.text("{:.3f}", "% core"), "small"],
    ]
    streams = summarize(rounds, subjects[1], "streams")
    note = (
        f"listeners: with {many} listeners the node ran {streams.high:.0f} stream(s) at most and sent "
        f"{ratio_bytes.median:.2f}x the bytes of one; each extra listener cost the hub {extra.median:.3f} % of a core"
    )
    title = f"4. One listener against {many} of the same format (opus); {load_text(rounds)}"
    return (title, head, body, 1), note


def run(args: argparse.Namespace) -> int:
    sections = [s for s in SECTIONS if s in args.only.split(",")] if args.only else list(SECTIONS)
    if not sections:
        print(f"nothing to measure: --only takes {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    from playwright.sync_api import Error as PlaywrightError

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    load_at_start = load_average()
    warning = busy_warning(load_at_start)
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-listen-"))
    bench = Bench(args, temp_dir)
    results: dict[str, list[Round]] = {}
    try:
        print(f"hark live listen: {', '.join(sections)}; {args.rounds} round(s) of {args.seconds:g} s per subject", flush=True)
        print(f"load before start {load_at_start:.2f}", flush=True)
        if warning:
            print(warning, flush=True)
        bench.fleet.start_fleet(source_of(args.period), settings={"disconnect_grace_s": GRACE_S})
        if "delay" in sections:
            bench.fleet.start_browser()
        for section in sections:
            results[section] = bench.run_section(section)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, PlaywrightError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        bench.close()
        if args.keep:
            print(f"logs kept in {temp_dir}")
        else:
            shutil.rmtree(temp_dir, ignore_errors=True)

    tables: list[TextTable] = []
    notes: list[str] = []
    builders = {
        "delay": delay_table,
        "cpu": cpu_table,
        "transport": transport_table,
        "listeners": lambda rounds: listeners_table(rounds, args.listeners),
    }
    for section in sections:
        table, note = builders[section](results[section])
        tables.append(table)
        notes.append(note)
    if args.rounds < MIN_ROUNDS:
        notes.append(f"only {args.rounds} round(s): a smoke run, not figures (at least {MIN_ROUNDS} for figures)")
    if warning:
        notes.append(warning)
    context = [
        ("node source", source_of(args.period)),
        ("formats", "opus 64 kbit/s 48 kHz stereo; pcm16 48 kHz stereo; 20 ms frames"),
        ("rounds", f"{args.rounds} alternating, {args.seconds:g} s window per subject"),
        ("load before start", f"{load_at_start:.2f}"),
        ("CPU", "user + system of the process, % of one core (psutil)"),
        ("bytes", "chunk bytes (26-byte header + frames); no MQTT, HTTP, WebSocket or TCP framing"),
    ]
    print()
    print_report(context, tables, notes, "hark live listen (bench/listen.py)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help=f"rounds per section (default {MIN_ROUNDS})")
    parser.add_argument("--seconds", type=float, default=20.0, help="the window of each subject in a round (default 20)")
    parser.add_argument("--listeners", type=int, default=10, help="listeners of the many-listener subject (default 10)")
    parser.add_argument("--period", type=float, default=0.5, help="seconds between the node's clicks (default 0.5)")
    parser.add_argument("--only", default="", help=f"a comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help=f"one round of {QUICK_SECONDS:g} s per subject (a smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 1, QUICK_SECONDS
    if args.listeners < 2 or args.period <= 0 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--listeners must be at least 2, --rounds at least 1, --period and --seconds positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
