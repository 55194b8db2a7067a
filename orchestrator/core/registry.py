"""The queue's registry of workers, internal (Ray replicas) and outside (RunPod worker SDK) alike.

In-memory, clock passed in, persisted by the queue actor through :meth:`WorkerRegistry.dirty`. Each worker
is one :class:`~orchestrator.core.workers.WorkerRecord`, and every state change goes through
:func:`~orchestrator.core.workers.transition` (the table in ``workers``; an invalid move raises
``InvalidWorkerTransition`` and each record keeps its history):

- a worker registers on its first sign of life (a take, a result, a ping, or its pool vouching for a
  replica still STARTING); an outside worker is ready then (IDLE);
- IDLE <-> BUSY follows the jobs the queue has leased to it (``hold`` / ``release``); a STARTING replica
  that reports a live state or takes a job is ready (-> IDLE);
- DRAINING once asked (``drain``) or once it reports draining; a drain is not undone;
- STOPPED when its heartbeat is lost or it is known dead (``mark_lost``). STOPPED is terminal: a stopped
  worker that shows a sign of life again is registered anew (a new record), its old leases already gone.

What a worker reports about itself (replicas send their lifecycle, health, cold start, node, counters) is
shown in its view; the reported lifecycle only moves the record forward along the table (a late report of
an earlier state is stale and ignored). Stopped workers are forgotten after ``retention_s``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

from orchestrator.core.health import HealthRecord, HealthState
from orchestrator.core.workers import (
    WORKER_KINDS,
    WorkerKind,
    WorkerRecord,
    WorkerState,
    absorb_report,
    heartbeat,
    held_by_stopped_code,
    is_active,
    is_heartbeat_stale,
    is_live,
    is_record_unhealthy,
    new_worker,
    parse_state,
    record_jobs,
    stopped_at_s,
    transition,
)

PERSIST_EVERY_S = 5.0
LOST_REASON = "heartbeat lost"
"""Why ``mark_lost`` stops a worker unless told otherwise (``doctor`` looks for it)."""

_HEALTHY = HealthRecord(state=HealthState.HEALTHY, established=True)
"""Health of a worker that reports none (an outside worker): the queue has nothing against it."""

_RUNPOD_COUNTS = {
    WorkerState.IDLE: "idle",
    WorkerState.BUSY: "running",
    WorkerState.STARTING: "initializing",
    WorkerState.DRAINING: "draining",
}
"""RunPod's ``/health`` worker count names of the live states (unhealthy ones count as ``unhealthy``)."""


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _kind(kind: str | None) -> WorkerKind:
    if kind not in WORKER_KINDS:
        raise ValueError(f"kind ({kind!r}) must be one of {sorted(WORKER_KINDS)}")
    return cast(WorkerKind, kind)


@dataclass
class _Entry:
    """A record plus what only the registry keeps: the worker's last report and when it was saved."""

    record: WorkerRecord
    reported: dict[str, Any] = field(default_factory=dict)
    persisted_s: float = 0.0

    def view(self) -> dict[str, Any]:
        rec = self.record
        stopped = not is_live(rec.state)
        reported_reason = self.reported.get("reason")
        if stopped and self.reported.get("state") != WorkerState.STOPPED.value:
            reason: Any = rec.reason  # the last report is from when it was live: the stop says why
        else:
            reason = reported_reason
        out: dict[str, Any] = {
            "workerId": rec.worker_id,
            "endpoint": rec.endpoint,
            "kind": rec.kind,
            "health": rec.health.state.value,
            **{k: v for k, v in self.reported.items() if k not in _OWN_KEYS},
            "state": rec.state.value,
            "jobs": sorted(rec.jobs),
            "firstSeenAt": _ms(rec.started_s),
            "lastHeartbeatAt": _ms(rec.last_heartbeat_s),
            "draining": rec.state is WorkerState.DRAINING or _was_drained(rec),
            "reason": reason,
            "history": [
                {"at": _ms(h.at_s), "from": h.from_state.value, "to": h.to_state.value, "reason": h.reason}
                for h in rec.history
            ],
        }
        return out


_OWN_KEYS = frozenset(
    {"workerId", "endpoint", "kind", "state", "jobs", "firstSeenAt", "lastHeartbeatAt", "draining", "history"}
)
"""View keys the registry owns: a worker's report never overrides them (``health`` and ``reason`` it may
set: they are its own)."""


def _was_drained(rec: WorkerRecord) -> bool:
    return rec.state is WorkerState.STOPPED and any(h.to_state is WorkerState.DRAINING for h in rec.history)


class WorkerRegistry:
    """Workers by id. Not thread-safe; one event loop owns it."""

    def __init__(self, heartbeat_timeout_s: float, retention_s: float = 600.0) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.retention_s = retention_s
        self._w: dict[str, _Entry] = {}
        self._removed: set[str] = set()
        self._dirty: set[str] = set()

    # Changes -------------------------------------------------------------------------------------------

    def touch(
        self,
        worker_id: str,
        endpoint: str,
        kind: str | None,
        now_s: float,
        reported: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a sign of life (a take, a result, a ping, or a pool's report), registering the worker if
        new, on another endpoint, or STOPPED (a new record). ``kind``: ``ray`` or ``external`` (None: keep,
        ``external`` for a new worker). ``reported``: the worker's own view of itself (state, health, ...),
        shown in its view; its state moves the record forward (``_follow``). A report that says the worker
        STOPPED is no sign of life: the record is not revived, and ``mark_lost`` does the stopping."""
        reported_state = parse_state(reported.get("state")) if reported is not None else None
        says_stopped = reported_state is WorkerState.STOPPED
        e = self._w.get(worker_id)
        if e is None or e.record.endpoint != endpoint or (not is_live(e.record.state) and not says_stopped):
            starting = reported_state is WorkerState.STARTING
            e = _Entry(
                new_worker(
                    worker_id,
                    endpoint,
                    _kind(kind or (e.record.kind if e is not None else "external")),
                    now_s,
                    state=WorkerState.STARTING if starting else WorkerState.IDLE,
                    health=_HEALTHY,
                    reason="reported starting" if starting else "registered",
                )
            )
            self._w[worker_id] = e
            self._removed.discard(worker_id)
            self._dirty.add(worker_id)
        rec = e.record if says_stopped else heartbeat(e.record, now_s)
        if kind is not None and rec.kind != kind:
            rec = replace(rec, kind=_kind(kind))
        if reported is not None and reported != e.reported:
            e.reported = dict(reported)
            self._dirty.add(worker_id)
            rec = self._follow(absorb_report(rec, e.reported), reported_state, now_s)
        e.record = rec

    def _follow(self, rec: WorkerRecord, reported: WorkerState | None, now_s: float) -> WorkerRecord:
        """Moves ``rec`` forward to what its worker reports: a live state ends STARTING, DRAINING starts a
        drain. Anything else (an earlier state, STOPPED: ``mark_lost`` stops) changes nothing."""
        if reported in (WorkerState.IDLE, WorkerState.BUSY) and rec.state is WorkerState.STARTING:
            return transition(rec, WorkerState.IDLE, now_s, "reported ready")
        if reported is WorkerState.DRAINING and is_active(rec.state):
            return transition(rec, WorkerState.DRAINING, now_s, "reported draining")
        return rec

    def hold(self, worker_id: str, endpoint: str, job_id: str, now_s: float) -> None:
        """The store leased ``job_id`` to the worker: it holds it (a sign of life when unknown or stopped)."""
        e = self._w.get(worker_id)
        if e is None or not is_live(e.record.state):
            self.touch(worker_id, endpoint, None, now_s)
            e = self._w[worker_id]
        if job_id not in e.record.jobs:
            e.record = record_jobs(e.record, e.record.jobs | {job_id}, now_s)
            self._dirty.add(worker_id)

    def release(self, worker_id: str, job_id: str, now_s: float | None = None) -> None:
        """The worker no longer holds ``job_id`` (finished, cancelled, reclaimed); unknown ids are ignored.
        ``now_s``: when, for the history (when not given: its last heartbeat or last change, the later)."""
        e = self._w.get(worker_id)
        if e is not None and job_id in e.record.jobs:
            rec = e.record
            last_s = max([rec.last_heartbeat_s] + [h.at_s for h in rec.history[-1:]])
            at_s = last_s if now_s is None else now_s
            e.record = record_jobs(e.record, e.record.jobs - {job_id}, at_s)
            self._dirty.add(worker_id)

    def drain(self, worker_id: str, now_s: float, reason: str = "drain requested") -> None:
        """Stop handing jobs to the worker: -> DRAINING (idempotent while draining).

        Raises ``KeyError`` for an unknown worker and ``InvalidWorkerTransition`` (a 409) for a STOPPED one.
        """
        e = self._w[worker_id]
        if e.record.state is not WorkerState.DRAINING:
            e.record = transition(e.record, WorkerState.DRAINING, now_s, reason)
            self._dirty.add(worker_id)

    def mark_lost(self, worker_id: str, now_s: float, reason: str = LOST_REASON) -> None:
        """The worker is gone (heartbeat lost, actor dead): -> STOPPED, holding nothing. Unknown or already
        STOPPED workers are left as they are."""
        e = self._w.get(worker_id)
        if e is None or not is_live(e.record.state):
            return
        e.record = replace(transition(e.record, WorkerState.STOPPED, now_s, reason), jobs=frozenset())
        self._dirty.add(worker_id)

    # Reads ---------------------------------------------------------------------------------------------

    def held(self, worker_id: str) -> list[str]:
        e = self._w.get(worker_id)
        return sorted(e.record.jobs) if e else []

    def exists(self, worker_id: str) -> bool:
        return worker_id in self._w

    def endpoint_of(self, worker_id: str) -> str:
        return self._w[worker_id].record.endpoint

    def record(self, worker_id: str) -> WorkerRecord:
        """The worker's record (a value). Raises ``KeyError`` for an unknown worker."""
        return self._w[worker_id].record

    def is_draining(self, worker_id: str) -> bool:
        e = self._w.get(worker_id)
        return e is not None and e.record.state is WorkerState.DRAINING

    def stale(self, now_s: float) -> list[str]:
        """Live workers silent for longer than the heartbeat timeout (``is_heartbeat_stale``)."""
        timeout_s = self.heartbeat_timeout_s
        return [w for w, e in self._w.items() if is_heartbeat_stale(e.record, now_s, timeout_s)]

    # Persistence ---------------------------------------------------------------------------------------

    def restore(self, raw: Mapping[str, str], draining: set[str], now_s: float) -> None:
        """Reload persisted records after a restart; every worker gets one heartbeat timeout of grace.

        A record comes back in the state it was saved in, through the table: STOPPED when it was lost,
        DRAINING when saved draining or in ``draining`` (the store's durable drain set), STARTING when it was
        starting, IDLE otherwise (a worker is BUSY again as soon as the queue re-holds its leases). Records
        saved by an older version (no ``state``) use their reported state.
        """
        for worker_id, text in raw.items():
            d = json.loads(text)
            reported = dict(d.get("reported") or {})
            saved = parse_state(d.get("state")) or parse_state(reported.get("state"))
            kind = d.get("kind", "external")
            rec = new_worker(
                worker_id,
                d["endpoint"],
                _kind(kind if kind in WORKER_KINDS else "external"),
                d.get("firstSeenAt", 0) / 1000,
                state=WorkerState.STARTING if saved is WorkerState.STARTING else WorkerState.IDLE,
                health=_HEALTHY,
                reason="restored",
            )
            rec = heartbeat(absorb_report(rec, reported), now_s)
            if d.get("lostAt"):
                rec = transition(rec, WorkerState.STOPPED, d["lostAt"] / 1000, d.get("reason") or LOST_REASON)
            elif worker_id in draining or saved is WorkerState.DRAINING:
                rec = transition(rec, WorkerState.DRAINING, now_s, "restored draining")
            self._w[worker_id] = _Entry(rec, reported, persisted_s=now_s)

    def dirty(self, now_s: float) -> tuple[dict[str, str], list[str]]:
        """Records to persist (changed, or last heartbeat unsaved for a while) and ids to delete."""
        for w, e in list(self._w.items()):
            stopped_s = stopped_at_s(e.record)
            if stopped_s is not None and now_s - stopped_s > self.retention_s:
                del self._w[w]
                self._removed.add(w)
            elif now_s - e.persisted_s > PERSIST_EVERY_S and e.record.last_heartbeat_s > e.persisted_s:
                self._dirty.add(w)
        changed = {}
        for w in self._dirty:
            entry = self._w.get(w)
            if entry is None:
                continue
            entry.persisted_s = now_s
            rec = entry.record
            stopped_s = stopped_at_s(rec)
            changed[w] = json.dumps(
                {
                    "endpoint": rec.endpoint,
                    "kind": rec.kind,
                    "firstSeenAt": _ms(rec.started_s),
                    "lastSeenAt": _ms(rec.last_heartbeat_s),
                    "reported": entry.reported,
                    "lostAt": _ms(stopped_s) if stopped_s is not None else None,
                    "state": rec.state.value,
                    "reason": rec.reason,
                }
            )
        removed = sorted(self._removed)
        self._dirty.clear()
        self._removed.clear()
        return changed, removed

    # Views ---------------------------------------------------------------------------------------------

    def view(self, worker_id: str) -> dict[str, Any]:
        return self._w[worker_id].view()

    def views(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return [
            e.view() for w, e in sorted(self._w.items()) if endpoint is None or e.record.endpoint == endpoint
        ]

    def has_free_worker(self, endpoint: str) -> bool:
        """Whether a serving worker of the endpoint (idle, or busy below its concurrency counting the slots
        stopped jobs' code still holds; healthy) would take a job now, as its latest report says: one that
        takes from the store needs no wake-up here."""
        return any(
            e.record.endpoint == endpoint
            and e.record.state in (WorkerState.IDLE, WorkerState.BUSY)
            and len(e.record.jobs) + held_by_stopped_code(e.reported) < e.record.concurrency
            and not is_record_unhealthy(e.record)
            for e in self._w.values()
        )

    def health_counts(self, endpoint: str) -> dict[str, int]:
        """RunPod-style worker counts: idle, running, initializing, draining, unhealthy (``is_unhealthy``,
        whatever the live state). Stopped workers are not counted."""
        out = {"idle": 0, "running": 0, "initializing": 0, "draining": 0, "unhealthy": 0}
        for e in self._w.values():
            rec = e.record
            if rec.endpoint != endpoint or not is_live(rec.state):
                continue
            out["unhealthy" if is_record_unhealthy(rec) else _RUNPOD_COUNTS[rec.state]] += 1
        return out

    def state_counts(self) -> dict[tuple[str, str], float]:
        """Workers by (endpoint, lifecycle state), stopped ones included."""
        out: dict[tuple[str, str], float] = {}
        for e in self._w.values():
            key = (e.record.endpoint, e.record.state.value)
            out[key] = out.get(key, 0) + 1
        return out
