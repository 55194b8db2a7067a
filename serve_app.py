"""Ripple's HTTP adapter: one Ray Serve deployment with a FastAPI ingress.

Routers by area: probes and metrics (no auth), the RunPod-compatible client API and the RunPod worker
protocol under ``/v2/{endpoint}``, and the management API under ``/api/v1``. Each request makes at most one
call to an actor. This module is the only place that maps errors to status codes: every error body is
``{"error": "...", "detail": ...}`` and bad input is never a 500.

Deploy with ``ripple up``, ``python -m orchestrator deploy``, or ``serve run serve_app:app`` (``app`` is a
Serve application builder that reads Ripple's settings from the environment).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Annotated, Any

import ray
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import logs, names
from orchestrator.api.middleware import RequestIdMiddleware, current_request_id
from orchestrator.boot import BootConfig
from orchestrator.core.errors import InvalidInput, NotReady, PayloadTooLarge, RippleError, Unauthorized
from orchestrator.core.models import BatchRunRequest, EndpointSpec, RunRequest, worker_id_ok
from orchestrator.core.placement import ingress_actor_options

log = logging.getLogger("ripple.http")

EP = Annotated[str, Path(max_length=63, description="Endpoint name.")]
JOB = Annotated[str, Path(max_length=128, description="Job id.")]
WORKER = Annotated[str, Path(max_length=128, description="Worker id (RUNPOD_POD_ID).")]


class _State:
    """Per-replica state, set by the deployment's constructor."""

    boot: BootConfig | None = None
    queue: Any = None
    ui_verify: Any = None
    behind_serve: bool = False  # Serve's proxy echoes X-Request-ID itself


STATE = _State()


# Errors ---------------------------------------------------------------------------------------------


def _error(status: int, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail}, status_code=status)


def _unwrap(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


async def _ripple_error(_: Request, exc: Exception) -> JSONResponse:
    err = _unwrap(exc)
    if isinstance(err, RippleError):
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, Unauthorized) else None
        resp = _error(err.status_code, err.message, err.detail)
        if headers:
            resp.headers.update(headers)
        return resp
    return await _unexpected(_, exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    fields = ", ".join(".".join(d["loc"][1:] or d["loc"]) for d in detail)
    return _error(422, f"invalid request: {fields}", detail)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, str(exc.detail))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(
        exc,
        (
            ray.exceptions.RayActorError,
            ray.exceptions.ActorUnavailableError,
            ray.exceptions.GetTimeoutError,
            NotReady,
            asyncio.TimeoutError,
        ),
    ):
        STATE.queue = None
        return _error(503, "Ripple is not ready: a control actor is unavailable, retry shortly")
    log.exception("unhandled error")
    return _error(500, "internal error (logged on the server)")


# Body limit -----------------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, by Content-Length or by counting the stream."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or STATE.boot is None:
            await self.app(scope, receive, send)
            return
        limit = STATE.boot.max_body_bytes
        if scope.get("method") in ("POST", "PATCH", "PUT"):
            scope = _as_json(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _error(413, f"request body over the limit of {limit} bytes")(scope, receive, send)
                return
        seen = 0
        over = False
        started = False

        async def limited() -> Message:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                over = True
                raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
            return message

        async def send_unless_over(message: Message) -> None:
            # FastAPI turns an error raised while it reads the body into its own 400: hold its reply back.
            nonlocal started
            if not over:
                started = True
                await send(message)

        try:
            await self.app(scope, limited, send_unless_over)
        except PayloadTooLarge:
            if not over:
                raise
        if over and not started:
            await _error(413, f"request body over the limit of {limit} bytes")(scope, receive, send)


def _as_json(scope: Scope) -> Scope:
    """Treat request bodies as JSON whatever their declared type: RunPod clients and workers (and curl)
    label JSON as a form."""
    headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    return {**scope, "headers": headers}


# Dependencies ---------------------------------------------------------------------------------------


def _boot() -> BootConfig:
    if STATE.boot is None:
        raise NotReady("the app is starting")
    return STATE.boot


def queue() -> Any:
    """Handle of the JobQueue actor (looked up once per replica, again after it was lost)."""
    if STATE.queue is None:
        STATE.queue = names.get_actor(names.QUEUE_NAME, _boot().namespace)
    return STATE.queue


async def call(method: str, *args: Any, **kwargs: Any) -> Any:
    """The one actor call of a request."""
    return await getattr(queue(), method).remote(*args, **kwargs)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, rest = authorization.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else authorization.strip()


async def require_api_key(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Client and management auth: ``Authorization: Bearer KEY``, or a web UI session (CSRF-checked)."""
    auth = _boot().auth
    if not auth.enabled:
        return
    if authorization and auth.api_key_ok(_bearer(authorization)):
        return
    if STATE.ui_verify is not None and STATE.ui_verify(request, auth):
        return
    raise Unauthorized("missing or wrong API key (Authorization: Bearer KEY)")


async def require_worker_key(authorization: Annotated[str | None, Header()] = None) -> None:
    """Worker protocol auth: ``Authorization: KEY`` with or without ``Bearer``."""
    auth = _boot().auth
    if auth.enabled and not (authorization and auth.worker_key_ok(_bearer(authorization))):
        raise Unauthorized("missing or wrong worker key (Authorization: KEY)")


def _worker(worker_id: str) -> str:
    if not worker_id_ok(worker_id):
        raise InvalidInput("invalid worker id", {"loc": ["path", "worker_id"], "value": worker_id[:64]})
    return worker_id


async def _json_body(request: Request) -> Any:
    """The body as JSON whatever its content type (the worker SDK labels JSON as a form)."""
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("body is not valid JSON", {"loc": ["body"]}) from None


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
    would make every reply that includes them (job listings, job-take, status) fail to encode."""
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


# Probes and metrics ----------------------------------------------------------------------------------

probes = APIRouter(tags=["probes"])


@probes.get("/health/live")
async def live() -> dict[str, str]:
    """The HTTP replica is alive."""
    return {"status": "ok"}


async def _queue_ready() -> dict[str, Any]:
    """The queue's readiness; any failure (the store down, the actor gone, a timeout) is a 503."""
    try:
        state: dict[str, Any] = await asyncio.wait_for(call("ready"), 5.0)
    except Exception as exc:
        err = _unwrap(exc)
        if isinstance(err, RippleError):
            raise err from None
        raise NotReady(f"not ready: {type(err).__name__}: {str(err)[:200]}") from None
    return state


@probes.get("/health/ready")
async def ready() -> dict[str, Any]:
    """The store and the job queue answer (503 otherwise)."""
    return {"status": "ok", **(await _queue_ready())}


@probes.get("/health/startup")
async def startup() -> dict[str, Any]:
    """Start-up is done: the queue has recovered every job from the store."""
    return {"status": "ok", **(await _queue_ready())}


@probes.get("/health")
async def health_summary() -> dict[str, Any]:
    """Liveness summary: this replica, and whether the queue and store answer."""
    try:
        queue_state = await asyncio.wait_for(call("ready"), 5.0)
        return {"status": "ok", "queue": queue_state}
    except Exception as exc:  # the summary reports, it does not fail
        return {"status": "degraded", "queue": {"error": type(_unwrap(exc)).__name__}}


@probes.get("/metrics")
async def metrics() -> Response:
    """Prometheus text format."""
    body = await asyncio.wait_for(call("metrics_text"), 10.0)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


# Client API (RunPod-compatible) ------------------------------------------------------------------------

client = APIRouter(
    prefix="/v2/{endpoint}", tags=["client"], dependencies=[Depends(require_api_key), Depends(utf8_body)]
)


@client.post("/run")
async def run(endpoint: EP, body: RunRequest) -> dict[str, Any]:
    """Queue one job; durable before the reply."""
    (job_id,) = await call(
        "submit",
        endpoint,
        [body.model_dump(by_alias=True, exclude_none=True)],
        request_id=current_request_id(),
    )
    return {"id": job_id, "status": "IN_QUEUE"}


@client.post("/runsync")
async def runsync(
    endpoint: EP,
    body: RunRequest,
    wait: Annotated[int | None, Query(ge=0, le=300_000, description="Hold, ms.")] = None,
) -> dict[str, Any]:
    """Queue one job and hold until it is final or ``wait`` ms (default 90 s) pass."""
    wait_s = None if wait is None else wait / 1000
    result: dict[str, Any] = await call(
        "runsync",
        endpoint,
        body.model_dump(by_alias=True, exclude_none=True),
        wait_s,
        request_id=current_request_id(),
    )
    return result


@client.post("/run-batch")
async def run_batch(endpoint: EP, body: BatchRunRequest) -> dict[str, Any]:
    """Queue many jobs, all or nothing."""
    ids = await call(
        "submit",
        endpoint,
        [j.model_dump(by_alias=True, exclude_none=True) for j in body.jobs],
        request_id=current_request_id(),
    )
    return {"ids": ids, "status": "IN_QUEUE"}


@client.api_route("/status/{job_id}", methods=["GET", "POST"])
async def status(endpoint: EP, job_id: JOB) -> dict[str, Any]:
    result: dict[str, Any] = await call("status", endpoint, job_id)
    return result


@client.api_route("/stream/{job_id}", methods=["GET", "POST"])
async def stream(endpoint: EP, job_id: JOB) -> dict[str, Any]:
    """Stream chunks not yet returned; always has a ``stream`` list."""
    result: dict[str, Any] = await call("stream", endpoint, job_id)
    return result


@client.post("/cancel/{job_id}")
async def cancel(endpoint: EP, job_id: JOB) -> dict[str, Any]:
    result: dict[str, Any] = await call("cancel", endpoint, job_id, request_id=current_request_id())
    return result


@client.post("/retry/{job_id}")
async def retry(endpoint: EP, job_id: JOB) -> dict[str, Any]:
    result: dict[str, Any] = await call("retry", endpoint, job_id, request_id=current_request_id())
    return result


@client.post("/purge-queue")
async def purge_queue(endpoint: EP) -> dict[str, Any]:
    result: dict[str, Any] = await call("purge", endpoint, request_id=current_request_id())
    return result


@client.get("/health")
async def endpoint_health(endpoint: EP) -> dict[str, Any]:
    result: dict[str, Any] = await call("health", endpoint)
    return result


# Worker protocol (RunPod worker SDK) --------------------------------------------------------------------

worker = APIRouter(
    prefix="/v2/{endpoint}", tags=["worker"], dependencies=[Depends(require_worker_key), Depends(utf8_body)]
)


@worker.get("/job-take/{worker_id}", response_model=None)
async def job_take(
    endpoint: EP, worker_id: WORKER, job_in_progress: Annotated[int, Query(ge=0, le=1)] = 0
) -> Response | dict[str, Any]:
    """Long-poll for one job: 204 when none arrives within the hold."""
    jobs = await call(
        "take", endpoint, _worker(worker_id), 1, _boot().take_wait_s, request_id=current_request_id()
    )
    return jobs[0] if jobs else Response(status_code=204)


@worker.get("/job-take-batch/{worker_id}", response_model=None)
async def job_take_batch(
    endpoint: EP,
    worker_id: WORKER,
    batch_size: Annotated[int, Query(ge=1, le=1000)] = 1,
    job_in_progress: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response | list[Any]:
    """Long-poll for up to ``batch_size`` jobs: a JSON list, or 204."""
    jobs: list[Any] = await call(
        "take", endpoint, _worker(worker_id), batch_size, _boot().take_wait_s, request_id=current_request_id()
    )
    return jobs if jobs else Response(status_code=204)


@worker.post("/job-done/{worker_id}/{job_id}")
async def job_done(
    endpoint: EP,
    worker_id: WORKER,
    job_id: JOB,
    request: Request,
    isStream: Annotated[str, Query()] = "false",
) -> dict[str, Any]:
    """A result (``{"output"}`` / ``{"error"}``) or progress update; idempotent."""
    body = await _json_body(request)
    result: dict[str, Any] = await call(
        "done",
        endpoint,
        _worker(worker_id),
        job_id,
        body,
        isStream.lower() == "true",
        request_id=current_request_id(),
    )
    return result


@worker.post("/job-done-batch/{worker_id}")
async def job_done_batch(endpoint: EP, worker_id: WORKER, request: Request) -> dict[str, Any]:
    """Extension: results of many jobs in one request, ``[{"id": ..., "output": ...} | {"id", "error"}]``
    (at most 1,000), each applied as ``job-done`` would; one store round trip for all."""
    body = await _json_body(request)
    if not isinstance(body, list) or not 1 <= len(body) <= 1000:
        raise InvalidInput("body must be a JSON list of 1 to 1000 results", {"loc": ["body"]})
    results = []
    for n, item in enumerate(body):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise InvalidInput("each result needs a string id", {"loc": ["body", n, "id"]})
        results.append((item["id"], {k: v for k, v in item.items() if k != "id"}))
    replies = await call("done_many", endpoint, _worker(worker_id), results, False)
    return {"results": replies}


@worker.post("/job-stream/{worker_id}/{job_id}")
async def job_stream(endpoint: EP, worker_id: WORKER, job_id: JOB, request: Request) -> dict[str, Any]:
    """One stream chunk ``{"output": chunk}``; never finishes the job."""
    body = await _json_body(request)
    chunk = body.get("output") if isinstance(body, dict) else body
    result: dict[str, Any] = await call("stream_push", endpoint, _worker(worker_id), job_id, [chunk])
    return result


@worker.get("/job-stop/{worker_id}", response_model=None)
async def job_stop(endpoint: EP, worker_id: WORKER) -> Response | dict[str, Any]:
    """Long-poll for jobs to stop: ``{"jobsToStop": [...]}`` or 204."""
    ids = await call("stop_poll", endpoint, _worker(worker_id), _boot().stop_wait_s)
    return {"jobsToStop": ids} if ids else Response(status_code=204)


@worker.get("/ping/{worker_id}")
async def ping(
    endpoint: EP, worker_id: WORKER, job_id: Annotated[str | None, Query(max_length=100_000)] = None
) -> dict[str, Any]:
    """Heartbeat with the comma-separated ids of the jobs the worker holds."""
    ids = [j for j in (job_id or "").split(",") if j]
    stop = await call("ping", endpoint, _worker(worker_id), ids, request_id=current_request_id())
    return {"status": "ok", "jobsToStop": stop}


# Management API ------------------------------------------------------------------------------------

manage = APIRouter(
    prefix="/api/v1", tags=["management"], dependencies=[Depends(require_api_key), Depends(utf8_body)]
)


@manage.post("/endpoints", status_code=201)
async def create_endpoint(body: EndpointSpec) -> dict[str, Any]:
    result: dict[str, Any] = await call("create_endpoint", body.model_dump())
    return result


@manage.get("/endpoints")
async def list_endpoints() -> dict[str, Any]:
    return {"endpoints": await call("list_endpoints")}


@manage.get("/endpoints/{name}")
async def get_endpoint(name: EP) -> dict[str, Any]:
    result: dict[str, Any] = await call("get_endpoint", name)
    return result


@manage.patch("/endpoints/{name}")
async def update_endpoint(name: EP, request: Request) -> dict[str, Any]:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object of endpoint fields", {"loc": ["body"]})
    result: dict[str, Any] = await call("update_endpoint", name, body)
    return result


@manage.delete("/endpoints/{name}")
async def delete_endpoint(name: EP) -> dict[str, Any]:
    result: dict[str, Any] = await call("delete_endpoint", name)
    return result


@manage.get("/endpoints/{name}/workers")
async def endpoint_workers(name: EP) -> dict[str, Any]:
    return {"workers": await call("list_workers", name)}


@manage.get("/workers")
async def list_workers() -> dict[str, Any]:
    return {"workers": await call("list_workers")}


@manage.post("/workers/{worker_id}/drain")
async def drain_worker(worker_id: WORKER) -> dict[str, Any]:
    result: dict[str, Any] = await call("drain_worker", _worker(worker_id))
    return result


@manage.get("/jobs")
async def list_jobs(
    endpoint: Annotated[str | None, Query(max_length=63)] = None,
    status: Annotated[
        str | None, Query(pattern="^(IN_QUEUE|IN_PROGRESS|COMPLETED|FAILED|CANCELLED|TIMED_OUT)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    result: dict[str, Any] = await call("list_jobs", endpoint, status, limit, cursor)
    return result


@manage.get("/jobs/{job_id}")
async def get_job(job_id: JOB) -> dict[str, Any]:
    result: dict[str, Any] = await call("get_job", job_id)
    return result


@manage.get("/specs")
async def specs() -> dict[str, Any]:
    """Worker resource specs: each alive node's GPUs (type and count), CPUs and memory."""
    nodes = await asyncio.get_running_loop().run_in_executor(None, ray.nodes)
    out = []
    for n in nodes:
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        gpu_types = [k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")]
        out.append(
            {
                "nodeId": n.get("NodeID"),
                "gpuType": gpu_types[0] if gpu_types else None,
                "gpus": res.get("GPU", 0),
                "cpus": res.get("CPU", 0),
                "memoryMb": int(res.get("memory", 0) / 2**20),
            }
        )
    return {"specs": out}


@manage.get("/info")
async def info() -> dict[str, Any]:
    """This instance, without an actor call: version, Ray dashboard URL, store kind, namespace, auth and
    the timeouts that diagnostics compare against. Never a secret."""
    from orchestrator import __version__

    boot = _boot()
    return {
        "version": __version__,
        "dashboardUrl": boot.dashboard_url,
        "store": "embedded" if boot.embedded_store else "external",
        "dataDir": boot.data_dir,
        "namespace": boot.namespace,
        "auth": boot.auth.enabled,
        "heartbeatTimeoutS": boot.queue.heartbeat_timeout_s,
        "leaseGraceS": boot.queue.lease_grace_s,
        "sweepIntervalS": boot.queue.sweep_interval_s,
        "autoscalerIntervalS": boot.autoscaler.interval_s,
    }


@manage.get("/stats")
async def queue_stats() -> dict[str, Any]:
    """Per endpoint: queued, running, the oldest queued job's age and waiting takers (one actor call)."""
    return {"endpoints": await call("stats")}


def _cluster_facts() -> dict[str, Any]:
    from actors.ray_cluster import draining_nodes
    from orchestrator.core.cluster import shape_demand, shape_nodes, summarize

    nodes = shape_nodes(ray.nodes(), draining_nodes())
    demand: list[dict[str, Any]] | None
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        demand = shape_demand(get_cluster_status(ray.get_runtime_context().gcs_address, timeout=5))
    except Exception:  # pending demand is a bonus: older GCS, no permission, a timeout
        log.debug("pending resource demand unavailable", exc_info=True)
        demand = None
    return summarize(nodes, demand)


@manage.get("/cluster")
async def cluster() -> dict[str, Any]:
    """Ray nodes (GPUs per node and type, alive, draining) and pending resource demand; no actor call."""
    return await asyncio.get_running_loop().run_in_executor(None, _cluster_facts)


# Autoscaler ------------------------------------------------------------------------------------------


def _autoscaler() -> Any:
    return names.get_actor(names.AUTOSCALER_NAME, _boot().namespace)


@manage.get("/autoscaler/status")
async def autoscaler_status() -> dict[str, Any]:
    """Cluster GPUs total/used/free and, per endpoint, current/desired replicas, queue, priority, effective
    priority, idle and waiting times."""
    result: dict[str, Any] = await asyncio.wait_for(_autoscaler().status.remote(), 30.0)
    return result


@manage.post("/autoscaler/enable")
async def autoscaler_enable() -> dict[str, Any]:
    result: dict[str, Any] = await _autoscaler().set_enabled.remote(True)
    return result


@manage.post("/autoscaler/disable")
async def autoscaler_disable() -> dict[str, Any]:
    result: dict[str, Any] = await _autoscaler().set_enabled.remote(False)
    return result


@manage.get("/autoscaler/history/{endpoint}")
async def autoscaler_history(endpoint: EP, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """Decisions for the endpoint, newest first, each with its reason."""
    return {"endpoint": endpoint, "history": await _autoscaler().history.remote(endpoint, limit)}


class OverrideBody(BaseModel):
    """A per-endpoint override: pin the replica count, or leave the endpoint alone."""

    model_config = ConfigDict(extra="forbid")

    desiredReplicas: int | None = Field(default=None, ge=0, le=1000)
    disabled: bool = False


@manage.put("/autoscaler/overrides/{endpoint}")
async def autoscaler_override(endpoint: EP, body: OverrideBody) -> dict[str, Any]:
    result: dict[str, Any] = await _autoscaler().set_override.remote(endpoint, body.model_dump())
    return result


@manage.delete("/autoscaler/overrides/{endpoint}")
async def autoscaler_override_clear(endpoint: EP) -> dict[str, Any]:
    result: dict[str, Any] = await _autoscaler().set_override.remote(endpoint, None)
    return result


# The app --------------------------------------------------------------------------------------------


def create_fastapi() -> FastAPI:
    """The FastAPI app with every router and error handler (no Ray needed until a route runs)."""
    api = FastAPI(
        title="Ripple",
        version="0.1.0",
        description="Serverless GPU job orchestrator on Ray: RunPod-compatible API.",
    )
    api.add_middleware(BodyLimit)
    # Outermost: every reply, a 413 included, gets the id.
    api.add_middleware(RequestIdMiddleware, echo=lambda: not STATE.behind_serve)
    api.add_exception_handler(RippleError, _ripple_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(Exception, _unexpected)
    for router in (probes, client, worker, manage):
        api.include_router(router)
    _mount_ui(api)
    return api


def _mount_ui(api: FastAPI) -> None:
    try:
        from orchestrator.api.webui import mount
    except ImportError:
        return
    mount(api, STATE)


fastapi_app = create_fastapi()


@serve.deployment(name="ripple-api", max_ongoing_requests=2000, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class RippleAPI:
    """The ingress deployment; its constructor makes sure the control actors exist (idempotent).

    The FastAPI app is bound late (``__serve_build_asgi_app__``), inside the replica's process, so its
    routes see this replica's state rather than a pickled copy.
    """

    def __init__(self, boot: BootConfig) -> None:
        # Serve may pickle this class by value: reach the module's state through a fresh import.
        import serve_app as module
        from actors.bootstrap import ensure_control_actors

        module.STATE.boot = boot
        module.STATE.queue = None
        module.STATE.behind_serve = True
        logs.configure("INFO")  # JSON lines in the replica's log file
        try:
            ensure_control_actors(boot, timeout_s=120.0)
        except Exception:
            logging.getLogger("ripple.http").exception(
                "control actors not ready; answering 503 until they are"
            )

    def __serve_build_asgi_app__(self) -> FastAPI:
        import serve_app as module

        app: FastAPI = module.fastapi_app
        return app


def build(boot: BootConfig, replicas: int = 1) -> Any:
    """The Serve application for a resolved boot config, its replicas placed by
    :func:`orchestrator.core.placement.ingress_actor_options` (call with Ray initialised)."""
    import ray

    options = ingress_actor_options(ray.cluster_resources())
    return RippleAPI.options(  # type: ignore[attr-defined]
        num_replicas=replicas, ray_actor_options=options
    ).bind(boot)


def app(args: dict[str, Any]) -> Any:
    """Serve application builder (``serve run serve_app:app``, RayService ``import_path``).

    Settings come from the environment and ``RIPPLE_CONFIG``; ``args`` (from a Serve config) override
    them by setting name. The store is resolved here: ``RIPPLE_REDIS_URL``, else the embedded Redis of the
    data dir, started detached.
    """
    from orchestrator.auth import auth_config, load_or_create_keys
    from orchestrator.config import load_settings

    settings = load_settings(**args)
    keys = load_or_create_keys(settings, create=not settings.insecure)
    from orchestrator.boot import boot_config
    from orchestrator.ops.instance import resolve_store

    store_url, embedded = resolve_store(settings, detach=True)
    boot = boot_config(settings, store_url, embedded, auth_config(settings, keys))
    return build(boot, settings.serve_replicas)
