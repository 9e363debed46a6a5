// The live listen player: opens a listen session on the hub, and plays it. A worker (listen_stream.js) reads
// the session's WebSocket of binary chunks, decodes them and posts the PCM straight to an AudioWorklet
// (listen_worklet.js) that plays from a small jitter buffer: nothing the page does delays the audio. The
// worklet says which capture time it plays at which context frame; the frame is mapped to wall time through
// AudioContext.getOutputTimestamp(), so the delay shown is playback wall time minus capture time. A dropped
// socket is reopened (same session, within the hub's grace) and playback resyncs.
// `window.harkListen` carries the figures for tests.
import { api } from "./api.js";

const BACKOFF_MS = [250, 500, 1000, 2000, 3000];
const MAX_RECONNECTS = 20;
const KEEP = 3000; // delays kept for the figures

export class ListenPlayer {
  /** `onChange(stats)` is called when anything shown changes (at most every report). */
  constructor(nodeId, { onChange = () => {} } = {}) {
    this.nodeId = nodeId;
    this.onChange = onChange;
    this.ctx = null;
    this.worker = null;
    this.worklet = null;
    this.session = null;
    this.connected = false;
    this.closing = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.stats = {
      state: "idle", session_id: null, codec: null, delays_ms: [], clicks: [], gaps: 0, lost_frames: 0,
      underruns: 0, resyncs: 0, bytes: 0, bytes_per_s: 0, level_dbfs: null, peak_dbfs: null, reconnects: 0,
      listeners: null, buffered_ms: null, target_ms: null, delay_ms: null, end_reason: null, error: null,
      playing_since_ms: null, underrun_at: [],
    };
    window.harkListen = this.stats;
    window.harkListenPlayer = this; // tests drop its socket as a network would (dropSocket)
  }

  /**
   * Start: must be called from the click that asks for it (the AudioContext is made before any wait).
   * `request`: the body of POST /nodes/{id}/listen ({channels} or {programme}, codec, sample_rate, bitrate).
   */
  async start(request) {
    if (!window.isSecureContext || typeof AudioWorkletNode === "undefined") {
      // Browsers offer AudioWorklet and WebCodecs only to secure pages: https, or this machine's own address.
      this.set({ state: "failed", error: "live listen needs the console over HTTPS (or opened on the hub's own machine): "
        + "browsers play low-delay audio only on secure pages. Give the hub TLS (see Certificates and TLS)." });
      throw new Error(this.stats.error);
    }
    const rate = request.sample_rate ?? 48000;
    this.ctx = new AudioContext({ sampleRate: rate, latencyHint: "interactive" });
    this.set({ state: "starting", codec: request.codec ?? "opus" });
    try {
      const resumed = this.ctx.resume();
      await this.ctx.audioWorklet.addModule("/console/js/listen_worklet.js");
      await resumed;
      this.worklet = new AudioWorkletNode(this.ctx, "hark-listen", { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [2] });
      this.worklet.port.onmessage = (event) => this.fromWorklet(event.data);
      this.worklet.connect(this.ctx.destination);
      this.worker = new Worker("/console/js/listen_stream.js", { type: "module" });
      this.worker.onmessage = (event) => this.fromWorker(event.data);
      this.worker.onerror = (event) => this.set({ error: `The listen worker failed: ${event.message}` });
      const pipe = new MessageChannel();
      this.worklet.port.postMessage({ type: "port", port: pipe.port1 }, [pipe.port1]);
      this.worker.postMessage({ type: "init", port: pipe.port2, sampleRate: this.ctx.sampleRate }, [pipe.port2]);
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

  /** Close the socket as a network drop would (the player reconnects): for tests. */
  dropSocket() {
    this.worker?.postMessage({ type: "drop" });
  }

  teardown() {
    clearTimeout(this.retryTimer);
    if (this.worker) {
      this.worker.postMessage({ type: "close" });
      const worker = this.worker;
      setTimeout(() => worker.terminate(), 500); // after its socket's close frame went out
      this.worker = null;
    }
    this.worklet?.port.postMessage({ type: "stop" });
    this.ctx?.close().catch(() => {});
  }

  set(changes) {
    Object.assign(this.stats, changes);
    this.onChange(this.stats);
  }

  // -- the socket (in the worker) ---------------------------------------------------------------

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.worker.postMessage({ type: "open", url: `${scheme}//${location.host}${this.session.stream_url}` });
  }

  fromWorker(message) {
    if (this.closing) return;
    if (message.type === "text") this.text(message.message);
    else if (message.type === "closed") this.retry();
    else if (message.type === "stats") {
      const { decode_error: error, ...figures } = message.figures;
      this.set(error ? { ...figures, error } : figures);
    }
  }

  text(message) {
    if (message.type === "hello") {
      this.attempt = 0;
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
      this.closing = true;
      this.teardown();
      this.set({ state: "failed", error: "The stream could not be reopened." });
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
      this.set(changes);
    } else if (message.type === "click") {
      this.stats.clicks.push({ capture_ms: message.captureUs / 1000, played_ms: this.wallAt(message.frame) });
    } else if (message.type === "underrun") {
      this.stats.underruns = message.underruns;
      this.stats.underrun_at.push(Date.now());
      this.stats.underrun_gaps_ms = (this.stats.underrun_gaps_ms ?? []).concat(Math.round(message.sinceMs));
    } else if (message.type === "resync") {
      this.stats.resyncs = message.resyncs;
    }
  }
}
