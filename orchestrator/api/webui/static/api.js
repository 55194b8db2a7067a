// JSON API access for the pages. The browser authenticates with its session cookie; every mutating call
// carries the CSRF token derived from that session. Failures come back as data, never as exceptions, so a
// page can show "not available" for a route that answers 404/503 or is not there yet.

let csrfToken = "";
let readOnly = false;

export function setCsrfToken(token) {
  csrfToken = token || "";
}

// A read key's session: the pages hide every change control and no change is sent (the server refuses
// changes with 403 anyway).
export function setReadOnly(value) {
  readOnly = Boolean(value);
  document.body.classList.toggle("read-only", readOnly);
}

export const isReadOnly = () => readOnly;

export function getCsrfToken() {
  return csrfToken;
}

function errorText(data, status) {
  if (data && typeof data === "object") {
    if (typeof data.error === "string") return data.error;
    if (typeof data.detail === "string") return data.detail;
    if (typeof data.message === "string") return data.message;
  }
  if (typeof data === "string" && data.trim()) return data.trim().slice(0, 200);
  return `HTTP ${status}`;
}

// -> {ok, status, data, error}
export async function api(method, path, body) {
  if (readOnly && method !== "GET" && method !== "HEAD") {
    return { ok: false, status: 403, data: null, error: "this session's key is read-only" };
  }
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken;
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    return { ok: false, status: 0, data: null, error: `network error: ${err.message || err}` };
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (response.status === 401 && !path.startsWith("/ui/")) {
    window.location.assign("/ui/login");
  }
  if (response.ok) return { ok: true, status: response.status, data, error: null };
  return { ok: false, status: response.status, data, error: errorText(data, response.status) };
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);

export function qs(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

const enc = encodeURIComponent;

// A list may come bare or wrapped in an object under one of several names.
export function asList(data, ...keys) {
  if (Array.isArray(data)) return data;
  if (data && typeof data === "object") {
    for (const key of keys) if (Array.isArray(data[key])) return data[key];
    // A map keyed by name: {"ep-a": {...}, ...}
    const values = Object.entries(data).filter(([, v]) => v && typeof v === "object" && !Array.isArray(v));
    if (keys.length && values.length && values.length === Object.keys(data).length) {
      return values.map(([name, v]) => ({ name, ...v }));
    }
  }
  return [];
}

export async function listEndpoints() {
  const result = await get("/api/v1/endpoints");
  return { ...result, list: result.ok ? asList(result.data, "endpoints", "items") : [] };
}

export async function listWorkers(endpoint) {
  const path = endpoint ? `/api/v1/endpoints/${enc(endpoint)}/workers` : "/api/v1/workers";
  const result = await get(path);
  return { ...result, list: result.ok ? asList(result.data, "workers", "items") : [] };
}

export async function listJobs(params) {
  const result = await get(`/api/v1/jobs${qs(params)}`);
  const list = result.ok ? asList(result.data, "jobs", "items") : [];
  const nextCursor = result.ok && result.data ? result.data.nextCursor ?? result.data.next_cursor ?? null : null;
  return { ...result, list, nextCursor };
}

export const getJob = (id) => get(`/api/v1/jobs/${enc(id)}`);
export const endpointHealth = (name) => get(`/v2/${enc(name)}/health`);
export const autoscalerStatus = () => get("/api/v1/autoscaler/status");
export const autoscalerHistory = (name, limit = 50) =>
  get(`/api/v1/autoscaler/history/${enc(name)}${qs({ limit })}`);
export const cancelJob = (endpoint, id) => post(`/v2/${enc(endpoint)}/cancel/${enc(id)}`);
export const retryJob = (endpoint, id) => post(`/v2/${enc(endpoint)}/retry/${enc(id)}`);
export const runJob = (endpoint, input) => post(`/v2/${enc(endpoint)}/run`, { input });
export const specs = () => get("/api/v1/specs");
export const readiness = () => get("/health/ready");
export const drainWorker = (id) => post(`/api/v1/workers/${enc(id)}/drain`);
export const workerLogs = (id, tail, stream) => get(`/api/v1/workers/${enc(id)}/logs${qs({ tail, stream })}`);
export const auditLog = (limit = 200) => get(`/api/v1/audit${qs({ limit })}`);

// The per-endpoint rows of the autoscaler status, whatever the exact shape.
export function autoscalerRows(status) {
  if (!status || typeof status !== "object") return [];
  const rows = asList(status.endpoints ?? status.pools ?? [], "endpoints", "items");
  return rows.map((row) => ({ ...row, name: row.name ?? row.endpoint }));
}

export function autoscalerGpus(status) {
  if (!status || typeof status !== "object") return null;
  const gpus = status.gpus ?? status.cluster ?? status;
  const total = gpus.total ?? gpus.gpusTotal ?? gpus.totalGpus;
  const used = gpus.used ?? gpus.gpusUsed ?? gpus.usedGpus;
  if (total === undefined && used === undefined) return null;
  const free = gpus.free ?? gpus.gpusFree ?? (total !== undefined && used !== undefined ? total - used : undefined);
  return { total, used, free };
}
