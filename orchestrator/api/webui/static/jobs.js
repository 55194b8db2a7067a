// Jobs: filtered listing with paging, a test-job form, and one job's input, output, timings and attempts.

import { cancelJob, getJob, listEndpoints, listJobs, retryJob, runJob } from "./api.js";
import {
  badge, card, fmtAgo, fmtMs, fmtTime, h, humanize, json, notAvailable, pageHead, pick, pre, replace, select, shortId,
  table, toast,
} from "./ui.js";

const STATES = ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"];
const CANCELLABLE = new Set(["IN_QUEUE", "IN_PROGRESS"]);
const RETRYABLE = new Set(["FAILED", "TIMED_OUT", "CANCELLED"]);
const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]);
const enc = encodeURIComponent;

const endpointOf = (job) => pick(job, "endpoint", "endpointName", "endpoint_name");
const createdOf = (job) => pick(job, "createdAt", "created_at", "submittedAt", "enqueuedAt");

function jobActions(job, after) {
  const status = String(job.status || "").toUpperCase();
  const endpoint = endpointOf(job);
  const buttons = [];
  if (endpoint && CANCELLABLE.has(status)) {
    buttons.push(h("button", { class: "btn btn-danger change", type: "button", "data-cancel": job.id, onclick: async () => {
      const result = await cancelJob(endpoint, job.id);
      toast(result.ok ? `Job ${shortId(job.id)} cancelled.` : `Cancel failed: ${result.error}`, !result.ok);
      await after();
    } }, "Cancel"));
  }
  if (endpoint && RETRYABLE.has(status)) {
    buttons.push(h("button", { class: "btn change", type: "button", "data-retry": job.id, onclick: async () => {
      const result = await retryJob(endpoint, job.id);
      toast(result.ok ? `Job ${shortId(job.id)} queued again.` : `Retry failed: ${result.error}`, !result.ok);
      await after();
    } }, "Retry"));
  }
  return h("span", { class: "actions" }, buttons);
}

function submitForm(endpoints, initial, after) {
  const pickEp = select("submit-endpoint", endpoints.map((ep) => ep.name), initial || endpoints[0]?.name);
  const input = h("textarea", { id: "submit-input", rows: 1, spellcheck: "false" });
  input.value = '{"prompt": "hello"}';
  const message = h("div", { class: "spaced", hidden: true });
  const button = h("button", { class: "btn btn-primary", type: "submit" }, "Submit job");
  const form = h("form", { id: "submit-job", class: "change" },
    h("div", { class: "filters" },
      h("div", { class: "field" }, h("label", { for: "submit-endpoint" }, "Endpoint"), pickEp),
      h("div", { class: "field grow" }, h("label", { for: "submit-input" }, "Input (JSON), sent as {\"input\": …} to /v2/<endpoint>/run"), input),
      button),
    message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let value;
    try {
      value = JSON.parse(input.value);
    } catch (err) {
      replace(message, h("div", { class: "err" }, `Not valid JSON: ${err.message}`));
      message.hidden = false;
      return;
    }
    if (!pickEp.value) {
      replace(message, h("div", { class: "err" }, "Create an endpoint first."));
      message.hidden = false;
      return;
    }
    button.disabled = true;
    const result = await runJob(pickEp.value, value);
    button.disabled = false;
    if (!result.ok) {
      replace(message, h("div", { class: "err" }, `Not submitted: ${result.error}`));
      message.hidden = false;
      return;
    }
    const id = result.data && result.data.id;
    replace(message, h("div", { class: "notice", id: "submitted" }, "Submitted ",
      h("a", { class: "id", href: `#/jobs/${enc(id)}` }, id), " ", badge(result.data.status)));
    message.hidden = false;
    await after();
  });
  return form;
}

export async function mountList(root, ctx) {
  const endpoints = await listEndpoints();
  if (!ctx.alive()) return;
  const names = endpoints.list.map((ep) => ep.name);
  const filterEp = select("filter-endpoint", [["", "All endpoints"], ...names.map((n) => [n, n])], ctx.query.get("endpoint") || "");
  const filterStatus = select("filter-status", [["", "Any state"], ...STATES.map((s) => [s, s.replace(/_/g, " ")])], ctx.query.get("status") || "");
  const filterLimit = select("filter-limit", [["25", "25"], ["50", "50"], ["100", "100"]], ctx.query.get("limit") || "25");
  const listBox = h("div", {});
  const more = h("div", { class: "actions" });
  let rows = [];
  let nextCursor = null;
  let pagesLoaded = 1;

  const params = () => ({ endpoint: filterEp.value, status: filterStatus.value, limit: filterLimit.value });
  const draw = (result) => {
    if (!result.ok) {
      replace(listBox, notAvailable("Job list", result));
      replace(more);
      return;
    }
    replace(listBox, table([
      { label: "Job", cell: (j) => h("a", { class: "id", href: `#/jobs/${enc(j.id)}`, title: j.id }, shortId(j.id)) },
      { label: "Endpoint", cell: (j) => endpointOf(j) ?? "—" },
      { label: "Status", cell: (j) => badge(j.status) },
      { label: "Created", cell: (j) => fmtAgo(createdOf(j)) },
      { label: "Queued for", num: true, cell: (j) => fmtMs(pick(j, "delayTime")) },
      { label: "Ran for", num: true, cell: (j) => fmtMs(pick(j, "executionTime")) },
      { label: "Worker", cell: (j) => h("span", { class: "id" }, shortId(pick(j, "workerId") ?? "—")) },
      { label: "", cell: (j) => jobActions(j, reload) },
    ], rows, "No jobs match these filters."));
    replace(more, nextCursor ? h("button", { class: "btn", type: "button", id: "load-more", onclick: loadMore }, "Load more") : null);
  };
  const reload = async () => {
    const result = await listJobs(params());
    if (!ctx.alive()) return;
    rows = result.list;
    nextCursor = result.nextCursor;
    pagesLoaded = 1;
    draw(result);
  };
  const loadMore = async () => {
    const result = await listJobs({ ...params(), cursor: nextCursor });
    if (!ctx.alive() || !result.ok) return;
    rows = rows.concat(result.list);
    nextCursor = result.nextCursor;
    pagesLoaded += 1;
    draw(result);
  };
  for (const el of [filterEp, filterStatus, filterLimit]) {
    el.addEventListener("change", () => {
      const q = new URLSearchParams(Object.entries(params()).filter(([, v]) => v));
      history.replaceState(null, "", `#/jobs${q.toString() ? `?${q}` : ""}`);
      reload();
    });
  }
  const filters = h("div", { class: "filters" },
    h("div", { class: "field" }, h("label", { for: "filter-endpoint" }, "Endpoint"), filterEp),
    h("div", { class: "field" }, h("label", { for: "filter-status" }, "State"), filterStatus),
    h("div", { class: "field" }, h("label", { for: "filter-limit" }, "Per page"), filterLimit));
  replace(root,
    pageHead("Jobs", "Newest first. Cancel, retry, or submit a test job."),
    card("Submit a test job", endpoints.ok && names.length
      ? submitForm(endpoints.list, ctx.query.get("endpoint"), reload)
      : h("div", { class: "empty" }, endpoints.ok ? "Create an endpoint first." : "Endpoint list not available.")),
    card(null, h("div", {}, filters, h("div", { class: "spaced" }, listBox), more)));
  ctx.every(() => { if (pagesLoaded === 1) reload(); }, 5000);
  await reload();
}

const isTimeKey = (k) => /(^at$|At$|_at$)/.test(k);
const isDurationKey = (k) => /(Time|Ms|_ms)$/.test(k);

function timings(job) {
  const keys = Object.keys(job).filter((k) => (isTimeKey(k) || isDurationKey(k)) && typeof job[k] !== "object");
  if (keys.length === 0) return h("div", { class: "empty" }, "No timings recorded.");
  return h("dl", { class: "kv" }, keys.map((k) => [
    h("dt", {}, humanize(k)),
    h("dd", {}, isTimeKey(k) ? fmtTime(job[k]) : fmtMs(job[k])),
  ]));
}

function details(job) {
  const rows = [
    ["Attempts", pick(job, "attempts", "attemptCount")],
    ["Max retries", pick(job, "maxRetries")],
    ["Execution timeout", job.executionTimeout !== undefined ? fmtMs(job.executionTimeout) : undefined],
    ["TTL", job.ttl !== undefined ? fmtMs(job.ttl) : undefined],
    ["Low priority", job.lowPriority === undefined ? undefined : job.lowPriority ? "yes" : "no"],
    ["Worker", pick(job, "workerId")],
    ["Webhook", pick(job, "webhook")],
  ].filter(([, v]) => v !== undefined && v !== null && !Array.isArray(v));
  if (rows.length === 0) return h("div", { class: "empty" }, "No details recorded.");
  // The worker that ran the job links its page (its record and its logs).
  const cell = (k, v) => (k === "Worker"
    ? h("a", { href: `#/workers/${encodeURIComponent(v)}`, "data-worker-link": v }, String(v)) : String(v));
  return h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, cell(k, v))]));
}

function historyCell(key, value) {
  if (typeof value === "string" && (STATES.includes(value.toUpperCase()) || /status|state|outcome/i.test(key))) {
    return badge(value);
  }
  if (isTimeKey(key)) return fmtTime(value);
  if (value !== null && typeof value === "object") return json(value);
  return value === undefined || value === null ? "—" : String(value);
}

// The attempt history: the first list among the usual names (``attempts`` may be just a count).
function history(job) {
  const list = [job.history, job.attempts, job.attemptHistory].find(Array.isArray);
  if (!list || list.length === 0) return h("div", { class: "empty" }, "No history yet.");
  const found = new Set(list.flatMap((a) => (a && typeof a === "object" ? Object.keys(a) : [])));
  const preferred = ["at", "from", "to", "worker", "workerId", "reason"].filter((k) => found.has(k));
  const keys = [...preferred, ...[...found].filter((k) => !preferred.includes(k))];
  const columns = keys.map((k) => ({
    label: humanize(k),
    wrap: /reason|error/i.test(k),
    cell: (a) => historyCell(k, a[k]),
  }));
  return table(columns, list);
}

export async function mountDetail(root, ctx) {
  const id = ctx.params[0];
  const draw = async () => {
    const result = await getJob(id);
    if (!ctx.alive()) return;
    if (!result.ok) {
      replace(root, pageHead(`Job ${shortId(id)}`), notAvailable(`Job ${id}`, result));
      return;
    }
    const job = result.data.job ?? result.data;
    const endpoint = endpointOf(job);
    const status = String(job.status || "").toUpperCase();
    const known = new Set(["id", "input", "output", "error", "attempts", "history", "status", "endpoint", "stream", "waitReason"]);
    // Why a queued job waits (``waitReason``: a stable code and a one-line message).
    const wait = status === "IN_QUEUE" && job.waitReason
      ? h("div", { class: "notice wait-reason", style: "margin-bottom: 14px", "data-code": job.waitReason.code },
        h("strong", {}, "Waiting: "), String(job.waitReason.message || ""), " ",
        h("span", { class: "id" }, `(${job.waitReason.code})`))
      : null;
    const rest = Object.fromEntries(Object.entries(job).filter(([k, v]) => !known.has(k) && typeof v === "object" && v !== null));
    replace(root,
      pageHead(h("span", {}, "Job ", h("span", { class: "id" }, id), " ", badge(job.status)),
        endpoint ? h("span", {}, "Endpoint ", h("a", { href: `#/jobs?endpoint=${enc(endpoint)}` }, endpoint)) : null,
        jobActions(job, draw)),
      wait,
      h("div", { class: "grid grid-2" },
        card("Input", pre(job.input ?? null)),
        card(job.error ? "Error" : "Output", job.error ? pre(job.error, "error")
          : job.output !== undefined && job.output !== null ? pre(job.output) : h("div", { class: "empty" }, FINAL.has(status) ? "No output." : "Not finished yet."))),
      h("div", { class: "grid grid-2" }, card("Timings", timings(job)), card("Details", details(job))),
      card("History", history(job)),
      Object.keys(rest).length ? card("More", pre(rest)) : null);
  };
  // Keep polling even for a final state: a retry from this page puts the job back in the queue.
  await draw();
  ctx.every(draw, 3000);
}
