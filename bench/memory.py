"""Memory of a Ripple instance holding a deep queue: 100,000 queued 1 KB jobs and no worker to take them.

    python bench/memory.py [--jobs N] [--input-bytes B] [--keep]

Starts Ripple (`ripple up --detach`), an endpoint for outside workers (handler null, so nothing takes the
jobs) and an endpoint with a handler but maxReplicas 0 (so a WorkerPool actor exists, with no replica).
Measures, before and after queueing the jobs with POST /v2/{ep}/run-batch (500 a request): the resident
memory (RSS, MiB) of Ripple's actor processes (JobQueue, Autoscaler, WorkerPool, the Serve replica of the
API), found under the instance's Ray head by their process titles, and of the embedded redis-server
(<data-dir>/redis.pid); and Redis's own used_memory (INFO memory on <data-dir>/redis.sock). For comparison,
Celery tasks with the same input queued (no worker) into a fresh Redis: bytes of used_memory per task.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench.common import Row, bench_session, format_table, load_average, rate_per_s, wait_until  # noqa: E402
from bench.ripple_instance import RIPPLE_ACTORS, RippleInstance  # noqa: E402

QUEUED = "deep"
IDLE = "idle"
MIB = 1024 * 1024


def snapshot(instance: RippleInstance) -> dict[str, float]:
    """RSS in MiB per Ripple actor class (summed over its processes) and of redis-server; Redis's
    used_memory in MiB; and the number of processes per class (key '<name> processes')."""
    out: dict[str, float] = {}
    for name, procs in instance.actor_processes().items():
        rss = 0
        for proc in procs:
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        out[name] = rss / MIB
        out[f"{name} processes"] = len(procs)
    pid = instance.redis_pid()
    out["redis-server"] = psutil.Process(pid).memory_info().rss / MIB if pid else float("nan")
    r = instance.redis()
    try:
        out["Redis used_memory"] = int(r.info("memory")["used_memory"]) / MIB
    finally:
        r.close()
    return out


def queue_depth(http: Any, endpoint: str) -> int:
    reply = http.get(f"/v2/{endpoint}/health")
    reply.raise_for_status()
    return int(reply.json()["jobs"]["inQueue"])


def fill(http: Any, n: int, input_bytes: int, batch: int = 500) -> float:
    """Queue n jobs whose input is a JSON string of input_bytes characters; return seconds taken."""
    payload = {"input": {"data": "x" * input_bytes}}
    start_s = time.perf_counter()
    for first in range(0, n, batch):
        size = min(batch, n - first)
        reply = http.post(f"/v2/{QUEUED}/run-batch", json={"jobs": [payload] * size})
        if reply.status_code != 200 or len(reply.json()["ids"]) != size:
            raise RuntimeError(f"run-batch answered {reply.status_code}: {reply.text[:300]}")
    return time.perf_counter() - start_s


def celery_bytes_per_task(workdir: Path, n: int, input_bytes: int) -> float:
    """Redis used_memory growth per task for n Celery tasks queued (no worker) with the same input."""
    from bench import peers

    server, url = peers.start_redis(workdir / "redis-celery", appendonly=True)
    try:
        import redis

        r = redis.Redis.from_url(url)
        app = peers.make_celery(url)
        try:
            base = int(r.info("memory")["used_memory"])
            data = {"data": "x" * input_bytes}
            for _ in range(n):
                app.send_task(peers.NOOP_TASK, args=[data])
            return (int(r.info("memory")["used_memory"]) - base) / n
        finally:
            app.close()
            r.close()
    finally:
        server.stop(grace_s=5, first_signal=signal.SIGTERM)


def build_rows(
    before: dict[str, float], after: dict[str, float], jobs: int, celery_per_task: float | None
) -> list[Row]:
    """One row per process (after vs before, ratio = after / before), the total, and bytes per job."""
    rows = []
    names = [*RIPPLE_ACTORS, "redis-server", "Redis used_memory"]
    for name in names:
        if name in after and (after.get(f"{name} processes", 1) or before.get(f"{name} processes", 1)):
            count = int(after.get(f"{name} processes", 1))
            label = f"RSS {name}" + (f" ({count} processes)" if count > 1 else "")
            if name == "Redis used_memory":
                label = name
            rows.append(Row(label, "MiB", after[name], "before", before.get(name)))
    rss_names = [*RIPPLE_ACTORS, "redis-server"]
    total_after = sum(after.get(n, 0.0) for n in rss_names)
    total_before = sum(before.get(n, 0.0) for n in rss_names)
    rows.append(Row("RSS Ripple actors + redis-server", "MiB", total_after, "before", total_before))
    for name, label in (("Redis used_memory", "Redis used_memory"), ("JobQueue", "JobQueue RSS")):
        if name in after and name in before:
            per_job = (after[name] - before[name]) * MIB / jobs
            if name == "Redis used_memory":
                peer = "Celery task in Redis"
                rows.append(Row(f"{label} growth per queued job", "bytes", per_job, peer, celery_per_task))
            else:
                rows.append(Row(f"{label} growth per queued job", "bytes", per_job))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs queued (default 100,000)")
    parser.add_argument("--input-bytes", type=int, default=1000, help="input size (default 1,000 bytes)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    parser.add_argument("--skip-celery", action="store_true", help="no Celery queue for comparison")
    parser.add_argument(
        "--celery-tasks", type=int, default=10_000, help="Celery tasks queued for the per-task size (10,000)"
    )
    args = parser.parse_args(argv)
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    fill_s = 0.0
    celery_per_task: float | None = None
    with bench_session("memory", keep=args.keep) as session:
        instance = RippleInstance(session.workdir)
        session.on_exit(instance.stop)
        print("[memory] ripple up ...", flush=True)
        instance.start()
        with instance.http() as http:
            instance.create_endpoint(http, {"name": QUEUED, "handler": None})
            idle = {"name": IDLE, "handler": "bench.noop_handler:noop", "gpus": 0, "cpus": 0}
            instance.create_endpoint(http, {**idle, "minReplicas": 0, "maxReplicas": 0})
            wait_until(lambda: bool(instance.actor_processes()["WorkerPool"]), 60, interval_s=0.5)
            queue_depth(http, QUEUED)  # one request through every layer before the first reading
            time.sleep(3.0)
            before = snapshot(instance)
            print(f"[memory] before: {before}", flush=True)
            fill_s = fill(http, args.jobs, args.input_bytes)
            if queue_depth(http, QUEUED) != args.jobs:
                raise RuntimeError(f"queue holds {queue_depth(http, QUEUED)} jobs, not {args.jobs}")
            time.sleep(3.0)
            after = snapshot(instance)
        instance.stop()
        if not args.skip_celery:
            print("[memory] Celery ...", flush=True)
            celery_per_task = celery_bytes_per_task(session.workdir, args.celery_tasks, args.input_bytes)
    if session.interrupted:
        return 130
    print()
    print(
        f"Memory with {args.jobs:,} queued jobs of {args.input_bytes:,} input bytes (queued in "
        f"{fill_s:.1f} s, {rate_per_s(args.jobs, fill_s):,.0f} jobs/s), "
        f"{session.elapsed_s():.0f} s; {session.load_before} before, {load_average()} after"
    )
    print(format_table(build_rows(before, after, args.jobs, celery_per_task)))
    return session.finish()


if __name__ == "__main__":
    sys.exit(main())
