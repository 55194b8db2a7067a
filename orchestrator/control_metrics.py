"""What the autoscaler measures each tick, as metric samples: pure, no Ray, no clock.

The autoscaler actor calls :func:`tick_samples` with what it gathered and decided, sends the result to the
queue (``publish_metrics``, so ``/metrics`` stays one actor call) and records the same samples in Ray's
metrics agent. Blocked decisions repeat every tick while an endpoint stays blocked; they are counted when
an endpoint becomes blocked or its cause changes, the way the decision history records them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.autoscale import Blocked, Decision
from orchestrator.core.workers import view_is_active
from orchestrator.metrics import blocked_reason

Series = dict[tuple[str, ...], float]
Rows = list[tuple[tuple[str, ...], float]]


@dataclass(frozen=True)
class TickSamples:
    """Gauges (full values), counter increments and histogram observations of one tick."""

    gauges: dict[str, Series] = field(default_factory=dict)
    counters: dict[str, Rows] = field(default_factory=dict)
    observations: dict[str, Rows] = field(default_factory=dict)


@dataclass(frozen=True)
class TickMemory:
    """What the next tick needs: replicas whose cold start was counted, each blocked endpoint's cause."""

    cold_counted: frozenset[str] = frozenset()
    blocked: Mapping[str, str] = field(default_factory=dict)


def tick_samples(
    summaries: Mapping[str, Mapping[str, Any]],
    desired: Mapping[str, int | None],
    gpus_total: float,
    gpus_free: float,
    enabled: bool,
    decisions: Sequence[Decision],
    memory: TickMemory,
) -> tuple[TickSamples, TickMemory]:
    """Samples of one autoscaler tick and the memory for the next.

    Args:
        summaries: pool summaries by endpoint (``replicas`` with ``id``, ``state``, ``coldStartS``).
        desired: the replica target per endpoint (None: not set; reported as the current count).
        gpus_total, gpus_free: the cluster's GPUs (Ray's view).
        enabled: whether the autoscaler acts.
        decisions: this tick's decisions.
        memory: what the previous tick returned.
    """
    current: Series = {}
    starting: Series = {}
    want: Series = {}
    cold: Rows = []
    counted: set[str] = set()
    for ep, summary in summaries.items():
        replicas = list(summary.get("replicas") or [])
        live = sum(1 for r in replicas if view_is_active(r))
        current[(ep,)] = float(live)
        starting[(ep,)] = float(sum(1 for r in replicas if r.get("state") == "starting"))
        target = desired.get(ep)
        want[(ep,)] = float(live if target is None else target)
        for r in replicas:
            rid, cold_s = str(r.get("id", "")), r.get("coldStartS")
            if cold_s is None:
                continue
            counted.add(rid)
            if rid not in memory.cold_counted:
                cold.append(((ep,), float(cold_s)))
    gauges: dict[str, Series] = {
        "ripple_replicas_current": current,
        "ripple_replicas_desired": want,
        "ripple_replicas_starting": starting,
        "ripple_gpus_total": {(): gpus_total},
        "ripple_gpus_free": {(): gpus_free},
        "ripple_gpus_allocated": {(): max(0.0, gpus_total - gpus_free)},
        "ripple_autoscaler_enabled": {(): 1.0 if enabled else 0.0},
    }
    kinds: dict[tuple[str, ...], float] = {}
    blocked_rows: Rows = []
    blocked_now: dict[str, str] = {}
    for d in decisions:
        if isinstance(d, Blocked):
            cause = blocked_reason(d.reason)
            blocked_now[d.endpoint] = cause
            if memory.blocked.get(d.endpoint) == cause:
                continue
            blocked_rows.append(((d.endpoint, cause), 1.0))
        key = (d.endpoint, d.kind)
        kinds[key] = kinds.get(key, 0.0) + 1.0
    counters: dict[str, Rows] = {}
    if kinds:
        counters["ripple_autoscaler_decisions"] = list(kinds.items())
    if blocked_rows:
        counters["ripple_autoscaler_blocked"] = blocked_rows
    observations = {"ripple_worker_cold_start_seconds": cold} if cold else {}
    return (
        TickSamples(gauges, counters, observations),
        TickMemory(frozenset(counted), blocked_now),
    )


def queue_gauges(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Series]:
    """The queue's state gauges from its ``stats()`` (for the Ray dashboard, refreshed each tick)."""
    return {
        "ripple_queue_depth": {(ep,): float(s.get("queued") or 0) for ep, s in stats.items()},
        "ripple_jobs_in_progress": {(ep,): float(s.get("running") or 0) for ep, s in stats.items()},
        "ripple_queue_oldest_age_seconds": {
            (ep,): float(s.get("oldestQueuedAgeS") or 0.0) for ep, s in stats.items()
        },
    }


def wait_facts(
    summaries: Mapping[str, Mapping[str, Any]],
    decisions: Sequence[Decision],
    *,
    enabled: bool,
    gpus_total: float,
    gpus_free: float,
    max_gpus: float | None,
    gpu_types: Mapping[str, tuple[float, float]],
    interval_s: float,
) -> dict[str, Any]:
    """What only the autoscaler knows of why jobs wait, as JSON for the queue (``waitFacts`` of the
    ``publish_metrics`` payload; read back by :func:`orchestrator.core.wait_reason.autoscaler_facts`).

    ``endpoints``: per endpoint its Blocked reason of this tick (``blocked``, ``blockedCause`` a
    :func:`~orchestrator.metrics.blocked_reason` category; None when not blocked) and its pool's failed
    starts in a row with the last error (``startFailures``, ``startError``). ``gpus``: the cluster's
    ``total``, ``free`` and ``maxGpus`` budget; ``gpuTypes``: type -> ``total``, ``free``; ``intervalS``:
    the tick interval (the queue trusts the facts for a few of them); ``enabled``: whether it acts.
    """
    rows: dict[str, dict[str, Any]] = {}
    for ep, summary in summaries.items():
        errors = list(summary.get("errors") or [])
        failures = int(summary.get("startFailures") or 0)
        rows[ep] = {
            "blocked": None,
            "blockedCause": None,
            "startFailures": failures,
            "startError": str(errors[-1].get("error")) if failures and errors else None,
        }
    for d in decisions:
        if isinstance(d, Blocked):
            row = rows.setdefault(d.endpoint, {"startFailures": 0, "startError": None})
            row.update(blocked=d.reason, blockedCause=blocked_reason(d.reason))
    return {
        "intervalS": interval_s,
        "enabled": enabled,
        "gpus": {"total": gpus_total, "free": gpus_free, "maxGpus": max_gpus},
        "gpuTypes": {t: {"total": tot, "free": free} for t, (tot, free) in sorted(gpu_types.items())},
        "endpoints": rows,
    }
