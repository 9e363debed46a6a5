// Live listen chunks as the node sends them and the hub relays them (provision/protocol/listen.py), and the
// small sample conversions the player needs. No DOM: the stream worker imports it.

const MAGIC = [0x48, 0x4b, 0x4c, 0x31]; // "HKL1"
const HEADER_BYTES = 26;
const CODECS = { 1: "opus", 2: "pcm16" };
const FLAG_DISCONTINUITY = 0x01;

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
export function resample(data, from, to) {
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
