"""A replica's jobs taken from, and its results finished in, the store itself, not through the queue actor
(issue 12: the queue actor off the per-job path).

Taking: the replica runs the Lua CLAIM step (:meth:`~orchestrator.store.redis.RedisStore.claim`: the queue's
TAKE, a draining worker refused inside it, each job's version recorded). When the queue is empty it parks
in the same step and blocks on its inbox and the endpoint's wake list
(:meth:`~orchestrator.store.redis.RedisStore.wait_for_job`): the SUBMIT step hands the job TAKE would give
(normal priority first) straight to a parked replica, leased to it, input included, so the job starts with
no take after the wake-up; a job queued otherwise (a retry, every replica busy) pushes a wake token, and the
replica claims again. A drain ends the wait with an empty element
(:meth:`~orchestrator.store.redis.RedisStore.nudge`), never by cutting the blocked read off, which could lose
a handed job. It tells the queue what it took without waiting (``JobQueue.took``: lease index, worker
registry), but only of the jobs still running ``TOLD_AFTER_S`` later: a job that ends first is told once,
with its result (so a short job's path holds no actor call before it runs); its heartbeats report the jobs
it holds. A replica lost before it told is still reclaimed at once: the queue asks the store what it held.

Finishing: the replica runs the same Lua FINISH step the queue's ``done_many`` runs (the first final result
wins, a worker that no longer holds the job is refused, a watched job's caller is told in the same step);
results that end while the replica is about to take go with that take, first in the same step
(:meth:`~orchestrator.store.redis.RedisStore.finish_and_claim`: one round trip for both, and the caller
woken before the take is done). It then tells the queue what happened without waiting for it, with the
other results of the next moment (``JobQueue.finished``: lease index, worker registry, metrics, waiters,
webhook kick; :class:`~orchestrator.notices.LoopNotices`): at once when a caller waits at the queue, within
50 ms for a webhook, else within half a second (bookkeeping). A caller waiting on the store for the job
(:mod:`orchestrator.store.finals`) is woken by Redis directly, so a job's result takes no actor hop back.

The store is where the queue says (``JobQueue.store_address``), when this process reaches it (an embedded
Redis on a unix socket is not reachable from another node); else, when the store fails, and for progress
updates, the replica takes and sends results through the queue as before.

When a take from the store fails (an error, or a step past its time limit: a network partition between
the replica and Redis can hang a step with no error), the store may have leased jobs to the replica that it
never received: one handed to it while it was parked, or taken by a step whose reply was lost. The replica
then asks the queue for every running job leased to it (:meth:`DirectStore.redelivered`; the queue reads
the store, unparks the replica and empties its inbox in one step) and runs those it never received
(:class:`~orchestrator.core.deliveries.Deliveries`), so such a job starts at once instead of waiting for
its execution timeout. The same step raises the replica's fence, which every take of the replica carries:
a take sent before, whose command reaches Redis only after that read (held in a partitioned connection), is
refused whole (it takes no job and does not park the replica), so no job is leased to the replica behind
the queue's read; a refused take makes the replica ask for its jobs again, which gives it the new fence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from orchestrator.core.dispatch_workers import finish_item
from orchestrator.notices import LoopNotices, due_within_s
from orchestrator.store.finals import reachable
from orchestrator.store.protocol import Claim, FinishItem, FinishOutcome, TakenJob
from orchestrator.store.redis import RETRY_WHILE_RESTARTING_S, RedisStore

log = logging.getLogger("ripple.replica")

TOLD_AFTER_S = 0.05
"""How long after a take the queue is told of the jobs taken that are still running."""

STEP_TIMEOUT_S = 10.0
"""How long a replica's step in the store may take, beyond a take's own wait, before it counts as failed."""


class JobResult(NamedTuple):
    """A job's end as its replica reports it: the ``job-done`` body (the SDK's shape), whether the job
    streamed, and the body's output as the store keeps it when the replica already encoded it (None: it is
    encoded when finished)."""

    job_id: str
    body: Any
    streamed: bool
    output_json: str | None = None


class DirectStore:
    """Takes one replica's jobs from and finishes its results in the store; see the module docstring."""

    def __init__(
        self, queue: Any, endpoint: str, worker_id: str, step_timeout_s: float = STEP_TIMEOUT_S
    ) -> None:
        self.queue = queue
        self.endpoint = endpoint
        self.worker_id = worker_id
        self.step_timeout_s = step_timeout_s
        self._failed = False  # a take from the store failed, or was fenced, since the last redelivery
        self._fence = 0  # the fence of the last redelivery: the store refuses a take with an older one
        self._trouble: tuple[float, str] | None = None  # since when (wall clock, s) and why steps fail
        self._store: RedisStore | None = None
        self._resolved = False
        self._inflight: set[asyncio.Future[bool]] = set()
        self._finished: LoopNotices[str, FinishOutcome] = LoopNotices(self._queue_finished)
        self._untold: dict[str, None] = {}  # taken and still running, the queue not told yet (in order)
        self._telling: asyncio.TimerHandle | None = None

    async def store(self) -> RedisStore | None:
        """The store, once this process has found it reachable; None when it is not (asked again later
        only when the queue could not say where it is)."""
        if self._resolved:
            return self._store
        try:
            addr = await self.queue.store_address.remote()
        except Exception:
            log.warning("could not ask the queue where the store is; results go through the queue")
            return None
        url, prefix = str(addr["redisUrl"]), str(addr["keyPrefix"])
        if await asyncio.to_thread(reachable, url):
            self._store = RedisStore.connect(url, prefix, float(addr.get("retryS", RETRY_WHILE_RESTARTING_S)))
        else:
            log.info("the store is not reachable from this replica; results go through the queue")
        self._resolved = True
        return self._store

    async def take(
        self,
        max_jobs: int,
        wait_s: float,
        version: int | None,
        stop: asyncio.Event | None = None,
        results: Sequence[JobResult] = (),
    ) -> list[dict[str, Any]] | None:
        """Up to ``max_jobs`` jobs leased to this replica (as the queue's ``take`` hands them out), waiting
        up to ``wait_s`` for one to be queued, or until ``stop`` is set; [] when none came. ``results``
        (this replica's) are finished first, in the same step as the take,
        and the queue told as :meth:`report` tells it. None when nothing was done here, ``results``
        included (the store is not reachable or failed, or a result is not final): the caller reports them
        and takes through the queue; [] when the store failed after the results were finished, or refused
        a take with this replica's fence (a redelivery since: :meth:`redelivered` then asks for its jobs)."""
        store = await self.store()
        if store is None:
            return None
        items = self._items(results)
        if items is None:
            return None
        jobs: list[TakenJob] | None = []
        limit_s = self.step_timeout_s
        try:
            async with asyncio.timeout(limit_s):
                jobs = await self._claim(store, max_jobs if _going(stop) else 0, version, _going(stop), items)
            items = []  # finished: whatever fails from here on, they are not sent again
            if jobs == [] and _going(stop):
                async with asyncio.timeout(wait_s + limit_s):
                    handed = await self._wait_for_job(store, wait_s, stop)
                # Unparked, with what was handed meanwhile; no more from the queue once stopping.
                more = max_jobs if _going(stop) else 0
                async with asyncio.timeout(limit_s):
                    jobs = [handed] if handed else await self._claim(store, more, version, False, [])
        except Exception as exc:
            log.warning("taking from the store failed; taking through the queue", exc_info=True)
            self._failed = True
            self._failing(exc)
            if items or not results:
                return None
            jobs = []  # the results are finished; the next take tries the store again
        else:
            self._trouble = None
        if jobs is None:  # fenced: jobs may be leased to it that it never received
            log.warning("the store refused a take sent before the last redelivery; asking for the jobs again")
            self._failed = True
            jobs = []
        if jobs:
            self._untold.update((j.id, None) for j in jobs)
            if self._telling is None:
                self._telling = asyncio.get_running_loop().call_later(TOLD_AFTER_S, self._tell_took)
        return [j.wire() for j in jobs]

    async def redelivered(self) -> list[dict[str, Any]]:
        """After a take from the store failed or was fenced: every running job the store has leased to this
        replica, as the queue reads it (``JobQueue.redeliver``: the replica unparked, its inbox emptied and
        its fence raised in the same step; later takes carry the new fence), jobs it already received
        included; [] when no take failed since the last call. A queue that cannot answer is asked again
        after the next take."""
        if not self._failed:
            return []
        try:
            again: dict[str, Any] = await self.queue.redeliver.remote(self.endpoint, self.worker_id)
        except Exception:
            log.warning("could not ask the queue for the jobs leased to this replica", exc_info=True)
            return []
        self._failed = False
        self._fence = max(self._fence, int(again["fence"]))
        jobs: list[dict[str, Any]] = again["jobs"]
        return jobs

    async def _claim(
        self, store: RedisStore, max_jobs: int, version: int | None, park: bool, items: list[FinishItem]
    ) -> list[TakenJob] | None:
        """The CLAIM step (``items`` finished first); None when the store refused this replica's fence."""
        now_ms = int(time.time() * 1000)
        claim = Claim(self.endpoint, self.worker_id, max_jobs, now_ms, version, park, self._fence)
        if not items:
            return await store.claim(claim)
        outcomes, jobs = await store.finish_and_claim(items, claim)
        self._told(outcomes)
        return jobs

    def _items(self, results: Sequence[JobResult]) -> list[FinishItem] | None:
        """``results`` as the store finishes them; None when one is not a final result."""
        items = [finish_item(r.job_id, self.worker_id, r.body, r.streamed, r.output_json) for r in results]
        return None if None in items else [i for i in items if i is not None]

    async def _wait_for_job(
        self, store: RedisStore, wait_s: float, stop: asyncio.Event | None
    ) -> TakenJob | None:
        """A job handed to this parked replica within ``wait_s``, else None (also when ``stop`` is set
        meanwhile: the wait is ended with :meth:`RedisStore.nudge` and its reply still read)."""
        waiting = asyncio.ensure_future(store.wait_for_job(self.endpoint, self.worker_id, wait_s))
        if stop is None:
            return await waiting
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                await store.nudge(self.worker_id)
            return await waiting
        finally:
            stopping.cancel()
            waiting.cancel()  # only when this wait failed or was cut off: see redelivered()

    def ended(self, job_id: str) -> None:
        """A job taken here stopped running (finished, failed or stopped): if the queue was not told of it
        yet, it never is (a result reaches it with ``finished``; a stopped job's end is the queue's own)."""
        self._untold.pop(job_id, None)

    def _tell_took(self) -> None:
        self._telling = None
        ids, self._untold = list(self._untold), {}
        if not ids:
            return
        try:  # leased in the store: the queue's memory follows (see Dispatcher.took)
            self.queue.took.remote(self.endpoint, self.worker_id, ids)
        except Exception:
            log.warning("could not tell the queue of %d jobs taken", len(ids), exc_info=True)

    async def report(self, results: Sequence[JobResult]) -> bool:
        """Finish ``results`` in the store and tell the queue (not awaited). False
        when nothing was done here (the store is not reachable, a body is a progress update, or the store
        failed): the caller sends them to the queue, which refuses any this step did apply.

        The work runs in a task of its own, shielded: a caller cancelled meanwhile (a replica stopping)
        does not cut a result off between the store and the queue; :meth:`settle` waits for it."""
        task = asyncio.ensure_future(self._report(results))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def settle(self) -> None:
        """Wait until every result being finished here is done and the queue told (before the replica
        stops)."""
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self._finished.flush()

    def _queue_finished(self, endpoint: str, outcomes: list[FinishOutcome]) -> None:
        # The results are final in the store: the queue's memory follows (see Dispatcher.finished).
        self.queue.finished.remote(endpoint, self.worker_id, outcomes)

    async def _report(self, results: Sequence[JobResult]) -> bool:
        store = await self.store()
        items = self._items(results)
        if store is None or items is None:
            return False
        try:
            async with asyncio.timeout(self.step_timeout_s):
                outcomes = await store.finish(items, int(time.time() * 1000))
        except Exception as exc:
            log.warning("finishing %d results in the store failed; sending them to the queue", len(items))
            self._failing(exc)
            return False
        self._trouble = None
        self._told(outcomes)
        return True

    def _failing(self, exc: BaseException) -> None:
        why = f"no answer within {self.step_timeout_s:g} s" if isinstance(exc, TimeoutError) else repr(exc)
        self._trouble = (self._trouble[0] if self._trouble else time.time(), why)

    def trouble(self) -> dict[str, Any] | None:
        """Why this replica's own steps in the store fail, and since when (``sinceS``, wall clock), while
        they do (it then takes and sends results through the queue); None once a step succeeds again."""
        if self._trouble is None:
            return None
        return {"sinceS": round(self._trouble[0], 3), "error": self._trouble[1]}

    def _told(self, outcomes: list[FinishOutcome]) -> None:
        """Tell the queue what finishing did: at once when a caller waits at the queue for one of the
        jobs, else with the next notices due (a webhook to send soon, else bookkeeping: metrics, lease
        index, registry slots)."""
        if any(o.awaited for o in outcomes):
            self._finished.add(self.endpoint, outcomes)
            self._finished.flush()
        else:
            self._finished.add(self.endpoint, outcomes, due_within_s(not any(o.webhook for o in outcomes)))


def _going(stop: asyncio.Event | None) -> bool:
    return stop is None or not stop.is_set()
