// The live listen's audio thread: plays decoded PCM from a small jitter buffer and says what it plays.
// Blocks arrive from the stream worker (listen_stream.js) as Float32Arrays per channel at the context's rate, with
// the capture time of their first sample. Playback starts once `target` of audio is buffered (the page
// raises it when the network is jittery, from ~60 ms); an underrun (nothing left mid-quantum) is counted
// and playback waits for `target` again. The buffer is kept near `target`: at a (re)start, when it grows
// past `target` + SLACK_MAX_S (a burst), and when it stayed above `target` + SLACK_DRIFT_S for a whole
// second, the oldest audio is dropped (a resync). About every REPORT_S it posts the capture time of the
// sample at its output with the context frame it is played at (the page maps that frame to wall time) and
// the played level; and any click it hears: the first sample above CLICK_ON once QUIET_S stayed below QUIET
// (the synthetic click source's clicks; samples between the two, a codec's smeared edge, do not disarm it).

const CLICK_ON = 0.1;
const QUIET = 0.05;
const QUIET_S = 0.1;
const REPORT_S = 0.05;
const SLACK_MAX_S = 0.14;
const SLACK_DRIFT_S = 0.03;
const DRIFT_WINDOW_S = 1;

class ListenProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options?.processorOptions ?? {};
    this.setTarget(o.targetMs ?? 60);
    this.low = Infinity; // the least buffered at a quantum's start within the drift window
    this.lowFrames = 0;
    this.armed = false;
    this.queue = []; // {data: Float32Array[], at, captureUs}
    this.buffered = 0;
    this.playing = false;
    this.stopped = false;
    this.underruns = 0;
    this.resyncs = 0;
    this.quiet = 0;
    this.quietNeeded = Math.round(QUIET_S * sampleRate);
    this.reportEvery = Math.round(REPORT_S * sampleRate);
    this.sinceReport = 0;
    this.sumSquares = 0;
    this.peak = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  setTarget(ms) {
    this.target = Math.round((ms / 1000) * sampleRate);
    this.max = this.target + Math.round(SLACK_MAX_S * sampleRate);
  }

  receive(message) {
    if (message.type === "port") {
      message.port.onmessage = (event) => this.receive(event.data); // the stream worker's PCM
    } else if (message.type === "pcm") {
      const frames = message.data[0]?.length ?? 0;
      if (!frames) return;
      this.queue.push({ data: message.data, at: 0, captureUs: message.captureUs });
      this.lastPcmFrame = currentFrame;
      this.buffered += frames;
      if (this.buffered > this.max) this.trim();
    } else if (message.type === "reset") {
      this.queue = [];
      this.buffered = 0;
      this.playing = false;
      this.quiet = 0;
      this.armed = false;
    } else if (message.type === "target") {
      this.setTarget(message.ms);
    } else if (message.type === "stop") {
      this.stopped = true;
    }
  }

  /** Drop `frames` of the oldest audio (by default down to `target`): the delay goes back to what it should be. */
  trim(frames = this.buffered - this.target) {
    const keep = this.buffered - frames;
    while (this.buffered > keep && this.queue.length) {
      const block = this.queue[0];
      const drop = Math.min(block.data[0].length - block.at, this.buffered - keep);
      block.at += drop;
      this.buffered -= drop;
      if (block.at >= block.data[0].length) this.queue.shift();
    }
    this.resyncs += 1;
    this.port.postMessage({ type: "resync", resyncs: this.resyncs });
  }

  process(inputs, outputs) {
    if (this.stopped) return false;
    const out = outputs[0];
    const n = out[0].length;
    let written = 0;
    let captureAtStart = null;
    if (!this.playing && this.buffered >= this.target) {
      this.playing = true;
      if (this.buffered > this.target + 128) this.trim();
      this.low = Infinity;
      this.lowFrames = 0;
    }
    if (this.playing) {
      this.low = Math.min(this.low, this.buffered);
      this.lowFrames += n;
      if (this.lowFrames >= DRIFT_WINDOW_S * sampleRate) {
        if (this.low > this.target + SLACK_DRIFT_S * sampleRate) this.trim(this.low - this.target);
        this.low = Infinity;
        this.lowFrames = 0;
      }
    }
    if (this.playing) {
      while (written < n && this.queue.length) {
        const block = this.queue[0];
        const length = block.data[0].length;
        const take = Math.min(n - written, length - block.at);
        const usPerFrame = 1e6 / sampleRate;
        if (written === 0) captureAtStart = block.captureUs + block.at * usPerFrame;
        for (let c = 0; c < out.length; c++) {
          const source = block.data[Math.min(c, block.data.length - 1)];
          out[c].set(source.subarray(block.at, block.at + take), written);
        }
        for (let i = 0; i < take; i++) this.listen(out, written + i, block.captureUs + (block.at + i) * usPerFrame);
        block.at += take;
        written += take;
        this.buffered -= take;
        if (block.at >= length) this.queue.shift();
      }
      if (written < n) {
        this.underruns += 1;
        this.playing = false;
        // How long since audio last came says whose delay it was: the network's (long) or this thread's catching up.
        const sinceMs = ((currentFrame - (this.lastPcmFrame ?? currentFrame)) / sampleRate) * 1000;
        this.port.postMessage({ type: "underrun", underruns: this.underruns, frame: currentFrame + written, sinceMs });
      }
    }
    for (let i = written; i < n; i++) this.listen(out, i, null);
    this.sinceReport += n;
    if (this.sinceReport >= this.reportEvery) {
      const rms = Math.sqrt(this.sumSquares / this.sinceReport);
      this.port.postMessage({
        type: "position",
        frame: currentFrame,
        captureUs: captureAtStart,
        rmsDbfs: rms > 0 ? 20 * Math.log10(rms) : null,
        peakDbfs: this.peak > 0 ? 20 * Math.log10(this.peak) : null,
        bufferedMs: (this.buffered / sampleRate) * 1000,
        underruns: this.underruns,
      });
      this.sinceReport = 0;
      this.sumSquares = 0;
      this.peak = 0;
    }
    return true;
  }

  /** Level and click detection on the sample at output index i (captureUs: its capture time, null for silence we made). */
  listen(out, i, captureUs) {
    let x = 0;
    for (let c = 0; c < out.length; c++) x = Math.max(x, Math.abs(out[c][i]));
    this.sumSquares += x * x;
    if (x > this.peak) this.peak = x;
    if (x > CLICK_ON) {
      if (this.armed && captureUs !== null) this.port.postMessage({ type: "click", frame: currentFrame + i, captureUs });
      this.armed = false;
      this.quiet = 0;
    } else if (x < QUIET) {
      this.quiet += 1;
      if (this.quiet >= this.quietNeeded) this.armed = true;
    } else {
      this.quiet = 0;
    }
  }
}

registerProcessor("hark-listen", ListenProcessor);
