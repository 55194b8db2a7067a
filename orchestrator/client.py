"""Python client for Ripple: over HTTP (``Client(base_url, api_key)``) or, from code running inside the
same Ray cluster, straight to the queue actor (``Client.in_cluster()``) without an HTTP hop.

Both speak the same methods: ``submit``, ``submit_many``, ``status``, ``result``, ``stream``, ``cancel``, with
async twins prefixed ``a`` (``asubmit`` ...). Errors arrive as :mod:`orchestrator.core.errors` exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import httpx
from pydantic import ValidationError

from orchestrator.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    RippleError,
    Unauthorized,
    invalid,
)
from orchestrator.core.jobs import FINAL, JobStatus
from orchestrator.core.models import RunRequest
from orchestrator.notices import ThreadNotices, due_within_s
from orchestrator.store.failures import store_failure
from orchestrator.store.finals import SyncFinals, reachable
from orchestrator.store.redis import RETRY_WHILE_RESTARTING_S

log = logging.getLogger("ripple.client")

_BY_STATUS: dict[int, type[RippleError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
    429: QueueFull,
    503: NotReady,
}
FINAL_NAMES = {s.value for s in FINAL}


def _body(
    input: Any,
    webhook: str | None,
    execution_timeout_s: float | None,
    ttl_s: float | None,
    low_priority: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"input": input}
    if webhook:
        body["webhook"] = webhook
    policy: dict[str, Any] = {}
    if execution_timeout_s is not None:
        policy["executionTimeout"] = int(execution_timeout_s * 1000)
    if ttl_s is not None:
        policy["ttl"] = int(ttl_s * 1000)
    if low_priority:
        policy["lowPriority"] = True
    if policy:
        body["policy"] = policy
    return body


def _run_request(body: dict[str, Any]) -> RunRequest:
    """``body`` validated as the queue actor takes it; InvalidInput naming the field when it is not valid."""
    try:
        return RunRequest.model_validate(body)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise invalid("invalid job", errors) from None


def _raise(resp: httpx.Response) -> Any:
    if resp.status_code == 204:
        return None
    try:
        data = resp.json()
    except ValueError:
        data = {"error": resp.text}
    if resp.status_code >= 400:
        cls = _BY_STATUS.get(resp.status_code, RippleError)
        raise cls(str(data.get("error", resp.reason_phrase)), data.get("detail"))
    return data


class Client:
    """Ripple client over HTTP. ``base_url`` is the app's root (``http://127.0.0.1:8000``)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._ahttp: httpx.AsyncClient | None = None
        self._headers = headers
        self._timeout_s = timeout_s

    @staticmethod
    def in_cluster(namespace: str = "ripple") -> InClusterClient:
        """A client for code running inside the Ray cluster (talks to the queue actor directly)."""
        return InClusterClient(namespace)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; raises the matching :class:`RippleError` on an error status."""
        return _raise(self._http.request(method, path, **kwargs))

    def lines(self, path: str, **kwargs: Any) -> Iterator[str]:
        """A streamed ``text/plain`` reply line by line, as the server sends it, without a read timeout
        (``GET /api/v1/workers/{id}/logs?follow=true``); raises the matching :class:`RippleError` on an
        error status."""
        with self._http.stream("GET", path, timeout=httpx.Timeout(self._timeout_s, read=None), **kwargs) as r:
            if r.status_code >= 400:
                r.read()
                _raise(r)
            yield from r.iter_lines()

    # Jobs

    def submit(
        self,
        endpoint: str,
        input: Any,
        *,
        webhook: str | None = None,
        execution_timeout_s: float | None = None,
        ttl_s: float | None = None,
        low_priority: bool = False,
    ) -> str:
        body = _body(input, webhook, execution_timeout_s, ttl_s, low_priority)
        return str(self.request("POST", f"/v2/{endpoint}/run", json=body)["id"])

    def submit_many(self, endpoint: str, inputs: Sequence[Any], chunk: int = 5000) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(inputs), chunk):
            jobs = [{"input": x} for x in inputs[start : start + chunk]]
            ids += self.request("POST", f"/v2/{endpoint}/run-batch", json={"jobs": jobs})["ids"]
        return ids

    def status(self, job_id: str, endpoint: str | None = None) -> dict[str, Any]:
        if endpoint is None:
            job = self.request("GET", f"/api/v1/jobs/{job_id}")
            return dict(job)
        return dict(self.request("GET", f"/v2/{endpoint}/status/{job_id}"))

    def result(
        self,
        job_id: str,
        timeout_s: float = 90.0,
        endpoint: str | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait for a final state (polling the status) and return the status; ``on_status`` sees every
        status polled (``ripple submit --wait`` shows the ``waitReason`` of a queued job with it)."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status(job_id, endpoint)
            if on_status is not None:
                on_status(st)
            if st["status"] in FINAL_NAMES or time.monotonic() >= deadline:
                return st
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def stream(self, job_id: str, endpoint: str, poll_s: float = 0.2) -> Iterator[Any]:
        while True:
            reply = self.request("GET", f"/v2/{endpoint}/stream/{job_id}")
            yield from (c["output"] for c in reply["stream"])
            if reply["status"] in FINAL_NAMES and not reply["stream"]:
                return
            time.sleep(poll_s)

    def cancel(self, job_id: str, endpoint: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v2/{endpoint}/cancel/{job_id}"))

    # Async twins

    def _async(self) -> httpx.AsyncClient:
        if self._ahttp is None:
            self._ahttp = httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers, timeout=self._timeout_s
            )
        return self._ahttp

    async def arequest(self, method: str, path: str, **kwargs: Any) -> Any:
        return _raise(await self._async().request(method, path, **kwargs))

    async def asubmit(self, endpoint: str, input: Any, **kw: Any) -> str:
        body = _body(
            input,
            kw.get("webhook"),
            kw.get("execution_timeout_s"),
            kw.get("ttl_s"),
            kw.get("low_priority", False),
        )
        return str((await self.arequest("POST", f"/v2/{endpoint}/run", json=body))["id"])

    async def asubmit_many(self, endpoint: str, inputs: Sequence[Any]) -> list[str]:
        reply = await self.arequest(
            "POST", f"/v2/{endpoint}/run-batch", json={"jobs": [{"input": x} for x in inputs]}
        )
        return list(reply["ids"])

    async def astatus(self, job_id: str, endpoint: str) -> dict[str, Any]:
        return dict(await self.arequest("GET", f"/v2/{endpoint}/status/{job_id}"))

    async def aresult(self, job_id: str, endpoint: str, timeout_s: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            st = await self.astatus(job_id, endpoint)
            if st["status"] in FINAL_NAMES or time.monotonic() >= deadline:
                return st
            await asyncio.sleep(0.2)

    async def astream(self, job_id: str, endpoint: str) -> AsyncIterator[Any]:
        while True:
            reply = await self.arequest("GET", f"/v2/{endpoint}/stream/{job_id}")
            for c in reply["stream"]:
                yield c["output"]
            if reply["status"] in FINAL_NAMES and not reply["stream"]:
                return
            await asyncio.sleep(0.2)

    async def acancel(self, job_id: str, endpoint: str) -> dict[str, Any]:
        return dict(await self.arequest("POST", f"/v2/{endpoint}/cancel/{job_id}"))


class InClusterClient:
    """The same calls, made straight to the JobQueue actor (for Ray jobs, notebooks on the head); where this
    process reaches the job store, a job (without webhook) is written to the store itself and its result
    awaited there (:mod:`orchestrator.store.finals`), the queue told without waiting."""

    def __init__(self, namespace: str = "ripple") -> None:
        from orchestrator.names import QUEUE_NAME, get_actor

        self._queue = get_actor(QUEUE_NAME, namespace)
        # Jobs written to the store here, told to the queue (it counts them, and wakes the autoscaler when no
        # replica has a free slot) in batches from a thread of their own: not on the job's path.
        self._arrivals: ThreadNotices[str, str] = ThreadNotices(self._queue_submitted)
        self._finals: SyncFinals | None = None
        self._finals_checked = False

    def _get(self, ref: Any) -> Any:
        """``ray.get``; a Ripple error the queue raised is raised as itself (NotFound, QueueFull...), as
        the HTTP client raises it, not wrapped in Ray's task error."""
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            raise _ripple_cause(exc) from None

    @staticmethod
    async def _await(ref: Any) -> Any:
        """``await ref``, with the queue's Ripple errors raised as in :meth:`_get`."""
        import ray

        try:
            return await ref
        except ray.exceptions.RayTaskError as exc:
            raise _ripple_cause(exc) from None

    def _store(self) -> SyncFinals | None:
        """The job store, where results are awaited when this process reaches it (asked of the queue
        once); None: results are awaited through the queue actor."""
        if not self._finals_checked:
            self._finals_checked = True
            addr = self._get(self._queue.store_address.remote())
            if reachable(str(addr["redisUrl"])):
                retry_s = float(addr.get("retryS", RETRY_WHILE_RESTARTING_S))
                self._finals = SyncFinals(str(addr["redisUrl"]), str(addr["keyPrefix"]), retry_s)
        return self._finals

    @property
    def waits_on_store(self) -> bool:
        """Whether results are awaited on the job store (reachable from this process), not on the queue."""
        return self._store() is not None

    def _wait_in_store(
        self, finals: SyncFinals, endpoint: str, job_id: str, timeout_s: float, watched: bool = False
    ) -> Any:
        """The job's final status object read from the store, waited for there (told by the step that made
        it final); None when it is not final by then or not this endpoint's (the queue answers those)."""
        job = finals.wait_final(job_id, max(0.0, min(timeout_s, 300.0)), endpoint, watched)
        if job is None or job.status not in FINAL:  # not this endpoint's: the queue says NotFound at once
            return None
        return job.status_object(int(time.time() * 1000))

    def submit(
        self,
        endpoint: str,
        input: Any,
        *,
        webhook: str | None = None,
        execution_timeout_s: float | None = None,
        ttl_s: float | None = None,
        low_priority: bool = False,
    ) -> str:
        req = _run_request(_body(input, webhook, execution_timeout_s, ttl_s, low_priority))
        finals = self._store()
        if finals is not None and req.webhook is None:
            return self._submit_to_store(finals, endpoint, req)
        return str(self._get(self._queue.submit.remote(endpoint, [req]))[0])

    def _submit_to_store(
        self, finals: SyncFinals, endpoint: str, req: RunRequest, watch: bool = False
    ) -> str:
        """Accept one job by writing it to the store (``SyncFinals.submit_request``: the SUBMIT step the
        queue's ``submit`` runs, IN_QUEUE, ``maxQueueSize`` enforced; durable before this returns); the queue
        is told soon after, from another thread (later when the job went straight to a parked replica: the
        notice only counts it then). A job with a webhook goes through the queue, which checks its address.
        Raises NotFound, QueueFull, NotReady (the store full or not answering)."""
        try:
            job_id, handed, _ = finals.submit_request(endpoint, req, int(time.time() * 1000), watch=watch)
        except Exception as exc:
            said = store_failure(exc)
            if said is None:
                raise
            raise NotReady(said) from None
        self._arrivals.add(endpoint, job_id, due_within_s(bookkeeping=handed))
        return job_id

    def _queue_submitted(self, endpoint: str, job_ids: list[str]) -> None:
        import ray

        # Sent a moment after the submit: this process may have left its Ray since, and an actor call then
        # would start a new local Ray here. Dropped instead: the jobs are in the store, and the next take
        # or autoscaler tick finds them.
        if not ray.is_initialized():
            log.info("Ray was shut down: %d arrivals not told to the queue", len(job_ids))
            return
        self._queue.submitted.remote(endpoint, job_ids)

    def submit_many(self, endpoint: str, inputs: Sequence[Any], chunk: int = 5000) -> list[str]:
        refs = [
            self._queue.submit.remote(endpoint, [_run_request({"input": x}) for x in inputs[s : s + chunk]])
            for s in range(0, len(inputs), chunk)
        ]
        return [i for ids in self._get(refs) for i in ids]

    def status(self, job_id: str, endpoint: str) -> dict[str, Any]:
        return dict(self._get(self._queue.status.remote(endpoint, job_id)))

    def runsync(self, endpoint: str, input: Any, timeout_s: float = 90.0) -> dict[str, Any]:
        """Submit one job and wait for its final status (or its status when ``timeout_s`` runs out): the
        job is submitted through the queue, its end awaited on the store when reachable, else in a single
        actor call."""
        req = _run_request({"input": input})
        finals = self._store()
        if finals is None:
            return dict(self._get(self._queue.runsync.remote(endpoint, req, timeout_s)))
        job_id = self._submit_to_store(finals, endpoint, req, watch=True)
        obj = self._wait_in_store(finals, endpoint, job_id, timeout_s, watched=True)
        if obj is not None:
            return dict(obj)
        return dict(self._get(self._queue.wait_final.remote(endpoint, job_id, 0.0)))

    def statuses(self, job_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Status objects of many jobs in one call (None for unknown ids)."""
        return list(self._get(self._queue.statuses.remote(list(job_ids))))

    def result(self, job_id: str, endpoint: str, timeout_s: float = 90.0) -> dict[str, Any]:
        """The job's final status object, or its status object when ``timeout_s`` (at most 300) runs out.
        Raises NotFound."""
        finals = self._store()
        if finals is not None:
            obj = self._wait_in_store(finals, endpoint, job_id, timeout_s)
            if obj is not None:
                return dict(obj)
            timeout_s = 0.0  # waited already: the queue answers at once (waitReason, NotFound)
        return dict(self._get(self._queue.wait_final.remote(endpoint, job_id, timeout_s)))

    def stream(self, job_id: str, endpoint: str, poll_s: float = 0.1) -> Iterator[Any]:
        while True:
            reply = self._get(self._queue.stream.remote(endpoint, job_id))
            yield from (c["output"] for c in reply["stream"])
            if reply["status"] in FINAL_NAMES and not reply["stream"]:
                return
            time.sleep(poll_s)

    def cancel(self, job_id: str, endpoint: str) -> dict[str, Any]:
        return dict(self._get(self._queue.cancel.remote(endpoint, job_id)))

    async def asubmit(self, endpoint: str, input: Any, **kw: Any) -> str:
        body = _body(
            input,
            kw.get("webhook"),
            kw.get("execution_timeout_s"),
            kw.get("ttl_s"),
            kw.get("low_priority", False),
        )
        return str((await self._await(self._queue.submit.remote(endpoint, [_run_request(body)])))[0])

    async def asubmit_many(self, endpoint: str, inputs: Sequence[Any]) -> list[str]:
        reqs = [_run_request({"input": x}) for x in inputs]
        return list(await self._await(self._queue.submit.remote(endpoint, reqs)))

    async def astatus(self, job_id: str, endpoint: str) -> dict[str, Any]:
        return dict(await self._await(self._queue.status.remote(endpoint, job_id)))

    async def aresult(self, job_id: str, endpoint: str, timeout_s: float = 90.0) -> dict[str, Any]:
        """As :meth:`result`; the wait on the store runs in a thread."""
        finals = self._finals if self._finals_checked else await asyncio.to_thread(self._store)
        if finals is not None:
            obj = await asyncio.to_thread(self._wait_in_store, finals, endpoint, job_id, timeout_s)
            if obj is not None:
                return dict(obj)
            timeout_s = 0.0
        return dict(await self._await(self._queue.wait_final.remote(endpoint, job_id, timeout_s)))

    async def acancel(self, job_id: str, endpoint: str) -> dict[str, Any]:
        return dict(await self._await(self._queue.cancel.remote(endpoint, job_id)))


def _ripple_cause(exc: Exception) -> Exception:
    """The Ripple error behind a Ray task error (raised in the queue actor; a job store full or not
    answering as NotReady, saying so), else the task error."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RippleError):
        return cause
    said = store_failure(exc)
    return NotReady(said) if said else exc


__all__ = ["Client", "InClusterClient", "JobStatus"]
