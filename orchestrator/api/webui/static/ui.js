// Small DOM and formatting helpers shared by the pages. No framework: h() builds elements.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

// First defined value among several possible field names (the backend may name things differently).
export function pick(obj, ...keys) {
  if (!obj || typeof obj !== "object") return undefined;
  for (const key of keys) {
    if (obj[key] !== undefined && obj[key] !== null) return obj[key];
  }
  return undefined;
}

const TONES = {
  green: ["COMPLETED", "IDLE", "HEALTHY", "READY", "RUNNING", "ENABLED", "ON", "OK", "ALIVE", "SCALE_UP"],
  blue: ["IN_QUEUE", "STARTING", "INITIALIZING", "PENDING", "QUEUED", "PREWARM"],
  indigo: ["IN_PROGRESS", "BUSY"],
  amber: ["DRAINING", "DRAIN", "RECOVERING", "TIMED_OUT", "DEGRADED", "SCALE_DOWN", "STALE", "SUSPECT", "BLOCKED"],
  red: ["FAILED", "UNHEALTHY", "QUARANTINED", "EVICTED", "DEAD", "ERROR", "OFF", "DISABLED", "LOST"],
};

export function tone(state) {
  const key = String(state ?? "").toUpperCase().replace(/[\s-]+/g, "_");
  for (const [name, states] of Object.entries(TONES)) {
    if (states.includes(key)) return name;
  }
  return "gray";
}

export function badge(state) {
  if (state === undefined || state === null || state === "") return h("span", { class: "muted" }, "—");
  const label = String(state).replace(/_/g, " ");
  return h("span", { class: `badge s-${tone(state)}`, "data-state": String(state) }, label);
}

// Epoch seconds, epoch milliseconds or an ISO string -> Date (or null).
export function toDate(value) {
  if (value === undefined || value === null || value === "") return null;
  if (typeof value === "number") return new Date(value > 1e12 ? value : value * 1000);
  const asNumber = Number(value);
  if (!Number.isNaN(asNumber) && String(value).trim() !== "") return toDate(asNumber);
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? null : new Date(parsed);
}

export function fmtTime(value) {
  const date = toDate(value);
  if (!date) return "—";
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}

export function fmtAgo(value) {
  const date = toDate(value);
  if (!date) return "—";
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  if (seconds < 0) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return date.toLocaleDateString();
}

export function fmtSeconds(seconds) {
  if (seconds === undefined || seconds === null || Number.isNaN(Number(seconds))) return "—";
  const s = Number(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export const fmtMs = (ms) => (ms === undefined || ms === null ? "—" : fmtSeconds(Number(ms) / 1000));

export function fmtNumber(value, digits = 0) {
  if (value === undefined || value === null || Number.isNaN(Number(value))) return "—";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

export function shortId(id) {
  const text = String(id ?? "");
  return text.length > 14 ? `${text.slice(0, 8)}…${text.slice(-4)}` : text;
}

// "createdAt" -> "Created at", "delay_time" -> "Delay time".
export function humanize(key) {
  const words = String(key).replace(/_/g, " ").replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

export function pre(value, extraClass = "") {
  const text = typeof value === "string" ? value : json(value);
  return h("pre", { class: `json ${extraClass}`.trim() }, text);
}

export function card(title, body, headExtra) {
  return h("section", { class: "card" },
    title || headExtra ? h("div", { class: "card-head" }, title ? h("h2", {}, title) : h("span"), headExtra) : null,
    body);
}

export function stat(label, value, hint, meter) {
  return h("div", { class: "card stat" },
    h("div", { class: "label" }, label),
    h("div", { class: "value" }, value),
    hint ? h("div", { class: "hint" }, hint) : null,
    meter || null);
}

// A horizontal meter: parts = [{value, tone}], total = the full width.
export function meter(parts, total) {
  const bar = h("div", { class: "meter", role: "img" });
  const sum = total || parts.reduce((acc, part) => acc + part.value, 0);
  for (const part of parts) {
    if (!sum || !part.value) continue;
    const span = h("span", { class: `s-${part.tone || "indigo"}`, title: part.label || "" });
    span.style.width = `${Math.min(100, (100 * part.value) / sum)}%`;
    bar.append(span);
  }
  return bar;
}

// columns: [{label, cell: row => node|string, num?: bool}]
export function table(columns, rows, emptyText = "Nothing here yet.") {
  if (!rows || rows.length === 0) return h("div", { class: "empty" }, emptyText);
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.label)));
  const body = rows.map((row) =>
    h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : c.wrap ? "wrap" : null }, c.cell(row)))));
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

export function notAvailable(what, result) {
  const why = result && result.status ? ` (HTTP ${result.status})` : "";
  const detail = result && result.error && result.status !== 404 ? `: ${result.error}` : "";
  return h("div", { class: "notice" }, `${what} not available${why}${detail}.`);
}

export function toast(message, isError = false) {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast${isError ? " error" : ""}`, role: "status" }, message);
  box.append(el);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => el.remove(), isError ? 7000 : 3500);
}

// Resolves true when the user confirms in the modal dialog.
export function confirmDialog(title, body, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").textContent = body;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

export function field(label, input, help, id) {
  return h("div", { class: "field" }, h("label", { for: id }, label), input, help ? h("div", { class: "help" }, help) : null);
}

export function select(id, options, value) {
  const el = h("select", { id, name: id });
  for (const option of options) {
    const [optValue, optLabel] = Array.isArray(option) ? option : [option, option];
    el.append(h("option", { value: optValue, selected: optValue === value }, optLabel));
  }
  return el;
}

export function pageHead(title, sub, actions) {
  return h("div", { class: "page-head" },
    h("div", {}, h("h1", {}, title), sub ? h("p", { class: "sub" }, sub) : null),
    actions ? h("div", { class: "actions" }, actions) : null);
}
