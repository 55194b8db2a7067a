"""``ripple status``: one screen of a running instance.

The header (version, store, auth, autoscaler, GPUs, the Ray dashboard URL) and one row per endpoint: who
runs it (a handler on Ray workers, with its version, or outside workers), queue depth and oldest wait,
jobs in progress, replicas current/desired and workers by state; below, why an endpoint's replicas cannot
start (its ``problem``, red), what the autoscaler is blocked on, webhook deliveries that did not arrive and
replicas that cannot use the job store themselves. Five cheap reads; a read that fails
shows as ``unavailable`` instead of failing the screen. Colour only when asked (a terminal).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from orchestrator.core.errors import NotReady
from orchestrator.core.webhook_outcomes import trouble
from orchestrator.core.workers import QUARANTINED_BUCKET, WorkerState, view_count_state, view_store_trouble
from orchestrator.store.protocol import STORE_MEMORY_HIGH, StoreMemory

GREEN, YELLOW, RED, DIM, BOLD, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[2m", "\033[1m", "\033[0m"
STATE_ORDER = (
    WorkerState.STARTING.value,
    WorkerState.IDLE.value,
    WorkerState.BUSY.value,
    WorkerState.DRAINING.value,
    QUARANTINED_BUCKET,
    WorkerState.STOPPED.value,
)


class Requester(Protocol):
    """What status needs of :class:`orchestrator.client.Client`."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any: ...


def _read(client: Requester, path: str) -> tuple[Any, str | None]:
    try:
        return client.request("GET", path), None
    except Exception as exc:  # shown on screen, never raised: status is for when things go wrong too
        return None, f"{type(exc).__name__}: {exc}"


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{RESET}" if color and code else text


def _table(
    rows: Sequence[Sequence[str]], header: Sequence[str], paints: Sequence[Sequence[str]]
) -> list[str]:
    """Columns padded to the widest cell; ``paints`` gives each cell's colour code ('' for none)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row, paint in zip(rows, paints, strict=True):
        cells = [(c.ljust(w), p) for c, w, p in zip(row, widths, paint, strict=True)]
        lines.append("  ".join(f"{p}{c}{RESET}" if p else c for c, p in cells).rstrip())
    return lines


def _age(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


def _webhook_trouble(row: Any) -> str | None:
    summary = row.get("webhooks") if isinstance(row, Mapping) else None
    return trouble(summary) if isinstance(summary, Mapping) else None


def _workers_cell(counts: Mapping[str, int]) -> str:
    parts = [f"{counts[s]} {s}" for s in STATE_ORDER if counts.get(s)]
    parts += [f"{n} {s}" for s, n in sorted(counts.items()) if s not in STATE_ORDER and n]
    return ", ".join(parts) or "none"


def _worker_counts(workers: Sequence[Mapping[str, Any]]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for w in workers:
        out[str(w.get("endpoint"))][view_count_state(w)] += 1
    return out


def _store_trouble(workers: Sequence[Mapping[str, Any]], now_s: float) -> list[tuple[str, str]]:
    """``(endpoint, sentence)`` for each endpoint with live replicas whose own steps in the job store fail
    (their ``storeTrouble``): they serve through the queue actor meanwhile."""
    by_endpoint: dict[str, list[str]] = defaultdict(list)
    for w in workers:
        if (trouble := view_store_trouble(w, now_s)) is not None:
            for_s, error = trouble
            by_endpoint[str(w.get("endpoint"))].append(f"{w.get('workerId')} for {_age(for_s)} ({error})")
    return [
        (
            ep,
            f"cannot use the job store itself: {'; '.join(which)}; serving through the queue actor "
            "(`ripple doctor`: workers.store_unreachable)",
        )
        for ep, which in sorted(by_endpoint.items())
    ]


def _store_memory(ready: Any) -> tuple[str, str | None]:
    """The store's memory from ``/health/ready``'s ``storeMemory``: a note for the header (" (412 of 512
    MiB)"), and a warning when it is near its maxmemory (None otherwise)."""
    m = StoreMemory.from_wire(ready.get("storeMemory") if isinstance(ready, dict) else None)
    if m is None:
        return "", None
    mib = 1024 * 1024
    if m.share is None:
        return f" ({m.used_bytes / mib:.0f} MiB)", None
    note = f" ({m.used_bytes / mib:.0f} of {m.max_bytes / mib:.0f} MiB)"
    if m.share < STORE_MEMORY_HIGH:
        return note, None
    if m.share >= 1:
        return note, "the job store's Redis is full: no job can be queued (`ripple doctor` says more)"
    return note, (
        f"the job store's Redis is {m.share:.0%} full: when full, no job can be queued "
        "(`ripple doctor` says more)"
    )


def render_status(
    client: Requester, color: bool, direct_url: str | None = None, now_s: float | None = None
) -> str:
    """The status screen as text (ANSI colours when ``color``); ``direct_url``: the API without Serve's
    proxy, as ``ripple up`` recorded it (``RIPPLE_DIRECT_INGRESS_PORT``), shown when known; ``now_s``: the
    wall clock ages are read against (now when None). Raises NotReady, saying why, when Ripple answers
    neither its info nor its endpoints (a part that does not answer is shown on the screen)."""
    info, info_err = _read(client, "/api/v1/info")
    eps, eps_err = _read(client, "/api/v1/endpoints")
    stats, _ = _read(client, "/api/v1/stats")
    workers, _ = _read(client, "/api/v1/workers")
    auto, auto_err = _read(client, "/api/v1/autoscaler/status")
    memory_note, memory_warning = _store_memory(_read(client, "/health/ready")[0])
    if info is None and eps is None:
        raise NotReady(f"Ripple is not answering: {info_err or eps_err}; `ripple doctor` diagnoses it")
    info = info or {}
    auto = auto or {}
    gpus = auto.get("gpus") or {}
    auto_state = (
        _paint("unavailable", RED, color)
        if auto_err
        else _paint("on", GREEN, color)
        if auto.get("enabled")
        else _paint("off", YELLOW, color)
    )
    title = f"Ripple {info.get('version', '?')}"
    lines = [
        _paint(title, BOLD, color)
        + f"   store: {info.get('store', '?')}{memory_note}   auth: {'on' if info.get('auth') else 'off'}"
        + f"   autoscaler: {auto_state}",
        f"GPUs: {gpus.get('used', 0):g} used / {gpus.get('total', 0):g} total ({gpus.get('free', 0):g} free)"
        if gpus
        else "GPUs: unknown (autoscaler unavailable)",
        f"Ray dashboard: {info.get('dashboardUrl') or 'not running'}",
        *([f"Direct ingress: {direct_url} (the API without Serve's proxy)"] if direct_url else []),
        *([_paint(f"store: {memory_warning}", RED, color)] if memory_warning else []),
        "",
    ]
    endpoints = (eps or {}).get("endpoints", [])
    if not endpoints:
        lines.append("No endpoints yet: `ripple endpoint create NAME --handler module:function`.")
        return "\n".join(lines) + "\n"
    queue = (stats or {}).get("endpoints", {})
    per = {r.get("endpoint"): r for r in auto.get("endpoints") or []}
    worker_views = (workers or {}).get("workers", [])
    counts = _worker_counts(worker_views)
    rows, paints = [], []
    for e in endpoints:
        name = str(e.get("name"))
        q = queue.get(name) or {}
        a = per.get(name) or {}
        queued = int(q.get("queued") or 0)
        handler = e.get("handler")
        replicas = f"{a.get('current', 0)}/{a.get('desired') if a.get('desired') is not None else '-'}"
        rows.append(
            [
                name,
                (f"{handler} (v{e['version']})" if e.get("version") else str(handler))
                if handler
                else "outside workers",
                f"{float(e.get('gpus') or 0):g}",
                str(queued) if q else "?",
                _age(q.get("oldestQueuedAgeS")),
                str(q.get("running", "?")),
                replicas if handler else "-",
                _workers_cell(counts.get(name, Counter())),
            ]
        )
        blocked = bool(a.get("blocked"))
        paints.append(
            ["", DIM if not handler else "", "", YELLOW if queued else "", "", "", RED if blocked else "", ""]
            if color
            else [""] * 8
        )
    header = ["ENDPOINT", "RUNS", "GPUS", "QUEUED", "OLDEST", "IN PROGRESS", "REPLICAS", "WORKERS"]
    lines += _table(rows, header, paints)
    blocked_rows = [
        (r.get("endpoint"), r.get("blocked")) for r in auto.get("endpoints") or [] if r.get("blocked")
    ]
    problems = [(e.get("name"), e["problem"]) for e in endpoints if isinstance(e.get("problem"), dict)]
    webhooks = [(name, what) for name, q in sorted(queue.items()) if (what := _webhook_trouble(q))]
    stores = _store_trouble(worker_views, time.time() if now_s is None else now_s)
    if problems or blocked_rows or webhooks or stores:
        lines.append("")
    lines += [_paint(f"PROBLEM: {ep}: {p.get('message')}", RED, color) for ep, p in problems]
    if blocked_rows:
        lines += [_paint(f"blocked: {ep}: {why}", YELLOW, color) for ep, why in blocked_rows]
    lines += [_paint(f"webhooks: {ep}: {what}", YELLOW, color) for ep, what in webhooks]
    lines += [_paint(f"replicas: {ep}: {what}", YELLOW, color) for ep, what in stores]
    return "\n".join(lines) + "\n"
