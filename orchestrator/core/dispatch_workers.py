"""The dispatcher's worker side: leases, results, heartbeats, stop channels, sweeps and recovery.

:class:`WorkerDispatch` holds the state every dispatcher operation shares (the store, the worker registry,
the long-poll waiters, the leases in memory) and the worker protocol; :class:`orchestrator.core.dispatch.
Dispatcher` adds endpoints, the client API and management on top. Pure: the clock, the store and the
notifiers are passed in (see :mod:`orchestrator.core.dispatch_ports`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from orchestrator import logs
from orchestrator.core.dispatch_ports import (
    AutoscalerNotifier,
    Clock,
    DispatchMetrics,
    DispatchSettings,
    WebhookKicker,
)
from orchestrator.core.errors import NotFound
from orchestrator.core.job_threads import stop_deadline_ms
from orchestrator.core.jobs import JobStatus, encode_output, parse_worker_result
from orchestrator.core.models import STORED, EndpointSpec
from orchestrator.core.registry import WorkerRegistry
from orchestrator.core.wait_reason import StartFailure
from orchestrator.core.waiters import Waiters
from orchestrator.store.protocol import REQUEUE_OR_FAIL, FinishItem, FinishOutcome, JobStore, Moved

log = logging.getLogger("ripple.queue")
S = JobStatus
SWEEP_BATCH = 1000
MIRROR_EVERY_S = 5.0  # workers-by-state snapshot to the metrics sink
FORGET_EVERY_S = 10.0  # deleted jobs' ids trimmed from the job listing
FORGET_BATCHES = 20  # at most this many SWEEP_BATCH-sized trims a time (2,000 jobs/s kept up with)
GONE_REMEMBERED = 10_000  # dead worker ids remembered to refuse their late takes


def finish_item(
    job_id: str, worker_id: str, body: Any, is_stream: bool, output_json: str | None = None
) -> FinishItem | None:
    """A worker's result body (as ``done`` takes it) as the store's final result; None for a progress
    update (not final). ``output_json``: the body's output already encoded (:func:`encode_output`, by the
    replica that checked it), so that it is not encoded twice."""
    res = parse_worker_result(body)
    if res.kind == "progress":
        return None
    status = S.COMPLETED if res.kind == "completed" else S.FAILED
    out = encode_output(res.output) if output_json is None else output_json
    return FinishItem(job_id, worker_id, status, out, res.error or "", is_stream)


class WorkerDispatch:
    """Shared dispatch state and the worker protocol. Single event loop; not thread-safe.

    Every public method recovers from the store first (once, on first use; see :meth:`recover`).
    """

    def __init__(
        self,
        store: JobStore,
        settings: DispatchSettings,
        clock: Clock,
        *,
        metrics: DispatchMetrics,
        autoscaler: AutoscalerNotifier,
        webhooks: WebhookKicker,
        on_recovered: Callable[[], None] | None = None,
    ) -> None:
        self.store: JobStore = store
        self.cfg = settings
        self.clock = clock
        self.metrics = metrics
        self.autoscaler = autoscaler
        self.webhooks = webhooks
        self._on_recovered = on_recovered
        self.registry = WorkerRegistry(settings.heartbeat_timeout_s)
        self.endpoints: dict[str, EndpointSpec] = {}
        self.leased: dict[str, tuple[str, str, float]] = {}  # job -> (worker, endpoint, leased_at_s)
        # Workers known dead (``worker_gone``), oldest first, at most GONE_REMEMBERED: a take of theirs still
        # waiting here (Ray does not cancel a dead caller's call) must not lease them jobs again.
        self.gone: dict[str, None] = {}
        self.takers: Waiters[str] = Waiters()
        self.stoppers: Waiters[str] = Waiters()
        self.finals: Waiters[str] = Waiters()
        self.chunks: Waiters[str] = Waiters()  # per job: a stream chunk arrived or the job ended
        self.stops: dict[str, set[str]] = defaultdict(set)
        self.recovery: dict[str, Any] = {}
        self.last_arrival_s: dict[str, float] = {}  # endpoint -> wall clock of its latest submission
        self._notified_s: dict[str, float] = {}  # endpoint -> monotonic time the autoscaler was woken
        # Wait-reason facts: replicas failing to start since the last ready one, per endpoint; and the
        # autoscaler's latest published facts with the wall time they arrived (see Dispatcher.wait_facts).
        self.start_failures: dict[str, StartFailure] = {}
        self.published_facts: tuple[float, dict[str, Any]] | None = None
        self._recovered = False
        self._recover_lock = asyncio.Lock()
        self._mirrored_s = 0.0
        self._forgot_s = 0.0

    def now_ms(self) -> int:
        return int(self.clock.now_s() * 1000)

    # Recovery -------------------------------------------------------------------------------------

    async def recover(self) -> dict[str, Any]:
        """Load endpoints, leases, workers and pending webhooks from the store, once; return a summary
        (``seconds``, ``endpoints``, ``queued``, ``leases``, ``webhooksPending``). Calls ``on_recovered``
        (the actor starts its background loops there) after the first recovery."""
        if self._recovered:
            return self.recovery
        async with self._recover_lock:
            if self._recovered:
                return self.recovery
            t0 = self.clock.monotonic_s()
            await self.store.ping()
            await self.store.keep_results(int(self.cfg.keep_results_s * 1000))
            for name, raw in (await self.store.load_endpoints()).items():
                self.endpoints[name] = EndpointSpec.model_validate_json(raw, context={STORED: True})
            now_s = self.clock.now_s()
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
                "seconds": round(self.clock.monotonic_s() - t0, 4),
                "endpoints": len(self.endpoints),
                "queued": sum(queued.values()),
                "leases": len(self.leased),
                "webhooksPending": requeued_hooks,
            }
            log.info("queue recovered %s", self.recovery)
            if self._on_recovered is not None:
                self._on_recovered()
            self._recovered = True
            return self.recovery

    async def _endpoint(self, name: str) -> EndpointSpec:
        """The spec of endpoint ``name``. Raises NotFound (404)."""
        await self.recover()
        spec = self.endpoints.get(name)
        if spec is None:
            raise NotFound(f"endpoint {name!r} not found", {"endpoint": name})
        return spec

    # Worker protocol ------------------------------------------------------------------------------

    async def take(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int = 1,
        wait_s: float | None = None,
        kind: str = "external",
        request_id: str | None = None,
        version: int | None = None,
        call_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Lease up to ``max_jobs`` (1..1000) jobs to the worker, holding up to ``wait_s`` (default
        ``take_wait_s``, at most 60) for one; [] at the timeout or once the worker is draining.
        ``version`` is the endpoint version the worker runs (a Ray replica knows it; an outside worker
        does not): recorded on each job taken, shown as the job's ``version``. ``call_id``: the caller's
        id of this take, the same when it calls again after losing the reply (a Ray replica, through a
        queue restart): the jobs the first call took are answered again instead of more being taken."""
        logs.bind(request_id=request_id, endpoint=endpoint, worker_id=worker_id)
        await self._endpoint(endpoint)
        wait = self.cfg.take_wait_s if wait_s is None else max(0.0, min(wait_s, 60.0))
        deadline = self.clock.monotonic_s() + wait
        while True:
            if worker_id in self.gone:  # died while this take waited: its jobs would wait for a corpse
                return []
            now_s = self.clock.now_s()
            self.registry.touch(worker_id, endpoint, kind, now_s)
            woken = self.takers.version(endpoint)
            jobs = await self.store.take(
                endpoint, worker_id, max(1, min(max_jobs, 1000)), int(now_s * 1000), version, call_id
            )
            if jobs:
                for j in jobs:
                    self.leased[j.id] = (worker_id, endpoint, now_s)
                    self.registry.hold(worker_id, endpoint, j.id, now_s)
                return [j.wire() for j in jobs]
            remaining = deadline - self.clock.monotonic_s()
            if self.registry.is_draining(worker_id) or remaining <= 0:
                return []
            if not await self.takers.wait(endpoint, remaining, woken):
                return []

    def took(self, endpoint: str, worker_id: str, job_ids: Sequence[str]) -> None:
        """Jobs a replica took from the store itself (the same TAKE step :meth:`take` runs): keep the lease
        index and the worker registry as if :meth:`take` had handed them out, so a worker that dies is
        reclaimed at once. Runs to its end without awaiting: a replica's later ``finished`` (sent after
        this, and so started after it) cannot be overtaken. A notification that never arrives costs only
        speed: the replica's next heartbeat reports the jobs it holds (:meth:`ping`)."""
        now_s = self.clock.now_s()
        self.registry.touch(worker_id, endpoint, "ray", now_s)
        for job_id in job_ids:
            self.leased[job_id] = (worker_id, endpoint, now_s)
            self.registry.hold(worker_id, endpoint, job_id, now_s)

    async def redeliver(self, endpoint: str, worker_id: str) -> dict[str, Any]:
        """Every running job the store has leased to a Ray replica whose own take from the store failed
        (:mod:`actors.queue_direct`), input included: one handed to it while it was parked, or taken by a
        step whose reply never reached it, would otherwise wait for its execution timeout. The replica is
        unparked, its inbox emptied and its fence raised in the same step, so nothing reaches it twice from
        the store and no take it sent before takes anything after; it runs those it never received and
        takes with the new fence. ``{"fence": n, "jobs": [job dicts]}``. The lease index and the registry
        follow, as for :meth:`took`."""
        await self._endpoint(endpoint)
        again = await self.store.leased_to(worker_id)
        self.took(endpoint, worker_id, [j.id for j in again.jobs])
        self.metrics.redelivered(endpoint)
        if again.jobs:
            log.warning(
                "delivering %d jobs again to a replica whose take from the store failed",
                len(again.jobs),
                extra={"endpoint": endpoint, "worker_id": worker_id},
            )
        return again.wire()

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
        """Results of several jobs from one worker in one store round trip; one reply per result, in
        order: ``accepted`` and the job's status, or ``reason`` when refused. Raises NotFound for an
        unknown job."""
        await self._endpoint(endpoint)
        now_ms = self.now_ms()
        self.registry.touch(worker_id, endpoint, None, now_ms / 1000)
        replies: dict[str, dict[str, Any]] = {}
        items: list[FinishItem] = []
        for job_id, body in results:
            item = finish_item(job_id, worker_id, body, is_stream)
            if item is None:  # a progress update
                res = parse_worker_result(body)
                ok = await self.store.progress(job_id, worker_id, encode_output(res.output))
                replies[job_id] = {"id": job_id, "accepted": ok, "progress": True}
                continue
            items.append(item)
        for outcome in await self.store.finish(items, now_ms):
            replies[outcome.job_id] = self._on_finish(outcome, worker_id)
        return [replies[job_id] for job_id, _ in results]

    async def finished(self, endpoint: str, worker_id: str, outcomes: Sequence[FinishOutcome]) -> None:
        """Results a worker finished in the store itself (the same FINISH step ``done_many`` runs, so the
        first final result won there): keep this dispatcher's memory as if they had come through
        :meth:`done_many` (lease index, registry, metrics, waiters, webhook kick). Unknown jobs are
        ignored. A notification that never arrives leaves only memory behind: a held job the registry
        still lists is dropped when the worker is reclaimed (its move is refused, the job being final),
        waiters re-read the store at least every second."""
        await self._endpoint(endpoint)
        self.registry.touch(worker_id, endpoint, None, self.clock.now_s())
        for o in outcomes:
            if o.status is not None:
                self._on_finish(o, worker_id)

    def _on_finish(self, o: FinishOutcome, worker_id: str) -> dict[str, Any]:
        if o.applied and o.status is not None:
            self.leased.pop(o.job_id, None)
            self.registry.release(worker_id, o.job_id)
            if o.queue_ms is not None:
                self.metrics.queue_time(o.endpoint, o.queue_ms / 1000)
            if o.execution_ms is not None:
                self.metrics.execution_time(o.endpoint, o.execution_ms / 1000)
            self._finalized(o.job_id, o.endpoint, o.status, webhook=o.webhook)
            return {"id": o.job_id, "accepted": True, "status": o.status.value}
        if o.status is None:
            raise NotFound(f"job {o.job_id} not found", {"id": o.job_id})
        self.metrics.result_dropped(o.endpoint, o.drop_reason or "not_held")
        return {"id": o.job_id, "accepted": False, "status": o.status.value, "reason": o.drop_reason}

    async def stream_push(
        self, endpoint: str, worker_id: str, job_id: str, outputs: Sequence[Any], first: int | None = None
    ) -> dict[str, Any]:
        """Append stream chunks; refused (not an error) when the worker no longer holds the job. ``first``
        (a replica's): the index of the first among its attempt's chunks, so that a push sent again adds
        nothing twice (``JobStore.push_chunks``)."""
        await self._endpoint(endpoint)
        ok = await self.store.push_chunks(job_id, worker_id, [json.dumps(o) for o in outputs], first)
        if ok:
            self.chunks.wake(job_id)
        else:
            self.metrics.result_dropped(endpoint, "stream_not_held")
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
        channel again; a job leased to an outside worker that it stops reporting for ``lease_grace_s`` is
        taken back.
        """
        logs.bind(request_id=request_id, endpoint=endpoint, worker_id=worker_id)
        await self._endpoint(endpoint)
        now_s = self.clock.now_s()
        self.registry.touch(worker_id, endpoint, kind, now_s, state)
        reported = set(job_ids)
        if reported:
            for jid, (status, holder) in zip(
                reported, await self.store.get_fields(list(reported)), strict=False
            ):
                if status != S.IN_PROGRESS.value or holder != worker_id:
                    self.stops[worker_id].add(jid)
                elif kind == "ray" and jid not in self.leased:  # taken from the store, not yet told
                    self.leased[jid] = (worker_id, endpoint, now_s)
                    self.registry.hold(worker_id, endpoint, jid, now_s)
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
        """A Ray replica's heartbeat: its held jobs and lifecycle state in; ``stop`` (jobs to stop), their
        ``stopDeadlines`` (ms: when code still running for one counts as hung, see
        :func:`~orchestrator.core.job_threads.stop_deadline_ms`) and ``drain`` (asked through the API or
        the store) back."""
        stop = await self.ping(endpoint, worker_id, job_ids, "ray", state)
        self.stops.pop(worker_id, None)
        if state.get("state") in ("idle", "busy"):
            self.start_failures.pop(endpoint, None)  # a replica loaded the handler: starts work again
        deadlines: dict[str, int | None] = {}
        for jid, job in zip(stop, await self.store.get_statuses(stop) if stop else [], strict=True):
            deadlines[jid] = stop_deadline_ms(job.started_ms, job.execution_timeout_ms) if job else None
        return {"stop": stop, "stopDeadlines": deadlines, "drain": self.registry.is_draining(worker_id)}

    async def report_workers(self, endpoint: str, records: Sequence[dict[str, Any]]) -> None:
        """A pool vouches for replicas that cannot heartbeat yet (starting, waiting for placement) or that
        have stopped (``state == "stopped"``: marked lost, no longer draining). A stopped replica whose
        ``reason`` says it failed to start counts as a start failure of the endpoint (its ``error`` shows in
        queued jobs' ``waitReason`` until a replica is ready)."""
        await self._endpoint(endpoint)
        now_s = self.clock.now_s()
        for rec in records:
            wid = str(rec["workerId"])
            if rec.get("state") == "stopped" and str(rec.get("reason") or "").startswith("failed to start"):
                prev = self.start_failures.get(endpoint)
                error = str(rec.get("error") or rec.get("reason"))
                self.start_failures[endpoint] = StartFailure(error, (prev.failures if prev else 0) + 1)
            if rec.get("state") == "stopped":
                await self.store.set_draining(wid, False)
                if self.registry.exists(wid):
                    self.registry.touch(wid, endpoint, "ray", now_s, rec)
                    self.registry.mark_lost(wid, now_s)
            else:
                self.registry.touch(wid, endpoint, "ray", now_s, rec)

    async def stop_poll(self, endpoint: str, worker_id: str, wait_s: float | None = None) -> list[str]:
        """Long-poll (default ``stop_wait_s``, at most 60) for jobs the worker must stop; returns (and
        clears) them, or [] at the timeout."""
        await self._endpoint(endpoint)
        wait = self.cfg.stop_wait_s if wait_s is None else max(0.0, min(wait_s, 60.0))
        version = self.stoppers.version(worker_id)
        if not self.stops.get(worker_id):
            await self.stoppers.wait(worker_id, wait, version)
        return sorted(self.stops.pop(worker_id, set()))

    async def drain_worker(self, worker_id: str) -> dict[str, Any]:
        """Stop handing jobs to a worker; it finishes what it holds. Durable (checked inside ``take``).
        Returns the worker's view; raises NotFound."""
        await self.recover()
        if not self.registry.exists(worker_id):
            raise NotFound(f"worker {worker_id!r} not found", {"workerId": worker_id})
        self.registry.drain(worker_id, self.clock.now_s())  # refuses a stopped worker (409) first
        await self.store.set_draining(worker_id, True)
        self.takers.wake(self.registry.endpoint_of(worker_id))
        return self.registry.view(worker_id)

    async def worker_gone(self, worker_id: str, reason: str) -> int:
        """A worker is known dead (its actor died): take its leases back now; returns how many."""
        await self.recover()
        self.gone[worker_id] = None
        while len(self.gone) > GONE_REMEMBERED:
            del self.gone[next(iter(self.gone))]
        n = await self._reclaim(worker_id, await self._held(worker_id), reason)
        self.registry.mark_lost(worker_id, self.clock.now_s(), reason=f"lost: {reason}")
        await self.store.set_draining(worker_id, False)
        return n

    # Sweeps ---------------------------------------------------------------------------------------

    async def sweep_once(self) -> None:
        """One pass: time out queued jobs past their ttl and running jobs past their execution timeout,
        take leases back from workers silent for ``heartbeat_timeout_s``, persist changed worker records;
        every ``FORGET_EVERY_S``, trim the job listing of jobs deleted since (kept ``keep_results_s``)."""
        now_ms = self.now_ms()
        for moved in await self.store.sweep("ttl", now_ms, SWEEP_BATCH):
            self._finalized(moved.job_id, moved.endpoint, S.TIMED_OUT)
        for moved in await self.store.sweep("leases", now_ms, SWEEP_BATCH):
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
            await self._reclaim(worker, await self._held(worker), "heartbeat")
            self.registry.mark_lost(worker, now_s)
            await self.store.set_draining(worker, False)
        changed, removed = self.registry.dirty(now_s)
        if changed or removed:
            await self.store.save_workers(changed, removed)
        if now_s - self._mirrored_s >= MIRROR_EVERY_S:
            self._mirrored_s = now_s
            self.metrics.worker_states(self.registry.views())
        if now_s - self._forgot_s >= FORGET_EVERY_S:
            self._forgot_s = now_s
            for _ in range(FORGET_BATCHES):  # the oldest first; a job still kept among them stays in front
                if await self.store.forget_deleted(now_ms, SWEEP_BATCH) == 0:
                    break

    async def _seen_elsewhere(self, worker_id: str) -> float | None:
        """Last sign of life another queue instance recorded (during an upgrade two clusters may share the
        store): a worker that pings the other instance is alive."""
        raw = await self.store.load_worker(worker_id)
        if raw is None:
            return None
        seen_ms = json.loads(raw).get("lastSeenAt")
        return seen_ms / 1000 if seen_ms else None

    # Shared steps ---------------------------------------------------------------------------------

    async def _held(self, worker_id: str) -> list[str]:
        """What a lost worker held: the jobs this dispatcher knows it holds, and those the store says it
        holds (a replica takes from the store itself and tells this dispatcher only of jobs still running
        a moment later: ``actors.queue_direct``)."""
        known = self.registry.held(worker_id)
        seen = set(known)
        return known + [j for j in await self.store.held_by(worker_id) if j not in seen]

    async def _reclaim(self, worker_id: str, job_ids: Sequence[str], reason: str) -> int:
        """Take ``job_ids`` back from ``worker_id``: requeued, or FAILED when no retry is left."""
        n = 0
        for job_id in list(job_ids):
            moved = await self.store.move(
                job_id,
                REQUEUE_OR_FAIL,
                self.now_ms(),
                f"lease lost: {reason}",
                expect_from=(S.IN_PROGRESS,),
                expect_worker=worker_id,
                error=f"worker {worker_id} lost ({reason}) and no retries left",
            )
            self.leased.pop(job_id, None)
            self.registry.release(worker_id, job_id)
            if moved.moved and moved.after is not None:
                n += 1
                self.metrics.lease_lost(moved.endpoint, reason)
                log.info("lease lost: %s", reason, extra={"job_id": job_id, "worker_id": worker_id})
                if moved.after is S.IN_QUEUE:
                    self.takers.wake(moved.endpoint, 1)
                else:
                    self._finalized(job_id, moved.endpoint, moved.after)
        return n

    def _release(self, moved: Moved, stop_reason: str | None) -> None:
        """A running job left its holder (cancelled, timed out): tell the holder to stop it."""
        self.leased.pop(moved.job_id, None)
        if moved.worker:
            self.registry.release(moved.worker, moved.job_id)
            self.stops[moved.worker].add(moved.job_id)
            self.stoppers.wake(moved.worker)
        if stop_reason:
            self.metrics.lease_lost(moved.endpoint, stop_reason)

    def _finalized(self, job_id: str, endpoint: str, status: JobStatus, webhook: bool = True) -> None:
        """A job became final: count it, wake its waiters, and (when it may have one) deliver its webhook
        now; the webhook loop's own poll catches any kick skipped."""
        self.metrics.finished(endpoint, status.value)
        self.finals.wake(job_id)
        self.chunks.wake(job_id)
        if webhook:
            self.webhooks.kick()
