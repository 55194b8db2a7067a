// Autoscaler: on/off switch, GPU use, per-endpoint replicas and priorities, decision history with reasons.

import { autoscalerGpus, autoscalerHistory, autoscalerRows, autoscalerStatus, asList, listEndpoints, post } from "./api.js";
import {
  badge, card, confirmDialog, fmtNumber, fmtSeconds, fmtTime, h, meter, notAvailable, pageHead, pick,
  replace, select, stat, table, toast,
} from "./ui.js";

// What one decision changed: "+2 replicas", "drain r-1, r-2", "wanted 1 more", or from -> to.
function change(d) {
  const ids = pick(d, "replica_ids", "replicaIds");
  if (Array.isArray(ids)) {
    const by = pick(d, "preempted_by", "preemptedBy");
    return `drain ${ids.length}${by ? ` for ${by}` : ""}`;
  }
  const count = pick(d, "count");
  if (count !== undefined) return `+${fmtNumber(count)} replica${count === 1 ? "" : "s"}`;
  const wanted = pick(d, "wanted");
  if (wanted !== undefined) return `wanted ${fmtNumber(wanted)} more`;
  const from = pick(d, "from", "fromReplicas");
  const to = pick(d, "to", "toReplicas");
  return from === undefined && to === undefined ? "—" : `${fmtNumber(from)} → ${fmtNumber(to)}`;
}

function enabledOf(status) {
  const value = pick(status, "enabled", "autoscalerEnabled", "isEnabled");
  return value === undefined ? null : Boolean(value);
}

export async function mount(root, ctx) {
  const head = h("div", {});
  const statusBox = h("div", {});
  const rowsBox = h("div", {});
  const historyPick = select("history-endpoint", [], "");
  const historyBox = h("div", {});
  replace(root, head, statusBox, card("Endpoints", rowsBox), card("Decision history", historyBox, historyPick));

  const toggle = async (enable) => {
    if (!enable && !(await confirmDialog("Disable the autoscaler?",
      "Replica counts stay where they are until it is enabled again.", "Disable"))) return;
    const result = await post(`/api/v1/autoscaler/${enable ? "enable" : "disable"}`);
    toast(result.ok ? `Autoscaler ${enable ? "enabled" : "disabled"}.` : `Failed: ${result.error}`, !result.ok);
    await draw();
  };

  const draw = async () => {
    const result = await autoscalerStatus();
    if (!ctx.alive()) return;
    const status = result.ok ? result.data : null;
    const enabled = enabledOf(status);
    replace(head, pageHead(h("span", {}, "Autoscaler ", enabled === null ? null : badge(enabled ? "ENABLED" : "DISABLED")),
      "Sizes every endpoint's pool across the shared GPUs, by queue depth and priority.",
      [h("button", { class: "btn btn-primary change", type: "button", id: "autoscaler-enable", disabled: enabled === true, onclick: () => toggle(true) }, "Enable"),
        h("button", { class: "btn btn-danger change", type: "button", id: "autoscaler-disable", disabled: enabled === false, onclick: () => toggle(false) }, "Disable")]));
    if (!result.ok) {
      replace(statusBox, h("div", { class: "grid" }, notAvailable("Autoscaler status", result)));
      replace(rowsBox, notAvailable("Per-endpoint status", result));
      return;
    }
    const gpus = autoscalerGpus(status) || {};
    const maxGpus = pick(status.gpus || {}, "maxGpus");
    replace(statusBox, h("div", { class: "grid grid-stats" },
      stat("GPUs in use", `${fmtNumber(gpus.used, 2)} / ${fmtNumber(gpus.total, 2)}`,
        `${fmtNumber(gpus.free, 2)} free${maxGpus ? `, at most ${fmtNumber(maxGpus, 2)} for Ripple` : ""}`,
        meter([{ value: Number(gpus.used) || 0, tone: "indigo" }], Number(gpus.total) || 1)),
      stat("Endpoints scaled", fmtNumber(autoscalerRows(status).length), "with a pool of Ray replicas"),
      stat("Decision loop", fmtSeconds(pick(status, "intervalS")), `${fmtNumber(pick(status, "ticks"))} ticks so far`)));
    replace(rowsBox, table([
      { label: "Endpoint", cell: (r) => h("a", { href: `#/endpoints/${encodeURIComponent(r.name)}` }, r.name ?? "—") },
      { label: "Replicas", num: true, cell: (r) => fmtNumber(pick(r, "currentReplicas", "current", "replicas")) },
      { label: "Desired", num: true, cell: (r) => fmtNumber(pick(r, "desiredReplicas", "desired", "target")) },
      { label: "Starting", num: true, cell: (r) => fmtNumber(pick(r, "starting")) },
      { label: "Queued", num: true, cell: (r) => fmtNumber(pick(r, "queued", "queueDepth", "inQueue")) },
      { label: "Priority", num: true, cell: (r) => fmtNumber(pick(r, "priority")) },
      { label: "Effective", num: true, cell: (r) => fmtNumber(pick(r, "effectivePriority"), 1) },
      { label: "Idle for", num: true, cell: (r) => fmtSeconds(pick(r, "idleS", "idleTimeS", "idleSeconds")) },
      { label: "Waiting for", num: true, cell: (r) => fmtSeconds(pick(r, "waitingS", "waitingTimeS", "waitSeconds")) },
      { label: "Blocked", wrap: true, cell: (r) => pick(r, "blocked") ?? "" },
    ], autoscalerRows(status), "No endpoints."));
  };

  const drawHistory = async () => {
    const name = historyPick.value;
    if (!name) {
      replace(historyBox, h("div", { class: "empty" }, "Choose an endpoint to see its decisions."));
      return;
    }
    const result = await autoscalerHistory(name, 50);
    if (!ctx.alive()) return;
    if (!result.ok) {
      replace(historyBox, notAvailable("Decision history", result));
      return;
    }
    const rows = asList(result.data, "history", "decisions", "items");
    replace(historyBox, table([
      { label: "When", cell: (d) => fmtTime(pick(d, "at", "timestamp", "time", "atMs", "createdAt")) },
      { label: "Decision", cell: (d) => badge(pick(d, "kind", "action", "type", "decision")) },
      { label: "Change", cell: change },
      { label: "Reason", wrap: true, cell: (d) => pick(d, "reason", "why") ?? "—" },
    ], rows, "No decisions recorded for this endpoint yet."));
  };

  const [endpoints, first] = await Promise.all([listEndpoints(), autoscalerStatus()]);
  if (!ctx.alive()) return;
  const names = endpoints.list.map((ep) => ep.name);
  replace(historyPick, h("option", { value: "" }, "Choose an endpoint"), names.map((n) => h("option", { value: n }, n)));
  const scaled = first.ok ? autoscalerRows(first.data).map((r) => r.name).filter((n) => names.includes(n)) : [];
  if (names.length) historyPick.value = scaled[0] || names[0];
  historyPick.addEventListener("change", drawHistory);
  ctx.every(draw, 5000);
  ctx.every(drawHistory, 10000);
  await Promise.all([draw(), drawHistory()]);
}
