"""``ripple doctor``: gather facts (HTTP and the data dir), run
:func:`orchestrator.ops.doctor.diagnose.diagnose`, print the findings (or JSON), optionally save a JSON
report, and exit non-zero when anything is HIGH.

Nothing here decides what is wrong; it only reads. Every read may fail: an unreachable app, a store that is
down (``/health/ready`` answers 503) or an actor that does not answer become facts, not crashes. Keys and
store URLs are masked unless ``--include-sensitive``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from orchestrator import __version__
from orchestrator.config import mask_url
from orchestrator.ops import local, procs
from orchestrator.ops.doctor.diagnose import diagnose, exit_code
from orchestrator.ops.doctor.facts import Facts, Finding, LocalFacts, Thresholds, mask
from orchestrator.ops.doctor.facts_k8s import KubeFacts
from orchestrator.ops.doctor.kubernetes import gather_if_in_cluster
from orchestrator.ops.doctor.rules_k8s import pod_rows

TIMEOUT_S = 10.0
COLORS = {"HIGH": "\033[31m", "MEDIUM": "\033[33m", "LOW": "\033[36m"}
RESET, BOLD = "\033[0m", "\033[1m"


def resolve(args: argparse.Namespace, settings: Any) -> tuple[str, str | None, Path]:
    """The instance's base URL, the API key to use (None when none is known) and the data dir."""
    data_dir = Path(settings.data_dir).resolve()
    url = getattr(args, "url", None) or os.environ.get("RIPPLE_URL")
    if not url:
        state = local.read_state(data_dir)
        url = state.url if state else f"http://127.0.0.1:{settings.port}"
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if key is None:
        key = _read_keys(data_dir).get("api_key")
    return url.rstrip("/"), key, data_dir


def _read_keys(data_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((data_dir / "keys.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def local_facts(data_dir: Path, api_key_known: bool) -> LocalFacts:
    """What the data dir says about keys, the embedded store and the instance."""
    keys = data_dir / "keys.json"
    mode = keys.stat().st_mode & 0o777 if keys.exists() else None
    appendonly: bool | None = None
    conf = data_dir / "redis.conf"
    if conf.exists():
        lines = [ln.split() for ln in conf.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        appendonly = any(p[0] == "appendonly" and p[1:] == ["yes"] for p in lines)
    pid: int | None = None
    alive: bool | None = None
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
        alive = procs.alive(pid)
    except (OSError, ValueError):
        pass
    return LocalFacts(
        data_dir=str(data_dir),
        data_dir_exists=data_dir.is_dir(),
        keys_path=str(keys),
        keys_mode=mode,
        api_key_known=api_key_known,
        redis_appendonly=appendonly,
        redis_pid=pid,
        redis_alive=alive,
        state_file=(data_dir / local.STATE_FILE).exists(),
        client_version=__version__,
    )


def _get(http: httpx.Client, path: str, errors: dict[str, str], name: str) -> Any:
    try:
        r = http.get(path)
    except httpx.HTTPError as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
        return None
    if r.status_code >= 400:
        try:
            why = r.json().get("error", r.text)
        except ValueError:
            why = r.text
        errors[name] = f"{r.status_code} {str(why)[:300]}"
        return None
    return r.json()


def gather(url: str, api_key: str | None, data_dir: Path, timeout_s: float = TIMEOUT_S) -> Facts:
    """Read everything the rules need; never raises for an unhealthy instance."""
    lf = local_facts(data_dir, api_key is not None)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as http:
        try:
            http.get("/health/live").raise_for_status()
        except httpx.HTTPError as exc:
            return Facts(url=url, reachable=False, http_error=f"{type(exc).__name__}: {exc}", local=lf)
        errors: dict[str, str] = {}
        store_memory: Any = None
        try:
            r = http.get("/health/ready")
            ready: bool | None = r.status_code == 200
            ready_detail = f"/health/ready answered {r.status_code}: {r.text[:200]}"
            if ready:
                store_memory = r.json().get("storeMemory")
        except (httpx.HTTPError, ValueError) as exc:
            ready, ready_detail = False, f"/health/ready failed: {type(exc).__name__}: {exc}"
        info = _get(http, "/api/v1/info", errors, "info")
        if not ready:
            return Facts(url, True, None, False, ready_detail, info, local=lf)
        eps = _get(http, "/api/v1/endpoints", errors, "endpoints") or {}
        workers = _get(http, "/api/v1/workers", errors, "workers") or {}
        stats = _get(http, "/api/v1/stats", errors, "stats") or {}
        autoscaler = _get(http, "/api/v1/autoscaler/status", errors, "autoscaler")
        cluster = _get(http, "/api/v1/cluster", errors, "cluster")
        jobs = _get(http, "/api/v1/jobs?status=IN_PROGRESS&limit=500", errors, "jobs") or {}
    hb = float((info or {}).get("heartbeatTimeoutS") or 60.0)
    grace = float((info or {}).get("sweepIntervalS") or 0.5)  # the sweep acts within one interval
    return Facts(
        url=url,
        reachable=True,
        ready=True,
        ready_detail=ready_detail,
        info=info,
        store_memory=store_memory if isinstance(store_memory, dict) else None,
        cluster=cluster,
        endpoints=eps.get("endpoints", []),
        workers=workers.get("workers", []),
        stats=stats.get("endpoints", {}),
        autoscaler=autoscaler,
        jobs_in_progress=jobs.get("jobs", []),
        local=lf,
        errors=errors,
        thresholds=Thresholds(heartbeat_timeout_s=hb, timeout_grace_s=max(1.0, min(2 * grace, 5.0))),
    )


def report(
    facts: Facts, findings: list[Finding], settings: Any, sensitive: bool, now_s: float
) -> dict[str, Any]:
    """The JSON report: findings, a summary of the facts and the settings, secrets masked unless asked."""
    by_state: Counter[str] = Counter(str(w.get("state")) for w in facts.workers)
    keys = _read_keys(Path(facts.local.data_dir)) if facts.local else {}
    api = settings.api_key.get_secret_value() if settings.api_key else keys.get("api_key")
    worker = settings.worker_key.get_secret_value() if settings.worker_key else keys.get("worker_key")
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    return {
        "url": facts.url,
        "generatedAt": now_s,
        "healthy": exit_code(findings) == 0,
        "summary": dict(Counter(f.severity for f in findings)),
        "findings": [f.to_dict() for f in findings],
        "facts": {
            "reachable": facts.reachable,
            "ready": facts.ready,
            "info": facts.info,
            "endpoints": [e.get("name") for e in facts.endpoints],
            "queues": facts.stats,
            "workersByState": dict(by_state),
            "jobsInProgress": len(facts.jobs_in_progress),
            "cluster": {k: v for k, v in (facts.cluster or {}).items() if k != "nodes"},
            "autoscalerEnabled": (facts.autoscaler or {}).get("enabled"),
            "local": vars(facts.local) if facts.local else None,
            "unavailable": dict(facts.errors),
            "kubernetes": _kube_summary(facts.kubernetes),
        },
        "settings": settings.public(),
        "secrets": {
            "apiKey": api if sensitive else mask(api),
            "workerKey": worker if sensitive else mask(worker),
            "redisUrl": redis_url if sensitive else mask_url(redis_url),
        },
    }


def _kube_summary(k: KubeFacts | None) -> dict[str, Any] | None:
    if k is None:
        return None
    return {"namespace": k.namespace, "rayCluster": k.cluster, "pods": pod_rows(k), "unavailable": k.errors}


def render_pods(k: KubeFacts) -> str:
    """The RayCluster's pods as a small table (``kubectl get pods`` with Ray's groups)."""
    rows = pod_rows(k)
    head = f"RayCluster {k.cluster or '?'} in namespace {k.namespace}: {len(rows)} pod(s)"
    cols = ("name", "group", "phase", "ready", "restarts", "waiting")
    table = [cols] + [tuple("" if r[c] is None else str(r[c]) for c in cols) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = [head] + [
        "  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]
    return "\n".join(lines) + "\n"


def render(findings: list[Finding], url: str, color: bool) -> str:
    """Findings as text, most severe first, each with its action (and a traceback's tail)."""
    counts = Counter(f.severity for f in findings)
    head = f"Ripple doctor: {url}: " + (
        ", ".join(f"{counts[s]} {s}" for s in ("HIGH", "MEDIUM", "LOW") if counts[s]) or "no problem found"
    )
    lines = [f"{BOLD}{head}{RESET}" if color else head, ""]
    for f in findings:
        sev = f"{COLORS[f.severity]}{f.severity:<6}{RESET}" if color else f"{f.severity:<6}"
        lines.append(f"{sev} [{f.category}] {f.issue}")
        lines.append(f"       -> {f.action}")
        if isinstance(f.detail, str) and "\n" in f.detail:
            lines += ["       | " + ln for ln in f.detail.strip().splitlines()[-12:]]
    return "\n".join(lines).rstrip() + "\n"


def run_doctor(args: argparse.Namespace, settings: Any) -> int:
    """The ``ripple doctor`` command; returns its exit status (1 when anything is HIGH)."""
    url, key, data_dir = resolve(args, settings)
    facts = gather(url, key, data_dir)
    facts = replace(facts, kubernetes=gather_if_in_cluster())  # None outside a Kubernetes pod
    now_s = time.time()
    findings = diagnose(facts, now_s)
    sensitive = bool(getattr(args, "include_sensitive", False))
    rep = report(facts, findings, settings, sensitive, now_s)
    if getattr(args, "save_report", None):
        Path(args.save_report).write_text(json.dumps(rep, indent=2, default=str) + "\n")
    if getattr(args, "json", False):
        print(json.dumps(rep, indent=2, default=str))
    else:
        print(render(findings, url, sys.stdout.isatty()), end="")
        if facts.kubernetes is not None and (facts.kubernetes.pods or facts.kubernetes.cluster):
            print("\n" + render_pods(facts.kubernetes), end="")
        if getattr(args, "save_report", None):
            print(f"\nReport saved to {args.save_report}")
    return exit_code(findings)
