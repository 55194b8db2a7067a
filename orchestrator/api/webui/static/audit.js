// Audit: every management change (who, what, on what, when, which request), newest first.

import { auditLog } from "./api.js";
import { card, fmtTime, h, notAvailable, pageHead, replace, table } from "./ui.js";

export async function mount(root, ctx) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace(root,
    pageHead("Audit", "Management changes, newest first: the key that made them, the action and its target."),
    card(null, body));
  const draw = async () => {
    const result = await auditLog(200);
    if (!ctx.alive()) return;
    if (!result.ok) {
      replace(body, notAvailable("The audit log", result));
      return;
    }
    const rows = (result.data && result.data.entries) || [];
    replace(body, table([
      { label: "When", cell: (e) => fmtTime(e.at) },
      { label: "Key", cell: (e) => e.key },
      { label: "Action", cell: (e) => h("code", {}, e.action) },
      { label: "Target", wrap: true, cell: (e) => e.target || "—" },
      { label: "Request", cell: (e) => h("span", { class: "muted", title: e.requestId }, (e.requestId || "").slice(0, 12)) },
    ], rows, "No changes recorded yet."));
  };
  await draw();
  ctx.every(draw, 10000);
}
