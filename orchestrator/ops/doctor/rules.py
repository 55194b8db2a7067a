"""Doctor rules about the running system: Ray cluster, workers, jobs and the autoscaler (pure).

Each ``check_*`` takes :class:`~orchestrator.ops.doctor.facts.Facts` and the time, and returns findings; see
:func:`orchestrator.ops.doctor.diagnose.diagnose`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from orchestrator.core.error_text import runtime_env_failed
from orchestrator.core.registry import LOST_REASON
from orchestrator.core.webhook_outcomes import trouble
from orchestrator.core.workers import (
    WorkerState,
    view_heartbeat_overdue,
    view_is_active,
    view_is_live,
    view_is_unhealthy,
    view_start_overdue,
    view_store_trouble,
)
from orchestrator.metrics import blocked_reason
from orchestrator.ops.doctor.facts import Facts, Finding, _age_s, _f


def _endpoints(f: Facts) -> dict[str, Mapping[str, Any]]:
    return {str(e.get("name")): e for e in f.endpoints}


def _live_by_endpoint(f: Facts) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for w in f.workers:
        if view_is_active(w):
            out[str(w.get("endpoint"))] += 1
    return out


# Ray cluster --------------------------------------------------------------------------------------------


def check_cluster(f: Facts, now_s: float) -> list[Finding]:
    c = f.cluster
    if c is None:
        return []
    out: list[Finding] = []
    if not c.get("aliveNodes"):
        out.append(
            _f(
                "HIGH",
                "cluster",
                "cluster.no_nodes",
                "The Ray cluster reports no alive node",
                "Check the Ray head (`ray status`); restart Ripple with `ripple down` then `ripple up`.",
            )
        )
    dead = [n["nodeId"][:12] for n in c.get("nodes", []) if not n.get("alive")]
    if dead:
        out.append(
            _f(
                "LOW",
                "cluster",
                "cluster.dead_nodes",
                f"{len(dead)} Ray node(s) are dead",
                "Nothing to do if they were removed on purpose; otherwise check those machines.",
                dead,
            )
        )
    if c.get("draining"):
        out.append(
            _f(
                "MEDIUM",
                "cluster",
                "cluster.draining",
                f"{len(c['draining'])} Ray node(s) are draining; their replicas are being moved",
                "Wait for the drain to finish; if it was not planned, check the node provider (KubeRay).",
                [n[:12] for n in c["draining"]],
            )
        )
    demand = c.get("pendingDemand") or []
    if demand:
        shapes = ", ".join(f"{d.get('count', 1)} x {d.get('resources')}" for d in demand[:5])
        out.append(
            _f(
                "MEDIUM",
                "cluster",
                "cluster.pending_demand",
                f"Ray has resource demand it cannot place now: {shapes}",
                "Add nodes with those resources (or let the Ray autoscaler add them), or lower the "
                "endpoints' gpus / cpus / memoryMb.",
                list(demand),
            )
        )
    return out


# Workers -------------------------------------------------------------------------------------------------


def _starting_stage(w: Mapping[str, Any], wid: str) -> tuple[str, str]:
    """What a starting worker is doing, and what to do when it takes too long."""
    if w.get("pendingPlacement"):
        return (
            "waiting for resources",
            "No node has the resources it asks for: add capacity or lower gpus/cpus/memoryMb.",
        )
    if w.get("settingUp"):
        doing = str(w.get("reason") or "setting up").removeprefix("setting up: ")
        return (
            doing,
            "Its node prepares its runtime environment before its process starts; packages are "
            "installed once per node and environment (large ones take minutes). Ray logs the install in "
            "runtime_env_setup-*.log in the node's Ray log directory.",
        )
    return (
        "loading its handler",
        f"Its handler import is slow or hangs: `ripple logs {wid} --stderr` shows what it printed.",
    )


def check_workers(f: Facts, now_s: float) -> list[Finding]:
    out: list[Finding] = []
    t = f.thresholds
    eps = _endpoints(f)
    live = _live_by_endpoint(f)
    for w in f.workers:
        wid, ep, state = w.get("workerId"), w.get("endpoint"), w.get("state")
        seen = _age_s(now_s, w.get("lastHeartbeatAt"))
        if state == WorkerState.STARTING.value:  # stuck starting says more than a stale heartbeat would
            age = _age_s(now_s, w.get("firstSeenAt"))
            if age is not None and view_start_overdue(w, now_s, t.stuck_starting_s):
                doing, advice = _starting_stage(w, str(wid))
                out.append(
                    _f(
                        "MEDIUM",
                        "workers",
                        "workers.stuck_starting",
                        f"Worker {wid} of {ep} has been starting for {age:.0f} s ({doing})",
                        advice,
                    )
                )
        elif seen is not None and view_heartbeat_overdue(w, now_s, t.heartbeat_timeout_s):
            out.append(
                _f(
                    "HIGH",
                    "workers",
                    "workers.stale_heartbeat",
                    f"Worker {wid} of {ep} has sent no heartbeat for {seen:.0f} s "
                    f"(timeout {t.heartbeat_timeout_s:g} s) and holds {len(w.get('jobs') or [])} job(s)",
                    f"Check the worker process and that it reaches /v2/{ep}/ping; its jobs go back to the "
                    "queue when the queue's sweep reclaims it. If it is gone for good, start another.",
                )
            )
        elif state == WorkerState.STOPPED.value and w.get("reason") == LOST_REASON:
            outside = (eps.get(str(ep)) or {}).get("handler") is None
            alone = live.get(str(ep), 0) == 0
            out.append(
                _f(
                    "HIGH" if outside and alone else "MEDIUM",
                    "workers",
                    "workers.heartbeat_lost",
                    f"Worker {wid} of {ep} stopped sending heartbeats {seen or 0:.0f} s ago; its leases "
                    "were taken back" + (" and no other worker serves the endpoint" if alone else ""),
                    f"Restart that worker (RUNPOD_POD_ID={wid}) or start another for {ep}; check its logs "
                    "and that it can reach the /ping URL.",
                )
            )
        if (cut_off := view_store_trouble(w, now_s)) is not None:
            for_s, error = cut_off
            out.append(
                _f(
                    "MEDIUM",
                    "workers",
                    "workers.store_unreachable",
                    f"Worker {wid} of {ep} cannot use the job store itself for {for_s:.0f} s "
                    f"({error}): it takes jobs and sends results through the queue actor, "
                    "slower, and jobs the store handed it meanwhile are delivered to it again",
                    "Check the network between the worker's node and Redis (RIPPLE_REDIS_URL), and that "
                    "Redis answers; it uses the store again on its own once a step succeeds.",
                    detail=dict(w["storeTrouble"]),
                )
            )
        if view_is_unhealthy(w):
            out.append(
                _f(
                    "MEDIUM",
                    "workers",
                    "workers.quarantined",
                    f"Worker {wid} of {ep} is {w.get('health')}: its jobs keep failing or it failed checks",
                    f"Check its log; drain it if it does not recover: POST /api/v1/workers/{wid}/drain.",
                )
            )
    import_errors = {
        str(w.get("endpoint"))
        for w in _past_workers(f)
        if str(w.get("reason") or "").startswith("failed to start")
    }
    return out + _failed_workers(f) + _endpoint_problems(f, import_errors)


PROBLEM_ACTIONS = {
    "pool_error": "Ray refuses to start the endpoint's replicas: fix the endpoint's runtimeEnv or "
    "resources (`ripple endpoint update {ep} ...`), or deploy its code with "
    "`ripple deploy PATH --endpoint {ep}`.",
    "version_failed": "The previous version still serves. Fix the code and `ripple deploy` again, or "
    "`ripple rollback {ep}`; `ripple versions {ep}` shows each version's error.",
    "start_failed": "Fix what the replicas fail on (runtime env, imports, init), then `ripple deploy` again "
    "or `ripple rollback {ep}`.",
    "unplaceable": "No node offers what a replica asks for (GPUs, gpuTypes, CPUs, memory): lower the "
    "endpoint's gpus/cpus/memoryMb, widen gpuTypes, or add nodes.",
}


def _endpoint_problems(f: Facts, already: set[str]) -> list[Finding]:
    """An endpoint whose replicas cannot start says so itself (its ``problem``): HIGH, whatever the cause,
    unless the handler import rule already reported it."""
    out = []
    for ep, spec in sorted(_endpoints(f).items()):
        problem = spec.get("problem")
        if not isinstance(problem, Mapping):
            continue
        code = str(problem.get("code"))
        if code == "start_failed" and ep in already:
            continue
        out.append(
            _f(
                "HIGH",
                "workers",
                "endpoints.cannot_start",
                f"Endpoint {ep} cannot start replicas ({code}): {problem.get('message')}",
                PROBLEM_ACTIONS.get(code, PROBLEM_ACTIONS["start_failed"]).format(ep=ep),
                str(problem.get("detail") or "")[-3000:] or None,
            )
        )
    return out


def _past_workers(f: Facts) -> list[Mapping[str, Any]]:
    """Workers that ended, of endpoints that still exist: a deleted endpoint's failures are its past (all
    of them when the endpoints could not be read)."""
    eps = _endpoints(f)
    known = "endpoints" not in f.errors
    return [w for w in f.workers if not view_is_live(w) and (not known or str(w.get("endpoint")) in eps)]


def _failed_workers(f: Facts) -> list[Finding]:
    eps = _endpoints(f)
    imports: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    crashes: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for w in _past_workers(f):
        reason = str(w.get("reason") or "")
        if reason.startswith("failed to start"):
            imports[str(w.get("endpoint"))].append(w)
        elif reason.startswith(("died", "hung")):
            crashes[str(w.get("endpoint"))].append(w)
    out = []
    for ep, ws in sorted(imports.items()):
        handler = (eps.get(ep) or {}).get("handler")
        last = ws[-1]
        trace = str(last.get("error") or last.get("reason"))
        line = str(last.get("reason"))[len("failed to start: ") :][:300]
        if runtime_env_failed(trace):
            finding = _f(
                "HIGH",
                "workers",
                "workers.runtime_env_setup",
                f"Endpoint {ep}: {len(ws)} worker(s) failed to start; their node cannot set up the "
                f"runtime environment: {line}",
                "Fix what it names in the folder's requirements.txt and deploy it again (`ripple deploy "
                f"PATH --endpoint {ep}`); an endpoint without deployed code takes its packages from "
                "runtimeEnv.pip (`--runtime-env` replaces the whole runtime env). The install's report is "
                "below.",
                trace[-3000:],
            )
        else:
            finding = _f(
                "HIGH",
                "workers",
                "workers.handler_import",
                f"Endpoint {ep}: {len(ws)} worker(s) failed to start; the handler {handler!r} does not "
                f"load: {line}",
                f"Fix the handler: ship its code with `ripple deploy PATH --endpoint {ep}` (a folder with "
                f"the module and its requirements.txt), or point the endpoint at the right one: "
                f"`ripple endpoint update {ep} --handler MODULE:FUNCTION`.",
                trace[-3000:],
            )
        out.append(finding)
    for ep, ws in sorted(crashes.items()):
        if len(ws) < f.thresholds.repeated_failures:
            continue
        out.append(
            _f(
                "HIGH",
                "workers",
                "workers.repeated_failures",
                f"Endpoint {ep}: {len(ws)} workers died or hung recently ({ws[-1].get('reason')})",
                "Check the handler for crashes, memory use (OOM) and hangs in the workers' logs; raise "
                "memoryMb or fix the handler.",
                [w.get("workerId") for w in ws],
            )
        )
    return out


# Jobs ----------------------------------------------------------------------------------------------------


def check_jobs(f: Facts, now_s: float) -> list[Finding]:
    return (
        _no_worker(f)
        + _never_fits(f)
        + _past_timeout(f, now_s)
        + _orphans(f)
        + _old_queue(f)
        + _undelivered_webhooks(f)
    )


def _no_worker(f: Facts) -> list[Finding]:
    out = []
    live = _live_by_endpoint(f)
    enabled = (f.autoscaler or {}).get("enabled", True)
    for ep, spec in sorted(_endpoints(f).items()):
        queued = int((f.stats.get(ep) or {}).get("queued") or 0)
        if queued == 0 or live.get(ep, 0) > 0:
            continue
        if spec.get("handler") is None:
            out.append(
                _f(
                    "HIGH",
                    "jobs",
                    "jobs.no_worker",
                    f"{queued} job(s) queued at {ep} and no worker takes them (outside workers only)",
                    f"Start a RunPod worker for {ep} (RUNPOD_WEBHOOK_GET_JOB=<url>/v2/{ep}/job-take/$ID, "
                    "RUNPOD_AI_API_KEY=<worker key>), or give the endpoint a handler.",
                )
            )
        elif int(spec.get("maxReplicas") or 0) == 0:
            out.append(
                _f(
                    "HIGH",
                    "jobs",
                    "jobs.no_worker",
                    f"{queued} job(s) queued at {ep} but its maxReplicas is 0",
                    f"`ripple endpoint update {ep} --max 1` (or more).",
                )
            )
        elif enabled is False:
            out.append(
                _f(
                    "HIGH",
                    "jobs",
                    "jobs.no_worker",
                    f"{queued} job(s) queued at {ep}, no replica, and the autoscaler is off",
                    "Turn it on (POST /api/v1/autoscaler/enable) or raise the endpoint's minReplicas.",
                )
            )
    return out


def _never_fits(f: Facts) -> list[Finding]:
    c = f.cluster
    if c is None:
        return []
    nodes = [n for n in c.get("nodes", []) if n.get("alive")]
    out = []
    for ep, spec in sorted(_endpoints(f).items()):
        if spec.get("handler") is None:
            continue
        for key, flag, unit in (("gpus", "--gpus", "GPUs"), ("cpus", "--cpus", "CPUs")):
            need = float(spec.get(key) or 0)
            most = max((float(n.get(key) or 0) for n in nodes), default=0.0)
            if need <= 0 or need <= most:
                continue
            queued = int((f.stats.get(ep) or {}).get("queued") or 0)
            wanted = queued > 0 or int(spec.get("minReplicas") or 0) > 0
            out.append(
                _f(
                    "HIGH" if wanted else "MEDIUM",
                    "jobs",
                    "jobs.never_fits",
                    f"Endpoint {ep} needs {need:g} {unit} per replica but the largest node has {most:g}"
                    + (f"; {queued} job(s) wait for it" if queued else "")
                    + ": no replica can ever be placed",
                    f"Lower it (`ripple endpoint update {ep} {flag} {most:g}`) or add a node with at least "
                    f"{need:g} {unit}.",
                    {"need": need, "largestNode": most, "queued": queued},
                )
            )
    return out


def _past_timeout(f: Facts, now_s: float) -> list[Finding]:
    out = []
    for j in f.jobs_in_progress:
        started, limit_ms = j.get("startedAt"), j.get("executionTimeout")
        if not started or not limit_ms:
            continue
        ran_s = now_s - float(started) / 1000
        if ran_s <= float(limit_ms) / 1000 + f.thresholds.timeout_grace_s:
            continue
        ep, jid = j.get("endpoint"), j.get("id")
        out.append(
            _f(
                "HIGH",
                "jobs",
                "jobs.past_timeout",
                f"Job {jid} at {ep} has run {ran_s:.0f} s, past its execution timeout of "
                f"{float(limit_ms) / 1000:g} s (worker {j.get('workerId')})",
                f"The queue's sweep times it out shortly; if it stays, the sweep is stuck: check the "
                f"ripple-queue actor's log in the Ray dashboard. Cancel it now: POST /v2/{ep}/cancel/{jid}.",
            )
        )
    return out


def _orphans(f: Facts) -> list[Finding]:
    known = {str(w.get("workerId")): w for w in f.workers}
    out = []
    for j in f.jobs_in_progress:
        wid = str(j.get("workerId") or "")
        w = known.get(wid)
        if w is not None and view_is_live(w):
            continue
        ep, jid = j.get("endpoint"), j.get("id")
        why = "a stopped worker" if w is not None else "a worker the queue does not know"
        out.append(
            _f(
                "HIGH" if w is not None else "MEDIUM",
                "jobs",
                "jobs.orphan",
                f"Job {jid} at {ep} is in progress, leased to {why} ({wid or '?'})",
                f"It returns to the queue at its execution timeout; to act now: POST /v2/{ep}/cancel/{jid} "
                f"then POST /v2/{ep}/retry/{jid}.",
            )
        )
    return out


def _old_queue(f: Facts) -> list[Finding]:
    out = []
    for ep, s in sorted(f.stats.items()):
        age = s.get("oldestQueuedAgeS")
        if age is not None and float(age) > f.thresholds.old_queue_s:
            why = s.get("waitReason") if isinstance(s.get("waitReason"), Mapping) else None
            because = f"; waitReason {why.get('code')}: {why.get('message')}" if why else ""
            out.append(
                _f(
                    "MEDIUM",
                    "jobs",
                    "jobs.old_queue",
                    f"The oldest job queued at {ep} has waited {float(age):.0f} s ({s.get('queued')} queued)"
                    + because,
                    "See the worker and autoscaler findings for this endpoint; raise maxReplicas or its "
                    "priority if it is starved.",
                    {"waitReason": dict(why)} if why else None,
                )
            )
    return out


def _undelivered_webhooks(f: Facts) -> list[Finding]:
    out = []
    for ep, s in sorted(f.stats.items()):
        summary = s.get("webhooks") if isinstance(s.get("webhooks"), Mapping) else None
        what = trouble(summary)
        if summary is None or what is None:
            continue
        out.append(
            _f(
                "MEDIUM",
                "jobs",
                "jobs.webhooks_undelivered",
                f"{ep}: {what}",
                "The jobs' results are still in /status/ID. A failed delivery: check that the webhook URL "
                "answers 2xx to a POST from Ripple's queue (the last reason above; the queue's log has "
                "every attempt). A refused one: the address is outside RIPPLE_WEBHOOK_ALLOW.",
                {"webhooks": dict(summary)},
            )
        )
    return out


# Autoscaler ----------------------------------------------------------------------------------------------

_BLOCKED_ACTIONS = {
    "gpus": "Free GPUs (lower other endpoints' minReplicas or priority), add GPU nodes, or raise "
    "RIPPLE_AUTOSCALER__MAX_GPUS if it caps Ripple.",
    "cpus": "Add CPU capacity or lower the endpoint's cpus.",
    "memory": "Add memory or lower the endpoint's memoryMb.",
    "max_replicas": "Raise the endpoint's maxReplicas (`ripple endpoint update NAME --max N`).",
    "gpu_type": "Set gpuTypes to types the cluster has (GET /api/v1/specs; `ripple endpoint update NAME "
    "--gpu-types T1,T2`), add nodes of that type, or let the cluster grow (RIPPLE_AUTOSCALER__MAX_GPUS).",
    "other": "Read the autoscaler's history: GET /api/v1/autoscaler/history/NAME.",
}


def check_autoscaler(f: Facts, now_s: float) -> list[Finding]:
    a = f.autoscaler
    if a is None:
        return []
    out = []
    managed = [ep for ep, s in _endpoints(f).items() if s.get("handler") is not None]
    if a.get("enabled") is False:
        waiting = [ep for ep in managed if int((f.stats.get(ep) or {}).get("queued") or 0) > 0]
        out.append(
            _f(
                "MEDIUM" if waiting else "LOW",
                "autoscaler",
                "autoscaler.off",
                "The autoscaler is off" + (f"; work waits at {', '.join(waiting)}" if waiting else ""),
                "Turn it on: POST /api/v1/autoscaler/enable (replica counts stay as they are while off).",
            )
        )
    for row in a.get("endpoints") or []:
        reason = row.get("blocked")
        if not reason:
            continue
        cause = blocked_reason(str(reason))
        ep = row.get("endpoint")
        out.append(
            _f(
                "HIGH" if cause == "gpu_type" else "MEDIUM",  # it never resolves by itself
                "autoscaler",
                "autoscaler.blocked",
                f"The autoscaler cannot give {ep} the replicas it wants ({cause}): {reason}",
                _BLOCKED_ACTIONS[cause].replace("NAME", str(ep)),
                {"current": row.get("current"), "desired": row.get("desired"), "queued": row.get("queued")},
            )
        )
    return out
