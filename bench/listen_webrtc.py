"""Live listen (issue 23): the WebSocket player against WebRTC through aiortc, measured on the same node stream.

The issue names two transports for `GET /nodes/:id/listen/stream`; the product ships the first. This bench gives
the figures that back the choice.

Candidates
----------
* ``websocket``: the product. The hub relays the node's chunks (Opus packets with sequence numbers and capture
  times, ``hark_fleet.protocol.listen``) unchanged as binary WebSocket messages; the console's player
  (hub/console/js/listen_player.js: WebCodecs ``AudioDecoder`` + the AudioWorklet listen_worklet.js and its jitter
  buffer) plays them and keeps ``window.harkListen``, whose ``clicks`` give the delay of every click it played.
* ``webrtc-pass``: an aiortc server (this script run as ``--serve``, its own process) is one listener of the hub
  (a listen session of the bench's admin, the same WebSocket) and forwards the same Opus packets to each browser
  peer without decoding them: a track whose ``recv()`` returns ``av.Packet`` objects, which aiortc's
  ``RTCRtpSender._next_encoded_frame`` only packs into RTP (``encoder.pack``; checked in aiortc 1.16). Chromium
  plays them through its own jitter buffer (NetEq) with its packet-loss concealment.
* ``webrtc-reencode``: the same server, but the packets are decoded once (libopus through opuslib_next) and every
  peer's sender encodes the PCM again (aiortc makes one encoder per sender: the per-listener cost the issue warns
  about). aiortc's Opus encoder is set to the stream's bitrate and channel count (it would be 96 kbit/s stereo).

For WebRTC the page is served by the aiortc server: an ``RTCPeerConnection`` per listener (recvonly, non-trickle
offer/answer over ``POST /offer``), the measured one's track into an ``AudioContext``
(``MediaStreamAudioSourceNode`` -> an AudioWorklet that detects clicks as the player does: the first sample above
0.1 after at least 100 ms below it); every track is also attached to a muted ``<audio>`` element (Chromium needs it
for a remote track's audio to flow).

What is measured
----------------
The node's synthetic source is ``synthetic:click?period=P`` (default 0.5 s): a 1 ms click whose first sample is
captured at every whole multiple of P seconds of the node's wall clock. Node, hub, aiortc and Chromium share this
machine's clock. A click's delay is the wall time at which its first sample reaches the audio output (its
AudioContext time mapped through ``getOutputTimestamp()``) minus the click's instant. The WebSocket player knows the
click's capture time from the chunk; WebRTC carries no capture time to the page, so there the instant is the whole
multiple of P at or before the played time: valid while the delay stays under P (the bench says when a delay
came close to P).

Each round runs every candidate once, in alternating order (``bench/rounds.py``: ABC CBA ...), each in two phases:

* 1 listener for ``--seconds`` (default 20): delay p50/p95 of the clicks played in the window, the serving process's
  CPU (psutil, user + system) as % of one core, and the bytes per second the listener received (WebSocket: the
  chunk bytes, ``harkListen.bytes``; WebRTC: RTP payload + header bytes from ``getStats``; neither counts
  IP/TCP/UDP, TLS/SRTP or WebSocket framing);
* 10 listeners (``--listeners``) for half as long: the serving process's CPU per listener, and the measured
  listener's delay meanwhile. WebSocket: 9 more listen sessions read by plain WebSocket clients of this bench
  (the hub's work per listener does not depend on who reads); WebRTC: 9 more peer connections in the same page.

The serving process is the hub for ``websocket`` and the aiortc server for WebRTC (which adds to the hub's cost
of one WebSocket listener: the hub's CPU in the WebRTC rounds is printed too). The hub's figure with 1 listener also
holds what the console's node page asks of it meanwhile (its levels, who else listens) and the node's stream
coming in; the cost of each further listener, (CPU with N - CPU with 1) / (N - 1), is what the verdict compares.
The 1-minute load average is shown before and after each round; ``bench/rounds.py`` warns when the machine was busy
before the bench started.

How
---
A real hub (``python -m hark_fleet.hub run``, ``tests.harness.HubProcess``: SQLite, embedded broker) and one real
node (``tests.harness.NodeProcess``) enrolled through the API, ``HARK_NODE_AUDIO_SOURCE=synthetic:click?period=P``;
the listen settings are raised so that one user may hold every session. Chromium is Debian's (/usr/bin/chromium)
through Playwright, headless, with ``--autoplay-policy=no-user-gesture-required`` and
``--disable-features=WebRtcHideLocalIpsWithMdns`` (plain host candidates, no mDNS names for aiortc to resolve).
A listen session is opened per candidate and round (``POST /api/v1/nodes/{id}/listen``, opus 64 kbit/s 48 kHz
mono) and ended with ``DELETE`` after it.

aiortc and its PyAV come with the bench extra::

    .venv/bin/pip install -e '.[hub,node,bench]'

Run it from the repository root::

    .venv/bin/python bench/listen_webrtc.py [--rounds 3] [--seconds 20] [--listeners 10] [--period 0.5]
    .venv/bin/python bench/listen_webrtc.py --synthetic --only webrtc-pass,webrtc-reencode   # no hub, no node

Figures on this 2-core VM (3 rounds, 20 s + 10 s, load 0.99-3.18, aiortc 1.16, Chromium headless), median (range):
delay p95 with 1 listener: websocket 140 (139-190) ms, webrtc-pass 143 (143-310) ms, webrtc-reencode 207 (178-210) ms;
CPU of each further listener: the hub 0.31 (0.28-0.33) % of a core, aiortc passing through 0.52 (0.48-0.53) %,
re-encoding 3.48 (2.94-3.57) % (6.7x); with 10 listeners the hub used 7.1 % of a core in all, aiortc 8.5 % and
40.4 % (besides the hub's 3.9 % for its one listener); 9.5 / 9.0 / 5.9 kB/s per listener. The WebSocket player
wins: the same delay within the rounds' spread at the least cost, and no second process.

``--synthetic`` feeds the aiortc server from an Opus click generator of its own instead of the hub (the WebRTC
part alone). Every process is stopped at the end, also on Ctrl-C or an error, and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from hark_fleet.protocol.listen import ChunkError, encode_chunk, parse_chunk  # noqa: E402
from listen_common import ListenFleet, StreamReader, cpu_s, free_port, log_tail, percentile, stop_process, wait_until  # noqa: E402
from rounds import MIN_ROUNDS, Round, alternate, busy_warning, load_average, load_text, summarize  # noqa: E402

SUBJECTS = ("websocket", "webrtc-pass", "webrtc-reencode")
SAMPLE_RATE = 48000
FRAME_MS = 20
BITRATE = 64000
CLICK_THRESHOLD = 0.1
CLICK_QUIET_S = 0.1
CLICK_DBFS = -6.0
FIRST_CLICK_TIMEOUT_S = 45.0
WARMUP_S = 3.0  # after the first click, before a window: jitter buffers settle
SETTLE_S = 3.0  # after the extra listeners flow, before their window
SERVER_READY_TIMEOUT_S = 20.0
QUEUE_FRAMES = 25  # a peer's track keeps at most this many frames (0.5 s); older ones are dropped


# -- the aiortc server (``--serve``) --------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>hark listen over WebRTC</title></head>
<body><div id="players"></div>
<script>
const PERIOD_MS = __PERIOD_MS__;
const WORKLET = `
class ClickDetector extends AudioWorkletProcessor {
  constructor() { super(); this.quiet = 1e9; this.needed = Math.round(__QUIET_S__ * sampleRate); }
  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const samples = input[0];
      for (let i = 0; i < samples.length; i++) {
        if (Math.abs(samples[i]) > __THRESHOLD__) {
          if (this.quiet >= this.needed) this.port.postMessage((currentFrame + i) / sampleRate);
          this.quiet = 0;
        } else {
          this.quiet++;
        }
      }
    }
    return true;
  }
}
registerProcessor("click-detector", ClickDetector);`;
const bench = (window.bench = { clicks: [], peers: [], errors: [] });
let ctx = null;
let detector = null;

async function setupAudio() {
  ctx = new AudioContext({ latencyHint: "interactive", sampleRate: 48000 });
  const url = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
  await ctx.audioWorklet.addModule(url);
  detector = new AudioWorkletNode(ctx, "click-detector", { numberOfInputs: 1, numberOfOutputs: 1 });
  detector.connect(ctx.destination);
  detector.port.onmessage = (event) => {
    const stamp = ctx.getOutputTimestamp();
    const wall = performance.timeOrigin + stamp.performanceTime + (event.data - stamp.contextTime) * 1000;
    const instant = Math.floor(wall / PERIOD_MS) * PERIOD_MS;
    bench.clicks.push({ wall: wall, delay_ms: wall - instant });
  };
  await ctx.resume();
  return ctx.state;
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

async function addPeer(measured) {
  const pc = new RTCPeerConnection();
  const peer = { pc: pc, measured: measured, state: "new" };
  bench.peers.push(peer);
  pc.addEventListener("connectionstatechange", () => (peer.state = pc.connectionState));
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addEventListener("track", (event) => {
    const stream = event.streams[0] || new MediaStream([event.track]);
    const audio = document.createElement("audio");
    audio.muted = true;
    audio.autoplay = true;
    audio.srcObject = stream;
    document.getElementById("players").appendChild(audio);
    audio.play().catch((error) => bench.errors.push(String(error)));
    if (measured) ctx.createMediaStreamSource(stream).connect(detector);
  });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const answer = await fetch("/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  if (!answer.ok) throw new Error("offer answered HTTP " + answer.status);
  await pc.setRemoteDescription(await answer.json());
  return bench.peers.length;
}

async function received() {
  const out = [];
  for (const peer of bench.peers) {
    let bytes = 0;
    let packets = 0;
    let concealed = 0;
    const report = await peer.pc.getStats();
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        bytes += (s.bytesReceived || 0) + (s.headerBytesReceived || 0);
        packets += s.packetsReceived || 0;
        concealed += s.concealedSamples || 0;
      }
    });
    out.push({ bytes: bytes, packets: packets, concealed: concealed, state: peer.state });
  }
  return out;
}

function closeAll() {
  for (const peer of bench.peers) peer.pc.close();
  bench.peers = [];
}
</script></body></html>
"""


def synthetic_chunks(period: float, channels: int = 1) -> Any:
    """An async generator of chunks as a node would send them: one 20 ms Opus frame each, clicks at whole multiples
    of `period` of the wall clock, each frame sent when its last sample would have been captured."""
    import numpy as np
    import opuslib_next

    async def generate() -> Any:
        encoder = opuslib_next.Encoder(SAMPLE_RATE, channels, opuslib_next.APPLICATION_RESTRICTED_LOWDELAY)
        encoder.bitrate = BITRATE
        frame = SAMPLE_RATE * FRAME_MS // 1000
        amplitude = int(32767 * 10 ** (CLICK_DBFS / 20))
        click = max(1, SAMPLE_RATE // 1000)
        start = math.ceil(time.time() / (FRAME_MS / 1000)) * (FRAME_MS / 1000)
        seq = 0
        while True:
            first = start + seq * FRAME_MS / 1000
            await asyncio.sleep(max(0.0, first + FRAME_MS / 1000 - time.time()))
            samples = np.zeros((frame, channels), dtype=np.int16)
            k = math.ceil((first - click / SAMPLE_RATE) / period)
            while k * period < first + FRAME_MS / 1000:
                at = round((k * period - first) * SAMPLE_RATE)
                samples[max(0, at) : max(0, at + click)] = amplitude
                k += 1
            packet = encoder.encode(samples.tobytes(), frame)
            yield encode_chunk("opus", channels, SAMPLE_RATE, seq, round(first * 1e6), [packet])
            seq += 1

    return generate()


async def hub_chunks(url: str, token: str) -> Any:
    """The chunks of a listen session's WebSocket on the hub, as a listener gets them."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest(url, headers={"Authorization": f"Bearer {token}"})
    connection = await websocket_connect(request, max_message_size=1 << 20)
    while True:
        message = await connection.read_message()
        if message is None:
            raise ConnectionError(f"the hub closed the listen socket ({connection.close_code} {connection.close_reason})")
        if isinstance(message, bytes):
            yield message
        elif '"type":"stats"' not in message.replace(" ", ""):
            print(f"hub says: {message[:200]}", file=sys.stderr, flush=True)


def serve(port: int, mode: str, source_url: str | None, token: str, period: float) -> int:
    """The WebRTC candidate: one listener of the hub (or a synthetic source), fanned out to every browser peer."""
    import av
    import numpy as np
    import opuslib_next
    import tornado.web
    from aiortc import RTCPeerConnection, RTCSessionDescription, codecs
    from aiortc.codecs.opus import OpusEncoder
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    time_base = fractions.Fraction(1, SAMPLE_RATE)
    layout = {"channels": 1, "bitrate": BITRATE}

    class StreamOpusEncoder(OpusEncoder):
        """aiortc's Opus encoder at the stream's bitrate and channel count (aiortc's own: 96 kbit/s stereo)."""

        def __init__(self) -> None:
            super().__init__()
            name = "mono" if layout["channels"] == 1 else "stereo"
            self.codec.bit_rate = layout["bitrate"]
            self.codec.layout = name
            self.resampler = av.AudioResampler(format="s16", layout=name, rate=SAMPLE_RATE, frame_size=960)

    codecs.OpusEncoder = StreamOpusEncoder  # type: ignore[misc]  # get_encoder() looks the class up here

    class FanoutTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.queue: asyncio.Queue[Any] = asyncio.Queue()

        def put(self, item: Any) -> None:
            while self.queue.qsize() >= QUEUE_FRAMES:
                self.queue.get_nowait()
                stats["dropped"] += 1
            self.queue.put_nowait(item)

        async def recv(self) -> Any:
            if self.readyState != "live":
                raise MediaStreamError
            return await self.queue.get()

    peers: set[RTCPeerConnection] = set()
    tracks: set[FanoutTrack] = set()
    stats: dict[str, Any] = {"chunks": 0, "frames": 0, "bytes": 0, "bad": 0, "dropped": 0, "error": None}
    decoders: dict[int, Any] = {}
    failed = asyncio.Event()

    async def pump() -> None:
        source = hub_chunks(source_url, token) if source_url else synthetic_chunks(period)
        try:
            async for data in source:
                try:
                    chunk = parse_chunk(data)
                except ChunkError:
                    stats["bad"] += 1
                    continue
                stats["chunks"] += 1
                stats["bytes"] += len(data)
                layout["channels"] = chunk.channels
                step = chunk.frame_ms * SAMPLE_RATE // 1000
                for i, payload in enumerate(chunk.frames):
                    stats["frames"] += 1
                    pts = (chunk.seq + i) * step
                    if not tracks:
                        continue
                    if mode == "pass":
                        item: Any = av.Packet(payload)
                        item.pts = pts
                        item.time_base = time_base
                    else:
                        decoder = decoders.get(chunk.channels)
                        if decoder is None:
                            decoder = decoders[chunk.channels] = opuslib_next.Decoder(SAMPLE_RATE, chunk.channels)
                        pcm = decoder.decode(payload, step)
                        samples = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
                        item = av.AudioFrame.from_ndarray(
                            samples, format="s16", layout="mono" if chunk.channels == 1 else "stereo"
                        )
                        item.sample_rate = SAMPLE_RATE
                        item.pts = pts
                        item.time_base = time_base
                    for track in list(tracks):
                        track.put(item)
        except (OSError, ConnectionError, ValueError, av.FFmpegError, opuslib_next.OpusError) as err:
            stats["error"] = f"{type(err).__name__}: {err}"
            print(f"source failed: {stats['error']}", file=sys.stderr, flush=True)
        failed.set()  # the hub's stream ended: the server exits, the bench sees it

    class PageHandler(tornado.web.RequestHandler):
        def get(self) -> None:
            page = PAGE.replace("__PERIOD_MS__", f"{period * 1000:g}").replace("__QUIET_S__", f"{CLICK_QUIET_S:g}")
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.write(page.replace("__THRESHOLD__", f"{CLICK_THRESHOLD:g}"))

    class OfferHandler(tornado.web.RequestHandler):
        async def post(self) -> None:
            body = json.loads(self.request.body)
            pc = RTCPeerConnection()
            peers.add(pc)
            track = FanoutTrack()

            @pc.on("connectionstatechange")
            async def on_state() -> None:
                if pc.connectionState in ("failed", "closed"):
                    tracks.discard(track)
                    peers.discard(pc)
                    await pc.close()

            await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
            pc.addTrack(track)
            tracks.add(track)
            await pc.setLocalDescription(await pc.createAnswer())
            self.write({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    class StatsHandler(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({**stats, "peers": len(peers), "tracks": len(tracks)})

    async def main() -> None:
        app = tornado.web.Application([(r"/", PageHandler), (r"/offer", OfferHandler), (r"/stats", StatsHandler)])
        app.listen(port, address="127.0.0.1")
        task = asyncio.create_task(pump())
        print(f"HARK_WEBRTC_READY {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopping, asyncio.ensure_future(failed.wait())], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        await asyncio.gather(*(pc.close() for pc in list(peers)), return_exceptions=True)

    asyncio.run(main())
    return 1 if stats["error"] else 0


# -- the bench --------------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase of a round measured."""

    listeners: int
    seconds: float = 0.0
    delays_ms: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    hub_cpu_s: float = 0.0
    bytes: float = 0.0

    def cpu_pct(self) -> float:
        return 100.0 * self.server_cpu_s / self.seconds if self.seconds else float("nan")

    def hub_pct(self) -> float:
        return 100.0 * self.hub_cpu_s / self.seconds if self.seconds else float("nan")


class Candidate:
    """One transport under measurement: started for a round, its listeners added, stopped after."""

    name = ""

    def start(self) -> None:
        raise NotImplementedError

    def server(self) -> psutil.Process | None:
        raise NotImplementedError

    def clicks(self) -> list[dict[str, float]]:
        """Every click played so far: {"wall": ms since the epoch, "delay_ms"}."""
        raise NotImplementedError

    def received_bytes(self) -> float:
        """Bytes the measured listener received so far."""
        raise NotImplementedError

    def add_listeners(self, count: int) -> None:
        raise NotImplementedError

    def alive(self) -> None:
        """Raises when a process of the candidate died."""

    def stop(self) -> None:
        raise NotImplementedError


class WebRtcCandidate(Candidate):
    """The aiortc server fed by a hub listen session (or its own synthetic source), and its page in Chromium."""

    def __init__(self, bench: Bench, mode: str) -> None:
        self.bench = bench
        self.mode = mode
        self.name = f"webrtc-{mode}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.process: psutil.Process | None = None
        self.page: Any = None
        self.session: dict[str, Any] | None = None
        self.log_path = bench.temp_dir / f"{self.name}.log"
        self.port = 0

    def start(self) -> None:
        self.port = port = free_port()
        self.log_path = self.bench.temp_dir / f"{self.name}-{port}.log"
        args = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port), "--mode", self.mode]
        args += ["--period", f"{self.bench.args.period:g}"]
        if not self.bench.args.synthetic:
            self.session = self.bench.open_session()
            args += ["--source", self.bench.ws_url(self.session), "--token", self.bench.token]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        self.process = psutil.Process(self.proc.pid)
        ready = f"HARK_WEBRTC_READY {port}".encode()
        wait_until(lambda: ready in self.log_path.read_bytes(), SERVER_READY_TIMEOUT_S, "the aiortc server", self.alive)
        self.page = self.bench.new_page()
        self.page.goto(f"http://127.0.0.1:{port}/")
        state = self.page.evaluate("setupAudio()")
        if state != "running":
            raise RuntimeError(f"the page's AudioContext is {state}, not running")
        self.page.evaluate("addPeer(true)")

    def server(self) -> psutil.Process | None:
        return self.process

    def clicks(self) -> list[dict[str, float]]:
        return list(self.page.evaluate("window.bench.clicks"))

    def peers(self) -> list[dict[str, Any]]:
        return list(self.page.evaluate("received()"))

    def received_bytes(self) -> float:
        peers = self.peers()
        return float(peers[0]["bytes"]) if peers else 0.0

    def add_listeners(self, count: int) -> None:
        for _ in range(count):
            self.page.evaluate("addPeer(false)")
        wait_until(
            lambda: all(p["packets"] > 0 for p in self.peers()), 30, f"{count} more WebRTC peers to receive audio", self.alive
        )

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the aiortc server exited with {self.proc.returncode}:\n{log_tail(self.log_path)}")
        if self.page is not None:
            errors = self.page.evaluate("window.bench.errors")
            if errors:
                raise RuntimeError(f"the WebRTC page failed: {errors}")

    def stop(self) -> None:
        if self.page is not None:
            with contextlib.suppress(Exception):
                self.page.evaluate("closeAll()")
            with contextlib.suppress(Exception):
                self.page.close()
            self.page = None
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self.session is not None:
            self.bench.end_session(self.session)
            self.session = None


class WebSocketCandidate(Candidate):
    """The product: a listen session played by the console's player in Chromium; more listeners are plain clients."""

    name = "websocket"

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.page: Any = None
        self.readers: list[StreamReader] = []

    def start(self) -> None:
        self.page = self.bench.console_player("opus", timeout_s=FIRST_CLICK_TIMEOUT_S)

    def server(self) -> psutil.Process | None:
        return self.bench.hub_process()

    def clicks(self) -> list[dict[str, float]]:
        period_ms = self.bench.args.period * 1000
        played = self.page.evaluate("window.harkListen.clicks")
        # The click's instant: the whole period its capture time stamps (the node's ring may stamp it a hair early).
        return [
            {"wall": c["played_ms"], "delay_ms": c["played_ms"] - round(c["capture_ms"] / period_ms) * period_ms} for c in played
        ]

    def received_bytes(self) -> float:
        return float(self.page.evaluate("window.harkListen.bytes"))

    def add_listeners(self, count: int) -> None:
        for _ in range(count):
            reader = StreamReader(self.bench, self.bench.open_session())
            reader.start()
            self.readers.append(reader)
        wait_until(
            lambda: all(r.bytes > 0 for r in self.readers), 30, f"{count} more WebSocket listeners to receive audio", self.alive
        )

    def alive(self) -> None:
        if self.page is not None:
            state, error = self.page.evaluate("[window.harkListen.state, window.harkListen.error]")
            if state not in ("starting", "playing"):
                raise RuntimeError(f"the console's player is {state}: {error}")
        failed = [r.error for r in self.readers if r.error]
        if failed:
            raise RuntimeError(f"a WebSocket listener failed: {failed[0]}")

    def stop(self) -> None:
        for reader in self.readers:
            reader.halt()
        self.readers = []
        if self.page is not None:
            self.bench.stop_console_player(self.page)  # Stop ends the session at the hub
            self.page = None


class Bench(ListenFleet):
    """The hub, the node and Chromium (bench/listen_common.py), and the rounds measured on them."""

    def __init__(self, args: argparse.Namespace, temp_dir: Path) -> None:
        super().__init__(temp_dir)
        self.args = args

    def open_session(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A listen session in the bench's format (opus, mono) unless `body` says otherwise."""
        return super().open_session(body or {"channels": [0], "codec": "opus", "bitrate": BITRATE, "sample_rate": SAMPLE_RATE})

    # the rounds

    def candidate(self, subject: str) -> Candidate:
        if subject == "websocket":
            return WebSocketCandidate(self)
        return WebRtcCandidate(self, subject.removeprefix("webrtc-"))

    def window(self, candidate: Candidate, listeners: int, seconds: float) -> Phase:
        phase = Phase(listeners)
        server, hub = candidate.server(), self.hub_process()
        wall0, start = time.time() * 1000, time.monotonic()
        cpu0, hub0, bytes0 = cpu_s(server), cpu_s(hub), candidate.received_bytes()
        while time.monotonic() - start < seconds:
            time.sleep(min(0.5, max(0.0, seconds - (time.monotonic() - start))))
            candidate.alive()
            self.alive()
        phase.seconds = time.monotonic() - start
        phase.server_cpu_s, phase.hub_cpu_s = cpu_s(server) - cpu0, cpu_s(hub) - hub0
        phase.bytes = candidate.received_bytes() - bytes0
        wall1 = time.time() * 1000
        phase.delays_ms = [c["delay_ms"] for c in candidate.clicks() if wall0 <= c["wall"] < wall1]
        return phase

    def run_round(self, subject: str, number: int) -> Round:
        result = Round(subject, number)
        candidate = self.candidate(subject)
        try:
            candidate.start()
            wait_until(candidate.clicks, FIRST_CLICK_TIMEOUT_S, f"the first click through {subject}", candidate.alive, 0.25)
            time.sleep(WARMUP_S)
            one = self.window(candidate, 1, self.args.seconds)
            candidate.add_listeners(self.args.listeners - 1)
            time.sleep(SETTLE_S)
            many = self.window(candidate, self.args.listeners, max(5.0, self.args.seconds / 2))
        finally:
            candidate.stop()
        expected = one.seconds / self.args.period
        figures = {
            "p50_ms": statistics.median(one.delays_ms) if one.delays_ms else float("nan"),
            "p95_ms": percentile(one.delays_ms, 0.95),
            "max_ms": max(one.delays_ms, default=float("nan")),
            "spread_ms": percentile(one.delays_ms, 0.95) - percentile(one.delays_ms, 0.5),
            "p95_many_ms": percentile(many.delays_ms, 0.95),
            "clicks_missed": max(0.0, round(expected) - len(one.delays_ms)),
            "cpu_1_pct": one.cpu_pct(),
            "cpu_many_pct": many.cpu_pct(),
            "cpu_many_per_listener_pct": many.cpu_pct() / many.listeners,
            "cpu_extra_listener_pct": (many.cpu_pct() - one.cpu_pct()) / (many.listeners - 1),
            "hub_1_pct": one.hub_pct(),
            "hub_many_pct": many.hub_pct(),
            "bytes_per_s": one.bytes / one.seconds,
        }
        result.done(**figures)
        print(
            f"  round {number + 1} {subject:16} p50 {figures['p50_ms']:6.1f} ms  p95 {figures['p95_ms']:6.1f} ms"
            f"  (p95 with {many.listeners}: {figures['p95_many_ms']:6.1f})  clicks {len(one.delays_ms)}/{round(expected)}"
            f"  cpu {figures['cpu_1_pct']:5.2f} % / {figures['cpu_many_pct']:5.2f} % with {many.listeners}"
            f"  {figures['bytes_per_s'] / 1000:5.2f} kB/s  load {result.load_before:.2f}->{result.load_after:.2f}",
            flush=True,
        )
        return result


def report(rounds: list[Round], subjects: list[str], args: argparse.Namespace) -> None:
    rows = [
        ("delay p50 (1 listener)", "p50_ms", "{:.0f}", "ms"),
        ("delay p95 (1 listener)", "p95_ms", "{:.0f}", "ms"),
        ("delay max (1 listener)", "max_ms", "{:.0f}", "ms"),
        ("delay p95 - p50 in a round (steadiness)", "spread_ms", "{:.0f}", "ms"),
        (f"delay p95 ({args.listeners} listeners)", "p95_many_ms", "{:.0f}", "ms"),
        ("clicks missed (1 listener)", "clicks_missed", "{:.0f}", ""),
        ("server CPU, 1 listener", "cpu_1_pct", "{:.2f}", "% core"),
        (f"server CPU, {args.listeners} listeners", "cpu_many_pct", "{:.2f}", "% core"),
        (f"server CPU per listener at {args.listeners}", "cpu_many_per_listener_pct", "{:.2f}", "% core"),
        (f"server CPU per extra listener (1->{args.listeners})", "cpu_extra_listener_pct", "{:.2f}", "% core"),
        ("hub CPU, 1 listener", "hub_1_pct", "{:.2f}", "% core"),
        (f"hub CPU, {args.listeners} listeners", "hub_many_pct", "{:.2f}", "% core"),
        ("bytes/s per listener", "bytes_per_s", "{:,.0f}", "B/s"),
    ]
    width = max(len(label) for label, *_ in rows)
    print()
    print(f"{'median (min-max) of ' + str(args.rounds) + ' rounds':{width}}  " + "  ".join(f"{s:>26}" for s in subjects))
    for label, key, fmt, unit in rows:
        cells = [summarize(rounds, s, key).text(fmt, unit) for s in subjects]
        print(f"{label:{width}}  " + "  ".join(f"{c:>26}" for c in cells))
    print(
        "server = the process that serves the listeners: the hub for websocket, the aiortc process for webrtc-* (which is "
        f"itself one WebSocket listener of the hub: hub CPU above); {load_text(rounds)}"
    )
    aliased = [s for s in subjects if s.startswith("webrtc") and summarize(rounds, s, "max_ms").high > 0.8 * args.period * 1000]
    if aliased:
        print(f"WARNING: a WebRTC delay came close to the click period ({args.period:g} s): run with a longer --period")
    print(conclusion(rounds, subjects, args))


def conclusion(rounds: list[Round], subjects: list[str], args: argparse.Namespace) -> str:
    """Which transport wins: the lower delay (p95; a tie while the rounds' ranges overlap), then the lower cost of
    each further listener (the serving process's CPU from 1 to N listeners, over N - 1)."""
    p95 = {s: summarize(rounds, s, "p95_ms") for s in subjects}
    extra = {s: summarize(rounds, s, "cpu_extra_listener_pct").median for s in subjects}
    rate = {s: summarize(rounds, s, "bytes_per_s").median for s in subjects}
    parts = [f"{s} p95 {p95[s].median:.0f} ms, {extra[s]:.2f} % core/extra listener, {rate[s] / 1000:.1f} kB/s" for s in subjects]
    if "websocket" not in subjects or len(subjects) < 2:
        return "conclusion: " + "; ".join(parts)
    ws = p95["websocket"]
    others = [s for s in subjects if s != "websocket"]
    faster = [s for s in others if p95[s].high < ws.low]
    slower = [s for s in others if p95[s].low > ws.high]
    cheaper = all(extra["websocket"] <= extra[s] for s in others)
    if not faster and cheaper:
        delay = (
            f"a lower p95 delay than {', '.join(slower)}"
            if slower
            else "a p95 delay whose range overlaps WebRTC's (neither is lower beyond the rounds' spread)"
        )
        if len(slower) < len(others) and slower:
            delay += ", and within the range of the others"
        verdict = f"the WebSocket player wins: {delay}, and the least CPU per further listener"
    elif faster and cheaper:
        verdict = f"{', '.join(faster)} has the lower delay, the WebSocket player the lower cost per listener"
    else:
        verdict = "WebRTC wins on these figures"
    why = (
        "; the hub relays the node's bytes unchanged (no decoder, no encoder, no second process), and the chunks keep "
        "the sequence numbers and capture times the player shows gaps and delay from, which WebRTC does not carry"
        if verdict.startswith("the WebSocket")
        else ""
    )
    spread = {s: summarize(rounds, s, "spread_ms").median for s in subjects}
    steadier = [s for s in others if spread[s] + 20 < spread["websocket"]]
    if steadier:
        why += (
            f"; {', '.join(steadier)} plays at a steadier delay (p95 - p50 {spread[steadier[0]]:.0f} ms against "
            f"{spread['websocket']:.0f} ms: Chromium's NetEq holds its buffer where the player's worklet lets it float)"
        )
    reencode = ""
    if "webrtc-reencode" in subjects and "webrtc-pass" in subjects and extra["webrtc-pass"] > 0:
        reencode = f"; re-encoding per listener costs {extra['webrtc-reencode'] / extra['webrtc-pass']:.1f}x the pass-through"
    return f"conclusion: {verdict}{why}{reencode} ({'; '.join(parts)})"


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    subjects = [s for s in SUBJECTS if s in args.only.split(",")] if args.only else list(SUBJECTS)
    if args.synthetic:
        subjects = [s for s in subjects if s != "websocket"]
    if not subjects:
        print(f"nothing to measure: --only takes {', '.join(SUBJECTS)}", file=sys.stderr)
        return 2
    from playwright.sync_api import Error as PlaywrightError

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    load_at_start = load_average()
    warning = busy_warning(load_at_start)
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-listen-webrtc-"))
    bench = Bench(args, temp_dir)
    rounds: list[Round] = []
    try:
        print(
            f"hark live listen: WebSocket player vs WebRTC (aiortc), opus {BITRATE // 1000} kbit/s {SAMPLE_RATE} Hz mono",
            flush=True,
        )
        print(
            f"load before start {load_at_start:.2f}; {args.rounds} rounds of {args.seconds:g} s"
            f" + {max(5.0, args.seconds / 2):g} s with {args.listeners} listeners",
            flush=True,
        )
        if warning:
            print(warning, flush=True)
        if not args.synthetic:
            bench.start_fleet(f"synthetic:click?period={args.period:g}&channels=1&rate={SAMPLE_RATE}")
        bench.start_browser(("--disable-features=WebRtcHideLocalIpsWithMdns",))
        for number, subject in alternate(subjects, args.rounds):
            try:
                rounds.append(bench.run_round(subject, number))
            except (RuntimeError, PlaywrightError) as err:
                raise RuntimeError(f"round {number + 1}, {subject}: {err}") from None
        report(rounds, subjects, args)
        if warning:
            print(warning)
        return 0
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help=f"rounds (default {MIN_ROUNDS}, at least {MIN_ROUNDS})")
    parser.add_argument("--seconds", type=float, default=20.0, help="the 1-listener window of a round (default 20)")
    parser.add_argument("--listeners", type=int, default=10, help="listeners of the second window (default 10)")
    parser.add_argument("--period", type=float, default=0.5, help="seconds between the node's clicks (default 0.5)")
    parser.add_argument("--only", default="", help=f"a comma-separated subset of {','.join(SUBJECTS)}")
    parser.add_argument("--synthetic", action="store_true", help="WebRTC only, fed by the server's own Opus clicks")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("pass", "reencode"), default="pass", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve, args.mode, args.source, args.token, args.period)
    if args.listeners < 2 or args.period <= 0 or args.seconds <= 0:
        parser.error("--listeners must be at least 2, --period and --seconds positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
