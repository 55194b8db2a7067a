"""The JobQueue actor's adapters to the dispatcher's ports: the metrics sink into the Prometheus registry
(and its exposition, which ``/metrics`` serves) and the system clock. No Ray: the Ray mirror is absent."""

from __future__ import annotations

import time

from actors.queue_adapters import QueueMetricsSink, SystemClock
from orchestrator.metrics import QueueMetrics


def test_metrics_sink_counts_into_the_registry_and_renders_state_gauges() -> None:
    sink = QueueMetricsSink(QueueMetrics())
    sink.submitted("ep", 3)
    sink.finished("ep", "COMPLETED")
    sink.finished("ep", "CANCELLED", 2)
    sink.retried("ep")
    sink.lease_lost("ep", "died: out of memory")
    sink.lease_lost("ep", "timeout")
    sink.result_dropped("ep", "not_held")
    sink.redelivered("ep")
    sink.queue_time("ep", 0.2)
    sink.execution_time("ep", 1.5)
    sink.worker_states([{"endpoint": "ep", "state": "idle"}])  # Ray mirror only: a no-op without it
    stats = {"ep": {"queued": 4, "running": 1, "oldestQueuedAgeS": None}}
    views = [{"endpoint": "ep", "state": "busy"}, {"endpoint": "ep", "state": "busy"}]
    text = sink.exposition(stats, views).decode()
    for line in (
        'ripple_jobs_submitted_total{endpoint="ep"} 3.0',
        'ripple_jobs_finished_total{endpoint="ep",status="COMPLETED"} 1.0',
        'ripple_jobs_finished_total{endpoint="ep",status="CANCELLED"} 2.0',
        'ripple_jobs_retried_total{endpoint="ep"} 1.0',
        'ripple_leases_lost_total{endpoint="ep",reason="died"} 1.0',
        'ripple_leases_lost_total{endpoint="ep",reason="timeout"} 1.0',
        'ripple_results_dropped_total{endpoint="ep",reason="not_held"} 1.0',
        'ripple_redeliveries_total{endpoint="ep"} 1.0',
        'ripple_job_queue_time_seconds_count{endpoint="ep"} 1.0',
        'ripple_job_execution_time_seconds_sum{endpoint="ep"} 1.5',
        'ripple_queue_depth{endpoint="ep"} 4.0',
        'ripple_jobs_in_progress{endpoint="ep"} 1.0',
        'ripple_queue_oldest_age_seconds{endpoint="ep"} 0.0',
        'ripple_workers{endpoint="ep",state="busy"} 2.0',
    ):
        assert line in text, line


def test_system_clock() -> None:
    clock = SystemClock()
    assert abs(clock.now_s() - time.time()) < 1.0
    a = clock.monotonic_s()
    assert clock.monotonic_s() >= a
