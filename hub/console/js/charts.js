// Canvas drawings: recording waveforms, sized to the device's pixels. (A node's history is drawn
// with uPlot in js/history_charts.js.)

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
