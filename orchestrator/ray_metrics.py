"""Ripple's metrics in the Ray dashboard: ``ray.util.metrics`` twins of :data:`orchestrator.metrics.SPECS`.

Each actor (the queue, the autoscaler, every pool) holds one :class:`RaySink`; the node's metrics agent
exports what it records as ``ray_<name>`` (counters with ``_total``), next to Ray's own metrics, with the
same labels as ``/metrics``. Metric objects are created on first use, inside the actor's process, and a
failure to record never reaches the caller (metrics must not break dispatch).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from orchestrator.metrics import BY_NAME, MetricSpec

log = logging.getLogger("ripple.metrics")


class RaySink:
    """Records samples into Ray's metrics agent; see the module docstring."""

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._broken = False

    def _get(self, name: str) -> Any:
        m = self._metrics.get(name)
        if m is None:
            m = self._metrics[name] = _create(BY_NAME[name])
        return m

    def _record(self, name: str, tags: Mapping[str, str], value: float, how: str) -> None:
        if self._broken:
            return
        try:
            metric = self._get(name)
            if how == "inc":
                metric.inc(value, tags=dict(tags))
            elif how == "observe":
                metric.observe(value, tags=dict(tags))
            else:
                metric.set(value, tags=dict(tags))
        except Exception:  # e.g. not inside a Ray worker: stop trying, say so once
            self._broken = True
            log.warning("Ray metrics unavailable; only /metrics is updated", exc_info=True)

    def inc(self, name: str, tags: Mapping[str, str], amount: float) -> None:
        if amount > 0:
            self._record(name, tags, amount, "inc")

    def observe(self, name: str, tags: Mapping[str, str], value: float) -> None:
        self._record(name, tags, value, "observe")

    def set(self, name: str, tags: Mapping[str, str], value: float) -> None:
        self._record(name, tags, value, "set")

    def inc_labels(self, name: str, labels: tuple[str, ...], amount: float) -> None:
        """``inc`` with label values in the spec's order."""
        self.inc(name, dict(zip(BY_NAME[name].labels, labels, strict=True)), amount)

    def set_gauge(self, name: str, values: Mapping[tuple[str, ...], float]) -> None:
        """Set every labelled value of a gauge (label tuples in the spec's order)."""
        labels = BY_NAME[name].labels
        for key, value in values.items():
            self.set(name, dict(zip(labels, key, strict=True)), value)


def _create(spec: MetricSpec) -> Any:
    from ray.util import metrics

    keys = spec.labels or None
    if spec.kind == "counter":
        return metrics.Counter(spec.name, spec.doc, tag_keys=keys)
    if spec.kind == "histogram":
        return metrics.Histogram(spec.name, spec.doc, boundaries=list(spec.buckets), tag_keys=keys)
    return metrics.Gauge(spec.name, spec.doc, tag_keys=keys)
