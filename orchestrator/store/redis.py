"""The durable job store on Redis: every job write is here; every state change is a Lua compare-and-set.

:class:`RedisStore` is the real one (redis-py asyncio); :class:`orchestrator.store.memory.MemoryStore`
implements the same :class:`JobStore` protocol in memory for unit tests. Both follow
:data:`orchestrator.core.jobs.TRANSITIONS`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from orchestrator.core.dispatch import new_job
from orchestrator.core.errors import NotFound, QueueFull
from orchestrator.core.jobs import FINAL, JobCursor, JobStatus, JobView
from orchestrator.core.models import NewJob, RunRequest
from orchestrator.core.webhook_outcomes import KEPT_PER_ENDPOINT, WINDOW_S
from orchestrator.store import scripts as lua
from orchestrator.store.keys import Keys
from orchestrator.store.protocol import (
    STATUS_FIELDS,
    Claim,
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
from orchestrator.store.submits import SPEC_READS, SpecCache, spec_kept_changing


def moved_from_reply(job_id: str, r: list[Any]) -> Moved:
    code, before, worker, ep, to = int(r[0]), r[1], r[2], r[3], r[4]
    return Moved(
        job_id=job_id,
        moved=code == 1,
        exists=code != -1,
        before=JobStatus(before) if before else None,
        after=JobStatus(to) if code == 1 else (JobStatus(before) if before else None),
        worker=worker,
        endpoint=ep,
    )


class SpecChanged(Exception):
    """SUBMIT wrote nothing: the endpoint's spec the jobs were built from is no longer the stored one (or the
    endpoint is gone). The caller reads the spec again (:mod:`orchestrator.store.submits`)."""


def submit_args(
    prefix: str,
    endpoint: str,
    jobs: Sequence[NewJob],
    max_queue_size: int | None,
    now_ms: int,
    spec_sha: str = "",
    watch: bool = False,
) -> list[Any]:
    """ARGV of the SUBMIT script (also run by :class:`orchestrator.store.finals.SyncFinals`)."""
    args: list[Any] = [prefix, endpoint, max_queue_size or 0, now_ms, spec_sha, int(watch), len(jobs)]
    for j in jobs:
        args += [
            j.id,
            j.input_json,
            j.webhook or "",
            int(j.low_priority),
            j.execution_timeout_ms,
            j.ttl_ms,
            j.max_retries,
        ]
    return args


class Submitted(NamedTuple):
    """One job accepted by the SUBMIT step: its id; whether it went straight to a parked replica (``handed``:
    nothing waits on the queue's notice of it, which is bookkeeping then); the job as read after a first
    wait for its end, without its input (None without one, or when it was not read)."""

    job_id: str
    handed: bool
    job: JobView | None = None


def submit_reply(reply: list[Any], endpoint: str, max_queue_size: int | None) -> tuple[int, int]:
    """The SUBMIT script's reply: the queue's new depth and how many jobs were handed to parked replicas.
    Raises QueueFull when it refused the jobs, SpecChanged when the spec they were built from is not the
    stored one."""
    code = int(reply[0])
    if code == -2:
        raise SpecChanged(endpoint)
    if code == -1:
        raise QueueFull(
            f"queue of endpoint {endpoint!r} is full ({reply[1]} queued, maxQueueSize {max_queue_size})",
            {"endpoint": endpoint, "queued": int(reply[1]), "maxQueueSize": max_queue_size},
        )
    return int(reply[1]), int(reply[2])


def watched_view(job_id: str, values: Sequence[str | None]) -> JobView | None:
    """The WATCH_FINAL script's reply (the job's :data:`STATUS_FIELDS`) as a job; None for {}."""
    return status_view(job_id, values) if values else None


RETRY_WHILE_RESTARTING_S = 30.0
"""How long a command is tried again, by default, while Redis does not answer (``RIPPLE_STORE_RETRY_S``)."""


def restart_backoff(retry_s: float) -> tuple[ExponentialBackoff, int]:
    """redis-py's backoff for retrying a command while Redis restarts or fails over, and how many tries:
    waits of 0.05 s doubling to 2 s, as many as add up to at least ``retry_s`` (none for 0). A command's own
    time is not counted, so a store that refuses connections at once is given about ``retry_s``; one whose
    connections time out, longer."""
    backoff = ExponentialBackoff(cap=2.0, base=0.05)
    retries, waited_s = 0, 0.0
    while waited_s < retry_s:
        retries += 1
        waited_s += backoff.compute(retries)
    return backoff, retries


def restart_retry(retry_s: float) -> Retry:
    """:func:`restart_backoff` as an asyncio client's retry."""
    return Retry(*restart_backoff(retry_s))


RETRIED_ERRORS: list[type[Exception]] = [BusyLoadingError, ConnectionError, TimeoutError]
"""What a client retries: a restarting Redis refuses connections, then answers LOADING while it replays its
AOF (the command did not run); a read that timed out may have run, so every step is safe to send again and
answers what its first run did (a submit or a stream push writes nothing again; a take, a result, a stream
read, a MOVE, SWEEP, PURGE or webhook claim is answered by its call id: :func:`_call_id`; the other steps are
compare-and-set or write the same again). A replica's blocking pop of its inbox is the exception: it is never
sent again (:meth:`RedisStore.wait_for_job`)."""


def retrying_client(url: str, retry_s: float) -> aioredis.Redis:
    """An asyncio client of the Redis at ``url`` (decoded responses) that sends a command again for about
    ``retry_s`` while Redis does not answer (:func:`restart_retry`, :data:`RETRIED_ERRORS`)."""
    return aioredis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        retry=restart_retry(retry_s),
        retry_on_error=RETRIED_ERRORS,
    )


class RedisStore:
    """:class:`JobStore` on Redis (decoded responses). Create with :meth:`connect`."""

    def __init__(self, client: aioredis.Redis, keys: Keys, blocking: aioredis.Redis | None = None) -> None:
        """``blocking``: the client of :meth:`wait_for_job`, which must not send a command again (default:
        ``client``)."""
        self.r = client
        self.k = keys
        self._blocking = client if blocking is None else blocking
        self._submit = client.register_script(lua.SUBMIT)
        self._take = client.register_script(lua.TAKE)
        self._claim = client.register_script(lua.CLAIM)
        self._finish = client.register_script(lua.FINISH)
        self._finish_claim = client.register_script(lua.FINISH_CLAIM)
        self._move = client.register_script(lua.MOVE)
        self._sweep = client.register_script(lua.SWEEP)
        self._purge = client.register_script(lua.PURGE)
        self._webhook_claim = client.register_script(lua.WEBHOOK_CLAIM)
        self._push = client.register_script(lua.STREAM_PUSH)
        self._read = client.register_script(lua.STREAM_READ)
        self._progress = client.register_script(lua.PROGRESS)
        self._forget_deleted = client.register_script(lua.FORGET_DELETED)
        self._watch = client.register_script(lua.WATCH_FINAL)
        self._list_jobs = client.register_script(lua.LIST_JOBS)
        self._held_by = client.register_script(lua.HELD_BY)
        self.specs = SpecCache()  # for submit_and_wait

    @classmethod
    def connect(
        cls, url: str, prefix: str = "ripple:", retry_s: float = RETRY_WHILE_RESTARTING_S
    ) -> RedisStore:
        """A store on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``); a command is tried
        again for about ``retry_s`` while Redis does not answer (:func:`restart_retry`), but for
        :meth:`wait_for_job`'s, on a client of its own that never sends one again."""
        client = retrying_client(url, retry_s)
        blocking = aioredis.from_url(
            url, decode_responses=True, health_check_interval=30, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, Keys(prefix), blocking)

    async def close(self) -> None:
        await self.r.aclose()
        if self._blocking is not self.r:
            await self._blocking.aclose()

    async def ping(self) -> bool:
        return bool(await self.r.ping())

    async def memory(self) -> StoreMemory | None:
        info = await self.r.info("memory")
        return StoreMemory(
            int(info["used_memory"]), int(info.get("maxmemory", 0)), str(info.get("maxmemory_policy", ""))
        )

    @property
    def _p(self) -> str:
        return self.k.prefix

    async def submit(
        self, endpoint: str, jobs: Sequence[NewJob], max_queue_size: int | None, now_ms: int
    ) -> int:
        reply = await self._submit(args=submit_args(self._p, endpoint, jobs, max_queue_size, now_ms))
        return submit_reply(reply, endpoint, max_queue_size)[0]

    async def submit_and_wait(
        self, endpoint: str, request: RunRequest, now_ms: int, wait_s: float, *, watch: bool = True
    ) -> Submitted:
        """Accept one job for ``request``, built from the endpoint's spec as stored (read once and kept:
        :mod:`orchestrator.store.submits`) and written by the SUBMIT step (IN_QUEUE, ``maxQueueSize``
        enforced, handed to a parked replica when one waits; durable before this returns; ``watch``: marked
        watched); with ``wait_s`` > 0 (the job watched) also a first wait for the job's end in the same
        round trip: the SUBMIT step pipelined with the wait on its final signal (which SUBMIT ends at once
        when it refuses the job) and the read after it (``Submitted.job``). Raises NotFound, QueueFull,
        Conflict."""
        for _ in range(SPEC_READS):
            known = self.specs.get(endpoint) or self.specs.learn(endpoint, await self.load_endpoint(endpoint))
            job = new_job(endpoint, known.spec, request)
            maxq = known.spec.max_queue_size
            args = submit_args(self._p, endpoint, [job], maxq, now_ms, known.sha1, watch or wait_s > 0)
            try:
                if wait_s <= 0:
                    _, handed = submit_reply(await self._submit(args=args), endpoint, maxq)
                    return Submitted(job.id, handed > 0)
                reply, values = await self._submit_then_wait(job.id, args, wait_s)
                _, handed = submit_reply(reply, endpoint, maxq)
            except SpecChanged:
                self.specs.forget(endpoint)
                continue
            return Submitted(job.id, handed > 0, status_view(job.id, values) if values else None)
        raise spec_kept_changing(endpoint)

    async def _submit_then_wait(
        self, job_id: str, args: list[Any], wait_s: float
    ) -> tuple[Any, list[str | None] | None]:
        """SUBMIT, the wait on the job's final signal and the status read of the job, pipelined. SUBMIT goes
        as EVAL with the script's text (Redis keeps it compiled): a script Redis lost (a restart) cannot
        fail the first command and leave the wait after it blocking, and a pipeline's own script check would
        cost a round trip."""
        fin = self.k.fin(job_id)
        async with self.r.pipeline(transaction=False) as p:
            p.eval(lua.SUBMIT, 0, *args)
            p.blmove(fin, fin, max(0.01, wait_s), "RIGHT", "LEFT")
            p.hmget(self.k.job(job_id), STATUS_FIELDS)
            reply, _, values = await p.execute(raise_on_error=False)
        if isinstance(reply, Exception):
            raise reply
        return reply, values if isinstance(values, list) else None  # a failed read: the caller waits on

    async def take(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int,
        now_ms: int,
        version: int | None = None,
        call_id: str | None = None,
    ) -> list[TakenJob]:
        ver = "" if version is None else str(int(version))
        call = call_id or _call_id()
        reply = await self._take(args=[self._p, endpoint, worker_id, max_jobs, now_ms, ver, call])
        return _taken(reply)

    async def claim(self, claim: Claim) -> list[TakenJob] | None:
        """A replica's take (the CLAIM step): the jobs handed to it while it was parked, whatever
        ``max_jobs``, then up to ``max_jobs`` more from the queue as :meth:`take` (none while draining);
        with ``park`` and nothing at all, the replica is parked: SUBMIT hands it the job TAKE would give,
        leased to it, through its inbox (:meth:`wait_for_job`). Unparked by every call. None, and nothing
        done, when ``fence`` is older than the replica's (raised by :meth:`leased_to` since: the replica
        asks for its jobs again and takes with the fence it gets)."""
        return _claimed(await self._claim(args=_claim_args(self._p, claim)))

    async def finish_and_claim(
        self, results: Sequence[FinishItem], claim: Claim
    ) -> tuple[list[FinishOutcome], list[TakenJob] | None]:
        """:meth:`finish` of the replica's ``results``, then its :meth:`claim`, in one atomic step (one
        round trip, and a caller waiting on a result is woken before the take): the outcomes in order and
        the jobs taken (None: fenced, as :meth:`claim`; the results are finished all the same)."""
        done, taken = await self._finish_claim(args=_claim_args(self._p, claim) + _finish_args(results))
        return _outcomes(results, done, claim.now_ms), _claimed(taken)

    async def wait_for_job(self, endpoint: str, worker_id: str, timeout_s: float) -> TakenJob | None:
        """Block up to ``timeout_s`` on a parked replica's inbox and the endpoint's wake list. A job handed
        to it (leased to it, and the replica no longer parked) is returned; None for anything else (a
        wake token, a :meth:`nudge`, the time out): then :meth:`claim` without parking. An input over
        :data:`~orchestrator.store.scripts.INBOX_INPUT_BYTES` is not in the entry: it is read from the job.

        The pop is not sent again when its reply is lost (it may have taken a job the caller would then never
        get): the error is raised, and the caller asks for the jobs leased to it (``JobQueue.redeliver``)."""
        got = await self._blocking.blpop(
            [self.k.inbox(worker_id), self.k.wake(endpoint)], max(0.01, timeout_s)
        )
        if got is None or got[0] != self.k.inbox(worker_id) or not got[1]:
            return None
        job_id, attempts, input_json = str(got[1]).split("\n", 2)
        if not input_json:
            input_json = await self.r.hget(self.k.job(job_id), "input")
            if input_json is None:  # deleted since (cancelled, and kept no longer): nothing to run
                return None
        return TakenJob(job_id, json.loads(input_json), int(attempts))

    async def nudge(self, worker_id: str) -> None:
        """End a :meth:`wait_for_job` of ``worker_id`` now, with an empty element (the reply of a blocked
        read is never cut off: a cancelled one could lose a handed job)."""
        key = self.k.inbox(worker_id)
        async with self.r.pipeline(transaction=False) as p:
            p.rpush(key, "")
            p.pexpire(key, lua.INBOX_TTL_MS)
            await p.execute()

    async def finish(self, items: Sequence[FinishItem], now_ms: int) -> list[FinishOutcome]:
        if not items:
            return []
        return _outcomes(items, await self._finish(args=[self._p, now_ms, *_finish_args(items)]), now_ms)

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
        frm = ",".join(s.value for s in expect_from)
        r = await self._move(
            args=[self._p, job_id, to, now_ms, reason, frm, expect_worker, error, _call_id()]
        )
        return moved_from_reply(job_id, r)

    async def sweep(self, which: str, now_ms: int, limit: int) -> list[Moved]:
        r = await self._sweep(args=[self._p, which, now_ms, limit, _call_id()])
        return [
            Moved(r[i], True, True, JobStatus(r[i + 1]), JobStatus.TIMED_OUT, r[i + 2], r[i + 3])
            for i in range(0, len(r), 4)
        ]

    async def watch_final(self, job_id: str, at_queue: bool = False) -> JobStatus | None:
        job = watched_view(job_id, await self._watch(args=[self._p, job_id, "", "q" if at_queue else ""]))
        return None if job is None else job.status

    async def await_final(self, job_id: str, timeout_s: float) -> JobStatus | None:
        # BLMOVE from the list to itself: returns its element without taking it, so every waiter wakes.
        key = self.k.fin(job_id)
        got = await self.r.blmove(key, key, max(0.01, timeout_s), "RIGHT", "LEFT")
        return JobStatus(got) if got else None

    async def wait_step(
        self, job_id: str, timeout_s: float, *, endpoint: str | None = None, watched: bool = False
    ) -> JobView | None:
        # Two round trips at most: the watch step returns the job itself, and the wait on the final signal
        # is pipelined with the read after it (Redis runs the read once the wait returns).
        if not watched:
            job = watched_view(job_id, await self._watch(args=[self._p, job_id, endpoint or ""]))
            if job is None or job.status in FINAL or timeout_s <= 0:
                return job
        key = self.k.fin(job_id)
        async with self.r.pipeline(transaction=False) as p:
            if timeout_s > 0:
                p.blmove(key, key, max(0.01, timeout_s), "RIGHT", "LEFT")
            p.hmget(self.k.job(job_id), STATUS_FIELDS)
            values = (await p.execute())[-1]
        return endpoint_view(status_view(job_id, values), endpoint)

    async def held_by(self, worker_id: str) -> list[str]:
        return [str(i) for i in (await self._held_by(args=[self._p, worker_id, "0"]))[1:]]

    async def leased_to(self, worker_id: str) -> Redelivery:
        reply = await self._held_by(args=[self._p, worker_id, "1"])
        return Redelivery(int(reply[0]), _taken(reply[1:]))

    async def purge(self, endpoint: str, now_ms: int) -> int:
        total = 0
        while True:
            n = int(await self._purge(args=[self._p, endpoint, now_ms, 5000, _call_id()]))
            total += n
            if n == 0:
                return total

    async def push_chunks(
        self, job_id: str, worker_id: str, chunks_json: Sequence[str], first: int | None = None
    ) -> bool:
        at = "" if first is None else str(int(first))
        reply = await self._push(args=[self._p, job_id, worker_id, at, len(chunks_json), *chunks_json])
        return int(reply) == 1

    async def read_stream(self, job_id: str) -> tuple[JobStatus, list[Any]]:
        r = await self._read(args=[self._p, job_id, _call_id()])
        if not r:
            raise NotFound(f"job {job_id} not found", {"id": job_id})
        return JobStatus(r[0]), [json.loads(c) for c in r[1:]]

    async def progress(self, job_id: str, worker_id: str, output_json: str) -> bool:
        return int(await self._progress(args=[self._p, job_id, worker_id, output_json])) == 1

    async def get(self, job_id: str) -> JobView | None:
        async with self.r.pipeline(transaction=False) as p:
            p.hgetall(self.k.job(job_id))
            p.lrange(self.k.hist(job_id), 0, -1)
            h, hist = await p.execute()
        return job_view(job_id, h, hist) if h else None

    async def get_many(self, job_ids: Sequence[str]) -> list[JobView | None]:
        async with self.r.pipeline(transaction=False) as p:
            for jid in job_ids:
                p.hgetall(self.k.job(jid))
            hashes = await p.execute()
        return [job_view(jid, h, []) if h else None for jid, h in zip(job_ids, hashes, strict=False)]

    async def get_statuses(self, job_ids: Sequence[str]) -> list[JobView | None]:
        async with self.r.pipeline(transaction=False) as p:
            for jid in job_ids:
                p.hmget(self.k.job(jid), STATUS_FIELDS)
            rows = await p.execute()
        return [status_view(jid, values) for jid, values in zip(job_ids, rows, strict=True)]

    async def get_fields(self, job_ids: Sequence[str]) -> list[tuple[str | None, str | None]]:
        """``(status, worker)`` of each job, ``(None, None)`` for unknown ones."""
        async with self.r.pipeline(transaction=False) as p:
            for jid in job_ids:
                p.hmget(self.k.job(jid), "status", "worker")
            rows = await p.execute()
        return [(r[0], r[1]) for r in rows]

    async def depth(self, endpoint: str) -> int:
        return int(await self.r.zcard(self.k.queue(endpoint)))

    async def oldest_queued_ms(self, endpoint: str) -> int | None:
        """Creation time of the job at the head of the queue (None when empty)."""
        head = await self.r.zrange(self.k.queue(endpoint), 0, 0)
        if not head:
            return None
        created = await self.r.hget(self.k.job(head[0]), "created")
        return int(created) if created else None

    async def queue_positions(self, jobs: Sequence[tuple[str, str]]) -> list[int | None]:
        if not jobs:
            return []
        async with self.r.pipeline(transaction=False) as p:
            for endpoint, job_id in jobs:
                p.zrank(self.k.queue(endpoint), job_id)
            ranks = await p.execute()
        return [None if rank is None else int(rank) for rank in ranks]

    async def counts(self, endpoint: str) -> dict[str, int]:
        raw = await self.r.hgetall(self.k.counts(endpoint))
        return {k: int(v) for k, v in raw.items()}

    async def leases(self) -> list[tuple[str, str, str, int]]:
        """Every in-progress job as ``(job_id, worker_id, endpoint, deadline_ms)``."""
        rows = await self.r.zrange(self.k.leases, 0, -1, withscores=True)
        out: list[tuple[str, str, str, int]] = []
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            async with self.r.pipeline(transaction=False) as p:
                for jid, _ in chunk:
                    p.hmget(self.k.job(jid), "worker", "ep")
                fields = await p.execute()
            out += [
                (jid, f[0] or "", f[1] or "", int(score))
                for (jid, score), f in zip(chunk, fields, strict=False)
            ]
        return out

    async def set_draining(self, worker_id: str, draining: bool) -> None:
        if draining:
            await self.r.sadd(self.k.draining, worker_id)
        else:
            await self.r.srem(self.k.draining, worker_id)

    async def list_jobs(self, limit: int, cursor: JobCursor | None) -> list[tuple[str, int]]:
        ms, after_id = ("", "") if cursor is None else (str(cursor.before_ms), cursor.after_id or "")
        flat = await self._list_jobs(args=[self._p, limit, ms, after_id])
        return [(str(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]

    async def keep_results(self, keep_ms: int) -> None:
        await self.r.set(self.k.keep_results, str(int(keep_ms)))

    async def forget_deleted(self, now_ms: int, limit: int) -> int:
        return int(await self._forget_deleted(args=[self._p, limit]))

    # Endpoints, workers, webhooks and small documents -------------------------------------------

    async def put_endpoint(self, name: str, spec_json: str) -> None:
        await self.r.hset(self.k.endpoints, name, spec_json)

    async def delete_endpoint(self, name: str) -> bool:
        parked = await self.r.lrange(self.k.parked(name), 0, -1)  # no job is handed to them any more
        async with self.r.pipeline(transaction=True) as p:
            p.hdel(self.k.endpoints, name)
            p.delete(
                self.k.versions(name), self.k.wake(name), self.k.parked(name), self.k.webhook_outcomes(name)
            )
            if parked:
                p.hdel(self.k.parked_at, *parked)
            deleted = (await p.execute())[0]
        return bool(deleted)

    async def put_versions(self, endpoint: str, records: dict[int, str], forget: Sequence[int] = ()) -> None:
        if not records and not forget:
            return  # nothing changed: no round trip
        key = self.k.versions(endpoint)
        async with self.r.pipeline(transaction=True) as p:
            if records:
                p.hset(key, mapping={str(k): v for k, v in records.items()})
            if forget:
                p.hdel(key, *(str(n) for n in forget))
            await p.execute()

    async def load_versions(self, endpoint: str) -> dict[int, str]:
        return {int(k): v for k, v in (await self.r.hgetall(self.k.versions(endpoint))).items()}

    async def record_packages(self, arrived_ms: dict[str, int]) -> None:
        if arrived_ms:
            await self.r.hset(self.k.packages, mapping={u: str(ms) for u, ms in arrived_ms.items()})

    async def load_packages(self) -> dict[str, int]:
        return {str(u): int(ms) for u, ms in (await self.r.hgetall(self.k.packages)).items()}

    async def forget_packages(self, uris: Sequence[str]) -> None:
        if uris:
            await self.r.hdel(self.k.packages, *uris)

    async def load_endpoint(self, name: str) -> str | None:
        raw = await self.r.hget(self.k.endpoints, name)
        return str(raw) if raw is not None else None

    async def load_endpoints(self) -> dict[str, str]:
        return dict(await self.r.hgetall(self.k.endpoints))

    async def save_workers(self, records: dict[str, str], removed: Sequence[str] = ()) -> None:
        async with self.r.pipeline(transaction=True) as p:
            if records:
                p.hset(self.k.workers, mapping=records)
            if removed:
                p.hdel(self.k.workers, *removed)
            await p.execute()

    async def load_worker(self, worker_id: str) -> str | None:
        """One worker's persisted record (JSON), or None."""
        raw = await self.r.hget(self.k.workers, worker_id)
        return str(raw) if raw is not None else None

    async def load_workers(self) -> dict[str, str]:
        return dict(await self.r.hgetall(self.k.workers))

    async def draining_workers(self) -> set[str]:
        return set(await self.r.smembers(self.k.draining))

    async def webhook_claim(self, max_items: int) -> list[str]:
        """Move up to ``max_items`` pending webhook job ids to the in-flight list and return them."""
        return [str(i) for i in await self._webhook_claim(args=[self._p, max_items, _call_id()])]

    async def webhook_done(self, job_id: str, endpoint: str = "", outcome: str | None = None) -> None:
        if outcome is None:
            await self.r.lrem(self.k.webhooks_inflight, 1, job_id)
            return
        kept = self.k.webhook_outcomes(endpoint)
        async with self.r.pipeline(transaction=True) as p:
            p.lrem(self.k.webhooks_inflight, 1, job_id)
            p.rpush(kept, outcome)
            p.ltrim(kept, -KEPT_PER_ENDPOINT, -1)
            p.expire(kept, int(WINDOW_S))  # every entry is out of the window by then
            await p.execute()

    async def webhook_outcomes(self, endpoints: Sequence[str]) -> dict[str, list[str]]:
        async with self.r.pipeline(transaction=False) as p:
            for e in endpoints:
                p.lrange(self.k.webhook_outcomes(e), 0, -1)
            lists = await p.execute()
        return {e: list(kept) for e, kept in zip(endpoints, lists, strict=True) if kept}

    async def webhook_recover(self) -> int:
        """After a restart: put in-flight deliveries back in front of the pending list."""
        n = 0
        while await self.r.lmove(self.k.webhooks_inflight, self.k.webhooks, "RIGHT", "LEFT"):
            n += 1
        return n

    async def get_doc(self, key: str) -> Any:
        raw = await self.r.get(key)
        return json.loads(raw) if raw else None

    async def put_doc(self, key: str, value: Any) -> None:
        await self.r.set(key, json.dumps(value))


def _implements_job_store(store: RedisStore) -> JobStore:
    """Never called: mypy checks here that RedisStore satisfies the JobStore protocol."""
    return store


def _claim_args(prefix: str, c: Claim) -> list[Any]:
    """``c`` as the CLAIM step reads it (and FINISH_CLAIM, before its results)."""
    ver = "" if c.version is None else str(int(c.version))
    park = "1" if c.park else "0"
    return [prefix, c.endpoint, c.worker_id, c.max_jobs, c.now_ms, ver, park, int(c.fence), _call_id()]


def _call_id() -> str:
    """A step's call id: sent again with it (redis-py's retry after a lost reply), a take answers what its
    first run took, a result what it applied, a stream read the chunks it read, a MOVE, SWEEP, PURGE or
    WEBHOOK_CLAIM the first run's reply, instead of doing more (:mod:`orchestrator.store.scripts`)."""
    return uuid.uuid4().hex


def _finish_args(items: Sequence[FinishItem]) -> list[Any]:
    """``items`` as the FINISH step reads them: the call's id (sent again with it, the step answers a result
    it applied as applied), their count, then six fields each."""
    args: list[Any] = [_call_id(), len(items)]
    for it in items:
        args += [it.job_id, it.worker_id, it.status.value, it.output_json, it.error, int(it.is_stream)]
    return args


def _outcomes(items: Sequence[FinishItem], reply: Sequence[Any], now_ms: int) -> list[FinishOutcome]:
    """The FINISH step's reply (eight fields a result) as the outcomes of ``items``, in order."""
    out = []
    for n, it in enumerate(items):
        code, status, ep, created, first, started, webhook, awaited = reply[n * 8 : n * 8 + 8]
        applied = int(code) == 1
        out.append(
            FinishOutcome(
                job_id=it.job_id,
                applied=applied,
                status=JobStatus(status) if status else None,
                endpoint=ep,
                queue_ms=(int(first) - int(created)) if applied and first and created else None,
                execution_ms=(now_ms - int(started)) if applied and started else None,
                webhook=applied and int(webhook) == 1,
                awaited=applied and int(awaited) == 1,
            )
        )
    return out


def _taken(reply: Sequence[Any]) -> list[TakenJob]:
    """The jobs of a TAKE or CLAIM reply: flat (id, input JSON, attempts) triples."""
    return [TakenJob(reply[i], json.loads(reply[i + 1]), int(reply[i + 2])) for i in range(0, len(reply), 3)]


def _claimed(reply: Sequence[Any]) -> list[TakenJob] | None:
    """The jobs of a CLAIM reply; None for its fenced reply ({-1}: a take older than the replica's fence)."""
    return None if list(reply) == [-1] else _taken(reply)
