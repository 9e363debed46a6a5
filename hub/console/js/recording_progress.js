// A recording while it runs: elapsed time ticking, its format and channels, and its ledger growing
// as the node reports (GET /recordings/{id}/context every 2 s: the recording and its job's progress).
// While it records the node reports frames, seconds, bytes and losses in each job heartbeat, with its
// integrity ledger as it grows: how many checksummed segments and gaps so far and the newest few of
// each, which the panel gathers into the segment and gap lists; the whole ledger comes with the upload.
import { api } from "./api.js";
import { bytes, fill, h, seconds, timeEl, when } from "./dom.js";
import { plural } from "./words.js";

export const ACTIVE = new Set(["queued", "recording", "uploading"]);
const POLL_MS = 2000;
const MAX_ROWS = 200;

/** "1:02:03" or "2:03": an elapsed time that reads like a clock. */
export function clock(totalSeconds) {
  const s = Math.max(0, Math.floor(totalSeconds));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** "WAV, 48 kHz, 24 bit, 2 channels" (channels: the source's until the node says). */
export function formatText(recording, sourceChannels = null) {
  const parts = [String(recording.format ?? "?").toUpperCase()];
  if (recording.sample_rate) parts.push(`${recording.sample_rate / 1000} kHz`);
  if (recording.bit_depth) parts.push(`${recording.bit_depth} bit`);
  parts.push(recording.channels ? plural(recording.channels, "channel")
    : sourceChannels ? `${plural(sourceChannels, "channel")} (the source's)` : "the source's channels");
  return parts.join(", ");
}

/**
 * A live panel for one recording: `el` to place, `update(recording?)` to look again, `close()`.
 * It polls and ticks by itself until the recording ends (then `onEnd(recording)` is called once).
 */
export class RecordingProgress {
  constructor(recordingId, { title = null, onEnd = null } = {}) {
    this.id = recordingId;
    this.onEnd = onEnd;
    this.recording = null;
    this.job = null;
    this.rows = [];
    this.seen = new Set();
    this.closed = false;
    this.elapsed = h("strong", { class: "elapsed", "aria-live": "off" }, "—");
    this.elapsedWord = h("span", { class: "hint" }, "elapsed");
    this.state = h("span", { class: "state" });
    this.format = h("span", { class: "format" });
    this.captured = h("span", { class: "captured" });
    this.note = h("p", { class: "hint" });
    this.segmentRows = new Map(); // segment index -> row, newest first in the table
    this.gapKeys = new Set();
    this.segmentBody = h("tbody");
    this.gapList = h("ul", { class: "gap-list" });
    this.segmentsTable = h("table", { class: "segment-ledger" },
      h("caption", {}, "Checksummed segments, newest first"),
      h("thead", {}, h("tr", {}, ["Segment", "From", "Length", "SHA-256"].map((t) => h("th", { scope: "col" }, t)))),
      this.segmentBody);
    this.tbody = h("tbody");
    this.ledger = h("table", { class: "progress-ledger" },
      h("caption", {}, "Ledger so far: what the node reported, newest first"),
      h("thead", {}, h("tr", {}, ["Reported", "Captured", "Frames", "Size", "Lost"].map((t) => h("th", { scope: "col" }, t)))),
      this.tbody);
    this.el = h("section", { class: "recording-live", "aria-label": "Recording in progress", dataset: { recordingId } },
      title,
      h("p", { class: "live-line" }, this.state, " ", this.elapsed, " ", this.elapsedWord),
      h("dl", { class: "facts" },
        h("dt", {}, "Format"), h("dd", {}, this.format),
        h("dt", {}, "Captured"), h("dd", {}, this.captured)),
      this.note,
      h("div", { class: "table-wrap" }, this.segmentsTable),
      h("h4", {}, "Gaps"), this.gapList,
      h("div", { class: "table-wrap" }, this.ledger));
    this.ticker = setInterval(() => this.tick(), 1000);
    this.poller = setInterval(() => this.update(), POLL_MS);
    this.update();
  }

  async update() {
    if (this.closed) return;
    let context;
    try {
      context = (await api(`/api/v1/recordings/${encodeURIComponent(this.id)}/context`)).data;
    } catch (err) {
      this.note.textContent = `Could not follow the recording: ${err.message}`;
      return;
    }
    if (this.closed) return;
    this.recording = context.recording;
    this.job = context.job;
    this.segmentS = context.profile?.segment_s ?? null;
    if (!this.recording.channels && this.sourceChannels === undefined) {
      // The node says how many channels it records when the capture ends: until then the source's, as metered.
      this.sourceChannels = null;
      try {
        const frame = (await api(`/api/v1/nodes/${encodeURIComponent(this.recording.node_id)}/meters`)).data;
        this.sourceChannels = frame.channels?.length || null;
      } catch { /* not known yet */ }
    }
    this.render();
    if (!ACTIVE.has(this.recording.status)) {
      this.stopTimers();
      this.onEnd?.(this.recording);
    }
  }

  render() {
    const r = this.recording;
    const progress = this.job?.progress ?? {};
    this.state.className = `state state-${r.status}`;
    this.state.textContent = r.status;
    this.state.dataset.status = r.status;
    this.format.textContent = formatText(r, this.sourceChannels);
    const captured = typeof progress.seconds === "number" ? progress.seconds : r.duration_s;
    const target = r.requested_duration_s;
    fill(this.captured, captured === null || captured === undefined ? "nothing yet" : seconds(captured),
      target ? ` of ${seconds(target)}` : " (until stopped)",
      r.status === "uploading" && typeof progress.total === "number" ? `; uploading ${bytes(progress.bytes)} of ${bytes(progress.total)}` : "");
    if (r.status === "queued") {
      this.note.textContent = "Waiting for the node to take the job.";
    } else {
      const segments = typeof progress.segments === "number" ? progress.segments : null;
      fill(this.note, r.started_at ? ["Started ", timeEl(r.started_at), ". "] : "",
        segments !== null ? `The node has checksummed ${plural(segments, "segment")}${this.segmentS ? ` of ${seconds(this.segmentS)}` : ""} so far`
          + ` and lost ${plural(progress.lost_frames ?? 0, "frame")} in ${plural(progress.gaps ?? 0, "gap")}; the whole ledger comes with the upload.` : "");
    }
    this.addLedger(progress, r.sample_rate);
    const at = this.job?.last_heartbeat_at;
    const key = `${at}|${progress.frames ?? progress.bytes}`;
    if (at && !this.seen.has(key) && (typeof progress.frames === "number" || typeof progress.bytes === "number")) {
      this.seen.add(key);
      const row = h("tr", {},
        h("td", {}, timeEl(at)),
        h("td", {}, typeof progress.seconds === "number" ? seconds(progress.seconds) : r.status),
        h("td", {}, typeof progress.frames === "number" ? progress.frames.toLocaleString() : "—"),
        h("td", {}, bytes(progress.bytes)),
        h("td", {}, typeof progress.lost_frames === "number" ? `${plural(progress.lost_frames, "frame")}${progress.overruns ? `, ${plural(progress.overruns, "overrun")}` : ""}` : "—"));
      this.tbody.prepend(row);
      while (this.tbody.childElementCount > MAX_ROWS) this.tbody.lastChild.remove();
    }
    this.tick();
  }

  /** The newest segments and gaps of a heartbeat, added to the lists (each once). */
  addLedger(progress, rate) {
    const seconds1 = (frames) => (rate ? seconds(frames / rate) : `${Number(frames).toLocaleString()} frames`);
    for (const segment of Array.isArray(progress.recent_segments) ? progress.recent_segments : []) {
      if (typeof segment?.index !== "number" || this.segmentRows.has(segment.index)) continue;
      const row = h("tr", { dataset: { index: segment.index } },
        h("td", {}, String(segment.index + 1)),
        h("td", {}, seconds1(segment.start_frame)),
        h("td", {}, seconds1(segment.frames)),
        h("td", {}, h("code", { class: "wrap", title: segment.sha256 }, String(segment.sha256 ?? "").slice(0, 16), "…")));
      this.segmentRows.set(segment.index, row);
      const newer = [...this.segmentBody.children].find((tr) => Number(tr.dataset.index) < segment.index);
      this.segmentBody.insertBefore(row, newer ?? null);
      while (this.segmentBody.childElementCount > MAX_ROWS) {
        const oldest = this.segmentBody.lastChild;
        this.segmentRows.delete(Number(oldest.dataset.index));
        oldest.remove();
      }
    }
    for (const gap of Array.isArray(progress.recent_gaps) ? progress.recent_gaps : []) {
      const key = `${gap?.kind}|${gap?.at_frame}`;
      if (this.gapKeys.has(key)) continue;
      this.gapKeys.add(key);
      this.gapList.prepend(h("li", {}, `${gap.kind ?? "gap"}: ${seconds1(gap.frames ?? 0)} lost at ${seconds1(gap.at_frame ?? 0)}`));
    }
    if (!this.gapList.childElementCount) fill(this.gapList, h("li", { class: "none" }, "none"));
    else this.gapList.querySelector(".none")?.remove();
  }

  tick() {
    const r = this.recording;
    if (!r) return;
    let text = "—";
    if (r.status === "recording" && r.started_at) text = clock((Date.now() - new Date(r.started_at).getTime()) / 1000);
    else if (r.status === "queued") text = clock((Date.now() - new Date(r.created_at).getTime()) / 1000);
    else if (typeof r.duration_s === "number") text = clock(r.duration_s);
    this.elapsed.textContent = text;
    this.elapsedWord.textContent = r.status === "queued" ? "waiting" : r.status === "recording" ? "elapsed" : "captured";
    this.elapsed.title = r.started_at ? `since ${when(r.started_at)}` : "";
  }

  stopTimers() {
    clearInterval(this.ticker);
    clearInterval(this.poller);
  }

  close() {
    this.closed = true;
    this.stopTimers();
  }
}
