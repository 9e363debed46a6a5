// The live listen's network side, in a worker so that nothing the page does (layout, charts, meters) delays
// the audio: the session's WebSocket, the chunks parsed and decoded (Opus through WebCodecs' AudioDecoder,
// PCM16 in script), the PCM posted straight to the AudioWorklet through a MessagePort, sequence gaps counted,
// and the jitter buffer's target set from the spread of the chunks' lateness. The page gets the socket's
// text messages, its closing, and the figures.
import { parseChunk, pcm16ToFloat, resample } from "./listen_chunks.js";

const TARGET_MS = 60; // the jitter buffer on a quiet network
const START_TARGET_MS = 100; // until a whole window of lateness says how jittery the network is
const MAX_TARGET_MS = 250;
const JITTER_WINDOW_MS = 5000;
const SETTLE_MS = 5000; // the start target holds this long
const WARM_UP_MS = 1000; // the connection's first chunks come irregularly: not the network's jitter
const JITTER_MARGIN_MS = 20;
const RATE_WINDOW_MS = 3000;
const STATS_EVERY_MS = 250;

let audio = null; // the port to the worklet
let contextRate = 48000;
let socket = null;
let decoder = null;
let expectedSeq = null;
let lateness = []; // [ms, arrival minus capture of the chunk's end]
let received = []; // [ms, bytes]
let target = START_TARGET_MS;
let firstAt = null; // when the connection's first chunk came
const figures = { bytes: 0, gaps: 0, lost_frames: 0, bytes_per_s: 0, target_ms: START_TARGET_MS, decode_error: null };
let statsAt = 0;

self.onmessage = (event) => {
  const message = event.data;
  if (message.type === "init") {
    audio = message.port;
    contextRate = message.sampleRate;
    audio.postMessage({ type: "target", ms: target });
  } else if (message.type === "open") {
    open(message.url);
  } else if (message.type === "drop" || message.type === "close") {
    if (socket) {
      if (message.type === "close") socket.onclose = null;
      socket.close(1000);
    }
    if (message.type === "close") closeDecoder();
  }
};

function open(url) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  socket = ws;
  ws.onmessage = (event) => {
    if (typeof event.data === "string") text(event.data);
    else chunk(event.data);
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    self.postMessage({ type: "closed", code: event.code });
  };
}

function text(raw) {
  let message;
  try { message = JSON.parse(raw); } catch { return; }
  if (message.type === "hello") {
    // A new connection: whatever was buffered is old, the sequence may start again.
    expectedSeq = null;
    lateness = [];
    firstAt = null;
    audio.postMessage({ type: "reset" });
    closeDecoder();
  }
  self.postMessage({ type: "text", message });
}

function chunk(buffer) {
  const now = performance.now();
  received.push([now, buffer.byteLength]);
  while (received[0][0] < now - RATE_WINDOW_MS) received.shift();
  figures.bytes += buffer.byteLength;
  let parsed;
  try { parsed = parseChunk(buffer); } catch { return; }
  if (expectedSeq !== null && parsed.seq > expectedSeq) {
    figures.gaps += 1;
    figures.lost_frames += parsed.seq - expectedSeq;
  }
  expectedSeq = parsed.seq + parsed.frames.length;
  adapt(now, Date.now() - parsed.captureUs / 1000 - parsed.frames.length * parsed.frameMs);
  parsed.frames.forEach((frame, i) => {
    const captureUs = parsed.captureUs + i * parsed.frameMs * 1000;
    if (parsed.codec === "pcm16") play(pcm16ToFloat(frame, parsed.channels), parsed.sampleRate, captureUs);
    else decode(parsed, frame, captureUs);
  });
  if (now - statsAt >= STATS_EVERY_MS) {
    statsAt = now;
    const span = (now - received[0][0]) / 1000;
    figures.bytes_per_s = span > 0.5 ? received.reduce((n, [, b]) => n + b, 0) / span : 0;
    self.postMessage({ type: "stats", figures });
  }
}

/**
 * The jitter buffer follows the network: its target covers the spread of the chunks' lateness over the last
 * seconds, one frame (the buffer drains a frame between arrivals) and a margin; 60 ms at least (100 for the
 * first seconds), 250 at most.
 */
function adapt(now, late) {
  firstAt ??= now;
  const floor = now - firstAt >= SETTLE_MS ? TARGET_MS : START_TARGET_MS;
  if (now - firstAt >= WARM_UP_MS) lateness.push([now, late]);
  if (!lateness.length) return;
  while (lateness[0][0] < now - JITTER_WINDOW_MS) lateness.shift();
  let low = Infinity;
  let high = -Infinity;
  for (const [, value] of lateness) { low = Math.min(low, value); high = Math.max(high, value); }
  const wanted = Math.round(Math.min(MAX_TARGET_MS, Math.max(floor, high - low + 20 + JITTER_MARGIN_MS)));
  if (Math.abs(wanted - target) >= 10 || (wanted > target && wanted - target >= 5)) {
    target = wanted;
    figures.target_ms = target;
    audio.postMessage({ type: "target", ms: target });
  }
}

function decode(parsed, frame, captureUs) {
  if (!decoder) {
    if (typeof AudioDecoder === "undefined") {
      figures.decode_error = "This browser cannot decode Opus (no WebCodecs): choose PCM16.";
      return;
    }
    decoder = new AudioDecoder({
      output: decoded,
      error: (err) => { figures.decode_error = `Opus decoding failed: ${err.message}`; },
    });
    decoder.configure({ codec: "opus", sampleRate: parsed.sampleRate, numberOfChannels: parsed.channels });
  }
  decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: captureUs, duration: parsed.frameMs * 1000, data: frame }));
}

function decoded(data) {
  try {
    const planes = [];
    for (let c = 0; c < data.numberOfChannels; c++) {
      const plane = new Float32Array(data.numberOfFrames);
      data.copyTo(plane, { planeIndex: c, format: "f32-planar" });
      planes.push(plane);
    }
    play(planes, data.sampleRate, data.timestamp);
  } finally {
    data.close();
  }
}

function play(planes, rate, captureUs) {
  const pcm = resample(planes, rate, contextRate);
  audio.postMessage({ type: "pcm", data: pcm, captureUs }, pcm.map((a) => a.buffer));
}

function closeDecoder() {
  if (decoder && decoder.state !== "closed") decoder.close();
  decoder = null;
}
