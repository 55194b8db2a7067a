"""Every doctor rule, on fake facts: it fires on its condition, with its severity and action, and stays
quiet on a healthy instance."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from orchestrator.config import mask_url
from orchestrator.ops.doctor.diagnose import diagnose, exit_code
from orchestrator.ops.doctor.facts import Facts, Finding, LocalFacts, Thresholds, mask

pytestmark = pytest.mark.timeout(10)

NOW_S = 1_700_000_000.0
NOW_MS = int(NOW_S * 1000)


def endpoint(name: str, handler: str | None = "examples.handlers:echo", **kw: Any) -> dict[str, Any]:
    return {"name": name, "handler": handler, "gpus": 0, "cpus": 1, "minReplicas": 0, "maxReplicas": 3, **kw}


def worker(wid: str, ep: str, state: str = "idle", age_s: float = 1.0, **kw: Any) -> dict[str, Any]:
    return {
        "workerId": wid,
        "endpoint": ep,
        "state": state,
        "health": "healthy",
        "jobs": [],
        "firstSeenAt": NOW_MS - 100_000,
        "lastHeartbeatAt": NOW_MS - int(age_s * 1000),
        "reason": None,
        **kw,
    }


def node(gpus: float, alive: bool = True, nid: str = "n" * 40, draining: bool = False) -> dict[str, Any]:
    return {"nodeId": nid, "alive": alive, "gpus": gpus, "cpus": 8.0, "draining": draining}


def healthy() -> Facts:
    return Facts(
        url="http://127.0.0.1:8000",
        reachable=True,
        ready=True,
        info={"version": "0.1.0", "store": "embedded", "auth": True, "heartbeatTimeoutS": 60},
        cluster={"nodes": [node(2)], "aliveNodes": 1, "draining": [], "pendingDemand": []},
        endpoints=[endpoint("gen", gpus=1), endpoint("ext", handler=None)],
        workers=[worker("gen-1", "gen"), worker("w-ext", "ext")],
        stats={"gen": {"queued": 0, "oldestQueuedAgeS": None}, "ext": {"queued": 2, "oldestQueuedAgeS": 3}},
        autoscaler={"enabled": True, "endpoints": [{"endpoint": "gen", "blocked": None}]},
        local=LocalFacts(
            data_dir="/d",
            keys_path="/d/keys.json",
            keys_mode=0o600,
            redis_appendonly=True,
            client_version="0.1.0",
        ),
    )


def rules(findings: list[Finding]) -> dict[str, Finding]:
    return {f.rule: f for f in findings}


def one(facts: Facts, rule: str) -> Finding:
    found = [f for f in diagnose(facts, NOW_S) if f.rule == rule]
    assert found, f"{rule} did not fire: {[f.rule for f in diagnose(facts, NOW_S)]}"
    return found[0]


def test_a_healthy_instance_has_no_finding() -> None:
    findings = diagnose(healthy(), NOW_S)
    assert findings == []
    assert exit_code(findings) == 0


def test_unreachable_is_high_and_says_how_to_start() -> None:
    f = Facts(url="http://x:1", reachable=False, http_error="connection refused")
    got = diagnose(f, NOW_S)
    assert [x.rule for x in got] == ["config.unreachable"]
    assert got[0].severity == "HIGH" and "ripple up" in got[0].action and "connection refused" in got[0].issue
    assert exit_code(got) == 1
    crashed = replace(f, local=LocalFacts(data_dir="/d", state_file=True))
    assert "ripple down" in diagnose(crashed, NOW_S)[0].action


def test_store_down_names_the_embedded_redis_and_skips_runtime_rules() -> None:
    f = replace(
        healthy(),
        ready=False,
        ready_detail="503",
        local=LocalFacts(data_dir="/d", redis_pid=123, redis_alive=False, client_version="0.1.0"),
    )
    got = rules(diagnose(f, NOW_S))
    assert got["store.unreachable"].severity == "HIGH"
    assert "pid 123" in got["store.unreachable"].action and "ripple up" in got["store.unreachable"].action
    assert "jobs.no_worker" not in got
    external = replace(f, info={**(f.info or {}), "store": "external"}, local=None)
    assert "RIPPLE_REDIS_URL" in one(external, "store.unreachable").action


def test_keys_file_mode_and_missing_keys() -> None:
    local = replace(healthy().local, keys_mode=0o644)  # type: ignore[arg-type]
    got = one(replace(healthy(), local=local), "config.keys_mode")
    assert got.severity == "HIGH" and got.action == "chmod 600 /d/keys.json"
    missing = replace(healthy().local, api_key_known=False, keys_mode=None)  # type: ignore[arg-type]
    assert one(replace(healthy(), local=missing), "config.keys_missing").severity == "HIGH"


def test_auth_off_persistence_versions_and_external_store() -> None:
    f = replace(
        healthy(),
        info={"version": "0.2.0", "store": "external", "auth": False},
        local=replace(healthy().local, redis_appendonly=False),  # type: ignore[arg-type]
    )
    got = rules(diagnose(f, NOW_S))
    assert got["config.auth_off"].severity == "MEDIUM"
    assert (
        got["store.not_persistent"].severity == "MEDIUM"
        and "appendonly yes" in got["store.not_persistent"].action
    )
    assert got["config.version_mismatch"].severity == "LOW"
    assert got["store.external"].severity == "LOW"


def test_the_store_near_its_memory_limit_and_an_eviction_policy_that_loses_jobs() -> None:
    mib = 1024 * 1024

    def memory(used_mib: int, max_mib: int, policy: str = "noeviction") -> Facts:
        wire = {"usedBytes": used_mib * mib, "maxBytes": max_mib * mib, "policy": policy}
        return replace(healthy(), store_memory=wire)

    assert diagnose(memory(100, 1000), NOW_S) == [], "far from its limit, and noeviction"
    assert diagnose(memory(5000, 0, "allkeys-lru"), NOW_S) == [], "no maxmemory: the policy never applies"
    high = one(memory(850, 1000), "store.memory_high")
    assert high.severity == "MEDIUM" and "850 MiB of its 1000 MiB" in high.issue and "(85%)" in high.issue
    assert "RIPPLE_KEEP_RESULTS_S" in high.action and "maxmemory" in high.action
    assert one(memory(960, 1000), "store.memory_high").severity == "HIGH"
    full = one(memory(1300, 1000), "store.memory_full")
    assert full.severity == "HIGH" and full.issue.startswith("The job store's Redis is full (1300 MiB used")
    assert "no job can be queued (503)" in full.issue and "%" not in full.issue
    evicts = one(memory(10, 1000, "allkeys-lru"), "store.evicts_jobs")
    assert evicts.severity == "HIGH" and "queued jobs" in evicts.issue and "noeviction" in evicts.action
    results = one(memory(10, 1000, "volatile-ttl"), "store.evicts_results")
    assert results.severity == "MEDIUM" and "volatile-ttl" in results.issue


def test_facts_that_could_not_be_read() -> None:
    got = one(replace(healthy(), errors={"autoscaler": "503 not ready"}), "facts.autoscaler")
    assert got.severity == "HIGH" and "ray list actors" in got.action


def test_a_refused_key() -> None:
    got = one(replace(healthy(), errors={"workers": "401 missing or wrong API key"}), "config.unauthorized")
    assert got.severity == "HIGH" and "RIPPLE_API_KEY" in got.action


def test_cluster_rules() -> None:
    f = replace(
        healthy(),
        cluster={
            "nodes": [node(2), node(0, alive=False, nid="d" * 40)],
            "aliveNodes": 1,
            "draining": ["n" * 40],
            "pendingDemand": [{"kind": "task_actor", "resources": {"GPU": 4.0}, "count": 1}],
        },
    )
    got = rules(diagnose(f, NOW_S))
    assert got["cluster.draining"].severity == "MEDIUM"
    assert got["cluster.dead_nodes"].severity == "LOW"
    assert "GPU" in got["cluster.pending_demand"].issue
    none = replace(healthy(), cluster={"nodes": [], "aliveNodes": 0})
    assert one(none, "cluster.no_nodes").severity == "HIGH"


def test_worker_stuck_starting() -> None:
    w = worker("gen-2", "gen", "starting", firstSeenAt=NOW_MS - 400_000, pendingPlacement=True)
    got = one(replace(healthy(), workers=[*healthy().workers, w]), "workers.stuck_starting")
    assert got.severity == "MEDIUM" and "resources" in got.issue


def test_worker_stuck_starting_says_what_its_node_is_setting_up() -> None:
    reason = "setting up: installing torch (runtimeEnv.pip)"
    w = worker("gen-2", "gen", "starting", firstSeenAt=NOW_MS - 400_000, settingUp=True, reason=reason)
    got = one(replace(healthy(), workers=[*healthy().workers, w]), "workers.stuck_starting")
    assert got.issue.endswith("(installing torch (runtimeEnv.pip))"), got.issue
    assert "runtime_env_setup" in got.action and "No node" not in got.action
    loading = worker("gen-3", "gen", "starting", firstSeenAt=NOW_MS - 400_000)
    got = one(replace(healthy(), workers=[*healthy().workers, loading]), "workers.stuck_starting")
    assert "(loading its handler)" in got.issue and "ripple logs gen-3 --stderr" in got.action


def test_stale_heartbeat_of_a_live_worker() -> None:
    f = replace(healthy(), workers=[worker("w-ext", "ext", "busy", age_s=30, jobs=["j1"])])
    f = replace(f, thresholds=Thresholds(heartbeat_timeout_s=5))
    got = one(f, "workers.stale_heartbeat")
    assert got.severity == "HIGH" and "/v2/ext/ping" in got.action and "1 job" in got.issue


def test_heartbeat_lost_is_high_when_nobody_else_serves() -> None:
    lost = worker("w-ext", "ext", "stopped", age_s=20, reason="heartbeat lost")
    got = one(replace(healthy(), workers=[lost]), "workers.heartbeat_lost")
    assert got.severity == "HIGH" and "RUNPOD_POD_ID=w-ext" in got.action
    covered = replace(healthy(), workers=[lost, worker("w-2", "ext")])
    assert one(covered, "workers.heartbeat_lost").severity == "MEDIUM"


def test_quarantined_worker() -> None:
    w = worker("gen-1", "gen", health="quarantined")
    got = one(replace(healthy(), workers=[w, worker("w-ext", "ext")]), "workers.quarantined")
    assert got.severity == "MEDIUM" and "/api/v1/workers/gen-1/drain" in got.action


def test_a_replica_that_cannot_use_the_store_itself() -> None:
    trouble = {"sinceS": NOW_S - 42, "error": "no answer within 10 s"}
    w = worker("gen-1", "gen", storeTrouble=trouble)
    got = one(replace(healthy(), workers=[w, worker("w-ext", "ext")]), "workers.store_unreachable")
    assert got.severity == "MEDIUM" and "gen-1 of gen" in got.issue and "for 42 s" in got.issue, got
    assert "no answer within 10 s" in got.issue and "RIPPLE_REDIS_URL" in got.action, got
    stopped = worker("gen-2", "gen", "stopped", storeTrouble=trouble)
    fine = [worker("gen-1", "gen", storeTrouble=None), stopped]
    assert "workers.store_unreachable" not in rules(diagnose(replace(healthy(), workers=fine), NOW_S))


def test_handler_import_error_carries_the_traceback() -> None:
    trace = "Traceback (most recent call last):\n ...\nModuleNotFoundError: No module named 'no_such_module'"
    bad = [
        worker(
            f"bad-{i}",
            "bad",
            "stopped",
            reason="failed to start: ModuleNotFoundError: No module named 'no_such_module'",
            error=trace,
        )
        for i in range(2)
    ]
    f = replace(healthy(), endpoints=[*healthy().endpoints, endpoint("bad", "no_such_module:handler")])
    got = one(replace(f, workers=[*f.workers, *bad]), "workers.handler_import")
    assert got.severity == "HIGH"
    assert "no_such_module:handler" in got.issue and "2 worker(s)" in got.issue
    assert "ripple endpoint update bad --handler" in got.action
    assert "ModuleNotFoundError" in got.detail


def test_a_runtime_env_that_cannot_be_set_up_points_at_the_packages_not_the_handler() -> None:
    trace = (
        "Failed to set up runtime environment.\nCould not create the actor because its associated runtime "
        "env failed to be created.\n...\nERROR: No matching distribution found for no-such-pkg==1.0"
    )
    line = "failed to start: ERROR: No matching distribution found for no-such-pkg==1.0"
    bad = [worker(f"pkg-{i}", "pkg", "stopped", reason=line, error=trace) for i in range(2)]
    f = replace(healthy(), endpoints=[*healthy().endpoints, endpoint("pkg", "handler:handler")])
    found = rules(diagnose(replace(f, workers=[*f.workers, *bad]), NOW_S))
    assert "workers.handler_import" not in found
    got = found["workers.runtime_env_setup"]
    assert got.severity == "HIGH" and "cannot set up the runtime environment" in got.issue
    assert "no-such-pkg==1.0" in got.issue and "requirements.txt" in got.action
    assert "ripple deploy PATH --endpoint pkg" in got.action and "No matching" in got.detail


def test_a_deleted_endpoints_failed_workers_are_its_past() -> None:
    gone = [
        worker(f"old-{i}", "old", "stopped", reason="failed to start: ModuleNotFoundError: x")
        for i in range(2)
    ]
    gone += [worker(f"old-d{i}", "old", "stopped", reason="died: ActorDiedError") for i in range(3)]
    f = replace(healthy(), workers=[*healthy().workers, *gone])
    rules_now = rules(diagnose(f, NOW_S))
    assert "workers.handler_import" not in rules_now and "workers.repeated_failures" not in rules_now
    unread = replace(f, endpoints=[], errors={"endpoints": "HTTP 503"})  # not known to be gone: said
    assert "workers.handler_import" in rules(diagnose(unread, NOW_S))


def test_repeated_failures() -> None:
    dead = [worker(f"gen-{i}", "gen", "stopped", reason="died: ActorDiedError") for i in range(3)]
    got = one(replace(healthy(), workers=[*healthy().workers, *dead]), "workers.repeated_failures")
    assert got.severity == "HIGH"
    two = replace(healthy(), workers=[*healthy().workers, *dead[:2]])
    assert "workers.repeated_failures" not in rules(diagnose(two, NOW_S))


def test_queued_jobs_with_no_worker() -> None:
    f = replace(healthy(), workers=[worker("gen-1", "gen")])
    got = one(f, "jobs.no_worker")
    assert got.severity == "HIGH" and "/v2/ext/job-take" in got.action
    zero = replace(
        healthy(),
        endpoints=[endpoint("gen", maxReplicas=0)],
        workers=[],
        stats={"gen": {"queued": 1}},
    )
    assert "--max 1" in one(zero, "jobs.no_worker").action
    off = replace(zero, endpoints=[endpoint("gen")], autoscaler={"enabled": False, "endpoints": []})
    assert "autoscaler/enable" in one(off, "jobs.no_worker").action


def test_endpoint_needing_more_gpus_than_any_node() -> None:
    f = replace(healthy(), endpoints=[*healthy().endpoints, endpoint("big", gpus=4)])
    quiet = one(f, "jobs.never_fits")
    assert quiet.severity == "MEDIUM" and "--gpus 2" in quiet.action and "4 GPUs" in quiet.issue
    waiting = replace(f, stats={**f.stats, "big": {"queued": 1}})
    assert one(waiting, "jobs.never_fits").severity == "HIGH"


def test_job_past_its_execution_timeout() -> None:
    job = {
        "id": "j-1",
        "endpoint": "ext",
        "status": "IN_PROGRESS",
        "workerId": "w-ext",
        "startedAt": NOW_MS - 10_000,
        "executionTimeout": 3_000,
    }
    got = one(replace(healthy(), jobs_in_progress=[job]), "jobs.past_timeout")
    assert got.severity == "HIGH" and "/v2/ext/cancel/j-1" in got.action and "j-1" in got.issue
    fine = {**job, "startedAt": NOW_MS - 2_000}
    assert "jobs.past_timeout" not in rules(diagnose(replace(healthy(), jobs_in_progress=[fine]), NOW_S))


def test_orphaned_leases() -> None:
    base = {"endpoint": "ext", "status": "IN_PROGRESS", "startedAt": NOW_MS, "executionTimeout": 600_000}
    unknown = {**base, "id": "j-1", "workerId": "ghost"}
    assert one(replace(healthy(), jobs_in_progress=[unknown]), "jobs.orphan").severity == "MEDIUM"
    stopped = replace(
        healthy(),
        workers=[*healthy().workers, worker("w-old", "ext", "stopped")],
        jobs_in_progress=[{**base, "id": "j-2", "workerId": "w-old"}],
    )
    got = one(stopped, "jobs.orphan")
    assert got.severity == "HIGH" and "retry/j-2" in got.action


def test_old_queue() -> None:
    f = replace(healthy(), stats={**healthy().stats, "gen": {"queued": 5, "oldestQueuedAgeS": 900}})
    assert one(f, "jobs.old_queue").severity == "MEDIUM"
    assert "waitReason" not in one(f, "jobs.old_queue").issue


def test_old_queue_names_the_wait_reason() -> None:
    why = {"code": "handler_fails_to_load", "message": "replicas fail to load the handler: ImportError: x"}
    stats = {"queued": 5, "oldestQueuedAgeS": 900, "waitReason": why}
    got = one(replace(healthy(), stats={**healthy().stats, "gen": stats}), "jobs.old_queue")
    assert got.issue == (
        "The oldest job queued at gen has waited 900 s (5 queued); waitReason handler_fails_to_load: "
        "replicas fail to load the handler: ImportError: x"
    )
    assert got.detail == {"waitReason": why}


def test_webhook_deliveries_that_did_not_arrive() -> None:
    fine = {"delivered": 4, "failed": 0, "refused": 0, "windowS": 3600.0}
    assert "jobs.webhooks_undelivered" not in rules(
        diagnose(replace(healthy(), stats={**healthy().stats, "gen": {"queued": 0, "webhooks": fine}}), NOW_S)
    )
    last = {"jobId": "j-7", "outcome": "failed", "reason": "HTTP 503", "atS": NOW_S - 5}
    failing = {**fine, "failed": 2, "lastProblem": last}
    f = replace(healthy(), stats={**healthy().stats, "gen": {"queued": 0, "webhooks": failing}})
    got = one(f, "jobs.webhooks_undelivered")
    assert got.severity == "MEDIUM"
    assert got.issue == (
        "gen: 2 of 6 webhook deliveries in the last 60 min did not arrive (2 failed after every attempt); "
        "latest: job j-7 failed: HTTP 503"
    )
    assert "/status/ID" in got.action and got.detail == {"webhooks": failing}


def test_autoscaler_off_and_blocked() -> None:
    f = replace(
        healthy(),
        stats={**healthy().stats, "gen": {"queued": 3}},
        autoscaler={
            "enabled": False,
            "endpoints": [{"endpoint": "gen", "blocked": "not enough GPUs (0 GPUs free)", "desired": 2}],
        },
    )
    got = rules(diagnose(f, NOW_S))
    assert got["autoscaler.off"].severity == "MEDIUM" and "gen" in got["autoscaler.off"].issue
    assert got["autoscaler.blocked"].severity == "MEDIUM"
    assert "GPU nodes" in got["autoscaler.blocked"].action
    capped = replace(
        healthy(),
        autoscaler={
            "enabled": True,
            "endpoints": [{"endpoint": "gen", "blocked": "demand 5 above maxReplicas 3"}],
        },
    )
    assert "--max N" in one(capped, "autoscaler.blocked").action


def test_findings_are_sorted_most_severe_first() -> None:
    f = replace(
        healthy(),
        info={"version": "9", "store": "embedded", "auth": False},
        workers=[worker("gen-1", "gen")],
    )
    sev = [x.severity for x in diagnose(f, NOW_S)]
    assert sev == sorted(sev, key=["HIGH", "MEDIUM", "LOW"].index)
    assert sev[0] == "HIGH" and "LOW" in sev


def test_masking() -> None:
    assert mask("rk_secretvalue") == "rk_s…"
    assert mask(None) is None
    assert mask_url("redis://user:pw@host:6379/0") == "redis://***@host:6379/0"
    assert mask_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("pool_error", "runtimeEnv"),
        ("version_failed", "ripple rollback bad"),
        ("start_failed", "ripple deploy"),
        ("unplaceable", "gpuTypes"),
    ],
)
def test_endpoint_problem_is_high(code: str, says: str) -> None:
    problem = {"code": code, "message": "replicas cannot start: RuntimeEnvSetupError", "detail": "trace"}
    bad = {**endpoint("bad", "h:f"), "problem": problem}
    got = one(replace(healthy(), endpoints=[*healthy().endpoints, bad]), "endpoints.cannot_start")
    assert got.severity == "HIGH" and "bad" in got.issue and code in got.issue
    assert "RuntimeEnvSetupError" in got.issue and says in got.action and got.detail == "trace"


def test_endpoint_problem_not_doubled_with_the_import_rule() -> None:
    problem = {"code": "start_failed", "message": "1 replica(s) failed to start"}
    bad_ep = {**endpoint("bad", "no_such_module:handler"), "problem": problem}
    bad = worker("bad-1", "bad", "stopped", reason="failed to start: ModuleNotFoundError: x", error="tb")
    f = replace(healthy(), endpoints=[*healthy().endpoints, bad_ep])
    rules = [x.rule for x in diagnose(replace(f, workers=[*f.workers, bad]), NOW_S)]
    assert "workers.handler_import" in rules and "endpoints.cannot_start" not in rules
