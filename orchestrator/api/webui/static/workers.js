// Workers: every worker with its state and health, cold-start time, heartbeat age, and a drain button;
// one worker's page (#/workers/ID): its record and a log view of what its replica printed.

import { drainWorker, listWorkers, workerLogs } from "./api.js";
import {
  badge, card, confirmDialog, fmtAgo, fmtSeconds, h, notAvailable, pageHead, pick, replace, select, table, toast,
} from "./ui.js";

const NOT_DRAINABLE = new Set(["DRAINING", "STOPPED", "STOPPING", "DEAD", "LOST"]);

function jobsCell(worker) {
  const jobs = pick(worker, "jobs", "jobIds", "currentJobs");
  if (Array.isArray(jobs)) {
    if (jobs.length === 0) return h("span", { class: "muted" }, "none");
    return h("span", { title: jobs.join(", ") }, `${jobs.length} job${jobs.length === 1 ? "" : "s"}`);
  }
  return jobs === undefined ? "—" : String(jobs);
}

async function drain(worker, after) {
  const id = worker.workerId;
  const ok = await confirmDialog(`Drain worker ${id}?`,
    "It takes no new jobs, finishes what it holds, then stops. The autoscaler may start a replacement.",
    "Drain worker");
  if (!ok) return;
  const result = await drainWorker(id);
  toast(result.ok ? `Worker ${id} is draining.` : `Drain failed: ${result.error}`, !result.ok);
  await after();
}

export async function mount(root, ctx) {
  const filter = select("worker-endpoint", [["", "All endpoints"]], "");
  const summary = h("div", { class: "legend" });
  const box = h("div", {});
  replace(root,
    pageHead("Workers", "Ray worker replicas and outside workers, by endpoint.",
      h("div", { class: "field" }, filter)),
    card(null, h("div", {}, summary, box)));
  const draw = async () => {
    const result = await listWorkers();
    if (!ctx.alive()) return;
    if (!result.ok) {
      replace(summary);
      replace(box, notAvailable("Worker list", result));
      return;
    }
    const endpoints = [...new Set(result.list.map((w) => w.endpoint).filter(Boolean))].sort();
    const chosen = filter.value;
    replace(filter, h("option", { value: "" }, "All endpoints"),
      endpoints.map((n) => h("option", { value: n, selected: n === chosen }, n)));
    const rows = result.list.filter((w) => !chosen || w.endpoint === chosen);
    const counts = {};
    for (const w of rows) counts[w.state || "UNKNOWN"] = (counts[w.state || "UNKNOWN"] || 0) + 1;
    replace(summary, Object.entries(counts).map(([s, n]) => h("span", {}, badge(s), ` ${n}`)));
    replace(box, table([
      { label: "Worker", cell: (w) => (w.workerId
        ? h("a", { class: "id", href: `#/workers/${encodeURIComponent(w.workerId)}` }, w.workerId) : "—") },
      { label: "Endpoint", cell: (w) => w.endpoint ?? "—" },
      { label: "Kind", cell: (w) => pick(w, "kind") ?? "—" },
      { label: "State", cell: (w) => h("span", { class: "actions" }, badge(w.state),
        w.draining === true && String(w.state).toUpperCase() !== "DRAINING" ? badge("DRAINING") : null) },
      { label: "Health", cell: (w) => badge(pick(w, "health")) },
      { label: "Jobs", cell: jobsCell },
      { label: "Cold start", num: true, cell: (w) => fmtSeconds(pick(w, "coldStartS", "coldStart")) },
      { label: "Last heartbeat", cell: (w) => fmtAgo(pick(w, "lastHeartbeatAt", "lastHeartbeat")) },
      { label: "Reason", wrap: true, cell: (w) => pick(w, "reason") ?? "" },
      { label: "", cell: (w) => h("button", {
        class: "btn change", type: "button", "data-drain": w.workerId,
        disabled: w.draining === true || NOT_DRAINABLE.has(String(w.state).toUpperCase()), onclick: () => drain(w, draw),
      }, "Drain") },
    ], rows, "No workers. The autoscaler starts them when jobs arrive; outside workers appear on their first poll."));
  };
  filter.addEventListener("change", draw);
  ctx.every(draw, 4000);
  await draw();
}

const LOG_TAILS = [["100", "Last 100 lines"], ["500", "Last 500 lines"], ["2000", "Last 2000 lines"]];
const LOG_STREAMS = [["stdout", "stdout"], ["stderr", "stderr"]];

function record(worker) {
  const rows = [
    ["Endpoint", worker.endpoint],
    ["Kind", worker.kind],
    ["Health", worker.health],
    ["Node", worker.nodeId],
    ["Ray actor", worker.actorId],
    ["Cold start", worker.coldStartS === undefined || worker.coldStartS === null ? undefined : fmtSeconds(worker.coldStartS)],
    ["Last heartbeat", worker.lastHeartbeatAt ? fmtAgo(worker.lastHeartbeatAt) : undefined],
    ["Jobs", Array.isArray(worker.jobs) ? (worker.jobs.join(", ") || "none") : undefined],
    ["Reason", worker.reason],
    ["Error", worker.error],
  ].filter(([, v]) => v !== undefined && v !== null && v !== "");
  return h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
}

// One worker: its record and a log view (the last N lines of stdout or stderr; "Live" re-reads every 2 s).
export async function mountDetail(root, ctx) {
  const id = ctx.params[0];
  const head = h("div", {});
  const info = h("div", {});
  const tail = select("log-tail", LOG_TAILS, "100");
  const stream = select("log-stream", LOG_STREAMS, "stdout");
  const live = h("input", { type: "checkbox", id: "log-live", checked: true });
  const logBox = h("pre", { class: "log", id: "worker-log", "aria-live": "polite" });
  const logNote = h("div", {});
  replace(root, head,
    card("Worker", info),
    card("Logs", h("div", {}, logNote, logBox),
      h("div", { class: "actions" }, tail, stream, h("label", { for: "log-live" }, live, " Live"))));
  let outside = false;
  const drawWorker = async () => {
    const result = await listWorkers();
    if (!ctx.alive()) return;
    const worker = result.ok ? result.list.find((w) => w.workerId === id) : undefined;
    replace(head, pageHead(h("span", {}, "Worker ", h("span", { class: "id" }, id), " ", badge(worker?.state)),
      worker?.endpoint ? h("span", {}, "Endpoint ", h("a", { href: `#/jobs?endpoint=${encodeURIComponent(worker.endpoint)}` }, worker.endpoint)) : null));
    if (!result.ok) replace(info, notAvailable("Worker list", result));
    else if (!worker) replace(info, h("div", { class: "notice" }, `No worker ${id} now (it may have stopped and been forgotten).`));
    else replace(info, record(worker));
  };
  const drawLogs = async () => {
    const result = await workerLogs(id, tail.value, stream.value);
    if (!ctx.alive()) return;
    if (!result.ok) {
      outside = result.status === 409;
      replace(logNote, h("div", { class: "notice", id: "worker-log-error" }, result.error));
      return;
    }
    replace(logNote);
    const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 8;
    logBox.textContent = result.data.lines.length ? result.data.lines.join("\n") : "(nothing printed yet)";
    if (atBottom) logBox.scrollTop = logBox.scrollHeight;
  };
  tail.addEventListener("change", drawLogs);
  stream.addEventListener("change", drawLogs);
  await Promise.all([drawWorker(), drawLogs()]);
  ctx.every(drawWorker, 5000);
  ctx.every(() => (live.checked && !outside ? drawLogs() : undefined), 2000);
}
