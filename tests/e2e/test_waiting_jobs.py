"""A queued job's ``waitReason``, each cause created for real on the shared ``ripple up --num-gpus 2``.

An endpoint asking for more GPUs than the instance has (``no_gpu``, and ``ripple endpoint create`` warns), a
handler that cannot be imported (``handler_fails_to_load``), a replica whose import takes a while
(``scaling_up``), a queue behind the one busy replica of a ``maxReplicas 1`` endpoint (``max_replicas``,
shown live by ``ripple submit --wait``), an endpoint without handler before and after an outside worker
takes a job (``no_handler``, ``waiting_for_worker``, ``queue_position``), and the autoscaler switched off
(``autoscaler_disabled``). Every status object keeps RunPod's keys; ``waitReason`` is the one extra.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import REPO, Instance, job_status, ripple_exe, wait_for, wait_status

pytestmark = pytest.mark.timeout(300)

GPUS_4 = ["--handler", "examples.handlers:echo", "--gpus", "4"]
RUNPOD_KEYS = {"id", "status", "delayTime", "executionTime"}


@pytest.fixture
def made(ripple_app: Instance) -> Iterator[list[str]]:
    """Endpoints a test creates; their queues purged and the endpoints deleted after it."""
    names: list[str] = []
    yield names
    with ripple_app.client() as c:
        for name in names:
            c.post(f"/v2/{name}/purge-queue")
            for _ in range(30):
                if c.delete(f"/api/v1/endpoints/{name}").status_code != 409:
                    break
                time.sleep(1.0)  # a job in progress: let it finish


def create(inst: Instance, made: list[str], prefix: str, **fields: Any) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    with inst.client() as c:
        r = c.post("/api/v1/endpoints", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    made.append(name)
    return name


def submit(inst: Instance, endpoint: str, input: Any = None) -> str:
    with inst.client() as c:
        r = c.post(f"/v2/{endpoint}/run", json={"input": input if input is not None else {}})
    assert r.status_code == 200, r.text
    job_id: str = r.json()["id"]
    return job_id


def wait_reason(
    inst: Instance, endpoint: str, job_id: str, code: str, timeout_s: float = 90
) -> dict[str, Any]:
    """Poll the job's status until its ``waitReason`` has ``code``; returns the status object."""

    def check() -> dict[str, Any] | None:
        s = job_status(inst, endpoint, job_id)
        return s if (s.get("waitReason") or {}).get("code") == code else None

    status: dict[str, Any] = wait_for(check, timeout_s, f"waitReason {code} of job {job_id}")
    assert set(status) == RUNPOD_KEYS | {"waitReason"} and status["status"] == "IN_QUEUE", status
    assert set(status["waitReason"]) == {"code", "message"}
    return status


def test_no_gpu_with_a_warning_at_create(ripple_app: Instance, made: list[str]) -> None:
    name = f"huge-{uuid.uuid4().hex[:6]}"
    made.append(name)
    out = subprocess.run(
        [ripple_exe(), "--data-dir", str(ripple_app.data_dir), "endpoint", "create", name, *GPUS_4],
        env=ripple_app.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stderr  # a warning, not a failure
    assert (
        f"warning: endpoint '{name}' needs 4 GPUs per replica, but the largest node has 2 GPUs and the "
        "cluster cannot grow (no maxGpus)" in out.stderr
    ), out.stderr
    job = submit(ripple_app, name)
    status = wait_reason(ripple_app, name, job, "no_gpu")
    message = status["waitReason"]["message"]
    assert message.startswith("needs 4 x GPU per replica; ") and "cluster limit 2" in message, message
    assert message.endswith("it can never fit"), message
    with ripple_app.client() as c:
        detail = c.get(f"/api/v1/jobs/{job}").json()
    assert detail["waitReason"]["code"] == "no_gpu"


def test_handler_that_fails_to_load(ripple_app: Instance, made: list[str]) -> None:
    name = create(ripple_app, made, "broken", handler="no_such_module_wr:handler", gpus=0)
    job = submit(ripple_app, name)
    status = wait_reason(ripple_app, name, job, "handler_fails_to_load", timeout_s=120)
    message = status["waitReason"]["message"]
    assert message.startswith("replicas fail to load the handler"), message
    assert "no_such_module_wr" in message, message


def test_scaling_up_while_a_slow_replica_loads(ripple_app: Instance, made: list[str]) -> None:
    name = create(
        ripple_app,
        made,
        "slow",
        handler="bench.slow_init_handler:handle",
        gpus=0,
        runtimeEnv={"env_vars": {"RIPPLE_BENCH_INIT_S": "10"}},  # the window to see it starting
    )
    job = submit(ripple_app, name, {"x": 1})
    status = wait_reason(ripple_app, name, job, "scaling_up")
    assert status["waitReason"]["message"].startswith("1 replica starting"), status
    done = wait_status(ripple_app, name, job, {"COMPLETED"}, timeout_s=120)
    assert done["output"] == {"x": 1} and "waitReason" not in done


def test_max_replicas_shown_live_by_submit_wait(ripple_app: Instance, made: list[str]) -> None:
    name = create(ripple_app, made, "busy", handler="examples.handlers:echo", gpus=0, maxReplicas=1)
    first = submit(ripple_app, name, {"sleep_s": 12})
    wait_status(ripple_app, name, first, {"IN_PROGRESS"}, timeout_s=120)
    second = submit(ripple_app, name, {"n": 2})
    status = wait_reason(ripple_app, name, second, "max_replicas", timeout_s=30)
    assert status["waitReason"]["message"] == "all 1 replica busy (maxReplicas 1)", status
    out = subprocess.run(
        [
            ripple_exe(),
            "--data-dir",
            str(ripple_app.data_dir),
            "submit",
            name,
            "--input",
            '{"n": 3}',
            "--wait",
        ],
        env=ripple_app.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert '"status": "COMPLETED"' in out.stdout and "waiting" not in out.stdout
    lines = [ln for ln in out.stderr.splitlines() if " waiting (" in ln]  # not a TTY: a line per change
    assert any(
        "waiting (max_replicas): all 1 replica busy (maxReplicas 1); 1 job ahead" in ln for ln in lines
    ), out.stderr


def test_no_handler_then_queue_position_behind_an_outside_worker(
    ripple_app: Instance, made: list[str]
) -> None:
    name = create(ripple_app, made, "outside", handler=None)
    jobs = [submit(ripple_app, name, {"i": i}) for i in range(3)]
    status = wait_reason(ripple_app, name, jobs[0], "no_handler", timeout_s=10)
    assert status["waitReason"]["message"] == (
        "the endpoint has no handler and no outside worker is polling it"
    )
    r = httpx.get(
        f"{ripple_app.url}/v2/{name}/job-take/w-wr?gpu=CPU",
        headers={"Authorization": ripple_app.worker_key},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["id"] == jobs[0], r.text
    assert wait_reason(ripple_app, name, jobs[1], "waiting_for_worker", 10)["waitReason"]["message"] == (
        "next in line; all 1 outside worker busy"
    )
    assert wait_reason(ripple_app, name, jobs[2], "queue_position", 10)["waitReason"]["message"] == (
        "1 job ahead in the queue"
    )
    r = httpx.post(
        f"{ripple_app.url}/v2/{name}/job-done/w-wr/{jobs[0]}?gpu=CPU",
        headers={"Authorization": ripple_app.worker_key},
        json={"output": "done"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_autoscaler_disabled(ripple_app: Instance, made: list[str]) -> None:
    with ripple_app.client() as c:
        assert c.post("/api/v1/autoscaler/disable").status_code == 200
    try:
        name = create(ripple_app, made, "off", handler="examples.handlers:echo", gpus=0)
        job = submit(ripple_app, name)
        status = wait_reason(ripple_app, name, job, "autoscaler_disabled", timeout_s=30)
        assert (
            status["waitReason"]["message"]
            == "the autoscaler is disabled and no replica; none will be started"
        )
    finally:
        with ripple_app.client() as c:
            assert c.post("/api/v1/autoscaler/enable").status_code == 200
    wait_status(ripple_app, name, job, {"COMPLETED"}, timeout_s=120)
