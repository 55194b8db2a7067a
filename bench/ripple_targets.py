"""Ripple's side of the peer report (bench/peers_report.py), on one running instance with 2 logical GPUs:
scale from zero including the first job after an endpoint is created, and preemption.

- Scale from zero: `bench.scale_from_zero`'s endpoint (1 GPU a replica, minReplicas 0, handler
  `bench.slow_init_handler:handle` whose import sleeps a known time, subtracted as the replica's
  `coldStartS`). The first job is sent the moment `POST /api/v1/endpoints` has answered (its pool actor
  may not exist yet); the others each after the endpoint has scaled back down to no replica.
- Preemption: `lo` (priority 10) holds both GPUs with idle replicas (two 1 s jobs brought it to 2 replicas,
  scaleDownIdleTime 300); one job to `hi` (priority 90, no replica, handler `bench.noop_handler:noop`, no
  init): its createdAt -> startedAt is the figure (an idle `lo` replica is drained, its GPU goes to a new
  `hi` replica, which takes the job).

Timings come from the app's own millisecond timestamps (GET /api/v1/jobs/{id}).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import scale_from_zero
from bench.common import wait_until
from bench.ripple_instance import RippleInstance

LOW, HIGH = "lo", "hi"


def _endpoint(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name, "gpus": 1, "cpus": 0, "concurrency": 1, "minReplicas": 0,
        "scaleUpCooldown": 0, "scaleDownCooldown": 0, **fields,
    }  # fmt: skip


LOW_SPEC = _endpoint(
    LOW, handler="bench.sleep_handler:handle", priority=10, maxReplicas=2, scaleDownIdleTime=300
)
HIGH_SPEC = _endpoint(
    HIGH, handler="bench.noop_handler:noop", priority=90, maxReplicas=1, scaleDownIdleTime=1
)


@dataclass
class ColdStarts:
    """Ripple's scale from zero: each run's job start - created - handler init, the first one sent right
    after the endpoint was created."""

    runs: list[scale_from_zero.ColdRun] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def overhead_s(self) -> list[float]:
        return [run.overhead_s for run in self.runs]


def cold_starts(
    instance: RippleInstance, http: Any, runs: int, gpus: float = 1.0, log: Callable[[str], None] = print
) -> ColdStarts:
    """Create the cold endpoint and send its first job at once, then `runs - 1` more from zero; the endpoint
    is deleted after."""
    out = ColdStarts()
    instance.create_endpoint(http, scale_from_zero.spec(gpus))
    try:
        for k in range(runs):
            try:
                run = (
                    scale_from_zero.time_one_job(instance, http)
                    if k == 0
                    else scale_from_zero.one_run(instance, http)
                )
            except RuntimeError as exc:
                out.failures.append(f"run {k + 1}: {exc}")
                break
            out.runs.append(run)
            log(
                f"[ripple] scale from zero run {k + 1}: {run.overhead_s:.2f} s beyond init "
                f"({run.init_s:.2f} s)"
            )
    finally:
        http.delete(f"/api/v1/endpoints/{scale_from_zero.ENDPOINT}")
    return out


def _live(instance: RippleInstance, http: Any, endpoint: str) -> list[dict[str, Any]]:
    return [w for w in instance.workers(http, endpoint) if w["kind"] == "ray" and w["state"] != "stopped"]


def _gpus_free() -> float:
    import ray

    return float(ray.available_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]


def _job(http: Any, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        job: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}").json()
        if job.get("status") in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return job
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} not finished within {timeout_s:.0f} s")


@dataclass
class Preemptions:
    """createdAt -> startedAt of the high-priority job, per run."""

    to_start_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def preemptions(
    instance: RippleInstance, http: Any, runs: int, log: Callable[[str], None] = print
) -> Preemptions:
    """`runs` times: let `lo` hold both GPUs with idle replicas, then one job to `hi`. The driver must be
    connected to the instance's Ray (GPUs free are read from it). Both endpoints are deleted after."""
    out = Preemptions()
    instance.create_endpoint(http, LOW_SPEC)
    instance.create_endpoint(http, HIGH_SPEC)
    try:
        for k in range(runs):
            if not wait_until(lambda: not _live(instance, http, HIGH), 60, 0.2):
                out.failures.append(f"run {k + 1}: {HIGH} did not scale down to zero within 60 s")
                break
            for _ in range(3):
                http.post(f"/v2/{LOW}/run", json={"input": {"sleep_s": 1.0}}).raise_for_status()

            def low_holds_all() -> bool:
                idle = [w for w in _live(instance, http, LOW) if w["state"] == "idle" and not w["draining"]]
                return len(idle) == 2 and _gpus_free() == 0

            if not wait_until(low_holds_all, 120, 0.2):
                out.failures.append(f"run {k + 1}: {LOW} did not come to hold both GPUs idle within 120 s")
                break
            reply = http.post(f"/v2/{HIGH}/run", json={"input": {"x": 1}})
            reply.raise_for_status()
            try:
                job = _job(http, reply.json()["id"], 90)
            except RuntimeError as exc:
                out.failures.append(f"run {k + 1}: {exc}")
                break
            if job["status"] != "COMPLETED":
                out.failures.append(f"run {k + 1}: {job['status']}")
                break
            out.to_start_s.append((int(job["startedAt"]) - int(job["createdAt"])) / 1000)
            log(
                f"[ripple] preemption run {k + 1}: {HIGH} job started {out.to_start_s[-1]:.2f} s after submit"
            )
    finally:
        for name in (HIGH, LOW):
            http.delete(f"/api/v1/endpoints/{name}")
    return out
