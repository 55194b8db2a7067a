"""Crash recovery, for real.

(a) The JobQueue actor is killed by Ray (``ray.kill(no_restart=False)``) while jobs are queued, leased and
    finished: Ray restarts it and it rebuilds every job's state from Redis.
(b) Every process of an instance is SIGKILLed (Ray head session, embedded redis-server, the SDK worker that
    holds jobs), then ``ripple up`` runs again on the same data dir: queued jobs stay queued, leased ones
    come back after the heartbeat timeout and complete within their retry budget, finished ones keep
    their results.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    Instance,
    SdkWorker,
    job_status,
    kill_instance,
    run_cli,
    start_instance,
    stop_instance,
    wait_for,
    wait_status,
)

from orchestrator.core.standby import PRELOADED_MODULES

pytestmark = pytest.mark.timeout(240)

FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}


def _submit(inst: Instance, ep: str, inputs: list[Any]) -> list[str]:
    with inst.client() as c:
        r = c.post(f"/v2/{ep}/run-batch", json={"jobs": [{"input": x} for x in inputs]})
    assert r.status_code == 200, r.text
    ids: list[str] = r.json()["ids"]
    return ids


def _take(inst: Instance, ep: str, worker_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Long-poll job-take (2 s holds) until a job arrives or ``timeout_s`` passes."""

    def once() -> dict[str, Any] | None:
        r = httpx.get(
            f"{inst.v2}/{ep}/job-take/{worker_id}?gpu=CPU&job_in_progress=0",
            headers={"Authorization": inst.worker_key},
            timeout=30,
        )
        assert r.status_code in (200, 204), r.text
        return r.json() if r.status_code == 200 else None

    job: dict[str, Any] = wait_for(once, timeout_s, f"a job for {worker_id}", interval_s=0)
    return job


def _done(inst: Instance, ep: str, worker_id: str, job_id: str, output: Any) -> dict[str, Any]:
    r = httpx.post(
        f"{inst.v2}/{ep}/job-done/{worker_id}/{job_id}?gpu=CPU&isStream=false",
        json={"output": output},
        headers={"Authorization": inst.worker_key},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    reply: dict[str, Any] = r.json()
    return reply


@contextlib.contextmanager
def _pinging(inst: Instance, ep: str, worker_id: str, job_ids: list[str]) -> Iterator[None]:
    """Heartbeats for ``worker_id`` holding ``job_ids`` every second, as the SDK's pinger sends them."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(
                    f"{inst.v2}/{ep}/ping/{worker_id}",
                    params={"gpu": "CPU", "job_id": ",".join(job_ids)},
                    headers={"Authorization": inst.worker_key},
                    timeout=10,
                )
            stop.wait(1.0)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=15)


def _statuses(inst: Instance, ep: str, ids: list[str]) -> list[dict[str, Any]]:
    return [job_status(inst, ep, j) for j in ids]


def _ready(inst: Instance) -> dict[str, Any] | None:
    with contextlib.suppress(httpx.HTTPError):
        r = httpx.get(f"{inst.url}/health/ready", timeout=5)
        if r.status_code == 200:
            body: dict[str, Any] = r.json()
            return body
    return None


@pytest.fixture
def ray_driver(ripple_app: Instance, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """This process as a Ray driver of the shared instance (namespace ``ripple``)."""
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(
        address=ripple_app.state["ray_address"],
        namespace="ripple",
        logging_level=logging.WARNING,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def test_worker_processes_of_the_head_import_the_actor_modules_before_any_work(
    ripple_app: Instance, ray_driver: Any
) -> None:
    """``ripple up``'s head preloads Ripple's actor modules in every worker process it starts
    (``orchestrator.core.standby.PRELOADED_MODULES``), a standby's included: a task defined here by value,
    importing nothing of Ripple, finds them already imported in its process."""
    import sys

    ray = ray_driver
    seen = ray.remote(num_cpus=0)(lambda names: [n for n in names if n in sys.modules])
    assert ray.get(seen.remote(list(PRELOADED_MODULES)), timeout=60) == list(PRELOADED_MODULES)


def test_queue_actor_killed_by_ray_recovers_every_job(ripple_app: Instance, ray_driver: Any) -> None:
    ray = ray_driver
    ep = ripple_app.create_endpoint("rec-actor", maxRetries=2)
    done_ids = _submit(ripple_app, ep, [{"done": i} for i in range(2)])
    for _ in done_ids:
        job = _take(ripple_app, ep, "finisher")
        assert _done(ripple_app, ep, "finisher", job["id"], {"ok": job["input"]})["accepted"] is True
    held_ids = _submit(ripple_app, ep, [{"held": i} for i in range(2)])
    holder_job = _take(ripple_app, ep, "holder")  # keeps pinging and reports after the restart
    silent_job = _take(ripple_app, ep, "silent")  # never heard of again: its lease must be reclaimed
    assert {holder_job["id"], silent_job["id"]} == set(held_ids)
    queued_ids = _submit(ripple_app, ep, [{"queued": i} for i in range(3)])

    queue = ray.get_actor("ripple-queue", namespace="ripple")
    with _pinging(ripple_app, ep, "holder", [holder_job["id"]]):
        with _pinging(ripple_app, ep, "silent", [silent_job["id"]]):
            ray.kill(queue, no_restart=False)
            # While the actor restarts, the API answers 503 or succeeds, never a 500.
            with ripple_app.client(timeout_s=30) as c:
                for _ in range(5):
                    r = c.get(f"/v2/{ep}/status/{queued_ids[0]}")
                    assert r.status_code in (200, 503), r.text
            recovered = wait_for(lambda: _ready(ripple_app), 90, "the restarted queue to be ready")
            assert recovered["recovery"]["leases"] >= 2

            everything = done_ids + held_ids + queued_ids
            after = {
                j: s["status"] for j, s in zip(everything, _statuses(ripple_app, ep, everything), strict=True)
            }
            assert [after[j] for j in done_ids] == ["COMPLETED"] * 2
            assert [after[j] for j in held_ids] == ["IN_PROGRESS"] * 2
            assert [after[j] for j in queued_ids] == ["IN_QUEUE"] * 3
            assert job_status(ripple_app, ep, done_ids[1])["output"] == {"ok": {"done": 1}}
            with ripple_app.client() as c:
                assert c.get(f"/v2/{ep}/health").json()["jobs"]["inQueue"] == 3
        # The holder's lease survived the restart: its result is accepted.
        assert _done(ripple_app, ep, "holder", holder_job["id"], "late but valid")["accepted"] is True
        assert job_status(ripple_app, ep, holder_job["id"])["output"] == "late but valid"

    # The silent worker's lease is reclaimed after the heartbeat timeout (6 s) and re-run elsewhere.
    order = []
    for _ in range(4):
        job = _take(ripple_app, ep, "rescuer")
        order.append(job["id"])
        assert _done(ripple_app, ep, "rescuer", job["id"], "rescued")["accepted"] is True
    assert sorted(order) == sorted([*queued_ids, silent_job["id"]])
    final = _statuses(ripple_app, ep, held_ids + queued_ids)
    assert [s["status"] for s in final] == ["COMPLETED"] * 5
    assert _done(ripple_app, ep, "silent", silent_job["id"], "too late")["accepted"] is False
    with ripple_app.client() as c:
        detail = c.get(f"/api/v1/jobs/{silent_job['id']}").json()
    assert detail["attempts"] == 2 and detail["output"] == "rescued"


def _killed_everything(inst: Instance, sdk: list[SdkWorker]) -> list[int]:
    for w in sdk:
        w.kill()
    return kill_instance(inst.data_dir, inst.state)


def test_kill_minus_nine_everything_then_up_again(tmp_path: Path, workers: Any) -> None:
    data_dir = tmp_path / "crash"
    inst = start_instance(data_dir)
    try:
        ep = inst.create_endpoint("rec-crash", maxRetries=2)
        w1 = workers(inst, ep, "echo", "crash-w1")
        w2 = workers(inst, ep, "echo", "crash-w2")
        completed = _submit(inst, ep, [{"k": i} for i in range(3)])
        for j in completed:
            wait_status(inst, ep, j, "COMPLETED", timeout_s=60)
        # Deployed code, which lives in the Ray head's GCS: the new head gets it back from the data dir.
        # Deployed before the leases below: their 4 s jobs must still run when everything is killed.
        code, module = tmp_path / "code", f"rec_code_{uuid.uuid4().hex[:8]}"
        code.mkdir()
        (code / f"{module}.py").write_text("def handler(job):\n    return {'kept': job['input']}\n")
        deploy = ["deploy", str(code), "--endpoint", "rec-code", "--handler", f"{module}:handler"]
        proc = run_cli(["--data-dir", str(data_dir), *deploy, "--set", "gpus=0", "--no-wait"], env=inst.env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        leased = _submit(inst, ep, [{"sleep_s": 4, "m": i} for i in range(2)])
        held_by = {wait_status(inst, ep, j, "IN_PROGRESS", timeout_s=60)["workerId"] for j in leased}
        assert held_by == {w1.worker_id, w2.worker_id}
        queued = _submit(inst, ep, [{"q": i} for i in range(4)])
        assert Counter(s["status"] for s in _statuses(inst, ep, queued)) == {"IN_QUEUE": 4}
        killed = _killed_everything(inst, [w1, w2])
        assert inst.state["ray_head_pid"] in killed
        assert _ready(inst) is None

        inst = start_instance(data_dir)
        # What the queue found in the store when it came back: nothing lost, nothing moved.
        recovery = _ready(inst)
        assert recovery is not None
        assert (recovery["recovery"]["queued"], recovery["recovery"]["leases"]) == (4, 2)
        assert [s["status"] for s in _statuses(inst, ep, queued)] == ["IN_QUEUE"] * 4
        # The leases may already be back in the queue: the heartbeat timeout (6 s) can pass during start-up.
        assert {s["status"] for s in _statuses(inst, ep, leased)} <= {"IN_PROGRESS", "IN_QUEUE"}
        outputs = [s["output"] for s in _statuses(inst, ep, completed)]
        assert outputs == [{"echo": {"k": i}} for i in range(3)]
        with inst.client() as c:
            health = c.get(f"/v2/{ep}/health").json()["jobs"]
        assert (health["inQueue"] + health["inProgress"], health["completed"]) == (6, 3)

        rescuers = [workers(inst, ep, "echo", f"crash-r{i}") for i in range(2)]
        for j in queued + leased:
            wait_status(inst, ep, j, FINAL, timeout_s=90)
        final = _statuses(inst, ep, queued + leased)
        assert [s["status"] for s in final] == ["COMPLETED"] * 6
        assert {s["workerId"] for s in final} <= {r.worker_id for r in rescuers}
        assert [s["output"] for s in final[4:]] == [{"echo": {"sleep_s": 4, "m": i}} for i in range(2)]
        with inst.client() as c:
            for j in leased:
                assert c.get(f"/api/v1/jobs/{j}").json()["attempts"] == 2
            health = c.get(f"/v2/{ep}/health").json()["jobs"]
        assert (health["inQueue"], health["inProgress"], health["completed"]) == (0, 0, 9)
        with inst.client(timeout_s=150) as c:
            r = c.post("/v2/rec-code/runsync", params={"wait": 120_000}, json={"input": 7})
        assert r.status_code == 200 and r.json().get("output") == {"kept": 7}, r.text
    finally:
        stop_instance(inst)
