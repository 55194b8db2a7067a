"""Fakes of the HTTP layer's own interfaces (``QueueClient``, ``AutoscalerClient``) for router tests: no
Ray, no Redis. They keep just enough state to answer as the actors do (the same reply shapes, the same
errors), and record the calls the routes make."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from orchestrator.api import schemas as s
from orchestrator.api.app import create_app
from orchestrator.api.deps import AppState, AutoscalerClient, QueueClient, autoscaler_client, queue_client
from orchestrator.auth import AuthConfig, digest
from orchestrator.boot import BootConfig, boot_config
from orchestrator.config import load_settings
from orchestrator.core.errors import Conflict, NotFound
from orchestrator.core.jobs import JobView
from orchestrator.core.models import EndpointPatch, EndpointSpec, RunRequest
from orchestrator.core.scopes import AuditEntry, KeyRecord
from orchestrator.store.access import MemoryAccessStore

API_KEY = "client-key-123"
WORKER_KEY = "worker-key-456"


def _no_handle() -> Any:
    raise AssertionError("the fake never reaches an actor")


@dataclass
class FakeJob:
    id: str
    endpoint: str
    request: RunRequest
    status: str = "IN_QUEUE"
    worker_id: str | None = None
    output: Any = None
    has_output: bool = False
    error: str | None = None
    chunks: list[Any] = field(default_factory=list)

    def status_object(self) -> dict[str, Any]:
        """As ``JobView.status_object``: optional keys only when known."""
        obj: dict[str, Any] = {"id": self.id, "status": self.status, "delayTime": 5, "executionTime": 0}
        if self.worker_id:
            obj["workerId"] = self.worker_id
        if self.status == "COMPLETED" or self.has_output:
            obj["output"] = self.output
        if self.error is not None:
            obj["error"] = self.error
        return obj


class FakeQueue(QueueClient):
    """An in-memory queue behind the typed client's interface."""

    def __init__(self) -> None:
        super().__init__(_no_handle)
        self.endpoints: dict[str, EndpointSpec] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.stops: dict[str, list[str]] = {}
        self.fail: BaseException | None = None  # raised by the next call, as an unreachable actor would
        self._ids = (f"job-{n}" for n in itertools.count(1))
        self.access = MemoryAccessStore()  # named keys and the audit log, as the actor keeps them
        self.key_syncs = 0

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.fail is not None:
            raise self.fail

    def _spec(self, endpoint: str) -> EndpointSpec:
        spec = self.endpoints.get(endpoint)
        if spec is None:
            raise NotFound(f"endpoint {endpoint!r} not found", {"endpoint": endpoint})
        return spec

    def _job(self, endpoint: str, job_id: str) -> FakeJob:
        self._spec(endpoint)
        job = self.jobs.get(job_id)
        if job is None or job.endpoint != endpoint:
            raise NotFound(f"job {job_id} not found at endpoint {endpoint!r}", {"id": job_id})
        return job

    # Client API
    async def package_arriving(self, uri: str) -> None:
        self._call("package_arriving", uri)

    async def submit(
        self, endpoint: str, requests: Sequence[RunRequest], request_id: str | None = None
    ) -> list[str]:
        self._call("submit", endpoint, list(requests), request_id)
        self._spec(endpoint)
        ids = []
        for req in requests:
            job = FakeJob(next(self._ids), endpoint, req)
            self.jobs[job.id] = job
            ids.append(job.id)
        return ids

    async def runsync(
        self, endpoint: str, request: RunRequest, wait_s: float | None, request_id: str | None = None
    ) -> s.JobStatusObject:
        self._call("runsync", endpoint, request, wait_s, request_id)
        (job_id,) = await self.submit(endpoint, [request])
        return s.JobStatusObject.model_validate(self.jobs[job_id].status_object())

    async def status(self, endpoint: str, job_id: str, read: JobView | None = None) -> s.JobStatusObject:
        self._call("status", endpoint, job_id)
        return s.JobStatusObject.model_validate(self._job(endpoint, job_id).status_object())

    async def stream(self, endpoint: str, job_id: str, wait_s: float = 0.0) -> s.StreamReply:
        self._call("stream", endpoint, job_id)
        job = self._job(endpoint, job_id)
        chunks, job.chunks = job.chunks, []
        return s.StreamReply.model_validate(
            {"id": job_id, "status": job.status, "stream": [{"output": c} for c in chunks]}
        )

    async def wait_final(self, endpoint: str, job_id: str, wait_s: float | None) -> s.JobStatusObject:
        self._call("wait_final", endpoint, job_id, wait_s)
        return s.JobStatusObject.model_validate(self._job(endpoint, job_id).status_object())

    async def cancel(self, endpoint: str, job_id: str, request_id: str | None = None) -> s.JobStateReply:
        self._call("cancel", endpoint, job_id, request_id)
        job = self._job(endpoint, job_id)
        if job.status not in ("IN_QUEUE", "IN_PROGRESS", "CANCELLED"):
            raise Conflict(
                f"job {job_id} is {job.status} and cannot be cancelled", {"id": job_id, "status": job.status}
            )
        job.status = "CANCELLED"
        return s.JobStateReply.model_validate({"id": job_id, "status": "CANCELLED"})

    async def retry(self, endpoint: str, job_id: str, request_id: str | None = None) -> s.JobStateReply:
        self._call("retry", endpoint, job_id, request_id)
        job = self._job(endpoint, job_id)
        if job.status not in ("FAILED", "TIMED_OUT", "CANCELLED"):
            raise Conflict(f"job {job_id} is {job.status}", {"id": job_id, "status": job.status})
        job.status = "IN_QUEUE"
        return s.JobStateReply.model_validate({"id": job_id, "status": "IN_QUEUE"})

    async def purge(self, endpoint: str, request_id: str | None = None) -> s.PurgeReply:
        self._call("purge", endpoint, request_id)
        self._spec(endpoint)
        queued = [j for j in self.jobs.values() if j.endpoint == endpoint and j.status == "IN_QUEUE"]
        for j in queued:
            j.status = "CANCELLED"
        return s.PurgeReply.model_validate({"removed": len(queued), "status": "completed"})

    async def health(self, endpoint: str) -> s.EndpointHealth:
        self._call("health", endpoint)
        self._spec(endpoint)
        queued = sum(1 for j in self.jobs.values() if j.endpoint == endpoint and j.status == "IN_QUEUE")
        return s.EndpointHealth.model_validate(
            {
                "jobs": {
                    "completed": 0,
                    "failed": 0,
                    "inProgress": 0,
                    "inQueue": queued,
                    "retried": 0,
                    "cancelled": 0,
                    "timedOut": 0,
                },
                "workers": {"idle": 0, "running": 0, "initializing": 0, "draining": 0, "unhealthy": 0},
            }
        )

    # Worker protocol
    async def take(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int,
        wait_s: float | None,
        request_id: str | None = None,
    ) -> list[s.TakenJob]:
        self._call("take", endpoint, worker_id, max_jobs, wait_s, request_id)
        self._spec(endpoint)
        queued = [j for j in self.jobs.values() if j.endpoint == endpoint and j.status == "IN_QUEUE"]
        out = []
        for job in queued[:max_jobs]:
            job.status, job.worker_id = "IN_PROGRESS", worker_id
            out.append(s.TakenJob.model_validate({"id": job.id, "input": job.request.input, "attempt": 1}))
        return out

    async def done(
        self,
        endpoint: str,
        worker_id: str,
        job_id: str,
        body: Any,
        is_stream: bool,
        request_id: str | None = None,
    ) -> s.DoneReply:
        self._call("done", endpoint, worker_id, job_id, body, is_stream, request_id)
        (reply,) = await self.done_many(endpoint, worker_id, [(job_id, body)], is_stream)
        return reply

    async def done_many(
        self, endpoint: str, worker_id: str, results: Sequence[tuple[str, Any]], is_stream: bool = False
    ) -> list[s.DoneReply]:
        self._call("done_many", endpoint, worker_id, list(results), is_stream)
        self._spec(endpoint)
        replies = []
        for job_id, body in results:
            job = self.jobs.get(job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found", {"id": job_id})
            if job.status != "IN_PROGRESS" or job.worker_id != worker_id:
                replies.append({"id": job_id, "accepted": False, "status": job.status, "reason": "not_held"})
                continue
            if isinstance(body, dict) and body.get("error"):
                job.status, job.error = "FAILED", str(body["error"])
            else:
                job.status = "COMPLETED"
                job.output = body.get("output") if isinstance(body, dict) else body
            replies.append({"id": job_id, "accepted": True, "status": job.status})
        return [s.DoneReply.model_validate(r) for r in replies]

    async def stream_push(
        self, endpoint: str, worker_id: str, job_id: str, outputs: Sequence[Any]
    ) -> s.StreamPushReply:
        self._call("stream_push", endpoint, worker_id, job_id, list(outputs))
        job = self._job(endpoint, job_id)
        held = job.status == "IN_PROGRESS" and job.worker_id == worker_id
        if held:
            job.chunks.extend(outputs)
        return s.StreamPushReply.model_validate({"id": job_id, "accepted": held})

    async def stop_poll(self, endpoint: str, worker_id: str, wait_s: float | None) -> list[str]:
        self._call("stop_poll", endpoint, worker_id, wait_s)
        self._spec(endpoint)
        return self.stops.pop(worker_id, [])

    async def ping(
        self, endpoint: str, worker_id: str, job_ids: Sequence[str], request_id: str | None = None
    ) -> list[str]:
        self._call("ping", endpoint, worker_id, list(job_ids), request_id)
        self._spec(endpoint)
        return sorted(self.stops.get(worker_id, []))

    # Management
    async def create_endpoint(self, spec: EndpointSpec) -> s.EndpointPublic:
        self._call("create_endpoint", spec)
        if spec.name in self.endpoints:
            raise Conflict(f"endpoint {spec.name!r} already exists", {"name": spec.name})
        self.endpoints[spec.name] = spec
        return s.EndpointPublic.model_validate(spec.wire())

    async def update_endpoint(self, name: str, patch: EndpointPatch) -> s.EndpointPublic:
        self._call("update_endpoint", name, patch)
        self.endpoints[name] = patch.apply(self._spec(name))
        return s.EndpointPublic.model_validate(self.endpoints[name].wire())

    async def delete_endpoint(self, name: str) -> s.EndpointDeleted:
        self._call("delete_endpoint", name)
        self._spec(name)
        removed = (await self.purge(name)).removed
        del self.endpoints[name]
        return s.EndpointDeleted.model_validate({"name": name, "deleted": True, "cancelledJobs": removed})

    async def get_endpoint(self, name: str) -> s.EndpointPublic:
        self._call("get_endpoint", name)
        return s.EndpointPublic.model_validate(self._spec(name).wire())

    async def list_endpoints(self) -> list[s.EndpointPublic]:
        self._call("list_endpoints")
        return [s.EndpointPublic.model_validate(self.endpoints[n].wire()) for n in sorted(self.endpoints)]

    async def list_workers(self, endpoint: str | None = None) -> list[s.WorkerView]:
        self._call("list_workers", endpoint)
        if endpoint is not None:
            self._spec(endpoint)
        held = sorted({(j.worker_id, j.endpoint) for j in self.jobs.values() if j.worker_id})
        return [
            s.WorkerView.model_validate({"workerId": w, "endpoint": e, "state": "busy", "draining": False})
            for w, e in held
            if endpoint is None or e == endpoint
        ]

    async def drain_worker(self, worker_id: str) -> s.WorkerView:
        self._call("drain_worker", worker_id)
        for view in await self.list_workers():
            if view.workerId == worker_id:
                return s.WorkerView.model_validate(
                    {**view.model_dump(), "state": "draining", "draining": True}
                )
        raise NotFound(f"worker {worker_id!r} not found", {"workerId": worker_id})

    async def list_jobs(
        self, endpoint: str | None, status: str | None, limit: int, cursor: str | None
    ) -> s.JobList:
        self._call("list_jobs", endpoint, status, limit, cursor)
        rows = [
            {**j.status_object(), "endpoint": j.endpoint, "input": j.request.input, "history": []}
            for j in self.jobs.values()
            if (endpoint is None or j.endpoint == endpoint) and (status is None or j.status == status)
        ]
        return s.JobList.model_validate({"jobs": rows[:limit], "nextCursor": None})

    async def get_job(self, job_id: str) -> s.JobDetail:
        self._call("get_job", job_id)
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found", {"id": job_id})
        return s.JobDetail.model_validate({**job.status_object(), "endpoint": job.endpoint, "history": []})

    async def stats(self) -> dict[str, s.EndpointStats]:
        self._call("stats")
        return {
            ep: s.EndpointStats.model_validate(
                {
                    "queued": 0,
                    "running": 0,
                    "oldestQueuedAgeS": None,
                    "waitingTakers": 0,
                    "lastArrivalS": None,
                }
            )
            for ep in self.endpoints
        }

    async def metrics_text(self) -> bytes:
        self._call("metrics_text")
        return b"ripple_queue_depth 0\n"

    async def ready(self) -> s.QueueReady:
        self._call("ready")
        return s.QueueReady.model_validate({"store": "ok", "recovery": {"jobs": 0}})

    # Named keys and the audit log: the memory store the actor's Redis store mirrors (not in ``calls``).
    async def create_key(self, record: KeyRecord) -> None:
        await self.access.create_key(record)

    async def revoke_key(self, name: str) -> KeyRecord:
        return await self.access.revoke_key(name)

    async def list_keys(self) -> tuple[list[KeyRecord], dict[str, int]]:
        return await self.access.list_keys()

    async def sync_keys(
        self, known_version: int, used_ms: dict[str, int]
    ) -> tuple[int, list[KeyRecord] | None]:
        self.key_syncs += 1
        return await self.access.sync(known_version, used_ms)

    async def record_audit(self, entry: AuditEntry) -> None:
        await self.access.record_audit(entry)

    async def audit(self, limit: int) -> list[AuditEntry]:
        return await self.access.audit(limit)


class FakeAutoscaler(AutoscalerClient):
    """An in-memory autoscaler behind the typed client's interface."""

    def __init__(self) -> None:
        super().__init__(_no_handle)
        self.enabled = True
        self.overrides: dict[str, dict[str, Any]] = {}
        self.decisions: dict[str, list[dict[str, Any]]] = {}

    async def status(self) -> s.AutoscalerStatus:
        return s.AutoscalerStatus.model_validate(
            {
                "enabled": self.enabled,
                "ticks": 3,
                "intervalS": 1.0,
                "gpus": {"total": 2.0, "used": 1.0, "free": 1.0, "maxGpus": None},
                "endpoints": [{"endpoint": "ep", "current": 1, "desired": 1}],
            }
        )

    async def set_enabled(self, on: bool) -> s.AutoscalerSwitch:
        self.enabled = on
        return s.AutoscalerSwitch(enabled=on)

    async def history(self, endpoint: str, limit: int) -> list[dict[str, Any]]:
        return self.decisions.get(endpoint, [])[:limit]

    async def set_override(self, endpoint: str, override: s.OverrideBody | None) -> s.OverrideReply:
        if override is None:
            self.overrides.pop(endpoint, None)
        else:
            self.overrides[endpoint] = override.model_dump()
        return s.OverrideReply.model_validate(
            {"endpoint": endpoint, "override": self.overrides.get(endpoint)}
        )


def boot(tmp_dir: str, *, auth: bool = True, max_body_bytes: int = 4096) -> BootConfig:
    """A boot config for the app under test (no store is ever reached; long-polls do not hold)."""
    settings = load_settings(data_dir=tmp_dir, insecure=True)
    keys = AuthConfig(enabled=auth, api_digest=digest(API_KEY), worker_digest=digest(WORKER_KEY))
    resolved = boot_config(settings, "redis://example:6379/0", True, keys)
    return replace(resolved, max_body_bytes=max_body_bytes, take_wait_s=0.0, stop_wait_s=0.0)


@dataclass
class Harness:
    """The app with its fakes; ``api``/``worker`` are clients carrying the right key."""

    app: FastAPI
    state: AppState
    queue: FakeQueue
    autoscaler: FakeAutoscaler
    api: TestClient
    worker: TestClient
    anonymous: TestClient


def harness(boot_config: BootConfig | None) -> Harness:
    state = AppState(boot=boot_config, cluster_facts=lambda: _CLUSTER)
    app = create_app(state)
    queue, autoscaler = FakeQueue(), FakeAutoscaler()
    app.dependency_overrides[queue_client] = lambda: queue
    app.dependency_overrides[autoscaler_client] = lambda: autoscaler
    return Harness(
        app,
        state,
        queue,
        autoscaler,
        TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"}, raise_server_exceptions=False),
        TestClient(app, headers={"Authorization": WORKER_KEY}, raise_server_exceptions=False),
        TestClient(app, raise_server_exceptions=False),
    )


_CLUSTER: dict[str, Any] = {
    "nodes": [{"nodeId": "n1", "alive": True, "gpus": 2.0, "gpuType": "A100", "draining": False}],
    "aliveNodes": 1,
    "gpusTotal": 2.0,
    "maxGpusPerNode": 2.0,
    "gpuTypes": ["A100"],
    "draining": [],
    "pendingDemand": None,
}
