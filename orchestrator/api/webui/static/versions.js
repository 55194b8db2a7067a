// An endpoint's code and versions on its page: the endpoint's problem (why its replicas cannot start), its
// webhook deliveries that did not arrive lately, its versions with their state and error (rollback to one), and a deploy form: upload a zip (stored in the
// cluster through POST /api/v1/packages) or give a remote URI; either becomes a new version.

import { api, get, getCsrfToken, isReadOnly, post } from "./api.js";
import { badge, card, fmtTime, h, replace, table, toast } from "./ui.js";

const enc = encodeURIComponent;

// The raw zip as the request body (api() sends JSON only).
async function uploadZip(file) {
  let response;
  try {
    response = await fetch("/api/v1/packages", {
      method: "POST",
      headers: { "Content-Type": "application/zip", "X-CSRF-Token": getCsrfToken(), Accept: "application/json" },
      credentials: "same-origin",
      body: file,
    });
  } catch (err) {
    return { ok: false, error: `network error: ${err.message || err}` };
  }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (response.ok) return { ok: true, data };
  return { ok: false, error: (data && (data.error || data.detail)) || `HTTP ${response.status}` };
}

export function problemNotice(endpoint) {
  const problem = endpoint && endpoint.problem;
  if (!problem) return null;
  return h("div", { class: "notice error", role: "alert", id: "endpoint-problem" },
    h("strong", {}, "Replicas cannot start: "), problem.message,
    problem.detail ? h("pre", { class: "mono" }, String(problem.detail).slice(-1500)) : null);
}

// Webhook deliveries of the last hour that failed every attempt or were refused (GET /api/v1/stats: the
// endpoint's `webhooks`); nothing when every one arrived.
export function webhookNotice(name) {
  const box = h("div", {});
  get("/api/v1/stats").then((result) => {
    const rows = result.ok && result.data ? result.data.endpoints || {} : {};
    const w = rows[name] && rows[name].webhooks;
    if (!w || !w.message) return;
    replace(box, h("div", { class: "notice warn", role: "status", id: "endpoint-webhooks" },
      h("strong", {}, "Webhooks not delivered: "), `${w.message}. The jobs' results are still in their status.`));
  });
  return box;
}

export function versionsCard(name, ctx, endpoint) {
  const box = h("div", { id: "versions" });
  const draw = async () => {
    const result = await get(`/api/v1/endpoints/${enc(name)}/versions`);
    if (!ctx.alive()) return;
    if (!result.ok) {
      replace(box, h("div", { class: "muted" }, `Versions not available: ${result.error}`));
      return;
    }
    const current = endpoint.version;
    replace(box, table([
      { label: "Version", num: true, cell: (v) => (v.version === current ? h("strong", {}, `v${v.version}`) : `v${v.version}`) },
      { label: "State", cell: (v) => badge(v.state === "rolling_out" ? "pending" : v.state === "retired" ? "stale" : v.state) },
      { label: "Created", cell: (v) => fmtTime(v.createdAt) },
      { label: "Handler", cell: (v) => h("code", {}, v.handler || "—") },
      { label: "Code", cell: (v) => (v.codeDeletedAt
        ? h("span", { class: "muted", title: `its package was deleted ${fmtTime(v.codeDeletedAt)} (RIPPLE_KEEP_VERSIONS)` }, "deleted")
        : h("code", {}, (v.codeDigest || "—").slice(0, 19))) },
      { label: "Changed", cell: (v) => (v.changed || []).join(", ") || "—" },
      { label: "Error", cell: (v) => (v.error ? h("span", { class: "err-text", title: v.error }, v.error.slice(0, 160)) : "") },
      { label: "", cell: (v) => (v.version === current || v.codeDeletedAt || isReadOnly() ? "" : h("button", {
        class: "btn", type: "button", "data-rollback": String(v.version),
        onclick: async () => {
          const res = await post(`/api/v1/endpoints/${enc(name)}/rollback`, { to: v.version });
          if (res.ok) toast(`Rolled back to v${v.version}'s code as v${res.data.version}.`);
          else toast(`Rollback failed: ${res.error}`, true);
          await draw();
        } }, "Roll back to this")) },
    ], (result.data && result.data.versions) || [], "No versions yet."));
  };
  ctx.every(draw, 5000);
  draw();
  return card("Versions", box);
}

export function deployCard(name, endpoint, after) {
  if (isReadOnly()) return null;
  const file = h("input", { type: "file", id: "deploy-zip", accept: ".zip,application/zip" });
  const uri = h("input", { type: "text", id: "deploy-uri", placeholder: "s3://bucket/code.zip (or gs://, https:… .zip)", spellcheck: "false" });
  const handler = h("input", { type: "text", id: "deploy-handler", placeholder: endpoint.handler || "module:function", spellcheck: "false" });
  const status = h("div", { class: "muted", id: "deploy-status" });
  const button = h("button", { class: "btn btn-primary", type: "submit" }, "Deploy");
  const form = h("form", { class: "deploy-form" },
    h("div", { class: "form-grid" },
      h("div", { class: "field" }, h("label", { for: "deploy-zip" }, "Code (zip of the folder)"), file),
      h("div", { class: "field" }, h("label", { for: "deploy-uri" }, "…or a remote URI"), uri),
      h("div", { class: "field" }, h("label", { for: "deploy-handler" }, "Handler (optional)"), handler)),
    h("div", { class: "actions" }, button, status));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const env = { ...(endpoint.runtimeEnv || {}) };
    delete env.working_dir;
    const body = {};
    button.disabled = true;
    try {
      if (file.files && file.files[0]) {
        status.textContent = "Uploading…";
        const up = await uploadZip(file.files[0]);
        if (!up.ok) {
          status.textContent = `Upload refused: ${typeof up.error === "string" ? up.error : JSON.stringify(up.error)}`;
          return;
        }
        env.working_dir = up.data.uri;
        delete env.pip;
        if (up.data.requirements && up.data.requirements.length) env.pip = up.data.requirements;
        body.codeDigest = up.data.codeDigest;
      } else if (uri.value.trim()) {
        env.working_dir = uri.value.trim();
        body.codeDigest = null;
      } else {
        status.textContent = "Choose a zip file or give a URI.";
        return;
      }
      body.runtimeEnv = env;
      if (handler.value.trim()) body.handler = handler.value.trim();
      const res = await api("PATCH", `/api/v1/endpoints/${enc(name)}`, body);
      if (!res.ok) {
        status.textContent = `Not deployed: ${res.error}`;
        return;
      }
      status.textContent = `Version ${res.data.version} created; it rolls out now.`;
      toast(`Endpoint ${name}: version ${res.data.version}.`);
      if (after) after();
    } finally {
      button.disabled = false;
    }
  });
  return card("Deploy code", form);
}
