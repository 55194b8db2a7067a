"""Request and response models of the HTTP API (the request models of jobs and endpoints live in
``orchestrator.core.models``; this module holds what only the HTTP layer needs).

The wire shapes are the RunPod protocol's and the contract's, key for key. Replies built by the actors keep
their optional keys exactly as the actor sent them: the routes that return them declare
``response_model_exclude_unset=True``, so a key the actor left out stays out and a key it sent as ``null``
stays ``null`` (a COMPLETED job whose handler returned None has ``"output": null``). Models of replies that
the actors assemble allow extra keys (``extra="allow"``), so a field an actor adds reaches the client
instead of failing the reply; the declared fields document and check what clients rely on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from orchestrator.core.models import EndpointSpec

JobState = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]


class _Reply(BaseModel):
    """A reply assembled by an actor: declared fields checked, extra keys passed through."""

    model_config = ConfigDict(extra="allow")


class _Fixed(BaseModel):
    """A reply assembled by the route itself: exactly these keys."""

    model_config = ConfigDict(extra="forbid")


# Probes ------------------------------------------------------------------------------------------------


class Live(_Fixed):
    status: Literal["ok"]


class Ready(_Reply):
    """``/health/ready`` and ``/health/startup``: the queue's readiness (``store``, ``recovery``) and, from a
    store that says, ``storeMemory``: ``usedBytes``, ``maxBytes`` (its maxmemory; 0: no limit), ``policy``
    (its maxmemory-policy), ``share`` (used over maxmemory; null without one) and ``high`` (past the share
    ``ripple doctor`` and ``ripple status`` warn at), read by ``ripple doctor`` and the web UI."""

    status: Literal["ok"]
    store: str
    recovery: dict[str, Any]


class HealthSummary(_Fixed):
    """``/health``: ``ok`` with the queue's readiness, or ``degraded`` with the error's type."""

    status: Literal["ok", "degraded"]
    queue: dict[str, Any]


class QueueReady(_Reply):
    """The queue actor's readiness: the store answers and recovery is done."""

    store: str
    recovery: dict[str, Any]


# Client API (RunPod) -----------------------------------------------------------------------------------


class RunAccepted(_Fixed):
    """``/run``: the job is durable and queued."""

    id: str
    status: Literal["IN_QUEUE"]


class BatchAccepted(_Fixed):
    """``/run-batch``: every job is durable and queued, ids in the order of the request."""

    ids: list[str]
    status: Literal["IN_QUEUE"]


class WaitReason(_Fixed):
    """Why a queued job waits: a stable ``code`` and a one-line ``message`` (see
    :mod:`orchestrator.core.wait_reason` for the codes)."""

    code: str = Field(description="no_handler, handler_fails_to_load, autoscaler_disabled, no_gpu, ...")
    message: str


class JobStatusObject(_Reply):
    """RunPod's status object. ``workerId``, ``output``, ``error`` and ``retries`` appear only when known
    (``output`` may be present and ``null``); ``waitReason`` on IN_QUEUE jobs only (a Ripple extension the
    RunPod SDK ignores)."""

    id: str
    status: JobState
    delayTime: int = Field(description="Milliseconds in the queue.")
    executionTime: int = Field(description="Milliseconds running in the latest attempt.")
    workerId: str | None = None
    version: int | None = Field(default=None, description="The endpoint version that ran the job.")
    output: Any = None
    error: str | None = None
    retries: int | None = None
    waitReason: WaitReason | None = None


class StreamChunk(_Reply):
    output: Any


class StreamReply(_Reply):
    """``/stream``: chunks not yet returned; ``stream`` is always present (possibly empty)."""

    id: str
    status: JobState
    stream: list[StreamChunk]


class JobStateReply(_Reply):
    """``/cancel`` and ``/retry``: the job's state after the call."""

    id: str
    status: JobState


class PurgeReply(_Reply):
    removed: int
    status: str


class JobCounts(_Reply):
    completed: int
    failed: int
    inProgress: int
    inQueue: int
    retried: int


class WorkerCounts(_Reply):
    idle: int
    running: int
    initializing: int
    draining: int
    unhealthy: int


class EndpointHealth(_Reply):
    """``/health`` of an endpoint: RunPod's job counts and workers by state."""

    jobs: JobCounts
    workers: WorkerCounts


# Worker protocol (RunPod worker SDK) --------------------------------------------------------------------


class TakenJob(_Reply):
    """A leased job as the worker SDK hands it to the handler."""

    id: str
    input: Any


class DoneReply(_Reply):
    """``/job-done``: ``accepted`` false (with ``reason``) when the result was dropped (not held, already
    final); ``progress`` true for a progress update."""

    id: str
    accepted: bool
    status: str | None = None
    reason: str | None = None
    progress: bool | None = None


class DoneBatchReply(_Fixed):
    results: list[DoneReply]


class StreamPushReply(_Reply):
    id: str
    accepted: bool


class JobsToStop(_Fixed):
    jobsToStop: list[str]


class PingReply(_Fixed):
    status: Literal["ok"]
    jobsToStop: list[str]


# Management API ------------------------------------------------------------------------------------------


class EndpointProblem(_Reply):
    """Why an endpoint's pool cannot serve (``orchestrator.core.endpoint_problem``)."""

    code: Literal["pool_error", "version_failed", "start_failed", "unplaceable"]
    message: str


class EndpointPublic(EndpointSpec):
    """An endpoint as the API returns it (camelCase), with ``problem`` when its pool cannot serve."""

    model_config = ConfigDict(extra="allow")

    problem: EndpointProblem | None = None

    @field_validator("runtime_env")
    @classmethod
    def _runtime_env(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        return value  # a reply: what is stored, even a spec written before local paths were refused


class EndpointVersionPublic(_Reply):
    """One version of an endpoint (``orchestrator.core.versions.EndpointVersion``'s wire form)."""

    version: int
    createdAt: int = Field(description="Milliseconds since the epoch.")
    handler: str | None
    codeDigest: str | None
    changed: list[str]
    state: Literal["rolling_out", "active", "failed", "retired"]
    error: str | None = None
    codeDeletedAt: int | None = Field(
        default=None,
        description="When its code package was deleted (ms; only the latest RIPPLE_KEEP_VERSIONS keep "
        "theirs): it cannot be rolled back to.",
    )


class VersionList(_Fixed):
    """``GET /api/v1/endpoints/{name}/versions``: newest first."""

    versions: list[EndpointVersionPublic]


class RollbackBody(_Fixed):
    """``POST /api/v1/endpoints/{name}/rollback``: the version to return to (default: the previous good
    one)."""

    to: int | None = Field(default=None, ge=1)


class RollbackReply(_Reply):
    endpoint: EndpointPublic
    version: int
    rolledBackTo: int


class PackageStored(_Fixed):
    """``POST /api/v1/packages``: where the package is (a ``gcs://`` URI for ``runtimeEnv.working_dir``)."""

    uri: str
    codeDigest: str
    sizeBytes: int
    files: int
    requirements: list[str] | None
    existed: bool


class EndpointList(_Fixed):
    endpoints: list[EndpointPublic]


class EndpointDeleted(_Reply):
    name: str
    deleted: bool
    cancelledJobs: int


class WorkerView(_Reply):
    """A worker as the registry reports it (state, jobs held, heartbeats, what the pool reported)."""

    workerId: str
    endpoint: str
    state: str


class WorkerList(_Fixed):
    workers: list[WorkerView]


class WorkerLogs(_Fixed):
    """``/api/v1/workers/{id}/logs``: the last lines a replica's process wrote to ``stream``."""

    workerId: str
    endpoint: str
    actorId: str
    nodeId: str | None
    stream: Literal["stdout", "stderr"]
    lines: list[str]


class JobDetail(JobStatusObject):
    """The management view of a job: the status object plus input, timings, policy and history."""

    endpoint: str
    workerLogs: str | None = Field(
        default=None, description="Path of the logs of the worker that ran the job (set by GET /jobs/{id})."
    )


class JobList(_Fixed):
    """Jobs newest first; ``nextCursor`` continues the listing (null at the end)."""

    jobs: list[JobDetail]
    nextCursor: str | None = Field(
        description="Pass as `cursor` for the next page: where this one ended (`MS:ID`, the last job's "
        "creation time and id); null at the end."
    )


class NodeSpec(_Fixed):
    nodeId: str | None
    gpuType: str | None  # the node's type (the first by name when it declares several)
    gpusByType: dict[str, float] = {}  # GPUs of each type on the node
    gpus: float
    cpus: float
    memoryMb: int


class SpecList(_Fixed):
    specs: list[NodeSpec]


class Info(_Fixed):
    """This instance: never a secret."""

    version: str
    dashboardUrl: str | None
    store: Literal["embedded", "external"]
    dataDir: str
    namespace: str
    auth: bool
    heartbeatTimeoutS: float
    leaseGraceS: float
    sweepIntervalS: float
    autoscalerIntervalS: float | None


class WebhookProblem(_Reply):
    """A delivery that did not arrive: ``outcome`` ``failed`` (every attempt) or ``refused`` (its address is
    outside the webhook policy), why, and when (``atS``, wall clock)."""

    jobId: str
    outcome: str
    reason: str
    atS: float


class WebhookDeliveries(_Reply):
    """An endpoint's webhook deliveries over the last ``windowS`` seconds (kept in the store: a restarted
    queue reads them back), by outcome; ``lastProblem``: the latest that did not arrive, when in the
    window; ``message``: what did not arrive, in the sentence ``ripple status`` and ``ripple doctor`` print
    (absent when all arrived)."""

    delivered: int
    failed: int
    refused: int
    windowS: float
    lastProblem: WebhookProblem | None = None
    message: str | None = None


class EndpointStats(_Reply):
    """One endpoint's queue. ``waitingTakers``: takes held open at the queue (outside workers' long-polls,
    and Ray replicas that cannot reach Redis); replicas that take from Redis wait there, not counted."""

    queued: int
    running: int
    oldestQueuedAgeS: float | None
    waitingTakers: int
    lastArrivalS: float | None
    webhooks: WebhookDeliveries | None = None


class QueueStats(_Fixed):
    endpoints: dict[str, EndpointStats]


class ClusterFacts(_Reply):
    """Ray nodes, totals over alive nodes, draining node ids and pending demand (null: unknown)."""

    nodes: list[dict[str, Any]]
    aliveNodes: int
    gpusTotal: float
    maxGpusPerNode: float
    gpuTypes: list[str]
    draining: list[str]
    pendingDemand: list[dict[str, Any]] | None


# Autoscaler ----------------------------------------------------------------------------------------------


class AutoscalerStatus(_Reply):
    """Cluster GPUs and a row per endpoint; ``leader`` false (and no rows) before this instance leads."""

    enabled: bool
    ticks: int
    intervalS: float
    gpus: dict[str, Any]
    endpoints: list[dict[str, Any]]
    leader: bool | None = None


class AutoscalerSwitch(_Fixed):
    enabled: bool


class AutoscalerHistory(_Fixed):
    endpoint: str
    history: list[dict[str, Any]]


class OverrideBody(_Fixed):
    """A per-endpoint override: pin the replica count, or leave the endpoint alone."""

    desiredReplicas: int | None = Field(default=None, ge=0, le=1000)
    disabled: bool = False


class OverrideReply(_Fixed):
    endpoint: str
    override: OverrideBody | None


# Named API keys and the audit log ----------------------------------------------------------------------


class KeyCreate(_Fixed):
    """``POST /api/v1/keys``: a named key; ``endpoints`` limits a client or worker key (empty: all)."""

    name: str = Field(min_length=1, max_length=63, description="Lower-case letters, digits, '.', '_', '-'.")
    scope: Literal["admin", "read", "client", "worker"]
    endpoints: list[str] = Field(default_factory=list, max_length=100)


class KeyView(_Fixed):
    """A key as listed: never the key itself."""

    name: str
    scope: str
    endpoints: list[str]
    createdAt: int = Field(description="Epoch ms.")
    lastUsedAt: int | None = Field(description="Epoch ms of the last use a replica reported, or null.")


class KeyCreated(KeyView):
    """The reply to a creation: the only time the key is shown."""

    key: str = Field(description="The key: shown once, stored only as a hash.")


class KeyList(_Fixed):
    keys: list[KeyView]


class KeyRevoked(_Fixed):
    name: str
    revoked: Literal[True]


class AuditRow(_Fixed):
    at: int = Field(description="Epoch ms.")
    key: str
    action: str
    target: str
    requestId: str
    detail: dict[str, Any]


class AuditLog(_Fixed):
    entries: list[AuditRow]
