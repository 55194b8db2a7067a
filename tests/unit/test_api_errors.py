"""Error mapping of the HTTP app (``orchestrator.api.errors``): every failure is ``{"error", "detail"}``
with the right status, bad input names the field, and an unreachable actor is a 503, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import redis
from api_fakes import Harness, boot, harness

import serve_app
from orchestrator.api.errors import unwrap
from orchestrator.core.errors import QueueFull, field_reasons, invalid
from orchestrator.core.models import EndpointSpec
from orchestrator.store.failures import (
    STORE_DOWN_WHY,
    STORE_FULL,
    STORE_FULL_WHY,
    store_failure,
    store_trouble,
)

pytestmark = pytest.mark.timeout(30)

OOM = "OOM command not allowed when used memory > 'maxmemory'."  # as Redis refuses a write when full


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return harness(boot(str(tmp_path)))


def _error(r: Any, status: int) -> dict[str, Any]:
    """The error body of ``r``, checked: exactly ``{"error", "detail"}``, no traceback."""
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in r.text
    return body


def test_unknown_endpoint_and_job_are_404(h: Harness) -> None:
    body = _error(h.api.post("/v2/nope/run", json={"input": 1}), 404)
    assert "nope" in str(body["error"]) and body["detail"] == {"endpoint": "nope"}
    h.queue.endpoints["ep"] = _spec("ep")
    assert _error(h.api.get("/v2/ep/status/missing"), 404)["detail"] == {"id": "missing"}
    _error(h.api.get("/no/such/route"), 404)


def test_conflict_is_409_with_the_state(h: Harness) -> None:
    h.api.post("/api/v1/endpoints", json={"name": "ep", "handler": None})
    body = _error(h.api.post("/api/v1/endpoints", json={"name": "ep"}), 409)
    assert body["detail"] == {"name": "ep"}
    job = h.api.post("/v2/ep/run", json={"input": 1}).json()["id"]
    assert _error(h.api.post(f"/v2/ep/retry/{job}"), 409)["detail"] == {"id": job, "status": "IN_QUEUE"}


def test_bad_input_is_422_naming_the_field(h: Harness) -> None:
    h.queue.endpoints["ep"] = _spec("ep")
    body = _error(h.api.post("/v2/ep/run", json={"webhook": "ftp://x"}), 422)
    assert "input" in str(body["error"]) and "webhook" in str(body["error"])
    assert isinstance(body["detail"], list) and {"loc", "msg", "type"} <= set(body["detail"][0])
    assert "wait" in str(_error(h.api.post("/v2/ep/runsync?wait=-5", json={"input": 1}), 422)["error"])
    assert "endpoint" in str(_error(h.api.post(f"/v2/{'e' * 64}/run", json={"input": 1}), 422)["error"])
    assert "limit" in str(_error(h.api.get("/api/v1/jobs", params={"limit": 0}), 422)["error"])
    body = _error(h.api.post("/v2/ep/run", content=b'{"input": 1'), 422)
    assert body["error"] == "invalid request: body: not valid JSON (Expecting ',' delimiter at character 11)"
    body = _error(h.api.post("/v2/ep/run", json={"input": {}, "policy": {"executionTimeout": -5}}), 422)
    assert body["error"] == (
        "invalid request: policy.executionTimeout: Input should be greater than or equal to 1000"
    )
    assert h.queue.calls == []  # nothing invalid reached the queue


def test_lone_surrogates_are_refused_with_their_location(h: Harness) -> None:
    h.queue.endpoints["ep"] = _spec("ep")
    body = _error(h.api.post("/v2/ep/run", content=b'{"input": {"k": "\\ud800"}}'), 422)
    assert body["detail"] == {"loc": ["body", "input", "k"]}

    def chunked() -> Iterator[bytes]:
        yield b'{"input": {"k": "\\ud800"}}'

    body = _error(h.api.post("/v2/ep/run", content=chunked()), 422)  # no Content-Length: read all the same
    assert body["detail"] == {"loc": ["body", "input", "k"]}
    assert h.queue.jobs == {}


def test_bodies_over_the_limit_are_413(tmp_path: Path) -> None:
    h = harness(boot(str(tmp_path), max_body_bytes=100))
    h.queue.endpoints["ep"] = _spec("ep")
    body = _error(h.api.post("/v2/ep/run", json={"input": "x" * 200}), 413)
    assert "100 bytes" in str(body["error"])

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 50

    _error(h.api.post("/v2/ep/run", content=chunks()), 413)  # no Content-Length: counted
    assert h.queue.jobs == {}


def test_a_worker_result_over_the_limit_fails_its_job_with_the_reason(tmp_path: Path) -> None:
    h = harness(boot(str(tmp_path), max_body_bytes=100))
    h.queue.endpoints["ep"] = _spec("ep")
    ids = h.api.post("/v2/ep/run-batch", json={"jobs": [{"input": n} for n in range(4)]}).json()["ids"]
    assert len(h.worker.get("/v2/ep/job-take-batch/w1?batch_size=4").json()) == 4

    body = _error(h.worker.post(f"/v2/ep/job-done/w1/{ids[0]}", json={"output": "x" * 200}), 413)
    assert "RIPPLE_MAX_BODY_BYTES" in body["error"] and "the job failed" in body["error"]
    assert body["detail"] == {"loc": ["body"], "id": ids[0], "status": "FAILED"}
    failed = h.queue.jobs[ids[0]]
    assert failed.status == "FAILED"
    assert "result was 213 bytes, over the limit of 100 bytes" in str(failed.error)
    again = _error(h.worker.post(f"/v2/ep/job-done/w1/{ids[0]}", json={"output": "x" * 200}), 413)
    assert "the job is unchanged (not_held)" in again["error"]  # the SDK's retries change nothing

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted to its end
        for _ in range(10):
            yield b" " * 50

    body = _error(h.worker.post(f"/v2/ep/job-stream/w1/{ids[1]}", content=chunks()), 413)
    assert "stream chunk was 500 bytes" in body["error"] and h.queue.jobs[ids[1]].status == "FAILED"

    # Another worker's oversized result does not touch a job it does not hold.
    body = _error(h.worker.post(f"/v2/ep/job-done/w2/{ids[2]}", json={"output": "x" * 200}), 413)
    assert "unchanged" in body["error"] and h.queue.jobs[ids[2]].status == "IN_PROGRESS"

    def small() -> Iterator[bytes]:
        yield b'{"output":'
        yield b" 7}"

    done = h.worker.post(f"/v2/ep/job-done/w1/{ids[2]}", content=small())  # within: as sent
    assert done.json() == {"id": ids[2], "accepted": True, "status": "COMPLETED"}
    assert h.queue.jobs[ids[2]].output == 7
    # A batch of results cannot be told apart unread: a plain 413, its jobs untouched.
    batch = [{"id": ids[3], "output": "x" * 200}]
    _error(h.worker.post("/v2/ep/job-done-batch/w1", json=batch), 413)
    assert h.queue.jobs[ids[3]].status == "IN_PROGRESS"


def test_missing_or_wrong_keys_are_401_with_a_challenge(h: Harness) -> None:
    h.queue.endpoints["ep"] = _spec("ep")
    r = h.anonymous.post("/v2/ep/run", json={"input": 1})
    _error(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    _error(h.anonymous.get("/api/v1/endpoints", headers={"Authorization": "Bearer wrong"}), 401)
    # The worker key is not a client or management key: a known key, so 403 naming its scope. (The
    # instance's API key is an admin key, which may use the worker protocol too: tests/unit/test_scopes.py.)
    assert "scope worker" in _error(h.worker.get("/api/v1/endpoints"), 403)["error"]
    assert "scope worker" in _error(h.worker.post("/v2/ep/run", json={"input": 1}), 403)["error"]
    assert h.anonymous.get("/health/live").status_code == 200  # probes need no key
    assert h.queue.calls == []


@pytest.mark.parametrize(
    "exc", [ray.exceptions.GetTimeoutError("slow"), asyncio.TimeoutError(), ray.exceptions.RayActorError()]
)
def test_an_unreachable_actor_is_503_and_forgotten(h: Harness, exc: BaseException) -> None:
    h.queue.endpoints["ep"] = _spec("ep")
    h.state._queue = object()  # a cached handle
    h.queue.fail = exc
    body = _error(h.api.post("/v2/ep/run", json={"input": 1}), 503)
    assert "not ready" in str(body["error"])
    assert h.state._queue is None  # looked up again on the next request


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (redis.exceptions.ResponseError(OOM), "the job store (Redis) is out of memory"),
        (redis.exceptions.ConnectionError("Connection refused"), "the job store (Redis) does not answer"),
        (redis.exceptions.BusyLoadingError("loading"), "the job store (Redis) does not answer"),
        (redis.exceptions.TimeoutError("Timeout reading"), "the job store (Redis) does not answer"),
    ],
)
def test_a_job_store_that_is_full_or_down_is_a_503_that_says_so(
    h: Harness, exc: BaseException, says: str
) -> None:
    h.queue.endpoints["ep"] = _spec("ep")
    h.queue.fail = exc
    body = _error(h.api.post("/v2/ep/run", json={"input": 1}), 503)
    assert str(body["error"]).startswith(says), body
    if "memory" in says:
        assert "RIPPLE_KEEP_RESULTS_S" in body["error"] and "ripple doctor" in body["error"]


def test_an_error_of_the_store_raised_in_the_queue_actor_is_mapped_the_same() -> None:
    wrapped = ray.exceptions.RayTaskError("submit", "traceback", redis.exceptions.ResponseError(OOM))
    assert store_failure(unwrap(wrapped)) == STORE_FULL
    assert store_failure(wrapped) == STORE_FULL, "judged by its cause"
    assert store_failure(redis.exceptions.ResponseError("WRONGTYPE Operation against a key")) is None


@pytest.mark.parametrize(
    ("exc", "why"),
    [
        (redis.exceptions.ResponseError(OOM), STORE_FULL_WHY),
        (redis.exceptions.ConnectionError("Error 111 connecting"), STORE_DOWN_WHY),
        (redis.exceptions.BusyLoadingError("LOADING"), STORE_DOWN_WHY),
        (redis.exceptions.ResponseError("WRONGTYPE Operation against a key"), None),
    ],
)
def test_what_is_wrong_with_the_store_is_said_without_a_clients_advice(
    exc: BaseException, why: str | None
) -> None:
    """A replica's reason says what it waits out; the advice to a client (retry, free memory) is the 503's."""
    assert store_trouble(exc) == why
    said = store_failure(exc)
    if why is None:
        assert said is None
    else:
        assert said is not None and said.startswith(f"{why}: ") and len(said) > len(why) + 2, said


def test_ripple_errors_keep_their_status(h: Harness) -> None:
    h.queue.fail = QueueFull("queue of 'ep' is full", {"maxQueueSize": 1})
    assert _error(h.api.post("/v2/ep/run", json={"input": 1}), 429)["detail"] == {"maxQueueSize": 1}


def test_a_bug_is_a_500_without_a_traceback(h: Harness) -> None:
    h.queue.fail = KeyError("oops")
    body = _error(h.api.get("/api/v1/endpoints"), 500)
    assert body["error"] == "internal error (logged on the server)"


def test_before_boot_everything_but_liveness_is_503(tmp_path: Path) -> None:
    h = harness(None)
    assert h.anonymous.get("/health/live").status_code == 200
    _error(h.api.post("/v2/ep/run", json={"input": 1}), 503)
    _error(h.api.get("/api/v1/info"), 503)


def test_readiness_failures_are_503_and_the_summary_degrades(h: Harness) -> None:
    assert h.anonymous.get("/health/ready").json() == {"status": "ok", "store": "ok", "recovery": {"jobs": 0}}
    h.queue.fail = ConnectionError("store down")
    body = _error(h.anonymous.get("/health/ready"), 503)
    assert "ConnectionError" in str(body["error"])
    assert h.anonymous.get("/health").json() == {"status": "degraded", "queue": {"error": "ConnectionError"}}


def test_serve_app_composes_every_router_around_its_state() -> None:
    assert serve_app.fastapi_app.state.ripple is serve_app.STATE
    paths = serve_app.fastapi_app.openapi()["paths"]
    operations = [(m, p) for p, ops in paths.items() for m in ops if not p.startswith("/ui")]
    assert len(operations) >= 40
    for probe in ("/health", "/health/live", "/health/ready", "/health/startup", "/metrics"):
        assert probe in paths
    assert "/v2/{endpoint}/job-take/{worker_id}" in paths and "/api/v1/autoscaler/status" in paths


def _spec(name: str) -> EndpointSpec:
    return EndpointSpec(name=name)


def test_field_reasons_name_the_field_and_why_in_the_users_words() -> None:
    errors = [
        {"loc": ["body", "name"], "msg": "Value error, 'a_b' is not a DNS-1123 label", "type": "value_error"},
        {"loc": ["maxReplicas"], "msg": "Input should be greater than or equal to 0", "type": "ge"},
        {"loc": [], "msg": "Input should be a valid dictionary", "type": "dict_type"},
    ]
    assert field_reasons(errors) == (
        "name: 'a_b' is not a DNS-1123 label; maxReplicas: Input should be greater than or equal to 0; "
        "Input should be a valid dictionary"
    )
    err = invalid("invalid job", errors[1:2])
    assert str(err) == "invalid job: maxReplicas: Input should be greater than or equal to 0"
    assert err.detail == errors[1:2] and err.status_code == 422
