"""The lifecycle of one worker (a Ray replica or an outside worker): one enum, one table, one door.

``STARTING -> IDLE <-> BUSY -> DRAINING -> STOPPED``; any live state may go straight to STOPPED (the
worker died, its actor or node was lost, its heartbeat went stale) and any live state may start DRAINING
(scale-down, a draining node, an operator's drain). STOPPED is terminal: an outside worker that pings
again after being stopped is registered anew (a new record), never revived, because its leases are
already gone.

Health (quarantine, probation, eviction) is a separate machine in ``health``, held in ``WorkerRecord.health``.
Whether a worker may be handed a job combines both plus its free slots: ``free_slots`` / ``can_take_jobs``.
The dispatcher must check it in the same critical section that hands out jobs, so a worker that has just
started DRAINING can never receive one.

The predicates every reader shares are defined here, once: ``is_live`` (not STOPPED), ``is_active`` (not
leaving), ``accepts_jobs``, ``is_unhealthy`` (live, health QUARANTINED or EVICTED), ``heartbeat_overdue`` /
``is_heartbeat_stale`` (live, no sign of life for longer than the timeout), ``start_overdue`` /
``is_start_overdue`` (STARTING for longer than the timeout) and ``count_state`` (the state a worker is
counted under: its own, or ``quarantined`` when unhealthy). The ``view_*`` functions apply them to the wire
views (``/api/v1/workers`` JSON: ``state`` and ``health`` wire names, times in epoch milliseconds), which
``metrics``, ``ripple status``, ``doctor`` and the autoscaler read.

Everything here is pure: records are frozen values, the clock is passed in as ``now_s`` (seconds, the
caller's clock; the HTTP API's ``startedAt`` and ``lastHeartbeatAt`` are these same seconds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal, cast

from orchestrator.core.errors import Conflict
from orchestrator.core.health import UNHEALTHY_STATES, HealthRecord, HealthState, serving_slots
from orchestrator.core.history import StateChange, appended, history_from_json, history_to_json

WorkerKind = Literal["ray", "external"]
WORKER_KINDS: frozenset[str] = frozenset({"ray", "external"})


class WorkerState(str, Enum):
    """Lifecycle state of a worker. The values are the wire names."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"


TRANSITIONS: Mapping[WorkerState, frozenset[WorkerState]] = {
    # Ready (handler loaded / first ping), drained before it was ever ready, or failed to start.
    WorkerState.STARTING: frozenset({WorkerState.IDLE, WorkerState.DRAINING, WorkerState.STOPPED}),
    WorkerState.IDLE: frozenset({WorkerState.BUSY, WorkerState.DRAINING, WorkerState.STOPPED}),
    WorkerState.BUSY: frozenset({WorkerState.IDLE, WorkerState.DRAINING, WorkerState.STOPPED}),
    # A drain is not undone: a worker that should serve again is a new worker (Cerebrium: back to pending).
    WorkerState.DRAINING: frozenset({WorkerState.STOPPED}),
    WorkerState.STOPPED: frozenset(),
}
"""Every legal state change. ``transition`` is the only function that applies one."""

INITIAL_STATES: frozenset[WorkerState] = frozenset({WorkerState.STARTING, WorkerState.IDLE})
"""States a new record may be created in: STARTING for a Ray replica still loading its handler, IDLE for an
outside worker that registers with its first take or ping (it is ready by then)."""


def is_terminal(state: WorkerState) -> bool:
    """True when no transition leaves ``state`` (STOPPED)."""
    return not TRANSITIONS[state]


def accepts_jobs(state: WorkerState) -> bool:
    """True when a worker in ``state`` may be handed jobs: it is BUSY or may become BUSY (IDLE).

    Derived from the table, so a new state is classified by its edges, not by a second list.
    """
    return state is WorkerState.BUSY or WorkerState.BUSY in TRANSITIONS[state]


def is_active(state: WorkerState) -> bool:
    """True when the worker is not leaving: it can still be told to drain (STARTING, IDLE, BUSY).

    Derived from the table: the states with an edge to DRAINING.
    """
    return WorkerState.DRAINING in TRANSITIONS[state]


def is_live(state: WorkerState) -> bool:
    """True when the worker may still do something (every state but the terminal STOPPED)."""
    return not is_terminal(state)


def is_unhealthy(state: WorkerState, health: HealthState) -> bool:
    """True when a live worker's health keeps jobs from it: QUARANTINED or EVICTED
    (``health.UNHEALTHY_STATES``). A STOPPED worker is never unhealthy: it is gone."""
    return is_live(state) and health in UNHEALTHY_STATES


def heartbeat_overdue(state: WorkerState, last_heartbeat_s: float, now_s: float, timeout_s: float) -> bool:
    """True when a live worker's last sign of life is more than ``timeout_s`` before ``now_s``.

    A STOPPED worker is never overdue (nothing is expected of it); exactly ``timeout_s`` is not overdue yet.
    """
    return is_live(state) and now_s - last_heartbeat_s > timeout_s


def start_overdue(state: WorkerState, started_s: float, now_s: float, timeout_s: float) -> bool:
    """True when the worker has been STARTING for more than ``timeout_s`` ("stuck starting")."""
    return state is WorkerState.STARTING and now_s - started_s > timeout_s


QUARANTINED_BUCKET = "quarantined"
"""The state under which an unhealthy live worker is counted (metrics, ``ripple status``)."""


def count_state(state: WorkerState, health: HealthState) -> str:
    """The state a worker is counted under: ``quarantined`` when ``is_unhealthy``, else its wire name."""
    return QUARANTINED_BUCKET if is_unhealthy(state, health) else state.value


class InvalidWorkerTransition(Conflict, ValueError):
    """A state change that ``TRANSITIONS`` does not allow (a ``Conflict``: the HTTP layer maps it to 409).

    Pickles cleanly (it may cross a Ray actor boundary): its ``args`` are its constructor's.
    """

    def __init__(
        self, worker_id: str, from_state: WorkerState, to_state: WorkerState, detail: str = ""
    ) -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"worker {worker_id}: {from_state.value} -> {to_state.value} is not allowed{why}",
            {"workerId": worker_id, "from": from_state.value, "to": to_state.value},
        )
        self.args = (worker_id, from_state, to_state, detail)
        self.worker_id = worker_id
        self.from_state = from_state
        self.to_state = to_state


class JobsNotAccepted(Conflict, ValueError):
    """New jobs handed to a worker that has no free slot for them (draining, stopped, starting,
    quarantined, or full). A ``Conflict``: the HTTP layer maps it to 409."""


WorkerChange = StateChange[WorkerState]
"""One worker state change: when (seconds), from, to, and why."""


@dataclass(frozen=True)
class WorkerRecord:
    """One worker as the pool and the queue see it (a value: every change returns a new one).

    ``jobs``: ids of the jobs it holds now. ``concurrency``: jobs at once (>= 1). ``started_s``: when the
    record was created. ``cold_start_s``: seconds from STARTING to IDLE (None until ready, and for
    workers created IDLE). ``node_id``: the Ray node (None for outside workers). ``reason``: why it is in
    its state. ``history``: the last ``core.history.HISTORY_LIMIT`` state changes, oldest first.
    """

    worker_id: str
    endpoint: str
    kind: WorkerKind
    state: WorkerState
    health: HealthRecord
    concurrency: int
    jobs: frozenset[str]
    started_s: float
    last_heartbeat_s: float
    cold_start_s: float | None = None
    node_id: str | None = None
    reason: str = ""
    history: tuple[WorkerChange, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in WORKER_KINDS:
            raise ValueError(f"kind ({self.kind!r}) must be one of {sorted(WORKER_KINDS)}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency ({self.concurrency}) must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the HTTP API's camelCase keys; jobs sorted, history oldest first."""
        return {
            "workerId": self.worker_id,
            "endpoint": self.endpoint,
            "kind": self.kind,
            "state": self.state.value,
            "health": self.health.to_dict(),
            "concurrency": self.concurrency,
            "jobs": sorted(self.jobs),
            "startedAt": self.started_s,
            "lastHeartbeatAt": self.last_heartbeat_s,
            "coldStartS": self.cold_start_s,
            "nodeId": self.node_id,
            "reason": self.reason,
            "history": history_to_json(self.history),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerRecord:
        """Inverse of ``to_dict``. Raises ``ValueError`` naming a missing key or a bad value."""
        try:
            cold = data["coldStartS"]
            node = data["nodeId"]
            return cls(
                worker_id=str(data["workerId"]),
                endpoint=str(data["endpoint"]),
                kind=cast(WorkerKind, data["kind"]),
                state=WorkerState(data["state"]),
                health=HealthRecord.from_dict(data["health"]),
                concurrency=int(data["concurrency"]),
                jobs=frozenset(str(j) for j in data["jobs"]),
                started_s=float(data["startedAt"]),
                last_heartbeat_s=float(data["lastHeartbeatAt"]),
                cold_start_s=None if cold is None else float(cold),
                node_id=None if node is None else str(node),
                reason=str(data.get("reason", "")),
                history=history_from_json(data.get("history", ()), WorkerState),
            )
        except KeyError as exc:
            raise ValueError(f"worker record is missing {exc.args[0]!r}") from exc


def new_worker(
    worker_id: str,
    endpoint: str,
    kind: WorkerKind,
    now_s: float,
    *,
    concurrency: int = 1,
    state: WorkerState = WorkerState.STARTING,
    node_id: str | None = None,
    health: HealthRecord | None = None,
    reason: str = "",
) -> WorkerRecord:
    """A fresh record in ``state`` (one of ``INITIAL_STATES``), health PENDING, holding no job.

    Raises ``ValueError`` for a state outside ``INITIAL_STATES``, an unknown kind or concurrency < 1.
    """
    if state not in INITIAL_STATES:
        raise ValueError(f"state ({state.value}) must be one of {sorted(s.value for s in INITIAL_STATES)}")
    return WorkerRecord(
        worker_id=worker_id,
        endpoint=endpoint,
        kind=kind,
        state=state,
        health=HealthRecord() if health is None else health,
        concurrency=concurrency,
        jobs=frozenset(),
        started_s=now_s,
        last_heartbeat_s=now_s,
        reason=reason or ("starting" if state is WorkerState.STARTING else "registered"),
    )


def transition(record: WorkerRecord, to: WorkerState, now_s: float, reason: str) -> WorkerRecord:
    """The one door: moves ``record`` to ``to`` at ``now_s`` because of ``reason``.

    Appends ``(now_s, from, to, reason)`` to the history (last ``core.history.HISTORY_LIMIT`` kept) and sets
    ``reason``. Leaving STARTING for IDLE sets ``cold_start_s`` to ``now_s - started_s``. Jobs held are
    kept (a STOPPED worker's jobs are the leases its caller must reclaim).

    Raises ``InvalidWorkerTransition`` when ``TRANSITIONS`` has no edge ``record.state -> to`` (a
    self-transition included), or when the move would contradict the jobs held: IDLE while holding jobs,
    BUSY while holding none (``with_jobs`` makes those two moves from the held set).
    """
    if to not in TRANSITIONS[record.state]:
        raise InvalidWorkerTransition(record.worker_id, record.state, to)
    if to is WorkerState.IDLE and record.jobs:
        raise InvalidWorkerTransition(record.worker_id, record.state, to, f"holds {len(record.jobs)} job(s)")
    if to is WorkerState.BUSY and not record.jobs:
        raise InvalidWorkerTransition(record.worker_id, record.state, to, "holds no job")
    cold_start_s = record.cold_start_s
    if record.state is WorkerState.STARTING and to is WorkerState.IDLE:
        cold_start_s = max(0.0, now_s - record.started_s)
    history = appended(record.history, WorkerChange(now_s, record.state, to, reason))
    return replace(record, state=to, reason=reason, cold_start_s=cold_start_s, history=history)


def free_slots(record: WorkerRecord, now_s: float) -> int:
    """How many more jobs ``record`` may be handed at ``now_s``: 0 unless its state accepts jobs; else
    the slots its health allows (``health.serving_slots``: full concurrency when HEALTHY, 1 on probation,
    0 in quarantine) minus the jobs it holds, never below 0."""
    if not accepts_jobs(record.state):
        return 0
    return max(0, serving_slots(record.health, record.concurrency, now_s) - len(record.jobs))


def held_by_stopped_code(reported: Mapping[str, Any]) -> int:
    """The slots a Ray replica reports held by stopped (cancelled, timed-out) jobs' code that still runs
    (``heldByStopped`` in its state report; 0 when absent). Code in a thread cannot be interrupted: its
    slot takes no job until the code returns, though the replica holds no job for it."""
    return max(0, int(reported.get("heldByStopped") or 0))


def full_by_stopped_code(view: Mapping[str, Any]) -> bool:
    """Whether a worker's view (its report merged in: ``jobs``, ``concurrency``, ``heldByStopped``) has no
    free slot because stopped jobs' code holds some: it looks idle or busy below its concurrency, but
    takes no job now."""
    held = held_by_stopped_code(view)
    return held > 0 and len(view.get("jobs") or ()) + held >= int(view.get("concurrency") or 1)


def can_take_jobs(record: WorkerRecord, now_s: float) -> bool:
    """True when ``record`` may be handed one more job now (``free_slots(record, now_s) > 0``)."""
    return free_slots(record, now_s) > 0


def with_jobs(record: WorkerRecord, jobs: Iterable[str], now_s: float) -> WorkerRecord:
    """Sets the held jobs to ``jobs`` and moves IDLE <-> BUSY to match (through ``transition``).

    Dropping jobs is always allowed (they finished, were cancelled, or their lease was lost). Adding jobs
    needs that many free slots once the dropped jobs are gone (``free_slots``): otherwise
    ``JobsNotAccepted`` is raised and nothing changes. A DRAINING or STOPPED worker keeps its state
    whatever it holds; a STARTING one holds nothing. Returns ``record`` itself when nothing changes.
    """
    held = frozenset(jobs)
    added = held - record.jobs
    if added and len(added) > free_slots(replace(record, jobs=held - added), now_s):
        raise JobsNotAccepted(
            f"worker {record.worker_id} ({record.state.value}, health {record.health.state.value}, "
            f"{len(record.jobs)}/{record.concurrency} held) cannot take {len(added)} new job(s)"
        )
    return record_jobs(record, held, now_s)


def record_jobs(record: WorkerRecord, jobs: Iterable[str], now_s: float) -> WorkerRecord:
    """Records ``jobs`` as the jobs ``record`` holds *now*, a fact already decided elsewhere (the store
    leased them), and moves the state to match through ``transition``: IDLE <-> BUSY, and a STARTING
    worker that holds a job is ready (-> IDLE -> BUSY). No slot check: that is ``with_jobs``, for whoever
    decides what a worker may take. A DRAINING or STOPPED worker keeps its state whatever it holds.

    Raises ``JobsNotAccepted`` when jobs are added to a STOPPED worker (it is gone: whoever saw it take
    registers it anew). Returns ``record`` itself when nothing changes.
    """
    held = frozenset(jobs)
    if held == record.jobs:
        return record
    if held - record.jobs and is_terminal(record.state):
        raise JobsNotAccepted(f"worker {record.worker_id} is {record.state.value}: it holds no new job")
    if record.state is WorkerState.STARTING and held:
        record = transition(record, WorkerState.IDLE, now_s, "took a job: ready")
    updated = replace(record, jobs=held)
    if updated.state is WorkerState.IDLE and held:
        return transition(updated, WorkerState.BUSY, now_s, f"holds {len(held)} job(s)")
    if updated.state is WorkerState.BUSY and not held:
        return transition(updated, WorkerState.IDLE, now_s, "holds no job")
    return updated


def heartbeat(record: WorkerRecord, now_s: float) -> WorkerRecord:
    """Records a heartbeat at ``now_s`` (the latest one wins: an out-of-order older beat is ignored)."""
    if now_s <= record.last_heartbeat_s:
        return record
    return replace(record, last_heartbeat_s=now_s)


def is_heartbeat_stale(record: WorkerRecord, now_s: float, timeout_s: float) -> bool:
    """``heartbeat_overdue`` of a record: a live worker whose last heartbeat is more than ``timeout_s``
    before ``now_s``. A STOPPED worker is never stale. The heartbeat clock starts at creation."""
    return heartbeat_overdue(record.state, record.last_heartbeat_s, now_s, timeout_s)


def is_start_overdue(record: WorkerRecord, now_s: float, timeout_s: float) -> bool:
    """``start_overdue`` of a record: STARTING for more than ``timeout_s`` (``doctor``'s "stuck starting")."""
    return start_overdue(record.state, record.started_s, now_s, timeout_s)


def is_record_unhealthy(record: WorkerRecord) -> bool:
    """``is_unhealthy`` of a record (its health as last ticked)."""
    return is_unhealthy(record.state, record.health.state)


def stopped_at_s(record: WorkerRecord) -> float | None:
    """When a STOPPED worker stopped (its last state change: STOPPED is terminal); None while live."""
    if not is_terminal(record.state) or not record.history:
        return None
    return record.history[-1].at_s


# Wire views ------------------------------------------------------------------------------------------
# The JSON views of ``/api/v1/workers`` (and a pool's replica summaries): ``state`` and ``health`` are wire
# names, ``firstSeenAt`` / ``lastHeartbeatAt`` epoch milliseconds. Readers may see partial views (an older
# server, a test's fixture): a missing or unknown state is None, never an error.


def parse_state(value: object) -> WorkerState | None:
    """The ``WorkerState`` named by a wire value, or None when missing or unknown."""
    return WorkerState(value) if isinstance(value, str) and value in _STATE_NAMES else None


def parse_health(value: object) -> HealthState | None:
    """The ``HealthState`` named by a wire value, or None when missing or unknown."""
    return HealthState(value) if isinstance(value, str) and value in _HEALTH_NAMES else None


_STATE_NAMES = frozenset(s.value for s in WorkerState)
_HEALTH_NAMES = frozenset(h.value for h in HealthState)


def view_is_live(view: Mapping[str, Any]) -> bool:
    """``is_live`` of a view; a view with an unknown or missing state counts as live."""
    state = parse_state(view.get("state"))
    return state is None or is_live(state)


def view_store_trouble(view: Mapping[str, Any], now_s: float) -> tuple[float, str] | None:
    """For a live replica whose own steps in the job store fail (its ``storeTrouble``: it serves through the
    queue meanwhile), for how long (s, against the wall clock ``now_s``) and why; None otherwise."""
    trouble = view.get("storeTrouble")
    if not view_is_live(view) or not isinstance(trouble, Mapping):
        return None
    return max(0.0, now_s - float(trouble.get("sinceS") or now_s)), str(trouble.get("error"))


def view_is_active(view: Mapping[str, Any]) -> bool:
    """``is_active`` of a view (not draining, not stopped); a view with an unknown or missing state counts as
    active."""
    state = parse_state(view.get("state"))
    return state is None or is_active(state)


def view_is_unhealthy(view: Mapping[str, Any]) -> bool:
    """``is_unhealthy`` of a view (a missing health is not unhealthy)."""
    health = parse_health(view.get("health"))
    return health is not None and view_is_live(view) and health in UNHEALTHY_STATES


def view_count_state(view: Mapping[str, Any]) -> str:
    """``count_state`` of a view; an unknown state is counted under its own name (``idle`` when missing)."""
    if view_is_unhealthy(view):
        return QUARANTINED_BUCKET
    return str(view.get("state") or WorkerState.IDLE.value)


def view_heartbeat_overdue(view: Mapping[str, Any], now_s: float, timeout_s: float) -> bool:
    """``heartbeat_overdue`` of a view (``lastHeartbeatAt`` in ms); False without a heartbeat time."""
    last_ms = view.get("lastHeartbeatAt")
    if not last_ms:
        return False
    state = parse_state(view.get("state")) or WorkerState.IDLE
    return heartbeat_overdue(state, float(last_ms) / 1000, now_s, timeout_s)


def view_start_overdue(view: Mapping[str, Any], now_s: float, timeout_s: float) -> bool:
    """``start_overdue`` of a view (``firstSeenAt`` in ms); False without a first-seen time."""
    first_ms = view.get("firstSeenAt")
    state = parse_state(view.get("state"))
    if not first_ms or state is None:
        return False
    return start_overdue(state, float(first_ms) / 1000, now_s, timeout_s)


def absorb_report(rec: WorkerRecord, reported: Mapping[str, Any]) -> WorkerRecord:
    """Takes into ``rec`` what a worker reports of itself (a replica's ``status``, the wire view's keys)
    that a record also holds: its health (as a state: the replica keeps the full health record; a reported
    quarantine's end is unknown here, so it lasts until a report says otherwise), concurrency, node and
    cold start. Unknown or malformed values are left out. The lifecycle state is not taken: that is a
    transition, the caller's to make."""
    changes: dict[str, Any] = {}
    health = parse_health(reported.get("health"))
    if health is not None and health is not rec.health.state:
        changes["health"] = HealthRecord(
            state=health,
            established=health is HealthState.HEALTHY,
            quarantined_until_s=math.inf if health is HealthState.QUARANTINED else None,
        )
    concurrency = reported.get("concurrency")
    if isinstance(concurrency, int) and concurrency >= 1:
        changes["concurrency"] = concurrency
    node = reported.get("nodeId")
    if isinstance(node, str):
        changes["node_id"] = node
    cold = reported.get("coldStartS")
    if isinstance(cold, (int, float)) and not isinstance(cold, bool):
        changes["cold_start_s"] = float(cold)
    return replace(rec, **changes) if changes else rec
