"""Dependencies of the routes: the app's state, auth, the boot config and typed clients of the actors.

Routes never name an actor method as a string: they call the typed ``async def`` methods of
:class:`QueueClient` (the JobQueue actor) and :class:`AutoscalerClient` (the autoscaler actor), so mypy
checks every call and every reply is parsed into its response model. Tests replace the clients through
``app.dependency_overrides[queue_client]`` / ``[autoscaler_client]`` with fakes (subclasses without Ray).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.routing import APIRoute

from orchestrator import names
from orchestrator.api import schemas as s
from orchestrator.api.middleware import OVERSIZED, OversizedBody, current_request_id
from orchestrator.auth import KeyCache
from orchestrator.boot import BootConfig
from orchestrator.core.errors import Forbidden, InvalidInput, NotReady, Unauthorized
from orchestrator.core.jobs import FINAL, JobStatus, JobView
from orchestrator.core.models import EndpointPatch, EndpointSpec, RunRequest, worker_id_ok
from orchestrator.core.packages import PackageInfo
from orchestrator.core.scopes import (
    ADMIN_KEY_NAME,
    INSECURE_NAME,
    READABLE_CLIENT_ROUTES,
    AuditEntry,
    Family,
    KeyRecord,
    Principal,
    Scope,
    audit_action,
    refusal,
)
from orchestrator.core.worker_logs import ActorLogs
from orchestrator.notices import ThreadNotices, due_within_s
from orchestrator.store.finals import reachable, wait_final
from orchestrator.store.redis import RedisStore
from orchestrator.store.submits import FIRST_WAIT_S

log = logging.getLogger("ripple.http")

PACKAGES_PATH = "/api/v1/packages"
# A worker's result or stream chunk for one job: a body over the limit fails that job (the route is told).
RESULT_PATH = re.compile(r"/v2/[^/]+/job-(?:done|stream)/[^/]+/[^/]+")

# Path parameters shared by the routers.
EndpointName = Annotated[str, Path(max_length=63, description="Endpoint name.")]
JobId = Annotated[str, Path(max_length=128, description="Job id.")]


@dataclass
class AppState:
    """Per-replica state of the HTTP app; the Serve deployment's constructor sets ``boot``.

    ``ui_verify(request, auth) -> bool`` is set by the web UI's ``mount`` (a session cookie counts as the
    API key); ``ui_subject(request, auth)`` names the key the session logged in with (None: no
    valid session). ``keys`` is this replica's copy of the named keys. ``behind_serve``: Serve's proxy
    echoes ``X-Request-ID`` itself. ``cluster_facts()`` reads the Ray cluster's nodes and pending demand
    (blocking; the composer supplies it, as it reads Ray's GCS). ``actor_logs`` reads a Ray actor's
    stdout/stderr (the composer supplies Ray's state API reader). ``store_package(zip_bytes, info)``
    stores a checked code package in the Ray cluster and says whether it was there already (blocking; the
    composer supplies it, as it writes Ray's GCS).
    """

    boot: BootConfig | None = None
    ui_verify: Callable[[Request, Any], bool] | None = None
    behind_serve: bool = False
    cluster_facts: Callable[[], dict[str, Any]] | None = None
    actor_logs: ActorLogs | None = None
    store_package: Callable[[bytes, PackageInfo], bool] | None = None
    ui_subject: Callable[[Request, Any], str | None] | None = None
    keys: KeyCache = field(default_factory=KeyCache)
    _queue: Any = None
    _store: RedisStore | None = None
    _store_checked: bool = False
    _arrivals: ThreadNotices[str, str] | None = None

    def body_limit(self, path: str) -> int | None:
        """The request body limit for ``path`` (None while starting): code packages may be larger."""
        if self.boot is None:
            return None
        if path == PACKAGES_PATH:
            return max(self.boot.max_body_bytes, self.boot.max_package_bytes)
        return self.boot.max_body_bytes

    @staticmethod
    def told_of_oversized(path: str) -> bool:
        """Whether ``path``'s route is given an over-limit body's size instead of a plain 413: a worker's
        result, so the job it was for fails with the reason rather than waiting to be reclaimed."""
        return RESULT_PATH.fullmatch(path) is not None

    def require_store_package(self) -> Callable[[bytes, PackageInfo], bool]:
        if self.store_package is None:
            raise NotReady("code packages cannot be stored by this app (no Ray cluster)")
        return self.store_package

    def require_boot(self) -> BootConfig:
        """The boot config; NotReady (503) while the replica is starting."""
        if self.boot is None:
            raise NotReady("the app is starting")
        return self.boot

    def require_actor_logs(self) -> ActorLogs:
        if self.actor_logs is None:
            raise NotReady("reading worker logs is not available in this app")
        return self.actor_logs

    def require_cluster_facts(self) -> Callable[[], dict[str, Any]]:
        if self.cluster_facts is None:
            raise NotReady("cluster facts are not available in this app")
        return self.cluster_facts

    def queue_handle(self) -> Any:
        """Handle of the JobQueue actor (looked up once per replica, again after it was lost)."""
        if self._queue is None:
            self._queue = names.get_actor(names.QUEUE_NAME, self.require_boot().namespace)
        return self._queue

    async def job_store(self) -> RedisStore | None:
        """The job store, for waiting on a job's end there (``runsync``) instead of on the queue actor;
        None while starting, or when this replica cannot reach it (checked once). Connected on first use,
        in the replica's event loop."""
        if self._store_checked or self.boot is None:
            return self._store
        self._store_checked = True
        url = self.boot.queue.redis_url
        if await asyncio.to_thread(reachable, url):
            self._store = RedisStore.connect(url, self.boot.queue.key_prefix, self.boot.queue.store_retry_s)
        else:
            log.info("the job store is not reachable from this replica; runsync waits on the queue")
        return self._store

    def arrivals(self) -> ThreadNotices[str, str]:
        """Jobs this replica wrote to the store, told to the queue in batches (``JobQueue.submitted``: it
        counts them and wakes the autoscaler when no replica has a free slot; replicas are woken by the
        store), from a thread of their own: an actor call made on this replica's event loop holds the loop
        for milliseconds (measured under Ray Serve: the requests behind it wait)."""
        if self._arrivals is None:
            self._arrivals = ThreadNotices(lambda ep, ids: self.queue_handle().submitted.remote(ep, ids))
        return self._arrivals

    def autoscaler_handle(self) -> Any:
        """Handle of the autoscaler actor (looked up per call: the management routes are rare)."""
        return names.get_actor(names.AUTOSCALER_NAME, self.require_boot().namespace)

    def forget_actors(self) -> None:
        """A control actor could not be reached: look the handles up again on the next request."""
        self._queue = None


def state_of(request: Request) -> AppState:
    """The state the app was created with (``create_app(state)``)."""
    state: AppState = request.app.state.ripple
    return state


async def app_state(request: Request) -> AppState:
    return state_of(request)


State = Annotated[AppState, Depends(app_state)]

# The dependencies below read the state from the request (``state_of``) rather than through ``State``: FastAPI
# solves a dependency's own dependencies on every request, cached or not, and each costs about as much as a
# route's own parameters (``bench/app_overhead.py``); the job routes' dependencies took ten such steps.


async def boot_config(request: Request) -> BootConfig:
    return state_of(request).require_boot()


Boot = Annotated[BootConfig, Depends(boot_config)]


# Typed actor clients -----------------------------------------------------------------------------------


class QueueClient:
    """Typed calls to the JobQueue actor, one per method the routes use; replies parsed into the API's
    response models. ``handle()`` returns the actor handle, looked up when a call is made (so a probe
    that catches the call's failure catches a missing actor too); errors the actor raises (NotFound,
    Conflict, InvalidInput, QueueFull, NotReady) propagate to the error handlers."""

    def __init__(
        self,
        handle: Callable[[], Any],
        store: Callable[[], Awaitable[RedisStore | None]] | None = None,
        runsync_wait_s: Callable[[], float] | None = None,
        arrivals: ThreadNotices[str, str] | None = None,
    ) -> None:
        self._handle = handle
        self._store = store
        self._runsync_wait_s = runsync_wait_s
        self._arrivals = arrivals

    @property
    def _h(self) -> Any:
        return self._handle()

    # Client API
    async def submit(
        self, endpoint: str, requests: Sequence[RunRequest], request_id: str | None = None
    ) -> list[str]:
        """Queue jobs, all or nothing; their ids in request order."""
        ids = await self._h.submit.remote(endpoint, list(requests), request_id=request_id)
        return [str(i) for i in ids]

    async def runsync(
        self, endpoint: str, request: RunRequest, wait_s: float | None, request_id: str | None = None
    ) -> JobView | s.JobStatusObject:
        """Queue one job and hold until it is final or ``wait_s`` passes (None: the configured default):
        the job as read from the store when it is final (:func:`~orchestrator.api.job_replies.status_reply`
        sends its output on as stored), else its status object.

        With the store at hand, the job is written to the store here, its end awaited on the store
        (:mod:`orchestrator.store.finals`: told by the step that made it final), not on the queue actor:
        the write and the first ``FIRST_WAIT_S`` of the wait in one round trip
        (``RedisStore.submit_and_wait``), the queue told of the job after it (:meth:`_told`). A job with a
        webhook goes through the queue, which checks its address. A job not final when the hold ends is read
        through the queue (its ``waitReason``)."""
        store = None if self._store is None else await self._store()
        if store is None or self._runsync_wait_s is None:
            raw = await self._h.runsync.remote(endpoint, request, wait_s, request_id=request_id)
            return s.JobStatusObject.model_validate(raw)
        wait = self._runsync_wait_s() if wait_s is None else max(0.0, min(wait_s, 300.0))
        first_s = min(wait, FIRST_WAIT_S)
        job: JobView | None = None
        if request.webhook is None:
            now_ms = int(time.time() * 1000)
            job_id, handed, job = await store.submit_and_wait(endpoint, request, now_ms, first_s)
            self._told(endpoint, job_id, request_id, handed)
        else:
            (job_id,) = await self._h.submit.remote(endpoint, [request], request_id=request_id)
        if job is None or (job.status not in FINAL and wait > first_s):
            job = await wait_final(store, job_id, wait - first_s, watched=request.webhook is None)
        if job is None or job.status not in FINAL:
            return await self.status(endpoint, job_id)
        return job

    def _told(self, endpoint: str, job_id: str, request_id: str | None, handed: bool) -> None:
        """Tell the queue of a job written to the store here, off the job's path (:meth:`AppState.arrivals`;
        the queue counts it and wakes the autoscaler when no replica has a free slot; only counts it when
        the job was ``handed`` to a parked replica, so that notice may wait longer)."""
        if self._arrivals is not None:
            self._arrivals.add(endpoint, job_id, due_within_s(bookkeeping=handed))
        else:
            with contextlib.suppress(Exception):  # accepted: the next take or autoscaler tick finds it
                self._h.submitted.remote(endpoint, [job_id], request_id=request_id)

    async def status(self, endpoint: str, job_id: str, read: JobView | None = None) -> s.JobStatusObject:
        """The job's status object, through the queue (``read``: the job as just read here, which the queue
        does not read again)."""
        return s.JobStatusObject.model_validate(await self._h.status.remote(endpoint, job_id, read))

    async def final_or_status(self, endpoint: str, job_id: str) -> JobView | s.JobStatusObject:
        """The job as read from the store when it is final or running (nothing of the queue's to add), else
        its status object through the queue (an IN_QUEUE job's ``waitReason``, from the job as read here;
        the queue's NotFound for an unknown job or endpoint). The store is read here when at hand, the
        job's status fields only: a large input is not read back, a large output does not pass through
        the queue actor."""
        store = None if self._store is None else await self._store()
        job = None if store is None else (await store.get_statuses([job_id]))[0]
        if job is not None and job.endpoint == endpoint and job.status is not JobStatus.IN_QUEUE:
            return job
        return await self.status(endpoint, job_id, job)

    async def stream(self, endpoint: str, job_id: str, wait_s: float = 0.0) -> s.StreamReply:
        """Chunks not yet read; with ``wait_s`` > 0 holds (woken by the next chunk or the job's end) while
        there are none and the job is not final."""
        return s.StreamReply.model_validate(await self._h.stream.remote(endpoint, job_id, wait_s))

    async def wait_final(self, endpoint: str, job_id: str, wait_s: float | None) -> s.JobStatusObject:
        """The job's status object once final, or as it is when ``wait_s`` (at most 300 s) runs out."""
        return s.JobStatusObject.model_validate(await self._h.wait_final.remote(endpoint, job_id, wait_s))

    async def cancel(self, endpoint: str, job_id: str, request_id: str | None = None) -> s.JobStateReply:
        raw = await self._h.cancel.remote(endpoint, job_id, request_id=request_id)
        return s.JobStateReply.model_validate(raw)

    async def retry(self, endpoint: str, job_id: str, request_id: str | None = None) -> s.JobStateReply:
        raw = await self._h.retry.remote(endpoint, job_id, request_id=request_id)
        return s.JobStateReply.model_validate(raw)

    async def purge(self, endpoint: str, request_id: str | None = None) -> s.PurgeReply:
        return s.PurgeReply.model_validate(await self._h.purge.remote(endpoint, request_id=request_id))

    async def health(self, endpoint: str) -> s.EndpointHealth:
        return s.EndpointHealth.model_validate(await self._h.health.remote(endpoint))

    # Worker protocol
    async def take(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int,
        wait_s: float | None,
        request_id: str | None = None,
    ) -> list[s.TakenJob]:
        """Lease up to ``max_jobs`` jobs, holding up to ``wait_s`` for one; [] when none came."""
        raw = await self._h.take.remote(endpoint, worker_id, max_jobs, wait_s, request_id=request_id)
        return [s.TakenJob.model_validate(j) for j in raw]

    async def done(
        self,
        endpoint: str,
        worker_id: str,
        job_id: str,
        body: Any,
        is_stream: bool,
        request_id: str | None = None,
    ) -> s.DoneReply:
        raw = await self._h.done.remote(endpoint, worker_id, job_id, body, is_stream, request_id=request_id)
        return s.DoneReply.model_validate(raw)

    async def done_many(
        self, endpoint: str, worker_id: str, results: Sequence[tuple[str, Any]], is_stream: bool = False
    ) -> list[s.DoneReply]:
        raw = await self._h.done_many.remote(endpoint, worker_id, list(results), is_stream)
        return [s.DoneReply.model_validate(r) for r in raw]

    async def stream_push(
        self, endpoint: str, worker_id: str, job_id: str, outputs: Sequence[Any]
    ) -> s.StreamPushReply:
        raw = await self._h.stream_push.remote(endpoint, worker_id, job_id, list(outputs))
        return s.StreamPushReply.model_validate(raw)

    async def stop_poll(self, endpoint: str, worker_id: str, wait_s: float | None) -> list[str]:
        return [str(i) for i in await self._h.stop_poll.remote(endpoint, worker_id, wait_s)]

    async def ping(
        self, endpoint: str, worker_id: str, job_ids: Sequence[str], request_id: str | None = None
    ) -> list[str]:
        """Heartbeat with the held jobs; the ids the worker must stop."""
        raw = await self._h.ping.remote(endpoint, worker_id, list(job_ids), request_id=request_id)
        return [str(i) for i in raw]

    # Management
    async def create_endpoint(self, spec: EndpointSpec) -> s.EndpointPublic:
        return s.EndpointPublic.model_validate(await self._h.create_endpoint.remote(spec))

    async def update_endpoint(self, name: str, patch: EndpointPatch) -> s.EndpointPublic:
        return s.EndpointPublic.model_validate(await self._h.update_endpoint.remote(name, patch))

    async def delete_endpoint(self, name: str) -> s.EndpointDeleted:
        return s.EndpointDeleted.model_validate(await self._h.delete_endpoint.remote(name))

    async def get_endpoint(self, name: str) -> s.EndpointPublic:
        return s.EndpointPublic.model_validate(await self._h.get_endpoint.remote(name))

    async def list_versions(self, name: str) -> s.VersionList:
        return s.VersionList.model_validate(await self._h.list_versions.remote(name))

    async def package_arriving(self, uri: str) -> None:
        """Tell the queue a code package is about to be uploaded (it keeps it; see
        ``VersionDispatch.package_arriving``)."""
        await self._h.package_arriving.remote(uri)

    async def rollback(self, name: str, to: int | None) -> s.RollbackReply:
        return s.RollbackReply.model_validate(await self._h.rollback.remote(name, to))

    async def list_endpoints(self) -> list[s.EndpointPublic]:
        return [s.EndpointPublic.model_validate(e) for e in await self._h.list_endpoints.remote()]

    async def list_workers(self, endpoint: str | None = None) -> list[s.WorkerView]:
        return [s.WorkerView.model_validate(w) for w in await self._h.list_workers.remote(endpoint)]

    async def drain_worker(self, worker_id: str) -> s.WorkerView:
        return s.WorkerView.model_validate(await self._h.drain_worker.remote(worker_id))

    async def list_jobs(
        self, endpoint: str | None, status: str | None, limit: int, cursor: str | None
    ) -> s.JobList:
        return s.JobList.model_validate(await self._h.list_jobs.remote(endpoint, status, limit, cursor))

    async def get_job(self, job_id: str) -> s.JobDetail:
        return s.JobDetail.model_validate(await self._h.get_job.remote(job_id))

    async def stats(self) -> dict[str, s.EndpointStats]:
        raw = await self._h.stats.remote()
        return {name: s.EndpointStats.model_validate(row) for name, row in raw.items()}

    async def metrics_text(self) -> bytes:
        """Prometheus exposition of the queue's metrics."""
        body: bytes = await self._h.metrics_text.remote()
        return body

    async def ready(self) -> s.QueueReady:
        """The store answers and recovery is done (raises otherwise)."""
        return s.QueueReady.model_validate(await self._h.ready.remote())

    # Named keys and the audit log
    async def create_key(self, record: KeyRecord) -> None:
        """Store a new key record (Conflict when the name is taken)."""
        await self._h.create_key.remote(record)

    async def revoke_key(self, name: str) -> KeyRecord:
        """Delete a key record (NotFound when there is none); the record deleted."""
        record: KeyRecord = await self._h.revoke_key.remote(name)
        return record

    async def list_keys(self) -> tuple[list[KeyRecord], dict[str, int]]:
        """Every key record and the last-use times (ms) of those used."""
        records, used = await self._h.list_keys.remote()
        return list(records), dict(used)

    async def sync_keys(
        self, known_version: int, used_ms: dict[str, int]
    ) -> tuple[int, list[KeyRecord] | None]:
        """Report last uses; the key table's version and, when it moved past ``known_version``, the table."""
        version, records = await self._h.sync_keys.remote(known_version, used_ms)
        return int(version), None if records is None else list(records)

    async def record_audit(self, entry: AuditEntry) -> None:
        await self._h.record_audit.remote(entry)

    async def audit(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` audit entries, newest first."""
        return list(await self._h.audit.remote(limit))


class AutoscalerClient:
    """Typed calls to the autoscaler actor; ``handle()`` as for :class:`QueueClient`."""

    def __init__(self, handle: Callable[[], Any]) -> None:
        self._handle = handle

    @property
    def _h(self) -> Any:
        return self._handle()

    async def status(self) -> s.AutoscalerStatus:
        return s.AutoscalerStatus.model_validate(await self._h.status.remote())

    async def set_enabled(self, on: bool) -> s.AutoscalerSwitch:
        return s.AutoscalerSwitch.model_validate(await self._h.set_enabled.remote(on))

    async def history(self, endpoint: str, limit: int) -> list[dict[str, Any]]:
        """Decisions for the endpoint, newest first."""
        rows: list[dict[str, Any]] = await self._h.history.remote(endpoint, limit)
        return rows

    async def pool_ready(self, endpoint: str, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until the endpoint's pool is up; False when it is not."""
        return bool(await self._h.pool_ready.remote(endpoint, timeout_s))

    async def set_override(self, endpoint: str, override: s.OverrideBody | None) -> s.OverrideReply:
        """Pin or exclude an endpoint (None clears the override)."""
        raw = await self._h.set_override.remote(endpoint, None if override is None else override.model_dump())
        return s.OverrideReply.model_validate(raw)


def make_queue_client(state: AppState) -> QueueClient:
    """The queue client of ``state`` (what :func:`queue_client` gives a route without an override)."""
    return QueueClient(
        state.queue_handle,
        state.job_store,
        lambda: state.require_boot().queue.runsync_wait_s,
        state.arrivals(),
    )


# The dependencies of every request are ``async def``: FastAPI runs a plain ``def`` dependency in a worker
# thread (a thread hop each, per request, on the hot routes), and none of these blocks.
async def queue_client(request: Request) -> QueueClient:
    return make_queue_client(state_of(request))


async def autoscaler_client(request: Request) -> AutoscalerClient:
    return AutoscalerClient(state_of(request).autoscaler_handle)


Queue = Annotated[QueueClient, Depends(queue_client)]
Autoscaler = Annotated[AutoscalerClient, Depends(autoscaler_client)]


# Auth ---------------------------------------------------------------------------------------------------


def _bearer(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, rest = authorization.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else authorization.strip()


async def principal_of_key(state: AppState, queue: QueueClient, presented: str) -> Principal | None:
    """The principal of a presented key: the instance's own keys by digest (no call), a named key from this
    replica's copy of the key table (refreshed at most every half second, so a revocation bites within
    about a second on every replica); None when unknown or revoked."""
    auth = state.require_boot().auth
    if not presented:
        return None
    found = auth.instance_key(presented)
    if found is None:
        found = await state.keys.principal(presented, queue.sync_keys, int(time.time() * 1000))
    return found


async def principal_of_subject(state: AppState, queue: QueueClient, subject: str) -> Principal | None:
    """The principal a web UI session acts as (its key's name); None when that key was revoked."""
    if subject == ADMIN_KEY_NAME:
        return Principal(ADMIN_KEY_NAME, Scope.ADMIN)
    return await state.keys.principal_named(subject, queue.sync_keys)


async def authenticate(
    request: Request,
    state: AppState,
    queue: QueueClient,
    authorization: str | None,
    allow_session: bool = True,
) -> Principal:
    """Who the request acts as: the key in ``Authorization`` (``Bearer KEY`` or the raw key, as workers send
    it), else (when ``allow_session``) the web UI session's key. 401 when there is none, or it is unknown or
    revoked."""
    auth = state.require_boot().auth
    if not auth.enabled:
        return Principal(INSECURE_NAME, Scope.ADMIN)
    if authorization:
        found = await principal_of_key(state, queue, _bearer(authorization))
        if found is not None:
            return found
    if allow_session and state.ui_subject is not None:
        subject = state.ui_subject(request, auth)
        if subject is not None:
            found = await principal_of_subject(state, queue, subject)
            if found is not None:
                return found
            raise Unauthorized(f"key '{subject}' of this session was revoked: log in again")
    if authorization:
        raise Unauthorized("unknown or revoked key")
    raise Unauthorized("missing API key (Authorization: Bearer KEY)")


def queue_from(request: Request, state: AppState) -> QueueClient:
    """The queue client a route of this request's app would receive (``dependency_overrides`` honoured), for
    code outside a route's dependencies (the web UI's login)."""
    override = request.app.dependency_overrides.get(queue_client)
    if override is None:
        return make_queue_client(state)
    takes_state = len(inspect.signature(override).parameters) > 0
    made: QueueClient = override(state) if takes_state else override()
    return made


def _family_of(request: Request, worker: bool) -> Family:
    """The route family of a request by its path and method (the routers of /v2 say client or worker)."""
    if worker:
        return Family.WORKER
    if str(request.scope.get("path", "")).startswith("/v2/"):  # request.url would build a whole URL
        return Family.CLIENT
    return Family.READ if request.method.upper() in ("GET", "HEAD", "OPTIONS") else Family.CHANGE


async def _audit_target(request: Request) -> str:
    """What a change acts on: the path's name, endpoint or worker, else the body's ``name``."""
    for param in ("name", "endpoint", "worker_id", "job_id"):
        value = request.path_params.get(param)
        if value:
            return str(value)
    if "json" not in request.headers.get("content-type", ""):
        return ""  # an upload (a code package): not read here
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    name = body.get("name") if isinstance(body, dict) else None
    return name[:128] if isinstance(name, str) else ""


async def _admit(
    request: Request, state: AppState, queue: QueueClient, authorization: str | None, family: Family
) -> Principal:
    """Authenticate and check the scope (403 naming the key and what it may not do); the principal."""
    # The worker protocol wants a key in the header: a browser session never drives it.
    who = await authenticate(request, state, queue, authorization, allow_session=family is not Family.WORKER)
    readable = (request.method.upper(), _template(request)) in READABLE_CLIENT_ROUTES
    why = refusal(who, family, request.path_params.get("endpoint"), readable=readable)
    if why is not None:
        raise Forbidden(why, {"key": who.name, "scope": who.scope.value})
    return who


def _template(request: Request) -> str:
    """The path template of the request's route (``/v2/{endpoint}/run``), else its path."""
    route = request.scope.get("route")
    return route.path if isinstance(route, APIRoute) else str(request.scope.get("path", ""))


async def _audit_of(request: Request, family: Family) -> tuple[str | None, str]:
    """The audit action of the request and what it acts on, when it changes something the audit log records
    (``(None, "")`` otherwise)."""
    action = audit_action(request.method, _template(request), family)
    return action, (await _audit_target(request) if action else "")


async def _record(queue: QueueClient, who: Principal, action: str, target: str) -> None:
    """Append a change that succeeded to the audit log (through the queue actor's typed method)."""
    entry = AuditEntry(int(time.time() * 1000), who.name, action, target, current_request_id() or "")
    try:
        await queue.record_audit(entry)
    except Exception:  # the change is done: a lost audit line is logged, not turned into an error reply
        log.exception("audit entry not recorded", extra={"action": action, "target": target})


def _access_dependency(family: Family | None) -> Callable[..., AsyncIterator[Principal]]:
    """A router dependency: admit the request (401/403), run the route, and record it in the audit log
    when it changed something and succeeded (an error raised by the route skips the recording)."""

    async def dependency(
        request: Request, queue: Queue, authorization: Annotated[str | None, Header()] = None
    ) -> AsyncIterator[Principal]:
        fam = family if family is not None else _family_of(request, False)
        who = await _admit(request, state_of(request), queue, authorization, fam)
        action, target = await _audit_of(request, fam)
        yield who
        if action is not None:
            await _record(queue, who, action, target)

    return dependency


def _admission(worker: bool = False) -> Callable[..., Awaitable[Principal]]:
    """A router dependency for the ``/v2`` routers, whose routes change nothing the audit log records
    (except those that add :func:`record_change`): admit the request (401/403), nothing after the route. A
    plain function, not a generator: FastAPI runs a generator dependency in an exit stack of its own, about
    a sixth of what the app spends on a job route (``bench/app_overhead.py``)."""

    async def dependency(
        request: Request, queue: Queue, authorization: Annotated[str | None, Header()] = None
    ) -> Principal:
        return await _admit(request, state_of(request), queue, authorization, _family_of(request, worker))

    return dependency


require_api_key = _access_dependency(None)
"""Management routes: ``Authorization: Bearer KEY`` or a web UI session (CSRF-checked). The family comes
from the request: under ``/api/v1`` a GET is a read (read scope), anything else a change (admin), recorded
in the audit log."""

require_client_key = _admission()
"""The client API (``/v2/{endpoint}/...``): ``Authorization: Bearer KEY`` or a web UI session (client
scope). A client route the audit log records adds :func:`record_change`."""

require_worker_key = _admission(worker=True)
"""Worker protocol: ``Authorization: KEY`` with or without ``Bearer`` (worker scope); nothing recorded."""


async def record_change(
    request: Request, queue: Queue, who: Annotated[Principal, Depends(require_client_key)]
) -> AsyncIterator[None]:
    """A client route that changes something worth recording (``core.scopes.AUDIT_ACTIONS``, such as
    purging a queue): recorded in the audit log once it succeeded."""
    action, target = await _audit_of(request, _family_of(request, False))
    yield
    if action is not None:
        await _record(queue, who, action, target)


def unrecorded_changes(routers: Sequence[APIRouter]) -> list[str]:
    """``METHOD /path`` of each route of ``routers`` the audit log should record (:func:`audit_action`)
    with no recording dependency (its router's or its own: :data:`require_api_key` and the like, or
    :func:`record_change`): a check for the tests."""
    recorders = {require_api_key, require_keys_admin, require_audit_reader, record_change}
    missing: list[str] = []
    for router in routers:
        missing += _unrecorded(router, recorders)
    return missing


def _unrecorded(router: APIRouter, recorders: set[Any]) -> list[str]:
    missing: list[str] = []
    own = {d.dependency for d in router.dependencies}
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        calls = {d.call for d in _dependants(route.dependant)} | own
        family = Family.CLIENT if route.path.startswith("/v2/") else None
        for method in sorted(route.methods or ()):
            fam = family or (Family.READ if method in ("GET", "HEAD", "OPTIONS") else Family.CHANGE)
            if audit_action(method, route.path, fam) is not None and not calls & recorders:
                missing.append(f"{method} {route.path}")
    return missing


def _dependants(dependant: Any) -> list[Any]:
    out = []
    for d in dependant.dependencies:
        out += [d, *_dependants(d)]
    return out


require_keys_admin = _access_dependency(Family.KEYS)
"""``/api/v1/keys``: admin keys only, reads included."""

require_audit_reader = _access_dependency(Family.AUDIT)
"""``/api/v1/audit``: admin and read keys."""


# Validated inputs ---------------------------------------------------------------------------------------


async def _worker_id(
    worker_id: Annotated[str, Path(max_length=128, description="Worker id (RUNPOD_POD_ID).")],
) -> str:
    if not worker_id_ok(worker_id):
        raise InvalidInput("invalid worker id", {"loc": ["path", "worker_id"], "value": worker_id[:64]})
    return worker_id


WorkerId = Annotated[str, Depends(_worker_id)]


async def json_body(request: Request) -> Any:
    """The body as JSON whatever its content type (the worker SDK labels JSON as a form); None when empty.
    For worker-protocol bodies, whose shape the queue interprets (a result, a chunk, progress)."""
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("body is not valid JSON", {"loc": ["body"]}) from None


JsonBody = Annotated[Any, Depends(json_body)]


def oversized_body(request: Request) -> OversizedBody | None:
    """The body held back from this route for being over the limit (None: the body was within it); only
    on routes :meth:`AppState.told_of_oversized` names."""
    held = request.scope.get("state", {}).get(OVERSIZED)
    return held if isinstance(held, OversizedBody) else None


Oversized = Annotated[OversizedBody | None, Depends(oversized_body)]

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate_at(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Where the first string (or key) that UTF-8 cannot encode is, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        where = (*path, key.encode("utf-8", "replace").decode())
        found = _lone_surrogate_at(key, where)
        if found is None:
            found = _lone_surrogate_at(item, where)
        if found is not None:
            return found
    return None


async def utf8_body(request: Request) -> None:
    """Refuse JSON strings that are not Unicode (a lone surrogate, ``"\\ud800"``): valid JSON, but stored they
    would make every reply that includes them (job listings, job-take, status) fail to encode. A request
    that says it has no body (no ``Content-Length`` nor ``Transfer-Encoding``, or a zero length: a status
    poll) is not read: under Ray Serve a read asks the proxy for the body, about 2 ms."""
    length = request.headers.get("content-length")
    if length in (None, "0") and "transfer-encoding" not in request.headers:
        return
    raw = await request.body()
    if not _SURROGATE_ESCAPE.search(raw):
        return
    try:
        where = _lone_surrogate_at(json.loads(raw))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return  # not JSON at all: the route's own parsing says so
    if where is not None:
        raise InvalidInput(
            "body has a string that is not valid Unicode (a lone surrogate)", {"loc": ["body", *where]}
        )
