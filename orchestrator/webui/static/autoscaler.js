// Autoscaler: on/off switch, GPU use, per-endpoint replicas and priorities, decision history with reasons.

import { autoscalerGpus, autoscalerHistory, autoscalerRows, autoscalerStatus, asList, listEndpoints, post } from "./api.js";
import {
  badge, card, confirmDialog, fmtAgo, fmtNumber, fmtSeconds, fmtTime, h, meter, notAvailable, pageHead, pick,
  replace, select, table, toast,
} from "./ui.js";

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
  replace(root, head,
    h("div", { class: "grid grid-side" },
      card("Endpoints", rowsBox),
      card("Cluster", statusBox)),
    card("Decision history", historyBox, historyPick));

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
      [h("button", { class: "btn btn-primary", type: "button", id: "autoscaler-enable", disabled: enabled === true, onclick: () => toggle(true) }, "Enable"),
        h("button", { class: "btn btn-danger", type: "button", id: "autoscaler-disable", disabled: enabled === false, onclick: () => toggle(false) }, "Disable")]));
    if (!result.ok) {
      replace(statusBox, notAvailable("Autoscaler status", result));
      replace(rowsBox, notAvailable("Per-endpoint status", result));
      return;
    }
    const gpus = autoscalerGpus(status);
    replace(statusBox, gpus
      ? h("div", {},
        h("dl", { class: "kv" },
          h("dt", {}, "GPUs total"), h("dd", {}, fmtNumber(gpus.total, 2)),
          h("dt", {}, "GPUs used"), h("dd", {}, fmtNumber(gpus.used, 2)),
          h("dt", {}, "GPUs free"), h("dd", {}, fmtNumber(gpus.free, 2)),
          h("dt", {}, "Last decision"), h("dd", {}, fmtAgo(pick(status, "lastTickAt", "lastDecisionAt", "updatedAt")))),
        meter([{ value: Number(gpus.used) || 0, tone: "indigo" }], Number(gpus.total) || 1))
      : h("div", { class: "empty" }, "No GPU figures reported."));
    replace(rowsBox, table([
      { label: "Endpoint", cell: (r) => h("a", { href: `#/endpoints/${encodeURIComponent(r.name)}` }, r.name ?? "—") },
      { label: "Replicas", num: true, cell: (r) => fmtNumber(pick(r, "currentReplicas", "current", "replicas")) },
      { label: "Desired", num: true, cell: (r) => fmtNumber(pick(r, "desiredReplicas", "desired", "target")) },
      { label: "Queued", num: true, cell: (r) => fmtNumber(pick(r, "queued", "queueDepth", "inQueue")) },
      { label: "Priority", num: true, cell: (r) => fmtNumber(pick(r, "priority")) },
      { label: "Effective", num: true, cell: (r) => fmtNumber(pick(r, "effectivePriority"), 1) },
      { label: "Idle for", num: true, cell: (r) => fmtSeconds(pick(r, "idleS", "idleTimeS", "idleSeconds")) },
      { label: "Waiting for", num: true, cell: (r) => fmtSeconds(pick(r, "waitingS", "waitingTimeS", "waitSeconds")) },
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
      { label: "Action", cell: (d) => badge(pick(d, "action", "kind", "type", "decision")) },
      { label: "Replicas", num: true, cell: (d) => {
        const from = pick(d, "from", "fromReplicas", "current");
        const to = pick(d, "to", "toReplicas", "desired", "target");
        return from === undefined && to === undefined ? "—" : `${fmtNumber(from)} → ${fmtNumber(to)}`;
      } },
      { label: "Reason", wrap: true, cell: (d) => pick(d, "reason", "why") ?? "—" },
    ], rows, "No decisions recorded for this endpoint yet."));
  };

  const endpoints = await listEndpoints();
  if (!ctx.alive()) return;
  const names = endpoints.list.map((ep) => ep.name);
  replace(historyPick, h("option", { value: "" }, "Choose an endpoint"), names.map((n) => h("option", { value: n }, n)));
  if (names.length) historyPick.value = names[0];
  historyPick.addEventListener("change", drawHistory);
  ctx.every(draw, 5000);
  ctx.every(drawHistory, 10000);
  await Promise.all([draw(), drawHistory()]);
}
