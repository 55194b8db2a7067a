"""Replay arrival traces through the real ``decide()`` with a simulated clock; compare keep-alive policies.

    python bench/simulate.py                 # synthetic traces: learned vs fixed 10 s, 60 s, 5 min, 10 min
    python bench/simulate.py --per-endpoint  # one row per endpoint as well
    python bench/simulate.py --azure invocations_per_function_md.anon.d01.csv --azure-top 5

The simulation is event driven: arrivals, replica ready, job done, plus a tick every ``--tick-s`` (1 s);
after each instant's events it dispatches queued jobs FIFO to ready replicas, builds a ``Snapshot``, calls
``decide()`` and applies the decisions at once (a new replica becomes ready after its cold start, about
the endpoint's nominal cold start plus or minus 20%; a drained replica stops when it holds no job).

Measures, per endpoint and trace: cold starts (jobs served by a replica that became ready after the job
arrived, i.e. jobs that waited for a start), queueing delay p50/p99, GPU-seconds held by replicas (from
start to stop, within the trace) and idle GPU-seconds (held but running no job, starting time included).
Randomness is seeded; the same command prints the same table.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.traces import EndpointTrace, Trace, load_azure_csv, synthetic_traces
from orchestrator.core.autoscale import (
    AutoscalerState,
    Drain,
    EndpointView,
    Prewarm,
    ReplicaView,
    ScaleUp,
    Snapshot,
    decide,
)


@dataclass(frozen=True)
class Policy:
    name: str
    keep_alive: str  # "fixed" | "learned"
    idle_s: float  # the fixed keep-alive, or the learned policy's fallback


POLICIES = (
    Policy("learned", "learned", 60.0),
    Policy("fixed-10s", "fixed", 10.0),
    Policy("fixed-60s", "fixed", 60.0),
    Policy("fixed-5m", "fixed", 300.0),
    Policy("fixed-10m", "fixed", 600.0),
)


@dataclass
class Result:
    """What one endpoint saw under one policy."""

    endpoint: str
    jobs: int = 0
    cold_starts: int = 0
    delays_s: list[float] = field(default_factory=list)
    gpu_s: float = 0.0
    busy_gpu_s: float = 0.0
    unserved: int = 0
    decide_calls: int = 0

    @property
    def idle_gpu_s(self) -> float:
        return self.gpu_s - self.busy_gpu_s


@dataclass
class _Replica:
    rid: str
    ep: int
    start_s: float
    ready_s: float
    state: str = "starting"
    jobs: int = 0
    idle_since_s: float | None = None
    busy_since_s: float = 0.0


_ARRIVAL, _READY, _DONE, _TICK = 0, 1, 2, 3


class Simulation:
    """One trace under one policy. ``run()`` returns a :class:`Result` per endpoint."""

    def __init__(self, trace: Trace, policy: Policy, *, tick_s: float = 1.0, seed: int = 11) -> None:
        self.trace, self.policy, self.tick_s = trace, policy, tick_s
        self.rng = random.Random(seed)
        self.events: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        n = len(trace.endpoints)
        self.queues: list[deque[tuple[float, int]]] = [deque() for _ in range(n)]
        self.running = [0] * n
        self.last_arrival: list[float | None] = [None] * n
        self.replicas: dict[str, _Replica] = {}
        self.by_ep: list[list[_Replica]] = [[] for _ in range(n)]
        self.results = [Result(e.name, jobs=len(e.arrivals_s)) for e in trace.endpoints]
        self.state = AutoscalerState()
        self.next_id = 0

    def _push(self, t: float, kind: int, a: int = 0, b: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, a, b))

    def run(self) -> list[Result]:
        for i, e in enumerate(self.trace.endpoints):
            for j, t in enumerate(e.arrivals_s):
                self._push(t, _ARRIVAL, i, j)
        self._push(0.0, _TICK)
        end_s = self.trace.duration_s
        while self.events:
            now = self.events[0][0]
            only_tick = True
            while self.events and self.events[0][0] <= now:
                _, _, kind, a, b = heapq.heappop(self.events)
                self._handle(now, kind, a, b)
                only_tick = only_tick and kind == _TICK
            if now > end_s and not any(self.queues) and not any(self.running):
                break
            self._dispatch(now)
            if not (only_tick and self._dormant()):
                self._decide(now)
        for r in list(self.replicas.values()):
            self._stop(r, max(end_s, 0.0))
        for i, q in enumerate(self.queues):
            self.results[i].unserved = len(q)
        return self.results

    def _handle(self, now: float, kind: int, a: int, b: int) -> None:
        if kind == _ARRIVAL:
            self.queues[a].append((now, b))
            self.last_arrival[a] = now
        elif kind == _READY:
            r = self.replicas.get(f"r{a}")
            if r is not None and r.state == "starting":
                r.state, r.idle_since_s = "idle", now
        elif kind == _DONE:
            r = self.replicas[f"r{a}"]
            r.jobs -= 1
            self.running[r.ep] -= 1
            if r.jobs == 0:
                self.results[r.ep].busy_gpu_s += self._gpr(r) * self._clip(r.busy_since_s, now)
                if r.state == "draining":
                    self._stop(r, now)
                else:
                    r.state, r.idle_since_s = "idle", now
        elif now < self.trace.duration_s + 7200:
            self._push(now + self.tick_s, _TICK)

    def _gpr(self, r: _Replica) -> float:
        return self.trace.endpoints[r.ep].gpus_per_replica

    def _clip(self, start_s: float, stop_s: float) -> float:
        return max(0.0, min(stop_s, self.trace.duration_s) - min(start_s, self.trace.duration_s))

    def _stop(self, r: _Replica, now: float) -> None:
        if r.jobs > 0:
            self.results[r.ep].busy_gpu_s += self._gpr(r) * self._clip(r.busy_since_s, now)
        self.results[r.ep].gpu_s += self._gpr(r) * self._clip(r.start_s, now)
        del self.replicas[r.rid]
        self.by_ep[r.ep].remove(r)

    def _dormant(self) -> bool:
        """True when a tick cannot change anything: no idle replica, nothing queued, no pre-warm due.

        (Skipping those ticks only saves time; the actor does the same by sleeping until an event.)
        """
        if any(self.queues) or any(r.state == "idle" for r in self.replicas.values()):
            return False
        for spec in self.trace.endpoints:
            mem = self.state.memory(spec.name)
            quiet = mem.quiet_since_s
            if quiet is not None and mem.released_for_s == quiet and mem.prewarmed_for_s != quiet:
                return False
        return True

    def _dispatch(self, now: float) -> None:
        for i, q in enumerate(self.queues):
            if not q:
                continue
            spec = self.trace.endpoints[i]
            for r in self.by_ep[i]:
                while q and r.state in ("idle", "busy") and r.jobs < spec.concurrency:
                    arrival, j = q.popleft()
                    res = self.results[i]
                    res.delays_s.append(now - arrival)
                    res.cold_starts += r.ready_s > arrival
                    if r.jobs == 0:
                        r.busy_since_s = now
                    r.jobs += 1
                    r.state, r.idle_since_s = "busy", None
                    self.running[i] += 1
                    self._push(now + spec.durations_s[j], _DONE, int(r.rid[1:]))

    def _view(self, i: int, spec: EndpointTrace, now: float) -> EndpointView:
        q = self.queues[i]
        reps = tuple(ReplicaView(r.rid, r.state, r.jobs, r.idle_since_s) for r in self.by_ep[i])  # type: ignore[arg-type]
        return EndpointView(
            spec.name,
            priority=spec.priority,
            max_replicas=spec.max_replicas,
            scale_down_idle_s=self.policy.idle_s,
            scale_up_cooldown_s=0.0,
            scale_down_cooldown_s=0.0,
            gpus_per_replica=spec.gpus_per_replica,
            concurrency=spec.concurrency,
            keep_alive=self.policy.keep_alive,  # type: ignore[arg-type]
            queued=len(q),
            running=self.running[i],
            oldest_queued_age_s=now - q[0][0] if q else None,
            replicas=reps,
            last_arrival_s=self.last_arrival[i],
            cold_start_s=spec.cold_start_s,
        )

    def _decide(self, now: float) -> None:
        eps = tuple(self._view(i, s, now) for i, s in enumerate(self.trace.endpoints))
        decisions, self.state = decide(Snapshot(now, eps, gpus_total=self.trace.gpus_total), self.state)
        self.results[0].decide_calls += 1
        index = {e.name: i for i, e in enumerate(self.trace.endpoints)}
        for d in decisions:
            i = index[d.endpoint]
            if isinstance(d, (ScaleUp, Prewarm)):
                spec = self.trace.endpoints[i]
                for _ in range(d.count):
                    self.next_id += 1
                    ready = now + spec.cold_start_s * self.rng.uniform(0.8, 1.2)
                    r = _Replica(f"r{self.next_id}", i, now, ready)
                    self.replicas[r.rid] = r
                    self.by_ep[i].append(r)
                    self._push(ready, _READY, self.next_id)
            elif isinstance(d, Drain):
                for rid in d.replica_ids:
                    r = self.replicas[rid]
                    if r.jobs == 0:
                        self._stop(r, now)
                    else:
                        r.state = "draining"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def total(results: list[Result]) -> Result:
    out = Result("all")
    for r in results:
        out.jobs += r.jobs
        out.cold_starts += r.cold_starts
        out.delays_s += r.delays_s
        out.gpu_s += r.gpu_s
        out.busy_gpu_s += r.busy_gpu_s
        out.unserved += r.unserved
        out.decide_calls += r.decide_calls
    return out


def _run_one(args: tuple[Trace, Policy, float]) -> tuple[str, str, list[Result]]:
    trace, policy, tick_s = args
    return trace.name, policy.name, Simulation(trace, policy, tick_s=tick_s).run()


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "  =" if a == 0 else "  inf"
    return f"{a / b:5.2f}"


def print_table(
    runs: dict[tuple[str, str], list[Result]], traces: list[Trace], per_endpoint: bool
) -> list[str]:
    """Print the comparison; returns the traces where the learned policy misses its target."""
    head = (
        f"{'trace':<10} {'endpoint':<12} {'policy':<10} {'jobs':>6} {'cold':>6} {'p50 s':>7} {'p99 s':>7} "
        f"{'idle GPU-s':>11} {'GPU-s':>9} {'cold L/F':>8} {'idle L/F':>8}"
    )
    print(head)
    print("-" * len(head))
    misses = []
    for trace in traces:
        names = ["all"] + (
            [e.name for e in trace.endpoints] if per_endpoint and len(trace.endpoints) > 1 else []
        )
        for name in names:
            rows = {}
            for p in POLICIES:
                res = runs[(trace.name, p.name)]
                rows[p.name] = total(res) if name == "all" else next(r for r in res if r.endpoint == name)
            learned = rows["learned"]
            for p in POLICIES:
                r = rows[p.name]
                ratios = (
                    ""
                    if p.name == "learned"
                    else (
                        f" {_ratio(learned.cold_starts, r.cold_starts):>8}"
                        f" {_ratio(learned.idle_gpu_s, r.idle_gpu_s):>8}"
                    )
                )
                print(
                    f"{trace.name:<10} {name:<12} {p.name:<10} {r.jobs:>6} {r.cold_starts:>6} "
                    f"{percentile(r.delays_s, 50):>7.2f} {percentile(r.delays_s, 99):>7.2f} "
                    f"{r.idle_gpu_s:>11.0f} {r.gpu_s:>9.0f}{ratios}"
                )
            if name == "all":
                rivals = [p.name for p in POLICIES[1:] if rows[p.name].idle_gpu_s <= learned.idle_gpu_s]
                beaten = all(learned.cold_starts < rows[n].cold_starts for n in rivals)
                if not beaten:
                    misses.append(trace.name)
                print(
                    f"{trace.name:<10} target: fewer cold starts than every fixed setting with <= idle GPU-s "
                    f"({', '.join(rivals) or 'none'}): {'met' if beaten else 'MISSED'}"
                )
        print()
    print("cold L/F, idle L/F: learned divided by that fixed setting (below 1: learned has less).")
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-endpoint", action="store_true")
    parser.add_argument("--tick-s", type=float, default=1.0)
    parser.add_argument("--azure", type=Path, help="an Azure Functions 2019 invocations_per_function CSV")
    parser.add_argument("--azure-top", type=int, default=5)
    parser.add_argument("--only", help="comma-separated trace names")
    parser.add_argument("--jobs", type=int, default=2, help="processes (1: no multiprocessing)")
    args = parser.parse_args(argv)
    traces = synthetic_traces()
    if args.azure:
        traces.append(load_azure_csv(args.azure, top=args.azure_top))
    if args.only:
        traces = [t for t in traces if t.name in args.only.split(",")]
    started = time.perf_counter()
    work = [(t, p, args.tick_s) for t in traces for p in POLICIES]
    if args.jobs > 1:
        from multiprocessing import Pool

        with Pool(args.jobs) as pool:
            done = pool.map(_run_one, work)
    else:
        done = [_run_one(w) for w in work]
    runs = {(t, p): res for t, p, res in done}
    print(
        f"keep-alive policies on {len(traces)} traces; scale-up/down cooldowns 0 s, threshold 1, cold start "
        f"~20 s +/-20%; learned falls back to 60 s\n"
    )
    misses = print_table(runs, traces, args.per_endpoint)
    calls = sum(total(r).decide_calls for r in runs.values())
    print(f"{calls} decide() calls in {time.perf_counter() - started:.1f} s wall")
    return 0 if not misses else 1


if __name__ == "__main__":
    raise SystemExit(main())
