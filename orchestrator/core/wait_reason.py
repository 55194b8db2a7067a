"""Why a queued job waits: one stable code and a one-line message, for every IN_QUEUE status object.

Pure: :func:`wait_reason` takes the job's place in its queue (:class:`JobPlace`) and what is known about its
endpoint (:class:`EndpointFacts`: its spec, its workers from the queue's registry, its last failed replica
start, and what only the autoscaler knows, :class:`AutoscalerFacts`, None when unknown or stale). The first
cause that actually blocks progress wins, in this order (:data:`CODES`):

``no_handler``            no handler and no outside worker polling: nothing will ever take the job
``handler_fails_to_load`` the endpoint's replicas fail to start (the error), and none is ready
``autoscaler_disabled``   the autoscaler is switched off and no replica is free or starting
``no_gpu``                the autoscaler cannot place a replica: needs G x TYPE, F free, cluster limit M
``no_capacity``           the autoscaler cannot place a replica for lack of CPUs or memory
``max_replicas``          every replica is busy and the endpoint is at ``maxReplicas``
``scaling_up``            n replicas are starting (some may wait for placement)
``low_priority``          a low-priority job behind k others (normal-priority jobs go first)
``queue_position``        k jobs ahead in the queue
``waiting_for_worker``    next in line, no worker free yet (the autoscaler adds one, or outside ones busy)
``dispatching``           next in line and a worker is free: being handed over now

The wire form is ``{"code": ..., "message": ...}`` (the ``waitReason`` of a status object).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.error_text import error_line, runtime_env_failed
from orchestrator.core.replica_start import NO_SETUP

CODES: tuple[str, ...] = (
    "no_handler",
    "handler_fails_to_load",
    "autoscaler_disabled",
    "no_gpu",
    "no_capacity",
    "max_replicas",
    "scaling_up",
    "low_priority",
    "queue_position",
    "waiting_for_worker",
    "dispatching",
)
"""Every code :func:`wait_reason` returns, in priority order (the first that applies wins)."""

MESSAGE_MAX = 300
"""A message is one line of at most this many characters (errors are cut to their last line)."""

GPU_CAUSES = frozenset({"gpus", "gpu_type"})
"""Blocked-decision causes (:func:`orchestrator.metrics.blocked_reason`) that mean no GPU fits."""
OTHER_CAUSES = frozenset({"cpus", "memory"})


@dataclass(frozen=True)
class WaitReason:
    """A stable ``code`` (one of :data:`CODES`) and a one-line ``message``."""

    code: str
    message: str

    def wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class JobPlace:
    """Where the job is: ``ahead`` jobs before it in its endpoint's queue; its priority."""

    ahead: int
    low_priority: bool = False


@dataclass(frozen=True)
class StartFailure:
    """The endpoint's replicas failing to start: the latest ``error`` and ``failures`` in a row;
    ``pool``: the pool itself cannot start them (Ray refuses their options or runtime env)."""

    error: str
    failures: int = 1
    pool: bool = False


@dataclass(frozen=True)
class AutoscalerFacts:
    """What the autoscaler published about the cluster and one endpoint at its latest (fresh) tick.

    ``blocked``: its latest Blocked reason for the endpoint (free text, None when not blocked) and
    ``blocked_cause`` its category (``gpus``, ``gpu_type``, ``cpus``, ``memory``, ``max_replicas``,
    ``other``). GPUs: the cluster's ``gpus_total`` and ``gpus_free`` (Ray's view), ``max_gpus`` the budget
    the cluster may grow to (None: it does not grow), ``gpus_by_type`` type -> (total, free).
    ``start_failures`` / ``start_error``: the endpoint's pool's failed starts in a row and the last error.
    """

    enabled: bool = True
    blocked: str | None = None
    blocked_cause: str | None = None
    gpus_total: float = 0.0
    gpus_free: float = 0.0
    max_gpus: float | None = None
    gpus_by_type: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    start_failures: int = 0
    start_error: str | None = None


@dataclass(frozen=True)
class EndpointFacts:
    """An endpoint as the queue sees it. Worker counts are of live workers: ``starting`` replicas (of which
    ``pending_placement`` wait for resources, and ``setting_up`` were granted them and are being set up,
    doing ``setup``: :mod:`orchestrator.core.replica_start`), ready ones ``idle`` or ``busy``, and live
    ``outside`` workers (RunPod worker SDK). ``held_by_stopped``: of the ``busy`` ones, those with every
    slot taken and at least one by a stopped (cancelled or timed-out) job's code, which cannot be
    interrupted and holds its slot until it returns. ``start_failure``: replicas failed to start more
    recently than any became ready (None otherwise). ``autoscaler``: None when unknown or stale."""

    has_handler: bool = True
    gpus: float = 0.0
    gpu_types: Sequence[str] | None = None
    max_replicas: int = 10
    starting: int = 0
    pending_placement: int = 0
    setting_up: int = 0
    setup: str = NO_SETUP
    idle: int = 0
    busy: int = 0
    held_by_stopped: int = 0
    outside: int = 0
    start_failure: StartFailure | None = None
    autoscaler: AutoscalerFacts | None = None


def one_line(text: str, limit: int = MESSAGE_MAX) -> str:
    """The line of ``text`` (a traceback) that says what failed (:func:`error_line`), cut to ``limit``
    characters."""
    line = error_line(text, limit=1 << 20)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _ahead(place: JobPlace) -> str:
    return f"; {_plural(place.ahead, 'job')} ahead" if place.ahead > 0 else ""


def _gpu_message(ep: EndpointFacts, a: AutoscalerFacts) -> str:
    types = list(ep.gpu_types or ())
    kind = " or ".join(types) if types else "GPU"
    if types:
        free = sum(a.gpus_by_type.get(t, (0.0, 0.0))[1] for t in types)
        total = sum(a.gpus_by_type.get(t, (0.0, 0.0))[0] for t in types)
        have = f"{free:g} free of {total:g} {kind}"
    else:
        have = f"{a.gpus_free:g} free of {a.gpus_total:g}"
    limit = a.max_gpus if a.max_gpus is not None else a.gpus_total
    grows = "" if a.max_gpus is not None and a.max_gpus > a.gpus_total else " (the cluster does not grow)"
    msg = f"needs {ep.gpus:g} x {kind} per replica; {have}, cluster limit {limit:g}{grows}"
    if ep.gpus > limit or (a.blocked_cause == "gpu_type"):
        msg += ": it can never fit"
    return msg


def wait_reason(place: JobPlace, ep: EndpointFacts) -> WaitReason:
    """Why a queued job waits (see the module docstring for the codes and their order)."""
    ahead = _ahead(place)
    if not ep.has_handler and ep.outside == 0:
        nobody = "the endpoint has no handler and no outside worker is polling it"
        return WaitReason("no_handler", nobody + ahead)
    blocked = _replicas_blocked(ep, ahead) if ep.has_handler else None
    if blocked is not None:
        return blocked
    if place.ahead > 0:
        if place.low_priority:
            return WaitReason(
                "low_priority", f"low priority: {_plural(place.ahead, 'job')} ahead (normal-priority first)"
            )
        return WaitReason("queue_position", f"{_plural(place.ahead, 'job')} ahead in the queue")
    return _next_in_line(ep)


def _replicas_blocked(ep: EndpointFacts, ahead: str) -> WaitReason | None:
    """The causes that hold back an endpoint with a handler, whatever the job's place (None: none)."""
    a = ep.autoscaler
    failure = ep.start_failure
    if failure is None and a is not None and a.start_failures > 0 and a.start_error:
        failure = StartFailure(a.start_error, a.start_failures)
    if failure is not None and ep.idle + ep.busy == 0:
        times = f" ({failure.failures} failed starts in a row)" if failure.failures > 1 else ""
        if failure.pool:
            what = "the pool cannot start replicas"
        elif runtime_env_failed(failure.error):
            what = "the replicas' runtime environment fails to set up"
        else:
            what = "replicas fail to load the handler"
        return WaitReason("handler_fails_to_load", f"{what}{times}: {one_line(failure.error)}")
    if a is not None and not a.enabled and ep.idle == 0 and ep.starting == 0:
        have = _all_busy(ep) if ep.busy else "no replica"
        return WaitReason(
            "autoscaler_disabled",
            f"the autoscaler is disabled and {have}; none will be started" + _held_by_stopped(ep) + ahead,
        )
    if a is not None and a.blocked and ep.idle == 0:
        if a.blocked_cause in GPU_CAUSES and ep.gpus > 0:
            return WaitReason("no_gpu", _gpu_message(ep, a) + ahead)
        if a.blocked_cause in OTHER_CAUSES:
            return WaitReason("no_capacity", f"cannot place a replica: {one_line(a.blocked)}" + ahead)
    at_max = ep.idle + ep.busy + ep.starting >= ep.max_replicas
    if ep.idle == 0 and at_max and (ep.starting == 0 or ep.max_replicas == 0):
        busy = _all_busy(ep) if ep.busy else "no replica allowed"
        return WaitReason(
            "max_replicas", f"{busy} (maxReplicas {ep.max_replicas})" + _held_by_stopped(ep) + ahead
        )
    if ep.starting > 0 and ep.idle == 0:
        return WaitReason("scaling_up", _starting(ep) + ahead)
    return None


def _starting(ep: EndpointFacts) -> str:
    """``"2 replicas starting: 1 waiting for resources, 1 installing torch (runtimeEnv.pip)"``; the
    count is left out when it is the only one."""
    stages = [(ep.pending_placement, "waiting for resources"), (ep.setting_up, ep.setup)]
    shown = [(n, what) for n, what in stages if n > 0]
    if not shown:
        return f"{_plural(ep.starting, 'replica')} starting"
    if len(shown) == 1 and shown[0][0] == ep.starting:
        parts = [shown[0][1]]
    else:
        parts = [f"{n} {what}" for n, what in shown]
    return f"{_plural(ep.starting, 'replica')} starting: " + ", ".join(parts)


def _all_busy(ep: EndpointFacts) -> str:
    return f"all {_plural(ep.busy, 'replica')} busy"


def _held_by_stopped(ep: EndpointFacts) -> str:
    """``"; 1 held by a stopped job's code until it returns"`` (empty when none is)."""
    if not ep.held_by_stopped:
        return ""
    return f"; {ep.held_by_stopped} held by a stopped job's code until it returns"


def _next_in_line(ep: EndpointFacts) -> WaitReason:
    """The job is at the head of its queue and nothing blocks the endpoint."""
    if ep.idle > 0 or (not ep.has_handler and ep.outside > ep.busy):
        return WaitReason("dispatching", "next in line and a worker is free: being handed over")
    if not ep.has_handler:
        workers = _plural(ep.outside, "outside worker")
        return WaitReason("waiting_for_worker", f"next in line; all {workers} busy")
    if ep.busy:
        busy = f"next in line; {_all_busy(ep)}, the autoscaler may add one" + _held_by_stopped(ep)
        return WaitReason("waiting_for_worker", busy)
    return WaitReason("waiting_for_worker", "next in line; no replica yet, the autoscaler starts one")


# Facts as the autoscaler publishes them (JSON) ----------------------------------------------------------


def autoscaler_facts(published: Mapping[str, Any], endpoint: str) -> AutoscalerFacts:
    """One endpoint's :class:`AutoscalerFacts` from the autoscaler's published wait facts (see
    :func:`orchestrator.control_metrics.wait_facts`); an endpoint it did not mention is not blocked."""
    gpus = published.get("gpus") or {}
    row = (published.get("endpoints") or {}).get(endpoint) or {}
    by_type = {
        str(t): (float(v.get("total", 0.0)), float(v.get("free", 0.0)))
        for t, v in (published.get("gpuTypes") or {}).items()
    }
    max_gpus = gpus.get("maxGpus")
    return AutoscalerFacts(
        enabled=bool(published.get("enabled", True)),
        blocked=row.get("blocked"),
        blocked_cause=row.get("blockedCause"),
        gpus_total=float(gpus.get("total", 0.0)),
        gpus_free=float(gpus.get("free", 0.0)),
        max_gpus=None if max_gpus is None else float(max_gpus),
        gpus_by_type=by_type,
        start_failures=int(row.get("startFailures") or 0),
        start_error=row.get("startError"),
    )


def facts_are_fresh(age_s: float, interval_s: float, ticks: int = 3, floor_s: float = 10.0) -> bool:
    """Published facts ``age_s`` old are trusted for ``ticks`` autoscaler intervals (at least ``floor_s``)."""
    return 0.0 <= age_s <= max(floor_s, ticks * interval_s)


__all__ = [
    "CODES",
    "AutoscalerFacts",
    "EndpointFacts",
    "JobPlace",
    "StartFailure",
    "WaitReason",
    "autoscaler_facts",
    "facts_are_fresh",
    "never_fits",
    "one_line",
    "wait_reason",
    "waiting_line",
]


def waiting_line(status: Mapping[str, Any]) -> str | None:
    """``ID waiting (CODE): MESSAGE`` for the status object of a queued job that carries its ``waitReason``
    (what ``ripple submit --wait`` and the batch runner print); None for any other status object."""
    reason = status.get("waitReason") if status.get("status") == "IN_QUEUE" else None
    if not isinstance(reason, Mapping):
        return None
    return f"{status.get('id', '')} waiting ({reason.get('code', '')}): {reason.get('message', '')}"


def never_fits(
    gpus: float,
    gpu_types: Sequence[str] | None,
    nodes: Sequence[Mapping[str, Any]],
    max_gpus: float | None,
) -> str | None:
    """Why a replica needing ``gpus`` GPUs (of one of ``gpu_types``, any when None) can never be placed on
    this cluster, or None when it can (or may, once the cluster grows). ``nodes``: each alive node's
    ``gpus`` and ``gpusByType`` (``/api/v1/specs``); ``max_gpus``: the GPU budget the cluster may grow to
    (None: it does not grow). A replica's GPUs come from one node."""
    if gpus <= 0:
        return None
    today = sum(float(n.get("gpus") or 0.0) for n in nodes)
    if max_gpus is not None and max_gpus > today:
        if gpus > max_gpus:
            return f"needs {_gpus(gpus)} per replica, above the cluster's limit maxGpus {max_gpus:g}"
        return None  # nodes to come may offer what it needs
    types = list(gpu_types or ())

    def usable(n: Mapping[str, Any]) -> float:
        if not types:
            return float(n.get("gpus") or 0.0)
        return max((float((n.get("gpusByType") or {}).get(t, 0.0)) for t in types), default=0.0)

    largest = max((usable(n) for n in nodes), default=0.0)
    if largest + 1e-9 >= gpus:
        return None
    kind = f" of type {' or '.join(types)}" if types else ""
    has = f"the largest node has {_gpus(largest)}{kind}"
    have = f"no node offers GPUs{kind}" if largest <= 0 else has
    return f"needs {_gpus(gpus)}{kind} per replica, but {have} and the cluster cannot grow (no maxGpus)"


def _gpus(n: float) -> str:
    """``1 GPU``, ``2 GPUs``, ``0.5 GPUs``."""
    return f"{n:g} GPU" if n == 1 else f"{n:g} GPUs"
