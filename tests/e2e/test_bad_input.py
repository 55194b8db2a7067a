"""Bad input against a real instance: every error is JSON ``{"error", "detail"}`` with the right status,
never a 5xx, never a traceback."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Instance

pytestmark = pytest.mark.timeout(120)

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")


def assert_error(r: httpx.Response, status: int, *, mentions: str | None = None) -> dict[str, Any]:
    """``r`` is an error reply of ``status``: a JSON object with exactly ``error`` and ``detail``."""
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:500]}"
    assert not TRACEBACK.search(r.text), r.text
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]
    if mentions is not None:
        assert mentions in r.text, f"{mentions!r} not named in {r.text[:500]}"
    return body


@pytest.fixture(scope="module")
def api(ripple_app: Instance) -> Iterator[httpx.Client]:
    with ripple_app.client() as c:
        yield c


@pytest.fixture(scope="module")
def ep(ripple_app: Instance) -> str:
    return ripple_app.create_endpoint("bad")


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (b"{not json", None),
        (b"", "body"),
        (b"[1, 2]", None),
        (b"null", None),
        (b'"just a string"', None),
        (b"{}", "input"),
        (b'{"input": null}', "input"),
        (b'{"input": {"a": 1}, "policy": {"executionTimeout": "soon"}}', "executionTimeout"),
        (b'{"input": {"a": 1}, "policy": {"executionTimeout": 5}}', "executionTimeout"),
        (b'{"input": {"a": 1}, "policy": {"ttl": -1}}', "ttl"),
        (b'{"input": {"a": 1}, "policy": {"lowPriority": "maybe"}}', "lowPriority"),
        (b'{"input": {"a": 1}, "webhook": "ftp://x"}', "webhook"),
        (b'{"input": {"a": 1}, "webhook": 12}', "webhook"),
        (b"\xff\xfe\x00garbage", None),
    ],
)
def test_run_rejects_bad_bodies(api: httpx.Client, ep: str, content: bytes, mentions: str | None) -> None:
    for route in ("run", "runsync?wait=0"):
        r = api.post(f"/v2/{ep}/{route}", content=content, headers={"Content-Type": "application/json"})
        assert_error(r, 422, mentions=mentions)


@pytest.mark.parametrize(
    ("hook", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1:8080/hook", "private"),
        ("https://192.168.1.10/", "private"),
        ("http://[fd00::1]/", "unique-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://localhost:8000/", "loopback name"),
        ("http://127.0.0.2/", "loopback"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
def test_run_refuses_non_public_webhooks(api: httpx.Client, ep: str, hook: str, why: str) -> None:
    """Refused before any connection is made (nothing listens there; nothing is sent)."""
    for route in ("run", "runsync?wait=0"):
        r = api.post(f"/v2/{ep}/{route}", json={"input": 1, "webhook": hook})
        body = assert_error(r, 422, mentions=why)
        assert body["error"].startswith("invalid request: webhook: "), body
        assert body["detail"][0]["loc"] == ["body", "webhook"]
    batch = {"jobs": [{"input": 1}, {"input": 2, "webhook": hook}]}
    body = assert_error(api.post(f"/v2/{ep}/run-batch", json=batch), 422, mentions="jobs.1.webhook")
    assert why in body["error"]
    assert api.get(f"/v2/{ep}/health").json()["jobs"]["inQueue"] == 0, "nothing was queued"


def test_run_batch_rejects_bad_bodies(api: httpx.Client, ep: str) -> None:
    assert_error(api.post(f"/v2/{ep}/run-batch", json={"jobs": []}), 422, mentions="jobs")
    assert_error(api.post(f"/v2/{ep}/run-batch", json={"jobs": [{"input": 1}, {}]}), 422, mentions="input")
    assert_error(api.post(f"/v2/{ep}/run-batch", json=[{"input": 1}]), 422)
    # all or nothing: nothing was queued by the failed batches
    assert api.get(f"/v2/{ep}/health").json()["jobs"]["inQueue"] == 0


def test_unknown_endpoint_and_job(api: httpx.Client, ep: str) -> None:
    missing = "no-such-endpoint-zz"
    assert_error(api.post(f"/v2/{missing}/run", json={"input": {}}), 404, mentions=missing)
    assert_error(api.post(f"/v2/{missing}/runsync", json={"input": {}}), 404)
    assert_error(api.get(f"/v2/{missing}/health"), 404)
    assert_error(api.post(f"/v2/{missing}/purge-queue"), 404)
    assert_error(api.get(f"/v2/{missing}/status/abc"), 404)
    assert_error(api.get(f"/api/v1/endpoints/{missing}"), 404)
    assert_error(api.delete(f"/api/v1/endpoints/{missing}"), 404)
    assert_error(api.patch(f"/api/v1/endpoints/{missing}", json={"priority": 3}), 404)
    for op in ("status", "stream"):
        assert_error(api.get(f"/v2/{ep}/{op}/00000000-0000-0000-0000-000000000000"), 404)
    for op in ("cancel", "retry"):
        assert_error(api.post(f"/v2/{ep}/{op}/nope"), 404)
    assert_error(api.get("/api/v1/jobs/nope"), 404)
    assert_error(api.post("/api/v1/workers/nobody/drain"), 404)
    # a job exists, but under another endpoint
    other = api.post(f"/v2/{ep}/run", json={"input": {"x": 1}}).json()["id"]
    second = api.post("/api/v1/endpoints", json={"name": f"{ep}-2"}).json()["name"]
    assert_error(api.get(f"/v2/{second}/status/{other}"), 404)
    assert_error(api.post(f"/v2/{second}/cancel/{other}"), 404)
    assert api.post(f"/v2/{ep}/purge-queue").json()["removed"] == 1
    # unknown routes and methods are JSON errors too
    assert_error(api.get("/v3/whatever"), 404)
    assert_error(api.put(f"/v2/{ep}/run", json={"input": 1}), 405)


def test_oversized_bodies_answer_413(api: httpx.Client, ep: str) -> None:
    big = b'{"input": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    assert_error(api.post(f"/v2/{ep}/run", content=big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"input": "'
        for _ in range(11):
            yield b"y" * (1024 * 1024)
        yield b'"}'

    assert_error(api.post(f"/v2/{ep}/run", content=chunks()), 413)
    assert api.get(f"/v2/{ep}/health").json()["jobs"]["inQueue"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad_Name"}, "name"),
        ({"name": "-dash"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"name": ""}, "name"),
        ({}, "name"),
        ({"name": "ok-name", "gpus": "many"}, "gpus"),
        ({"name": "ok-name", "priority": 101}, "priority"),
        ({"name": "ok-name", "minReplicas": 5, "maxReplicas": 2}, "maxReplicas"),
        ({"name": "ok-name", "handler": "not a handler"}, "handler"),
        ({"name": "ok-name", "executionTimeout": 10}, "executionTimeout"),
        ({"name": "ok-name", "noSuchField": 1}, "noSuchField"),
    ],
)
def test_invalid_endpoints_name_the_field(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    assert_error(api.post("/api/v1/endpoints", json=body), 422, mentions=field)


def test_invalid_endpoint_updates_and_path_names(api: httpx.Client, ep: str) -> None:
    assert_error(api.patch(f"/api/v1/endpoints/{ep}", json={"priority": -1}), 422, mentions="priority")
    assert_error(api.patch(f"/api/v1/endpoints/{ep}", json={"name": "renamed"}), 422, mentions="name")
    assert_error(api.patch(f"/api/v1/endpoints/{ep}", content=b"[1]"), 422)
    assert_error(api.patch(f"/api/v1/endpoints/{ep}", content=b"{oops"), 422)
    assert_error(api.post("/api/v1/endpoints", json={"name": ep}), 409, mentions=ep)
    assert_error(api.post(f"/v2/{'e' * 64}/run", json={"input": 1}), 422, mentions="endpoint")
    assert_error(api.get("/api/v1/jobs", params={"status": "DONE"}), 422, mentions="status")
    assert_error(api.get("/api/v1/jobs", params={"limit": 0}), 422, mentions="limit")
    assert_error(api.post(f"/v2/{ep}/runsync", params={"wait": -5}, json={"input": 1}), 422, mentions="wait")


def _worker_headers(inst: Instance) -> dict[str, str]:
    return {"Authorization": inst.worker_key}


def test_worker_protocol_bad_input(ripple_app: Instance, api: httpx.Client, ep: str) -> None:
    w = _worker_headers(ripple_app)
    base = f"{ripple_app.v2}/{ep}"
    job_id = api.post(f"/v2/{ep}/run", json={"input": {"w": 1}}).json()["id"]
    taken = httpx.get(f"{base}/job-take/holder?gpu=CPU&job_in_progress=0", headers=w)
    assert taken.status_code == 200 and taken.json()["id"] == job_id

    # a worker that does not hold the job: acknowledged, not applied, counted
    r = httpx.post(
        f"{base}/job-done/intruder/{job_id}?isStream=false", content=b'{"output": "stolen"}', headers=w
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] is False
    r = httpx.post(f"{base}/job-stream/intruder/{job_id}", content=b'{"output": "chunk"}', headers=w)
    assert r.status_code == 200 and r.json()["accepted"] is False
    status = api.get(f"/v2/{ep}/status/{job_id}").json()
    assert status["status"] == "IN_PROGRESS" and status["workerId"] == "holder"
    metrics = httpx.get(f"{ripple_app.url}/metrics").text
    assert re.search(rf'ripple_results_dropped_total\{{endpoint="{ep}",reason="[^"]+"\}} [1-9]', metrics), (
        metrics
    )

    # malformed bodies and ids from a worker
    assert_error(httpx.post(f"{base}/job-done/holder/{job_id}", content=b"{nope", headers=w), 422)
    assert_error(httpx.post(f"{base}/job-stream/holder/{job_id}", content=b"\xff", headers=w), 422)
    assert_error(
        httpx.get(f"{base}/job-take/holder?job_in_progress=7", headers=w), 422, mentions="job_in_progress"
    )
    assert_error(
        httpx.get(f"{base}/job-take-batch/holder?batch_size=0", headers=w), 422, mentions="batch_size"
    )
    assert_error(httpx.get(f"{base}/job-take/{'w' * 200}", headers=w), 422)
    assert_error(httpx.post(f"{base}/job-done/holder/no-such-job", content=b'{"output": 1}', headers=w), 404)
    assert_error(httpx.get(f"{ripple_app.v2}/no-such-ep/job-take/holder", headers=w), 404)
    assert_error(httpx.get(f"{ripple_app.v2}/no-such-ep/ping/holder", headers=w), 404)

    # the holder's result still wins, and a duplicate is harmless
    for _ in range(2):
        r = httpx.post(
            f"{base}/job-done/holder/{job_id}?isStream=false", content=b'{"output": "mine"}', headers=w
        )
        assert r.status_code == 200, r.text
    final = api.get(f"/v2/{ep}/status/{job_id}").json()
    assert final["status"] == "COMPLETED" and final["output"] == "mine"


def test_keys_are_required(ripple_app: Instance, ep: str) -> None:
    v2, url = ripple_app.v2, ripple_app.url
    client_routes = [
        ("POST", f"{v2}/{ep}/run"),
        ("POST", f"{v2}/{ep}/runsync"),
        ("GET", f"{v2}/{ep}/status/x"),
        ("GET", f"{v2}/{ep}/health"),
        ("POST", f"{v2}/{ep}/purge-queue"),
        ("GET", f"{url}/api/v1/endpoints"),
        ("POST", f"{url}/api/v1/endpoints"),
        ("GET", f"{url}/api/v1/jobs"),
        ("GET", f"{url}/api/v1/workers"),
    ]
    worker_routes = [
        ("GET", f"{v2}/{ep}/job-take/kw?job_in_progress=0"),
        ("GET", f"{v2}/{ep}/job-stop/kw"),
        ("GET", f"{v2}/{ep}/ping/kw"),
        ("POST", f"{v2}/{ep}/job-done/kw/x"),
        ("POST", f"{v2}/{ep}/job-stream/kw/x"),
    ]
    bad_client: list[dict[str, str]] = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "wrong"}]
    for method, route in client_routes:
        for headers in bad_client:
            r = httpx.request(method, route, headers=headers, json={"input": 1})
            assert_error(r, 401)
            assert r.headers.get("www-authenticate") == "Bearer"
        # a known key of the wrong scope: 403 naming its scope
        r = httpx.request(
            method, route, headers={"Authorization": f"Bearer {ripple_app.worker_key}"}, json={"input": 1}
        )
        assert_error(r, 403)
        assert "scope worker" in r.json()["error"], r.text
    bad_worker = [{}, {"Authorization": "wrong"}]
    for method, route in worker_routes:
        for headers in bad_worker:
            assert_error(httpx.request(method, route, headers=headers, content=b"{}"), 401)
    # the admin key may do everything, the worker protocol included
    r = httpx.get(f"{v2}/{ep}/ping/kw?job_id=", headers={"Authorization": f"Bearer {ripple_app.api_key}"})
    assert r.status_code == 200, r.text
    # the worker key, with and without "Bearer "
    for auth in (ripple_app.worker_key, f"Bearer {ripple_app.worker_key}", f"bearer {ripple_app.worker_key}"):
        r = httpx.get(f"{v2}/{ep}/ping/kw?job_id=", headers={"Authorization": auth})
        assert r.status_code == 200, r.text
    # probes need no key
    for probe in ("/health", "/health/live", "/health/ready", "/health/startup", "/metrics"):
        assert httpx.get(f"{url}{probe}").status_code == 200


def test_strings_that_are_not_unicode_are_refused(ripple_app: Instance, api: httpx.Client, ep: str) -> None:
    """A lone surrogate is valid JSON but not Unicode: stored, it would break every reply that carries it."""
    for body, loc in (
        (b'{"input": "\\ud800"}', ["body", "input"]),
        (b'{"input": {"k": ["ok", "\\uDFFF"]}}', ["body", "input", "k", "1"]),
        (b'{"jobs": [{"input": 1}, {"input": "\\udbff"}]}', ["body", "jobs", "1", "input"]),
    ):
        route = "run-batch" if b"jobs" in body else "run"
        assert assert_error(api.post(f"/v2/{ep}/{route}", content=body), 422)["detail"]["loc"] == loc
    ok = api.post(f"/v2/{ep}/run", content=b'{"input": "\\ud83d\\ude00"}')  # a surrogate pair is fine
    assert ok.status_code == 200, ok.text
    assert api.get(f"/v2/{ep}/status/{ok.json()['id']}").status_code == 200
    job = api.post(f"/v2/{ep}/run", json={"input": 1}).json()["id"]
    w = _worker_headers(ripple_app)
    taken = httpx.get(f"{ripple_app.v2}/{ep}/job-take/sur?job_in_progress=0", headers=w).json()
    assert taken["id"] in (ok.json()["id"], job)
    r = httpx.post(
        f"{ripple_app.v2}/{ep}/job-done/sur/{taken['id']}", content=b'{"output": "\\ud800"}', headers=w
    )
    assert_error(r, 422)
    assert api.get("/api/v1/jobs", params={"endpoint": ep}).status_code == 200
    assert api.get("/api/v1/jobs").status_code == 200  # nothing stored above breaks the listing
    api.post(f"/v2/{ep}/purge-queue")


def test_error_bodies_never_leak_tracebacks(ripple_app: Instance, api: httpx.Client, ep: str) -> None:
    """A sweep of odd requests: no 5xx, no traceback, every error in the contract's shape."""
    weird: list[tuple[str, str, Any]] = [
        ("POST", f"/v2/{ep}/run", json.dumps({"input": {"deep": [[[[[[[[[[1]]]]]]]]]]}})),
        ("POST", f"/v2/{ep}/run", '{"input": 1e999}'),
        ("POST", f"/v2/{ep}/run", '{"input": "\\ud800"}'),
        ("POST", f"/v2/{ep}/run", "[" * 100_000 + "]" * 100_000),
        ("POST", f"/v2/{ep}/run", '{"input": 1, "policy": []}'),
        ("POST", f"/v2/{ep}/run", '{"input": 1, "policy": {"executionTimeout": 1e30}}'),
        ("GET", f"/v2/{ep}/status/{'%00' * 3}", None),
        ("GET", f"/v2/{ep}/status/{'z' * 300}", None),
        ("POST", f"/v2/{ep}/cancel/..%2F..%2Fetc", None),
        ("GET", "/api/v1/jobs?cursor=-1", None),
        ("GET", "/api/v1/jobs?limit=abc", None),
        ("GET", "/api/v1/autoscaler/history/%20", None),
        ("POST", "/api/v1/endpoints", '{"name": "ok-x", "runtimeEnv": "not-a-dict"}'),
        ("POST", "/api/v1/endpoints", '{"name": "ok-x", "memoryMb": 1.5}'),
    ]
    for method, path, body in weird:
        r = api.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code < 500, f"{method} {path}: {r.status_code} {r.text[:300]}"
        assert not TRACEBACK.search(r.text), r.text
        if r.status_code >= 400:
            assert_error(r, r.status_code)
    assert api.get("/api/v1/jobs").status_code == 200  # nothing stored above breaks the listing
    api.post(f"/v2/{ep}/purge-queue")
