// Live meter bars. Frames arrive from the SSE meter stream (about 10 per second per node); one
// requestAnimationFrame loop moves the bars of every visible board in place (clip-path and
// transforms only: paint, no layout), with a falling peak, a peak-hold tick and a clip light.
// Nothing is re-rendered per frame.

import { follow } from "./api.js";
import { h } from "./dom.js";

const FLOOR_DB = -60;
const PEAK_FALL_DB_PER_S = 20;
const HOLD_S = 1.5;
const CLIP_S = 2;
const STALE_MS = 3000;
const TEXT_EVERY_MS = 250;

// The lit part of a bar is cut with clip-path so that the colour zones stay put on the scale.
const clipTo = (fraction) => `inset(0 ${(100 - fraction * 100).toFixed(2)}% 0 0)`;
const toFraction = (value) => (value === null || value === undefined ? 0 : Math.min(1, Math.max(0, (value - FLOOR_DB) / -FLOOR_DB)));

/** One node's bars: a row per channel (RMS fill, peak fill, hold tick, clip light) and its loudness. */
export class MeterBoard {
  constructor(nodeId, { large = false, label = "" } = {}) {
    this.nodeId = nodeId;
    this.channels = [];
    this.frame = null;
    this.frameAt = 0;
    this.textAt = 0;
    this.el = h("div", { class: `meter-board${large ? " large" : ""}`, role: "group", "aria-label": `Levels ${label}`.trim(), dataset: { nodeId } });
    this.rows = h("div", { class: "meter-rows" });
    this.loudness = h("span", { class: "loudness", title: "Momentary loudness (LUFS)" }, "— LUFS");
    this.el.append(this.rows, this.loudness);
    this.el.classList.add("stale");
  }

  setChannels(frameChannels) {
    this.rows.replaceChildren();
    this.channels = frameChannels.map((channel) => {
      const rms = h("div", { class: "bar rms" });
      const peak = h("div", { class: "bar peak" });
      const hold = h("div", { class: "hold" });
      const clip = h("span", { class: "clip", title: "Clipped samples" }, "CLIP");
      const value = h("span", { class: "value" }, "—");
      const name = channel.name ?? String(channel.index + 1);
      const track = h("div", { class: "track", role: "meter", "aria-label": `Channel ${name} peak`, "aria-valuemin": FLOOR_DB, "aria-valuemax": 0, "aria-valuenow": FLOOR_DB }, peak, rms, hold);
      this.rows.append(h("div", { class: "meter-row" }, h("span", { class: "ch" }, name), track, clip, value));
      return { rms, peak, hold, clip, value, track, shownPeak: FLOOR_DB, shownRms: FLOOR_DB, holdDb: FLOOR_DB, holdAt: 0, clipAt: -Infinity };
    });
  }

  push(frame, now) {
    this.frame = frame;
    this.frameAt = now;
    if (frame.channels.length !== this.channels.length) this.setChannels(frame.channels);
  }

  /** Advance the bars to `now` (ms); dt is the seconds since the last call. */
  tick(now, dt) {
    const frame = this.frame;
    const stale = !frame || now - this.frameAt > STALE_MS;
    this.el.classList.toggle("stale", stale);
    if (!frame) return;
    const writeText = now - this.textAt > TEXT_EVERY_MS;
    frame.channels.forEach((channel, i) => {
      const bar = this.channels[i];
      if (!bar) return;
      const peak = stale ? FLOOR_DB : channel.peak_dbfs ?? FLOOR_DB;
      const rms = stale ? FLOOR_DB : channel.rms_dbfs ?? FLOOR_DB;
      bar.shownPeak = Math.max(peak, bar.shownPeak - PEAK_FALL_DB_PER_S * dt);
      bar.shownRms += (rms - bar.shownRms) * Math.min(1, dt / 0.08);
      if (peak >= bar.holdDb || now - bar.holdAt > HOLD_S * 1000) {
        bar.holdDb = peak;
        bar.holdAt = now;
      }
      if (channel.clip > 0 && !stale) bar.clipAt = now;
      bar.peak.style.clipPath = clipTo(toFraction(bar.shownPeak));
      bar.rms.style.clipPath = clipTo(toFraction(bar.shownRms));
      bar.hold.style.transform = `translateX(${toFraction(bar.holdDb) * 100}%)`;
      bar.clip.classList.toggle("on", now - bar.clipAt < CLIP_S * 1000);
      if (writeText) {
        const text = channel.peak_dbfs === null || stale ? "—" : channel.peak_dbfs.toFixed(1);
        if (bar.value.textContent !== text) {
          bar.value.textContent = text;
          bar.track.setAttribute("aria-valuenow", channel.peak_dbfs ?? FLOOR_DB);
        }
      }
    });
    if (writeText) {
      this.textAt = now;
      const m = frame.loudness?.momentary_lufs;
      const text = m === null || m === undefined || stale ? "— LUFS" : `${m.toFixed(1)} LUFS`;
      if (this.loudness.textContent !== text) this.loudness.textContent = text;
    }
  }
}

/**
 * Follows the meter stream for some nodes (or all the caller may see) and animates the boards
 * registered with `board()`. `close()` stops the stream and the animation. With `maxRate` the hub
 * sends at most that many frames per second of each node (1-10; frames with clipped samples
 * always come). With `coalesce` (e.g. "100ms") it sends instead one event per tick with the latest
 * frame of every node that sent one (clips in between added up): an overview of hundreds of nodes
 * then costs the page and the hub ten events a second whatever the fleet size.
 */
export class MeterView {
  constructor(nodeIds = null, onState = null, { maxRate = null, coalesce = null } = {}) {
    this.boards = new Map();
    this.last = performance.now();
    this.running = true;
    const handlers = coalesce
      ? {
        meters: (tick) => {
          const now = performance.now();
          for (const [nodeId, frame] of Object.entries(tick.frames)) this.boards.get(nodeId)?.push(frame, now);
        },
      }
      : {
        meter: (frame) => {
          const board = this.boards.get(frame.node_id);
          if (board) board.push(frame, performance.now());
        },
      };
    const params = coalesce ? { node_id: nodeIds ?? [], coalesce } : { node_id: nodeIds ?? [], max_rate: maxRate };
    this.stream = follow("/api/v1/meter-events", handlers, { params, onState });
    this.loop = this.loop.bind(this);
    requestAnimationFrame(this.loop);
  }

  board(nodeId, options) {
    let board = this.boards.get(nodeId);
    if (!board) {
      board = new MeterBoard(nodeId, options);
      this.boards.set(nodeId, board);
    }
    return board;
  }

  loop(now) {
    if (!this.running) return;
    const dt = Math.min(0.25, (now - this.last) / 1000);
    this.last = now;
    for (const board of this.boards.values()) {
      if (board.el.isConnected && !board.el.closest("[hidden]")) board.tick(now, dt);
    }
    requestAnimationFrame(this.loop);
  }

  close() {
    this.running = false;
    this.stream.close();
  }
}
