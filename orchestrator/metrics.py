"""Prometheus metrics of Ripple: names, labels and the registry the actors export.

Conventions: ``ripple_`` prefix, base units in names (``_seconds``), ``_total`` on counters, labels bounded
(endpoint names, states and reasons; never a job or worker id). Gauges that describe current state are
filled at scrape time from a snapshot (:meth:`QueueMetrics.set_state`), so they are never stale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)


class _StateCollector(Collector):
    """Gauges computed from the latest state snapshot."""

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[str, tuple[str, ...], Mapping[tuple[str, ...], float]]] = {}

    def collect(self) -> Iterable[Metric]:
        for name, (doc, labels, values) in self.gauges.items():
            fam = GaugeMetricFamily(name, doc, labels=list(labels))
            for label_values, value in values.items():
                fam.add_metric(list(label_values), value)
            yield fam


class QueueMetrics:
    """Counters and histograms of the job queue, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submitted = Counter("ripple_jobs_submitted", "Jobs accepted.", ["endpoint"], registry=r)
        self.finished = Counter(
            "ripple_jobs_finished", "Jobs that reached a final state.", ["endpoint", "status"], registry=r
        )
        self.retried = Counter(
            "ripple_jobs_retried", "Jobs put back in the queue by retry.", ["endpoint"], registry=r
        )
        self.leases_lost = Counter(
            "ripple_leases_lost", "Leases taken back from workers.", ["endpoint", "reason"], registry=r
        )
        self.results_dropped = Counter(
            "ripple_results_dropped",
            "Results not applied (duplicate, late, or for a job the worker does not hold).",
            ["endpoint", "reason"],
            registry=r,
        )
        self.webhooks = Counter("ripple_webhooks", "Webhook deliveries by outcome.", ["outcome"], registry=r)
        self.queue_time = Histogram(
            "ripple_job_queue_time_seconds",
            "Time from submission to first start.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.execution_time = Histogram(
            "ripple_job_execution_time_seconds",
            "Time running, for finished jobs.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._state = _StateCollector()
        r.register(self._state)

    def set_state(
        self, name: str, doc: str, labels: tuple[str, ...], values: Mapping[tuple[str, ...], float]
    ) -> None:
        """Replace the values of a state gauge (``ripple_queue_depth`` and the like)."""
        self._state.gauges[name] = (doc, labels, dict(values))

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
