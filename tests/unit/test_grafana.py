"""The Grafana dashboard (docs/grafana/ripple.json) asks only for metrics Ripple really exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.metrics import SPECS, QueueMetrics, exported_names

pytestmark = pytest.mark.timeout(10)

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "ripple.json"
METRIC = re.compile(r"\b(ripple_[a-z0-9_]+)\b")


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from _panels(p.get("panels", []))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


@pytest.fixture(scope="module")
def exported() -> set[str]:
    # The queue's registry holds every family: its own, and those the autoscaler publishes into it.
    return exported_names(QueueMetrics().registry)


def test_every_panel_query_names_an_exported_metric(dashboard: dict[str, Any], exported: set[str]) -> None:
    queried = 0
    for panel in _panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = METRIC.findall(target["expr"])
            assert names, f"panel {panel['title']!r}: {target['expr']!r} names no Ripple metric"
            unknown = sorted(set(names) - exported)
            assert not unknown, f"panel {panel['title']!r} queries {unknown}, not exported"
            queried += 1
    assert queried >= 20


def test_template_variables_use_exported_metrics(dashboard: dict[str, Any], exported: set[str]) -> None:
    for var in dashboard["templating"]["list"]:
        for name in METRIC.findall(str(var.get("query", ""))):
            assert name in exported


def test_the_dashboard_covers_what_operators_look_for(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", []))
    for needed in (
        "ripple_queue_depth",
        "rate(ripple_jobs_finished_total",
        "histogram_quantile(0.95, sum by (le, endpoint) (rate(ripple_job_queue_time_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, endpoint) (rate(ripple_job_execution_time_seconds_bucket",
        "ripple_replicas_desired",
        "ripple_replicas_current",
        "ripple_gpus_allocated",
        "ripple_worker_cold_start_seconds_bucket",
        "ripple_autoscaler_decisions_total",
        "ripple_autoscaler_blocked_total",
    ):
        assert needed in exprs, needed


def test_ids_are_unique_and_panels_fit_the_grid(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for p in _panels(dashboard["panels"]):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24


def test_every_declared_metric_is_exported_with_conventions(exported: set[str]) -> None:
    for spec in SPECS:
        assert spec.name.startswith("ripple_")
        assert "job_id" not in spec.labels and "worker_id" not in spec.labels
        if spec.kind == "counter":
            assert not spec.name.endswith("_total") and spec.name + "_total" in exported
        elif spec.kind == "histogram":
            assert spec.name.endswith("_seconds") and spec.name + "_bucket" in exported
        else:
            assert spec.name in exported
