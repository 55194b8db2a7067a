"""What the dispatcher needs from storage, and the values that cross that line.

:class:`orchestrator.store.redis.RedisStore` is the real store; :class:`orchestrator.store.memory.MemoryStore`
the in-memory fake for unit tests. Both follow :data:`orchestrator.core.jobs.TRANSITIONS`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.core.jobs import JobCursor, JobStatus, JobView
from orchestrator.core.models import NewJob

REQUEUE_OR_FAIL = "REQUEUE_OR_FAIL"


@dataclass(frozen=True)
class TakenJob:
    """A job handed to a worker: what the worker receives."""

    id: str
    input: Any
    attempt: int

    def wire(self) -> dict[str, Any]:
        """The job dict the RunPod worker SDK (and our replicas) hand to the handler."""
        return {"id": self.id, "input": self.input, "attempt": self.attempt}


@dataclass(frozen=True)
class Claim:
    """A replica's take from the store (the CLAIM step: :meth:`~orchestrator.store.redis.RedisStore.claim`):
    up to ``max_jobs`` jobs for ``worker_id`` at ``now_ms``, recorded as run by ``version`` (None:
    unknown); with ``park``, the replica parked when there is none; refused whole when ``fence`` is older
    than the replica's (:class:`Redelivery`)."""

    endpoint: str
    worker_id: str
    max_jobs: int
    now_ms: int
    version: int | None = None
    park: bool = False
    fence: int = 0


@dataclass(frozen=True)
class Redelivery:
    """What :meth:`JobStore.leased_to` gives a replica whose own take from the store failed: every running
    job leased to it, and its new fence (a take it sends must carry it: one with an older fence, sent
    before, is refused)."""

    fence: int
    jobs: list[TakenJob]

    def wire(self) -> dict[str, Any]:
        return {"fence": self.fence, "jobs": [j.wire() for j in self.jobs]}


@dataclass(frozen=True)
class FinishItem:
    """A worker's final result for one job."""

    job_id: str
    worker_id: str
    status: JobStatus
    output_json: str = ""
    error: str = ""
    is_stream: bool = False


@dataclass(frozen=True)
class FinishOutcome:
    """What the store did with a result: ``applied`` (first final result), else dropped and why."""

    job_id: str
    applied: bool
    status: JobStatus | None
    endpoint: str
    queue_ms: int | None = None
    execution_ms: int | None = None
    webhook: bool = False  # applied, and the job's webhook delivery is queued
    awaited: bool = False  # applied, and a caller waits at the queue for the job (watch_final at_queue)

    @property
    def drop_reason(self) -> str | None:
        if self.applied:
            return None
        return "unknown_job" if self.status is None else "not_held"


STORE_MEMORY_HIGH = 0.8
"""The share of the store's maxmemory in use past which ``ripple doctor`` and ``ripple status`` say so."""
STORE_MEMORY_CRITICAL = 0.95
"""... and past which doctor's finding is HIGH: the next images in and out fill it."""


@dataclass(frozen=True)
class StoreMemory:
    """What the store says of its memory: ``used_bytes``; ``max_bytes`` (its ``maxmemory``, 0: no limit),
    past which Redis refuses writes or, by its ``policy`` (``maxmemory-policy``), evicts keys."""

    used_bytes: int
    max_bytes: int
    policy: str

    def wire(self) -> dict[str, Any]:
        """Its fields, with ``share`` (:attr:`share`, rounded) and ``high`` (past :data:`STORE_MEMORY_HIGH`)
        so that readers (the web UI) need not judge it again."""
        share = self.share
        return {
            "usedBytes": self.used_bytes,
            "maxBytes": self.max_bytes,
            "policy": self.policy,
            "share": None if share is None else round(share, 4),
            "high": share is not None and share >= STORE_MEMORY_HIGH,
        }

    @classmethod
    def from_wire(cls, wire: object) -> StoreMemory | None:
        """Read back from :meth:`wire` (``/health/ready``'s ``storeMemory``); None when it is not one."""
        if not isinstance(wire, dict):
            return None
        return cls(
            int(wire.get("usedBytes") or 0), int(wire.get("maxBytes") or 0), str(wire.get("policy") or "")
        )

    @property
    def share(self) -> float | None:
        """Used over ``maxmemory``: 1 or more is full (Redis refuses what adds); None without a limit."""
        return self.used_bytes / self.max_bytes if self.max_bytes else None


@dataclass(frozen=True)
class Moved:
    """Reply of a compare-and-set: ``moved`` tells whether it happened; ``worker`` held the job before."""

    job_id: str
    moved: bool
    exists: bool
    before: JobStatus | None
    after: JobStatus | None
    worker: str
    endpoint: str


class JobStore(Protocol):
    """Everything the dispatcher (:mod:`orchestrator.core.dispatch`) needs from storage. Every method is
    atomic on its own. :class:`~orchestrator.store.redis.RedisStore` and
    :class:`~orchestrator.store.memory.MemoryStore` both implement it (checked by mypy in each module)."""

    async def ping(self) -> bool:
        """True when the store answers (raises when it cannot be reached)."""
        ...

    async def memory(self) -> StoreMemory | None:
        """The store's memory and its limit (None: a store without one, the in-memory fake)."""
        ...

    async def submit(
        self, endpoint: str, jobs: Sequence[NewJob], max_queue_size: int | None, now_ms: int
    ) -> int:
        """Write ``jobs`` as IN_QUEUE, all or nothing; return the new depth. Raises QueueFull."""
        ...

    async def take(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int,
        now_ms: int,
        version: int | None = None,
        call_id: str | None = None,
    ) -> list[TakenJob]:
        """Lease up to ``max_jobs`` queued jobs to the worker; none when it is draining. ``version`` (the
        endpoint version the worker runs, None when unknown) is recorded on each job taken, replacing
        what an earlier attempt recorded. ``call_id`` (None: a fresh one): a take made again with the id
        of the worker's last take that handed out jobs answers those it still holds, and takes no more (a
        caller's retry of a take whose reply it lost)."""
        ...

    async def finish(self, items: Sequence[FinishItem], now_ms: int) -> list[FinishOutcome]:
        """Apply final results; the first final result wins, later ones are refused."""
        ...

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
        """Compare-and-set ``job_id`` to ``to`` (a JobStatus value or REQUEUE_OR_FAIL)."""
        ...

    async def sweep(self, which: str, now_ms: int, limit: int) -> list[Moved]:
        """Time out queued jobs past ttl (``"ttl"``) or running jobs past their deadline (``"leases"``)."""
        ...

    async def watch_final(self, job_id: str, at_queue: bool = False) -> JobStatus | None:
        """The job's status (None: no such job); a job not final yet is marked watched in the same atomic
        step, so the step that makes it final signals :meth:`await_final` (durable first: the signal is
        written by the same script as the final state). ``at_queue``: the waiter is the queue actor, told
        by the worker that finishes the job instead (:meth:`finish` says so: ``FinishOutcome.awaited``),
        and no signal is written."""
        ...

    async def await_final(self, job_id: str, timeout_s: float) -> JobStatus | None:
        """Block until the watched job's final signal exists (returns the final status it carries), or
        ``timeout_s`` (> 0) passes (None). Does not consume the signal: every waiter sees it; a retry of the
        job clears it."""
        ...

    async def wait_step(
        self, job_id: str, timeout_s: float, *, endpoint: str | None = None, watched: bool = False
    ) -> JobView | None:
        """One slice of waiting for a job's end (:mod:`orchestrator.store.finals`): unless ``watched`` (marked
        already, at submit or by an earlier step), the job is marked and read as :meth:`watch_final` does;
        then, when it is not final and ``timeout_s`` > 0, up to ``timeout_s`` is waited for its final signal
        (as :meth:`await_final`) and it is read again. Returns the job as last read (final or not, without
        history); None when there is no such job, or when ``endpoint`` is given and it is another's."""
        ...

    async def held_by(self, worker_id: str) -> list[str]:
        """The running jobs ``worker_id`` holds, as the store says (a scan of every running job: for when a
        worker is lost, not per job). The worker is unparked and its inbox emptied in the same step: no job
        is handed to it any more, and none handed before is read again (each is among those returned)."""
        ...

    async def leased_to(self, worker_id: str) -> Redelivery:
        """:meth:`held_by` with each job's input and attempts: what a replica whose own take from the
        store failed is handed again (a job handed to it while it was parked, or taken by a step whose
        reply never reached it), the same step and the same scan; and the worker's fence, raised in that
        step (a take from the store that the replica sent before, and that reaches the store only after
        this, is refused: :meth:`~orchestrator.store.redis.RedisStore.claim`)."""
        ...

    async def purge(self, endpoint: str, now_ms: int) -> int: ...
    async def push_chunks(
        self, job_id: str, worker_id: str, chunks_json: Sequence[str], first: int | None = None
    ) -> bool:
        """Append stream chunks while ``worker_id`` holds the job (False when it does not). ``first``: the
        index of the first of them among the chunks this attempt pushed; sent again, only those not there
        yet are appended (None: all of them)."""
        ...

    async def read_stream(self, job_id: str) -> tuple[JobStatus, list[Any]]: ...
    async def progress(self, job_id: str, worker_id: str, output_json: str) -> bool: ...
    async def get(self, job_id: str) -> JobView | None: ...
    async def get_fields(self, job_ids: Sequence[str]) -> list[tuple[str | None, str | None]]: ...
    async def depth(self, endpoint: str) -> int: ...
    async def counts(self, endpoint: str) -> dict[str, int]: ...
    async def get_many(self, job_ids: Sequence[str]) -> list[JobView | None]:
        """Jobs (without history) in the order asked, None for unknown ids."""
        ...

    async def get_statuses(self, job_ids: Sequence[str]) -> list[JobView | None]:
        """As :meth:`get_many` without the jobs' inputs (:data:`STATUS_FIELDS`; ``input`` reads None): what
        a status object, a wait or a webhook needs, in one round trip. An input of megabytes is not read
        back for each poll of its job."""
        ...

    async def oldest_queued_ms(self, endpoint: str) -> int | None:
        """Creation time of the job at the head of the queue (None when empty)."""
        ...

    async def queue_positions(self, jobs: Sequence[tuple[str, str]]) -> list[int | None]:
        """For each ``(endpoint, job_id)``, how many jobs are ahead of it in its endpoint's queue (0: next),
        in the order asked and one round trip; None for a job not queued."""
        ...

    async def leases(self) -> list[tuple[str, str, str, int]]:
        """Every in-progress job as ``(job_id, worker_id, endpoint, deadline_ms)``."""
        ...

    async def list_jobs(self, limit: int, cursor: JobCursor | None) -> list[tuple[str, int]]:
        """Up to ``limit`` job ids newest first (jobs created at the same time: by id, descending) with their
        creation times (ms), from ``cursor`` on when given. An id may be of a job since deleted
        (:meth:`forget_deleted` trims them)."""
        ...

    async def keep_results(self, keep_ms: int) -> None:
        """From now on, a job that becomes final (COMPLETED, FAILED, TIMED_OUT, CANCELLED) is deleted
        ``keep_ms`` after, with its history and stream (0: kept for ever); one retried before then is not.
        Until told, the store keeps them ``DEFAULT_KEEP_RESULTS_S``."""
        ...

    async def forget_deleted(self, now_ms: int, limit: int) -> int:
        """Trim the job listing of those of its ``limit`` oldest ids whose jobs were deleted (Redis deletes
        a job kept long enough itself; the in-memory store deletes those due at ``now_ms`` here). Returns
        how many ids went."""
        ...

    # Endpoints, workers and webhooks.

    async def put_endpoint(self, name: str, spec_json: str) -> None: ...
    async def delete_endpoint(self, name: str) -> bool:
        """Delete the endpoint's spec and its versions."""
        ...

    async def put_versions(self, endpoint: str, records: dict[int, str], forget: Sequence[int] = ()) -> None:
        """Upsert versions of an endpoint (JSON by version number) and delete the records of ``forget``,
        atomically."""
        ...

    async def load_versions(self, endpoint: str) -> dict[int, str]:
        """Every version of an endpoint (JSON by number); empty when it has none."""
        ...

    async def load_endpoint(self, name: str) -> str | None:
        """One endpoint's spec (JSON), or None."""
        ...

    async def load_endpoints(self) -> dict[str, str]:
        """Every endpoint spec (JSON) by name."""
        ...

    async def record_packages(self, arrived_ms: dict[str, int]) -> None:
        """Record code packages (URI -> when it arrived, ms), replacing earlier times."""
        ...

    async def load_packages(self) -> dict[str, int]:
        """Every recorded code package: URI -> when it last arrived (ms)."""
        ...

    async def forget_packages(self, uris: Sequence[str]) -> None:
        """Drop the records of deleted code packages."""
        ...

    async def save_workers(self, records: dict[str, str], removed: Sequence[str] = ()) -> None:
        """Upsert worker records (JSON by id) and delete ``removed``, atomically."""
        ...

    async def load_worker(self, worker_id: str) -> str | None: ...
    async def load_workers(self) -> dict[str, str]: ...
    async def set_draining(self, worker_id: str, draining: bool) -> None: ...
    async def draining_workers(self) -> set[str]: ...
    async def webhook_claim(self, max_items: int) -> list[str]:
        """Move up to ``max_items`` pending webhook job ids to in-flight and return them."""
        ...

    async def webhook_done(self, job_id: str, endpoint: str = "", outcome: str | None = None) -> None:
        """The delivery of ``job_id`` ended: off in-flight, and ``outcome`` (``core.webhook_outcomes.entry``)
        kept among ``endpoint``'s latest (``KEPT_PER_ENDPOINT``, for ``WINDOW_S``) in the same step."""
        ...

    async def webhook_outcomes(self, endpoints: Sequence[str]) -> dict[str, list[str]]:
        """The kept outcomes of each of ``endpoints`` that has any, oldest first (deleting an endpoint
        deletes its outcomes)."""
        ...

    async def webhook_recover(self) -> int:
        """After a restart: put in-flight deliveries back in front of the pending list; how many."""
        ...


def endpoint_view(job: JobView | None, endpoint: str | None) -> JobView | None:
    """``job``, or None when ``endpoint`` is given and the job is another endpoint's."""
    return None if job is None or (endpoint and job.endpoint != endpoint) else job


JOB_FIELDS = (
    "ep", "status", "created", "input", "output", "error", "webhook", "worker", "started", "finished",
    "first_started", "attempts", "max_retries", "timeout", "ttl", "low", "retried", "progress", "version",
)  # fmt: skip
"""The fields of a job's hash that :func:`job_view` reads."""

STATUS_FIELDS = tuple(f for f in JOB_FIELDS if f != "input")
""":data:`JOB_FIELDS` less the input: a status read (:meth:`JobStore.get_statuses`, the waits)."""


def status_view(job_id: str, values: Sequence[str | None]) -> JobView | None:
    """A status read's values (:data:`STATUS_FIELDS`, in order; None for a field not set) as a job without
    its input and history; None when the job does not exist (no status)."""
    h = {f: v for f, v in zip(STATUS_FIELDS, values, strict=True) if v is not None}
    return job_view(job_id, h, []) if h.get("status") else None


def job_view(job_id: str, h: dict[str, str], history: list[str]) -> JobView:
    def num(name: str) -> int | None:
        v = h.get(name)
        return int(v) if v not in (None, "") else None

    return JobView(
        id=job_id,
        endpoint=h.get("ep", ""),
        status=JobStatus(h["status"]),
        created_ms=num("created") or 0,
        input_json=h.get("input") or "",
        output_json=h.get("output") or "",
        error=h.get("error") or None,
        webhook=h.get("webhook") or None,
        worker_id=h.get("worker") or None,
        started_ms=num("started"),
        finished_ms=num("finished"),
        first_started_ms=num("first_started"),
        attempts=num("attempts") or 0,
        max_retries=num("max_retries") or 0,
        execution_timeout_ms=num("timeout") or 0,
        ttl_ms=num("ttl") or 0,
        low_priority=h.get("low") == "1",
        retried=num("retried") or 0,
        progress_json=h.get("progress") or "",
        version=num("version"),
        history=tuple(json.loads(e) for e in history),
    )
