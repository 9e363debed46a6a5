// A node's history as uPlot charts: heartbeat metrics (GET .../metrics/history) and meter levels
// (GET .../meters/history) over 1 h, 24 h, 7 d or 30 d. Each chart names its unit, has a legend,
// times in the viewer's zone (or UTC, as chosen on "Me") with the zone on the axis, colours from
// the page's CSS variables (so dark mode follows), and follows its container's width.
import uPlot from "../vendor/uplot-1.6.32/uPlot.esm.js";
import { h, fill, when, zonePreference } from "./dom.js";

export const RANGES = [["1h", "1 h"], ["24h", "24 h"], ["7d", "7 d"], ["30d", "30 d"]];
export const DEFAULT_RANGE = "1h";
export const EMPTY_TEXT = "No history in this range yet";

/** The zone the charts' times are in, as a name for the axis ("UTC", "Europe/Berlin"). */
export function chartZone() {
  if (zonePreference() === "UTC") return "UTC";
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}

const cssVar = (el, name, fallback) => getComputedStyle(el).getPropertyValue(name).trim() || fallback;
const PALETTE = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];

const fixed = (digits) => (v) => (v === null || v === undefined ? "—" : v.toFixed(digits));

/**
 * One chart: a figure with its title and unit, a uPlot plot and an empty state.
 * `series`: [{label, dash?}]; `yRange`: [min, max] to pin the scale (else the data's).
 */
export class HistoryChart {
  constructor({ key, title, unit, series, yRange = null, digits = 1, height = 170 }) {
    this.key = key;
    this.title = title;
    this.unit = unit;
    this.series = series;
    this.yRange = yRange;
    this.format = fixed(digits);
    this.height = height;
    this.window = null;
    this.plot = null;
    this.data = null;
    this.host = h("div", { class: "plot" });
    this.empty = h("p", { class: "chart-empty hint" }, EMPTY_TEXT);
    this.summary = h("p", { class: "visually-hidden" });
    this.el = h("figure", { class: "history-chart", dataset: { chart: key, unit } },
      h("figcaption", {}, h("strong", {}, title), unit ? h("span", { class: "unit" }, ` (${unit})`) : null),
      this.host, this.empty, this.summary);
    this.observer = new ResizeObserver(() => this.fit());
    this.observer.observe(this.host);
  }

  /** Show `xs` (Unix seconds) and one array of values per series over the window [from, to] (Unix seconds). */
  set(xs, ys, from, to) {
    this.window = [from, to];
    const any = ys.some((values) => values.some((v) => v !== null && v !== undefined));
    this.el.dataset.points = String(any ? xs.length : 0);
    this.empty.hidden = any;
    this.host.hidden = !any;
    if (!any) {
      this.destroyPlot();
      this.summary.textContent = `${this.title}: ${EMPTY_TEXT.toLowerCase()}.`;
      return;
    }
    this.data = [xs, ...ys];
    this.el.dataset.xLabel = `Time (${chartZone()})`;
    this.summary.textContent = `${this.title}, ${this.series.map((s, i) => {
      const values = ys[i].filter((v) => v !== null && v !== undefined);
      return values.length ? `${s.label} from ${this.format(Math.min(...values))} to ${this.format(Math.max(...values))} ${this.unit}` : `${s.label} no data`;
    }).join("; ")}.`;
    if (this.plot && this.plot.series.length === this.data.length && this.plotZone === chartZone()) {
      this.plot.setData(this.data);
    } else {
      this.destroyPlot();
      this.plot = new uPlot(this.options(), this.data, this.host);
      this.plotZone = chartZone();
    }
  }

  options() {
    const el = this.host.isConnected ? this.host : document.documentElement;
    const text = cssVar(el, "--text", "#1d2330");
    const muted = cssVar(el, "--muted", "#5a6270");
    const grid = cssVar(el, "--line", "#e2e5ea");
    const zone = chartZone();
    const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, labelFont: "600 12px system-ui", font: "11px system-ui" };
    const format = this.format;
    const unit = this.unit;
    return {
      width: this.width(),
      height: this.height,
      tzDate: zone === "UTC" ? (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC") : (ts) => new Date(ts * 1000),
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: {
        x: { time: true, range: (u, min, max) => this.window ?? [min, max] },
        y: this.yRange ? { range: () => this.yRange } : { range: (u, min, max) => (min === max ? [min - 1, max + 1] : uPlot.rangeNum(min, max, 0.1, true)) },
      },
      axes: [
        { ...axis, label: `Time (${zone})`, labelSize: 24, stroke: text },
        { ...axis, label: unit, labelSize: unit ? 20 : 0, size: 48, values: (u, splits) => tickText(splits) },
      ],
      series: [
        { label: "Time", value: (u, ts) => (ts === null ? "—" : when(new Date(ts * 1000).toISOString(), { seconds: false })) },
        ...this.series.map((s, i) => {
          const colour = cssVar(el, `--chart-${(i % PALETTE.length) + 1}`, PALETTE[i % PALETTE.length]);
          return {
            label: s.label,
            stroke: colour,
            width: 1.5,
            dash: s.dash ? [5, 4] : undefined,
            spanGaps: false,
            points: { show: (u, si, i0, i1) => i1 - i0 < 90, size: 5, fill: colour },
            value: (u, v) => (v === null || v === undefined ? "—" : `${format(v)}${unit ? ` ${unit}` : ""}`),
          };
        }),
      ],
    };
  }

  width() {
    return Math.max(200, Math.floor(this.host.clientWidth || this.el.clientWidth || 320));
  }

  fit() {
    if (!this.plot || this.host.hidden) return;
    const width = this.width();
    if (Math.abs(width - this.plot.width) >= 2) this.plot.setSize({ width, height: this.height });
  }

  /** Build again (the colour scheme or the zone changed). */
  redraw() {
    if (!this.data || !this.plot) return;
    this.destroyPlot();
    this.plot = new uPlot(this.options(), this.data, this.host);
    this.plotZone = chartZone();
  }

  destroyPlot() {
    this.plot?.destroy();
    this.plot = null;
  }

  destroy() {
    this.observer.disconnect();
    this.destroyPlot();
  }
}

/** Tick labels with as many decimals as the step between them needs ("83.665", "83.670"; "10k"). */
function tickText(splits) {
  const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 1;
  const digits = step >= 1 || !step ? 0 : Math.min(4, Math.ceil(-Math.log10(step) - 1e-9));
  return splits.map((v) => (v === null || v === undefined ? "" : Math.abs(v) >= 10000 && step >= 1000 ? `${+(v / 1000).toFixed(1)}k` : v.toFixed(digits)));
}

const seconds = (iso) => new Date(iso).getTime() / 1000;

/** Points to columns; a gap longer than 1.5 buckets becomes a null so no line is drawn across it. */
function columns(points, interval, picks) {
  const xs = [];
  const ys = picks.map(() => []);
  let previous = null;
  for (const point of points) {
    const t = seconds(point.ts);
    if (previous !== null && t - previous > interval * 1.5) {
      xs.push(previous + interval);
      ys.forEach((column) => column.push(null));
    }
    xs.push(t);
    picks.forEach((pick, i) => { const v = pick(point); ys[i].push(typeof v === "number" && Number.isFinite(v) ? v : null); });
    previous = t;
  }
  return { xs, ys };
}

const METRIC_CHARTS = [
  { key: "usage", title: "CPU, memory and disk used", unit: "%", yRange: [0, 100], digits: 0, series: [
    ["CPU (mean)", (p) => p.cpu_pct?.mean], ["CPU (max)", (p) => p.cpu_pct?.max, true],
    ["Memory", (p) => p.memory_used_pct?.mean], ["Disk used", (p) => p.disk_used_pct?.mean]] },
  { key: "temperature", title: "Temperature", unit: "°C", digits: 1, series: [
    ["Mean", (p) => p.temperature_c?.mean], ["Max", (p) => p.temperature_c?.max, true]] },
  { key: "disk-free", title: "Disk free (least in the bucket)", unit: "GB", digits: 2, series: [
    ["Free", (p) => (typeof p.disk_free_bytes?.min === "number" ? p.disk_free_bytes.min / 1e9 : null)]] },
  { key: "outbox", title: "Telemetry outbox backlog", unit: "messages", digits: 0, series: [
    ["Mean", (p) => p.outbox_depth?.mean], ["Max", (p) => p.outbox_depth?.max, true]] },
  { key: "clock", title: "Clock offset", unit: "ms", digits: 1, series: [
    ["Mean", (p) => p.clock_offset_ms?.mean], ["Largest either way", (p) => p.clock_offset_ms?.max_abs, true]] },
  { key: "load", title: "Load average (1 min)", unit: "", digits: 2, series: [
    ["Mean", (p) => p.load_1m?.mean], ["Max", (p) => p.load_1m?.max, true]] },
];

/**
 * The history section's charts for one node: `el` to place, `load(range)` to fetch and draw,
 * `destroy()` when the page goes. `channelName(index)` names a channel for the legend.
 */
export class NodeHistory {
  constructor(api, nodeId, { channelName = (i) => `Ch ${i + 1}` } = {}) {
    this.api = api;
    this.nodeId = nodeId;
    this.channelName = channelName;
    this.metricCharts = METRIC_CHARTS.map((spec) => new HistoryChart({ ...spec, series: spec.series.map(([label, , dash]) => ({ label, dash })) }));
    this.meterCharts = null;
    this.status = h("p", { class: "hint", role: "status" });
    this.error = h("p", { class: "error", role: "alert" });
    this.metricsBox = h("div", { class: "chart-grid" }, this.metricCharts.map((c) => c.el));
    this.metersBox = h("div", { class: "chart-grid" });
    this.el = h("div", { class: "node-history" }, this.status, this.error,
      h("h4", {}, "Levels"), this.metersBox, h("h4", {}, "Heartbeats"), this.metricsBox);
    this.scheme = matchMedia("(prefers-color-scheme: dark)");
    this.onScheme = () => this.all().forEach((c) => c.redraw());
    this.scheme.addEventListener("change", this.onScheme);
  }

  all() {
    return [...this.metricCharts, ...(this.meterCharts ?? [])];
  }

  async load(range) {
    const path = `/api/v1/nodes/${encodeURIComponent(this.nodeId)}`;
    const [metrics, meters] = await Promise.allSettled([
      this.api(`${path}/metrics/history`, { params: { range } }),
      this.api(`${path}/meters/history`, { params: { range } }),
    ]);
    const problems = [metrics, meters].filter((r) => r.status === "rejected").map((r) => r.reason.message);
    this.error.textContent = problems.length ? `Could not load the history: ${[...new Set(problems)].join(" ")}` : "";
    if (metrics.status === "fulfilled") this.drawMetrics(metrics.value.data);
    if (meters.status === "fulfilled") this.drawMeters(meters.value.data);
    const data = metrics.value?.data ?? meters.value?.data;
    if (data) {
      const bucket = (meters.value?.data.interval_s ?? data.interval_s);
      fill(this.status, `From ${when(data.from, { seconds: false })} to ${when(data.to, { seconds: false })}; levels per ${bucketText(bucket)}, heartbeats per ${bucketText(data.interval_s)}. Times in ${chartZone()}.`);
    }
  }

  drawMetrics(data) {
    METRIC_CHARTS.forEach((spec, i) => {
      const { xs, ys } = columns(data.points, data.interval_s, spec.series.map(([, pick]) => pick));
      this.metricCharts[i].set(xs, ys, seconds(data.from), seconds(data.to));
    });
  }

  drawMeters(data) {
    const indexes = [...new Set(data.points.flatMap((p) => p.channels.map((c) => c.index)))].sort((a, b) => a - b);
    const signature = indexes.join(",");
    if (!this.meterCharts || this.meterSignature !== signature) {
      this.meterCharts?.forEach((c) => c.destroy());
      const perChannel = (label) => indexes.map((index) => ({ label: `${this.channelName(index)} ${label}` }));
      this.meterCharts = [
        new HistoryChart({ key: "peak", title: "Peak level per channel (highest)", unit: "dBFS", yRange: [-60, 0], series: perChannel("peak") }),
        new HistoryChart({ key: "rms", title: "RMS level per channel", unit: "dBFS", yRange: [-60, 0], series: perChannel("RMS") }),
        new HistoryChart({ key: "loudness", title: "Loudness (every channel)", unit: "LUFS", series: [{ label: "Momentary" }, { label: "Short-term", dash: true }] }),
      ];
      this.meterSignature = signature;
      fill(this.metersBox, this.meterCharts.map((c) => c.el));
    }
    const channel = (index, key) => (p) => p.channels.find((c) => c.index === index)?.[key];
    const sets = [
      indexes.map((index) => channel(index, "peak_dbfs")),
      indexes.map((index) => channel(index, "rms_dbfs")),
      [(p) => p.momentary_lufs, (p) => p.short_term_lufs],
    ];
    sets.forEach((picks, i) => {
      const { xs, ys } = columns(data.points, data.interval_s, picks);
      this.meterCharts[i].set(xs, picks.length ? ys : [[]], seconds(data.from), seconds(data.to));
    });
  }

  destroy() {
    this.scheme.removeEventListener("change", this.onScheme);
    this.all().forEach((c) => c.destroy());
  }
}

function bucketText(s) {
  if (s === 1) return "second";
  if (s < 3600) return `${s / 60} min`;
  if (s < 86400) return `${s / 3600} h`;
  return `${s / 86400} day${s === 86400 ? "" : "s"}`;
}
