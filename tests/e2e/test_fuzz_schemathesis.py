"""Schemathesis against the running app's OpenAPI document: no request, valid or not, gets a 5xx.

Every operation is fuzzed with a few positive and negative examples, each sent twice: as generated (mostly
unknown endpoints and jobs, so the 404 paths) and with its path parameters pointed at a real endpoint and
job (so the validation and state paths). Long-polls are bounded: ``RIPPLE_TAKE_WAIT_S``/``STOP_WAIT_S`` are
2 s on the shared instance, and ``runsync`` is sent with ``wait=0``. Bounded to well under 3 minutes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import Instance
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.timeout(240)

BUDGET_S = 150.0
EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 6}
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
# Long-polls that would hold 2 s on a real endpoint, and the OpenAI routes (which hold until their job is
# final: the fuzz endpoint has no worker): fuzzed only against unknown endpoints.
LONG_POLLS = ("/job-take/", "/job-take-batch/", "/job-stop/", "/openai/")


def _check_error_shape(ctx: Any, response: Any, case: schemathesis.Case) -> bool:
    """Error replies are ``{"error", "detail"}`` JSON and never carry a traceback."""
    text = response.text if hasattr(response, "text") else response.content.decode(errors="replace")
    assert not TRACEBACK.search(text), f"traceback in reply to {case.method} {case.formatted_path}"
    if response.status_code >= 400:
        if response.status_code == 400 and text == "Invalid HTTP request received.":
            return True  # the HTTP server itself (uvicorn) refused a request line over its limit
        try:
            body = response.json()
        except ValueError:
            curl = case.as_curl_command()[:300]
            raise AssertionError(f"non-JSON error {response.status_code} {text[:200]!r}: {curl}") from None
        if "/openai/" in case.path and isinstance(body, dict) and isinstance(body.get("error"), dict):
            # The OpenAI-compatible routes answer in OpenAI's error shape.
            assert isinstance(body["error"].get("message"), str), f"bad OpenAI error body: {text[:300]}"
            return True
        assert isinstance(body, dict) and {"error", "detail"} <= set(body), f"bad error body: {text[:300]}"
    return True


@pytest.fixture(scope="module")
def targets(ripple_app: Instance) -> Iterator[dict[str, str]]:
    """A real endpoint and job for the fuzzer to aim at; every endpoint it creates is deleted after."""
    with ripple_app.client() as c:
        before = {e["name"] for e in c.get("/api/v1/endpoints").json()["endpoints"]}
        ep = ripple_app.create_endpoint("fuzz")
        job = c.post(f"/v2/{ep}/run", json={"input": {"fuzz": True}}).json()["id"]
        yield {"endpoint": ep, "name": ep, "job_id": job}
        c.post("/api/v1/autoscaler/enable")  # the fuzzer may have switched it off
        for e in c.get("/api/v1/endpoints").json()["endpoints"]:
            if e["name"] not in before:
                c.post(f"/v2/{e['name']}/purge-queue")
                c.delete(f"/api/v1/endpoints/{e['name']}")


def _aim(case: schemathesis.Case, targets: dict[str, str]) -> schemathesis.Case | None:
    """The same case with its path parameters pointed at the real endpoint and job (None: skip)."""
    if not case.path_parameters or any(p in case.path for p in LONG_POLLS):
        return None
    params = dict(case.path_parameters)
    for key in ("endpoint", "name", "job_id"):
        if key in params:
            params[key] = targets[key]
    aimed = case.operation.Case(
        method=case.method,
        path_parameters=params,
        headers=dict(case.headers or {}),
        query=dict(case.query or {}),
        body=case.body,
        media_type=case.media_type,
    )
    if "wait" in (aimed.query or {}):
        aimed.query["wait"] = 0
    if case.path.endswith("/runsync"):
        aimed.query = {**(aimed.query or {}), "wait": 0}
    return aimed


def _send(case: schemathesis.Case, inst: Instance) -> None:
    worker = any(p in case.path for p in (*LONG_POLLS, "/job-done/", "/job-stream/", "/ping/"))
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    headers["Authorization"] = inst.worker_key if worker else f"Bearer {inst.api_key}"
    case.headers = headers
    if case.path.endswith("/runsync"):
        case.query = {**(case.query or {}), "wait": 0}
    if isinstance(case.body, dict) and "handler" in case.body:
        case.body = {**case.body, "handler": None}  # never ask the pools to import a random module
    case.call_and_validate(
        base_url=inst.url, checks=[not_a_server_error], additional_checks=[_check_error_shape], timeout=30
    )


def _only_auth_parameters(op: Any) -> bool:
    """True when the only input is the Authorization header (negative cases would only break the key)."""
    names = {p.name.lower() for p in op.iter_parameters()}
    return names <= {"authorization"} and not op.body


def test_no_server_errors(ripple_app: Instance, targets: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{ripple_app.url}/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    ops = [op for op in ops if not op.path.startswith("/ui")]
    assert len(ops) >= 30, f"only {len(ops)} operations: is the OpenAPI document complete?"
    started = time.monotonic()
    done: dict[GenerationMode, int] = {mode: 0 for mode in EXAMPLES}
    # Every operation with valid data first, then with invalid data while the time budget lasts.
    for mode, n in EXAMPLES.items():
        for op in ops:
            if mode is GenerationMode.NEGATIVE and _only_auth_parameters(op):
                continue
            if time.monotonic() - started > BUDGET_S:
                break

            @settings(
                max_examples=n,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def fuzz(case: schemathesis.Case) -> None:
                _send(case, ripple_app)
                aimed = _aim(case, targets)
                if aimed is not None:
                    _send(aimed, ripple_app)

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid
                assert mode is GenerationMode.NEGATIVE
            done[mode] += 1
    assert done[GenerationMode.POSITIVE] == len(ops), f"valid-data fuzzing ran out of time: {done}"
    # The app is still healthy afterwards, and the job listing (which renders everything stored) works.
    assert httpx.get(f"{ripple_app.url}/health/ready", timeout=10).status_code == 200
    with ripple_app.client() as c:
        assert c.get("/api/v1/jobs", params={"limit": 1000}).status_code == 200
