"""Scale from zero: how long the first job waits for a replica when its endpoint has none, minus the
handler's own initialisation.

    python bench/scale_from_zero.py [--runs K] [--init-s 0.5] [--keep]

Starts Ripple (`ripple up --detach`, 2 logical GPUs) and an endpoint with minReplicas 0 whose handler
(`bench.slow_init_handler:handle`) sleeps a known time at import, reported as the replica's coldStartS. K
times: wait until the endpoint has no replica, submit one job with POST /v2/{ep}/run, wait for it, and read
GET /api/v1/jobs/{id} (createdAt, startedAt), GET /api/v1/endpoints/{ep}/workers (the replica's coldStartS
and startedAt, the end of its handler import) and GET /api/v1/autoscaler/history/{ep} (the scale-up's 'at').

Per run: startedAt - createdAt - coldStartS, and its parts: job created -> scale-up decided -> replica ready
(handler imported) -> job started. The peer is plain Ray on the same head: a new actor with the same
resources that imports the same module, from `.remote()` to the answer of its first call, minus the import.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench.common import (  # noqa: E402
    Row,
    Target,
    bench_session,
    format_table,
    load_average,
    percentile,
    wait_until,
)
from bench.profile_actor import record  # noqa: E402
from bench.ripple_instance import RippleInstance  # noqa: E402

ENDPOINT = "cold"
INIT_ENV = "RIPPLE_BENCH_INIT_S"


@dataclass(frozen=True)
class ColdRun:
    """One scale from zero, every time in seconds (from the app's millisecond timestamps)."""

    wait_s: float  # job startedAt - createdAt
    init_s: float  # the replica's coldStartS (its handler import)
    to_decision_s: float | None  # createdAt -> the first scale-up decided after it
    to_ready_s: float | None  # decision -> replica ready (its startedAt: handler imported), init included
    ready_to_start_s: float  # replica ready -> job startedAt
    # From the replica process's Ray core worker log (None when it could not be read):
    to_creation_s: float | None = None  # decision -> the actor creation task reaches a worker process
    creation_s: float | None = None  # creation task received -> finished (class load, __init__, init)
    process_ready_before: bool | None = None  # the worker process was up before the decision (warm)

    @property
    def overhead_s(self) -> float:
        return self.wait_s - self.init_s


def spec(gpus: float) -> dict[str, Any]:
    """The endpoint: minReplicas 0, maxReplicas 1, scale down after 1 s idle, no cooldowns."""
    return {
        "name": ENDPOINT,
        "handler": "bench.slow_init_handler:handle",
        "gpus": gpus,
        "cpus": 0,
        "concurrency": 1,
        "minReplicas": 0,
        "maxReplicas": 1,
        "scaleDownIdleTime": 1,
        "scaleUpCooldown": 0,
        "scaleDownCooldown": 0,
    }


def _live_replicas(instance: RippleInstance, http: Any) -> list[dict[str, Any]]:
    return [w for w in instance.workers(http, ENDPOINT) if w["kind"] == "ray" and w["state"] != "stopped"]


def one_run(instance: RippleInstance, http: Any, timeout_s: float = 120.0) -> ColdRun:
    """Wait for zero replicas, then one job from submission to completion; its timings."""
    if not wait_until(lambda: not _live_replicas(instance, http), 120, interval_s=0.2):
        raise RuntimeError("the endpoint did not scale down to zero within 120 s")
    time.sleep(0.5)  # let the pool settle after the last replica left
    return time_one_job(instance, http, timeout_s)


def time_one_job(instance: RippleInstance, http: Any, timeout_s: float = 120.0) -> ColdRun:
    """Submit one job to the endpoint now (POST /run) and follow it to completion; its timings."""
    reply = http.post(f"/v2/{ENDPOINT}/run", json={"input": {"x": 1}})
    reply.raise_for_status()
    job_id = reply.json()["id"]
    worker: dict[str, Any] | None = None
    replica: tuple[int, Path | None] | None = None  # (pid, Ray logs dir) of the replica that took it
    job: dict[str, Any] = {}
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        job = http.get(f"/api/v1/jobs/{job_id}").json()
        if job.get("workerId") and worker is None:  # read the replica before it scales down again
            replica = _newest_replica(instance)
            worker = next(
                (w for w in instance.workers(http, ENDPOINT) if w["workerId"] == job["workerId"]), None
            )
        if job.get("status") == "COMPLETED":
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"job {job_id} not completed within {timeout_s:.0f} s: {job}")
    if worker is None:
        raise RuntimeError(f"replica {job.get('workerId')} not listed")
    history = http.get(f"/api/v1/autoscaler/history/{ENDPOINT}", params={"limit": 50}).json()["history"]
    created_ms, started_ms = int(job["createdAt"]), int(job["startedAt"])
    ups = [h["at"] for h in history if h.get("kind") == "scale_up" and h["at"] >= created_ms - 50]
    decided_ms = min(ups) if ups else None
    ready_ms = int(worker["startedAt"])
    marks = _core_worker_marks(*replica) if replica else {}
    decided_s = decided_ms / 1000 if decided_ms is not None else None
    return ColdRun(
        wait_s=(started_ms - created_ms) / 1000,
        init_s=float(worker["coldStartS"]),
        to_decision_s=(decided_ms - created_ms) / 1000 if decided_ms is not None else None,
        to_ready_s=(ready_ms - decided_ms) / 1000 if decided_ms is not None else None,
        ready_to_start_s=(started_ms - ready_ms) / 1000,
        to_creation_s=_minus(marks.get("creating"), decided_s),
        creation_s=_minus(marks.get("created"), marks.get("creating")),
        process_ready_before=(
            marks["constructed"] < decided_s if "constructed" in marks and decided_s is not None else None
        ),
    )


def _minus(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _newest_replica(instance: RippleInstance) -> tuple[int, Path | None] | None:
    """(pid, Ray logs dir) of the newest WorkerReplica process (an older one is a replica leaving)."""
    procs = instance.actor_processes()["WorkerReplica"]
    if not procs:
        return None
    proc = max(procs, key=lambda p: p.create_time())
    try:  # a Ray worker's stdout is its log file in <session>/logs
        return proc.pid, Path(os.readlink(f"/proc/{proc.pid}/fd/1")).parent
    except OSError:
        return proc.pid, None


_MARKS = {
    "constructed": "Constructing CoreWorkerProcess",
    "creating": "Creating actor",
    "created": "Actor creation task finished",
}


def _core_worker_marks(pid: int, logs_dir: Path | None) -> dict[str, float]:
    """When (epoch s) the replica's core worker was constructed, received and finished its creation
    task, from `python-core-worker-*_<pid>.log` (lines start `[YYYY-mm-dd HH:MM:SS,mmm ...`, local time)."""
    if logs_dir is None:
        return {}
    out: dict[str, float] = {}
    for path in logs_dir.glob(f"python-core-worker-*_{pid}.log"):
        for line in path.read_text(errors="replace").splitlines():
            for key, text in _MARKS.items():
                if key not in out and text in line:
                    with contextlib.suppress(ValueError):
                        out[key] = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return out


def plain_ray_actor_starts(runs: int, gpus: float) -> list[float]:
    """A new actor (same resources) importing the handler module: .remote() to its first answer, minus
    the import, `runs` times (each actor killed after)."""
    import ray

    @ray.remote
    class Cold:
        def __init__(self) -> None:
            start_s = time.perf_counter()
            import bench.slow_init_handler  # noqa: F401

            self.init_s = time.perf_counter() - start_s

        def init(self) -> float:
            return self.init_s

    out = []
    for _ in range(runs):
        start_s = time.perf_counter()
        actor = Cold.options(num_gpus=gpus, num_cpus=0).remote()  # type: ignore[attr-defined]
        init_s = float(ray.get(actor.init.remote(), timeout=120))
        out.append(time.perf_counter() - start_s - init_s)
        ray.kill(actor)
        time.sleep(1.0)
    return out


def tick_parts(instance: RippleInstance, repeats: int = 5) -> dict[str, float]:
    """Median milliseconds of an autoscaler tick called from the driver, and of the calls a tick makes
    (the same actor methods, and the same GCS reads of GPUs), each timed alone with the endpoint idle."""
    import ray

    from orchestrator.names import AUTOSCALER_NAME, get_actor, pool_name

    namespace = instance.state.get("namespace", "ripple")
    queue = instance.queue()
    autoscaler = get_actor(AUTOSCALER_NAME, namespace)
    pool = get_actor(pool_name(ENDPOINT), namespace)
    calls = {
        "Autoscaler.tick (whole)": lambda: ray.get(autoscaler.tick.remote()),
        "JobQueue.endpoint_specs": lambda: ray.get(queue.endpoint_specs.remote()),
        "JobQueue.stats": lambda: ray.get(queue.stats.remote()),
        "WorkerPool.summary": lambda: ray.get(pool.summary.remote()),
        "ray.cluster_resources + available_resources": lambda: (
            ray.cluster_resources(),  # type: ignore[no-untyped-call]
            ray.available_resources(),  # type: ignore[no-untyped-call]
        ),
        "ray.get_actor (as each queue notify does)": lambda: ray.get_actor(AUTOSCALER_NAME, namespace),
    }
    out = {}
    for name, call in calls.items():
        samples = []
        for _ in range(repeats):
            start_s = time.perf_counter()
            call()  # type: ignore[no-untyped-call]
            samples.append((time.perf_counter() - start_s) * 1000)
        out[name] = percentile(samples, 50)
    return out


def build_rows(runs: list[ColdRun], peer: list[float], parts_ms: dict[str, float]) -> list[Row]:
    """p50 and max of the overhead, against plain Ray; the parts of the wait at p50."""

    def stat(values: list[float], how: str) -> float | None:
        if not values:
            return None
        return percentile(values, 50) if how == "p50" else max(values)

    overhead = [r.overhead_s for r in runs]
    rows = [
        Row(f"scale from zero {how}: job start - created - init", "s", stat(overhead, how),
            "plain Ray actor start", stat(peer, how), Target("max", 1.0))
        for how in ("p50", "max")
    ]  # fmt: skip
    parts = (
        ("job created -> scale-up decided", [r.to_decision_s for r in runs]),
        ("decided -> replica ready (init included)", [r.to_ready_s for r in runs]),
        ("handler init (coldStartS)", [r.init_s for r in runs]),
        ("  decided -> creation task at a worker process", [r.to_creation_s for r in runs]),
        ("  creation task: class load + __init__ (init included)", [r.creation_s for r in runs]),
        ("replica ready -> job started", [r.ready_to_start_s for r in runs]),
        ("job created -> started", [r.wait_s for r in runs]),
    )
    for label, values in parts:
        known = [v for v in values if v is not None]
        rows.append(Row(f"p50 {label}", "s", stat(known, "p50")))
    warm = [r.process_ready_before for r in runs if r.process_ready_before is not None]
    rows.append(Row("runs whose worker process was up before the decision", "runs", float(sum(warm))))
    for name, ms in parts_ms.items():
        rows.append(Row(f"idle, p50 of 5: {name}", "ms", ms))
    return rows


class Results:
    """What one invocation measured (kept when a later step fails)."""

    def __init__(self) -> None:
        self.runs: list[ColdRun] = []
        self.peer: list[float] = []
        self.parts_ms: dict[str, float] = {}
        self.profiles: list[str] = []


def measure(instance: RippleInstance, args: argparse.Namespace, workdir: Path, out: Results) -> None:
    """Every measurement against a started instance, into out."""
    with instance.http() as http:
        instance.create_endpoint(http, spec(args.gpus))
        with contextlib.ExitStack() as stack:
            recordings = []
            if args.profile:
                wait_until(lambda: bool(instance.actor_processes()["WorkerPool"]), 60)
                procs = instance.actor_processes()
                for name in ("Autoscaler", "WorkerPool"):
                    for proc in procs[name][:1]:
                        path = workdir / f"profile-{name}.txt"
                        recordings.append((name, stack.enter_context(record(proc.pid, path, wall=True))))
            for k in range(args.runs):
                out.runs.append(one_run(instance, http))
                print(f"[cold] run {k + 1}: {out.runs[-1]}", flush=True)
        for name, rec in recordings:
            out.profiles.append(rec.summary.format(name) if rec.summary else f"{name}: {rec.error}")
    instance.connect_ray()
    out.parts_ms = tick_parts(instance)
    if not args.skip_peer:
        out.peer = plain_ray_actor_starts(args.runs, args.gpus)
        print(f"[cold] plain Ray actor starts minus init: {[round(p, 3) for p in out.peer]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=8, help="scale-ups from zero (default 8)")
    parser.add_argument("--init-s", type=float, default=0.5, help="handler import time (default 0.5 s)")
    parser.add_argument("--gpus", type=float, default=1.0, help="logical GPUs per replica (default 1)")
    parser.add_argument("--skip-peer", action="store_true", help="no plain Ray actor starts")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy (wall clock) on the Autoscaler and the pool"
    )
    args = parser.parse_args(argv)
    os.environ[INIT_ENV] = str(args.init_s)  # inherited by the Ray head, so by the replicas
    out = Results()
    with bench_session("cold", keep=args.keep) as session:
        instance = RippleInstance(session.workdir)
        session.on_exit(instance.stop)
        print("[cold] ripple up ...", flush=True)
        instance.start()
        measure(instance, args, session.workdir, out)
    if session.interrupted:
        return 130
    print()
    print(
        f"Scale from zero: {len(out.runs)} runs, handler init {args.init_s} s, {args.gpus:g} logical GPU "
        f"per replica, {session.elapsed_s():.0f} s; {session.load_before} before, {load_average()} after"
    )
    print(format_table(build_rows(out.runs, out.peer, out.parts_ms)))
    if out.runs:
        print("first run (no warm worker process yet):", out.runs[0])
    for text in out.profiles:
        print(text)
    return session.finish()


if __name__ == "__main__":
    sys.exit(main())
