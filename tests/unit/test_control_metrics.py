"""The autoscaler's per-tick metric samples, and folding them into the queue's registry."""

from __future__ import annotations

import pytest

from orchestrator.control_metrics import TickMemory, queue_gauges, tick_samples
from orchestrator.core.autoscale import Blocked, Drain, ScaleUp
from orchestrator.metrics import (
    QueueMetrics,
    blocked_reason,
    lease_reason,
    published,
    worker_state_counts,
)

pytestmark = pytest.mark.timeout(10)

SUMMARIES = {
    "gen": {
        "target": 2,
        "replicas": [
            {"id": "gen-1", "state": "idle", "coldStartS": 1.5},
            {"id": "gen-2", "state": "starting", "coldStartS": None},
            {"id": "gen-3", "state": "draining", "coldStartS": 0.5},
        ],
    }
}


def test_gauges_count_live_replicas_and_gpus() -> None:
    s, _ = tick_samples(SUMMARIES, {"gen": 3}, 4.0, 1.0, True, [], TickMemory())
    assert s.gauges["ripple_replicas_current"] == {("gen",): 2.0}
    assert s.gauges["ripple_replicas_desired"] == {("gen",): 3.0}
    assert s.gauges["ripple_replicas_starting"] == {("gen",): 1.0}
    assert s.gauges["ripple_gpus_allocated"] == {(): 3.0}
    assert s.gauges["ripple_autoscaler_enabled"] == {(): 1.0}
    none, _ = tick_samples(SUMMARIES, {"gen": None}, 4.0, 1.0, False, [], TickMemory())
    assert none.gauges["ripple_replicas_desired"] == {("gen",): 2.0}
    assert none.gauges["ripple_autoscaler_enabled"] == {(): 0.0}


def test_cold_starts_are_observed_once() -> None:
    s1, m1 = tick_samples(SUMMARIES, {}, 1, 1, True, [], TickMemory())
    assert sorted(v for _, v in s1.observations["ripple_worker_cold_start_seconds"]) == [0.5, 1.5]
    s2, _ = tick_samples(SUMMARIES, {}, 1, 1, True, [], m1)
    assert "ripple_worker_cold_start_seconds" not in s2.observations


def test_blocked_counted_when_it_starts_or_changes_cause() -> None:
    gpus = Blocked("gen", 1, "not enough GPUs (0 GPUs free)")
    cap = Blocked("gen", 2, "demand 5 above maxReplicas 3")
    s1, m1 = tick_samples({}, {}, 1, 0, True, [ScaleUp("gen", 1, "queue"), gpus], TickMemory())
    assert s1.counters["ripple_autoscaler_blocked"] == [(("gen", "gpus"), 1.0)]
    assert dict(s1.counters["ripple_autoscaler_decisions"]) == {
        ("gen", "scale_up"): 1.0,
        ("gen", "blocked"): 1.0,
    }
    s2, m2 = tick_samples({}, {}, 1, 0, True, [gpus], m1)
    assert s2.counters == {}
    s3, _ = tick_samples({}, {}, 1, 0, True, [cap, Drain("gen", ("gen-1",), "idle")], m2)
    assert s3.counters["ripple_autoscaler_blocked"] == [(("gen", "max_replicas"), 1.0)]
    assert ("gen", "drain") in dict(s3.counters["ripple_autoscaler_decisions"])


def test_published_samples_land_in_the_queue_registry() -> None:
    s, _ = tick_samples(SUMMARIES, {"gen": 3}, 4.0, 1.0, True, [ScaleUp("gen", 1, "q")], TickMemory())
    m = QueueMetrics()
    assert m.apply_published(published(s.gauges, s.counters, s.observations)) > 0
    text = m.render().decode()
    assert 'ripple_replicas_desired{endpoint="gen"} 3.0' in text
    assert "ripple_gpus_free 1.0" in text
    assert 'ripple_autoscaler_decisions_total{endpoint="gen",kind="scale_up"} 1.0' in text
    assert 'ripple_worker_cold_start_seconds_count{endpoint="gen"} 2.0' in text
    # A second publish replaces gauges instead of adding to them.
    m.apply_published(published({"ripple_gpus_free": {(): 2.0}}))
    assert "ripple_gpus_free 2.0" in m.render().decode()


def test_unknown_or_mistyped_names_are_ignored() -> None:
    m = QueueMetrics()
    payload = {"gauges": {"nope": [[1]], "ripple_jobs_submitted": [["a", 1]]}, "counters": {"x": [["a", 1]]}}
    assert m.apply_published(payload) == 0


def test_queue_gauges_and_bounded_labels() -> None:
    g = queue_gauges({"a": {"queued": 3, "running": 1, "oldestQueuedAgeS": None}})
    assert g["ripple_queue_depth"] == {("a",): 3.0}
    assert g["ripple_queue_oldest_age_seconds"] == {("a",): 0.0}
    assert blocked_reason("not enough memory; waiting") == "memory"
    assert blocked_reason("something new") == "other"
    assert lease_reason("failed to start: ModuleNotFoundError: x") == "failed_to_start"
    assert lease_reason("heartbeat") == "heartbeat"
    assert lease_reason("died: ActorDiedError job abc123") == "died"
    counts = worker_state_counts(
        [
            {"endpoint": "a", "state": "idle", "health": "quarantined"},
            {"endpoint": "a", "state": "idle", "health": "healthy"},
            {"endpoint": "a", "state": "stopped", "health": "evicted"},
        ]
    )
    assert counts == {("a", "quarantined"): 1.0, ("a", "idle"): 1.0, ("a", "stopped"): 1.0}
