"""The queue's logic: endpoints, submission, leases, results, long-polls, cancellation, sweeps, listings.

:class:`Dispatcher` is everything the JobQueue actor (:mod:`actors.job_queue`) does, without Ray: it is
given a :class:`orchestrator.store.protocol.JobStore` (Redis in production, :class:`orchestrator.store.
memory.MemoryStore` in unit tests), a :class:`~orchestrator.core.dispatch_ports.Clock` and narrow notifiers
(autoscaler, metrics, webhooks). Every job write goes through the store before a method returns, so a new
dispatcher on the same store resumes: queued jobs stay queued, leases of workers that never come back are
reclaimed after the heartbeat timeout, finished jobs keep their results.

Bodies arrive validated (:class:`RunRequest`, :class:`EndpointSpec`, :class:`EndpointPatch`): the HTTP
edge and the in-cluster client validate once. Errors are :mod:`orchestrator.core.errors` (NotFound 404,
Conflict 409, InvalidInput 422, QueueFull 429). The worker protocol lives in
:mod:`orchestrator.core.dispatch_workers`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from orchestrator import logs
from orchestrator.core.dispatch_versions import VersionDispatch
from orchestrator.core.endpoint_problem import POOL_ERROR_TTL_S
from orchestrator.core.errors import Conflict, NotFound, invalid
from orchestrator.core.jobs import RETRYABLE, JobCursor, JobStatus, JobView
from orchestrator.core.models import EndpointPatch, EndpointSpec, NewJob, RunRequest, new_job_id
from orchestrator.core.replica_start import NO_SETUP
from orchestrator.core.wait_reason import (
    EndpointFacts,
    JobPlace,
    StartFailure,
    autoscaler_facts,
    facts_are_fresh,
    wait_reason,
)
from orchestrator.core.workers import full_by_stopped_code

log = logging.getLogger("ripple.queue")
S = JobStatus
NOTIFY_EVERY_S = 0.05  # at most one autoscaler wake-up per endpoint per 50 ms
LIST_BATCH = 500
FINAL_RECHECK_S = 1.0  # wait_final reads the store at least this often


def new_job(endpoint: str, spec: EndpointSpec, req: RunRequest) -> NewJob:
    """A new job of ``endpoint`` for ``req``: a fresh id, the request's policy over the endpoint's defaults.
    Whoever writes it (``store.submit``, IN_QUEUE, atomic) has accepted it durably."""
    policy = req.policy
    return NewJob(
        id=new_job_id(),
        endpoint=endpoint,
        input_json=json.dumps(req.input, separators=(",", ":")),
        execution_timeout_ms=(policy and policy.execution_timeout) or spec.execution_timeout,
        ttl_ms=(policy and policy.ttl) or spec.ttl,
        max_retries=spec.max_retries,
        low_priority=bool(policy and policy.low_priority),
        webhook=req.webhook,
    )


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as the 422 detail: ``loc`` (the field's path), ``msg`` and ``type``."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


class Dispatcher(VersionDispatch):
    """Dispatch for every endpoint (see the module docstring). Single event loop; not thread-safe."""

    # Endpoints ------------------------------------------------------------------------------------

    async def create_endpoint(self, spec: EndpointSpec) -> dict[str, Any]:
        """Create an endpoint at version 1 (a ``version`` given on input is ignored); returns its wire
        form. Raises Conflict (409) when the name is taken."""
        await self.recover()
        if spec.name in self.endpoints:
            raise Conflict(f"endpoint {spec.name!r} already exists", {"name": spec.name})
        async with self.code_lock:
            self._forget_versions(spec.name)
            await self.store.delete_endpoint(spec.name)  # versions left by a crash between writes
            spec = await self._versioned(None, spec)
            await self.store.put_endpoint(spec.name, spec.model_dump_json())
            self.endpoints[spec.name] = spec
        if spec.handler is not None:  # managed by the autoscaler: its pool starts now, not at the first job
            self.autoscaler.work_arrived(spec.name)
        return await self.get_endpoint(spec.name)

    async def update_endpoint(self, name: str, patch: EndpointPatch) -> dict[str, Any]:
        """Apply a partial update; the patched spec is validated as a whole (InvalidInput 422 naming the
        field when it is not valid). A change of a runtime field creates a version (``version`` then
        names it); scaling fields apply in place. Returns the endpoint as :meth:`get_endpoint` does.
        Raises NotFound."""
        spec = await self._endpoint(name)
        try:
            updated = patch.apply(spec)
        except ValidationError as exc:
            raise invalid("invalid endpoint update", validation_errors(exc)) from None
        async with self.code_lock:
            await self._put_spec(spec, updated)
            await self._prune_after_change()
        return await self.get_endpoint(name)

    async def _put_spec(self, spec: EndpointSpec, updated: EndpointSpec) -> EndpointSpec:
        await self._versions(spec.name)  # an endpoint stored before versions gets its version 1 first
        spec = self.endpoints[spec.name]
        updated = await self._versioned(spec, updated)
        await self.store.put_endpoint(spec.name, updated.model_dump_json())
        self.endpoints[spec.name] = updated
        self.start_failures.pop(spec.name, None)  # a changed spec may load: its replicas' failures are past
        return updated

    async def rollback(self, name: str, to: int | None = None) -> dict[str, Any]:
        """Create a new version whose runtime fields are version ``to``'s (default: the previous good one:
        the active version when the newest is failed or rolling out, else the one active before it).
        Returns ``{"endpoint", "version", "rolledBackTo"}``. Raises NotFound, Conflict (no earlier
        version, the endpoint already runs the target's fields, or the target's code package was
        deleted)."""
        spec = await self._endpoint(name)
        async with self.code_lock:
            after, target = await self.rollback_spec(name, to)
            updated = await self._put_spec(spec, after)
            await self._prune_after_change()
        log.info("endpoint %s rolled back to version %d as version %d", name, target.version, updated.version)
        return {
            "endpoint": await self.get_endpoint(name),
            "version": updated.version,
            "rolledBackTo": target.version,
        }

    async def delete_endpoint(self, name: str) -> dict[str, Any]:
        """Delete an endpoint with no job in progress (else Conflict 409); its queued jobs are cancelled."""
        await self._endpoint(name)
        running = (await self.store.counts(name)).get("in_progress", 0)
        if running:
            jobs = "1 job" if running == 1 else f"{running} jobs"
            raise Conflict(
                f"endpoint {name!r} has {jobs} in progress: set maxReplicas to 0 (`ripple endpoint update "
                f"{name} --max 0`) so that no other job starts, let them finish (or cancel them), then "
                "delete it; its queued jobs are cancelled with it",
                {"inProgress": running},
            )
        removed = await self._purge(name)
        async with self.code_lock:
            await self.store.delete_endpoint(name)
            self.endpoints.pop(name, None)
            self._forget_versions(name)
            await self._prune_after_change()  # its code, unless another endpoint runs it
        self.start_failures.pop(name, None)
        self.webhooks.forget(name)
        return {"name": name, "deleted": True, "cancelledJobs": removed}

    async def get_endpoint(self, name: str) -> dict[str, Any]:
        """The endpoint's wire form plus ``problem``: why its pool cannot serve (None when it can; see
        :mod:`orchestrator.core.endpoint_problem`). Raises NotFound."""
        await self._endpoint(name)
        await self._versions(name)
        return {**self.endpoints[name].wire(), "problem": await self.problem(name)}

    async def list_endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint's wire form with its ``problem``, by name."""
        await self.recover()
        return [await self.get_endpoint(n) for n in sorted(self.endpoints)]

    async def endpoint_specs(self) -> dict[str, EndpointSpec]:
        """Every endpoint spec (for pools and the autoscaler, inside the cluster)."""
        await self.recover()
        return dict(self.endpoints)

    # Client API -----------------------------------------------------------------------------------

    async def submit(
        self, endpoint: str, requests: Sequence[RunRequest], request_id: str | None = None
    ) -> list[str]:
        """Accept jobs (all or nothing) and return their ids; durable in the store before this returns.

        A request's ``policy`` (executionTimeout, ttl, lowPriority) overrides the endpoint's defaults.
        Raises NotFound, QueueFull (429) past ``maxQueueSize``. ``request_id`` (the HTTP request's
        ``X-Request-ID``) is carried by this call's log lines. Wakes one waiting taker per job, or the
        autoscaler when none waits."""
        logs.bind(request_id=request_id, endpoint=endpoint)
        spec = await self._endpoint(endpoint)
        jobs = [new_job(endpoint, spec, req) for req in requests]
        await self.store.submit(endpoint, jobs, spec.max_queue_size, self.now_ms())
        self._accepted(endpoint, [j.id for j in jobs])
        return [j.id for j in jobs]

    async def submitted(self, endpoint: str, job_ids: Sequence[str], request_id: str | None = None) -> None:
        """Jobs a caller wrote to the store itself (the in-cluster client; durable before this is sent, see
        :func:`new_job`): count them and wake a taker per job, or the autoscaler, as :meth:`submit` does.
        Should this never arrive, the jobs wait for the next take (a taker's long-poll ends within
        ``take_wait_s``) and the autoscaler's next tick; nothing is lost. Jobs of an endpoint deleted
        meanwhile (written after its queue was purged) are cancelled, as the purge would have."""
        logs.bind(request_id=request_id, endpoint=endpoint)
        await self.recover()
        if endpoint in self.endpoints:
            self._accepted(endpoint, job_ids)
            return
        for job_id in job_ids:
            moved = await self.store.move(
                job_id, S.CANCELLED.value, self.now_ms(), "endpoint deleted", expect_from=(S.IN_QUEUE,)
            )
            if moved.moved:
                self._finalized(job_id, endpoint, S.CANCELLED)

    def _accepted(self, endpoint: str, job_ids: Sequence[str]) -> None:
        self.metrics.submitted(endpoint, len(job_ids))
        one = job_ids[0] if len(job_ids) == 1 else None
        log.debug("accepted %d jobs", len(job_ids), extra={"job_id": one})
        self.last_arrival_s[endpoint] = self.clock.now_s()
        if self.takers.wake(endpoint, len(job_ids)) == 0:
            self._notify_autoscaler(endpoint)

    def _notify_autoscaler(self, endpoint: str) -> None:
        """Work arrived that no worker is waiting for here: let the autoscaler tick now, unless a worker
        with a free slot takes it from the store (checked at most once per ``NOTIFY_EVERY_S``, like the
        wake-up itself: a tick costs the autoscaler a round of calls to its pools)."""
        now = self.clock.monotonic_s()
        if now - self._notified_s.get(endpoint, 0.0) < NOTIFY_EVERY_S:
            return
        self._notified_s[endpoint] = now
        if not self.registry.has_free_worker(endpoint):
            self.autoscaler.work_arrived(endpoint)

    async def runsync(
        self, endpoint: str, request: RunRequest, wait_s: float | None, request_id: str | None = None
    ) -> dict[str, Any]:
        """Submit one job and hold until it is final or ``wait_s`` passes; return its status object."""
        (job_id,) = await self.submit(endpoint, [request], request_id)
        return await self.wait_final(endpoint, job_id, wait_s)

    async def wait_final(self, endpoint: str, job_id: str, wait_s: float | None) -> dict[str, Any]:
        """The job's status object once final (COMPLETED, FAILED, TIMED_OUT, CANCELLED), or as it is when
        ``wait_s`` (default ``runsync_wait_s``, at most 300) runs out. Raises NotFound."""
        wait = self.cfg.runsync_wait_s if wait_s is None else max(0.0, min(wait_s, 300.0))
        deadline = self.clock.monotonic_s() + wait
        if wait > 0:  # a replica finishing the job tells this queue at once, not with its next batch
            await self.store.watch_final(job_id, at_queue=True)
        while True:
            version = self.finals.version(job_id)
            job = await self._job(endpoint, job_id)
            remaining = deadline - self.clock.monotonic_s()
            if job.status in RETRYABLE | {S.COMPLETED} or remaining <= 0:
                return job.status_object(self.now_ms(), await self._wait_reason(job))
            # At most a slice at a time: a job finished in the store by its worker is woken here by the
            # worker's notification (``finished``); should that be lost, the store is read again.
            await self.finals.wait(job_id, min(remaining, FINAL_RECHECK_S), version)

    async def status(self, endpoint: str, job_id: str, read: JobView | None = None) -> dict[str, Any]:
        """RunPod's status object of one job of ``endpoint`` (an IN_QUEUE job's with its ``waitReason``).
        ``read``: the job as its caller just read it from the store (the API replica's poll of a queued
        job), not read again. Raises NotFound."""
        if read is None or read.id != job_id or read.endpoint != endpoint:
            read = await self._job(endpoint, job_id, status_only=True)
        else:
            await self._endpoint(endpoint)
        return read.status_object(self.now_ms(), await self._wait_reason(read))

    async def statuses(self, job_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Status objects of many jobs (None for unknown ids), a queued job's with its ``waitReason``; two
        store round trips whatever their number (the jobs, then the queued ones' places)."""
        await self.recover()
        jobs = await self.store.get_statuses(job_ids)
        reasons = await self._wait_reasons([j for j in jobs if j is not None])
        now_ms = self.now_ms()
        return [j.status_object(now_ms, reasons.get(j.id)) if j else None for j in jobs]

    async def stream(self, endpoint: str, job_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        """New stream chunks since the last call, RunPod style; always includes ``stream``.

        ``wait_s`` > 0: when there is no new chunk and the job is not final, hold until a chunk arrives or
        the job ends (woken, not polled), at most ``wait_s`` (capped at 60 s)."""
        await self._job(endpoint, job_id)
        version = self.chunks.version(job_id)
        status, chunks = await self.store.read_stream(job_id)
        held = not chunks and wait_s > 0 and status in (S.IN_QUEUE, S.IN_PROGRESS)
        if held and await self.chunks.wait(job_id, min(wait_s, 60.0), version):
            status, chunks = await self.store.read_stream(job_id)
        return {"id": job_id, "status": status.value, "stream": [{"output": c} for c in chunks]}

    async def cancel(self, endpoint: str, job_id: str, request_id: str | None = None) -> dict[str, Any]:
        """Cancel a queued or running job; its holder is told to stop (stop channel), its late result
        ignored. Cancelling a cancelled job is a no-op; any other final job is a Conflict (409)."""
        logs.bind(request_id=request_id, endpoint=endpoint, job_id=job_id)
        job = await self._job(endpoint, job_id)
        moved = await self.store.move(
            job_id, S.CANCELLED.value, self.now_ms(), "cancelled", expect_from=(S.IN_QUEUE, S.IN_PROGRESS)
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
        """Put a FAILED, TIMED_OUT or CANCELLED job back in the queue (else Conflict 409)."""
        logs.bind(request_id=request_id, endpoint=endpoint, job_id=job_id)
        job = await self._job(endpoint, job_id)
        moved = await self.store.move(
            job_id, S.IN_QUEUE.value, self.now_ms(), "retry", expect_from=tuple(RETRYABLE)
        )
        if not moved.moved:
            state = moved.before.value if moved.before else job.status.value
            raise Conflict(
                f"job {job_id} is {state}; only FAILED, TIMED_OUT or CANCELLED jobs can be retried",
                {"id": job_id, "status": state},
            )
        self.metrics.retried(endpoint)
        self.takers.wake(endpoint, 1)
        log.info("job retried (was %s)", moved.before.value if moved.before else "?")
        return {"id": job_id, "status": S.IN_QUEUE.value}

    async def purge(self, endpoint: str, request_id: str | None = None) -> dict[str, Any]:
        """Cancel every queued job of ``endpoint``; running jobs are untouched."""
        logs.bind(request_id=request_id, endpoint=endpoint)
        await self._endpoint(endpoint)
        removed = await self._purge(endpoint)
        log.info("queue purged: %d jobs cancelled", removed)
        return {"removed": removed, "status": "completed"}

    async def _purge(self, endpoint: str) -> int:
        n = await self.store.purge(endpoint, self.now_ms())
        if n:
            self.metrics.finished(endpoint, S.CANCELLED.value, n)
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

    async def _job(self, endpoint: str, job_id: str, status_only: bool = False) -> JobView:
        """Job ``job_id`` of ``endpoint`` (``status_only``: a status read, without input and history).
        Raises NotFound for an unknown endpoint or job, or another endpoint's."""
        await self._endpoint(endpoint)
        job = (await self.store.get_statuses([job_id]))[0] if status_only else await self.store.get(job_id)
        if job is None or job.endpoint != endpoint:
            raise NotFound(
                f"job {job_id} not found at endpoint {endpoint!r}{self._kept_note()}", {"id": job_id}
            )
        return job

    def _kept_note(self) -> str:
        """Why a job that ran may be unknown now: finished jobs are deleted once kept long enough."""
        keep_s = self.cfg.keep_results_s
        return (
            f" (a finished job is deleted {keep_s:g} s after it ended: RIPPLE_KEEP_RESULTS_S)"
            if keep_s
            else ""
        )

    # Why a queued job waits ------------------------------------------------------------------------

    def absorb_wait_facts(self, facts: dict[str, Any]) -> None:
        """The autoscaler's facts of its latest tick (see :func:`orchestrator.control_metrics.wait_facts`):
        kept with the time they arrived; trusted for a few of its intervals only."""
        self.published_facts = (self.clock.now_s(), dict(facts))

    def endpoint_facts(self, spec: EndpointSpec) -> EndpointFacts:
        """What the queue knows of an endpoint for :func:`~orchestrator.core.wait_reason.wait_reason`: its
        spec, its live workers (registry), its replicas' start failures, the autoscaler's fresh facts."""
        counts = {"starting": 0, "idle": 0, "busy": 0}
        pending = setting_up = outside = held_by_stopped = 0
        setup = NO_SETUP  # what a replica being set up does, as its pool says (its version's runtime env)
        for v in self.registry.views(spec.name):
            state = v.get("state")
            if state in ("idle", "busy") and full_by_stopped_code(v):
                state = "busy"  # idle as far as jobs go, but a stopped job's code still holds its slot
                held_by_stopped += 1
            if state in counts:
                counts[state] += 1
                if state == "starting" and v.get("pendingPlacement"):
                    pending += 1
                elif state == "starting" and v.get("settingUp"):
                    setting_up += 1
                    setup = str(v.get("setup") or setup)
                if v.get("kind") == "external" and state != "starting":
                    outside += 1
        scaler = None
        if self.published_facts is not None:
            at_s, published = self.published_facts
            interval_s = float(published.get("intervalS") or 1.0)
            if facts_are_fresh(self.clock.now_s() - at_s, interval_s):
                scaler = autoscaler_facts(published, spec.name)
        return EndpointFacts(
            has_handler=spec.handler is not None,
            gpus=spec.gpus,
            gpu_types=tuple(spec.gpu_types) if spec.gpu_types else None,
            max_replicas=spec.max_replicas,
            starting=counts["starting"],
            pending_placement=pending,
            setting_up=setting_up,
            setup=setup,
            idle=counts["idle"],
            busy=counts["busy"],
            held_by_stopped=held_by_stopped,
            outside=outside,
            start_failure=self._start_failure(spec.name),
            autoscaler=scaler,
        )

    def _start_failure(self, endpoint: str) -> StartFailure | None:
        """The endpoint's replicas' start failures since the last ready one, else the pool's own error
        (Ray refusing the replicas' options or runtime env) while it is recent."""
        failure = self.start_failures.get(endpoint)
        pool_error = self._pool_errors.get(endpoint)
        if failure is not None or pool_error is None:
            return failure
        recent = self.clock.now_s() - pool_error[1] <= POOL_ERROR_TTL_S
        return StartFailure(pool_error[0], pool=True) if recent else None

    async def _wait_reason(self, job: JobView) -> dict[str, str] | None:
        """``waitReason`` of a queued job (None for any other, or one that left the queue meanwhile)."""
        return (await self._wait_reasons([job])).get(job.id)

    async def _wait_reasons(self, jobs: Sequence[JobView]) -> dict[str, dict[str, str]]:
        """``waitReason`` by job id of the queued ones among ``jobs`` (one store round trip for their places;
        one look at each endpoint's facts); a job that left the queue meanwhile has none."""
        queued = [j for j in jobs if j.status is S.IN_QUEUE and j.endpoint in self.endpoints]
        if not queued:
            return {}
        places = await self.store.queue_positions([(j.endpoint, j.id) for j in queued])
        facts: dict[str, EndpointFacts] = {}
        out: dict[str, dict[str, str]] = {}
        for job, ahead in zip(queued, places, strict=True):
            if ahead is None:
                continue
            if job.endpoint not in facts:
                facts[job.endpoint] = self.endpoint_facts(self.endpoints[job.endpoint])
            out[job.id] = wait_reason(JobPlace(ahead, job.low_priority), facts[job.endpoint]).wire()
        return out

    # Management -----------------------------------------------------------------------------------

    async def list_jobs(
        self, endpoint: str | None, status: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """Jobs newest first, filtered by endpoint and status: ``{"jobs": [...], "nextCursor": text}``;
        ``cursor`` is an earlier page's ``nextCursor`` (:class:`JobCursor`; a bare creation time, ms, lists
        below it), ``nextCursor`` None at the end. Raises InvalidInput for a cursor it did not write."""
        at = None if cursor is None else JobCursor.parse(cursor)
        await self.recover()
        out: list[dict[str, Any]] = []
        now_ms = self.now_ms()
        while len(out) < limit:
            rows = await self.store.list_jobs(LIST_BATCH, at)
            for (job_id, created_ms), job in zip(
                rows, await self.store.get_many([i for i, _ in rows]), strict=True
            ):
                at = JobCursor(created_ms, job_id)
                if job is None:  # deleted since (kept keep_results_s after it ended)
                    continue
                if (endpoint is None or job.endpoint == endpoint) and (
                    status is None or job.status.value == status
                ):
                    out.append(job.detail(now_ms))
                    if len(out) >= limit:
                        break
            if len(rows) < LIST_BATCH and len(out) < limit:
                return {"jobs": out, "nextCursor": None}
        return {"jobs": out, "nextCursor": None if at is None else at.text()}

    async def get_job(self, job_id: str) -> dict[str, Any]:
        """One job's detail (with its history), whatever its endpoint. Raises NotFound."""
        await self.recover()
        job = await self.store.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found{self._kept_note()}", {"id": job_id})
        return job.detail(self.now_ms(), await self._wait_reason(job))

    async def list_workers(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Worker views, all or of one endpoint (NotFound when it does not exist)."""
        await self.recover()
        if endpoint is not None:
            await self._endpoint(endpoint)
        return self.registry.views(endpoint)

    async def stats(self) -> dict[str, Any]:
        """Per-endpoint queue state for the autoscaler and ``ripple status``: ``queued``, ``running``,
        ``oldestQueuedAgeS``, ``waitingTakers``, ``lastArrivalS`` (wall clock), while jobs are queued
        ``waitReason``: why the job at the head of the queue waits, and after webhook deliveries
        ``webhooks``: what became of them lately (:mod:`orchestrator.core.webhook_outcomes`)."""
        await self.recover()
        now_ms = self.now_ms()
        out: dict[str, Any] = {}
        for ep, spec in self.endpoints.items():
            oldest = await self.store.oldest_queued_ms(ep)
            counts = await self.store.counts(ep)
            out[ep] = {
                "queued": await self.store.depth(ep),
                "running": counts.get("in_progress", 0),
                "oldestQueuedAgeS": (now_ms - oldest) / 1000 if oldest else None,
                "waitingTakers": self.takers.count(ep),
                "lastArrivalS": self.last_arrival_s.get(ep),
            }
            if out[ep]["queued"]:
                out[ep]["waitReason"] = wait_reason(JobPlace(0), self.endpoint_facts(spec)).wire()
            if (webhooks := self.webhooks.outcomes(ep, now_ms / 1000)) is not None:
                out[ep]["webhooks"] = webhooks
        return out

    async def ready(self) -> dict[str, Any]:
        """Readiness: the store answers and recovery is done; ``storeMemory``, what the store says of its
        memory (:class:`~orchestrator.store.protocol.StoreMemory`), when it says."""
        await self.recover()
        await self.store.ping()
        memory = await self.store.memory()
        return {
            "store": "ok",
            "recovery": self.recovery,
            **({"storeMemory": memory.wire()} if memory is not None else {}),
        }
