"""The unmodified ``runpod`` SDK on both sides of a real ``ripple up``.

Clients use ``runpod.Endpoint`` pointed at ``{url}/v2``; workers are stock RunPod serverless workers running
``examples/handlers.py``. Each test has its own endpoint, so tests share one instance without interfering.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import requests
import runpod
from conftest import Instance, SdkWorker, free_port, job_status, wait_for, wait_status

pytestmark = pytest.mark.timeout(120)

FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}


@pytest.fixture
def endpoint_of(ripple_app: Instance) -> Callable[[str], runpod.Endpoint]:
    """``endpoint_of(name)``: a ``runpod.Endpoint`` of the shared instance, configured as a user would."""
    runpod.api_key = ripple_app.api_key
    runpod.endpoint_url_base = ripple_app.v2

    def make(name: str) -> runpod.Endpoint:
        return runpod.Endpoint(name)

    return make


def _stopped_in_log(worker: SdkWorker, job_id: str) -> bool:
    return f"{job_id} | Stopping job." in worker.log()


def _job_detail(inst: Instance, job_id: str) -> dict[str, Any]:
    with inst.client() as c:
        r = c.get(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_run_status_output_run_sync_and_health(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    name = ripple_app.create_endpoint("sdk-basic")
    worker = workers(ripple_app, name, "echo")
    ep = endpoint_of(name)

    assert ep.run_sync({"n": 1}, timeout=60) == {"echo": {"n": 1}}

    job = ep.run({"input": {"k": "v"}, "policy": {"executionTimeout": 60_000}})
    assert job.status() in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    assert job.output(timeout=30) == {"echo": {"k": "v"}}
    assert job.status() == "COMPLETED"

    obj = job_status(ripple_app, name, job.job_id)
    assert obj["id"] == job.job_id and obj["status"] == "COMPLETED"
    assert obj["workerId"] == worker.worker_id
    assert isinstance(obj["delayTime"], int) and isinstance(obj["executionTime"], int)
    assert obj["output"] == {"echo": {"k": "v"}}

    health = ep.health()
    assert health["jobs"]["completed"] == 2
    assert health["jobs"]["inQueue"] == 0 and health["jobs"]["inProgress"] == 0
    assert health["workers"]["idle"] + health["workers"]["running"] == 1


def test_stream_ends_with_every_chunk(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    name = ripple_app.create_endpoint("sdk-stream")
    workers(ripple_app, name, "stream")
    job = endpoint_of(name).run({"n": 5, "sleep_s": 0.2})
    chunks = list(job.stream())  # the SDK's stream() only ends on a final status with an empty stream
    assert chunks == [{"i": k} for k in range(5)]
    final = wait_status(ripple_app, name, job.job_id, FINAL)
    assert final["status"] == "COMPLETED"
    assert final["output"] == [{"i": k} for k in range(5)]  # the SDK's aggregate, posted to job-done


def test_handler_error_fails_the_job(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    name = ripple_app.create_endpoint("sdk-fail", maxRetries=0)
    workers(ripple_app, name, "echo")
    job = endpoint_of(name).run({"fail": "boom-42"})
    final = wait_status(ripple_app, name, job.job_id, FINAL, timeout_s=60)
    assert final["status"] == "FAILED"
    assert "boom-42" in final["error"]
    assert job.status() == "FAILED"


def test_a_result_over_the_body_limit_fails_the_job_with_the_reason(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    """The SDK posts an 11 MiB result (the limit is 10 MiB): the job fails saying so, at once, instead of
    being taken back from the worker as not reported; the worker goes on with the next job."""
    name = ripple_app.create_endpoint("sdk-oversized", maxRetries=0)
    workers(ripple_app, name, "echo")
    ep = endpoint_of(name)
    job = ep.run({"pad_bytes": 11 * 1024 * 1024})
    final = wait_status(ripple_app, name, job.job_id, FINAL, timeout_s=60)
    assert final["status"] == "FAILED", final
    assert "over the limit of 10485760 bytes (RIPPLE_MAX_BODY_BYTES)" in final["error"]
    assert _job_detail(ripple_app, job.job_id)["attempts"] == 1
    assert ep.run_sync({"n": 2}, timeout=60) == {"echo": {"n": 2}}


def test_a_result_of_several_mebibytes_comes_back_whole(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    """A 9 MiB output: the worker's post and the client's runsync reply both pass Serve's proxy, which
    `ripple up` sets to reach replicas over gRPC; gRPC's own 4 MiB message limit would make them a 500."""
    name = ripple_app.create_endpoint("sdk-large-output")
    workers(ripple_app, name, "echo")
    out = endpoint_of(name).run_sync({"pad_bytes": 9 * 1024 * 1024}, timeout=120)
    assert isinstance(out, dict) and len(out["pad"]) == 9 * 1024 * 1024


def test_progress_updates_never_complete(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    name = ripple_app.create_endpoint("sdk-progress")
    workers(ripple_app, name, "echo")
    job = endpoint_of(name).run({"progress": 3, "sleep_s": 3})
    wait_status(ripple_app, name, job.job_id, "IN_PROGRESS", timeout_s=60)
    seen_progress = False
    t_end = time.monotonic() + 2.0
    while time.monotonic() < t_end:
        obj = job_status(ripple_app, name, job.job_id)
        if obj["status"] != "IN_PROGRESS":
            break
        seen_progress = seen_progress or (isinstance(obj.get("output"), dict) and "step" in obj["output"])
        time.sleep(0.2)
    assert obj["status"] == "IN_PROGRESS", "a progress update completed the job"
    assert seen_progress, "progress updates were not visible in the status object"
    final = wait_status(ripple_app, name, job.job_id, FINAL)
    assert final["status"] == "COMPLETED"
    assert final["output"] == {"echo": {"progress": 3, "sleep_s": 3}}


def test_cancel_stops_the_worker_and_ignores_a_late_result(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    name = ripple_app.create_endpoint("sdk-cancel")
    worker = workers(ripple_app, name, "echo")
    job = endpoint_of(name).run({"sleep_s": 60})
    wait_status(ripple_app, name, job.job_id, "IN_PROGRESS", timeout_s=60)
    assert job.cancel() == {"id": job.job_id, "status": "CANCELLED"}
    wait_for(lambda: _stopped_in_log(worker, job.job_id), 15, "the worker to be told to stop (job-stop)")
    # What the SDK would post if its handler could not be stopped: dropped, the job stays CANCELLED.
    r = httpx.post(
        f"{ripple_app.v2}/{name}/job-done/{worker.worker_id}/{job.job_id}?gpu=CPU&isStream=false",
        content=json.dumps({"output": "late"}),
        headers={"Authorization": ripple_app.worker_key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] is False
    time.sleep(1.0)
    final = job_status(ripple_app, name, job.job_id)
    assert final["status"] == "CANCELLED" and final.get("output") != "late"
    # Cancelling twice is idempotent.
    assert job.cancel()["status"] == "CANCELLED"
    # The worker is still usable afterwards.
    assert endpoint_of(name).run_sync({"after": True}, timeout=60) == {"echo": {"after": True}}


def test_purge_queue_and_retry(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    name = ripple_app.create_endpoint("sdk-purge")
    ep = endpoint_of(name)
    jobs = [ep.run({"i": i}) for i in range(4)]
    assert ep.health()["jobs"]["inQueue"] == 4
    assert ep.purge_queue() == {"removed": 4, "status": "completed"}
    assert ep.health()["jobs"]["inQueue"] == 0
    assert {j.status() for j in jobs} == {"CANCELLED"}

    base = f"{ripple_app.v2}/{name}"
    auth = {"Authorization": f"Bearer {ripple_app.api_key}"}
    r = httpx.post(f"{base}/retry/{jobs[0].job_id}", headers=auth)
    assert r.status_code == 200 and r.json() == {"id": jobs[0].job_id, "status": "IN_QUEUE"}
    workers(ripple_app, name, "echo")
    done = wait_status(ripple_app, name, jobs[0].job_id, FINAL, timeout_s=60)
    assert done["status"] == "COMPLETED" and done["output"] == {"echo": {"i": 0}}
    # A completed job cannot be retried; a job of another endpoint is unknown here.
    r = httpx.post(f"{base}/retry/{jobs[0].job_id}", headers=auth)
    assert r.status_code == 409 and r.json()["error"]
    assert {j.status() for j in jobs[1:]} == {"CANCELLED"}
    assert ep.health()["jobs"]["retried"] >= 1


def test_low_priority_jobs_go_last(ripple_app: Instance) -> None:
    name = ripple_app.create_endpoint("sdk-prio")
    auth = {"Authorization": f"Bearer {ripple_app.api_key}"}
    base = f"{ripple_app.v2}/{name}"
    submitted: list[tuple[str, bool]] = []
    for low in (True, True, False, True, False):
        body: dict[str, Any] = {"input": {"low": low}, "policy": {"lowPriority": low}}
        r = httpx.post(f"{base}/run", json=body, headers=auth)
        assert r.status_code == 200, r.text
        submitted.append((r.json()["id"], low))
    taken = []
    for _ in submitted:
        r = httpx.get(
            f"{base}/job-take/prio-w?gpu=CPU&job_in_progress=0",
            headers={"Authorization": ripple_app.worker_key},
        )
        assert r.status_code == 200, r.text
        taken.append(r.json()["id"])
        httpx.post(
            f"{base}/job-done/prio-w/{taken[-1]}?isStream=false",
            content=json.dumps({"output": 1}),
            headers={"Authorization": ripple_app.worker_key},
        ).raise_for_status()
    normal = [j for j, low in submitted if not low]
    low = [j for j, low in submitted if low]
    assert taken == normal + low


class _Hooks(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]]
    failures_left: dict[str, int]
    lock: threading.Lock

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
        with self.lock:
            self.received.append((self.path, body))
            left = self.failures_left.get(self.path, 0)
            if left:
                self.failures_left[self.path] = left - 1
        self.send_response(500 if left else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[_Hooks]]]:
    handler = type(
        "Hooks", (_Hooks,), {"received": [], "failures_left": {"/flaky": 2}, "lock": threading.Lock()}
    )
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_webhooks_on_final_states_and_retried(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint], hook_server: Any
) -> None:
    hook_url, hooks = hook_server
    name = ripple_app.create_endpoint("sdk-hooks", maxRetries=0)
    ep = endpoint_of(name)
    cancelled = ep.run({"input": {"c": 1}, "webhook": f"{hook_url}/cancelled"})
    assert cancelled.cancel()["status"] == "CANCELLED"
    workers(ripple_app, name, "echo")
    ok = ep.run({"input": {"x": 1}, "webhook": f"{hook_url}/ok"})
    failed = ep.run({"input": {"fail": "bad"}, "webhook": f"{hook_url}/failed"})
    flaky = ep.run({"input": {"y": 2}, "webhook": f"{hook_url}/flaky"})

    def by_path() -> dict[str, list[dict[str, Any]]]:
        with hooks.lock:
            out: dict[str, list[dict[str, Any]]] = {}
            for path, body in hooks.received:
                out.setdefault(path, []).append(body)
            return out

    wait_for(
        lambda: all(
            len(by_path().get(p, [])) >= n
            for p, n in {"/ok": 1, "/failed": 1, "/cancelled": 1, "/flaky": 3}.items()
        ),
        60,
        "every webhook (the flaky one three times)",
    )
    got = by_path()
    assert got["/ok"][0]["id"] == ok.job_id and got["/ok"][0]["status"] == "COMPLETED"
    assert got["/ok"][0]["output"] == {"echo": {"x": 1}}
    assert got["/failed"][0]["id"] == failed.job_id and got["/failed"][0]["status"] == "FAILED"
    assert "bad" in got["/failed"][0]["error"]
    assert got["/cancelled"][0] == {**got["/cancelled"][0], "id": cancelled.job_id, "status": "CANCELLED"}
    assert [b["id"] for b in got["/flaky"]] == [flaky.job_id] * len(got["/flaky"])
    time.sleep(2.0)  # delivered once it succeeded: no more posts to the flaky hook
    assert len(by_path()["/flaky"]) == 3
    assert len(by_path()["/ok"]) == 1


def test_execution_timeout_times_out_and_stops_the_worker(
    ripple_app: Instance, workers: Any, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    name = ripple_app.create_endpoint("sdk-timeout")
    worker = workers(ripple_app, name, "echo")
    job = endpoint_of(name).run({"input": {"sleep_s": 60}, "policy": {"executionTimeout": 2000}})
    wait_status(ripple_app, name, job.job_id, "IN_PROGRESS", timeout_s=60)
    final = wait_status(ripple_app, name, job.job_id, FINAL, timeout_s=20)
    assert final["status"] == "TIMED_OUT"
    wait_for(lambda: _stopped_in_log(worker, job.job_id), 15, "the worker to be told to stop")
    time.sleep(1.0)
    assert job_status(ripple_app, name, job.job_id)["status"] == "TIMED_OUT"


def test_lost_worker_job_requeued_within_retry_budget(ripple_app: Instance, workers: Any) -> None:
    with_budget = ripple_app.create_endpoint("sdk-lost", maxRetries=2)
    no_budget = ripple_app.create_endpoint("sdk-lost0", maxRetries=0)
    auth = {"Authorization": f"Bearer {ripple_app.api_key}"}
    ids = {}
    victims = {}
    for name in (with_budget, no_budget):
        victims[name] = workers(ripple_app, name, "echo")
        r = httpx.post(f"{ripple_app.v2}/{name}/run", json={"input": {"sleep_s": 3}}, headers=auth)
        ids[name] = r.json()["id"]
    for name in (with_budget, no_budget):
        obj = wait_status(ripple_app, name, ids[name], "IN_PROGRESS", timeout_s=60)
        assert obj["workerId"] == victims[name].worker_id
    for victim in victims.values():
        victim.kill()  # kill -9: no result, no more pings
    rescuer = workers(ripple_app, with_budget, "echo")

    done = wait_status(ripple_app, with_budget, ids[with_budget], FINAL, timeout_s=60)
    assert done["status"] == "COMPLETED", done
    assert done["workerId"] == rescuer.worker_id
    assert done["output"] == {"echo": {"sleep_s": 3}}
    detail = _job_detail(ripple_app, ids[with_budget])
    assert detail["attempts"] == 2

    failed = wait_status(ripple_app, no_budget, ids[no_budget], FINAL, timeout_s=30)
    assert failed["status"] == "FAILED" and "lost" in failed["error"]


def test_max_queue_size_answers_429(
    ripple_app: Instance, endpoint_of: Callable[[str], runpod.Endpoint]
) -> None:
    name = ripple_app.create_endpoint("sdk-full", maxQueueSize=2)
    ep = endpoint_of(name)
    ep.run({"a": 1})
    ep.run({"a": 2})
    r = httpx.post(
        f"{ripple_app.v2}/{name}/run",
        json={"input": {"a": 3}},
        headers={"Authorization": f"Bearer {ripple_app.api_key}"},
    )
    assert r.status_code == 429, r.text
    assert set(r.json()) == {"error", "detail"}
    with pytest.raises(requests.HTTPError):
        ep.run({"a": 4})
    synced = httpx.post(  # runsync writes its job to the store itself: the same limit, the same answer
        f"{ripple_app.v2}/{name}/runsync",
        json={"input": {"a": 5}},
        headers={"Authorization": f"Bearer {ripple_app.api_key}"},
    )
    assert synced.status_code == 429, synced.text
    assert synced.json()["detail"]["maxQueueSize"] == 2
    assert ep.health()["jobs"]["inQueue"] == 2
    ep.purge_queue()
