"""In-memory fakes of Ripple's own interfaces, shipped in the package for tests.

:class:`MemoryStore` implements :class:`orchestrator.store.protocol.JobStore` (as
:class:`orchestrator.store.redis.RedisStore` does) in one process, with the same semantics as the Lua scripts:
legality comes from :func:`orchestrator.core.jobs.can_transition` /
:func:`~orchestrator.core.jobs.check_transition` (the table is never copied), and every side effect of leaving
or entering a state (queue, ttl and lease deadlines, counters, history, webhooks) mirrors ``store_scripts``. A
job is kept as the same string hash the Redis store keeps, so reads go through the same decoder. A finished
job is deleted once kept long enough by :meth:`MemoryStore.forget_deleted` (where Redis expires its keys). Not
thread-safe; every method is atomic because none awaits.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from orchestrator.core.errors import NotFound, QueueFull
from orchestrator.core.jobs import (
    DEFAULT_KEEP_RESULTS_S,
    FINAL,
    JobCursor,
    JobStatus,
    JobView,
    can_transition,
    check_transition,
    queue_score,
)
from orchestrator.core.jobs import status_after_lost_lease as after_lost_lease
from orchestrator.core.models import NewJob
from orchestrator.core.webhook_outcomes import KEPT_PER_ENDPOINT
from orchestrator.store.protocol import (
    REQUEUE_OR_FAIL,
    STATUS_FIELDS,
    FinishItem,
    FinishOutcome,
    JobStore,
    Moved,
    Redelivery,
    StoreMemory,
    TakenJob,
    endpoint_view,
    job_view,
    status_view,
)

S = JobStatus
HISTORY_LIMIT = 50
PURGE_BATCH = 5000
_SWEEPS = {
    "ttl": (S.IN_QUEUE, "expired in the queue after its ttl"),
    "leases": (S.IN_PROGRESS, "execution timeout exceeded"),
}


class MemoryStore:
    """The job store in memory; see the module docstring. Times are integer milliseconds."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, str]] = {}
        self.history: dict[str, list[str]] = defaultdict(list)
        self.streams: dict[str, list[str]] = defaultdict(list)
        self.queues: dict[str, dict[str, float]] = defaultdict(dict)
        self.counters: dict[str, dict[str, int]] = defaultdict(dict)
        self.lease_deadlines: dict[str, int] = {}
        self.ttl_deadlines: dict[str, int] = {}
        self.created: dict[str, int] = {}
        self.keep_ms = int(DEFAULT_KEEP_RESULTS_S * 1000)
        self.kept_until: dict[str, int] = {}  # a final job's deletion time (Redis: its keys' expiry)
        self.seq = 0
        self.endpoints: dict[str, str] = {}
        self.versions: dict[str, dict[int, str]] = {}
        self.packages: dict[str, int] = {}
        self.workers: dict[str, str] = {}
        self.draining: set[str] = set()
        self.fences: dict[str, int] = defaultdict(int)  # raised by leased_to (no replica takes from here)
        self.webhooks: list[str] = []
        self.webhooks_inflight: list[str] = []
        self.taken: dict[str, tuple[str, list[str]]] = {}  # worker -> its last take that took: id, job ids
        self.webhook_outcome_lists: dict[str, list[str]] = {}
        self.docs: dict[str, str] = {}
        self.final_signals: dict[str, asyncio.Event] = {}  # watched jobs that became final (fin:{id})

    async def ping(self) -> bool:
        return True

    async def memory(self) -> StoreMemory | None:
        return None

    async def close(self) -> None:
        return None

    # State machine: one door, the same side effects as the Lua scripts ---------------------------

    def _incr(self, endpoint: str, counter: str, by: int = 1) -> None:
        counts = self.counters[endpoint]
        counts[counter] = counts.get(counter, 0) + by

    def _leave(self, job_id: str, h: dict[str, str], frm: JobStatus) -> None:
        if frm is S.IN_QUEUE:
            self.queues[h["ep"]].pop(job_id, None)
            self.ttl_deadlines.pop(job_id, None)
        elif frm is S.IN_PROGRESS:
            self.lease_deadlines.pop(job_id, None)
            self._incr(h["ep"], "in_progress", -1)

    def _enter(
        self, job_id: str, h: dict[str, str], frm: JobStatus, to: JobStatus, now_ms: int, wid: str
    ) -> None:
        h["status"] = to.value
        ep = h["ep"]
        if to is S.IN_QUEUE:
            self.queues[ep][job_id] = float(h["score"])
            self.ttl_deadlines[job_id] = now_ms + int(h["ttl"])
            h.update(queued=str(now_ms), lease="")
            h.pop("worker", None)
            h.pop("started", None)
            if frm in FINAL:
                h["retried"] = str(int(h.get("retried") or 0) + 1)
                self._incr(ep, "retried")
                for name in ("output", "error", "finished", "progress", "stream_read"):
                    h.pop(name, None)
                self.streams.pop(job_id, None)
                if job_id in self.final_signals:  # a waiter blocked on it waits for the next end
                    self.final_signals[job_id].clear()
        elif to is S.IN_PROGRESS:
            deadline = now_ms + int(h["timeout"])
            h["attempts"] = str(int(h.get("attempts") or 0) + 1)
            h.update(worker=wid, started=str(now_ms), lease=str(deadline))
            h.setdefault("first_started", str(now_ms))
            h.pop("finished", None)
            h.pop("progress", None)
            self.lease_deadlines[job_id] = deadline
            self._incr(ep, "in_progress")
        else:
            h.update(finished=str(now_ms), lease="")
            self._incr(ep, to.value.lower())
            if "webhook" in h:
                self.webhooks.append(job_id)
            if "watch" in h:
                self.final_signals.setdefault(job_id, asyncio.Event()).set()

    def _apply(
        self, job_id: str, to: JobStatus, now_ms: int, reason: str, wid: str, log_worker: str
    ) -> JobStatus:
        """The one door: check the table, leave, enter, log. Returns the state left."""
        h = self.jobs[job_id]
        frm = S(h["status"])
        check_transition(job_id, frm, to)
        self._leave(job_id, h, frm)
        self._enter(job_id, h, frm, to, now_ms, wid)
        entry = {"at": now_ms, "from": frm.value, "to": to.value, "reason": reason, "worker": log_worker}
        hist = self.history[job_id]
        hist.append(json.dumps(entry))
        del hist[:-HISTORY_LIMIT]
        if to in FINAL and self.keep_ms > 0:
            self.kept_until[job_id] = now_ms + self.keep_ms
        elif frm in FINAL:
            self.kept_until.pop(job_id, None)  # retried: lives on
        return frm

    def _move(
        self,
        job_id: str,
        to: str,
        now_ms: int,
        reason: str,
        expect_from: Sequence[JobStatus],
        expect_worker: str,
        error: str,
    ) -> Moved:
        h = self.jobs.get(job_id)
        if h is None:
            return Moved(job_id, False, False, None, None, "", "")
        frm, worker, ep = S(h["status"]), h.get("worker") or "", h["ep"]
        refused = Moved(job_id, False, True, frm, frm, worker, ep)
        if (expect_from and frm not in expect_from) or (expect_worker and worker != expect_worker):
            return refused
        if to == REQUEUE_OR_FAIL:
            target = after_lost_lease(int(h.get("attempts") or 0), int(h.get("max_retries") or 0))
        else:
            target = S(to)
        if not can_transition(frm, target):
            return refused
        self._apply(job_id, target, now_ms, reason, "", worker)
        if error and target in (S.FAILED, S.TIMED_OUT):
            h["error"] = error
        return Moved(job_id, True, True, frm, target, worker, ep)

    def _ordered(self, endpoint: str) -> list[str]:
        q = self.queues.get(endpoint, {})
        return sorted(q, key=lambda jid: (q[jid], jid))

    # The JobStore interface -----------------------------------------------------------------------

    async def submit(
        self, endpoint: str, jobs: Sequence[NewJob], max_queue_size: int | None, now_ms: int
    ) -> int:
        depth = len(self.queues[endpoint])
        if jobs and jobs[0].id in self.jobs:  # sent again after its reply was lost: written already
            return depth
        if max_queue_size and depth + len(jobs) > max_queue_size:
            raise QueueFull(
                f"queue of endpoint {endpoint!r} is full ({depth} queued, maxQueueSize {max_queue_size})",
                {"endpoint": endpoint, "queued": depth, "maxQueueSize": max_queue_size},
            )
        for j in jobs:
            self.seq += 1
            score = int(queue_score(j.low_priority, self.seq))
            h = self.jobs.setdefault(j.id, {})
            h.update(
                ep=endpoint, status=S.IN_QUEUE.value, input=j.input_json, created=str(now_ms),
                queued=str(now_ms), attempts="0", max_retries=str(j.max_retries),
                timeout=str(j.execution_timeout_ms), ttl=str(j.ttl_ms), low=str(int(j.low_priority)),
                score=str(score), retried="0",
            )  # fmt: skip
            if j.webhook:
                h["webhook"] = j.webhook
            self.queues[endpoint][j.id] = float(score)
            self.ttl_deadlines[j.id] = now_ms + j.ttl_ms
            self.created[j.id] = now_ms
        return depth + len(jobs)

    async def take(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int,
        now_ms: int,
        version: int | None = None,
        call_id: str | None = None,
    ) -> list[TakenJob]:
        last_id, last_taken = self.taken.get(worker_id, ("", []))
        if call_id is not None and call_id == last_id:
            held = [(j, self.jobs.get(j)) for j in last_taken]
            return [
                TakenJob(j, json.loads(h["input"]), int(h["attempts"]))
                for j, h in held
                if h is not None and h["status"] == S.IN_PROGRESS.value and h.get("worker") == worker_id
            ]
        if worker_id in self.draining:
            return []
        out = []
        for job_id in self._ordered(endpoint)[:max_jobs]:
            self.queues[endpoint].pop(job_id)
            h = self.jobs.get(job_id)
            if h is not None and h["status"] == S.IN_QUEUE.value:
                self._apply(job_id, S.IN_PROGRESS, now_ms, "taken", worker_id, worker_id)
                if version is None:
                    h.pop("version", None)
                else:
                    h["version"] = str(version)
                out.append(TakenJob(job_id, json.loads(h["input"]), int(h["attempts"])))
        if out and call_id is not None:
            self.taken[worker_id] = (call_id, [t.id for t in out])
        return out

    async def finish(self, items: Sequence[FinishItem], now_ms: int) -> list[FinishOutcome]:
        out = []
        for it in items:
            h = self.jobs.get(it.job_id)
            before = dict(h) if h is not None else {}
            applied = (
                h is not None
                and h["status"] == S.IN_PROGRESS.value
                and h.get("worker") == it.worker_id
                and can_transition(S.IN_PROGRESS, it.status)
            )
            if applied and h is not None:
                output = it.output_json
                chunks = self.streams.get(it.job_id)
                if it.is_stream and output in ("", "[]", "null") and chunks:
                    output = "[" + ",".join(chunks) + "]"
                if output:
                    h["output"] = output
                if it.error:
                    h["error"] = it.error
                self._apply(it.job_id, it.status, now_ms, "result", it.worker_id, it.worker_id)
            created, first, started = (before.get(f) for f in ("created", "first_started", "started"))
            out.append(
                FinishOutcome(
                    job_id=it.job_id,
                    applied=applied,
                    status=S(h["status"]) if h is not None else None,
                    endpoint=before.get("ep", ""),
                    queue_ms=int(first) - int(created) if applied and first and created else None,
                    execution_ms=now_ms - int(started) if applied and started else None,
                    webhook=applied and bool(before.get("webhook")),
                    awaited=applied and bool(before.get("qwatch")),
                )
            )
        return out

    async def move(
        self,
        job_id: str,
        to: str,
        now_ms: int,
        reason: str,
        *,
        expect_from: Sequence[JobStatus] = (),
        expect_worker: str = "",
        error: str = "",
    ) -> Moved:
        return self._move(job_id, to, now_ms, reason, expect_from, expect_worker, error)

    async def sweep(self, which: str, now_ms: int, limit: int) -> list[Moved]:
        frm, error = _SWEEPS[which]
        deadlines = self.ttl_deadlines if which == "ttl" else self.lease_deadlines
        due = sorted((at, jid) for jid, at in deadlines.items() if at <= now_ms)[:limit]
        out = []
        for _, job_id in due:
            moved = self._move(job_id, S.TIMED_OUT.value, now_ms, which, (frm,), "", error)
            if moved.moved:
                out.append(moved)
            else:
                deadlines.pop(job_id, None)
        return out

    async def watch_final(self, job_id: str, at_queue: bool = False) -> JobStatus | None:
        h = self.jobs.get(job_id)
        if h is None:
            return None
        status = S(h["status"])
        if status not in FINAL:
            h["qwatch" if at_queue else "watch"] = "1"
        return status

    async def await_final(self, job_id: str, timeout_s: float) -> JobStatus | None:
        signal = self.final_signals.setdefault(job_id, asyncio.Event())
        try:
            await asyncio.wait_for(signal.wait(), max(0.01, timeout_s))
        except TimeoutError:
            return None
        h = self.jobs.get(job_id)
        return S(h["status"]) if h is not None and S(h["status"]) in FINAL else None

    async def wait_step(
        self, job_id: str, timeout_s: float, *, endpoint: str | None = None, watched: bool = False
    ) -> JobView | None:
        if not watched:
            status = await self.watch_final(job_id)
            if status is None or status in FINAL or timeout_s <= 0:
                return endpoint_view(await self._view(job_id), endpoint)
        if timeout_s > 0:
            await self.await_final(job_id, timeout_s)
        return endpoint_view(await self._view(job_id), endpoint)

    async def _view(self, job_id: str) -> JobView | None:
        return (await self.get_statuses([job_id]))[0]

    async def held_by(self, worker_id: str) -> list[str]:
        running = S.IN_PROGRESS.value
        return [j for j, h in self.jobs.items() if h["status"] == running and h.get("worker") == worker_id]

    async def leased_to(self, worker_id: str) -> Redelivery:
        held = [(j, self.jobs[j]) for j in await self.held_by(worker_id)]
        self.fences[worker_id] += 1
        jobs = [TakenJob(j, json.loads(h["input"]), int(h["attempts"])) for j, h in held]
        return Redelivery(self.fences[worker_id], jobs)

    async def purge(self, endpoint: str, now_ms: int) -> int:
        n = 0
        for job_id in self._ordered(endpoint):
            if self._move(job_id, S.CANCELLED.value, now_ms, "purged", (S.IN_QUEUE,), "", "").moved:
                n += 1
            else:
                self.queues[endpoint].pop(job_id, None)
        return n

    def _held_by(self, job_id: str, worker_id: str) -> dict[str, str] | None:
        h = self.jobs.get(job_id)
        ok = h is not None and h["status"] == S.IN_PROGRESS.value and h.get("worker") == worker_id
        return h if ok else None

    async def push_chunks(
        self, job_id: str, worker_id: str, chunks_json: Sequence[str], first: int | None = None
    ) -> bool:
        h = self._held_by(job_id, worker_id)
        if h is None:
            return False
        skip = 0
        if first is not None:
            attempt, _, count = h.get("streamed", "").partition(":")
            skip = max(0, (int(count) if attempt == h["attempts"] else 0) - first)
            if skip >= len(chunks_json):
                return True
            h["streamed"] = f"{h['attempts']}:{first + len(chunks_json)}"
        self.streams[job_id].extend(chunks_json[skip:])
        return True

    async def read_stream(self, job_id: str) -> tuple[JobStatus, list[Any]]:
        h = self.jobs.get(job_id)
        if h is None:
            raise NotFound(f"job {job_id} not found", {"id": job_id})
        start = int(h.get("stream_read") or 0)
        chunks = self.streams.get(job_id, [])[start:]
        if chunks:
            h["stream_read"] = str(start + len(chunks))
        return S(h["status"]), [json.loads(c) for c in chunks]

    async def progress(self, job_id: str, worker_id: str, output_json: str) -> bool:
        h = self._held_by(job_id, worker_id)
        if h is not None:
            h["progress"] = output_json
        return h is not None

    async def get(self, job_id: str) -> JobView | None:
        h = self.jobs.get(job_id)
        return job_view(job_id, dict(h), list(self.history.get(job_id, []))) if h else None

    async def get_many(self, job_ids: Sequence[str]) -> list[JobView | None]:
        return [job_view(jid, dict(self.jobs[jid]), []) if jid in self.jobs else None for jid in job_ids]

    async def get_statuses(self, job_ids: Sequence[str]) -> list[JobView | None]:
        rows = [self.jobs.get(jid) for jid in job_ids]
        return [
            status_view(jid, [h.get(f) for f in STATUS_FIELDS]) if h else None
            for jid, h in zip(job_ids, rows, strict=True)
        ]

    async def get_fields(self, job_ids: Sequence[str]) -> list[tuple[str | None, str | None]]:
        rows = [self.jobs.get(jid, {}) for jid in job_ids]
        return [(h.get("status"), h.get("worker")) for h in rows]

    async def depth(self, endpoint: str) -> int:
        return len(self.queues.get(endpoint, {}))

    async def oldest_queued_ms(self, endpoint: str) -> int | None:
        head = self._ordered(endpoint)[:1]
        return int(self.jobs[head[0]]["created"]) if head else None

    async def queue_positions(self, jobs: Sequence[tuple[str, str]]) -> list[int | None]:
        return [
            self._ordered(endpoint).index(job_id) if job_id in self.queues.get(endpoint, {}) else None
            for endpoint, job_id in jobs
        ]

    async def counts(self, endpoint: str) -> dict[str, int]:
        return dict(self.counters.get(endpoint, {}))

    async def leases(self) -> list[tuple[str, str, str, int]]:
        rows = sorted((at, jid) for jid, at in self.lease_deadlines.items())
        return [(jid, self.jobs[jid].get("worker") or "", self.jobs[jid]["ep"], at) for at, jid in rows]

    async def set_draining(self, worker_id: str, draining: bool) -> None:
        if draining:
            self.draining.add(worker_id)
        else:
            self.draining.discard(worker_id)

    async def list_jobs(self, limit: int, cursor: JobCursor | None) -> list[tuple[str, int]]:
        rows = sorted(((at, jid) for jid, at in self.created.items()), reverse=True)
        if cursor is not None and cursor.after_id is None:
            rows = [(at, jid) for at, jid in rows if at < cursor.before_ms]
        elif cursor is not None:
            rows = [(at, jid) for at, jid in rows if (at, jid) < (cursor.before_ms, cursor.after_id)]
        return [(jid, at) for at, jid in rows[:limit]]

    async def keep_results(self, keep_ms: int) -> None:
        self.keep_ms = keep_ms

    async def forget_deleted(self, now_ms: int, limit: int) -> int:
        oldest = sorted(self.created, key=lambda jid: self.created[jid])[:limit]
        gone = [jid for jid in oldest if self.kept_until.get(jid, now_ms + 1) <= now_ms]
        for jid in gone:
            for kept in (self.jobs, self.history, self.streams, self.created, self.kept_until):
                kept.pop(jid, None)
        return len(gone)

    # Endpoints, workers, webhooks and small documents ---------------------------------------------

    async def put_endpoint(self, name: str, spec_json: str) -> None:
        self.endpoints[name] = spec_json

    async def delete_endpoint(self, name: str) -> bool:
        self.versions.pop(name, None)
        self.webhook_outcome_lists.pop(name, None)
        return self.endpoints.pop(name, None) is not None

    async def put_versions(self, endpoint: str, records: dict[int, str], forget: Sequence[int] = ()) -> None:
        kept = self.versions.setdefault(endpoint, {})
        kept.update(records)
        for number in forget:
            kept.pop(number, None)

    async def load_versions(self, endpoint: str) -> dict[int, str]:
        return dict(self.versions.get(endpoint, {}))

    async def record_packages(self, arrived_ms: dict[str, int]) -> None:
        self.packages.update(arrived_ms)

    async def load_packages(self) -> dict[str, int]:
        return dict(self.packages)

    async def forget_packages(self, uris: Sequence[str]) -> None:
        for uri in uris:
            self.packages.pop(uri, None)

    async def load_endpoint(self, name: str) -> str | None:
        return self.endpoints.get(name)

    async def load_endpoints(self) -> dict[str, str]:
        return dict(self.endpoints)

    async def save_workers(self, records: dict[str, str], removed: Sequence[str] = ()) -> None:
        self.workers.update(records)
        for worker_id in removed:
            self.workers.pop(worker_id, None)

    async def load_worker(self, worker_id: str) -> str | None:
        return self.workers.get(worker_id)

    async def load_workers(self) -> dict[str, str]:
        return dict(self.workers)

    async def draining_workers(self) -> set[str]:
        return set(self.draining)

    async def webhook_claim(self, max_items: int) -> list[str]:
        claimed, self.webhooks = self.webhooks[:max_items], self.webhooks[max_items:]
        self.webhooks_inflight += claimed
        return claimed

    async def webhook_done(self, job_id: str, endpoint: str = "", outcome: str | None = None) -> None:
        if job_id in self.webhooks_inflight:
            self.webhooks_inflight.remove(job_id)
        if outcome is not None:
            kept = self.webhook_outcome_lists.setdefault(endpoint, [])
            kept.append(outcome)
            del kept[:-KEPT_PER_ENDPOINT]

    async def webhook_outcomes(self, endpoints: Sequence[str]) -> dict[str, list[str]]:
        return {
            e: list(self.webhook_outcome_lists[e]) for e in endpoints if self.webhook_outcome_lists.get(e)
        }

    async def webhook_recover(self) -> int:
        n = len(self.webhooks_inflight)
        self.webhooks, self.webhooks_inflight = self.webhooks_inflight + self.webhooks, []
        return n

    async def get_doc(self, key: str) -> Any:
        raw = self.docs.get(key)
        return json.loads(raw) if raw else None

    async def put_doc(self, key: str, value: Any) -> None:
        self.docs[key] = json.dumps(value)


def _implements_job_store(store: MemoryStore) -> JobStore:
    """Never called: mypy checks here that MemoryStore satisfies the JobStore protocol."""
    return store
