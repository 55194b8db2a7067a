"""The targets of issue 12 as table rows: Ripple against Celery, Ray Serve's async inference and plain Ray
Serve, each figure measured in the same run (bench/peers_report.py). Pure: numbers in, rows out.

`ratio` is Ripple / peer (above 1 is better for jobs/s, below 1 for ms and s). Every figure may be None
(a section that failed or was skipped); its row then shows `-` and no verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from bench.common import Row, Target

CELERY = "Celery AOF everysec"
SERVE_ASYNC = "Serve async inference"
SERVE_HTTP = "plain Serve HTTP route"
SERVE_HANDLE = "plain Serve handle"
SERVE_HTTP_BESIDE = "plain Serve HTTP route beside Ripple"
SERVE_HTTP_DIRECT = "plain Serve route by direct ingress, beside Ripple"
SERVE_HANDOFF_DIRECT = "plain Serve route handing it to a worker deployment, by direct ingress, beside Ripple"


@dataclass
class Figures:
    """Every number the report compares; milliseconds for round trips, seconds for starts."""

    ripple_jobs_s: float | None = None  # in-cluster submit_many, until all completed
    celery_jobs_s: float | None = None
    serve_async_jobs_s: float | None = None
    ripple_rt_p50_ms: float | None = None  # in-cluster submit + result, idle, sequential
    ripple_rt_p99_ms: float | None = None
    celery_rt_p50_ms: float | None = None  # delay().get()
    celery_rt_p99_ms: float | None = None
    serve_async_rt_p50_ms: float | None = None  # send_task().get() to a task consumer
    serve_async_rt_p99_ms: float | None = None
    ripple_runsync_p50_ms: float | None = None  # HTTP POST /v2/{ep}/runsync
    ripple_runsync_p99_ms: float | None = None
    serve_http_p50_ms: float | None = None  # plain Serve FastAPI route returning the body
    serve_http_p99_ms: float | None = None
    # runsync and the same echo route deployed on Ripple's own cluster, timed in alternating blocks
    ripple_runsync_beside_p50_ms: float | None = None
    ripple_runsync_beside_p99_ms: float | None = None
    serve_http_beside_p50_ms: float | None = None
    serve_http_beside_p99_ms: float | None = None
    # runsync on a second instance with Ray's dashboard off, as the bare Ray of the plain Serve route
    ripple_runsync_nodash_p50_ms: float | None = None
    ripple_runsync_nodash_p99_ms: float | None = None
    # runsync on a third instance with RIPPLE_DIRECT_INGRESS_PORT (no Serve proxy on the path), and the echo
    # route beside it by direct ingress too, timed in alternating blocks
    ripple_runsync_direct_p50_ms: float | None = None
    ripple_runsync_direct_p99_ms: float | None = None
    serve_http_direct_p50_ms: float | None = None
    serve_http_direct_p99_ms: float | None = None
    # a plain Serve route handing the body to a second deployment by handle (model composition), by direct
    # ingress beside the same instance, timed in the same blocks
    serve_handoff_direct_p50_ms: float | None = None
    serve_handoff_direct_p99_ms: float | None = None
    serve_handle_p50_ms: float | None = None  # plain Serve DeploymentHandle call
    serve_handle_p99_ms: float | None = None
    preempt_p50_s: float | None = None  # high-priority job: created -> started, GPUs held by idle lo
    preempt_max_s: float | None = None
    ripple_cold_first_s: float | None = None  # first job after create: start - created - init
    ripple_cold_p50_s: float | None = None
    ripple_cold_p95_s: float | None = None
    serve_async_cold_first_s: float | None = None  # first task after deploy: sent -> handler start
    serve_async_cold_p50_s: float | None = None
    serve_async_cold_p95_s: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def build_rows(f: Figures) -> list[Row]:
    """One row per figure of issue 12, with its target where the issue sets one."""
    tput = "no-op jobs, in-cluster submit_many"
    rt = "round trip {}, in-cluster submit+result"
    runsync = "round trip {}, HTTP runsync"
    beside = "round trip {}, HTTP runsync (same cluster)"
    nodash = "round trip {}, HTTP runsync (Ray's dashboard off, as the bare Ray)"
    direct = "round trip {}, HTTP runsync by direct ingress (RIPPLE_DIRECT_INGRESS_PORT)"
    cold = "scale from zero {}: job start - created - init"
    preempt = "preemption {}: high-priority job created -> started"
    return [
        Row(tput, "jobs/s", f.ripple_jobs_s, SERVE_ASYNC, f.serve_async_jobs_s, Target("min_ratio", 3.0)),
        Row(tput, "jobs/s", f.ripple_jobs_s, CELERY, f.celery_jobs_s, Target("min_ratio", 5.0)),
        Row(rt.format("p50"), "ms", f.ripple_rt_p50_ms, CELERY, f.celery_rt_p50_ms, Target("max_ratio", 1.5)),
        Row(rt.format("p50") + " (stretch)", "ms", f.ripple_rt_p50_ms, CELERY, f.celery_rt_p50_ms,
            Target("max_ratio", 1.0)),
        Row(rt.format("p50"), "ms", f.ripple_rt_p50_ms, SERVE_ASYNC, f.serve_async_rt_p50_ms),
        Row(rt.format("p99"), "ms", f.ripple_rt_p99_ms, CELERY, f.celery_rt_p99_ms),
        Row(rt.format("p99"), "ms", f.ripple_rt_p99_ms, SERVE_ASYNC, f.serve_async_rt_p99_ms),
        Row(runsync.format("p50"), "ms", f.ripple_runsync_p50_ms, SERVE_HTTP, f.serve_http_p50_ms,
            Target("max_ratio", 1.5)),
        Row(runsync.format("p99"), "ms", f.ripple_runsync_p99_ms, SERVE_HTTP, f.serve_http_p99_ms),
        Row(runsync.format("p50"), "ms", f.ripple_runsync_p50_ms, SERVE_HANDLE, f.serve_handle_p50_ms),
        Row(beside.format("p50"), "ms", f.ripple_runsync_beside_p50_ms, SERVE_HTTP_BESIDE,
            f.serve_http_beside_p50_ms, Target("max_ratio", 1.5)),
        Row(beside.format("p99"), "ms", f.ripple_runsync_beside_p99_ms, SERVE_HTTP_BESIDE,
            f.serve_http_beside_p99_ms),
        Row(nodash.format("p50"), "ms", f.ripple_runsync_nodash_p50_ms, SERVE_HTTP, f.serve_http_p50_ms,
            Target("max_ratio", 1.5)),
        Row(nodash.format("p99"), "ms", f.ripple_runsync_nodash_p99_ms, SERVE_HTTP, f.serve_http_p99_ms),
        Row(direct.format("p50"), "ms", f.ripple_runsync_direct_p50_ms, SERVE_HTTP, f.serve_http_p50_ms,
            Target("max_ratio", 1.5)),
        Row(direct.format("p50"), "ms", f.ripple_runsync_direct_p50_ms, SERVE_HTTP_DIRECT,
            f.serve_http_direct_p50_ms, Target("max_ratio", 1.5)),
        Row(direct.format("p99"), "ms", f.ripple_runsync_direct_p99_ms, SERVE_HTTP_DIRECT,
            f.serve_http_direct_p99_ms),
        Row(direct.format("p50"), "ms", f.ripple_runsync_direct_p50_ms, SERVE_HANDOFF_DIRECT,
            f.serve_handoff_direct_p50_ms, Target("max_ratio", 1.5)),
        Row(direct.format("p99"), "ms", f.ripple_runsync_direct_p99_ms, SERVE_HANDOFF_DIRECT,
            f.serve_handoff_direct_p99_ms),
        Row(preempt.format("p50"), "s", f.preempt_p50_s, target=Target("max", 1.5)),
        Row(preempt.format("max"), "s", f.preempt_max_s, target=Target("max", 1.5)),
        Row(cold.format("p95"), "s", f.ripple_cold_p95_s, SERVE_ASYNC, f.serve_async_cold_p95_s,
            Target("max", 1.0)),
        Row(cold.format("first job after create"), "s", f.ripple_cold_first_s, SERVE_ASYNC,
            f.serve_async_cold_first_s, Target("max", 1.0)),
        Row(cold.format("p50"), "s", f.ripple_cold_p50_s, SERVE_ASYNC, f.serve_async_cold_p50_s),
    ]  # fmt: skip


def missed(rows: list[Row]) -> list[str]:
    """The rows whose target is not met, as 'metric vs peer (ratio or value, target)'."""
    out = []
    for row in rows:
        if row.met is False and row.target is not None:
            shown = (
                f"{row.ratio:.2f}x"
                if row.ratio is not None and row.target.kind.endswith("ratio")
                else (f"{row.ripple:.2f} {row.unit}")
            )
            peer = f" vs {row.peer_name}" if row.peer_name else ""
            out.append(f"{row.metric}{peer}: {shown}, target {row.target.describe(row.unit)}")
    return out


def markdown_table(rows: list[Row]) -> str:
    """The rows as a Markdown table (for bench/PERFORMANCE.md): metric, unit, Ripple, peer, ratio, target,
    met?; the same numbers and verdicts as `format_table`."""

    def num(value: float | None) -> str:
        return "-" if value is None else (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}")

    lines = [
        "| metric | unit | Ripple | peer | ratio | target | met? |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        peer = f"{num(row.peer)} ({row.peer_name})" if row.peer_name else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        target = row.target.describe(row.unit) if row.target else "-"
        met = {True: "yes", False: "**no**", None: "-"}[row.met]
        lines.append(
            f"| {row.metric} | {row.unit} | {num(row.ripple)} | {peer} | {ratio} | {target} | {met} |"
        )
    return "\n".join(lines)
