// Tiny SVG line charts: time on x, a count on y, a hover readout. No library.

import { h } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";
export const PALETTE = ["#4f46e5", "#0ea5e9", "#16a34a", "#f59e0b", "#db2777", "#7c3aed", "#0d9488", "#dc2626"];

function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  return el;
}

// The top of the y axis: four equal whole-number steps of 1, 2, 3 or 5 times a power of ten.
function niceMax(value) {
  const raw = Math.max(1, value) / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const step of [1, 2, 3, 4, 5, 6, 8, 10]) {
    if (step * magnitude >= raw) return Math.max(4, Math.ceil(step * magnitude) * 4);
  }
  return 40 * magnitude;
}

function timeLabel(ms, withSeconds) {
  const opts = withSeconds ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
  return new Date(ms).toLocaleTimeString([], opts);
}

/**
 * series: [{label, color, dashed?, step?, points: [[t_ms, value], ...]}]
 * opts: {height, xStartMs, xEndMs, emptyText}
 */
export function lineChart(series, opts = {}) {
  const height = opts.height || 190;
  const width = opts.width || 640;
  const pad = { left: 36, right: 12, top: 10, bottom: 24 };
  const all = series.flatMap((line) => line.points);
  if (all.length === 0) {
    return h("div", { class: "chart-empty" }, opts.emptyText || "Collecting samples…");
  }
  const x1 = Math.max(opts.xEndMs ?? 0, ...all.map((p) => p[0]));
  // At least five minutes wide, so a fresh page does not stretch a few samples across the chart.
  const x0 = Math.min(opts.xStartMs ?? Math.min(...all.map((p) => p[0])), x1 - 5 * 60 * 1000);
  const withSeconds = x1 - x0 < 5 * 60 * 1000;
  const yMax = niceMax(Math.max(1, ...all.map((p) => p[1])));
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const xOf = (t) => pad.left + ((t - x0) / (x1 - x0)) * innerW;
  const yOf = (v) => pad.top + innerH - (v / yMax) * innerH;

  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": opts.label || "chart" });
  for (let i = 0; i <= 4; i += 1) {
    const value = (yMax * i) / 4;
    const y = yOf(value);
    svg.append(s("line", { class: "grid-line", x1: pad.left, x2: width - pad.right, y1: y, y2: y }));
    const label = s("text", { class: "axis-label", x: pad.left - 6, y: y + 4, "text-anchor": "end" });
    label.textContent = Number.isInteger(value) ? String(value) : value.toFixed(1);
    svg.append(label);
  }
  const ticks = 5;
  for (let i = 0; i <= ticks; i += 1) {
    const t = x0 + ((x1 - x0) * i) / ticks;
    const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
    const label = s("text", { class: "axis-label", x: xOf(t), y: height - 6, "text-anchor": anchor });
    label.textContent = timeLabel(t, withSeconds);
    svg.append(label);
  }
  for (const line of series) {
    if (line.points.length === 0) continue;
    let d = "";
    line.points.forEach(([t, v], i) => {
      const x = xOf(t).toFixed(1);
      const y = yOf(v).toFixed(1);
      if (i === 0) d += `M${x},${y}`;
      else if (line.step) d += `H${x}V${y}`;
      else d += `L${x},${y}`;
    });
    const attrs = { d, fill: "none", stroke: line.color, "stroke-width": 2, "stroke-linejoin": "round" };
    if (line.dashed) attrs["stroke-dasharray"] = "5 4";
    svg.append(s("path", attrs));
    const [lastT, lastV] = line.points[line.points.length - 1];
    svg.append(s("circle", { cx: xOf(lastT), cy: yOf(lastV), r: 3, fill: line.color }));
  }
  const hover = s("line", { class: "hover-line", y1: pad.top, y2: pad.top + innerH, visibility: "hidden" });
  svg.append(hover);
  const wrap = h("div", { class: "chart" }, svg);
  const tip = h("div", { class: "chart-tip", hidden: true });
  wrap.append(tip);

  svg.addEventListener("mousemove", (event) => {
    const box = svg.getBoundingClientRect();
    const t = x0 + (((event.clientX - box.left) / box.width) * width - pad.left) / innerW * (x1 - x0);
    const rows = [];
    for (const line of series) {
      let best = null;
      for (const point of line.points) if (point[0] <= t) best = point;
      if (best) rows.push(`${line.label}: ${best[1]}`);
    }
    if (rows.length === 0 || t < x0 || t > x1) {
      tip.hidden = true;
      hover.setAttribute("visibility", "hidden");
      return;
    }
    const x = xOf(t);
    hover.setAttribute("x1", x);
    hover.setAttribute("x2", x);
    hover.setAttribute("visibility", "visible");
    tip.textContent = `${timeLabel(t, true)} · ${rows.join(" · ")}`;
    tip.hidden = false;
    tip.style.left = `${(x / width) * box.width}px`;
    tip.style.top = `${event.clientY - box.top}px`;
  });
  svg.addEventListener("mouseleave", () => {
    tip.hidden = true;
    hover.setAttribute("visibility", "hidden");
  });
  return wrap;
}

export function chartLegend(series) {
  return h("div", { class: "legend" }, series.map((line) => {
    const swatch = h("i", { class: line.dashed ? "dash" : "" });
    if (line.dashed) swatch.style.borderColor = line.color;
    else swatch.style.background = line.color;
    return h("span", {}, swatch, line.label);
  }));
}
