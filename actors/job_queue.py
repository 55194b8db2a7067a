"""The JobQueue actor: dispatch for every endpoint, with Redis as the only source of truth.

Named, detached and restarted by Ray; an async actor, so long-polls (takers, stop channels, ``runsync``) cost
no thread. Every job write goes through :class:`orchestrator.store.redis.RedisStore` before a method returns,
so a restart (of this actor or of everything) resumes from Redis: queued jobs stay queued, leases of workers
that never come back are reclaimed after the heartbeat timeout, finished jobs keep their results.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from orchestrator import logs
from orchestrator.config import QueueConfig
from orchestrator.core.errors import Conflict, InvalidInput, NotFound
from orchestrator.core.jobs import RETRYABLE, JobStatus, JobView, parse_worker_result
from orchestrator.core.models import EndpointPatch, EndpointSpec, NewJob, RunRequest, new_job_id
from orchestrator.core.registry import WorkerRegistry
from orchestrator.core.waiters import Waiters
from orchestrator.metrics import QueueMetrics, lease_reason, worker_state_counts
from orchestrator.ray_metrics import RaySink
from orchestrator.store.protocol import REQUEUE_OR_FAIL, FinishItem, FinishOutcome, Moved
from orchestrator.store.redis import RedisStore
from orchestrator.webhooks import WebhookSender

log = logging.getLogger("ripple.queue")
S = JobStatus


def _now_ms() -> int:
    return int(time.time() * 1000)


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


class JobQueue:
    """Dispatch, leases, long-polls and the worker registry. See the module docstring."""

    def __init__(self, config: QueueConfig, namespace: str = "ripple") -> None:
        self.cfg = config
        self.namespace = namespace
        self.store = RedisStore.connect(config.redis_url, config.key_prefix)
        logs.configure("INFO")  # JSON lines in the actor's log file
        self.ray_metrics = RaySink()
        self.metrics = QueueMetrics(self.ray_metrics)
        self._mirrored_s = 0.0
        self.registry = WorkerRegistry(config.heartbeat_timeout_s)
        self.endpoints: dict[str, EndpointSpec] = {}
        self.leased: dict[str, tuple[str, str, float]] = {}  # job -> (worker, endpoint, leased_at_s)
        self.takers: Waiters[str] = Waiters()
        self.stoppers: Waiters[str] = Waiters()
        self.finals: Waiters[str] = Waiters()
        self.stops: dict[str, set[str]] = defaultdict(set)
        self.webhooks = WebhookSender(self.store, self.metrics, config)
        self._booted = False
        self._boot_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.recovery: dict[str, Any] = {}
        self.last_arrival_s: dict[str, float] = {}
        self._notified_s: dict[str, float] = {}

    # Boot and background ------------------------------------------------------------------------

    async def _boot(self) -> None:
        if self._booted:
            return
        async with self._boot_lock:
            if self._booted:
                return
            t0 = time.perf_counter()
            await self.store.ping()
            for name, raw in (await self.store.load_endpoints()).items():
                self.endpoints[name] = EndpointSpec.model_validate_json(raw)
            now_s = time.time()
            for job_id, worker, endpoint, _deadline in await self.store.leases():
                self.leased[job_id] = (worker, endpoint, now_s)
            self.registry.restore(await self.store.load_workers(), await self.store.draining_workers(), now_s)
            for job_id, (worker, endpoint, _) in self.leased.items():
                # A holder saved as lost (or for another endpoint) before its latest take was persisted
                # would never go stale: give it one heartbeat timeout from now, like every restored worker.
                self.registry.touch(worker, endpoint, None, now_s)
                self.registry.hold(worker, endpoint, job_id, now_s)
            requeued_hooks = await self.store.webhook_recover()
            queued = {ep: await self.store.depth(ep) for ep in self.endpoints}
            self.recovery = {
                "seconds": round(time.perf_counter() - t0, 4),
                "endpoints": len(self.endpoints),
                "queued": sum(queued.values()),
                "leases": len(self.leased),
                "webhooksPending": requeued_hooks,
            }
            log.info("queue recovered %s", self.recovery)
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._sweep_forever()), loop.create_task(self.webhooks.run())]
            self._booted = True

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self._sweep_once()
            except Exception:  # a tick never kills the loop: log, count, continue
                log.exception("queue sweep failed")
            await asyncio.sleep(self.cfg.sweep_interval_s)

    async def _sweep_once(self) -> None:
        now_ms = _now_ms()
        for moved in await self.store.sweep("ttl", now_ms, 1000):
            self._finalized(moved.job_id, moved.endpoint, S.TIMED_OUT)
        for moved in await self.store.sweep("leases", now_ms, 1000):
            self._release(moved, "timeout")
            self._finalized(moved.job_id, moved.endpoint, S.TIMED_OUT)
            log.info(
                "job timed out (execution timeout)",
                extra={"job_id": moved.job_id, "endpoint": moved.endpoint, "worker_id": moved.worker},
            )
        now_s = now_ms / 1000
        for worker in self.registry.stale(now_s):
            seen_s = await self._seen_elsewhere(worker)
            if seen_s is not None and now_s - seen_s <= self.cfg.heartbeat_timeout_s:
                self.registry.touch(worker, self.registry.endpoint_of(worker), None, seen_s)
                continue
            await self._reclaim(worker, self.registry.held(worker), "heartbeat")
            self.registry.mark_lost(worker, now_s)
            await self.store.set_draining(worker, False)
        changed, removed = self.registry.dirty(now_s)
        if changed or removed:
            await self.store.save_workers(changed, removed)
        if now_s - self._mirrored_s >= 5.0:  # workers by state for the Ray dashboard
            self._mirrored_s = now_s
            self.ray_metrics.set_gauge("ripple_workers", worker_state_counts(self.registry.views()))

    async def _seen_elsewhere(self, worker_id: str) -> float | None:
        """Last sign of life another queue instance recorded (during an upgrade two clusters may share the
        store): a worker that pings the other instance is alive."""
        raw = await self.store.load_worker(worker_id)
        if raw is None:
            return None
        seen_ms = json.loads(raw).get("lastSeenAt")
        return seen_ms / 1000 if seen_ms else None

    # Endpoints ----------------------------------------------------------------------------------

    async def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an endpoint from its JSON spec. Raises InvalidInput (422) or Conflict (409)."""
        await self._boot()
        try:
            spec = EndpointSpec.model_validate(body)
        except ValidationError as exc:
            raise InvalidInput("invalid endpoint", _errors(exc)) from None
        if spec.name in self.endpoints:
            raise Conflict(f"endpoint {spec.name!r} already exists", {"name": spec.name})
        await self.store.put_endpoint(spec.name, spec.model_dump_json())
        self.endpoints[spec.name] = spec
        return spec.wire()

    async def update_endpoint(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a partial update; the result is validated as a whole."""
        spec = await self._endpoint(name)
        try:
            updated = EndpointPatch.model_validate(body).apply(spec)
        except ValidationError as exc:
            raise InvalidInput("invalid endpoint update", _errors(exc)) from None
        await self.store.put_endpoint(name, updated.model_dump_json())
        self.endpoints[name] = updated
        return updated.wire()

    async def delete_endpoint(self, name: str) -> dict[str, Any]:
        """Delete an endpoint with no job in progress; its queued jobs are cancelled."""
        await self._endpoint(name)
        running = (await self.store.counts(name)).get("in_progress", 0)
        if running:
            raise Conflict(
                f"endpoint {name!r} has {running} jobs in progress; drain it first", {"inProgress": running}
            )
        removed = await self._purge(name)
        await self.store.delete_endpoint(name)
        self.endpoints.pop(name, None)
        return {"name": name, "deleted": True, "cancelledJobs": removed}

    async def get_endpoint(self, name: str) -> dict[str, Any]:
        return (await self._endpoint(name)).wire()

    async def list_endpoints(self) -> list[dict[str, Any]]:
        await self._boot()
        return [self.endpoints[n].wire() for n in sorted(self.endpoints)]

    async def endpoint_specs(self) -> dict[str, EndpointSpec]:
        """Every endpoint spec (for pools and the autoscaler, inside the cluster)."""
        await self._boot()
        return dict(self.endpoints)

    async def _endpoint(self, name: str) -> EndpointSpec:
        await self._boot()
        spec = self.endpoints.get(name)
        if spec is None:
            raise NotFound(f"endpoint {name!r} not found", {"endpoint": name})
        return spec

    # Client API ---------------------------------------------------------------------------------

    async def submit(
        self, endpoint: str, requests: Sequence[dict[str, Any]], request_id: str | None = None
    ) -> list[str]:
        """Accept jobs (all or nothing) and return their ids; durable in Redis before this returns.

        ``request_id`` (the HTTP request's ``X-Request-ID``) is carried by this call's log lines."""
        logs.bind(request_id=request_id, endpoint=endpoint)
        spec = await self._endpoint(endpoint)
        jobs = []
        for raw in requests:
            req = RunRequest.model_validate(raw)
            policy = req.policy
            jobs.append(
                NewJob(
                    id=new_job_id(),
                    endpoint=endpoint,
                    input_json=json.dumps(req.input, separators=(",", ":")),
                    execution_timeout_ms=(policy and policy.execution_timeout) or spec.execution_timeout,
                    ttl_ms=(policy and policy.ttl) or spec.ttl,
                    max_retries=spec.max_retries,
                    low_priority=bool(policy and policy.low_priority),
                    webhook=req.webhook,
                )
            )
        await self.store.submit(endpoint, jobs, spec.max_queue_size, _now_ms())
        self.metrics.submitted.labels(endpoint).inc(len(jobs))
        log.debug("accepted %d jobs", len(jobs), extra={"job_id": jobs[0].id if len(jobs) == 1 else None})
        self.last_arrival_s[endpoint] = time.time()
        if self.takers.wake(endpoint, len(jobs)) == 0:
            self._notify_autoscaler(endpoint)
        return [j.id for j in jobs]

    def _notify_autoscaler(self, endpoint: str) -> None:
        """Work arrived that no worker is waiting for: let the autoscaler tick now (at most every 50 ms)."""
        now = time.monotonic()
        if now - self._notified_s.get(endpoint, 0.0) < 0.05:
            return
        self._notified_s[endpoint] = now
        try:
            from orchestrator.names import AUTOSCALER_NAME, get_actor

            get_actor(AUTOSCALER_NAME, self.namespace).notify.remote(endpoint)
        except Exception:  # no autoscaler (yet): its interval tick will see the work
            log.debug("autoscaler not notified", exc_info=True)

    async def runsync(
        self, endpoint: str, request: dict[str, Any], wait_s: float | None, request_id: str | None = None
    ) -> dict[str, Any]:
        """Submit one job and hold until it is final or ``wait_s`` passes; return its status object."""
        (job_id,) = await self.submit(endpoint, [request], request_id)
        return await self.wait_final(endpoint, job_id, wait_s)

    async def wait_final(self, endpoint: str, job_id: str, wait_s: float | None) -> dict[str, Any]:
        """The job's status object once final, or as it is when ``wait_s`` runs out."""
        wait = self.cfg.runsync_wait_s if wait_s is None else max(0.0, min(wait_s, 300.0))
        deadline = time.monotonic() + wait
        while True:
            version = self.finals.version(job_id)
            job = await self._job(endpoint, job_id)
            remaining = deadline - time.monotonic()
            if job.status in RETRYABLE | {S.COMPLETED} or remaining <= 0:
                return job.status_object(_now_ms())
            await self.finals.wait(job_id, remaining, version)

    async def status(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return (await self._job(endpoint, job_id)).status_object(_now_ms())

    async def statuses(self, job_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Status objects of many jobs in one store round trip (None for unknown ids)."""
        await self._boot()
        now_ms = _now_ms()
        return [j.status_object(now_ms) if j else None for j in await self.store.get_many(job_ids)]

    async def stream(self, endpoint: str, job_id: str) -> dict[str, Any]:
        """New stream chunks since the last call, RunPod style; always includes ``stream``."""
        await self._job(endpoint, job_id)
        status, chunks = await self.store.read_stream(job_id)
        return {"id": job_id, "status": status.value, "stream": [{"output": c} for c in chunks]}

    async def cancel(self, endpoint: str, job_id: str, request_id: str | None = None) -> dict[str, Any]:
        """Cancel a queued or running job; the worker is told to stop, its late result ignored."""
        logs.bind(request_id=request_id, endpoint=endpoint, job_id=job_id)
        job = await self._job(endpoint, job_id)
        moved = await self.store.move(
            job_id, S.CANCELLED.value, _now_ms(), "cancelled", expect_from=(S.IN_QUEUE, S.IN_PROGRESS)
        )
        if not moved.moved:
            if job.status is S.CANCELLED or moved.before is S.CANCELLED:
                return {"id": job_id, "status": S.CANCELLED.value}
            state = moved.before.value if moved.before else job.status.value
            raise Conflict(
                f"job {job_id} is {state} and cannot be cancelled", {"id": job_id, "status": state}
            )
        if moved.before is S.IN_PROGRESS:
            self._release(moved, None)
        self._finalized(job_id, endpoint, S.CANCELLED)
        log.info("job cancelled (was %s)", moved.before.value if moved.before else "?")
        return {"id": job_id, "status": S.CANCELLED.value}

    async def retry(self, endpoint: str, job_id: str, request_id: str | None = None) -> dict[str, Any]:
        """Put a FAILED, TIMED_OUT or CANCELLED job back in the queue."""
        logs.bind(request_id=request_id, endpoint=endpoint, job_id=job_id)
        job = await self._job(endpoint, job_id)
        moved = await self.store.move(
            job_id, S.IN_QUEUE.value, _now_ms(), "retry", expect_from=tuple(RETRYABLE)
        )
        if not moved.moved:
            state = moved.before.value if moved.before else job.status.value
            raise Conflict(
                f"job {job_id} is {state}; only FAILED, TIMED_OUT or CANCELLED jobs can be retried",
                {"id": job_id, "status": state},
            )
        self.metrics.retried.labels(endpoint).inc()
        self.takers.wake(endpoint, 1)
        log.info("job retried (was %s)", moved.before.value if moved.before else "?")
        return {"id": job_id, "status": S.IN_QUEUE.value}

    async def purge(self, endpoint: str, request_id: str | None = None) -> dict[str, Any]:
        logs.bind(request_id=request_id, endpoint=endpoint)
        await self._endpoint(endpoint)
        removed = await self._purge(endpoint)
        log.info("queue purged: %d jobs cancelled", removed)
        return {"removed": removed, "status": "completed"}

    async def _purge(self, endpoint: str) -> int:
        n = await self.store.purge(endpoint, _now_ms())
        if n:
            self.metrics.finished.labels(endpoint, S.CANCELLED.value).inc(n)
        return n

    async def health(self, endpoint: str) -> dict[str, Any]:
        """RunPod's health object: job counts and workers by state."""
        await self._endpoint(endpoint)
        counts = await self.store.counts(endpoint)
        return {
            "jobs": {
                "completed": counts.get("completed", 0),
                "failed": counts.get("failed", 0) + counts.get("timed_out", 0),
                "inProgress": counts.get("in_progress", 0),
                "inQueue": await self.store.depth(endpoint),
                "retried": counts.get("retried", 0),
                "cancelled": counts.get("cancelled", 0),
                "timedOut": counts.get("timed_out", 0),
            },
            "workers": self.registry.health_counts(endpoint),
        }

    async def _job(self, endpoint: str, job_id: str) -> JobView:
        await self._endpoint(endpoint)
        job = await self.store.get(job_id)
        if job is None or job.endpoint != endpoint:
            raise NotFound(f"job {job_id} not found at endpoint {endpoint!r}", {"id": job_id})
        return job

    # Worker protocol ----------------------------------------------------------------------------

    async def take(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int = 1,
        wait_s: float | None = None,
        kind: str = "external",
        request_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Lease up to ``max_jobs`` jobs to the worker, holding up to ``wait_s`` (long-poll) for one."""
        logs.bind(request_id=request_id, endpoint=endpoint, worker_id=worker_id)
        await self._endpoint(endpoint)
        wait = self.cfg.take_wait_s if wait_s is None else max(0.0, min(wait_s, 60.0))
        deadline = time.monotonic() + wait
        while True:
            now_s = time.time()
            self.registry.touch(worker_id, endpoint, kind, now_s)
            version = self.takers.version(endpoint)
            jobs = await self.store.take(endpoint, worker_id, max(1, min(max_jobs, 1000)), int(now_s * 1000))
            if jobs:
                for j in jobs:
                    self.leased[j.id] = (worker_id, endpoint, now_s)
                    self.registry.hold(worker_id, endpoint, j.id, now_s)
                return [j.wire() for j in jobs]
            remaining = deadline - time.monotonic()
            if self.registry.is_draining(worker_id) or remaining <= 0:
                return []
            if not await self.takers.wait(endpoint, remaining, version):
                return []

    async def done(
        self,
        endpoint: str,
        worker_id: str,
        job_id: str,
        body: Any,
        is_stream: bool = False,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """A worker's result or progress update for one job (idempotent: the first final result wins)."""
        logs.bind(request_id=request_id, endpoint=endpoint, job_id=job_id, worker_id=worker_id)
        return (await self.done_many(endpoint, worker_id, [(job_id, body)], is_stream))[0]

    async def done_many(
        self, endpoint: str, worker_id: str, results: Sequence[tuple[str, Any]], is_stream: bool = False
    ) -> list[dict[str, Any]]:
        """Results of several jobs from one worker in one store round trip."""
        await self._endpoint(endpoint)
        now_ms = _now_ms()
        self.registry.touch(worker_id, endpoint, None, now_ms / 1000)
        replies: dict[str, dict[str, Any]] = {}
        items: list[FinishItem] = []
        for job_id, body in results:
            res = parse_worker_result(body)
            if res.kind == "progress":
                ok = await self.store.progress(job_id, worker_id, json.dumps(res.output))
                replies[job_id] = {"id": job_id, "accepted": ok, "progress": True}
                continue
            status = S.COMPLETED if res.kind == "completed" else S.FAILED
            out = "" if res.output is None else json.dumps(res.output, separators=(",", ":"))
            items.append(FinishItem(job_id, worker_id, status, out, res.error or "", is_stream))
        for outcome in await self.store.finish(items, now_ms):
            replies[outcome.job_id] = self._on_finish(outcome, worker_id)
        return [replies[job_id] for job_id, _ in results]

    def _on_finish(self, o: FinishOutcome, worker_id: str) -> dict[str, Any]:
        if o.applied and o.status is not None:
            self.leased.pop(o.job_id, None)
            self.registry.release(worker_id, o.job_id)
            if o.queue_ms is not None:
                self.metrics.queue_time.labels(o.endpoint).observe(o.queue_ms / 1000)
            if o.execution_ms is not None:
                self.metrics.execution_time.labels(o.endpoint).observe(o.execution_ms / 1000)
            self._finalized(o.job_id, o.endpoint, o.status, webhook=o.webhook)
            return {"id": o.job_id, "accepted": True, "status": o.status.value}
        if o.status is None:
            raise NotFound(f"job {o.job_id} not found", {"id": o.job_id})
        self.metrics.results_dropped.labels(o.endpoint, o.drop_reason or "not_held").inc()
        return {"id": o.job_id, "accepted": False, "status": o.status.value, "reason": o.drop_reason}

    async def stream_push(
        self, endpoint: str, worker_id: str, job_id: str, outputs: Sequence[Any]
    ) -> dict[str, Any]:
        """Append stream chunks; refused (not an error) when the worker no longer holds the job."""
        await self._endpoint(endpoint)
        ok = await self.store.push_chunks(job_id, worker_id, [json.dumps(o) for o in outputs])
        if not ok:
            self.metrics.results_dropped.labels(endpoint, "stream_not_held").inc()
        return {"id": job_id, "accepted": ok}

    async def ping(
        self,
        endpoint: str,
        worker_id: str,
        job_ids: Sequence[str],
        kind: str = "external",
        state: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> list[str]:
        """Heartbeat with the jobs the worker holds; returns the ids it must stop.

        A reported job the worker no longer holds (cancelled, timed out, re-leased) is put on its stop
        channel again; a job leased to it that it stops reporting for ``lease_grace_s`` is taken back.
        """
        logs.bind(request_id=request_id, endpoint=endpoint, worker_id=worker_id)
        await self._endpoint(endpoint)
        now_s = time.time()
        self.registry.touch(worker_id, endpoint, kind, now_s, state)
        reported = set(job_ids)
        if reported:
            for jid, (status, holder) in zip(
                reported, await self.store.get_fields(list(reported)), strict=False
            ):
                if status != S.IN_PROGRESS.value or holder != worker_id:
                    self.stops[worker_id].add(jid)
        forgotten = [
            jid
            for jid in self.registry.held(worker_id)
            if jid not in reported
            and now_s - self.leased.get(jid, ("", "", now_s))[2] > self.cfg.lease_grace_s
        ]
        if forgotten and kind == "external":
            await self._reclaim(worker_id, forgotten, "not_reported")
        if self.stops.get(worker_id):
            self.stoppers.wake(worker_id)
        return sorted(self.stops.get(worker_id, ()))

    async def heartbeat(
        self, endpoint: str, worker_id: str, job_ids: Sequence[str], state: dict[str, Any]
    ) -> dict[str, Any]:
        """A Ray replica's heartbeat: its held jobs and lifecycle state in; jobs to stop and whether it
        must drain out (asked through the API or the store) back."""
        stop = await self.ping(endpoint, worker_id, job_ids, "ray", state)
        self.stops.pop(worker_id, None)
        return {"stop": stop, "drain": self.registry.is_draining(worker_id)}

    async def report_workers(self, endpoint: str, records: Sequence[dict[str, Any]]) -> None:
        """A pool vouches for replicas that cannot heartbeat yet (starting, waiting for placement) or that
        have stopped."""
        await self._endpoint(endpoint)
        now_s = time.time()
        for rec in records:
            wid = str(rec["workerId"])
            if rec.get("state") == "stopped":
                await self.store.set_draining(wid, False)
                if self.registry.exists(wid):
                    self.registry.touch(wid, endpoint, "ray", now_s, rec)
                    self.registry.mark_lost(wid, now_s)
            else:
                self.registry.touch(wid, endpoint, "ray", now_s, rec)

    async def stop_poll(self, endpoint: str, worker_id: str, wait_s: float | None = None) -> list[str]:
        """Long-poll for jobs the worker must stop; returns (and clears) them, or [] at the timeout."""
        await self._endpoint(endpoint)
        wait = self.cfg.stop_wait_s if wait_s is None else max(0.0, min(wait_s, 60.0))
        version = self.stoppers.version(worker_id)
        if not self.stops.get(worker_id):
            await self.stoppers.wait(worker_id, wait, version)
        return sorted(self.stops.pop(worker_id, set()))

    async def drain_worker(self, worker_id: str) -> dict[str, Any]:
        """Stop handing jobs to a worker; it finishes what it holds. Durable (checked inside ``take``)."""
        await self._boot()
        if not self.registry.exists(worker_id):
            raise NotFound(f"worker {worker_id!r} not found", {"workerId": worker_id})
        await self.store.set_draining(worker_id, True)
        self.registry.drain(worker_id, time.time())
        self.takers.wake(self.registry.endpoint_of(worker_id))
        return self.registry.view(worker_id)

    async def worker_gone(self, worker_id: str, reason: str) -> int:
        """A worker is known dead (its actor died): take its leases back now; returns how many."""
        await self._boot()
        held = self.registry.held(worker_id)
        n = await self._reclaim(worker_id, held, reason)
        self.registry.mark_lost(worker_id, time.time())
        await self.store.set_draining(worker_id, False)
        return n

    async def _reclaim(self, worker_id: str, job_ids: Sequence[str], reason: str) -> int:
        n = 0
        for job_id in list(job_ids):
            moved = await self.store.move(
                job_id,
                REQUEUE_OR_FAIL,
                _now_ms(),
                f"lease lost: {reason}",
                expect_from=(S.IN_PROGRESS,),
                expect_worker=worker_id,
                error=f"worker {worker_id} lost ({reason}) and no retries left",
            )
            self.leased.pop(job_id, None)
            self.registry.release(worker_id, job_id)
            if moved.moved and moved.after is not None:
                n += 1
                self.metrics.leases_lost.labels(moved.endpoint, lease_reason(reason)).inc()
                log.info("lease lost: %s", reason, extra={"job_id": job_id, "worker_id": worker_id})
                if moved.after is S.IN_QUEUE:
                    self.takers.wake(moved.endpoint, 1)
                else:
                    self._finalized(job_id, moved.endpoint, moved.after)
        return n

    def _release(self, moved: Moved, stop_reason: str | None) -> None:
        self.leased.pop(moved.job_id, None)
        if moved.worker:
            self.registry.release(moved.worker, moved.job_id)
            self.stops[moved.worker].add(moved.job_id)
            self.stoppers.wake(moved.worker)
        if stop_reason:
            self.metrics.leases_lost.labels(moved.endpoint, stop_reason).inc()

    def _finalized(self, job_id: str, endpoint: str, status: JobStatus, webhook: bool = True) -> None:
        """A job became final: count it, wake its waiters, and (when it may have one) deliver its webhook
        now; the webhook loop's own poll catches any kick skipped."""
        self.metrics.finished.labels(endpoint, status.value).inc()
        self.finals.wake(job_id)
        if webhook:
            self.webhooks.kick()

    # Management ---------------------------------------------------------------------------------

    async def list_jobs(
        self, endpoint: str | None, status: str | None, limit: int, cursor: int | None
    ) -> dict[str, Any]:
        """Jobs newest first, filtered; ``cursor`` is the creation time (ms) to continue below."""
        await self._boot()
        out: list[dict[str, Any]] = []
        before = cursor
        now_ms = _now_ms()
        while len(out) < limit:
            ids = await self.store.list_jobs(500, before)
            if not ids:
                before = None
                break
            for job in await self.store.get_many(ids):
                if job is None:
                    continue
                before = job.created_ms
                if (endpoint is None or job.endpoint == endpoint) and (
                    status is None or job.status.value == status
                ):
                    out.append(job.detail(now_ms))
                    if len(out) >= limit:
                        break
            if len(ids) < 500:
                if len(out) < limit:
                    before = None
                break
        return {"jobs": out, "nextCursor": before}

    async def get_job(self, job_id: str) -> dict[str, Any]:
        await self._boot()
        job = await self.store.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found", {"id": job_id})
        return job.detail(_now_ms())

    async def list_workers(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        await self._boot()
        if endpoint is not None:
            await self._endpoint(endpoint)
        return self.registry.views(endpoint)

    async def stats(self) -> dict[str, Any]:
        """Per-endpoint queue state for the autoscaler and ``ripple status``."""
        await self._boot()
        now_ms = _now_ms()
        out: dict[str, Any] = {}
        for ep in self.endpoints:
            oldest = await self.store.oldest_queued_ms(ep)
            counts = await self.store.counts(ep)
            out[ep] = {
                "queued": await self.store.depth(ep),
                "running": counts.get("in_progress", 0),
                "oldestQueuedAgeS": (now_ms - oldest) / 1000 if oldest else None,
                "waitingTakers": self.takers.count(ep),
                "lastArrivalS": self.last_arrival_s.get(ep),
            }
        return out

    async def metrics_text(self) -> bytes:
        """Prometheus exposition of the queue's metrics, state gauges refreshed now."""
        stats = await self.stats()
        m = self.metrics
        m.set_state(
            "ripple_queue_depth",
            "Jobs waiting in the queue.",
            ("endpoint",),
            {(ep,): s["queued"] for ep, s in stats.items()},
        )
        m.set_state(
            "ripple_jobs_in_progress",
            "Jobs leased to workers.",
            ("endpoint",),
            {(ep,): s["running"] for ep, s in stats.items()},
        )
        m.set_state(
            "ripple_queue_oldest_age_seconds",
            "Age of the oldest queued job.",
            ("endpoint",),
            {(ep,): s["oldestQueuedAgeS"] or 0.0 for ep, s in stats.items()},
        )
        m.set_gauge("ripple_workers", worker_state_counts(self.registry.views()))
        return self.metrics.render()

    async def publish_metrics(self, payload: dict[str, Any]) -> int:
        """Samples measured elsewhere (the autoscaler, once per tick: replicas, GPUs, decisions, cold
        starts), kept in this registry so ``/metrics`` stays one actor call. Returns samples applied."""
        return self.metrics.apply_published(payload)

    async def ready(self) -> dict[str, Any]:
        """Readiness: the store answers and recovery is done."""
        await self._boot()
        await self.store.ping()
        return {"store": "ok", "recovery": self.recovery}
