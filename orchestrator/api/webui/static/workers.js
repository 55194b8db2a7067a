// Workers: every worker with its state and health, cold-start time, heartbeat age, and a drain button.

import { drainWorker, listWorkers } from "./api.js";
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
      { label: "Worker", cell: (w) => h("span", { class: "id" }, w.workerId ?? "—") },
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
        class: "btn", type: "button", "data-drain": w.workerId,
        disabled: w.draining === true || NOT_DRAINABLE.has(String(w.state).toUpperCase()), onclick: () => drain(w, draw),
      }, "Drain") },
    ], rows, "No workers. The autoscaler starts them when jobs arrive; outside workers appear on their first poll."));
  };
  filter.addEventListener("change", draw);
  ctx.every(draw, 4000);
  await draw();
}
