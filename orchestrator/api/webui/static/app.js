// Entry point: session check, hash routing, page lifecycle (timers that stop when the page changes).

import { get, setCsrfToken, setReadOnly } from "./api.js";
import * as audit from "./audit.js";
import * as autoscaler from "./autoscaler.js";
import * as dashboard from "./dashboard.js";
import * as endpoints from "./endpoints.js";
import * as jobs from "./jobs.js";
import { startSampler } from "./sampler.js";
import { h, replace } from "./ui.js";
import * as workers from "./workers.js";

const ROUTES = [
  { pattern: /^\/?$/, nav: "dashboard", page: dashboard.mount },
  { pattern: /^\/endpoints\/?$/, nav: "endpoints", page: endpoints.mountList },
  { pattern: /^\/endpoints\/new$/, nav: "endpoints", page: endpoints.mountForm },
  { pattern: /^\/endpoints\/([^/]+)$/, nav: "endpoints", page: endpoints.mountForm },
  { pattern: /^\/jobs\/?$/, nav: "jobs", page: jobs.mountList },
  { pattern: /^\/jobs\/([^/]+)$/, nav: "jobs", page: jobs.mountDetail },
  { pattern: /^\/workers\/?$/, nav: "workers", page: workers.mount },
  { pattern: /^\/workers\/([^/]+)$/, nav: "workers", page: workers.mountDetail },
  { pattern: /^\/autoscaler\/?$/, nav: "autoscaler", page: autoscaler.mount },
  { pattern: /^\/audit\/?$/, nav: "audit", page: audit.mount },
];

let generation = 0;
let timers = [];
let cleanups = [];

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, search] = raw.split("?");
  return { path, query: new URLSearchParams(search || "") };
}

function stopPage() {
  generation += 1;
  for (const id of timers) clearInterval(id);
  for (const fn of cleanups) fn();
  timers = [];
  cleanups = [];
}

async function route() {
  stopPage();
  const mine = generation;
  const { path, query } = parseHash();
  const view = document.getElementById("view");
  const match = ROUTES.map((r) => ({ r, m: path.match(r.pattern) })).find((x) => x.m);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", Boolean(match) && link.dataset.nav === match.r.nav);
  }
  if (!match) {
    replace(view, h("div", { class: "notice" }, "No such page. ", h("a", { href: "#/" }, "Go to the dashboard")));
    return;
  }
  const ctx = {
    params: match.m.slice(1).map(decodeURIComponent),
    query,
    alive: () => mine === generation,
    every(fn, intervalMs) {
      if (mine !== generation) return;
      timers.push(setInterval(() => {
        if (mine === generation && document.visibilityState === "visible") fn();
      }, intervalMs));
    },
    onLeave(fn) {
      if (mine === generation) cleanups.push(fn);
    },
  };
  replace(view, h("p", { class: "muted" }, "Loading…"));
  try {
    await match.r.page(view, ctx);
  } catch (err) {
    if (ctx.alive()) {
      replace(view, h("div", { class: "notice error" }, `This page failed to load: ${err.message || err}`));
    }
    console.error(err);
  }
}

async function logout() {
  await fetch("/ui/logout", { method: "POST", credentials: "same-origin" });
  sessionStorage.clear();
  window.location.assign("/ui/login");
}

async function boot() {
  const session = await get("/ui/session");
  if (!session.ok) {
    if (session.status === 401) {
      window.location.assign("/ui/login");
      return;
    }
    document.getElementById("view").textContent = `Could not reach Ripple (${session.error}).`;
    return;
  }
  setCsrfToken(session.data.csrfToken);
  setReadOnly(session.data.scope === "read");
  const who = document.getElementById("session-key");
  if (session.data.key) {
    who.textContent = `${session.data.key} (${session.data.scope}${session.data.scope === "read" ? ", read-only" : ""})`;
    who.hidden = false;
  }
  document.getElementById("auth-banner").hidden = session.data.authEnabled !== false;
  const logoutButton = document.getElementById("logout");
  logoutButton.hidden = session.data.authEnabled === false;
  logoutButton.addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  startSampler();
  await route();
}

boot();
