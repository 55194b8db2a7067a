"""Ripple's benchmark suite: Ripple against Celery, plain Ray and plain Ray Serve on this machine.

    python bench/run.py [--quick] [--json out.json]

Starts every peer itself on loopback (Redis, Celery workers, a local Ray, a Serve echo route), measures
them, stops them, then starts Ripple as a user would (`ripple up --insecure`), measures it over HTTP and
through the worker protocol, restarts it with 100,000 jobs queued to time recovery (not with --quick), and
prints one table: metric | Ripple | peer | ratio | target | met?. Every process started is stopped on exit,
Ctrl-C and failure included. See bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench import peers, ripple_http  # noqa: E402
from bench.common import Row, Target, format_table  # noqa: E402


@dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    jobs: int  # Celery, plain Ray and run-batch
    e2e_jobs: int  # Ripple end to end through the worker protocol (one HTTP request per completion)
    latency_samples: int
    recovery_jobs: int  # 0 skips the recovery measurement
    submit_batch: int
    workers: int
    take_batch: int
    endpoint_concurrency: int = 64


FULL = Plan(
    jobs=10_000,
    e2e_jobs=5_000,
    latency_samples=500,
    recovery_jobs=100_000,
    submit_batch=500,
    workers=8,
    take_batch=32,
)
QUICK = Plan(
    jobs=1_000,
    e2e_jobs=500,
    latency_samples=100,
    recovery_jobs=0,
    submit_batch=500,
    workers=8,
    take_batch=32,
)


class Results:
    """Raw numbers by section, plus the errors of sections that failed (the run goes on without them)."""

    def __init__(self) -> None:
        self.raw: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def section(self, name: str, work: Callable[[], Any]) -> Any:
        """Run one measurement; keep its result under name, or its error, and never raise (but Ctrl-C)."""
        print(f"[bench] {name} ...", flush=True)
        start_s = time.perf_counter()
        try:
            value = work()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"[bench] {name} FAILED: {exc}", flush=True)
            traceback.print_exc(limit=3)
            return None
        self.raw[name] = _jsonable(value)
        print(f"[bench] {name} done in {time.perf_counter() - start_s:.1f} s: {_short(value)}", flush=True)
        return value

    def get(self, name: str, *path: str) -> float | None:
        """A number from the raw results (None when the section failed or was skipped)."""
        node: Any = self.raw.get(name)
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) else None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        out = asdict(value)
        for prop in ("jobs_per_s", "submits_per_s"):
            if hasattr(value, prop):
                out[prop] = getattr(value, prop)
        for key, item in vars(value).items():
            if hasattr(item, "__dataclass_fields__"):
                out[key] = _jsonable(item)
        return out
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _short(value: Any) -> str:
    return json.dumps(_jsonable(value), default=str)[:300]


# ---------------------------------------------------------------------------------------------------------
# Sections


def run_celery(plan: Plan, workdir: Path, results: Results) -> None:
    """Celery with Redis, once without and once with the append-only file (fsync every second)."""
    for appendonly in (False, True):
        name = "celery_aof" if appendonly else "celery"
        redis_dir = workdir / f"redis-{name}"
        server, url = peers.start_redis(redis_dir, appendonly=appendonly)
        try:
            workers = peers.start_celery_workers(url, redis_dir, processes=2)
            try:
                results.section(
                    name, functools.partial(peers.bench_celery, url, plan.jobs, plan.latency_samples)
                )
            finally:
                workers.stop(grace_s=10, first_signal=signal.SIGTERM)
        finally:
            server.stop(grace_s=5, first_signal=signal.SIGTERM)


def run_ray(plan: Plan, results: Results) -> None:
    """Plain Ray tasks, a pool of 2 actors, and a Serve echo route, on one local Ray instance."""
    start_s = time.perf_counter()
    with peers.local_ray(num_cpus=2):
        results.raw["ray_init"] = {"seconds": time.perf_counter() - start_s}
        results.section("ray_tasks", lambda: peers.bench_ray_tasks(plan.jobs, plan.latency_samples))
        results.section("ray_actor_pool", lambda: peers.bench_ray_actor_pool(plan.jobs, plan.latency_samples))
        results.section("serve_echo", lambda: peers.bench_serve_echo(plan.latency_samples, plan.jobs // 2))


def measure_ripple(
    client: Any, base_url: str, worker_key: str | None, plan: Plan, workdir: Path, results: Results
) -> None:
    """Every Ripple measurement but recovery, against a ready instance."""
    ep = "bench"
    ripple_http.create_endpoint(client, ep, plan.endpoint_concurrency)
    ripple_http.purge(client, ep)
    results.section("ripple_run", lambda: ripple_http.bench_run_latency(client, ep, plan.latency_samples))
    ripple_http.purge(client, ep)

    def run_batch() -> dict[str, float]:
        seconds = ripple_http.submit_batches(client, ep, plan.jobs, plan.submit_batch)
        return {"jobs": plan.jobs, "seconds": seconds, "jobs_per_s": plan.jobs / seconds}

    results.section("ripple_run_batch", run_batch)
    ripple_http.purge(client, ep)
    workers = ripple_http.ProtocolWorkers(base_url, ep, plan.workers, plan.take_batch, workdir, worker_key)
    try:
        time.sleep(1.0)  # let the workers register and start long-polling
        results.section(
            "ripple_end_to_end",
            lambda: ripple_http.bench_end_to_end(client, ep, plan.e2e_jobs, plan.submit_batch, timeout_s=300),
        )
        results.section(
            "ripple_round_trip", lambda: ripple_http.bench_round_trip(client, ep, plan.latency_samples)
        )
    finally:
        results.raw["protocol_workers"] = workers.stop()


def run_ripple(plan: Plan, workdir: Path, results: Results, command: list[str] | None) -> None:
    """Start Ripple with `ripple up`, measure it, restart it with jobs queued (recovery), stop it."""
    server = ripple_http.RippleServer(workdir / "ripple-data", workdir / "logs", command)
    print(
        f"[bench] starting: {shlex.join(server.command)} up --insecure ... (log in {server.log_dir})",
        flush=True,
    )
    try:
        started_s = server.start()
        server.wait_ready()
        results.raw["ripple_first_start"] = {"seconds_to_ready": time.perf_counter() - started_s}
        with ripple_http.client_for(server.base_url, None) as client:
            measure_ripple(client, server.base_url, None, plan, workdir, results)
            if plan.recovery_jobs:
                ripple_http.purge(client, "bench")
                results.section(
                    "ripple_recovery_fill",
                    lambda: {"seconds": ripple_http.submit_batches(client, "bench", plan.recovery_jobs, 500)},
                )
                time.sleep(1.5)  # past one append-only fsync interval
        if plan.recovery_jobs:
            for how in ("graceful", "kill9"):
                results.section(
                    f"ripple_recovery_{how}",
                    lambda: ripple_http.measure_restart(server, "bench", plan.recovery_jobs, how),  # noqa: B023
                )
            with ripple_http.client_for(server.base_url, None) as client:
                ripple_http.purge(client, "bench")
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------------
# The table


def build_rows(r: Results, plan: Plan) -> list[Row]:
    """Turn raw results into the table's rows (a missing number shows as '-')."""
    rows = [
        Row("/run latency p50", "ms", r.get("ripple_run", "p50_ms"),
            "Serve echo", r.get("serve_echo", "latency", "p50_ms"), Target("max_ratio", 1.5)),
        Row("/run latency p99", "ms", r.get("ripple_run", "p99_ms"),
            "Serve echo", r.get("serve_echo", "latency", "p99_ms")),
        Row("run-batch accepted", "jobs/s", r.get("ripple_run_batch", "jobs_per_s"), "Celery submit",
            r.get("celery", "throughput", "submits_per_s"), Target("min", 5000)),
    ]  # fmt: skip
    e2e = r.get("ripple_end_to_end", "jobs_per_s")
    for key, label, target in (
        ("celery", "Celery, AOF off", Target("min_ratio", 1.0)),
        ("celery_aof", "Celery, AOF everysec", Target("min_ratio", 1.0)),
        ("ray_tasks", "Ray tasks", None),
        ("ray_actor_pool", "Ray 2-actor pool", None),
    ):
        rows.append(Row("end to end", "jobs/s", e2e, label, r.get(key, "throughput", "jobs_per_s"), target))
    rows.append(
        Row(
            "end to end",
            "jobs/s",
            e2e,
            "Serve echo req/s, 32 in flight",
            r.get("serve_echo", "requests_per_s"),
        )
    )
    for pct in ("p50", "p99"):
        ripple = r.get("ripple_round_trip", f"{pct}_ms")
        for key, label in (("celery", "Celery"), ("ray_tasks", "Ray task"), ("ray_actor_pool", "Ray actor")):
            if pct == "p99" and key != "celery":
                continue
            rows.append(Row(f"round trip {pct}", "ms", ripple, label, r.get(key, "latency", f"{pct}_ms")))
    ray_init = r.get("ray_init", "seconds")
    for how in ("graceful", "kill9"):
        name = f"ripple_recovery_{how}"
        if name not in r.raw and name not in r.errors:
            continue
        jobs = f"{plan.recovery_jobs // 1000}k"
        # A recovery time only counts when every job came back.
        complete = r.get(name, "to_all_queued_s") is not None
        reported = r.get(name, "app_reported_s") if complete else None
        rows += [
            Row(f"restart ({how}) to ready", "s", r.get(name, "to_ready_s"), "ray.init", ray_init),
            Row(f"restart ({how}) to {jobs} queued", "s", r.get(name, "to_all_queued_s"),
                "ray.init", ray_init),
            Row(f"jobs queued after restart ({how})", "jobs", r.get(name, "queued_seen"),
                target=Target("min", plan.recovery_jobs)),
            Row(f"recovery of {jobs} ({how}, app-reported)", "s", reported, target=Target("max", 5.0)),
        ]  # fmt: skip
    return rows


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import celery
    import ray

    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "celery": celery.__version__,
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    """The command line and the plan it selects."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, no recovery (about 2 minutes)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-ripple", action="store_true")
    parser.add_argument("--no-recovery", action="store_true", help="skip the restart with jobs queued")
    parser.add_argument("--ripple-cmd", default=None, help='command before "up", default: the ripple script')
    parser.add_argument("--workers", type=int, default=None, help="protocol workers (default 8)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput run")
    parser.add_argument("--recovery-jobs", type=int, default=None, help="jobs queued across the restart")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data) after the run")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.no_recovery:
        plan = replace(plan, recovery_jobs=0)
    if args.workers:
        plan = replace(plan, workers=args.workers)
    if args.jobs:
        plan = replace(plan, jobs=args.jobs, e2e_jobs=args.jobs)
    if args.recovery_jobs is not None:
        plan = replace(plan, recovery_jobs=args.recovery_jobs)
    return args, plan


def report(
    args: argparse.Namespace, plan: Plan, results: Results, info: dict[str, Any], elapsed_s: float
) -> None:
    """Print the table (and the failed sections); write the JSON file when asked."""
    rows = build_rows(results, plan)
    print()
    print(
        f"Ripple benchmark ({'quick' if args.quick else 'full'}): nproc={info['nproc']} "
        f"Python {info['python']} Ray {info['ray']} Celery {info['celery']}, {elapsed_s:.0f} s"
    )
    print(format_table(rows))
    for name, error in results.errors.items():
        print(f"FAILED {name}: {error}")
    if args.json:
        payload = {
            "machine": info,
            "plan": asdict(plan),
            "rows": [row.as_dict() for row in rows],
            "raw": results.raw,
            "errors": results.errors,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 when every section ran, 1 when any failed, 130 when interrupted."""
    args, plan = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (a background job)
        signal.signal(sig, _raise_interrupt)
    results = Results()
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="ripple-bench-"))
    started_s = time.perf_counter()
    try:
        if not args.skip_peers:
            run_celery(plan, workdir, results)
            run_ray(plan, results)
        if not args.skip_ripple:
            command = shlex.split(args.ripple_cmd) if args.ripple_cmd else None
            try:
                run_ripple(plan, workdir, results, command)
            except RuntimeError as exc:
                results.errors["ripple"] = str(exc)
                print(f"[bench] Ripple FAILED: {exc}", flush=True)
    except KeyboardInterrupt:
        print("[bench] interrupted; everything started has been stopped", flush=True)
        return 130
    finally:
        if args.keep:
            print(f"[bench] work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(args, plan, results, info, time.perf_counter() - started_s)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
