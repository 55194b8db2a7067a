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
from bench.common import percentile, wait_until
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

    def parts(self) -> str:
        """p50 of each part of the wait: created -> scale-up decided -> replica ready -> job started."""
        out = []
        for label, values in (
            ("created -> scale-up decided", [r.to_decision_s for r in self.runs]),
            ("decided -> replica ready (init included)", [r.to_ready_s for r in self.runs]),
            ("of which decided -> creation task at a worker process", [r.to_creation_s for r in self.runs]),
            ("replica ready -> job started", [r.ready_to_start_s for r in self.runs]),
        ):
            known = [v for v in values if v is not None]
            out.append(f"{label} {percentile(known, 50):.2f}" if known else f"{label} ?")
        return "; ".join(out)


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


def _job(
    instance: RippleInstance, http: Any, job_id: str, timeout_s: float
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Follow a job of HIGH until it is final; it and the worker that took it (read while listed)."""
    worker: dict[str, Any] | None = None
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        job: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}").json()
        if job.get("workerId") and worker is None:
            listed = [w for w in instance.workers(http, HIGH) if w["workerId"] == job["workerId"]]
            worker = listed[0] if listed else None
        if job.get("status") in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return job, worker
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} not finished within {timeout_s:.0f} s")


@dataclass(frozen=True)
class PreemptionRun:
    """One preemption, seconds from the high-priority job's createdAt (app timestamps; None when the
    history or the worker listing did not show the step)."""

    to_start_s: float  # job started
    to_drain_s: float | None  # the lo replica's drain decided (history of lo, preempted_by hi)
    to_scale_up_s: float | None  # hi's scale-up decided (history of hi)
    to_ready_s: float | None  # hi's replica ready (its startedAt: constructor and handler import done)


@dataclass
class Preemptions:
    """Every preemption run, and why a run could not be done."""

    runs: list[PreemptionRun] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def to_start_s(self) -> list[float]:
        return [run.to_start_s for run in self.runs]

    def parts(self) -> str:
        """Per run: created -> drain decided -> hi scale-up decided -> hi replica ready -> job started."""

        def fmt(value: float | None) -> str:
            return "?" if value is None else f"{value:.2f}"

        return "; ".join(
            f"drain {fmt(r.to_drain_s)}, scale-up {fmt(r.to_scale_up_s)}, ready {fmt(r.to_ready_s)}, "
            f"started {r.to_start_s:.2f}"
            for r in self.runs
        )


def _first_at(http: Any, endpoint: str, after_ms: int, match: Callable[[dict[str, Any]], bool]) -> int | None:
    """The earliest history entry of endpoint at or after after_ms (50 ms of clock slack) that matches."""
    history = http.get(f"/api/v1/autoscaler/history/{endpoint}", params={"limit": 50}).json()["history"]
    found = [int(h["at"]) for h in history if int(h["at"]) >= after_ms - 50 and match(h)]
    return min(found) if found else None


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

            def low_holds_all() -> bool:
                """lo holds both GPUs with replicas that have no job (the queue's counts are the truth: a
                worker listing's state lags by up to a heartbeat); while it has fewer than two and no
                work, give it two 2 s jobs (with one replica the second queues, so it scales up)."""
                jobs = http.get(f"/v2/{LOW}/health").json()["jobs"]
                if jobs["inQueue"] or jobs["inProgress"]:
                    return False
                serving = [w for w in _live(instance, http, LOW) if not w["draining"]]
                if len(serving) == 2 and _gpus_free() == 0:
                    return True
                for _ in range(2):
                    http.post(f"/v2/{LOW}/run", json={"input": {"sleep_s": 2.0}}).raise_for_status()
                return False

            if not wait_until(low_holds_all, 120, 0.2):
                out.failures.append(f"run {k + 1}: {LOW} did not come to hold both GPUs idle within 120 s")
                break
            time.sleep(1.5)  # the pool's view of its replicas (refreshed every pool tick) shows them idle
            reply = http.post(f"/v2/{HIGH}/run", json={"input": {"x": 1}})
            reply.raise_for_status()
            try:
                job, worker = _job(instance, http, reply.json()["id"], 90)
            except RuntimeError as exc:
                out.failures.append(f"run {k + 1}: {exc}")
                break
            if job["status"] != "COMPLETED":
                out.failures.append(f"run {k + 1}: {job['status']}")
                break
            created_ms = int(job["createdAt"])

            def since(at_ms: int | None, created_ms: int = created_ms) -> float | None:
                return None if at_ms is None else (at_ms - created_ms) / 1000

            drained = _first_at(
                http, LOW, created_ms, lambda h: h.get("kind") == "drain" and h.get("preempted_by") == HIGH
            )
            scaled = _first_at(http, HIGH, created_ms, lambda h: h.get("kind") == "scale_up")
            run = PreemptionRun(
                to_start_s=(int(job["startedAt"]) - created_ms) / 1000,
                to_drain_s=since(drained),
                to_scale_up_s=since(scaled),
                to_ready_s=since(int(worker["startedAt"])) if worker and worker.get("startedAt") else None,
            )
            out.runs.append(run)
            log(f"[ripple] preemption run {k + 1}: {HIGH} job started {run.to_start_s:.2f} s after submit")
    finally:
        for name in (HIGH, LOW):
            http.delete(f"/api/v1/endpoints/{name}")
    return out
