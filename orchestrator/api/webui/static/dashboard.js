// Dashboard: headline numbers, charts of the last hour, endpoints, workers by state, recent jobs.

import { asList, autoscalerGpus, listJobs, listWorkers, readiness, specs } from "./api.js";
import { chartLegend, lineChart, PALETTE } from "./charts.js";
import { getLatest, getSamples, sampleNow, subscribe, throughputPerMin, WINDOW_MS } from "./sampler.js";
import {
  badge, card, fmtAgo, fmtNumber, h, meter, notAvailable, pageHead, pick, replace, shortId, stat, table, tone,
} from "./ui.js";

const WORKER_STATES = ["STARTING", "IDLE", "BUSY", "DRAINING", "STOPPED"];

export async function mount(root, ctx) {
  const stats = h("div", { class: "grid grid-stats" });
  const queueChart = h("div", {});
  const replicaChart = h("div", {});
  const replicaPick = h("select", { id: "replica-endpoint", "aria-label": "Endpoint" });
  const endpointsBox = h("div", {});
  const workersBox = h("div", {});
  const jobsBox = h("div", {});
  replace(root,
    pageHead("Dashboard", "Live view of queues, workers and GPUs. Refreshes every few seconds."),
    stats,
    h("div", { class: "grid grid-2" },
      card("Queue depth · last hour", queueChart),
      card("Replicas vs desired · last hour", replicaChart, replicaPick)),
    card("Endpoints", endpointsBox, h("a", { class: "btn change", href: "#/endpoints/new" }, "New endpoint")),
    h("div", { class: "grid grid-2" },
      card("Workers by state", workersBox, h("a", { href: "#/workers" }, "All workers →")),
      card("Recent jobs", jobsBox, h("a", { href: "#/jobs" }, "All jobs →"))));

  let workers = { ok: false, list: [] };
  let jobs = { ok: false, list: [] };
  let store = null;
  let gpusTotal = null;
  const draw = () => {
    const latest = getLatest();
    if (!latest || !ctx.alive()) return;
    drawStats(stats, latest, workers, gpusTotal, store);
    drawCharts(queueChart, replicaChart, replicaPick);
    drawEndpoints(endpointsBox, latest);
    drawWorkers(workersBox, workers);
    drawJobs(jobsBox, jobs);
  };
  const refreshLists = async () => {
    [workers, jobs, store] = await Promise.all([listWorkers(), listJobs({ limit: 8 }), readiness()]);
    draw();
  };
  replicaPick.addEventListener("change", draw);
  // Without the autoscaler's figures, the cluster's GPU count still comes from the worker specs.
  specs().then((result) => {
    if (!result.ok) return;
    gpusTotal = asList(result.data, "specs", "nodes").reduce((acc, node) => acc + (Number(node.gpus) || 0), 0);
    draw();
  });
  ctx.onLeave(subscribe(() => draw()));
  ctx.every(refreshLists, 5000);
  if (!getLatest()) await sampleNow();
  await refreshLists();
}

function sum(values) {
  return values.reduce((acc, v) => acc + (Number(v) || 0), 0);
}

// The job store's memory (/health/ready's storeMemory, its share and whether it is high judged by the server,
// as ripple status and ripple doctor judge it): no job can be queued once full.
function storeStat(ready) {
  const m = ready && ready.ok && ready.data ? ready.data.storeMemory : null;
  if (!m) return null;
  const mib = (bytes) => fmtNumber(bytes / 1048576);
  if (!m.maxBytes) return stat("Job store", `${mib(m.usedBytes)} MiB`, "Redis memory (no maxmemory)");
  const high = Boolean(m.high);
  return stat("Job store", `${mib(m.usedBytes)} / ${mib(m.maxBytes)} MiB`,
    m.share >= 1 ? "full: no job can be queued"
      : high ? `${Math.round(m.share * 100)}% full: when full, no job can be queued` : "Redis memory of its maxmemory",
    meter([{ value: m.usedBytes, tone: high ? "red" : "indigo" }], m.maxBytes));
}

function drawStats(box, latest, workers, gpusTotal, store) {
  const eps = Object.values(latest.perEndpoint || {});
  const names = Object.keys(latest.perEndpoint || {});
  const rates = names.map(throughputPerMin).filter((v) => v !== null);
  const gpus = latest.status && latest.status.ok ? autoscalerGpus(latest.status.data) : null;
  const active = workers.list.filter((w) => String(w.state).toUpperCase() !== "STOPPED");
  const busy = workers.list.filter((w) => String(w.state).toUpperCase() === "BUSY").length;
  replace(box,
    stat("Endpoints", latest.endpoints.ok ? fmtNumber(latest.endpoints.list.length) : "—",
      latest.endpoints.ok ? null : "not available"),
    stat("Queued jobs", fmtNumber(sum(eps.map((e) => e.queued))), "waiting for a worker"),
    stat("In progress", fmtNumber(sum(eps.map((e) => e.inProgress))), "held by workers"),
    stat("Throughput", rates.length ? `${fmtNumber(sum(rates), 1)}/min` : "—", "jobs finished, last minute"),
    stat("Workers", workers.ok ? fmtNumber(active.length) : "—",
      workers.ok ? `${busy} busy` : "not available",
      workers.ok ? meter([{ value: busy, tone: "indigo" }], Math.max(active.length, 1)) : null),
    gpus
      ? stat("GPUs in use", `${fmtNumber(gpus.used, 2)} / ${fmtNumber(gpus.total, 2)}`, `${fmtNumber(gpus.free, 2)} free`,
        meter([{ value: Number(gpus.used) || 0, tone: "indigo" }], Number(gpus.total) || 1))
      : stat("GPUs", gpusTotal === null ? "—" : fmtNumber(gpusTotal, 2), gpusTotal === null ? "not available" : "in the cluster; use not reported"),
    storeStat(store));
}

function drawCharts(queueBox, replicaBox, replicaPick) {
  const samples = getSamples();
  const now = Date.now();
  const names = [...new Set(samples.flatMap((p) => Object.keys(p.eps)))].sort();
  const width = Math.max(320, Math.round(queueBox.clientWidth || 560));
  const xStartMs = Math.max(samples.length ? samples[0].t : now, now - WINDOW_MS);
  const queueSeries = names.slice(0, PALETTE.length).map((name, i) => ({
    label: name,
    color: PALETTE[i],
    points: samples.filter((p) => p.eps[name]).map((p) => [p.t, p.eps[name].queued]),
  }));
  replace(queueBox,
    lineChart(queueSeries, { width, xStartMs, xEndMs: now, label: "Queue depth", emptyText: names.length ? undefined : "No endpoints yet." }),
    queueSeries.length ? chartLegend(queueSeries) : null);

  const chosen = replicaPick.value || "";
  replace(replicaPick, h("option", { value: "" }, "All endpoints"),
    names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
  const value = (p, key) => (chosen ? p.eps[chosen]?.[key] ?? 0 : sum(Object.values(p.eps).map((e) => e[key])));
  const relevant = samples.filter((p) => !chosen || p.eps[chosen]);
  const replicaSeries = [
    { label: "replicas", color: PALETTE[0], step: true, points: relevant.map((p) => [p.t, value(p, "current")]) },
    { label: "desired", color: PALETTE[3], step: true, dashed: true, points: relevant.map((p) => [p.t, value(p, "desired")]) },
  ];
  replace(replicaBox,
    lineChart(replicaSeries, { width, xStartMs, xEndMs: now, label: "Replicas vs desired" }),
    chartLegend(replicaSeries));
}

function drawEndpoints(box, latest) {
  if (!latest.endpoints.ok && Object.keys(latest.perEndpoint || {}).length === 0) {
    replace(box, notAvailable("Endpoint list", latest.endpoints));
    return;
  }
  const byName = new Map(latest.endpoints.list.map((ep) => [ep.name, ep]));
  const rows = Object.entries(latest.perEndpoint || {}).map(([name, e]) => ({ name, ...e, spec: byName.get(name) || {} }));
  replace(box, table([
    { label: "Endpoint", cell: (r) => h("a", { href: `#/endpoints/${encodeURIComponent(r.name)}` }, r.name) },
    { label: "Queued", num: true, cell: (r) => fmtNumber(r.queued) },
    { label: "In progress", num: true, cell: (r) => fmtNumber(r.inProgress) },
    { label: "Completed", num: true, cell: (r) => fmtNumber(r.completed) },
    { label: "Failed", num: true, cell: (r) => fmtNumber(r.failed) },
    { label: "Jobs/min", num: true, cell: (r) => fmtNumber(throughputPerMin(r.name), 1) },
    { label: "Replicas", num: true, cell: (r) => `${fmtNumber(r.current)} / ${fmtNumber(r.desired)}` },
    { label: "GPUs each", num: true, cell: (r) => fmtNumber(pick(r.spec, "gpus"), 2) },
    { label: "Priority", num: true, cell: (r) => fmtNumber(pick(r.spec, "priority")) },
  ], rows, "No endpoints yet. Create one to start submitting jobs."));
}

function drawWorkers(box, workers) {
  if (!workers.ok) {
    replace(box, notAvailable("Worker list", workers));
    return;
  }
  const counts = {};
  for (const w of workers.list) {
    const state = String(w.state || "UNKNOWN").toUpperCase();
    counts[state] = (counts[state] || 0) + 1;
  }
  const states = [...new Set([...WORKER_STATES, ...Object.keys(counts)])].filter((s) => counts[s]);
  if (states.length === 0) {
    replace(box, h("div", { class: "empty" }, "No workers running. The autoscaler starts them when jobs arrive."));
    return;
  }
  const endpoints = [...new Set(workers.list.map((w) => w.endpoint || "—"))].sort();
  const perEndpoint = endpoints.map((name) => {
    const mine = workers.list.filter((w) => (w.endpoint || "—") === name);
    const row = { name, total: mine.length };
    for (const s of states) row[s] = mine.filter((w) => String(w.state || "UNKNOWN").toUpperCase() === s).length;
    return row;
  });
  replace(box,
    meter(states.map((s) => ({ value: counts[s], tone: tone(s), label: s }))),
    h("div", { class: "legend" }, states.map((s) => h("span", {}, badge(s), ` ${counts[s]}`))),
    h("div", { class: "spaced" }, table([
      { label: "Endpoint", cell: (r) => r.name },
      ...states.map((s) => ({ label: s.toLowerCase(), num: true, cell: (r) => (r[s] ? String(r[s]) : "·") })),
      { label: "Total", num: true, cell: (r) => String(r.total) },
    ], perEndpoint)));
}

function drawJobs(box, jobs) {
  if (!jobs.ok) {
    replace(box, notAvailable("Job list", jobs));
    return;
  }
  replace(box, table([
    { label: "Job", cell: (j) => h("a", { class: "id", href: `#/jobs/${encodeURIComponent(j.id)}` }, shortId(j.id)) },
    { label: "Endpoint", cell: (j) => pick(j, "endpoint") ?? "—" },
    { label: "Status", cell: (j) => badge(j.status) },
    { label: "Created", cell: (j) => fmtAgo(pick(j, "createdAt", "created_at", "submittedAt")) },
  ], jobs.list, "No jobs yet."));
}
