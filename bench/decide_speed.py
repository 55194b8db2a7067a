"""Micro-benchmark: one ``decide()`` call over 1,000 endpoints and 10,000 replicas (target: under 20 ms).

    python bench/decide_speed.py [--endpoints 1000] [--replicas 10000] [--repeat 30]

The snapshot mixes what a busy cluster shows: queued work on a third of the endpoints, idle replicas past
their keep-alive, replicas starting, a fifth of the endpoints on the learned keep-alive with a trained
histogram, and fewer GPUs than the work wants (so allocation, preemption and Blocked paths all run).
Each timed call starts from the same trained state, so each does the full work of a tick.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.core.autoscale import AutoscalerState, EndpointView, ReplicaView, Snapshot, decide


def build(n_endpoints: int, n_replicas: int, now_s: float, seed: int = 3) -> Snapshot:
    rng = random.Random(seed)
    per = n_replicas // n_endpoints
    endpoints = []
    for i in range(n_endpoints):
        reps = []
        for k in range(per):
            state = rng.choice(("idle", "busy", "busy", "starting", "draining"))
            idle_since = now_s - rng.uniform(0, 900) if state == "idle" else None
            reps.append(ReplicaView(f"e{i}r{k}", state, 1 if state == "busy" else 0, idle_since))  # type: ignore[arg-type]
        queued = rng.choice((0, 0, 3, 25))
        endpoints.append(
            EndpointView(
                f"e{i}",
                priority=rng.randint(0, 100),
                max_replicas=per + 5,
                min_replicas=rng.choice((0, 0, 1)),
                queued=queued,
                running=sum(r.state == "busy" for r in reps),
                oldest_queued_age_s=rng.uniform(0, 1500) if queued else None,
                replicas=tuple(reps),
                keep_alive="learned" if i % 5 == 0 else "fixed",
                last_arrival_s=now_s - rng.uniform(0, 600),
            )
        )
    return Snapshot(now_s, tuple(endpoints), gpus_total=n_replicas * 1.02)


def train(snapshot: Snapshot) -> AutoscalerState:
    """A state whose learned endpoints have seen 40 idle gaps each (so their plans are not the fallback)."""
    state = AutoscalerState()
    rng = random.Random(5)
    for k in range(40):
        t = snapshot.now_s - 40_000 + k * 900
        quiet = tuple(
            EndpointView(e.name, keep_alive=e.keep_alive, last_arrival_s=t) for e in snapshot.endpoints
        )
        _, state = decide(Snapshot(t + 10, quiet, gpus_total=0, enabled=False), state)
        busy = tuple(
            EndpointView(e.name, keep_alive=e.keep_alive, last_arrival_s=t + rng.uniform(600, 800))
            for e in snapshot.endpoints
        )
        _, state = decide(Snapshot(t + 850, busy, gpus_total=0, enabled=False), state)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    now_s = 100_000.0
    snapshot = build(args.endpoints, args.replicas, now_s)
    # fold this snapshot's arrivals in first (memory only), as the previous tick would have
    _, trained = decide(Snapshot(now_s, snapshot.endpoints, gpus_total=0, enabled=False), train(snapshot))
    times_ms = []
    decisions = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        decisions, _ = decide(snapshot, trained)  # a full tick each time: scale-ups, blocks, preemption
        times_ms.append((time.perf_counter() - started) * 1000)
    times_ms.sort()
    kinds: dict[str, int] = {}
    for d in decisions:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    median_ms = statistics.median(times_ms)
    print(f"decide(): {args.endpoints} endpoints, {args.replicas} replicas, {args.repeat} calls:")
    print(f"  median {median_ms:.1f} ms, min {times_ms[0]:.1f} ms, max {times_ms[-1]:.1f} ms")
    print(f"  decisions in one call: {kinds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
