"""Waiting for a job's final state on the store itself, not on the queue actor (issue 12: the queue actor
off the per-job path).

A caller marks the job watched (the WATCH_FINAL step, atomic with reading the job; or SUBMIT, for a caller
that waits for the job it submits); the Lua step that makes a watched job final (a worker's result, a
cancel, a timeout, a lost lease out of retries) pushes to the job's ``fin:{id}`` list in the same script, so
the result is durable before anyone is told; the caller blocks on that list (``BLMOVE`` of the list onto
itself: every waiter wakes, nothing is consumed), pipelined with the read of the job that follows it, so a
wait costs one round trip after the watch step (:meth:`~orchestrator.store.protocol.JobStore.wait_step`).
Every wait is sliced (``SLICE_S``) and the job read again after each slice, so a signal lost (a Redis
restart replaying an AOF that missed it) costs a slice, not the caller's whole hold.

:func:`wait_final` is the async form (the HTTP replica's store); :class:`SyncFinals` the blocking one for the
in-cluster client, which runs in callers' threads (``ray.get`` style).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from redis.retry import Retry

from orchestrator.core.dispatch import new_job
from orchestrator.core.jobs import FINAL, JobView
from orchestrator.core.models import RunRequest
from orchestrator.store import scripts as lua
from orchestrator.store.keys import Keys
from orchestrator.store.protocol import STATUS_FIELDS, JobStore, endpoint_view, status_view
from orchestrator.store.redis import (
    RETRIED_ERRORS,
    RETRY_WHILE_RESTARTING_S,
    SpecChanged,
    Submitted,
    restart_backoff,
    submit_args,
    submit_reply,
    watched_view,
)
from orchestrator.store.submits import SPEC_READS, SpecCache, spec_kept_changing

SLICE_S = 1.0
"""Longest single block on a job's final signal before its status is read again."""


def _slice_s(deadline: float) -> float:
    """The next step's block: what is left of the hold, at most a slice (0: do not block)."""
    return max(0.0, min(deadline - time.monotonic(), SLICE_S))


def _ended(job: JobView | None, deadline: float) -> bool:
    """Whether a wait is over after a step that read ``job``: gone, final, or out of time."""
    return job is None or job.status in FINAL or time.monotonic() >= deadline


async def wait_final(
    store: JobStore, job_id: str, wait_s: float, endpoint: str | None = None, watched: bool = False
) -> JobView | None:
    """The job once final, or as it is when ``wait_s`` runs out; None when there is no such job (or it is
    not ``endpoint``'s, when given). ``watched``: the job was marked at submit (no watch step first)."""
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        job = await store.wait_step(job_id, _slice_s(deadline), endpoint=endpoint, watched=watched)
        if _ended(job, deadline):
            return job
        watched = True  # the mark is in the job's hash: later slices only wait and read


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
    """The store's submit and :func:`wait_final` for blocking callers (the in-cluster client, which runs in
    its callers' threads), on a synchronous Redis client of its own (thread-safe: a connection pool)."""

    def __init__(self, url: str, prefix: str, retry_s: float = RETRY_WHILE_RESTARTING_S) -> None:
        """``retry_s``: how long a command is tried again while Redis does not answer, as the job store's."""
        self.r: Any = redis.Redis.from_url(
            url,
            decode_responses=True,
            health_check_interval=30,
            retry=Retry(*restart_backoff(retry_s)),
            retry_on_error=RETRIED_ERRORS,
        )
        self.k = Keys(prefix)
        self._watch = self.r.register_script(lua.WATCH_FINAL)
        self._submit = self.r.register_script(lua.SUBMIT)
        self.specs = SpecCache()  # for submit_request

    def load_endpoint(self, name: str) -> str | None:
        """One endpoint's spec (JSON), or None."""
        raw = self.r.hget(self.k.endpoints, name)
        return str(raw) if raw is not None else None

    def submit_request(
        self, endpoint: str, request: RunRequest, now_ms: int, *, watch: bool = False
    ) -> Submitted:
        """As :meth:`orchestrator.store.redis.RedisStore.submit_and_wait` without the wait, blocking."""
        for _ in range(SPEC_READS):
            known = self.specs.get(endpoint) or self.specs.learn(endpoint, self.load_endpoint(endpoint))
            job = new_job(endpoint, known.spec, request)
            maxq = known.spec.max_queue_size
            args = submit_args(self.k.prefix, endpoint, [job], maxq, now_ms, known.sha1, watch)
            try:
                _, handed = submit_reply(self._submit(args=args), endpoint, maxq)
            except SpecChanged:
                self.specs.forget(endpoint)
                continue
            return Submitted(job.id, handed > 0)
        raise spec_kept_changing(endpoint)

    def close(self) -> None:
        self.r.close()

    def wait_step(
        self, job_id: str, timeout_s: float, *, endpoint: str | None = None, watched: bool = False
    ) -> JobView | None:
        """As :meth:`orchestrator.store.redis.RedisStore.wait_step`, blocking."""
        if not watched:
            job = watched_view(job_id, self._watch(args=[self.k.prefix, job_id, endpoint or ""]))
            if job is None or job.status in FINAL or timeout_s <= 0:
                return job
        key = self.k.fin(job_id)
        with self.r.pipeline(transaction=False) as p:
            if timeout_s > 0:
                p.blmove(key, key, max(0.01, timeout_s), "RIGHT", "LEFT")
            p.hmget(self.k.job(job_id), STATUS_FIELDS)
            values = p.execute()[-1]
        return endpoint_view(status_view(job_id, values), endpoint)

    def wait_final(
        self, job_id: str, wait_s: float, endpoint: str | None = None, watched: bool = False
    ) -> JobView | None:
        """As :func:`wait_final`, blocking."""
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            job = self.wait_step(job_id, _slice_s(deadline), endpoint=endpoint, watched=watched)
            if _ended(job, deadline):
                return job
            watched = True
