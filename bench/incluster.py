"""No-op jobs through Ripple's own worker actors, against Celery, plain Ray tasks and a plain Ray actor pool.

    python bench/incluster.py [--quick] [--jobs N] [--samples N] [--no-profile] [--keep]

Peers first (each started and stopped here): Celery 5 with Redis (AOF off, then AOF everysec) and 2 prefork
workers, then a fresh local Ray (no-op tasks, a pool of 2 actors). Then Ripple: `ripple up --detach`, an
endpoint running `bench.noop_handler:noop` on 2 warm replicas (gpus 0, cpus 0, concurrency 64), and

- throughput: N jobs submitted with `Client.in_cluster().submit_many` (a driver on Ripple's Ray head), and
  N jobs with `POST /v2/{ep}/run-batch` (500 a request), each timed from the first submit until the queue
  counts them all completed;
- per-job latency under that burst: createdAt -> finishedAt of every job (delayTime + executionTime);
- round trip on an idle system: sequential in-cluster submit + result, and sequential HTTP runsync.

When a target is missed (and not with --no-profile), the in-cluster run is repeated under py-spy attached to
the JobQueue actor and to one replica, and the functions holding the GIL most are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench import peers, profile_actor, ripple_http  # noqa: E402
from bench.common import (  # noqa: E402
    IDLE_SETTLE_S,
    Latency,
    Row,
    Session,
    Target,
    bench_session,
    format_table,
    load_average,
    rate_per_s,
    summarize_latency,
    wait_until,
)
from bench.ripple_instance import RippleInstance  # noqa: E402
from orchestrator.core.models import RunRequest  # noqa: E402

ENDPOINT = "noop"
SPEC: dict[str, Any] = {
    "name": ENDPOINT,
    "handler": "bench.noop_handler:noop",
    "gpus": 0,
    "cpus": 0,
    "concurrency": 64,
    "minReplicas": 2,
    "maxReplicas": 2,
}


@dataclass(frozen=True)
class Burst:
    """n jobs pushed through: client-observed jobs/s, and each job's createdAt -> finishedAt."""

    n: int
    submit_s: float
    elapsed_s: float
    job_latency: Latency | None

    @property
    def jobs_per_s(self) -> float:
        return rate_per_s(self.n, self.elapsed_s)


# ---------------------------------------------------------------------------------------------------------
# Peers


def run_peers(jobs: int, samples: int, workdir: Path) -> dict[str, peers.PeerResult]:
    """Celery (AOF off and AOF everysec), plain Ray tasks and a 2-actor pool; every process stopped after."""
    out: dict[str, peers.PeerResult] = {}
    for appendonly in (False, True):
        name = "celery_aof" if appendonly else "celery"
        print(f"[incluster] {name} ...", flush=True)
        server, url = peers.start_redis(workdir / f"redis-{name}", appendonly=appendonly)
        try:
            workers = peers.start_celery_workers(url, workdir / f"redis-{name}", processes=2)
            try:
                out[name] = peers.bench_celery(url, jobs, samples)
            finally:
                workers.stop(grace_s=10, first_signal=signal.SIGTERM)
        finally:
            server.stop(grace_s=5, first_signal=signal.SIGTERM)
    print("[incluster] plain Ray ...", flush=True)
    with peers.local_ray(num_cpus=2):
        out["ray_tasks"] = peers.bench_ray_tasks(jobs, samples)
        out["ray_actor_pool"] = peers.bench_ray_actor_pool(jobs, samples)
    return out


# ---------------------------------------------------------------------------------------------------------
# Ripple


@contextlib.contextmanager
def warm_noop(
    session: Session, instance: RippleInstance | None = None
) -> Iterator[tuple[RippleInstance, httpx.Client]]:
    """A Ripple instance (``instance``, by default one in ``session``'s work dir) started, and stopped when
    the session ends, with the no-op endpoint on 2 warm replicas, and an HTTP client on its API."""
    instance = instance or RippleInstance(session.workdir)
    session.on_exit(instance.stop)
    instance.start()
    with instance.http() as http:
        instance.create_endpoint(http, SPEC)
        instance.wait_serving(http, ENDPOINT, 2)
        yield instance, http


def _completed(queue: Any) -> int:
    import ray

    return int(ray.get(queue.health.remote(ENDPOINT))["jobs"]["completed"])


def _wait_completed(queue: Any, at_least: int, timeout_s: float) -> float:
    """Poll the queue (every 20 ms) until it counts at_least completed jobs; return that moment."""
    if not wait_until(lambda: _completed(queue) >= at_least, timeout_s, interval_s=0.02):
        raise RuntimeError(f"only {_completed(queue)} of {at_least} jobs completed within {timeout_s:.0f} s")
    return time.perf_counter()


def _job_latencies(client: Any, ids: list[str]) -> Latency:
    """createdAt -> finishedAt of every job (delayTime + executionTime: one attempt each), in one call."""
    samples_s = []
    for status in client.statuses(ids):
        if status is None or status["status"] != "COMPLETED":
            raise RuntimeError(f"job not completed: {status}")
        samples_s.append((status["delayTime"] + status["executionTime"]) / 1000.0)
    return summarize_latency(samples_s)


def burst_in_cluster(client: Any, queue: Any, n: int, latencies: bool = True) -> Burst:
    """n no-op jobs with submit_many (chunks of 5000, sent concurrently), until all are completed; then
    (when `latencies`) every job's status, in one call."""
    baseline = _completed(queue)
    start_s = time.perf_counter()
    ids = client.submit_many(ENDPOINT, list(range(n)))
    submit_s = time.perf_counter() - start_s
    done_s = _wait_completed(queue, baseline + n, timeout_s=300)
    return Burst(n, submit_s, done_s - start_s, _job_latencies(client, ids) if latencies else None)


def burst_run_batch(http: Any, client: Any, queue: Any, n: int, batch: int = 500) -> Burst:
    """n no-op jobs with POST /v2/{ep}/run-batch, `batch` a request, until all are completed."""
    baseline = _completed(queue)
    ids: list[str] = []
    start_s = time.perf_counter()
    for first in range(0, n, batch):
        jobs = [{"input": i} for i in range(first, min(n, first + batch))]
        reply = http.post(f"/v2/{ENDPOINT}/run-batch", json={"jobs": jobs})
        reply.raise_for_status()
        ids += reply.json()["ids"]
    submit_s = time.perf_counter() - start_s
    done_s = _wait_completed(queue, baseline + n, timeout_s=300)
    return Burst(n, submit_s, done_s - start_s, _job_latencies(client, ids))


@dataclass(frozen=True)
class RoundTrips:
    """Sequential in-cluster submit + result: client-observed, and the app's timestamps of each job."""

    client: Latency
    server: Latency  # createdAt -> finishedAt
    delay: Latency  # createdAt -> startedAt: queued until a replica's take returned it
    execution: Latency  # startedAt -> finishedAt: the handler and the result's way back into the store


def round_trips(client: Any, n: int, warmup: int = 10) -> RoundTrips:
    """n sequential in-cluster submit + result (after IDLE_SETTLE_S and `warmup` untimed ones)."""
    time.sleep(IDLE_SETTLE_S)
    client_s: list[float] = []
    delay_s: list[float] = []
    execution_s: list[float] = []
    for k in range(warmup + n):
        start_s = time.perf_counter()
        job_id = client.submit(ENDPOINT, k)
        status = client.result(job_id, ENDPOINT, timeout_s=30)
        elapsed_s = time.perf_counter() - start_s
        if status["status"] != "COMPLETED":
            raise RuntimeError(f"round trip job not completed: {status}")
        if k >= warmup:
            client_s.append(elapsed_s)
            delay_s.append(status["delayTime"] / 1000.0)
            execution_s.append(status["executionTime"] / 1000.0)
    server_s = [d + e for d, e in zip(delay_s, execution_s, strict=True)]
    return RoundTrips(
        summarize_latency(client_s),
        summarize_latency(server_s),
        summarize_latency(delay_s),
        summarize_latency(execution_s),
    )


def one_call_round_trips(queue: Any, n: int, warmup: int = 10) -> Latency:
    """n sequential `JobQueue.runsync` actor calls (submit and wait in one call, as HTTP runsync does):
    what an in-cluster client saves by not making two calls."""
    import ray

    samples_s: list[float] = []
    for k in range(warmup + n):
        start_s = time.perf_counter()
        status = ray.get(queue.runsync.remote(ENDPOINT, RunRequest(input=k), 30.0))
        if status["status"] != "COMPLETED":
            raise RuntimeError(f"runsync job not completed: {status}")
        if k >= warmup:
            samples_s.append(time.perf_counter() - start_s)
    return summarize_latency(samples_s)


def durability(instance: RippleInstance) -> str:
    """What the store promises: the append-only file and its fsync policy, as Redis reports them."""
    r = instance.redis()
    try:
        aof = r.info("persistence").get("aof_enabled")
        fsync = r.config_get("appendfsync").get("appendfsync")
        return f"Redis aof_enabled={aof} appendfsync={fsync!s}"
    finally:
        r.close()


def profile(instance: RippleInstance, workload: Callable[[], str], title: str, workdir: Path) -> str:
    """Run workload under py-spy (GIL samples) on the JobQueue actor and on every replica; the summaries."""
    procs = instance.actor_processes()
    targets = [(f"JobQueue pid {p.pid}", p.pid) for p in procs["JobQueue"][:1]]
    targets += [(f"WorkerReplica pid {p.pid}", p.pid) for p in procs["WorkerReplica"]]
    with contextlib.ExitStack() as stack:
        recordings = [
            (name, stack.enter_context(profile_actor.record(pid, workdir / f"profile-{title}-{pid}.txt")))
            for name, pid in targets
        ]
        outcome = workload()
    parts = [f"== profile of {title}, py-spy attached: {outcome}"]
    for name, rec in recordings:
        parts.append(rec.summary.format(name) if rec.summary else f"{name}: {rec.error}")
    return "\n".join(parts)


def run_ripple(jobs: int, samples: int, workdir: Path, with_profile: bool, raw: dict[str, Any]) -> None:
    """Start Ripple, measure it into raw, stop it (always)."""
    instance = RippleInstance(workdir)
    try:
        print("[incluster] ripple up ...", flush=True)
        raw["ripple_up_s"] = instance.start()
        with instance.http() as http:
            instance.create_endpoint(http, SPEC)
            instance.wait_serving(http, ENDPOINT, 2)
            instance.connect_ray()
            from orchestrator.client import Client

            client = Client.in_cluster()
            queue = instance.queue()
            burst_in_cluster(
                client, queue, min(500, jobs), latencies=False
            )  # warm-up: replicas, connections, code paths
            print("[incluster] ripple in-cluster burst ...", flush=True)
            raw["in_cluster"] = burst_in_cluster(client, queue, jobs)
            print("[incluster] ripple run-batch burst ...", flush=True)
            raw["run_batch"] = burst_run_batch(http, client, queue, jobs)
            print("[incluster] ripple round trips ...", flush=True)
            raw["round_trip"] = round_trips(client, samples)
            raw["one_call"] = one_call_round_trips(queue, samples)
            raw["runsync"] = ripple_http.bench_round_trip(http, ENDPOINT, samples)
            raw["durability"] = durability(instance)
            raw["workers"] = [
                {k: w.get(k) for k in ("workerId", "coldStartS")} for w in instance.workers(http, ENDPOINT)
            ]
            if with_profile and _missed(raw, "jobs/s"):
                print("[incluster] throughput target missed: profiling a burst ...", flush=True)

                def burst() -> str:
                    return f"{burst_in_cluster(client, queue, jobs, latencies=False).jobs_per_s:,.0f} jobs/s"

                raw["profile_burst"] = profile(instance, burst, "the in-cluster burst", workdir)
            if with_profile and _missed(raw, "ms"):
                print("[incluster] latency target missed: profiling round trips ...", flush=True)

                def sequential() -> str:
                    return f"round trip p50 {round_trips(client, samples).client.p50_ms:.1f} ms"

                raw["profile_round_trips"] = profile(instance, sequential, "in-cluster round trips", workdir)
    finally:
        instance.stop()


def _missed(raw: dict[str, Any], unit: str) -> bool:
    rows = build_rows(raw, raw.get("peers", {}))
    return any(row.met is False for row in rows if row.unit == unit)


# ---------------------------------------------------------------------------------------------------------
# The table


def _pct(latency: Latency | None, pct: str) -> float | None:
    return float(getattr(latency, f"{pct}_ms")) if latency is not None else None


def build_rows(raw: dict[str, Any], peer: dict[str, peers.PeerResult]) -> list[Row]:
    """The table: throughput against every peer, latency under the burst, round trips against Celery."""

    def tput(name: str) -> float | None:
        result = peer.get(name)
        return result.throughput.jobs_per_s if result and result.throughput else None

    def lat(name: str, pct: str) -> float | None:
        result = peer.get(name)
        return _pct(result.latency, pct) if result else None

    celery_aof, celery = "Celery AOF everysec", "Celery AOF off"
    rows: list[Row] = []
    for key, label in (("in_cluster", "in-cluster submit_many"), ("run_batch", "HTTP run-batch")):
        burst: Burst | None = raw.get(key)
        metric = f"no-op jobs, {label}"
        value = burst.jobs_per_s if burst else None
        rows.append(Row(metric, "jobs/s", value, celery_aof, tput("celery_aof"), Target("min_ratio", 2.0)))
        rows.append(Row(metric, "jobs/s", value, celery, tput("celery"), Target("min_ratio", 2.0)))
        if key == "in_cluster":
            rows.append(Row(metric, "jobs/s", value, "Ray tasks", tput("ray_tasks")))
            rows.append(Row(metric, "jobs/s", value, "Ray 2-actor pool", tput("ray_actor_pool")))
        for pct in ("p50", "p99"):
            job_latency = burst.job_latency if burst else None
            rows.append(Row(f"job latency in that burst {pct} ({label})", "ms", _pct(job_latency, pct)))
    trips: RoundTrips | None = raw.get("round_trip")
    for pct in ("p50", "p99"):
        target = Target("max_ratio", 1.0) if pct == "p50" else None
        metric = f"round trip {pct}, in-cluster submit+result"
        ours = _pct(trips.client if trips else None, pct)
        rows.append(Row(metric, "ms", ours, celery_aof, lat("celery_aof", pct), target))
        rows.append(Row(metric, "ms", ours, celery, lat("celery", pct), target))
        rows.append(Row(metric, "ms", ours, "Ray actor call", lat("ray_actor_pool", pct)))
        one_call = _pct(raw.get("one_call"), pct)
        rows.append(Row(f"round trip {pct}, JobQueue.runsync actor call", "ms", one_call, celery_aof,
                        lat("celery_aof", pct)))  # fmt: skip
        runsync = _pct(raw.get("runsync"), pct)
        rows.append(
            Row(f"round trip {pct}, HTTP runsync", "ms", runsync, celery_aof, lat("celery_aof", pct), target)
        )
        for part, label in (("server", "createdAt->finishedAt"), ("delay", "createdAt->startedAt"),
                            ("execution", "startedAt->finishedAt")):  # fmt: skip
            value = _pct(getattr(trips, part) if trips else None, pct)
            rows.append(Row(f"idle job latency {pct}, {label}", "ms", value))
    return rows


# ---------------------------------------------------------------------------------------------------------


def print_notes(raw: dict[str, Any]) -> None:
    """What sits under the table: durability, start-up, replicas, submit shares, profiles."""
    for key in ("durability", "ripple_up_s", "workers"):
        if key in raw:
            print(f"{key}: {raw[key]}")
    tputs = {key: raw[key] for key in ("in_cluster", "run_batch") if key in raw}
    tputs.update({k: r.throughput for k, r in raw.get("peers", {}).items() if r.throughput})
    for name, tput in tputs.items():
        print(f"{name}: submitting took {tput.submit_s:.2f} s of {tput.elapsed_s:.2f} s")
    for key in ("profile_burst", "profile_round_trips"):
        if key in raw:
            print(raw[key])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 jobs and 50 round trips")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput run (default 10,000)")
    parser.add_argument("--samples", type=int, default=None, help="sequential round trips (default 200)")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--no-profile", action="store_true", help="never attach py-spy")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, profiles)")
    args = parser.parse_args(argv)
    jobs = args.jobs or (1_000 if args.quick else 10_000)
    samples = args.samples or (50 if args.quick else 200)
    raw: dict[str, Any] = {}
    with bench_session("incluster", keep=args.keep) as session:
        raw["peers"] = {} if args.skip_peers else run_peers(jobs, samples, session.workdir)
        run_ripple(jobs, samples, session.workdir, not args.no_profile, raw)
    if session.interrupted:
        return 130
    print()
    print(
        f"Ripple worker pools vs peers: {jobs:,} no-op jobs, {samples} round trips, "
        f"{session.elapsed_s():.0f} s; {session.load_before} before, {load_average()} after"
    )
    print(format_table(build_rows(raw, raw.get("peers", {}))))
    print_notes(raw)
    return session.finish()


if __name__ == "__main__":
    sys.exit(main())
