// Endpoints: the list, and one form for create and edit with every contract field, per-field errors from
// the API's 422 detail, a live preview of the request, and delete with confirmation.

import { api, get, isReadOnly, listEndpoints } from "./api.js";
import { getLatest } from "./sampler.js";
import { deployCard, problemNotice, versionsCard, webhookNotice } from "./versions.js";
import {
  card, confirmDialog, fmtNumber, h, json, notAvailable, pageHead, pre, replace, table, toast,
} from "./ui.js";

const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const HANDLER_RE = /^[A-Za-z_][\w.]*:[A-Za-z_]\w*$/;

// kind: text | json | int | float. def: the server default, shown as the placeholder.
const SECTIONS = [
  ["Basics", [
    { key: "name", label: "Name", kind: "text", createOnly: true, help: "Lowercase letters, digits and '-', at most 63 characters." },
    { key: "handler", label: "Handler", kind: "text", placeholder: "package.module:function", nullable: true, help: "Run by Ray worker actors. Leave empty for outside workers only." },
    { key: "runtimeEnv", label: "Runtime env (JSON)", kind: "json", wide: true, placeholder: '{"pip": ["numpy"], "env_vars": {"MODEL": "small"}}', help: "A Ray runtime_env." },
  ]],
  ["Resources per worker", [
    { key: "gpus", label: "GPUs", kind: "float", min: 0, def: 1 },
    { key: "cpus", label: "CPUs", kind: "float", min: 0, def: 0.25 },
    { key: "memoryMb", label: "Memory (MB)", kind: "int", min: 0 },
    { key: "concurrency", label: "Concurrency", kind: "int", min: 1, def: 1, help: "Jobs at once per worker." },
  ]],
  ["Scaling", [
    { key: "minReplicas", label: "Min replicas", kind: "int", min: 0, def: 0 },
    { key: "maxReplicas", label: "Max replicas", kind: "int", min: 0, def: 10 },
    { key: "scaleUpThreshold", label: "Scale-up threshold", kind: "int", min: 1, def: 1, help: "Queued jobs that trigger a scale-up." },
    { key: "scaleDownIdleTime", label: "Scale-down idle time (s)", kind: "float", min: 0, def: 300 },
    { key: "scaleUpCooldown", label: "Scale-up cooldown (s)", kind: "float", min: 0, def: 30 },
    { key: "scaleDownCooldown", label: "Scale-down cooldown (s)", kind: "float", min: 0, def: 60 },
    { key: "priority", label: "Priority (0–100)", kind: "int", min: 0, max: 100, def: 50 },
    { key: "keepAlive", label: "Keep-alive", kind: "choice", options: [["", "default (fixed)"], ["fixed", "fixed: idle time"], ["learned", "learned from arrivals"]], def: "fixed", help: "How long idle replicas are kept." },
  ]],
  ["Jobs", [
    { key: "executionTimeout", label: "Execution timeout (ms)", kind: "int", min: 1, def: 600000 },
    { key: "ttl", label: "TTL (ms)", kind: "int", min: 1, def: 86400000 },
    { key: "maxRetries", label: "Max retries", kind: "int", min: 0, def: 3 },
    { key: "maxQueueSize", label: "Max queue size", kind: "int", min: 1, help: "Empty: no limit." },
  ]],
];
const FIELDS = SECTIONS.flatMap(([, fields]) => fields);
const enc = encodeURIComponent;

export async function mountList(root, ctx) {
  const box = h("div", {});
  replace(root,
    pageHead("Endpoints", "Named queues, each with a pool of workers.",
      h("a", { class: "btn btn-primary change", href: "#/endpoints/new" }, "New endpoint")),
    card(null, box));
  const draw = async () => {
    const result = await listEndpoints();
    if (!ctx.alive()) return;
    if (!result.ok) {
      replace(box, notAvailable("Endpoint list", result));
      return;
    }
    const perEndpoint = (getLatest() && getLatest().perEndpoint) || {};
    replace(box, table([
      { label: "Name", cell: (ep) => h("a", { href: `#/endpoints/${enc(ep.name)}` }, ep.name) },
      { label: "Handler", cell: (ep) => (ep.handler ? h("code", {}, ep.handler) : h("span", { class: "muted" }, "outside workers")) },
      { label: "GPUs", num: true, cell: (ep) => fmtNumber(ep.gpus, 2) },
      { label: "CPUs", num: true, cell: (ep) => fmtNumber(ep.cpus, 2) },
      { label: "Concurrency", num: true, cell: (ep) => fmtNumber(ep.concurrency) },
      { label: "Replicas", num: true, cell: (ep) => `${fmtNumber(ep.minReplicas)}–${fmtNumber(ep.maxReplicas)}` },
      { label: "Priority", num: true, cell: (ep) => fmtNumber(ep.priority) },
      { label: "Queued", num: true, cell: (ep) => fmtNumber(perEndpoint[ep.name]?.queued) },
      { label: "", cell: (ep) => h("span", { class: "actions" },
        h("a", { class: "btn", href: `#/endpoints/${enc(ep.name)}` }, isReadOnly() ? "View" : "Edit"),
        h("a", { class: "btn", href: `#/jobs?endpoint=${enc(ep.name)}` }, "Jobs"),
        h("button", { class: "btn btn-danger change", type: "button", "data-delete": ep.name, onclick: () => removeEndpoint(ep.name, draw) }, "Delete")) },
    ], result.list, "No endpoints yet. Create one to start submitting jobs."));
  };
  ctx.every(draw, 5000);
  await draw();
}

async function removeEndpoint(name, after) {
  const ok = await confirmDialog(`Delete endpoint “${name}”?`,
    "Its workers are drained and stopped, and jobs still queued for it are dropped. This cannot be undone.",
    "Delete endpoint");
  if (!ok) return false;
  const result = await api("DELETE", `/api/v1/endpoints/${enc(name)}`);
  if (result.ok) toast(`Endpoint ${name} deleted.`);
  else toast(`Could not delete ${name}: ${result.error}`, true);
  if (after) await after();
  return result.ok;
}

function inputFor(f) {
  const id = `f-${f.key}`;
  if (f.kind === "choice") {
    return h("select", { id, name: f.key }, f.options.map(([value, label]) => h("option", { value }, label)));
  }
  if (f.kind === "json") return h("textarea", { id, name: f.key, rows: 4, placeholder: f.placeholder, spellcheck: "false" });
  const attrs = { id, name: f.key, placeholder: f.placeholder ?? (f.def !== undefined ? String(f.def) : ""), autocomplete: "off" };
  if (f.kind === "int" || f.kind === "float") {
    Object.assign(attrs, { type: "number", inputmode: "decimal", step: f.kind === "int" ? "1" : "any", min: f.min, max: f.max });
  } else {
    Object.assign(attrs, { type: "text", spellcheck: "false" });
  }
  return h("input", attrs);
}

function asText(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "object" ? json(value) : String(value);
}

// -> {value, error}; value undefined means "left empty".
function parseField(f, raw) {
  const text = raw.trim();
  if (text === "") return { value: undefined, error: null };
  if (f.kind === "json") {
    try {
      const value = JSON.parse(text);
      if (!value || typeof value !== "object" || Array.isArray(value)) return { error: "Must be a JSON object." };
      return { value, error: null };
    } catch (err) {
      return { error: `Not valid JSON: ${err.message}` };
    }
  }
  if (f.kind === "int" || f.kind === "float") {
    const value = Number(text);
    if (!Number.isFinite(value)) return { error: "Must be a number." };
    if (f.kind === "int" && !Number.isInteger(value)) return { error: "Must be a whole number." };
    if (f.min !== undefined && value < f.min) return { error: `Must be at least ${f.min}.` };
    if (f.max !== undefined && value > f.max) return { error: `Must be at most ${f.max}.` };
    return { value, error: null };
  }
  return { value: text, error: null };
}

function checkRules(values, errors, creating) {
  if (creating && !values.name) errors.name = "A name is required.";
  else if (creating && (!NAME_RE.test(values.name) || values.name.length > 63)) {
    errors.name = "Use lowercase letters, digits and '-', starting and ending with a letter or digit (≤ 63).";
  }
  if (values.handler && !HANDLER_RE.test(values.handler)) errors.handler = "Use the form module:function.";
  const min = values.minReplicas ?? 0;
  const max = values.maxReplicas ?? 10;
  if (!errors.maxReplicas && !errors.minReplicas && min > max) {
    errors.maxReplicas = `Max replicas (${max}) must be at least min replicas (${min}).`;
  }
}

// The field a 422 detail entry refers to: the last element of loc that names one of our fields.
function fieldOfLoc(loc) {
  const parts = Array.isArray(loc) ? loc : [loc];
  for (let i = parts.length - 1; i >= 0; i -= 1) {
    const camel = String(parts[i]).replace(/_([a-z])/g, (_, c) => c.toUpperCase());
    if (FIELDS.some((f) => f.key === camel)) return camel;
  }
  return null;
}

export async function mountForm(root, ctx) {
  const name = ctx.params[0];
  const creating = !name;
  let original = {};
  if (!creating) {
    const result = await get(`/api/v1/endpoints/${enc(name)}`);
    if (!ctx.alive()) return;
    if (!result.ok) {
      replace(root, pageHead(`Endpoint ${name}`), notAvailable(`Endpoint “${name}”`, result));
      return;
    }
    original = result.data.endpoint ?? result.data;
  }
  const inputs = {};
  const errorBoxes = {};
  const formError = h("div", { class: "notice error", hidden: true, role: "alert" });
  const preview = pre("");
  const form = h("form", { class: "endpoint-form", novalidate: true });
  for (const [title, fields] of SECTIONS) {
    const grid = h("div", { class: "form-grid" });
    for (const f of fields) {
      if (f.createOnly && !creating) continue;
      inputs[f.key] = inputFor(f);
      inputs[f.key].value = asText(original[f.key]);
      errorBoxes[f.key] = h("div", { class: "err", "data-error-for": f.key, hidden: true });
      const wrap = h("div", { class: "field", "data-field": f.key },
        h("label", { for: `f-${f.key}` }, f.label), inputs[f.key], errorBoxes[f.key],
        f.help ? h("div", { class: "help" }, f.help) : null);
      if (f.wide) wrap.style.gridColumn = "1 / -1";
      grid.append(wrap);
    }
    form.append(h("div", { class: "form-section" }, h("h3", {}, title), grid));
  }
  const submit = h("button", { class: "btn btn-primary change", type: "submit" }, creating ? "Create endpoint" : "Save changes");
  form.append(formError, h("div", { class: "actions" }, submit, h("a", { class: "btn btn-ghost", href: "#/endpoints" }, "Cancel")));

  const showErrors = (errors) => {
    for (const key of Object.keys(errorBoxes)) {
      const message = errors[key];
      errorBoxes[key].textContent = message || "";
      errorBoxes[key].hidden = !message;
      errorBoxes[key].parentElement.classList.toggle("invalid", Boolean(message));
    }
  };

  // -> {body, errors}: on create, empty fields are left to the server's defaults; on edit, only changes.
  const build = () => {
    const values = {};
    const errors = {};
    const body = {};
    for (const f of FIELDS) {
      if (!inputs[f.key]) continue;
      const { value, error } = parseField(f, inputs[f.key].value);
      if (error) errors[f.key] = error;
      values[f.key] = value;
      if (creating) {
        if (value !== undefined) body[f.key] = value;
      } else if (JSON.stringify(value ?? null) !== JSON.stringify(original[f.key] ?? null)) {
        // A cleared field goes back to its default; only fields without one can be null.
        body[f.key] = value === undefined ? f.def ?? null : value;
      }
    }
    checkRules({ ...original, ...values }, errors, creating);
    return { body, errors };
  };
  const method = creating ? "POST" : "PATCH";
  const path = creating ? "/api/v1/endpoints" : `/api/v1/endpoints/${enc(name)}`;
  const updatePreview = () => {
    preview.textContent = `${method} ${path}\n\n${json(build().body)}`;
  };
  form.addEventListener("input", updatePreview);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.hidden = true;
    const { body, errors } = build();
    showErrors(errors);
    if (Object.keys(errors).length) return;
    if (!creating && Object.keys(body).length === 0) {
      toast("Nothing changed.");
      return;
    }
    submit.disabled = true;
    const result = await api(method, path, body);
    submit.disabled = false;
    if (result.ok) {
      const saved = (result.data && (result.data.endpoint ?? result.data)) || {};
      toast(creating ? `Endpoint ${body.name} created.` : `Endpoint ${name} saved.`);
      const target = `#/endpoints/${enc(saved.name || body.name || name)}`;
      if (window.location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
      else window.location.hash = target;
      return;
    }
    applyServerErrors(result, showErrors, formError);
  });
  updatePreview();

  if (isReadOnly()) {
    for (const el of form.querySelectorAll("input, select, textarea")) el.disabled = true;
  }
  const deleteCard = creating || isReadOnly() ? null : card("Danger zone", h("div", { class: "actions" },
    h("span", { class: "muted" }, "Deleting drains and stops its workers and drops queued jobs."),
    h("button", { class: "btn btn-danger", type: "button", id: "delete-endpoint", onclick: async () => {
      if (await removeEndpoint(name)) window.location.hash = "#/endpoints";
    } }, "Delete endpoint")));
  replace(root,
    pageHead(creating ? "New endpoint" : `Endpoint ${name}`,
      creating ? "Every field but the name is optional: empty means the default shown." : "Change any field and save; only changed fields are sent.",
      creating ? null : h("a", { class: "btn", href: `#/jobs?endpoint=${enc(name)}` }, "Jobs")),
    creating ? null : problemNotice(original),
    creating ? null : webhookNotice(name),
    h("div", { class: "grid grid-side" },
      h("div", {},
        creating ? null : versionsCard(name, ctx, original),
        creating ? null : deployCard(name, original, () => window.dispatchEvent(new HashChangeEvent("hashchange"))),
        card(null, form), deleteCard),
      h("div", { class: "sticky" }, card("Request preview", preview))));
}

function applyServerErrors(result, showErrors, formError) {
  const errors = {};
  const unplaced = [];
  const detail = result.data && result.data.detail;
  if (Array.isArray(detail)) {
    for (const item of detail) {
      const key = fieldOfLoc(item && item.loc);
      const msg = (item && (item.msg || item.message)) || String(item);
      if (key) errors[key] = errors[key] ? `${errors[key]} ${msg}` : msg;
      else unplaced.push(msg);
    }
  } else if (detail && typeof detail === "object") {
    for (const [k, msg] of Object.entries(detail)) {
      const key = fieldOfLoc([k]);
      if (key) errors[key] = String(msg);
      else unplaced.push(`${k}: ${msg}`);
    }
  }
  showErrors(errors);
  const placed = Object.keys(errors).length > 0;
  const head = placed ? "Ripple refused some fields: see the messages above." : `Not saved: ${result.error}.`;
  formError.textContent = [head, ...unplaced].join(" ");
  formError.hidden = false;
}

