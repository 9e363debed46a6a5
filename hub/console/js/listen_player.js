// The live listen player: opens a listen session on the hub, reads its WebSocket of binary chunks
// (the layout of provision/protocol/listen.py), decodes Opus with WebCodecs' AudioDecoder (PCM16 in
// script) and plays through an AudioWorklet (listen_worklet.js) from a small jitter buffer. The worklet
// says which capture time it plays at which context frame; the frame is mapped to wall time through
// AudioContext.getOutputTimestamp(), so the delay shown is playback wall time minus capture time.
// A dropped socket is reopened (same session, within the hub's grace) and playback resyncs.
// `window.harkListen` carries the figures for tests.
import { api } from "./api.js";

const MAGIC = [0x48, 0x4b, 0x4c, 0x31]; // "HKL1"
const HEADER_BYTES = 26;
const CODECS = { 1: "opus", 2: "pcm16" };
const FLAG_DISCONTINUITY = 0x01;
const TARGET_MS = 60; // the jitter buffer on a quiet network
const MAX_TARGET_MS = 250;
const JITTER_WINDOW_MS = 5000;
const JITTER_MARGIN_MS = 20;
const BACKOFF_MS = [250, 500, 1000, 2000, 3000];
const MAX_RECONNECTS = 20;
const KEEP = 3000; // delays kept for the figures
const RATE_WINDOW_MS = 3000;

/** A chunk's header and frames (views into `buffer`); throws an Error saying what is wrong. */
export function parseChunk(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < HEADER_BYTES) throw new Error(`${buffer.byteLength} bytes: shorter than a chunk header`);
  for (let i = 0; i < 4; i++) if (view.getUint8(i) !== MAGIC[i]) throw new Error("not a listen chunk (bad magic)");
  const codec = CODECS[view.getUint8(4)];
  if (!codec) throw new Error(`unknown codec ${view.getUint8(4)}`);
  const chunk = {
    codec,
    channels: view.getUint8(5),
    frameMs: view.getUint8(6),
    flags: view.getUint8(7),
    sampleRate: view.getUint32(8, true),
    seq: view.getUint32(12, true),
    captureUs: Number(view.getBigUint64(16, true)),
    frames: [],
  };
  const count = view.getUint16(24, true);
  let at = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (at + 2 > buffer.byteLength) throw new Error("truncated: a frame length is missing");
    const length = view.getUint16(at, true);
    at += 2;
    if (!length || at + length > buffer.byteLength) throw new Error("truncated or empty frame");
    chunk.frames.push(new Uint8Array(buffer, at, length));
    at += length;
  }
  if (at !== buffer.byteLength) throw new Error(`${buffer.byteLength - at} bytes after the last frame`);
  chunk.discontinuity = Boolean(chunk.flags & FLAG_DISCONTINUITY);
  return chunk;
}

/** Interleaved little-endian 16-bit PCM as one Float32Array per channel. */
export function pcm16ToFloat(bytes, channels) {
  const samples = new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const frames = Math.floor(samples.length / channels);
  const out = Array.from({ length: channels }, () => new Float32Array(frames));
  for (let i = 0; i < frames; i++) for (let c = 0; c < channels; c++) out[c][i] = samples[i * channels + c] / 32768;
  return out;
}

/** Each channel taken to another rate by linear interpolation (only when the decoder's rate is not the context's). */
function resample(data, from, to) {
  if (from === to) return data;
  return data.map((src) => {
    const n = Math.max(1, Math.round((src.length * to) / from));
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = (i * from) / to;
      const j = Math.floor(x);
      const a = src[Math.min(j, src.length - 1)];
      const b = src[Math.min(j + 1, src.length - 1)];
      out[i] = a + (b - a) * (x - j);
    }
    return out;
  });
}

export class ListenPlayer {
  /** `onChange(stats)` is called when anything shown changes (at most every report). */
  constructor(nodeId, { onChange = () => {} } = {}) {
    this.nodeId = nodeId;
    this.onChange = onChange;
    this.ctx = null;
    this.socket = null;
    this.decoder = null;
    this.session = null;
    this.format = null;
    this.expectedSeq = null;
    this.closing = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.received = []; // [ms, bytes] within RATE_WINDOW_MS
    this.lateness = []; // [ms, arrival minus capture of the chunk's end] within JITTER_WINDOW_MS
    this.stats = {
      state: "idle", session_id: null, codec: null, delays_ms: [], clicks: [], gaps: 0, lost_frames: 0,
      underruns: 0, resyncs: 0, bytes: 0, bytes_per_s: 0, level_dbfs: null, peak_dbfs: null, reconnects: 0,
      listeners: null, buffered_ms: null, target_ms: TARGET_MS, delay_ms: null, end_reason: null, error: null, playing_since_ms: null, underrun_at: [],
    };
    window.harkListen = this.stats;
    window.harkListenPlayer = this; // tests drop its socket as a network would
  }

  /**
   * Start: must be called from the click that asks for it (the AudioContext is made before any wait).
   * `request`: the body of POST /nodes/{id}/listen ({channels} or {programme}, codec, sample_rate, bitrate).
   */
  async start(request) {
    const rate = request.sample_rate ?? 48000;
    this.ctx = new AudioContext({ sampleRate: rate, latencyHint: "interactive" });
    this.set({ state: "starting", codec: request.codec ?? "opus" });
    try {
      const resumed = this.ctx.resume();
      await this.ctx.audioWorklet.addModule("/console/js/listen_worklet.js");
      await resumed;
      this.worklet = new AudioWorkletNode(this.ctx, "hark-listen", {
        numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [2],
        processorOptions: { targetMs: TARGET_MS },
      });
      this.worklet.port.onmessage = (event) => this.fromWorklet(event.data);
      this.worklet.connect(this.ctx.destination);
      const { data } = await api(`/api/v1/nodes/${encodeURIComponent(this.nodeId)}/listen`, { method: "POST", body: request });
      this.session = data;
      this.set({ session_id: data.id, codec: data.codec });
      if (this.closing) return;
      this.connect();
    } catch (err) {
      this.set({ state: "failed", error: err.message });
      this.teardown();
      throw err;
    }
  }

  /** Stop listening: close the socket and end the session at the hub. */
  async stop() {
    if (this.closing) return;
    this.closing = true;
    const session = this.session;
    this.teardown();
    if (this.stats.state !== "ended") this.set({ state: "stopped" });
    if (session && this.stats.end_reason === null) {
      try {
        await api(`/api/v1/nodes/${encodeURIComponent(this.nodeId)}/listen/${encodeURIComponent(session.id)}`, { method: "DELETE" });
      } catch { /* already ended at the hub */ }
    }
  }

  teardown() {
    clearTimeout(this.retryTimer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000);
      this.socket = null;
    }
    this.closeDecoder();
    this.worklet?.port.postMessage({ type: "stop" });
    this.ctx?.close().catch(() => {});
  }

  set(changes) {
    Object.assign(this.stats, changes);
    this.onChange(this.stats);
  }

  // -- the socket ------------------------------------------------------------------------------

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${this.session.stream_url}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onmessage = (event) => {
      if (typeof event.data === "string") this.text(event.data);
      else this.chunk(event.data);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (!this.closing) this.retry();
    };
  }

  text(raw) {
    let message;
    try { message = JSON.parse(raw); } catch { return; }
    if (message.type === "hello") {
      this.attempt = 0;
      this.format = { codec: message.codec, sampleRate: message.sample_rate, channels: message.channels };
      // A new connection: whatever was buffered is old, the sequence may start again.
      this.expectedSeq = null;
      this.lateness = [];
      this.worklet.port.postMessage({ type: "reset" });
      this.closeDecoder();
      this.set({ state: "playing", playing_since_ms: this.stats.playing_since_ms ?? Date.now() });
    } else if (message.type === "stats") {
      this.set({ listeners: message.listeners ?? null });
    } else if (message.type === "end") {
      this.finish(message.reason ?? "ended");
    }
  }

  /** The hub ended the session: nothing to delete, nothing to reconnect. */
  finish(reason) {
    this.closing = true;
    this.teardown();
    this.set({ state: "ended", end_reason: reason });
  }

  /** The socket went away without a Stop: ask the hub about the session, then reopen it after a pause. */
  retry() {
    if (this.attempt >= MAX_RECONNECTS) {
      this.set({ state: "failed", error: "The stream could not be reopened." });
      this.closing = true;
      this.teardown();
      return;
    }
    const wait = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.set({ state: "reconnecting" });
    this.retryTimer = setTimeout(async () => {
      try {
        const { data } = await api(`/api/v1/listen-sessions/${encodeURIComponent(this.session.id)}`);
        if (data.state === "terminated") return this.finish(data.end_reason ?? "ended");
      } catch (err) {
        if (err.status === 404) return this.finish("ended");
      }
      if (this.closing) return;
      this.set({ reconnects: this.stats.reconnects + 1 });
      this.connect();
    }, wait);
  }

  // -- audio -----------------------------------------------------------------------------------

  chunk(buffer) {
    const now = performance.now();
    this.received.push([now, buffer.byteLength]);
    while (this.received.length && this.received[0][0] < now - RATE_WINDOW_MS) this.received.shift();
    this.stats.bytes += buffer.byteLength;
    let chunk;
    try { chunk = parseChunk(buffer); } catch { return; }
    if (this.expectedSeq !== null && chunk.seq !== this.expectedSeq) {
      if (chunk.seq > this.expectedSeq) {
        this.stats.gaps += 1;
        this.stats.lost_frames += chunk.seq - this.expectedSeq;
      }
    }
    this.expectedSeq = chunk.seq + chunk.frames.length;
    this.adapt(now, Date.now() - chunk.captureUs / 1000 - chunk.frames.length * chunk.frameMs);
    chunk.frames.forEach((frame, i) => {
      const captureUs = chunk.captureUs + i * chunk.frameMs * 1000;
      if (chunk.codec === "pcm16") this.play(pcm16ToFloat(frame, chunk.channels), chunk.sampleRate, captureUs);
      else this.decode(chunk, frame, captureUs);
    });
  }

  /**
   * The jitter buffer follows the network: its target is the spread of the chunks' lateness over the last
   * seconds plus a margin (60 ms at least, 250 at most); the worklet drops what exceeds it.
   */
  adapt(now, lateness) {
    this.lateness.push([now, lateness]);
    while (this.lateness[0][0] < now - JITTER_WINDOW_MS) this.lateness.shift();
    let low = Infinity;
    let high = -Infinity;
    for (const [, value] of this.lateness) { low = Math.min(low, value); high = Math.max(high, value); }
    const target = Math.round(Math.min(MAX_TARGET_MS, Math.max(TARGET_MS, high - low + JITTER_MARGIN_MS)));
    if (Math.abs(target - this.stats.target_ms) >= 10) {
      this.stats.target_ms = target;
      this.worklet.port.postMessage({ type: "target", ms: target });
    }
  }

  decode(chunk, frame, captureUs) {
    if (!this.decoder) {
      if (typeof AudioDecoder === "undefined") {
        this.set({ state: "failed", error: "This browser cannot decode Opus (no WebCodecs): choose PCM16." });
        return;
      }
      this.decoder = new AudioDecoder({
        output: (audio) => this.decoded(audio),
        error: (err) => this.set({ error: `Opus decoding failed: ${err.message}` }),
      });
      this.decoder.configure({ codec: "opus", sampleRate: chunk.sampleRate, numberOfChannels: chunk.channels });
    }
    this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: captureUs, duration: chunk.frameMs * 1000, data: frame }));
  }

  decoded(audio) {
    try {
      const data = [];
      for (let c = 0; c < audio.numberOfChannels; c++) {
        const plane = new Float32Array(audio.numberOfFrames);
        audio.copyTo(plane, { planeIndex: c, format: "f32-planar" });
        data.push(plane);
      }
      this.play(data, audio.sampleRate, audio.timestamp);
    } finally {
      audio.close();
    }
  }

  play(data, rate, captureUs) {
    if (!this.ctx || this.closing) return;
    const pcm = resample(data, rate, this.ctx.sampleRate);
    this.worklet.port.postMessage({ type: "pcm", data: pcm, captureUs }, pcm.map((a) => a.buffer));
  }

  closeDecoder() {
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    this.decoder = null;
  }

  // -- what the worklet plays ----------------------------------------------------------------------

  /**
   * The wall time (ms since the epoch) at which context frame `frame` leaves the output. The output
   * timestamp pairs the context time at the output device with its performance time (Chromium's lags
   * currentTime by the output latency already); without one, currentTime plus the stated latencies.
   */
  wallAt(frame) {
    const ctx = this.ctx;
    const t = frame / ctx.sampleRate;
    const stamp = ctx.getOutputTimestamp?.();
    if (stamp && stamp.performanceTime > 0) {
      return performance.timeOrigin + stamp.performanceTime + (t - stamp.contextTime) * 1000;
    }
    const latency = (ctx.baseLatency || 0) + (ctx.outputLatency || 0);
    return performance.timeOrigin + performance.now() + (t - ctx.currentTime + latency) * 1000;
  }

  fromWorklet(message) {
    if (!this.ctx || this.ctx.state === "closed") return;
    if (message.type === "position") {
      const changes = { level_dbfs: message.rmsDbfs, peak_dbfs: message.peakDbfs, underruns: message.underruns, buffered_ms: message.bufferedMs };
      if (message.captureUs !== null) {
        const delay = this.wallAt(message.frame) - message.captureUs / 1000;
        this.stats.delays_ms.push(delay);
        if (this.stats.delays_ms.length > KEEP) this.stats.delays_ms.splice(0, this.stats.delays_ms.length - KEEP);
        changes.delay_ms = delay;
      }
      const [first] = this.received;
      const span = first ? (performance.now() - first[0]) / 1000 : 0;
      changes.bytes_per_s = span > 0.5 ? this.received.reduce((n, [, b]) => n + b, 0) / span : 0;
      this.set(changes);
    } else if (message.type === "click") {
      this.stats.clicks.push({ capture_ms: message.captureUs / 1000, played_ms: this.wallAt(message.frame) });
    } else if (message.type === "underrun") {
      this.stats.underruns = message.underruns;
      this.stats.underrun_at.push(Date.now());
    } else if (message.type === "resync") {
      this.stats.resyncs = message.resyncs;
    }
  }
}
