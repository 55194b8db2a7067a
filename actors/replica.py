"""WorkerReplica: one Ray actor per replica, placed with the endpoint's resources, running its handler.

Lifecycle hooks, as the design asks:
- start (``__init__``): import the handler once — the cold start, timed and reported. A RunPod worker file
  that calls ``runpod.serverless.start(config)`` loads as is: the config is captured (``core.handlers``);
- ``run``: take jobs from the queue with no HTTP hop (``concurrency`` at once, or what the worker's
  ``concurrency_modifier`` says before each take; health permitting), stream chunks, batch results,
  heartbeat with the held jobs; returns when drained, or after a job asked for ``refresh_worker`` (the
  pool then starts a fresh replica). It keeps running when its caller (the pool) dies: replicas are
  detached actors, and a pool that restarts adopts them and follows them with ``wait_stopped``;
- drain (``drain``): take nothing new, finish what is held within the deadline, hand back the rest;
- a job store that does not answer for longer than a call's retries (a Redis restart or failover): the
  replica lives through it; its takes are tried again, and results that neither the store nor the queue
  recorded are kept and sent again until they are (``passing_failure``), each said in its worker record;
- a blocked event loop (an async handler running blocking code, as RunPod worker files may): a thread
  heartbeats for it, as the worker SDK's heartbeat thread does, so the held jobs keep their leases; the
  pool asks ``liveness`` (answered off that loop) and replaces the replica once every held job was
  stopped meanwhile (timed out, cancelled), or once the loop has ended;
- ``__ray_shutdown__``: best-effort: tell the queue this worker is gone so its leases return at once.
Leases cover everything no hook sees (a killed actor, a lost node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import ray

from actors import ray_cluster, warm_workers
from actors.queue_direct import DirectStore, JobResult
from orchestrator import logs
from orchestrator.core import health as hs
from orchestrator.core import runpod_worker as rw
from orchestrator.core.deliveries import Deliveries
from orchestrator.core.errors import NotFound
from orchestrator.core.gpu_types import node_types
from orchestrator.core.handlers import ChunkNotKept, load_handler, run_job
from orchestrator.core.job_threads import JobThreads, hung
from orchestrator.core.workers import (
    WorkerState,
    is_active,
    is_live,
    new_worker,
    record_jobs,
    transition,
)
from orchestrator.names import QUEUE_NAME, get_actor
from orchestrator.store.failures import store_failure, store_trouble

log = logging.getLogger("ripple.replica")
T = TypeVar("T")

QUEUE_RESTART_WAIT_S = 60.0
"""How long a call to the queue is retried while the queue actor restarts (Ray restarts it in seconds)."""

TAKE_RETRY_S = 2.0
"""Wait before a take that failed for a reason that passes (see :func:`passing_failure`) is tried again."""

UNSENT_RETRY_S = (0.5, 10.0)
"""First and longest wait (doubling) before results that could not be recorded are sent again."""

DIRECT_WAIT_S = 0.5
"""Longest single block on the store for a job to be queued, before the replica looks at itself again (a
drain, a change of concurrency)."""


async def through_queue_restarts(call: Callable[[], Awaitable[T]], wait_s: float = QUEUE_RESTART_WAIT_S) -> T:
    """``await call()``, called again (backing off 0.1 s to 2 s) while it fails because the queue actor is
    restarting or died mid-call (``RayActorError``, ``ActorUnavailableError``), for up to ``wait_s``; then
    that error. Anything else the call raises propagates at once.

    Such a call may or may not have run on the old queue: use it for calls whose repetition is harmless
    (a result the queue already has is refused; a take called again with its call id answers the jobs the
    first took; a stream chunk pushed again with its index is kept once)."""
    delay_s = 0.1
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await call()
        except ray.exceptions.RayActorError:
            if time.monotonic() + delay_s > deadline:
                raise
            log.warning("queue unavailable (restarting?); retrying in %.1f s", delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(2.0, delay_s * 2)


def passing_failure(exc: BaseException, *, advice: bool = False) -> str | None:
    """Why a call to the store or the queue failed, when the reason passes by itself: the store is full or
    does not answer (:func:`store_trouble`; with ``advice``, a client's words, :func:`store_failure`), or
    the queue actor is away past its restarts' wait; None for any other error."""
    if isinstance(exc, ray.exceptions.RayActorError):
        return "the queue is unavailable"
    return store_failure(exc) if advice else store_trouble(exc)


@dataclass(frozen=True)
class ReplicaConfig:
    """What a replica needs besides its handler."""

    endpoint: str
    worker_id: str
    handler: str
    concurrency: int
    namespace: str
    take_wait_s: float = 5.0
    heartbeat_s: float = 5.0
    result_batch: int = 256
    gpu_type: str | None = None  # the GPU type the pool placed it for (None: any)
    version: int = 0  # the endpoint version it runs (its handler, runtime env and resources)
    # How long a queue call is retried while the queue is away (restarting, or its head node is): at least
    # the heartbeat timeout, as its leases outlive the queue that long (see ``through_queue_restarts``).
    queue_retry_s: float = QUEUE_RESTART_WAIT_S


class WorkerReplica:
    """See the module docstring. Create through :class:`actors.pool.WorkerPool`."""

    def __init__(self, cfg: ReplicaConfig) -> None:
        self.cfg = cfg
        logs.configure("INFO")  # JSON lines in the actor's log file
        self.log_fields = {"worker_id": cfg.worker_id, "endpoint": cfg.endpoint}
        # Resolving the queue's handle imports its actor class's module (a few hundred ms in a new process):
        # done in a thread while the handler loads.
        with ThreadPoolExecutor(max_workers=1) as lookup:
            queue = lookup.submit(get_actor, QUEUE_NAME, cfg.namespace)
            t0 = time.perf_counter()
            self.handler = load_handler(cfg.handler)
            self.cold_start_s = time.perf_counter() - t0
        self.concurrency = cfg.concurrency  # what the worker SDK calls current_concurrency
        self.refresh_reason: str | None = None
        ctx = ray.get_runtime_context()
        self.node_id = ctx.get_node_id()
        self.actor_id = ctx.get_actor_id()  # where Ray keeps this process's stdout/stderr
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        # The type it was placed for, else its node's one type (None: untyped, or several on the node).
        types = node_types(ray_cluster.node_resources(self.node_id)) if self.gpu_ids else {}
        self.gpu_type = cfg.gpu_type or (next(iter(types)) if len(types) == 1 else None)
        self.queue = queue.result()
        self.direct = DirectStore(self.queue, cfg.endpoint, cfg.worker_id)  # jobs and results: the store
        self.deliveries = Deliveries()  # a job the store's record delivers again runs here once
        threads = rw.MAX_CONCURRENCY if self.handler.options.concurrency_modifier else cfg.concurrency
        self.executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="handler")
        self.threads = JobThreads(self.executor, self._thread_call_ended)
        rw.set_progress_sink(self._progress)
        self.health = hs.HealthRecord()
        self.active: dict[str, asyncio.Task[None]] = {}
        self.results: list[JobResult] = []
        # Results neither the store nor the queue recorded, for a reason that passes (the store does not
        # answer, the queue is away): sent again, backing off, for as long as this replica lives.
        self.unsent: list[JobResult] = []
        self.unsent_why = ""
        self._resending = 0  # how many of them are being sent again right now
        self.drain_deadline: float | None = None
        self.idle_since_s: float | None = time.time()
        self.started_s = time.time()
        # The lifecycle, moved only through ``workers.transition``: STARTING until ``run``, IDLE <-> BUSY with
        # the jobs it holds (recorded when it reports), DRAINING once drained, STOPPED when ``run`` ends.
        self.record = new_worker(
            cfg.worker_id,
            cfg.endpoint,
            "ray",
            self.started_s,
            concurrency=max(1, cfg.concurrency),
            node_id=self.node_id,
            reason="handler loaded",
        )
        self.completed = 0
        self.failed = 0
        # Stopped jobs whose sync code may still run in a thread, with their deadlines (job_threads.py).
        self.abandoned: dict[str, int | None] = {}
        self._stop_deadlines: dict[str, int | None] = {}  # of jobs the queue just told this replica to stop
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set once draining: ends a take blocked on the store at once
        self._flush = asyncio.Event()
        self._slot_awaited = False  # the take loop waits for a free slot (and takes once one is)
        self._running = False  # ``run`` was called (a second call waits for the first one's end)
        self._stopped = asyncio.Event()  # ``run`` ended (``summary`` is then its return value)
        self.summary: dict[str, Any] | None = None
        # The event loop's pulse, read by the keepalive thread and ``liveness`` (see ``_keepalive``).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_tick_s = time.monotonic()  # the loop's last tick (``_tick_forever``)
        self._last_state: dict[str, Any] = {}  # the state of the last heartbeat sent from the loop
        self._stopped_while_blocked: set[str] = set()  # held jobs the queue stopped while it was blocked
        self._keepalive_stop = threading.Event()
        self._beat_failures = logs.RepeatedFailure(log, "heartbeat", time.monotonic, level=logging.WARNING)
        self._take_failures = logs.RepeatedFailure(log, "taking jobs", time.monotonic, level=logging.WARNING)
        self.take_failing: str | None = None  # why taking jobs fails, while it does
        warm_workers.leave_standby()  # the next replica on this node starts in a ready process

    # Hooks ------------------------------------------------------------------------------------------

    async def ready(self) -> dict[str, Any]:
        """Placed and loaded: the cold start and where this replica runs."""
        return {
            "workerId": self.cfg.worker_id,
            "coldStartS": round(self.cold_start_s, 4),
            "nodeId": self.node_id,
            "gpuIds": self.gpu_ids,
            "gpuType": self.gpu_type,
            "version": self.cfg.version,
        }

    @property
    def draining(self) -> bool:
        """Taking no new jobs: drained (or stopped)."""
        return not is_active(self.record.state)

    def _move(self, to: WorkerState, reason: str) -> None:
        self.record = transition(self.record, to, time.time(), reason)

    async def run(self) -> dict[str, Any]:
        """Serve until drained; returns a summary. Idempotent: a second call (a restarted pool that lost
        the first call's result) waits for the first run's end and returns the same summary."""
        if self._running:
            return await self.wait_stopped()
        self._running = True
        if self.record.state is WorkerState.STARTING:  # not drained before it started
            self._move(WorkerState.IDLE, "serving")
        self._loop = asyncio.get_running_loop()
        beat = self._loop.create_task(self._heartbeat_forever())
        flusher = self._loop.create_task(self._flush_forever())
        ticker = self._loop.create_task(self._tick_forever())
        threading.Thread(target=self._keepalive, name="ripple-keepalive", daemon=True).start()
        await self._beat()  # registers as serving at once, replacing the pool's "starting" record
        await self.direct.store()  # where results go, found before the first one
        try:
            await self._take_loop()
            await self._finish_held()
        finally:
            self._move(WorkerState.STOPPED, "drained")
            self._keepalive_stop.set()
            ticker.cancel()
            beat.cancel()
            self.results[:0], self.unsent = self.unsent, []
            await self._flush_now()
            await self.direct.settle()  # a result on its way to the store gets there
            flusher.cancel()
            await self._beat(final=True)
            summary = {
                "workerId": self.cfg.worker_id,
                "completed": self.completed,
                "failed": self.failed,
                "refresh": self.refresh_reason,
            }
            self.summary = summary
            self._stopped.set()
        return summary

    async def wait_stopped(self) -> dict[str, Any]:
        """Returns ``run``'s summary once it ended (at once if it has): how a pool that adopted this
        replica (and so holds no reference to its ``run``) learns that it drained. Idempotent; waits
        forever for a replica whose ``run`` was never called."""
        await self._stopped.wait()
        assert self.summary is not None
        return self.summary

    async def drain(self, deadline_s: float | None = None) -> None:
        """Stop taking jobs; held jobs finish until ``deadline_s`` (seconds from now) and are handed back
        after it."""
        if is_active(self.record.state):
            why = self.refresh_reason or "taking no new jobs"
            self._move(WorkerState.DRAINING, f"draining: {why}")
        if deadline_s is not None:
            self.drain_deadline = time.monotonic() + deadline_s
        self._drained.set()
        self._wake.set()

    def __ray_shutdown__(self) -> None:
        if is_live(self.record.state):
            with contextlib.suppress(Exception):  # best effort only: leases cover the rest
                self.queue.worker_gone.remote(self.cfg.worker_id, "replica shut down")
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def status(self) -> dict[str, Any]:
        """What the pool plans with."""
        return self._state()

    @ray.method(concurrency_group="control")  # type: ignore[untyped-decorator]
    async def liveness(self) -> dict[str, Any]:
        """Answered off the replica's event loop (the ``control`` concurrency group, its own thread), for a
        pool whose ``status`` went unanswered: whether the loop still runs, how long since it last ticked,
        how many jobs it holds and how many of them the queue stopped while it was blocked."""
        loop = self._loop
        return {
            "loopRunning": loop is None or loop.is_running(),
            "blockedS": round(time.monotonic() - self._loop_tick_s, 3),
            "held": len(self.active),
            "stoppedWhileBlocked": len(self._stopped_while_blocked),
        }

    # Loops ------------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        now_s = time.time()
        h = hs.tick(self.health, now_s)
        if is_live(self.record.state):  # a stopped replica handed back what it held
            self.record = record_jobs(self.record, self.active, now_s)
        abandoned = self._abandoned()
        return {
            "workerId": self.cfg.worker_id,
            "state": self.record.state.value,
            "jobs": sorted(self.record.jobs),
            "health": h.state.value,
            "coldStartS": round(self.cold_start_s, 4),
            "nodeId": self.node_id,
            "actorId": self.actor_id,
            "gpuIds": self.gpu_ids,
            "gpuType": self.gpu_type,
            "concurrency": max(1, self.concurrency),
            "jobsHeld": len(self.active),
            "idleSince": self.idle_since_s,
            "completed": self.completed,
            "failed": self.failed,
            "stuck": hung(abandoned, int(now_s * 1000)),
            "heldByStopped": len(abandoned),
            "handler": self.cfg.handler,
            "version": self.cfg.version,
            "startedAt": int(self.started_s * 1000),
            "reason": self._reason(h),
            "storeTrouble": self.direct.trouble(),
            "unrecorded": self.unrecorded,
            "takeFailing": self.take_failing,
        }

    def _reason(self, h: hs.HealthRecord) -> str:
        if self.refresh_reason:
            return f"draining: {self.refresh_reason}"
        if self.draining:
            return "draining: taking no new jobs"
        if h.state is hs.HealthState.QUARANTINED:
            return f"quarantined after {h.consecutive_failures} failed jobs in a row"
        if self.unrecorded:
            return (
                f"serving; {self.unrecorded} finished job(s) not recorded yet, sent again until they are: "
                f"{self.unsent_why}"
            )
        if self.take_failing is not None:
            every = f"tried again every {TAKE_RETRY_S:g} s"
            return f"serving what it holds; taking jobs fails ({every}): {self.take_failing}"
        if (trouble := self.direct.trouble()) is not None:
            return f"serving through the queue: the job store fails this replica ({trouble['error']})"
        if abandoned := len(self._abandoned()):
            return f"serving; {abandoned} slot(s) held by a stopped job's code until it returns"
        return "serving"

    def _abandoned(self) -> dict[str, int | None]:
        """The stopped jobs whose code still runs in a thread, with their deadlines (those whose code
        returned are forgotten)."""
        for job_id in [j for j in self.abandoned if not self.threads.running(j)]:
            del self.abandoned[job_id]
        return self.abandoned

    def _thread_call_ended(self) -> None:
        """A handler thread's call returned (in that thread): a slot an abandoned job held may be free."""
        if self._loop is not None and self.abandoned:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing waits for a slot
                self._loop.call_soon_threadsafe(self._wake.set)

    async def _take_loop(self) -> None:
        while not self.draining:
            self.health = hs.tick(self.health, time.time())
            self.concurrency = rw.next_concurrency(
                self.handler.options.concurrency_modifier, self.concurrency, self.cfg.concurrency
            )
            held = len(self.active) + len(self._abandoned())
            free = hs.serving_slots(self.health, self.concurrency, time.time()) - held
            if free <= 0:
                if self.results:  # no take soon (quarantined, or every slot held): the flusher sends them
                    self._flush.set()
                self._wake.clear()
                self._slot_awaited = True
                try:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.5)
                finally:
                    self._slot_awaited = False
                continue
            try:
                jobs = await self._take(free)
            except NotFound:  # the endpoint was deleted: nothing more to take, what is held finishes
                if not self.draining:  # drained while the take waited: already so
                    self._move(WorkerState.DRAINING, "draining: endpoint deleted")
                break
            except Exception as exc:
                if (why := passing_failure(exc)) is None:
                    raise
                # The store does not answer (or the queue is away) for longer than a call's retries: this
                # replica and what it holds wait for it, rather than end and start again cold.
                self.take_failing = why
                self._take_failures.failed(exc, **self.log_fields)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), TAKE_RETRY_S)
                continue
            if self.take_failing is not None:
                self.take_failing = None
                self._take_failures.succeeded(**self.log_fields)
            for job in jobs:
                self.idle_since_s = None
                self.active[job["id"]] = asyncio.get_running_loop().create_task(self._run_job(job))
            if jobs:
                # The jobs just started take their first step before the next take: one that ends in it
                # (a short async handler) has its result go with that take, finished first in its step.
                await asyncio.sleep(0)

    async def _take(self, free: int) -> list[dict[str, Any]]:
        """Up to ``free`` jobs: from the store itself when this process reaches it (waiting at most
        ``DIRECT_WAIT_S`` at a time, and no longer once drained), with the results not reported yet
        finished first in the same step; else through the queue (waiting up to the take wait), the results
        left to the flusher; after a take from the store failed, first the jobs the store leased to this
        replica that it never received (:meth:`DirectStore.redelivered`). The version is recorded on each
        job: the version that ran it. Raises NotFound (through the queue) once the endpoint is deleted."""
        version = self.cfg.version or None
        carried, self.results = self.results[: self.cfg.result_batch], self.results[self.cfg.result_batch :]
        if self.results:  # more than one batch: the rest go without waiting for the next take
            self._flush.set()
        wait_s = min(self.cfg.take_wait_s, DIRECT_WAIT_S)
        jobs = await self.direct.take(free, wait_s, version, self._drained, carried)
        if jobs is None and carried:  # not finished here: reported as any other result (store, else queue)
            self.results[:0] = carried
            self._flush.set()
        again = self.deliveries.fresh(await self.direct.redelivered())
        if again:
            log.warning("running %d jobs the store leased to this replica", len(again), extra=self.log_fields)
        if jobs is not None or again:
            return [*self.deliveries.fresh(jobs or []), *again]
        taking = partial(
            self.queue.take.remote,
            self.cfg.endpoint,
            self.cfg.worker_id,
            free,
            self.cfg.take_wait_s,
            "ray",
            version=version,
            call_id=uuid.uuid4().hex,  # the same for each call again: the jobs a lost reply carried
        )
        return self.deliveries.fresh(await through_queue_restarts(taking, self.cfg.queue_retry_s))

    async def _finish_held(self) -> None:
        """Drained: wait for the jobs held to finish and their results to be recorded; past the drain
        deadline, hand back what is left."""
        while self.active or self.unrecorded:
            if self.drain_deadline is not None and time.monotonic() >= self.drain_deadline:
                held = [*self.active, *(r.job_id for r in self.unsent)]  # those not recorded are run again
                for task in self.active.values():
                    task.cancel()
                await self.queue.worker_gone.remote(self.cfg.worker_id, "drain deadline passed")
                log.warning("drain deadline passed; handed back %d jobs", len(held), extra=self.log_fields)
                return
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.2)

    async def _run_job(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        pushed = 0

        async def push(chunk: Any) -> None:
            # A queue restart is not the handler's failure: the chunk waits for the queue to come back. A
            # store that refuses the chunk (full, or not answering: passing_failure) is not either: the job
            # stops, saying so.
            nonlocal pushed
            cfg = self.cfg
            try:
                await through_queue_restarts(
                    partial(
                        self.queue.stream_push.remote, cfg.endpoint, cfg.worker_id, job_id, [chunk], pushed
                    ),
                    cfg.queue_retry_s,
                )
            except Exception as exc:
                if (said := passing_failure(exc, advice=True)) is None:
                    raise
                stopped = f"stream chunk {pushed} could not be stored, so the job stopped: {said}"
                raise ChunkNotKept(stopped) from None
            pushed += 1

        try:
            # The job dict as the worker SDK hands it over (id, input, attempt), a copy per run.
            executor = self.threads.for_job(job_id)
            outcome = await run_job(self.handler, dict(job), executor, push, self.cfg.worker_id)
        except asyncio.CancelledError:
            # Stopped: the job is already final (cancelled or timed out) or handed back. Sync code cannot be
            # interrupted: its thread holds a slot until it returns, and counts as hung past the job's
            # deadline; once every slot holds a hung one, the pool replaces this replica.
            if self.handler.kind in ("sync", "gen") and self.threads.running(job_id):
                self.abandoned[job_id] = self._stop_deadlines.get(job_id)
            return
        finally:
            self.active.pop(job_id, None)
            self._stop_deadlines.pop(job_id, None)
            self.direct.ended(job_id)
            self.deliveries.ended(job_id)
            if not self.active:
                self.idle_since_s = time.time()
            self._wake.set()
        # A failed job counts against this replica only once the last N jobs all failed (core/health.py).
        if outcome.failed:
            if not outcome.ripples_fault:
                self.health = hs.on_job_failed(self.health, time.time(), detail="handler error")
            self.failed += 1
        else:
            self.health = hs.on_success(self.health, time.time())
            self.completed += 1
        self.results.append(JobResult(job_id, outcome.body, self.handler.streams, outcome.output_json))
        if not self._slot_awaited:  # else the slot it freed is taken at once, and the result goes with it
            self._flush.set()
        if outcome.refresh and self.refresh_reason is None:
            self.refresh_reason = f"refresh_worker after job {job_id}"
            log.info("refresh_worker: replaced after this job", extra={**self.log_fields, "job_id": job_id})
            await self.drain()

    def _progress(self, job: dict[str, Any], progress: Any) -> None:
        """``runpod.serverless.progress_update(job, data)`` inside this replica: shown in ``/status`` while
        the job runs (may be called from a handler thread; never blocks)."""
        job_id = job.get("id") if isinstance(job, dict) else None
        if not isinstance(job_id, str) or job_id not in self.active:
            log.warning(
                "progress_update() for a job this replica does not hold; dropped", extra=self.log_fields
            )
            return
        body = {"status": "IN_PROGRESS", "output": progress}
        self.queue.done.remote(self.cfg.endpoint, self.cfg.worker_id, job_id, body)

    async def _flush_forever(self) -> None:
        """Send the results as they come; those not recorded again after a wait (UNSENT_RETRY_S), or
        with the next results, whichever is first."""
        retry_s = UNSENT_RETRY_S[0]
        while True:
            if not self.unsent:
                await self._flush.wait()
                retry_s = UNSENT_RETRY_S[0]
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._flush.wait(), retry_s)
                retry_s = min(UNSENT_RETRY_S[1], retry_s * 2)
                self._resending = len(self.unsent)
                self.results[:0], self.unsent = self.unsent, []
            self._flush.clear()
            try:
                await self._flush_now()
            finally:
                self._resending = 0

    @property
    def unrecorded(self) -> int:
        """How many finished jobs' results are not recorded yet for a reason that passes."""
        return len(self.unsent) + self._resending

    async def _flush_now(self) -> None:
        while self.results:
            batch, self.results = self.results[: self.cfg.result_batch], self.results[self.cfg.result_batch :]
            for streamed in (False, True):
                results = [r for r in batch if r.streamed is streamed]
                if results and await self.direct.report(results):
                    continue  # finished in the store itself; the queue was told
                if results:
                    items = [(r.job_id, r.body) for r in results]
                    try:
                        await through_queue_restarts(
                            partial(
                                self.queue.done_many.remote,
                                self.cfg.endpoint,
                                self.cfg.worker_id,
                                items,
                                streamed,
                            ),
                            self.cfg.queue_retry_s,
                        )
                    except Exception as exc:
                        self._keep_unsent(results, exc)

    def _keep_unsent(self, results: list[JobResult], exc: Exception) -> None:
        """Neither the store nor the queue recorded ``results``: kept to be sent again when the reason
        passes (:func:`passing_failure`), else dropped (their jobs are given back when their lease runs
        out)."""
        passing = passing_failure(exc)
        if passing is None:
            log.exception(
                "reporting %d results failed; their leases will expire", len(results), extra=self.log_fields
            )
            return
        if not self.unsent:
            log.warning(
                "reporting %d results failed; sent again until they are recorded: %s",
                len(results),
                passing,
                extra=self.log_fields,
            )
        self.unsent.extend(results)
        self.unsent_why = passing

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat_s)
            await self._beat()

    async def _tick_forever(self) -> None:
        while True:
            self._loop_tick_s = time.monotonic()
            self._stopped_while_blocked = set()  # the loop runs: it stops its jobs itself
            await asyncio.sleep(self.cfg.heartbeat_s / 2)

    def _keepalive(self) -> None:
        """In its own thread while ``run`` runs: when the event loop has not ticked for two heartbeat
        periods (an async handler blocking it), heartbeat for it with the jobs held, so their leases hold
        while the handler runs (the worker SDK heartbeats from a thread too). Jobs the reply says to stop
        cannot be stopped from here: they are noted for ``liveness``. Ends with ``run``, or when the loop
        has ended (no more heartbeats: the queue takes the jobs back)."""
        while not self._keepalive_stop.wait(self.cfg.heartbeat_s):
            loop = self._loop
            if loop is None or not loop.is_running():
                log.error("the replica's event loop ended; no more heartbeats", extra=self.log_fields)
                return
            if not hs.keepalive_due(time.monotonic() - self._loop_tick_s, self.cfg.heartbeat_s):
                continue
            held = list(self.active)
            try:
                ref = self.queue.heartbeat.remote(
                    self.cfg.endpoint, self.cfg.worker_id, held, self._last_state
                )
                reply = ray.get(ref, timeout=max(self.cfg.heartbeat_s, 5.0))
            except Exception:
                log.warning("heartbeat for the blocked loop failed", exc_info=True, extra=self.log_fields)
                continue
            self._stopped_while_blocked = set(reply["stop"]) & set(held)
            log.warning(
                "event loop blocked for %.0f s (an async handler that does not await); heartbeating for it",
                time.monotonic() - self._loop_tick_s,
                extra=self.log_fields,
            )

    async def _beat(self, final: bool = False) -> None:
        self._last_state = state = self._state()
        try:
            reply = await self.queue.heartbeat.remote(
                self.cfg.endpoint, self.cfg.worker_id, list(self.active), state
            )
        except Exception as exc:
            self._beat_failures.failed(exc, **self.log_fields)
            return
        self._beat_failures.succeeded(**self.log_fields)
        if final:
            return
        deadlines = reply.get("stopDeadlines") or {}
        for job_id in reply["stop"]:
            task = self.active.get(job_id)
            if task is not None:
                self._stop_deadlines[job_id] = deadlines.get(job_id)
                task.cancel()
        if reply["drain"] and not self.draining:
            await self.drain()
