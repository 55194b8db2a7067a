// A client-side ring buffer of cluster samples (queue depth, replicas vs desired, completions) taken every
// few seconds on every page, kept for an hour in sessionStorage so a reload does not lose the charts.

import { autoscalerGpus, autoscalerRows, autoscalerStatus, endpointHealth, listEndpoints } from "./api.js";
import { pick } from "./ui.js";

const STORAGE_KEY = "ripple.samples.v1";
export const SAMPLE_INTERVAL_MS = 5000;
export const WINDOW_MS = 3600 * 1000;
const MAX_ENDPOINTS_POLLED = 24;

let samples = load();
let latest = null;
const listeners = new Set();
let timer = null;

function load() {
  try {
    const parsed = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "[]");
    return Array.isArray(parsed) ? parsed.filter((p) => p.t > Date.now() - WINDOW_MS) : [];
  } catch {
    return [];
  }
}

function save() {
  try {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(samples));
  } catch {
    // Storage full or disabled: the charts simply start empty after a reload.
  }
}

export const getSamples = () => samples;
export const getLatest = () => latest;

export function subscribe(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

// Replicas now and wanted. Without the autoscaler's row for the endpoint (a tick not answered, an endpoint
// it skipped once), the count of workers stands in for "now" and the last known target for "wanted", so
// the chart does not jump to a made-up target and back.
function replicaCounts(row, health, previous) {
  const workers = (health && health.workers) || {};
  const fromHealth = ["idle", "running", "initializing"].reduce((acc, k) => acc + (Number(workers[k]) || 0), 0);
  return {
    current: Number(pick(row, "currentReplicas", "current", "replicas", "running") ?? fromHealth) || 0,
    desired: Number(pick(row, "desiredReplicas", "desired", "target", "targetReplicas")
      ?? (previous ? previous.desired : fromHealth)) || 0,
  };
}

async function collect() {
  const [endpoints, status] = await Promise.all([listEndpoints(), autoscalerStatus()]);
  const rows = status.ok ? autoscalerRows(status.data) : [];
  const names = new Set(endpoints.list.map((ep) => ep.name).filter(Boolean));
  for (const row of rows) if (row.name) names.add(row.name);
  const polled = [...names].sort().slice(0, MAX_ENDPOINTS_POLLED);
  const healths = await Promise.all(polled.map((name) => endpointHealth(name)));
  const perEndpoint = {};
  polled.forEach((name, i) => {
    const health = healths[i].ok ? healths[i].data : null;
    const row = rows.find((r) => r.name === name) || null;
    const jobs = (health && health.jobs) || {};
    perEndpoint[name] = {
      queued: Number(jobs.inQueue ?? pick(row, "queued", "queueDepth", "inQueue") ?? 0) || 0,
      inProgress: Number(jobs.inProgress ?? pick(row, "inProgress", "running") ?? 0) || 0,
      completed: Number(jobs.completed ?? 0) || 0,
      failed: Number(jobs.failed ?? 0) || 0,
      ...replicaCounts(row, health, samples.length ? samples[samples.length - 1].eps[name] : null),
    };
  });
  return { endpoints, status, healths: Object.fromEntries(polled.map((n, i) => [n, healths[i]])), perEndpoint, rows };
}

export async function sampleNow() {
  const now = Date.now();
  let data;
  try {
    data = await collect();
  } catch (err) {
    data = { error: String(err) };
  }
  latest = { t: now, ...data };
  const gpus = data.status && data.status.ok ? autoscalerGpus(data.status.data) : null;
  if (data.perEndpoint) {
    samples.push({ t: now, eps: data.perEndpoint, gpusUsed: gpus ? gpus.used ?? null : null });
    samples = samples.filter((p) => p.t > now - WINDOW_MS);
    save();
  }
  for (const listener of listeners) listener(latest);
  return latest;
}

export function startSampler() {
  if (timer) return;
  sampleNow();
  timer = setInterval(() => {
    if (document.visibilityState === "visible") sampleNow();
  }, SAMPLE_INTERVAL_MS);
}

// Completed jobs per minute over the last ~minute for one endpoint (null until two samples exist).
export function throughputPerMin(name) {
  const last = samples[samples.length - 1];
  if (!last || !last.eps[name]) return null;
  let base = null;
  for (const sample of samples) {
    if (sample.t >= last.t - 60000 && sample.eps[name]) { base = sample; break; }
  }
  if (!base || base === last) return null;
  const done = last.eps[name].completed + last.eps[name].failed - base.eps[name].completed - base.eps[name].failed;
  return Math.max(0, (done * 60000) / (last.t - base.t));
}
