// Canvas drawings: sparklines and recording waveforms, sized to the device's pixels.

function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

const css = (name, fallback) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;

/** A line of values (nulls leave gaps) between min and max (defaults: the data's range). */
export function sparkline(canvas, values, { min = null, max = null } = {}) {
  const { ctx, width, height } = prepare(canvas);
  const numbers = values.filter((v) => v !== null && v !== undefined);
  if (numbers.length < 2) {
    ctx.fillStyle = css("--muted", "#5a6270");
    ctx.font = "11px system-ui";
    ctx.fillText(numbers.length ? "collecting…" : "no data", 4, height / 2 + 4);
    return;
  }
  const lo = min ?? Math.min(...numbers);
  const hi = max ?? Math.max(...numbers);
  const span = hi - lo || 1;
  ctx.strokeStyle = css("--accent", "#2563eb");
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  let drawing = false;
  values.forEach((v, i) => {
    if (v === null || v === undefined) { drawing = false; return; }
    const x = (i / (values.length - 1)) * (width - 2) + 1;
    const y = height - 2 - ((Math.min(hi, Math.max(lo, v)) - lo) / span) * (height - 4);
    if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    drawing = true;
  });
  ctx.stroke();
}

/** Min/max peaks per channel stacked vertically, with the played part shaded up to `progress` (0..1). */
export function waveform(canvas, peaks, progress = 0) {
  const { ctx, width, height } = prepare(canvas);
  const channels = peaks?.channels ?? [];
  if (!channels.length) return;
  const laneHeight = height / channels.length;
  const played = css("--accent", "#2563eb");
  const rest = css("--wave", "#9aa4b5");
  channels.forEach((channel, lane) => {
    const mid = laneHeight * lane + laneHeight / 2;
    const n = channel.min.length;
    for (let i = 0; i < n; i++) {
      const x = (i / n) * width;
      const top = mid - channel.max[i] * (laneHeight / 2 - 1);
      const bottom = mid - channel.min[i] * (laneHeight / 2 - 1);
      ctx.fillStyle = i / n < progress ? played : rest;
      ctx.fillRect(x, top, Math.max(1, width / n - 0.2), Math.max(1, bottom - top));
    }
  });
  ctx.fillStyle = css("--text", "#1d2330");
  ctx.fillRect(progress * width - 1, 0, 2, height);
}
