"""The OpenAI-compatible routes and the worker logs route against fakes of the typed queue client and of
the actor log reader (no Ray, no Redis): job input, JSON and SSE replies, OpenAI-shaped errors, cancelling
an abandoned job; log lines, follow, and who has no logs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from api_fakes import FakeQueue, Harness, boot, harness

from orchestrator.api import schemas as s
from orchestrator.core.errors import NotFound, NotReady
from orchestrator.core.models import EndpointSpec, RunRequest
from orchestrator.core.worker_logs import LogStream

pytestmark = pytest.mark.timeout(30)

ACTOR = "f" * 32
RESPONSE = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"content": "hi"}}],
}


class RunningQueue(FakeQueue):
    """Runs each submitted job at once through ``self.handler(input) -> (status, output, chunks, error)``."""

    def __init__(self) -> None:
        super().__init__()
        self.handler: Callable[[Any], tuple[str, Any, list[Any], str | None]] = lambda _: (
            "COMPLETED",
            RESPONSE,
            [],
            None,
        )
        self.workers: list[dict[str, Any]] = []

    async def submit(
        self, endpoint: str, requests: Sequence[RunRequest], request_id: str | None = None
    ) -> list[str]:
        ids = await super().submit(endpoint, requests, request_id)
        for job_id in ids:
            job = self.jobs[job_id]
            job.status, job.output, job.chunks, job.error = self.handler(job.request.input)
            job.worker_id = "w1"
        return ids

    async def list_workers(self, endpoint: str | None = None) -> list[s.WorkerView]:
        self._call("list_workers", endpoint)
        return [s.WorkerView.model_validate(w) for w in self.workers]


class FakeLogs:
    """An ``ActorLogs`` over fixed text per actor."""

    def __init__(self) -> None:
        self.text: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[Any, ...]] = []

    def read(self, actor_id: str, tail: int, stream: LogStream) -> str:
        self.calls.append(("read", actor_id, tail, stream))
        if (actor_id, stream) not in self.text:
            raise NotFound(f"Ray has no {actor_id} log", {"actorId": actor_id})
        return self.text[(actor_id, stream)]

    def follow(self, actor_id: str, tail: int, stream: LogStream) -> Iterator[str]:
        self.calls.append(("follow", actor_id, tail, stream))
        text = self.read(actor_id, tail, stream)
        yield from (text[i : i + 7] for i in range(0, len(text), 7))  # pieces that cut lines


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    h = harness(boot(str(tmp_path)))
    queue = RunningQueue()
    queue.endpoints["ep"] = EndpointSpec(name="ep")
    from orchestrator.api.deps import queue_client

    h.app.dependency_overrides[queue_client] = lambda: queue
    h.queue = queue
    h.state.actor_logs = FakeLogs()
    return h


def _q(h: Harness) -> RunningQueue:
    assert isinstance(h.queue, RunningQueue)
    return h.queue


# OpenAI routes ----------------------------------------------------------------------------------------


def test_chat_completion_is_one_job_with_openai_route_and_input_and_replies_the_object(h: Harness) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    r = h.api.post("/v2/ep/openai/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.json() == RESPONSE
    (job,) = _q(h).jobs.values()
    assert job.request.input == {"openai_route": "/v1/chat/completions", "openai_input": body}


def test_aggregated_stream_output_is_unwrapped_and_models_is_a_job(h: Harness) -> None:
    models = {"object": "list", "data": [{"id": "m"}]}
    _q(h).handler = lambda inp: (
        "COMPLETED",
        [models] if inp["openai_route"] == "/v1/models" else [RESPONSE],
        [],
        None,
    )
    assert h.api.get("/v2/ep/openai/v1/models").json() == models
    assert h.api.post("/v2/ep/openai/v1/completions", json={"prompt": "p"}).json() == RESPONSE
    inputs = [j.request.input for j in _q(h).jobs.values()]
    assert inputs[0] == {"openai_route": "/v1/models", "openai_input": {}}
    assert inputs[1] == {"openai_route": "/v1/completions", "openai_input": {"prompt": "p"}}


def test_stream_relays_sse_text_and_objects_then_done(h: Harness) -> None:
    chunks = ['data: {"n":1}\n\ndata: {"n":2}\n\n', {"n": 3}]
    _q(h).handler = lambda _: ("COMPLETED", chunks, list(chunks), None)
    r = h.api.post("/v2/ep/openai/v1/chat/completions", json={"stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text == 'data: {"n":1}\n\ndata: {"n":2}\n\ndata: {"n":3}\n\ndata: [DONE]\n\n'


def test_stream_that_already_sent_done_gets_no_second_one(h: Harness) -> None:
    _q(h).handler = lambda _: ("COMPLETED", [], ['data: {"n":1}\n\ndata: [DONE]\n\n'], None)
    r = h.api.post("/v2/ep/openai/v1/completions", json={"stream": True})
    assert r.text == 'data: {"n":1}\n\ndata: [DONE]\n\n'


def test_stream_of_a_handler_that_returned_is_its_output_as_one_event(h: Harness) -> None:
    r = h.api.post("/v2/ep/openai/v1/chat/completions", json={"stream": True})
    assert r.text == f"data: {json.dumps(RESPONSE, separators=(',', ':'))}\n\ndata: [DONE]\n\n"


def test_a_job_failing_mid_stream_ends_with_an_error_event(h: Harness) -> None:
    _q(h).handler = lambda _: ("FAILED", None, ['data: {"n":1}\n\n'], "engine died")
    r = h.api.post("/v2/ep/openai/v1/chat/completions", json={"stream": True})
    events = [e for e in r.text.split("\n\n") if e]
    assert events[0] == 'data: {"n":1}' and events[-1] == "data: [DONE]"
    assert json.loads(events[1].removeprefix("data: "))["error"]["message"].endswith("engine died")


@pytest.mark.parametrize("stream", [False, True])
def test_errors_before_any_chunk_are_openai_shaped_http_errors(h: Harness, stream: bool) -> None:
    vllm = {
        "object": "error",
        "message": "The model `x` does not exist.",
        "type": "NotFoundError",
        "code": 404,
    }
    _q(h).handler = lambda _: ("COMPLETED", [vllm], [vllm] if stream else [], None)
    r = h.api.post("/v2/ep/openai/v1/chat/completions", json={"stream": stream})
    assert r.status_code == 404 and r.json()["error"]["message"] == vllm["message"]
    _q(h).handler = lambda _: ("FAILED", None, [], json.dumps({"error_type": "E", "error_message": "boom"}))
    r = h.api.post("/v2/ep/openai/v1/chat/completions", json={"stream": stream})
    assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
    _q(h).handler = lambda _: ("TIMED_OUT", None, [], None)
    assert h.api.post("/v2/ep/openai/v1/completions", json={"stream": stream}).status_code == 504


def test_bad_requests_are_openai_shaped(h: Harness) -> None:
    r = h.api.post(
        "/v2/ep/openai/v1/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["message"] == "body is not valid JSON"
    r = h.api.post("/v2/ep/openai/v1/chat/completions", json=[1, 2])
    assert r.status_code == 422 and "JSON object" in r.json()["error"]["message"]
    r = h.api.post("/v2/nope/openai/v1/chat/completions", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert h.anonymous.get("/v2/ep/openai/v1/models").status_code == 401


def test_a_job_still_running_when_the_wait_ends_is_cancelled(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.api.routes import openai as route

    monkeypatch.setattr(route, "MAX_WAIT_S", 0.0)
    _q(h).handler = lambda _: ("IN_PROGRESS", None, [], None)
    r = h.api.post("/v2/ep/openai/v1/chat/completions", json={})
    assert r.status_code == 504 and r.json()["error"]["code"] == "wait_exceeded"
    r = h.api.post("/v2/ep/openai/v1/chat/completions", json={"stream": True})
    assert r.status_code == 504
    assert [j.status for j in _q(h).jobs.values()] == ["CANCELLED", "CANCELLED"]


# Worker logs --------------------------------------------------------------------------------------------


def _logs(h: Harness) -> FakeLogs:
    assert isinstance(h.state.actor_logs, FakeLogs)
    return h.state.actor_logs


def test_logs_of_a_replica_are_its_last_lines_without_rays_markers(h: Harness) -> None:
    _q(h).workers = [
        {"workerId": "w1", "endpoint": "ep", "state": "idle", "kind": "ray", "actorId": ACTOR, "nodeId": "n"}
    ]
    _logs(h).text[(ACTOR, "stdout")] = ":job_id:01\n:actor_name:WorkerReplica\none\ntwo\nthree\n"
    _logs(h).text[(ACTOR, "stderr")] = "oops\n"
    r = h.api.get("/api/v1/workers/w1/logs?tail=2")
    assert r.status_code == 200
    assert r.json() == {
        "workerId": "w1",
        "endpoint": "ep",
        "actorId": ACTOR,
        "nodeId": "n",
        "stream": "stdout",
        "lines": ["two", "three"],
    }
    assert _logs(h).calls[-1] == ("read", ACTOR, 2, "stdout")
    assert h.api.get("/api/v1/workers/w1/logs?stream=stderr").json()["lines"] == ["oops"]
    assert h.api.get("/api/v1/workers/w1/logs?tail=-1").json()["lines"] == ["one", "two", "three"]


def test_follow_streams_whole_lines_as_text(h: Harness) -> None:
    _q(h).workers = [{"workerId": "w1", "endpoint": "ep", "state": "idle", "kind": "ray", "actorId": ACTOR}]
    _logs(h).text[(ACTOR, "stdout")] = ":actor_name:X\nfirst line\nsecond line\nlast"
    r = h.api.get("/api/v1/workers/w1/logs?follow=true&tail=5")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text == "first line\nsecond line\nlast\n"


def test_who_has_no_logs(h: Harness) -> None:
    _q(h).workers = [
        {"workerId": "sdk", "endpoint": "ep", "state": "idle", "kind": "external"},
        {"workerId": "gone", "endpoint": "ep", "state": "stopped", "kind": "ray", "actorId": ACTOR},
    ]
    r = h.api.get("/api/v1/workers/sdk/logs")
    assert r.status_code == 409 and "outside worker" in r.json()["error"]
    assert h.api.get("/api/v1/workers/nobody/logs").status_code == 404
    r = h.api.get("/api/v1/workers/gone/logs")  # Ray has no file: its NotFound
    assert r.status_code == 404 and "Ray has no" in r.json()["error"]
    assert h.api.get("/api/v1/workers/gone/logs?follow=true").status_code == 404
    assert h.api.get("/api/v1/workers/gone/logs?tail=-2").status_code == 422
    assert h.api.get("/api/v1/workers/gone/logs?stream=both").status_code == 422
    assert h.anonymous.get("/api/v1/workers/gone/logs").status_code == 401
    h.state.actor_logs = None
    assert h.api.get("/api/v1/workers/gone/logs").status_code == 503


def test_unreachable_log_service_is_a_503(h: Harness) -> None:
    class Down(FakeLogs):
        def read(self, actor_id: str, tail: int, stream: LogStream) -> str:
            raise NotReady("Ray's log service (the dashboard) is not reachable")

    _q(h).workers = [{"workerId": "w1", "endpoint": "ep", "state": "idle", "kind": "ray", "actorId": ACTOR}]
    h.state.actor_logs = Down()
    r = h.api.get("/api/v1/workers/w1/logs")
    assert r.status_code == 503 and "dashboard" in r.json()["error"]


def test_job_detail_links_the_logs_of_its_worker(h: Harness) -> None:
    job_id = h.api.post("/v2/ep/run", json={"input": 1}).json()["id"]
    detail = h.api.get(f"/api/v1/jobs/{job_id}").json()
    assert detail["workerId"] == "w1" and detail["workerLogs"] == "/api/v1/workers/w1/logs"


def test_follow_of_an_empty_log_that_ends_ends_and_follows_are_capped(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.api.routes import logs as route

    _q(h).workers = [{"workerId": "w1", "endpoint": "ep", "state": "idle", "kind": "ray", "actorId": ACTOR}]
    _logs(h).text[(ACTOR, "stdout")] = ""
    r = h.api.get("/api/v1/workers/w1/logs?follow=true")
    assert r.status_code == 200 and r.text == ""
    monkeypatch.setattr(route, "MAX_FOLLOWS", 0)
    r = h.api.get("/api/v1/workers/w1/logs?follow=true")
    assert r.status_code == 503 and "log streams are open" in r.json()["error"]
    deadline = time.monotonic() + 5
    while route._Follower.open and time.monotonic() < deadline:  # a thread decrements after its last piece
        time.sleep(0.01)
    assert route._Follower.open == 0, "every reader thread was released"
