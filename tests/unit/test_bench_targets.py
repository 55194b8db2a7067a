"""The peer report's rows (bench/targets.py): which targets each figure is held to, and the verdicts."""

from __future__ import annotations

from bench.common import Row, format_table
from bench.targets import (
    CELERY,
    SERVE_ASYNC,
    SERVE_HANDOFF_DIRECT,
    SERVE_HTTP,
    SERVE_HTTP_BESIDE,
    SERVE_HTTP_DIRECT,
    Figures,
    build_rows,
    markdown_table,
    missed,
)


def _row(rows: list[Row], metric_start: str, peer: str = "") -> Row:
    (row,) = [r for r in rows if r.metric.startswith(metric_start) and r.peer_name == peer]
    return row


def _exact(rows: list[Row], metric: str, peer: str) -> Row:
    (row,) = [r for r in rows if r.metric == metric and r.peer_name == peer]
    return row


def test_throughput_is_held_to_three_times_serve_async_and_five_times_celery() -> None:
    rows = build_rows(Figures(ripple_jobs_s=3000.0, serve_async_jobs_s=900.0, celery_jobs_s=700.0))
    vs_serve = _row(rows, "no-op jobs", SERVE_ASYNC)
    vs_celery = _row(rows, "no-op jobs", CELERY)
    assert vs_serve.ratio is not None and abs(vs_serve.ratio - 3000 / 900) < 1e-9
    assert vs_serve.met is True  # 3.33x >= 3x
    assert vs_celery.met is False  # 4.29x < 5x
    assert missed(rows) == [f"no-op jobs, in-cluster submit_many vs {CELERY}: 4.29x, target >= 5x peer"]


def test_round_trips_are_held_to_celery_and_runsync_to_the_plain_serve_route() -> None:
    figures = Figures(
        ripple_rt_p50_ms=3.0, celery_rt_p50_ms=2.5, ripple_runsync_p50_ms=16.0, serve_http_p50_ms=10.0
    )
    rows = build_rows(figures)
    target, stretch = [
        r for r in rows if r.metric.startswith("round trip p50, in-cluster") and r.peer_name == CELERY
    ]
    assert target.met is True and stretch.met is False  # 1.2x: within 1.5x, not equal
    assert _exact(rows, "round trip p50, HTTP runsync", SERVE_HTTP).met is False  # 1.6x > 1.5x


def test_runsync_against_the_route_beside_it_on_the_same_cluster_has_its_own_row_and_verdict() -> None:
    figures = Figures(
        ripple_runsync_p50_ms=12.0,
        serve_http_p50_ms=6.0,
        ripple_runsync_beside_p50_ms=11.0,
        serve_http_beside_p50_ms=8.0,
    )
    rows = build_rows(figures)
    assert _exact(rows, "round trip p50, HTTP runsync", SERVE_HTTP).met is False  # 2x: the bare-Ray route
    beside = _row(rows, "round trip p50, HTTP runsync (same cluster)", SERVE_HTTP_BESIDE)
    assert beside.ratio is not None and abs(beside.ratio - 11.0 / 8.0) < 1e-9 and beside.met is True
    assert missed(rows) == [f"round trip p50, HTTP runsync vs {SERVE_HTTP}: 2.00x, target <= 1.5x peer"]


def test_runsync_with_the_dashboard_off_is_held_to_the_bare_ray_route() -> None:
    figures = Figures(ripple_runsync_p50_ms=10.0, ripple_runsync_nodash_p50_ms=8.5, serve_http_p50_ms=6.0)
    rows = build_rows(figures)
    nodash = _exact(rows, "round trip p50, HTTP runsync (Ray's dashboard off, as the bare Ray)", SERVE_HTTP)
    assert nodash.ratio is not None and abs(nodash.ratio - 8.5 / 6.0) < 1e-9 and nodash.met is True
    assert _exact(rows, "round trip p50, HTTP runsync", SERVE_HTTP).met is False  # 1.67x: dashboard on


def test_preemption_and_scale_from_zero_are_absolute_and_missing_numbers_give_no_verdict() -> None:
    rows = build_rows(Figures(preempt_p50_s=1.2, preempt_max_s=1.6, ripple_cold_p95_s=0.9))
    assert _row(rows, "preemption p50").met is True
    assert _row(rows, "preemption max").met is False
    cold = _row(rows, "scale from zero p95", SERVE_ASYNC)
    assert cold.met is True and cold.ratio is None  # no peer figure: no ratio, the target still applies
    assert _row(rows, "scale from zero first job", SERVE_ASYNC).met is None  # no figure: no verdict
    table = format_table(rows)
    assert "NO" in table and "yes" in table and table.count("\n") == len(rows) + 1


def test_the_markdown_table_has_a_line_per_row_with_the_same_verdicts() -> None:
    rows = build_rows(Figures(ripple_jobs_s=3000.0, serve_async_jobs_s=900.0, preempt_max_s=1.6))
    lines = markdown_table(rows).splitlines()
    assert len(lines) == len(rows) + 2
    assert "| 3,000 | 900 (Serve async inference) | 3.33x | >= 3x peer | yes |" in lines[2]
    (preempt_max,) = [line for line in lines if line.startswith("| preemption max")]
    assert preempt_max.endswith("| 1.60 | - | - | <= 1.5 s | **no** |")


def test_runsync_by_direct_ingress_is_held_to_both_the_bare_route_and_the_direct_echo() -> None:
    figures = Figures(serve_http_p50_ms=6.0, ripple_runsync_direct_p50_ms=3.0, serve_http_direct_p50_ms=1.2)
    rows = build_rows(figures)
    metric = "round trip p50, HTTP runsync by direct ingress (RIPPLE_DIRECT_INGRESS_PORT)"
    assert _exact(rows, metric, SERVE_HTTP).met is True  # 0.5x the route through Serve's proxy
    like_for_like = _exact(rows, metric, SERVE_HTTP_DIRECT)
    assert like_for_like.ratio is not None and abs(like_for_like.ratio - 2.5) < 1e-9
    assert like_for_like.met is False  # 2.5x the echo without the proxy either


def test_runsync_by_direct_ingress_has_a_row_against_the_route_handing_work_to_a_worker_deployment() -> None:
    figures = Figures(
        ripple_runsync_direct_p50_ms=3.0,
        serve_http_direct_p50_ms=1.2,
        serve_handoff_direct_p50_ms=2.5,
        ripple_runsync_direct_p99_ms=6.0,
        serve_handoff_direct_p99_ms=4.0,
    )
    rows = build_rows(figures)
    p50 = "round trip p50, HTTP runsync by direct ingress (RIPPLE_DIRECT_INGRESS_PORT)"
    handoff = _exact(rows, p50, SERVE_HANDOFF_DIRECT)
    assert handoff.ratio is not None and abs(handoff.ratio - 1.2) < 1e-9 and handoff.met is True
    assert _exact(rows, p50, SERVE_HTTP_DIRECT).met is False  # the echo's row keeps its own verdict
    p99 = _exact(rows, p50.replace("p50", "p99"), SERVE_HANDOFF_DIRECT)
    assert p99.ratio is not None and abs(p99.ratio - 1.5) < 1e-9 and p99.target is None
    assert missed(rows) == [f"{p50} vs {SERVE_HTTP_DIRECT}: 2.50x, target <= 1.5x peer"]
