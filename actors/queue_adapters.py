"""What the JobQueue actor gives its :class:`orchestrator.core.dispatch.Dispatcher`: the system clock, the
Prometheus/Ray metrics and a Ray lookup of the autoscaler (see :mod:`orchestrator.core.dispatch_ports`). The
webhook sender (:class:`orchestrator.webhooks.WebhookSender`) is a notifier as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.metrics import QueueMetrics, lease_reason, worker_state_counts
from orchestrator.ray_metrics import RaySink

log = logging.getLogger("ripple.queue")


class SystemClock:
    """:class:`orchestrator.core.dispatch_ports.Clock` on the system clocks."""

    def now_s(self) -> float:
        return time.time()

    def monotonic_s(self) -> float:
        return time.monotonic()


class AutoscalerByName:
    """Wakes the autoscaler actor (looked up by name): work arrived that no worker waits for, a managed
    endpoint was created (its pool starts now), or a pool's stopped replica freed its GPUs."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def work_arrived(self, endpoint: str) -> None:
        try:
            from orchestrator.names import AUTOSCALER_NAME, get_actor

            get_actor(AUTOSCALER_NAME, self.namespace).notify.remote(endpoint)
        except Exception:  # no autoscaler (yet): its interval tick will see the work
            log.debug("autoscaler not notified", exc_info=True)


class QueueMetricsSink:
    """:class:`orchestrator.core.dispatch_ports.DispatchMetrics` into the queue's Prometheus registry
    (mirrored to Ray's metrics agent); the workers-by-state snapshot goes to ``ray`` only (the
    registry's copy is refreshed at scrape time)."""

    def __init__(self, metrics: QueueMetrics, ray: RaySink | None = None) -> None:
        self.m = metrics
        self.ray = ray

    def submitted(self, endpoint: str, n: int) -> None:
        self.m.submitted.labels(endpoint).inc(n)

    def finished(self, endpoint: str, status: str, n: int = 1) -> None:
        self.m.finished.labels(endpoint, status).inc(n)

    def retried(self, endpoint: str) -> None:
        self.m.retried.labels(endpoint).inc()

    def lease_lost(self, endpoint: str, reason: str) -> None:
        self.m.leases_lost.labels(endpoint, lease_reason(reason)).inc()

    def result_dropped(self, endpoint: str, reason: str) -> None:
        self.m.results_dropped.labels(endpoint, reason).inc()

    def redelivered(self, endpoint: str) -> None:
        self.m.redeliveries.labels(endpoint).inc()

    def queue_time(self, endpoint: str, seconds: float) -> None:
        self.m.queue_time.labels(endpoint).observe(seconds)

    def execution_time(self, endpoint: str, seconds: float) -> None:
        self.m.execution_time.labels(endpoint).observe(seconds)

    def worker_states(self, views: Sequence[Mapping[str, Any]]) -> None:
        if self.ray is not None:
            self.ray.set_gauge("ripple_workers", worker_state_counts(views))

    def exposition(self, stats: Mapping[str, Mapping[str, Any]], views: Sequence[Mapping[str, Any]]) -> bytes:
        """The Prometheus text of the registry, state gauges refreshed from ``stats`` (the dispatcher's
        per-endpoint stats) and ``views`` (every worker's view) first."""
        for name, key, doc in (
            ("ripple_queue_depth", "queued", "Jobs waiting in the queue."),
            ("ripple_jobs_in_progress", "running", "Jobs leased to workers."),
            ("ripple_queue_oldest_age_seconds", "oldestQueuedAgeS", "Age of the oldest queued job."),
        ):
            self.m.set_state(name, doc, ("endpoint",), {(ep,): s[key] or 0.0 for ep, s in stats.items()})
        self.m.set_gauge("ripple_workers", worker_state_counts(views))
        return self.m.render()
