"""A rolling update under load: an endpoint serving a steady stream of short jobs, rolled from v1 to v2.

    python bench/rollout.py [--rate 20] [--job-ms 100] [--replicas 2] [--concurrency 4]
                            [--before-s 10] [--after-s 10] [--scenario surge|no-spare|both]

Starts its own embedded Redis and local Ray (logical GPUs, 2 per replica wanted so both scenarios fit) and
Ripple's control actors with the autoscaler off (``minReplicas`` sets the size). For each scenario, an
endpoint of ``--replicas`` replicas running ``bench.rollout_handler:v1`` takes ``--rate`` jobs/s of
``--job-ms`` ms (submitted in-cluster, every 100 ms); after ``--before-s`` its handler changes to ``:v2``,
and the load goes on until ``--after-s`` after the rollout finished. Scenarios:

- ``surge``: 1 GPU per replica, as many GPUs spare: v2 replicas start beside v1's, v1's drain once replaced;
- ``no-spare``: 2 GPUs per replica filling the cluster: one v1 replica drains at a time to make room.

Reported per scenario: rollout time (update to every replica on v2), jobs failed, lost (not final 60 s after
the load stopped) and run twice (attempts > 1): all must be 0; jobs submitted after the rollout that v1
ran (must be 0); p50/p99 job latency (createdAt -> finishedAt) of the jobs submitted before, during and
after the rollout; and the extra GPU-seconds the surge held (GPUs Ray has allocated, this endpoint being
the cluster's only one, above replicas x GPUs per replica, integrated over the rollout, sampled every
100 ms; logical GPUs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402

from actors.bootstrap import ensure_control_actors  # noqa: E402
from bench.common import percentile  # noqa: E402
from orchestrator.auth import AuthConfig  # noqa: E402
from orchestrator.boot import boot_config  # noqa: E402
from orchestrator.config import load_settings  # noqa: E402
from orchestrator.core.models import EndpointPatch, EndpointSpec, RunRequest  # noqa: E402
from orchestrator.names import QUEUE_NAME, pool_name  # noqa: E402
from orchestrator.ops import embedded_redis  # noqa: E402

FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}
HANDLER = "bench.rollout_handler"


@dataclass(frozen=True)
class Scenario:
    name: str
    gpus_per_replica: float


@dataclass
class Result:
    scenario: str
    rollout_s: float
    submitted: int
    failed: int
    lost: int
    twice: int
    v1_after: int
    extra_gpu_s: float
    phases: dict[str, tuple[int, float, float]]  # phase -> (jobs, p50 ms, p99 ms)


class Load:
    """Submits ``rate`` jobs/s every 100 ms from a thread; remembers (submit time, id)."""

    def __init__(self, queue: Any, endpoint: str, rate: float, job_s: float) -> None:
        self.queue, self.endpoint, self.rate, self.job_s = queue, endpoint, rate, job_s
        self.ids: list[tuple[float, str]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        owed, last = 0.0, time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            owed += (now - last) * self.rate
            last = now
            n = int(owed)
            if n:
                owed -= n
                reqs = [RunRequest(input={"sleep_s": self.job_s}) for _ in range(n)]
                at = time.time()
                try:
                    ids = ray.get(self.queue.submit.remote(self.endpoint, reqs), timeout=30)
                    self.ids += [(at, i) for i in ids]
                except Exception:
                    self.errors += n
            self._stop.wait(0.1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _summary(namespace: str, endpoint: str) -> dict[str, Any]:
    try:
        pool = ray.get_actor(pool_name(endpoint), namespace=namespace)
        return dict(ray.get(pool.summary.remote(), timeout=30))
    except (ValueError, ray.exceptions.RayActorError):  # no pool (yet, or any more)
        return {"replicas": []}


def _serving(s: dict[str, Any], version: int, n: int) -> bool:
    rs = s.get("replicas", [])
    ro = s.get("rollout") or {}
    return (
        len(rs) == n
        and all(r["state"] in ("idle", "busy") and r.get("version") == version for r in rs)
        and ro.get("stable") == version
    )


def _wait(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


def _jobs(queue: Any, ids: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k in range(0, len(ids), 500):
        out += ray.get([queue.get_job.remote(i) for i in ids[k : k + 500]], timeout=120)
    return out


def run_scenario(queue: Any, namespace: str, sc: Scenario, args: argparse.Namespace) -> Result:
    endpoint = f"roll-{sc.name}"
    d = args.replicas
    spec = EndpointSpec(
        name=endpoint,
        handler=f"{HANDLER}:v1",
        gpus=sc.gpus_per_replica,
        cpus=0,
        concurrency=args.concurrency,
        min_replicas=d,
        max_replicas=2 * d,
        max_retries=0,
    )
    ray.get(queue.create_endpoint.remote(spec))
    _wait(lambda: _serving(_summary(namespace, endpoint), 1, d), 180, f"{endpoint}: v1 on {d} replicas")
    load = Load(queue, endpoint, args.rate, args.job_ms / 1000)
    load.start()
    time.sleep(args.before_s)
    t_update = time.time()
    ray.get(queue.update_endpoint.remote(endpoint, EndpointPatch(handler=f"{HANDLER}:v2")))
    total_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    extra_gpu_s, last = 0.0, time.monotonic()
    while True:
        s = _summary(namespace, endpoint)
        now = time.monotonic()
        held = total_gpus - float(ray.available_resources().get("GPU", 0.0))
        extra_gpu_s += max(0.0, held - d * sc.gpus_per_replica) * (now - last)
        last = now
        if _serving(s, 2, d):
            break
        if time.time() - t_update > 300:
            raise TimeoutError(f"{endpoint}: rollout not done after 300 s: {s}")
        time.sleep(0.1)
    t_done = time.time()
    time.sleep(args.after_s)
    load.stop()
    ids = [i for _, i in load.ids]
    deadline = time.monotonic() + 60
    jobs = _jobs(queue, ids)
    while any(j["status"] not in FINAL for j in jobs) and time.monotonic() < deadline:
        time.sleep(1)
        jobs = _jobs(queue, ids)
    phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    v1_after = 0
    for (at, _), j in zip(load.ids, jobs, strict=True):
        phase = "before" if at < t_update else "during" if at <= t_done else "after"
        if j["status"] == "COMPLETED":
            phases[phase].append(float(j["finishedAt"] - j["createdAt"]))
            if phase == "after" and (j.get("output") or {}).get("handler") != "v2":
                v1_after += 1
    ray.get(queue.delete_endpoint.remote(endpoint))
    _wait(lambda: not _summary(namespace, endpoint)["replicas"], 120, f"{endpoint}: replicas gone")
    return Result(
        scenario=sc.name,
        rollout_s=t_done - t_update,
        submitted=len(jobs) + load.errors,
        failed=sum(1 for j in jobs if j["status"] in FINAL and j["status"] != "COMPLETED") + load.errors,
        lost=sum(1 for j in jobs if j["status"] not in FINAL),
        twice=sum(1 for j in jobs if int(j.get("attempts") or 0) > 1),
        v1_after=v1_after,
        extra_gpu_s=extra_gpu_s,
        phases={
            k: (len(v), percentile(v, 50) if v else float("nan"), percentile(v, 99) if v else float("nan"))
            for k, v in phases.items()
        },
    )


def table(results: list[Result], args: argparse.Namespace) -> str:
    head = (
        f"{args.rate:g} jobs/s of {args.job_ms:g} ms, {args.replicas} replicas x concurrency "
        f"{args.concurrency}; latency = createdAt -> finishedAt"
    )
    cols = ["scenario", "rollout s", "jobs", "failed", "lost", "run twice", "v1 after", "extra GPU-s"]
    cols += [f"{p} p50/p99 ms" for p in ("before", "during", "after")]
    rows = []
    for r in results:
        row = [r.scenario, f"{r.rollout_s:.1f}", str(r.submitted), str(r.failed), str(r.lost), str(r.twice)]
        row += [str(r.v1_after), f"{r.extra_gpu_s:.1f}"]
        row += [f"{p50:.0f}/{p99:.0f} (n={n})" for n, p50, p99 in r.phases.values()]
        rows.append(row)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = [head, " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--rate", type=float, default=20.0, help="jobs per second (the issue's 50 needs more cores)"
    )
    ap.add_argument("--job-ms", type=float, default=100.0)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--before-s", type=float, default=10.0)
    ap.add_argument("--after-s", type=float, default=10.0)
    ap.add_argument("--scenario", choices=["surge", "no-spare", "both"], default="both")
    ap.add_argument("--num-cpus", type=int, default=4)
    args = ap.parse_args()
    scenarios = [Scenario("surge", 1.0), Scenario("no-spare", 2.0)]
    if args.scenario != "both":
        scenarios = [s for s in scenarios if s.name == args.scenario]

    data_dir = Path(tempfile.mkdtemp(prefix="ripple-bench-rollout-"))
    server = embedded_redis.start(data_dir, detach=False)
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    ray.init(
        address="local",
        namespace=namespace,
        num_cpus=args.num_cpus,
        num_gpus=2 * args.replicas,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
    )
    try:
        settings = load_settings(
            namespace=namespace,
            key_prefix=f"{namespace}:",
            data_dir=data_dir,
            autoscaler={"enabled": False, "interval_s": 1.0},
            take_wait_s=1.0,
            drain_timeout_s=60.0,
        )
        boot = boot_config(settings, server.url, True, AuthConfig(enabled=False))
        queue = ensure_control_actors(boot, timeout_s=120.0)[QUEUE_NAME]
        results = [run_scenario(queue, namespace, sc, args) for sc in scenarios]
    finally:
        ray.shutdown()
        embedded_redis.stop(data_dir)
    print(table(results, args))
    bad = [r for r in results if r.failed or r.lost or r.twice or r.v1_after]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
