"""Prometheus metrics of Ripple: names, labels and the registry the actors export.

Conventions: ``ripple_`` prefix, base units in names (``_seconds``), ``_total`` on counters, labels bounded
(endpoint names, states, kinds and short reason categories; never a job or worker id). Every metric is
declared once in :data:`SPECS`; the Prometheus registry of the queue (served at ``/metrics``) and the Ray
mirror (:mod:`orchestrator.ray_metrics`, shown in the Ray dashboard as ``ray_<name>``) are both built from
it, so the two never disagree on a name.

Gauges that describe current state are filled from snapshots (:meth:`QueueMetrics.set_state`), so they are
never stale: the queue's own at scrape time, the autoscaler's once per tick through
:meth:`QueueMetrics.apply_published` (one actor call per tick, none per scrape).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.core.workers import view_count_state

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
COLD_START_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric. ``name`` is the family name: counters are exported with ``_total`` appended."""

    name: str
    kind: Kind
    doc: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


EP = ("endpoint",)
SPECS: tuple[MetricSpec, ...] = (
    # The queue (counted where they happen).
    MetricSpec("ripple_jobs_submitted", "counter", "Jobs accepted.", EP),
    MetricSpec("ripple_jobs_finished", "counter", "Jobs that reached a final state.", ("endpoint", "status")),
    MetricSpec("ripple_jobs_retried", "counter", "Jobs put back in the queue by retry.", EP),
    MetricSpec(
        "ripple_leases_lost", "counter", "Leases taken back from workers, by cause.", ("endpoint", "reason")
    ),
    MetricSpec(
        "ripple_results_dropped",
        "counter",
        "Results not applied (duplicate, late, or for a job the worker does not hold).",
        ("endpoint", "reason"),
    ),
    MetricSpec(
        "ripple_redeliveries",
        "counter",
        "Replicas whose own take from the job store failed or was fenced, handed their jobs again.",
        EP,
    ),
    MetricSpec("ripple_webhooks", "counter", "Webhook deliveries by outcome.", ("outcome",)),
    MetricSpec(
        "ripple_job_queue_time_seconds",
        "histogram",
        "Time from submission to first start.",
        EP,
        LATENCY_BUCKETS_S,
    ),
    MetricSpec(
        "ripple_job_execution_time_seconds",
        "histogram",
        "Time running, for finished jobs.",
        EP,
        LATENCY_BUCKETS_S,
    ),
    # The queue's state (set at scrape time).
    MetricSpec("ripple_queue_depth", "gauge", "Jobs waiting in the queue.", EP),
    MetricSpec("ripple_jobs_in_progress", "gauge", "Jobs leased to workers.", EP),
    MetricSpec("ripple_queue_oldest_age_seconds", "gauge", "Age of the oldest queued job.", EP),
    MetricSpec(
        "ripple_workers",
        "gauge",
        "Workers by endpoint and state (starting, idle, busy, draining, quarantined, stopped).",
        ("endpoint", "state"),
    ),
    # The autoscaler and the pools (published once per autoscaler tick).
    MetricSpec("ripple_replicas_desired", "gauge", "Replicas the autoscaler wants per endpoint.", EP),
    MetricSpec("ripple_replicas_current", "gauge", "Replicas that exist and are not draining.", EP),
    MetricSpec("ripple_replicas_starting", "gauge", "Replicas still starting (placing or loading).", EP),
    MetricSpec("ripple_gpus_total", "gauge", "GPUs in the Ray cluster."),
    MetricSpec("ripple_gpus_allocated", "gauge", "GPUs held by Ray actors and tasks."),
    MetricSpec("ripple_gpus_free", "gauge", "GPUs not held by anything."),
    MetricSpec("ripple_autoscaler_enabled", "gauge", "1 when the autoscaler acts, 0 when switched off."),
    MetricSpec(
        "ripple_autoscaler_decisions",
        "counter",
        "Autoscaler decisions by kind (scale_up, prewarm, drain, blocked).",
        ("endpoint", "kind"),
    ),
    MetricSpec(
        "ripple_autoscaler_blocked",
        "counter",
        "Blocked scale-ups by cause (gpus, cpus, memory, max_replicas, other).",
        ("endpoint", "reason"),
    ),
    MetricSpec(
        "ripple_worker_cold_start_seconds",
        "histogram",
        "Time for a Ray worker replica to load its handler.",
        EP,
        COLD_START_BUCKETS_S,
    ),
)
BY_NAME: dict[str, MetricSpec] = {s.name: s for s in SPECS}


# Bounded label values -----------------------------------------------------------------------------------

BLOCKED_REASONS = ("gpus", "cpus", "memory", "max_replicas", "gpu_type", "other")
LEASE_REASONS = (
    "timeout",
    "heartbeat",
    "not_reported",
    "failed_to_start",
    "died",
    "hung",
    "drained",
    "other",
)
_LABEL_OK = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def blocked_reason(reason: str) -> str:
    """The category of a Blocked decision's free-text reason (one of :data:`BLOCKED_REASONS`)."""
    text = reason.lower()
    if "no node offers gpu type" in text:
        return "gpu_type"
    if "maxreplicas" in text:
        return "max_replicas"
    for what in ("gpus", "cpus", "memory"):
        if f"not enough {what}" in text:
            return what
    return "other"


def lease_reason(reason: str) -> str:
    """The category of a lease-loss reason, which may be free text from a pool (``died: ...``)."""
    text = reason.strip().lower()
    if text in LEASE_REASONS:
        return text
    for prefix, label in (("failed to start", "failed_to_start"), ("died", "died"), ("hung", "hung")):
        if text.startswith(prefix):
            return label
    return "other"


def bounded(value: str) -> str:
    """A label value safe to export: short snake-case values as they are, anything else ``other``."""
    return value if _LABEL_OK.match(value) else "other"


def worker_state_counts(views: Iterable[Mapping[str, Any]]) -> dict[tuple[str, ...], float]:
    """Workers by (endpoint, state); an unhealthy live worker counts as ``quarantined``
    (``workers.view_count_state``)."""
    out: dict[tuple[str, ...], float] = {}
    for v in views:
        key = (str(v.get("endpoint", "")), bounded(view_count_state(v)))
        out[key] = out.get(key, 0.0) + 1.0
    return out


# Sinks: where increments go besides the Prometheus registry ------------------------------------------------


class MetricSink(Protocol):
    """A second destination for every sample (the Ray metrics agent)."""

    def inc(self, name: str, tags: Mapping[str, str], amount: float) -> None: ...

    def observe(self, name: str, tags: Mapping[str, str], value: float) -> None: ...

    def set(self, name: str, tags: Mapping[str, str], value: float) -> None: ...


class _Child:
    def __init__(self, prom: Any, sink: MetricSink | None, name: str, tags: dict[str, str]) -> None:
        self._prom, self._sink, self._name, self._tags = prom, sink, name, tags

    def inc(self, amount: float = 1.0) -> None:
        self._prom.inc(amount)
        if self._sink is not None:
            self._sink.inc(self._name, self._tags, amount)

    def observe(self, value: float) -> None:
        self._prom.observe(value)
        if self._sink is not None:
            self._sink.observe(self._name, self._tags, value)


class Dual:
    """A Prometheus counter or histogram whose samples also go to a sink: ``m.labels(ep).inc()``."""

    def __init__(self, spec: MetricSpec, registry: CollectorRegistry, sink: MetricSink | None) -> None:
        self.spec = spec
        self.sink = sink
        if spec.kind == "counter":
            self.prom: Any = Counter(spec.name, spec.doc, list(spec.labels), registry=registry)
        else:
            self.prom = Histogram(
                spec.name, spec.doc, list(spec.labels), buckets=spec.buckets, registry=registry
            )

    def labels(self, *values: str) -> _Child:
        tags = dict(zip(self.spec.labels, (str(v) for v in values), strict=True))
        return _Child(self.prom.labels(*values), self.sink, self.spec.name, tags)


class _StateCollector(Collector):
    """Gauges computed from the latest state snapshot; declared ones are listed even before a value."""

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[str, tuple[str, ...], Mapping[tuple[str, ...], float]]] = {}

    def collect(self) -> Iterable[Metric]:
        for name, (doc, labels, values) in self.gauges.items():
            fam = GaugeMetricFamily(name, doc, labels=list(labels))
            for label_values, value in values.items():
                fam.add_metric(list(label_values), value)
            yield fam


class QueueMetrics:
    """Every Ripple metric in one registry (the queue actor's); ``sink`` mirrors samples (Ray)."""

    def __init__(self, sink: MetricSink | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sink = sink
        self.duals: dict[str, Dual] = {
            s.name: Dual(s, self.registry, sink) for s in SPECS if s.kind != "gauge"
        }
        d = self.duals
        self.submitted = d["ripple_jobs_submitted"]
        self.finished = d["ripple_jobs_finished"]
        self.retried = d["ripple_jobs_retried"]
        self.leases_lost = d["ripple_leases_lost"]
        self.results_dropped = d["ripple_results_dropped"]
        self.redeliveries = d["ripple_redeliveries"]
        self.webhooks = d["ripple_webhooks"]
        self.queue_time = d["ripple_job_queue_time_seconds"]
        self.execution_time = d["ripple_job_execution_time_seconds"]
        self._state = _StateCollector()
        for s in SPECS:
            if s.kind == "gauge":
                self._state.gauges[s.name] = (s.doc, s.labels, {})
        self.registry.register(self._state)

    def set_state(
        self, name: str, doc: str, labels: tuple[str, ...], values: Mapping[tuple[str, ...], float]
    ) -> None:
        """Replace the values of a state gauge (``ripple_queue_depth`` and the like)."""
        self._state.gauges[name] = (doc, labels, dict(values))

    def set_gauge(self, name: str, values: Mapping[tuple[str, ...], float]) -> None:
        """Replace a declared gauge's values (label tuples in :data:`SPECS` order)."""
        spec = BY_NAME[name]
        self.set_state(name, spec.doc, spec.labels, values)

    def apply_published(self, payload: Mapping[str, Any]) -> int:
        """Fold in what another actor measured (see :func:`published`); unknown names are ignored.

        ``payload``: ``{"gauges": {name: [[labels..., value], ...]}, "counters": {name: [[labels...,
        amount], ...]}, "observations": {name: [[labels..., value], ...]}}``. Gauges replace their previous
        values; counters add; observations go into histograms. Returns how many samples were applied.
        """
        n = 0
        for name, rows in (payload.get("gauges") or {}).items():
            spec = BY_NAME.get(name)
            if spec is None or spec.kind != "gauge":
                continue
            self.set_gauge(name, {tuple(str(v) for v in r[:-1]): float(r[-1]) for r in rows})
            n += len(rows)
        for key, method in (("counters", "inc"), ("observations", "observe")):
            for name, rows in (payload.get(key) or {}).items():
                dual = self.duals.get(name)
                want = "counter" if key == "counters" else "histogram"
                if dual is None or dual.spec.kind != want:
                    continue
                for r in rows:
                    # Published samples were already mirrored by the actor that measured them.
                    getattr(dual.prom.labels(*(str(v) for v in r[:-1])), method)(float(r[-1]))
                    n += 1
        return n

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def published(
    gauges: Mapping[str, Mapping[tuple[str, ...], float]] | None = None,
    counters: Mapping[str, Sequence[tuple[tuple[str, ...], float]]] | None = None,
    observations: Mapping[str, Sequence[tuple[tuple[str, ...], float]]] | None = None,
) -> dict[str, Any]:
    """The JSON-ready payload of :meth:`QueueMetrics.apply_published`."""
    return {
        "gauges": {n: [[*k, v] for k, v in vals.items()] for n, vals in (gauges or {}).items()},
        "counters": {n: [[*k, v] for k, v in rows] for n, rows in (counters or {}).items()},
        "observations": {n: [[*k, v] for k, v in rows] for n, rows in (observations or {}).items()},
    }


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a scrape of ``registry`` can show: counters with ``_total`` (and ``_created``),
    histograms with ``_bucket``, ``_count`` and ``_sum``, gauges as they are."""
    out: set[str] = set()
    for fam in registry.collect():
        if fam.type == "counter":
            out |= {fam.name + "_total", fam.name + "_created"}
        elif fam.type == "histogram":
            out |= {fam.name + s for s in ("_bucket", "_count", "_sum", "_created")}
        else:
            out.add(fam.name)
    return out
