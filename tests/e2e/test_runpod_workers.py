"""RunPod worker files, written in RunPod's own styles, run unchanged inside Ripple replicas.

Each endpoint's ``handler`` names only the module of a file in ``tests/e2e/runpod_workers/`` (no
``:function``); jobs are submitted with the unmodified ``runpod`` client SDK against a real ``ripple up``.
The files call ``runpod.serverless.start`` at import or under ``__main__``: Ripple captures the config and
runs the worker SDK's options in-cluster (generators, aggregate streams, ``concurrency_modifier``,
``refresh_worker``, ``progress_update``, ``{"error": ...}`` returns, raises, a process dying mid-job).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import runpod
from conftest import Instance, job_status, wait_for, wait_status

pytestmark = pytest.mark.timeout(180)

FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}
PKG = "tests.e2e.runpod_workers"


@pytest.fixture
def endpoint(ripple_app: Instance) -> Iterator[Callable[..., tuple[str, runpod.Endpoint]]]:
    """``endpoint(module, **fields)``: an endpoint running ``tests/e2e/runpod_workers/<module>.py`` on one
    CPU-only replica, and a ``runpod.Endpoint`` for it; every endpoint made is deleted after the test."""
    runpod.api_key = ripple_app.api_key
    runpod.endpoint_url_base = ripple_app.v2
    made: list[str] = []

    def make(module: str, **fields: Any) -> tuple[str, runpod.Endpoint]:
        spec = {"gpus": 0, "minReplicas": 1, "maxReplicas": 1, **fields}
        name = ripple_app.create_endpoint(module.replace("_", "-")[:20], handler=f"{PKG}.{module}", **spec)
        made.append(name)
        return name, runpod.Endpoint(name)

    yield make
    with ripple_app.client() as c:
        for name in made:
            c.delete(f"/api/v1/endpoints/{name}")


def _workers(inst: Instance, name: str) -> list[dict[str, Any]]:
    with inst.client() as c:
        r = c.get(f"/api/v1/endpoints/{name}/workers")
    assert r.status_code == 200, r.text
    workers: list[dict[str, Any]] = r.json()["workers"]
    return workers


def _detail(inst: Instance, job_id: str) -> dict[str, Any]:
    with inst.client() as c:
        r = c.get(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _final(inst: Instance, name: str, job: Any, timeout_s: float = 90) -> dict[str, Any]:
    return wait_status(inst, name, job.job_id, FINAL, timeout_s=timeout_s)


def test_module_level_start_raise_error_return_and_progress(ripple_app: Instance, endpoint: Any) -> None:
    name, ep = endpoint("module_start", maxRetries=0)

    job = ep.run({"prompt": "hi"})
    out = job.output(timeout=120)  # job["id"] and job["input"] as the SDK passes them
    assert out["id"] == job.job_id and out["input"] == {"prompt": "hi"} and isinstance(out["pid"], int)
    worker_id = _final(ripple_app, name, job)["workerId"]

    # A raise: FAILED with the message and the traceback; the replica stays healthy and keeps serving.
    raised = ep.run({"raise": "prompt too long: 9000 tokens"})
    failed = _final(ripple_app, name, raised)
    assert failed["status"] == "FAILED" and raised.status() == "FAILED"
    err = json.loads(failed["error"])
    assert err["error_message"] == "prompt too long: 9000 tokens"
    assert "Traceback" in err["error_traceback"] and "raise ValueError" in err["error_traceback"]

    # A returned {"error": ...}: FAILED with that error, the rest of the dict as output.
    returned = ep.run({"error": "bad prompt"})
    obj = _final(ripple_app, name, returned)
    assert obj["status"] == "FAILED" and obj["error"] == "bad prompt"
    assert obj.get("output") == {"partial": True}

    # sys.exit() in the handler, and an output that is not JSON: that job FAILED, saying why; the replica
    # serves on (neither its process nor its loop ends).
    exited = _final(ripple_app, name, ep.run({"exit": 3}))
    assert exited["status"] == "FAILED" and exited["workerId"] == worker_id
    assert json.loads(exited["error"])["error_message"].startswith("the handler called sys.exit(3)")
    not_json = _final(ripple_app, name, ep.run({"bytes": "png"}))
    assert not_json["status"] == "FAILED" and not_json["workerId"] == worker_id
    assert not_json["error"] == (
        "the handler's output is not JSON: Object of type bytes is not JSON serializable"
    )

    time.sleep(2.5)  # past a heartbeat: a quarantine would show by now
    (w,) = [w for w in _workers(ripple_app, name) if w["workerId"] == worker_id]
    assert w["health"] == "healthy", w
    after = ep.run({"again": True})
    assert after.output(timeout=60)["input"] == {"again": True}
    assert _final(ripple_app, name, after)["workerId"] == worker_id

    # progress_update() inside the replica shows in /status while the job runs; it never completes it.
    progress = ep.run({"progress": 4, "sleep_s": 0.8})
    seen: list[Any] = []

    def saw_progress() -> bool:
        obj = job_status(ripple_app, name, progress.job_id)
        assert obj["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"), obj
        if obj["status"] == "IN_PROGRESS" and isinstance(obj.get("output"), dict):
            seen.append(obj["output"])
        return len({json.dumps(s) for s in seen}) >= 2

    wait_for(saw_progress, 60, "two progress updates in /status", 0.1)
    assert all(set(s) == {"step"} for s in seen)
    done = _final(ripple_app, name, progress)
    assert done["status"] == "COMPLETED" and done["output"]["id"] == progress.job_id


def test_main_guarded_file_uses_its_handler_function(ripple_app: Instance, endpoint: Any) -> None:
    _, ep = endpoint("main_guarded")
    job = ep.run({"q": 1})
    out = job.output(timeout=120)
    assert out["guarded"] == {"q": 1}
    assert {"id", "input"} <= set(out["attempt_keys"])  # the job dict as the SDK passes it
    assert ep.run_sync({"q": 2}, timeout=60)["guarded"] == {"q": 2}


def test_generator_with_aggregate_stream_and_an_error_chunk(ripple_app: Instance, endpoint: Any) -> None:
    name, ep = endpoint("stream_aggregate", maxRetries=0)
    job = ep.run({"n": 4, "sleep_s": 0.3})
    chunks = list(job.stream())
    expected = [{"token": f"t{i}"} for i in range(4)]
    assert chunks == expected
    final = _final(ripple_app, name, job)
    assert final["status"] == "COMPLETED" and final["output"] == expected

    bad = ep.run({"n": 4, "sleep_s": 0.1, "fail_at": 2})
    obj = _final(ripple_app, name, bad)
    assert obj["status"] == "FAILED" and obj["error"] == "chunk 2 failed"


def test_async_generator_with_concurrency_modifier(ripple_app: Instance, endpoint: Any) -> None:
    """The vLLM worker's shape: endpoint concurrency 1, but the modifier ramps to 3 jobs at once."""
    name, ep = endpoint("async_concurrent", concurrency=1, maxRetries=0)
    assert ep.run_sync({"n": 1, "sleep_s": 0}, timeout=120)  # loaded and healthy (past its probation job)
    jobs = [ep.run({"prompt": f"p{k}", "n": 3, "sleep_s": 0.5}) for k in range(7)]
    finals = [_final(ripple_app, name, j, 120) for j in jobs]
    assert {f["status"] for f in finals} == {"COMPLETED"}
    assert len({f["workerId"] for f in finals}) == 1
    for k, f in enumerate(finals):
        assert [c["token"] for c in f["output"]] == [f"p{k}-{i}" for i in range(3)]  # the aggregate
    spans = [(f["output"][0]["start"], f["output"][-1]["at"]) for f in finals]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    print(f"jobs at once on one replica: {peak}")
    assert peak == 3  # MAX_CONCURRENCY of the file: more than the endpoint's 1, never above the modifier

    streamed = ep.run({"prompt": "s", "n": 3, "sleep_s": 0.2})
    assert [c["token"] for c in streamed.stream()] == ["s-0", "s-1", "s-2"]


def test_refresh_worker_ends_the_job_and_replaces_the_replica(ripple_app: Instance, endpoint: Any) -> None:
    name, ep = endpoint("refresh")
    first = ep.run({"n": 1})
    first_out = first.output(timeout=120)
    w1 = _final(ripple_app, name, first)["workerId"]

    refreshed = ep.run({"n": 2, "refresh": True})
    out = refreshed.output(timeout=60)
    assert out == {"pid": first_out["pid"], "n": 2}  # ended normally, without the refresh_worker key
    assert _final(ripple_app, name, refreshed)["workerId"] == w1

    after = ep.run({"n": 3})
    after_out = after.output(timeout=120)
    w2 = _final(ripple_app, name, after)["workerId"]
    assert w2 != w1 and after_out["pid"] != first_out["pid"], "the next job ran on a fresh replica"
    gone = {w["workerId"]: w for w in _workers(ripple_app, name)}.get(w1)
    if gone is not None:  # listed as stopped until forgotten
        assert gone["state"] in ("stopped", "draining"), gone


def test_process_dying_mid_job_hands_the_job_back(
    ripple_app: Instance, endpoint: Any, tmp_path: Path
) -> None:
    name, ep = endpoint("module_start", maxRetries=2)
    marker = tmp_path / "exited-once"
    job = ep.run({"exit_once": str(marker)})
    done = _final(ripple_app, name, job, 150)
    assert marker.exists(), "the first attempt ran and exited"
    assert done["status"] == "COMPLETED", done
    assert done["output"]["pid"] != int(marker.read_text()), "it completed in another process"
    detail = _detail(ripple_app, job.job_id)
    assert detail["attempts"] == 2, detail
    history = json.dumps(detail["history"])
    assert "lease lost" in history and "died" in history, detail["history"]
