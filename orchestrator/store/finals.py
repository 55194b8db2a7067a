"""Waiting for a job's final state on the store itself, not on the queue actor (issue 12: the queue actor
off the per-job path).

A caller marks the job watched (:meth:`~orchestrator.store.protocol.JobStore.watch_final`, atomic with
reading its status); the Lua step that makes a watched job final (a worker's result, a cancel, a timeout, a
lost lease out of retries) pushes to the job's ``fin:{id}`` list in the same script, so the result is durable
before anyone is told; the caller blocks on that list (``BLMOVE`` of the list onto itself: every waiter
wakes, nothing is consumed) and then reads the job. Every wait is sliced (``SLICE_S``) and the job read
again after each slice, so a signal lost (a Redis restart replaying an AOF that missed it) costs a slice, not
the caller's whole hold.

:func:`wait_final` is the async form (the queue actor's store, the HTTP replica's); :class:`SyncFinals` the
blocking one for the in-cluster client, which runs in callers' threads (``ray.get`` style).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import redis

from orchestrator.core.jobs import FINAL, JobStatus, JobView
from orchestrator.core.models import NewJob
from orchestrator.store import scripts as lua
from orchestrator.store.keys import Keys
from orchestrator.store.protocol import JobStore, job_view
from orchestrator.store.redis import submit_args, submit_depth

SLICE_S = 1.0
"""Longest single block on a job's final signal before its status is read again."""


async def wait_final(store: JobStore, job_id: str, wait_s: float) -> JobView | None:
    """The job once final, or as it is when ``wait_s`` runs out; None when there is no such job."""
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        status = await store.watch_final(job_id)
        if status is None:
            return None
        remaining = deadline - time.monotonic()
        if status in FINAL or remaining <= 0:
            return await store.get(job_id)
        if await store.await_final(job_id, min(remaining, SLICE_S)) is not None:
            job = await store.get(job_id)
            if job is None or job.status in FINAL:
                return job


def reachable(url: str, timeout_s: float = 0.5) -> bool:
    """Whether the Redis at ``url`` answers a PING within about ``timeout_s`` from this process (a unix
    socket on another node, a firewalled port: no). Never raises."""
    if url.startswith("unix://") and not os.path.exists(url.removeprefix("unix://").split("?", 1)[0]):
        return False
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


class SyncFinals:
    """:func:`wait_final` for blocking callers, on its own synchronous Redis client (thread-safe: a
    connection pool)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.r: Any = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        self.k = Keys(prefix)
        self._watch = self.r.register_script(lua.WATCH_FINAL)
        self._submit = self.r.register_script(lua.SUBMIT)

    def load_endpoint(self, name: str) -> str | None:
        """One endpoint's spec (JSON), or None."""
        raw = self.r.hget(self.k.endpoints, name)
        return str(raw) if raw is not None else None

    def submit(self, endpoint: str, jobs: Sequence[NewJob], max_queue_size: int | None, now_ms: int) -> int:
        """As :meth:`orchestrator.store.redis.RedisStore.submit` (the same SUBMIT script): the jobs
        IN_QUEUE, all or nothing; the new depth. Raises QueueFull."""
        reply = self._submit(args=submit_args(self.k.prefix, endpoint, jobs, max_queue_size, now_ms))
        return submit_depth(reply, endpoint, max_queue_size)

    def close(self) -> None:
        self.r.close()

    def watch_final(self, job_id: str, endpoint: str | None = None) -> JobStatus | None:
        """As the store's ``watch_final``; None also when ``endpoint`` is given and the job is another's."""
        status = self._watch(args=[self.k.prefix, job_id, endpoint or ""])
        return JobStatus(status) if status else None

    def await_final(self, job_id: str, timeout_s: float) -> JobStatus | None:
        key = self.k.fin(job_id)
        got = self.r.blmove(key, key, max(0.01, timeout_s), "RIGHT", "LEFT")
        return JobStatus(got) if got else None

    def get(self, job_id: str) -> JobView | None:
        """The job without its history (what a status object shows)."""
        h = self.r.hgetall(self.k.job(job_id))
        return job_view(job_id, h, []) if h else None

    def wait_final(self, job_id: str, wait_s: float, endpoint: str | None = None) -> JobView | None:
        """As :func:`wait_final`, blocking; None also when ``endpoint`` is given and the job is another's."""
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            status = self.watch_final(job_id, endpoint)
            if status is None:
                return None
            remaining = deadline - time.monotonic()
            if status in FINAL or remaining <= 0:
                return self.get(job_id)
            if self.await_final(job_id, min(remaining, SLICE_S)) is not None:
                job = self.get(job_id)
                if job is None or job.status in FINAL:
                    return job
