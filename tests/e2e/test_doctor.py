"""``ripple doctor`` and ``ripple status`` against a real ``ripple up --detach --num-gpus 1``.

Each unhealthy condition is created for real and doctor must name it with the right action and exit 1:
a handler that cannot be imported, an outside worker that takes a job and goes silent (stale heartbeat),
the job it holds running past its execution timeout, an endpoint asking for more GPUs than any node has,
and the embedded Redis killed under the running instance. The instance has its own data dir, a 4 s
heartbeat timeout and a 60 s queue sweep (so a job past its timeout stays visible for a while); it is
killed at the end (Redis is gone by then, so a graceful stop would only wait).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    Instance,
    free_port,
    kill_instance,
    run_cli,
    start_instance,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

ENV = {
    "RIPPLE_HEARTBEAT_TIMEOUT_S": "4",
    "RIPPLE_SWEEP_INTERVAL_S": "60",
    "RIPPLE_AUTOSCALER__INTERVAL_S": "1",
    "RIPPLE_WEBHOOK_MAX_ATTEMPTS": "2",
}


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    data_dir = tmp_path_factory.mktemp("doctor") / "data"
    data_dir.mkdir(parents=True)
    try:
        yield start_instance(data_dir, extra_env=ENV, num_gpus=1)
    finally:
        kill_instance(data_dir)


def doctor(inst: Instance) -> tuple[int, dict[str, Any]]:
    out = run_cli(["--data-dir", str(inst.data_dir), "doctor", "--json"], env=inst.env, timeout_s=60)
    assert out.stdout.strip(), out.stderr
    return out.returncode, json.loads(out.stdout)


def by_rule(report: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["rule"] == rule]


def take(inst: Instance, ep: str, worker_id: str) -> dict[str, Any]:
    r = httpx.get(
        f"{inst.url}/v2/{ep}/job-take/{worker_id}", headers={"Authorization": inst.worker_key}, timeout=30
    )
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


def test_status_prints_endpoints_and_gpus(inst: Instance) -> None:
    ep = inst.create_endpoint("outside", handler=None)
    with inst.client() as c:
        r = c.get("/api/v1/info", headers={"X-Request-ID": "status-check-1"})
    assert r.headers["x-request-id"] == "status-check-1"
    out = run_cli(["--data-dir", str(inst.data_dir), "status"], env=inst.env, timeout_s=60)
    assert out.returncode == 0, out.stderr
    assert ep in out.stdout and "outside workers" in out.stdout
    assert "/ 1 total" in out.stdout, out.stdout
    assert "ENDPOINT" in out.stdout and "autoscaler: on" in out.stdout


def _log_lines_with(text: str) -> list[dict[str, Any]]:
    """JSON log lines containing ``text`` in the Ray workers' logs written in the last few minutes."""
    out = []
    recent = time.time() - 600
    for path in Path("/tmp/ray").glob("session_*/logs/worker-*.err"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < recent:
                continue
            for line in path.read_text(errors="replace").splitlines():
                if text in line and line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
    return out


def test_request_id_reaches_the_queue_actor_log(inst: Instance) -> None:
    ep = inst.create_endpoint("traced", handler=None)
    rid = f"trace-{uuid.uuid4().hex[:12]}"
    with inst.client() as c:
        job_id = c.post(f"/v2/{ep}/run", json={"input": {}}).json()["id"]
        r = c.post(f"/v2/{ep}/cancel/{job_id}", headers={"X-Request-ID": rid})
    assert r.status_code == 200 and r.headers["x-request-id"] == rid
    lines = wait_for(lambda: _log_lines_with(rid), 30, "a queue log line with the request id")
    assert any(x["job_id"] == job_id and x["endpoint"] == ep and x["logger"] == "ripple.queue" for x in lines)
    for path in (f"/v2/{ep}/retry/{job_id}", f"/v2/{ep}/purge-queue"):
        rid = f"trace-{uuid.uuid4().hex[:12]}"
        with inst.client() as c:
            r = c.post(path, headers={"X-Request-ID": rid})
        assert r.status_code == 200, r.text
        lines = wait_for(lambda r=rid: _log_lines_with(r), 30, f"a queue log line of {path} with its id")
        assert any(x["endpoint"] == ep and x["logger"] == "ripple.queue" for x in lines), lines


def test_doctor_names_each_unhealthy_condition(inst: Instance) -> None:
    broken = inst.create_endpoint("broken", handler="no_such_module:handler", minReplicas=1)
    huge = inst.create_endpoint("huge", handler="examples.handlers:echo", gpus=4)
    silent = inst.create_endpoint("silent", handler=None)
    with inst.client() as c:
        assert c.post(f"/v2/{huge}/run", json={"input": {}}).status_code == 200

    def import_failed() -> bool:
        with inst.client() as c:
            ws = c.get(f"/api/v1/endpoints/{broken}/workers").json()["workers"]
        return any(str(w.get("reason", "")).startswith("failed to start") for w in ws)

    try:
        wait_for(import_failed, 90, "a replica of the broken endpoint to fail to start")
        for attempt in range(3):  # the queue's sweep may time the job out first: take another then
            with inst.client() as c:
                r = c.post(
                    f"/v2/{silent}/run", json={"input": {"n": attempt}, "policy": {"executionTimeout": 2000}}
                )
            assert r.status_code == 200, r.text
            job = take(inst, silent, "w-silent")
            time.sleep(7.5)  # past the 4 s heartbeat timeout, the 2 s execution timeout and doctor's grace
            rc, report = doctor(inst)
            if any(job["id"] in f["issue"] for f in by_rule(report, "jobs.past_timeout")):
                break
        else:
            pytest.fail(f"doctor never named the job past its timeout: {report['findings']}")
        assert rc == 1 and report["healthy"] is False

        (imp,) = [f for f in by_rule(report, "workers.handler_import") if broken in f["issue"]]
        assert imp["severity"] == "HIGH" and "no_such_module:handler" in imp["issue"]
        assert f"ripple endpoint update {broken} --handler" in imp["action"]
        assert "no_such_module" in imp["detail"]

        (fits,) = [f for f in by_rule(report, "jobs.never_fits") if huge in f["issue"]]
        assert fits["severity"] == "HIGH" and "4 GPUs" in fits["issue"] and "--gpus 1" in fits["action"]

        hb = [
            f
            for f in by_rule(report, "workers.stale_heartbeat") + by_rule(report, "workers.heartbeat_lost")
            if "w-silent" in f["issue"]
        ]
        assert hb and hb[0]["severity"] == "HIGH" and f"/v2/{silent}/ping" in hb[0]["action"] + f"{silent}"

        (late,) = [f for f in by_rule(report, "jobs.past_timeout") if job["id"] in f["issue"]]
        assert late["severity"] == "HIGH" and f"/v2/{silent}/cancel/{job['id']}" in late["action"]

        metrics = httpx.get(f"{inst.url}/metrics", timeout=30).text  # the autoscaler's samples, published
        assert "ripple_gpus_total 1.0" in metrics
        assert f'ripple_autoscaler_blocked_total{{endpoint="{huge}",reason="gpus"}}' in metrics
        assert f'ripple_workers{{endpoint="{broken}",state="stopped"}}' in metrics
        assert f'ripple_queue_depth{{endpoint="{huge}"}} 1.0' in metrics

        text = run_cli(["--data-dir", str(inst.data_dir), "doctor"], env=inst.env, timeout_s=60)
        assert text.returncode == 1
        assert "HIGH" in text.stdout and "ModuleNotFoundError" in text.stdout
        assert "rk_" not in text.stdout and inst.api_key not in json.dumps(report)
    finally:
        with inst.client() as c:  # stop the failing replica from being restarted over and over
            c.delete(f"/api/v1/endpoints/{broken}")


def test_a_webhook_that_never_arrives_shows_in_status_and_doctor(inst: Instance) -> None:
    hooks = inst.create_endpoint("hooks", handler=None)
    nobody = f"http://127.0.0.1:{free_port()}/hook"  # allowed (RIPPLE_WEBHOOK_ALLOW), nothing listens
    with inst.client() as c:
        r = c.post(f"/v2/{hooks}/run", json={"input": {"n": 1}, "webhook": nobody})
        assert r.status_code == 200, r.text
    job = take(inst, hooks, "w-hooks")
    done = httpx.post(
        f"{inst.url}/v2/{hooks}/job-done/w-hooks/{job['id']}",
        json={"output": {"ok": True}},
        headers={"Authorization": inst.worker_key},
        timeout=30,
    )
    assert done.status_code == 200, done.text

    def failed() -> dict[str, Any] | None:
        with inst.client() as c:
            row = c.get("/api/v1/stats").json()["endpoints"].get(hooks) or {}
        webhooks: dict[str, Any] | None = row.get("webhooks")
        return webhooks if webhooks and webhooks["failed"] else None

    wait_for(lambda: failed() is not None, 30, "the delivery to fail its 2 attempts")
    summary = failed()
    assert summary is not None and summary["lastProblem"]["jobId"] == job["id"]
    assert summary["lastProblem"]["reason"] == "ConnectError after 2 attempts"
    with inst.client() as c:
        assert c.get(f"/v2/{hooks}/status/{job['id']}").json()["output"] == {"ok": True}, "the result stays"

    status = run_cli(["--data-dir", str(inst.data_dir), "status"], env=inst.env, timeout_s=60)
    assert f"webhooks: {hooks}: 1 of 1 webhook deliveries in the last 60 min did not arrive" in status.stdout
    _, report = doctor(inst)
    (finding,) = [f for f in by_rule(report, "jobs.webhooks_undelivered") if hooks in f["issue"]]
    assert finding["severity"] == "MEDIUM" and job["id"] in finding["issue"]


def test_doctor_when_the_store_is_down(inst: Instance, tmp_path: Path) -> None:
    pid = int((inst.data_dir / "redis.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    saved = tmp_path / "report.json"

    def not_ready() -> bool:
        return httpx.get(f"{inst.url}/health/ready", timeout=15).status_code == 503

    wait_for(not_ready, 30, "/health/ready to fail once Redis is gone")
    out = run_cli(
        ["--data-dir", str(inst.data_dir), "doctor", "--save-report", str(saved)], env=inst.env, timeout_s=60
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "store" in out.stdout and "not ready" in out.stdout
    report = json.loads(saved.read_text())
    (down,) = by_rule(report, "store.unreachable")
    assert down["severity"] == "HIGH"
    assert f"pid {pid}" in down["action"] and "ripple up" in down["action"]
