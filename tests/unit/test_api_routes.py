"""The routers of ``orchestrator.api`` against fakes of the typed actor clients (no Ray, no Redis): each
route's reply shape (the RunPod wire shapes key for key), the typed values it hands the queue, 204s."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from api_fakes import Harness, boot, harness

from orchestrator import __version__
from orchestrator.api.webui import CSRF_HEADER, SESSION_COOKIE
from orchestrator.api.webui.session import csrf_token_for, issue_session
from orchestrator.config import load_settings
from orchestrator.core.models import EndpointPatch, EndpointSpec, RunRequest

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    h = harness(boot(str(tmp_path)))
    h.queue.endpoints["ep"] = EndpointSpec(name="ep")
    return h


# Client API ---------------------------------------------------------------------------------------------


def test_run_replies_id_and_in_queue_and_hands_the_queue_a_validated_request(h: Harness) -> None:
    r = h.api.post("/v2/ep/run", json={"input": {"x": 1}, "policy": {"ttl": 5000}, "s3Config": {}})
    assert r.status_code == 200 and r.json() == {"id": "job-1", "status": "IN_QUEUE"}
    name, (endpoint, requests, request_id) = h.queue.calls[0]
    assert name == "submit" and endpoint == "ep" and request_id == r.headers["x-request-id"]
    (req,) = requests
    assert isinstance(req, RunRequest) and req.input == {"x": 1} and req.policy and req.policy.ttl == 5000


def test_run_batch_replies_ids_in_order(h: Harness) -> None:
    r = h.api.post("/v2/ep/run-batch", json={"jobs": [{"input": 1}, {"input": 2}]})
    assert r.json() == {"ids": ["job-1", "job-2"], "status": "IN_QUEUE"}
    assert all(isinstance(req, RunRequest) for req in h.queue.calls[0][1][1])


def test_runsync_passes_the_wait_in_seconds_and_replies_the_status_object(h: Harness) -> None:
    r = h.api.post("/v2/ep/runsync?wait=1500", json={"input": 1})
    assert r.json() == {"id": "job-1", "status": "IN_QUEUE", "delayTime": 5, "executionTime": 0}
    assert h.queue.calls[0][0] == "runsync" and h.queue.calls[0][1][2] == 1.5
    h.api.post("/v2/ep/runsync", json={"input": 1})
    assert h.queue.calls[-2][1][2] is None  # no wait: the queue's default


def test_status_object_keeps_optional_keys_exactly(h: Harness) -> None:
    job = h.api.post("/v2/ep/run", json={"input": 1}).json()["id"]
    queued = h.api.get(f"/v2/ep/status/{job}").json()
    assert queued == {"id": job, "status": "IN_QUEUE", "delayTime": 5, "executionTime": 0}
    h.queue.jobs[job].status = "COMPLETED"  # a handler that returned None: "output": null is kept
    h.queue.jobs[job].worker_id = "w1"
    done = h.api.post(f"/v2/ep/status/{job}").json()
    assert done == {
        "id": job,
        "status": "COMPLETED",
        "delayTime": 5,
        "executionTime": 0,
        "workerId": "w1",
        "output": None,
    }
    h.queue.jobs[job].status, h.queue.jobs[job].error = "FAILED", "boom"
    failed = h.api.get(f"/v2/ep/status/{job}").json()
    assert failed["error"] == "boom" and "output" not in failed


def test_stream_always_has_a_stream_list(h: Harness) -> None:
    job = h.api.post("/v2/ep/run", json={"input": 1}).json()["id"]
    assert h.api.get(f"/v2/ep/stream/{job}").json() == {"id": job, "status": "IN_QUEUE", "stream": []}
    h.queue.jobs[job].chunks = [{"t": "a"}, None]
    assert h.api.post(f"/v2/ep/stream/{job}").json() == {
        "id": job,
        "status": "IN_QUEUE",
        "stream": [{"output": {"t": "a"}}, {"output": None}],
    }


def test_cancel_retry_purge_and_health_shapes(h: Harness) -> None:
    job = h.api.post("/v2/ep/run", json={"input": 1}).json()["id"]
    assert h.api.post(f"/v2/ep/cancel/{job}").json() == {"id": job, "status": "CANCELLED"}
    assert h.api.post(f"/v2/ep/retry/{job}").json() == {"id": job, "status": "IN_QUEUE"}
    health = h.api.get("/v2/ep/health").json()
    assert health["jobs"]["inQueue"] == 1
    assert set(health["jobs"]) >= {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert set(health["workers"]) == {"idle", "running", "initializing", "draining", "unhealthy"}
    assert h.api.post("/v2/ep/purge-queue").json() == {"removed": 1, "status": "completed"}


# Worker protocol ----------------------------------------------------------------------------------------


def test_job_take_is_204_when_nothing_arrives_and_the_job_otherwise(h: Harness) -> None:
    empty = h.worker.get("/v2/ep/job-take/w1?job_in_progress=0")
    assert empty.status_code == 204 and empty.content == b""
    job = h.api.post("/v2/ep/run", json={"input": {"p": 1}}).json()["id"]
    taken = h.worker.get("/v2/ep/job-take/w1")
    assert taken.status_code == 200 and taken.json() == {"id": job, "input": {"p": 1}, "attempt": 1}
    take = next(args for name, args in h.queue.calls if name == "take")
    assert take[:4] == ("ep", "w1", 1, 0.0)  # one job, held for the configured take wait


def test_job_take_batch_is_a_list_or_204(h: Harness) -> None:
    assert h.worker.get("/v2/ep/job-take-batch/w1?batch_size=5").status_code == 204
    ids = h.api.post("/v2/ep/run-batch", json={"jobs": [{"input": 1}, {"input": 2}]}).json()["ids"]
    r = h.worker.get("/v2/ep/job-take-batch/w1?batch_size=5")
    assert [j["id"] for j in r.json()] == ids


def test_invalid_worker_ids_are_422(h: Harness) -> None:
    r = h.worker.get("/v2/ep/job-take/bad%20id%0A")
    assert r.status_code == 422 and r.json()["detail"]["loc"] == ["path", "worker_id"]
    assert h.worker.get(f"/v2/ep/job-take/{'w' * 200}").status_code == 422


def test_job_done_and_stream_push(h: Harness) -> None:
    job = h.api.post("/v2/ep/run", json={"input": 1}).json()["id"]
    h.worker.get("/v2/ep/job-take/w1")
    pushed = h.worker.post(f"/v2/ep/job-stream/w1/{job}", content=b'{"output": "chunk"}')
    assert pushed.json() == {"id": job, "accepted": True}
    # The worker SDK labels JSON as a form: the body is read as JSON anyway.
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    done = h.worker.post(f"/v2/ep/job-done/w1/{job}?isStream=true", content=b'{"output": 7}', headers=headers)
    assert done.json() == {"id": job, "accepted": True, "status": "COMPLETED"}
    assert h.queue.calls[-2][1][3:5] == ({"output": 7}, True)
    late = h.worker.post(f"/v2/ep/job-done/w2/{job}", json={"output": 8})
    assert late.json() == {"id": job, "accepted": False, "status": "COMPLETED", "reason": "not_held"}
    assert h.worker.post(f"/v2/ep/job-done/w1/{job}", content=b"{nope").status_code == 422


def test_job_done_batch_validates_each_result(h: Harness) -> None:
    ids = h.api.post("/v2/ep/run-batch", json={"jobs": [{"input": 1}, {"input": 2}]}).json()["ids"]
    h.worker.get("/v2/ep/job-take-batch/w1?batch_size=2")
    r = h.worker.post(
        "/v2/ep/job-done-batch/w1", json=[{"id": ids[0], "output": 1}, {"id": ids[1], "error": "x"}]
    )
    assert r.json() == {
        "results": [
            {"id": ids[0], "accepted": True, "status": "COMPLETED"},
            {"id": ids[1], "accepted": True, "status": "FAILED"},
        ]
    }
    bad = h.worker.post("/v2/ep/job-done-batch/w1", json=[{"output": 1}])
    assert bad.status_code == 422 and bad.json()["detail"] == {"loc": ["body", 0, "id"]}
    assert h.worker.post("/v2/ep/job-done-batch/w1", json=[]).status_code == 422


def test_job_stop_is_204_or_the_ids_and_ping_lists_them(h: Harness) -> None:
    assert h.worker.get("/v2/ep/job-stop/w1").status_code == 204
    h.queue.stops["w1"] = ["b", "a"]
    assert h.worker.get("/v2/ep/ping/w1?job_id=a,b,").json() == {"status": "ok", "jobsToStop": ["a", "b"]}
    assert h.queue.calls[-1][1][2] == ["a", "b"]
    assert h.worker.get("/v2/ep/job-stop/w1").json() == {"jobsToStop": ["b", "a"]}


# Management API -----------------------------------------------------------------------------------------


def test_endpoint_crud_replies_endpoint_models(h: Harness) -> None:
    created = h.api.post("/api/v1/endpoints", json={"name": "new", "gpus": 0.5, "minReplicas": 1})
    assert created.status_code == 201
    body = created.json()
    assert body == EndpointSpec(name="new", gpus=0.5, min_replicas=1).wire()
    assert isinstance(h.queue.calls[-1][1][0], EndpointSpec)
    assert [e["name"] for e in h.api.get("/api/v1/endpoints").json()["endpoints"]] == ["ep", "new"]
    assert h.api.get("/api/v1/endpoints/new").json() == body
    patched = h.api.patch("/api/v1/endpoints/new", json={"priority": 80})
    assert patched.json() == {**body, "priority": 80}
    patch = h.queue.calls[-1][1][1]
    assert isinstance(patch, EndpointPatch) and patch.model_fields_set == {"priority"}
    assert h.api.delete("/api/v1/endpoints/new").json() == {
        "name": "new",
        "deleted": True,
        "cancelledJobs": 0,
    }
    assert h.api.get("/api/v1/endpoints/new").status_code == 404


def test_endpoint_patch_is_validated_at_the_route(h: Harness) -> None:
    for body, field in (
        ({"name": "renamed"}, "name"),
        ({"gpuz": 1}, "gpuz"),
        ({"keepAlive": "x"}, "keepAlive"),
    ):
        r = h.api.patch("/api/v1/endpoints/ep", json=body)
        assert r.status_code == 422 and field in r.json()["error"], r.text
    assert h.api.patch("/api/v1/endpoints/ep", content=b"[1]").status_code == 422
    assert h.api.patch("/api/v1/endpoints/ep", content=b"{oops").status_code == 422
    assert not any(name == "update_endpoint" for name, _ in h.queue.calls)


def test_workers_jobs_and_stats(h: Harness) -> None:
    job = h.api.post("/v2/ep/run", json={"input": {"a": 1}}).json()["id"]
    h.worker.get("/v2/ep/job-take/w1")
    (worker,) = h.api.get("/api/v1/workers").json()["workers"]
    assert worker == {"workerId": "w1", "endpoint": "ep", "state": "busy", "draining": False}
    assert h.api.get("/api/v1/endpoints/ep/workers").json() == {"workers": [worker]}
    assert h.api.post("/api/v1/workers/w1/drain").json()["state"] == "draining"
    assert h.api.post("/api/v1/workers/nobody/drain").status_code == 404
    listing = h.api.get("/api/v1/jobs", params={"endpoint": "ep", "status": "IN_PROGRESS"}).json()
    assert listing["nextCursor"] is None and [j["id"] for j in listing["jobs"]] == [job]
    assert listing["jobs"][0]["input"] == {"a": 1} and listing["jobs"][0]["workerId"] == "w1"
    assert h.queue.calls[-1][1] == ("ep", "IN_PROGRESS", 50, None)
    detail = h.api.get(f"/api/v1/jobs/{job}").json()
    assert detail["endpoint"] == "ep" and detail["history"] == [] and "output" not in detail
    stats = h.api.get("/api/v1/stats").json()
    assert stats == {
        "endpoints": {
            "ep": {
                "queued": 0,
                "running": 0,
                "oldestQueuedAgeS": None,
                "waitingTakers": 0,
                "lastArrivalS": None,
            }
        }
    }


def test_info_and_cluster(h: Harness, tmp_path: Path) -> None:
    info = h.api.get("/api/v1/info").json()
    settings = load_settings(data_dir=tmp_path, insecure=True)
    assert info == {
        "version": __version__,
        "dashboardUrl": None,
        "store": "embedded",
        "dataDir": str(tmp_path),
        "namespace": settings.namespace,
        "auth": True,
        "heartbeatTimeoutS": settings.heartbeat_timeout_s,
        "leaseGraceS": settings.lease_grace_s,
        "sweepIntervalS": settings.sweep_interval_s,
        "autoscalerIntervalS": settings.autoscaler.interval_s,
    }
    cluster = h.api.get("/api/v1/cluster").json()
    assert (
        cluster["gpusTotal"] == 2.0 and cluster["pendingDemand"] is None and cluster["gpuTypes"] == ["A100"]
    )


def test_node_specs_shape() -> None:
    from orchestrator.api.routes.cluster import node_specs

    nodes = [
        {"Alive": False, "NodeID": "dead", "Resources": {}},
        {
            "Alive": True,
            "NodeID": "n1",
            "Resources": {"GPU": 2.0, "CPU": 8.0, "memory": 2**31, "accelerator_type:A100": 1.0},
        },
    ]
    assert [n.model_dump() for n in node_specs(nodes)] == [
        {
            "nodeId": "n1",
            "gpuType": "A100",
            "gpusByType": {"A100": 2.0},
            "gpus": 2.0,
            "cpus": 8.0,
            "memoryMb": 2048,
        }
    ]


def test_autoscaler_routes(h: Harness) -> None:
    status = h.api.get("/api/v1/autoscaler/status").json()
    assert status["enabled"] is True and status["gpus"]["free"] == 1.0 and "leader" not in status
    assert h.api.post("/api/v1/autoscaler/disable").json() == {"enabled": False}
    assert h.api.post("/api/v1/autoscaler/enable").json() == {"enabled": True}
    h.autoscaler.decisions["ep"] = [{"action": "up", "reason": "queued"}, {"action": "none", "reason": "-"}]
    history = h.api.get("/api/v1/autoscaler/history/ep?limit=1").json()
    assert history == {"endpoint": "ep", "history": [{"action": "up", "reason": "queued"}]}
    put = h.api.put("/api/v1/autoscaler/overrides/ep", json={"desiredReplicas": 2})
    assert put.json() == {"endpoint": "ep", "override": {"desiredReplicas": 2, "disabled": False}}
    assert h.api.put("/api/v1/autoscaler/overrides/ep", json={"desired": 2}).status_code == 422
    assert h.api.delete("/api/v1/autoscaler/overrides/ep").json() == {"endpoint": "ep", "override": None}


def test_probes_and_metrics(h: Harness) -> None:
    assert h.anonymous.get("/health/live").json() == {"status": "ok"}
    ready = {"status": "ok", "store": "ok", "recovery": {"jobs": 0}}
    assert h.anonymous.get("/health/startup").json() == ready
    assert h.anonymous.get("/health").json() == {
        "status": "ok",
        "queue": {"store": "ok", "recovery": {"jobs": 0}},
    }
    metrics = h.anonymous.get("/metrics")
    assert metrics.text == "ripple_queue_depth 0\n" and metrics.headers["content-type"].startswith(
        "text/plain"
    )


def test_a_web_ui_session_counts_as_the_api_key(tmp_path: Path) -> None:
    """The web UI mounts on the app's state: its session cookie (with the CSRF header on non-GET methods)
    passes the real API-key dependency; the worker routes still want the worker key."""
    secret = b"s" * 32
    resolved = boot(str(tmp_path))
    h = harness(replace(resolved, auth=replace(resolved.auth, session_secret=secret)))
    h.queue.endpoints["ep"] = EndpointSpec(name="ep")
    assert h.state.ui_verify is not None
    token = issue_session(secret, time.time(), b"n" * 16).token
    h.anonymous.cookies.set(SESSION_COOKIE, token)
    assert h.anonymous.get("/api/v1/endpoints").status_code == 200
    assert h.anonymous.post("/v2/ep/run", json={"input": 1}).status_code == 401  # no CSRF header
    csrf = {CSRF_HEADER: csrf_token_for(token, secret)}
    assert h.anonymous.post("/v2/ep/run", json={"input": 1}, headers=csrf).status_code == 200
    assert h.anonymous.get("/v2/ep/job-take/w1").status_code == 401
    assert h.anonymous.get("/ui/session").json()["authenticated"] is True
