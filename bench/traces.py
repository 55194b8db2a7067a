"""Arrival traces for the autoscaling simulator: synthetic shapes and the Azure Functions 2019 format.

The synthetic shapes follow the ones Shahrad et al. describe for the Azure trace (steady Poisson, bursty
on/off, diurnal, rare periodic) plus a multi-tenant mix competing for few GPUs. Every generator takes a
seed; nothing here reads a clock. ``load_azure_csv`` reads the per-minute invocation counts of the public
trace (``HashOwner,HashApp,HashFunction,Trigger,1,...,1440``) and spreads each minute's invocations
uniformly inside the minute; the real trace is not shipped.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EndpointTrace:
    """One endpoint of a trace: its settings and its jobs (arrival times and run times, seconds)."""

    name: str
    arrivals_s: tuple[float, ...]
    durations_s: tuple[float, ...]
    priority: int = 50
    gpus_per_replica: float = 1.0
    max_replicas: int = 10
    concurrency: int = 1
    cold_start_s: float = 20.0


@dataclass(frozen=True)
class Trace:
    name: str
    duration_s: float
    gpus_total: float
    endpoints: tuple[EndpointTrace, ...]


def _durations(rng: random.Random, n: int, mean_s: float, sigma: float = 0.5) -> tuple[float, ...]:
    mu = math.log(mean_s) - sigma * sigma / 2
    return tuple(rng.lognormvariate(mu, sigma) for _ in range(n))


def poisson(rng: random.Random, rate_per_s: float, start_s: float, end_s: float) -> list[float]:
    """Arrival times of a Poisson process of ``rate_per_s`` on ``[start_s, end_s)``."""
    out: list[float] = []
    t = start_s
    while rate_per_s > 0:
        t += rng.expovariate(rate_per_s)
        if t >= end_s:
            break
        out.append(t)
    return out


def modulated(rng: random.Random, rate: Callable[[float], float], peak: float, end_s: float) -> list[float]:
    """A non-homogeneous Poisson process by thinning (``rate(t) <= peak``)."""
    return [t for t in poisson(rng, peak, 0.0, end_s) if rng.random() * peak < rate(t)]


def on_off(
    rng: random.Random, end_s: float, on_s: float, off_s: float, rate_on: float, jitter: float = 0.25
) -> list[float]:
    """Bursts of Poisson arrivals at ``rate_on`` lasting about ``on_s``, separated by about ``off_s``."""
    out: list[float] = []
    t = rng.uniform(0, off_s)
    while t < end_s:
        on = on_s * rng.uniform(1 - jitter, 1 + jitter)
        out += poisson(rng, rate_on, t, min(end_s, t + on))
        t += on + off_s * rng.uniform(1 - jitter, 1 + jitter)
    return out


def periodic(rng: random.Random, end_s: float, period_s: float, jitter_s: float, batch: int) -> list[float]:
    """Every ``period_s`` (plus or minus ``jitter_s``), a batch of 1..``batch`` jobs within a few seconds."""
    out: list[float] = []
    t = rng.uniform(0, period_s)
    while t < end_s:
        out += sorted(t + rng.uniform(0, 3) for _ in range(rng.randint(1, batch)))
        t += period_s + rng.uniform(-jitter_s, jitter_s)
    return [x for x in out if x < end_s]


def _endpoint(
    rng: random.Random, name: str, arrivals: list[float], mean_job_s: float, **kw: object
) -> EndpointTrace:
    arrivals.sort()
    return EndpointTrace(name, tuple(arrivals), _durations(rng, len(arrivals), mean_job_s), **kw)  # type: ignore[arg-type]


def synthetic_traces(seed: int = 7) -> list[Trace]:
    """The five synthetic traces the simulator reports on."""
    rng = random.Random(seed)
    hour = 3600.0
    day = 24 * hour

    def diurnal_rate(t: float) -> float:
        return 0.03 * (1.0 + 0.95 * math.sin(2 * math.pi * t / day))

    competing = tuple(
        _endpoint(
            rng, f"t{prio}", on_off(rng, 4 * hour, on_s, off_s, rate), 8.0, priority=prio, max_replicas=6
        )
        for prio, on_s, off_s, rate in (
            (90, 300, 900, 0.5),
            (70, 120, 600, 0.4),
            (50, 600, 1200, 0.2),
            (30, 180, 300, 0.3),
            (10, 900, 1800, 0.1),
        )
    )
    return [
        Trace("poisson", 4 * hour, 16, (_endpoint(rng, "steady", poisson(rng, 0.1, 0, 4 * hour), 5.0),)),
        Trace(
            "bursty", 8 * hour, 16, (_endpoint(rng, "bursty", on_off(rng, 8 * hour, 120, 1200, 1.0), 5.0),)
        ),
        Trace(
            "diurnal", day, 16, (_endpoint(rng, "diurnal", modulated(rng, diurnal_rate, 0.06, day), 10.0),)
        ),
        Trace(
            "periodic", 12 * hour, 16, (_endpoint(rng, "cron", periodic(rng, 12 * hour, 900, 20, 3), 30.0),)
        ),
        Trace("competing", 4 * hour, 4, competing),
    ]


def load_azure_csv(
    path: Path,
    *,
    seed: int = 7,
    top: int = 5,
    minutes: int = 1440,
    mean_job_s: float = 5.0,
    gpus_total: float = 8,
) -> Trace:
    """A trace from an Azure Functions 2019 invocations file: the ``top`` busiest functions as endpoints.

    Columns: ``HashOwner,HashApp,HashFunction,Trigger,1,...,1440`` (invocations per minute). Each minute's
    invocations are spread uniformly at random (seeded) within the minute; run times are log-normal around
    ``mean_job_s`` (the durations file of the trace is not read).
    """
    rows: list[tuple[int, str, list[int]]] = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        first = header.index("1")
        for row in reader:
            counts = [int(float(x or 0)) for x in row[first : first + minutes]]
            rows.append((sum(counts), row[2][:12], counts))
    rows.sort(key=lambda r: -r[0])
    rng = random.Random(seed)
    endpoints = []
    for index, (_, fn, counts) in enumerate(rows[:top]):
        arrivals = [60.0 * m + rng.uniform(0, 60) for m, n in enumerate(counts) for _ in range(n)]
        endpoints.append(_endpoint(rng, f"f{index}-{fn}", arrivals, mean_job_s))
    return Trace(f"azure:{path.name}", 60.0 * minutes, gpus_total, tuple(endpoints))


def write_azure_sample(path: Path, *, seed: int = 1, functions: int = 3, minutes: int = 1440) -> None:
    """Write a tiny made-up file in the Azure 2019 format (for tests; not real data)."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["HashOwner", "HashApp", "HashFunction", "Trigger", *map(str, range(1, minutes + 1))])
        for f in range(functions):
            period = rng.choice((5, 15, 60))
            counts = [rng.randint(1, 4) if m % period == 0 else 0 for m in range(minutes)]
            writer.writerow([f"owner{f}", f"app{f}", f"func{f:02d}abcdef", "http", *counts])
