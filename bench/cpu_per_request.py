"""CPU each process spends per request: HTTP runsync on a no-op endpoint (2 warm replicas) against the plain
Serve echo route deployed beside Ripple's API on the same instance, in blocks taken in turn.

On a small machine a request's latency follows the CPU that every process on its path, and beside it,
spends on it: this prints, per role (Serve's proxy, the API replica, the worker replicas, the queue actor,
Redis, Ray's own processes, this client), the CPU milliseconds per request for each of the two, read from
the processes' own CPU times (`psutil`) around each block, and what the machine spends per second at rest.

    python bench/cpu_per_request.py [--samples 400] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench import incluster, peers, ripple_http  # noqa: E402
from bench.common import IDLE_SETTLE_S, bench_session, load_average, summarize_latency  # noqa: E402
from bench.ripple_instance import RippleInstance  # noqa: E402

ROLES = (
    ("Serve proxy", ("ray::ProxyActor",)),
    ("Ripple API replica", ("ray::ServeReplica:ripple:",)),
    ("echo replica", ("ray::ServeReplica:bench-echo:",)),
    ("worker replicas", ("ray::WorkerReplica",)),
    ("queue actor", ("ray::JobQueue",)),
    ("pools, autoscaler", ("ray::WorkerPool", "ray::Autoscaler")),
    ("Serve controller", ("ray::ServeController",)),
)
"""Roles by process title prefix; Redis, this client, the rest of Ray and the rest of the machine are
found otherwise (:func:`role_of`)."""


SMALL_MS = 0.05
"""Roles spending less than this per request, with runsync and with the echo, are shown as one row."""


def role_of(proc_title: str, pid: int, redis_pid: int | None, head_pids: set[int]) -> str:
    """The role a process plays in a request (see :data:`ROLES`)."""
    for role, prefixes in ROLES:
        if proc_title.startswith(prefixes):
            return role
    if pid == redis_pid:
        return "Redis"
    if pid == os.getpid():
        return "client (this process)"
    if pid in head_pids:
        return f"Ray: {_ray_process_name(proc_title)}"
    return "rest of the machine"


def _ray_process_name(proc_title: str) -> str:
    """``ray::Name`` for a worker or actor, else the program (``raylet``, ``gcs_server``, a script's name)."""
    if proc_title.startswith("ray::"):
        return proc_title.split(".", 1)[0].split(" ", 1)[0]
    for arg in proc_title.split():
        name = os.path.basename(arg)
        if name.endswith(".py") or name in ("raylet", "gcs_server", "ray"):
            return name
    return proc_title.split(" ", 1)[0]


class CpuMeter:
    """CPU seconds by role, read from every process's user + system time."""

    def __init__(self, instance: RippleInstance) -> None:
        self.instance = instance

    def read(self) -> dict[int, tuple[str, float]]:
        """Every process's role and CPU seconds so far."""
        head_pids = self._under_ray_head()
        redis_pid = self.instance.redis_pid()
        out: dict[int, tuple[str, float]] = {}
        for proc in psutil.process_iter():
            try:
                title = proc.name()
                if not title.startswith("ray::"):
                    title = " ".join(proc.cmdline()) or title
                times = proc.cpu_times()
            except psutil.Error:
                continue
            out[proc.pid] = (role_of(title, proc.pid, redis_pid, head_pids), times.user + times.system)
        return out

    def _under_ray_head(self) -> set[int]:
        with contextlib.suppress(psutil.Error):
            head = psutil.Process(int(self.instance.state["ray_head_pid"]))
            return {head.pid, *(child.pid for child in head.children(recursive=True))}
        return set()

    def spent(self, call: Callable[[], object]) -> Counter[str]:
        """CPU seconds by role while ``call`` runs (a process's role as it is at the end: a Ray worker's
        title changes with what it runs)."""
        before = self.read()
        call()
        spent: Counter[str] = Counter()
        for pid, (role, cpu_s) in self.read().items():
            if pid in before:
                spent[role] += max(0.0, cpu_s - before[pid][1])
            else:  # its start-up is not a request's cost, but is shown
                spent[f"{role} (started meanwhile)"] += cpu_s
        return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=400, help="requests of each kind per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with bench_session("cpu-per-request") as session, incluster.warm_noop(session) as (instance, http):
        instance.connect_ray()  # the echo route is deployed by this driver
        runsync = ripple_http.runsync_call(http, incluster.ENDPOINT)
        with peers.echo_beside() as path:

            def echo() -> None:
                http.post(path, json=ripple_http.BODY).raise_for_status()

            meter = CpuMeter(instance)
            cpu: dict[str, Counter[str]] = {"runsync": Counter(), "echo": Counter()}
            wall: dict[str, list[float]] = {"runsync": [], "echo": []}
            for call in (runsync, echo) * 50:  # warm-up
                call()
            time.sleep(IDLE_SETTLE_S)  # what the deployment and the warm-up started settles
            idle_s = 3.0
            rest = meter.spent(lambda: time.sleep(idle_s))
            for _ in range(args.rounds):
                for name, call in (("runsync", runsync), ("echo", echo)):

                    def block(name: str = name, call: Callable[[], None] = call) -> None:
                        for _ in range(args.samples):
                            start_s = time.perf_counter()
                            call()
                            wall[name].append(time.perf_counter() - start_s)

                    cpu[name] += meter.spent(block)
    n = args.samples * args.rounds
    lat = {name: summarize_latency(samples) for name, samples in wall.items()}
    print(f"{n} HTTP runsync and {n} echo beside it, in blocks of {args.samples} taken in turn; "
          f"load {session.load_before} before, {load_average()} after")  # fmt: skip
    print(f"p50 runsync {lat['runsync'].p50_ms:.2f} ms, echo {lat['echo'].p50_ms:.2f} ms: "
          f"{lat['runsync'].p50_ms / lat['echo'].p50_ms:.2f}x")  # fmt: skip
    print("\n| role | runsync, CPU ms / request | echo, CPU ms / request | at rest, CPU ms / s |")
    print("| --- | --- | --- | --- |")
    roles = sorted(set(cpu["runsync"]) | set(cpu["echo"]) | set(rest), key=lambda r: -cpu["runsync"][r])
    small = {r for r in roles if max(cpu["runsync"][r], cpu["echo"][r]) < SMALL_MS / 1e3 * n}
    folded = f"the rest (each under {SMALL_MS} ms)"
    for spent in (*cpu.values(), rest):  # the small roles as one row
        spent[folded] += sum(spent.pop(r, 0.0) for r in small)
    for role in [r for r in roles if r not in small] + [folded]:
        print(f"| {role} | {cpu['runsync'][role] / n * 1e3:.2f} | {cpu['echo'][role] / n * 1e3:.2f} | "
              f"{rest[role] / idle_s * 1e3:.1f} |")  # fmt: skip
    total = {name: sum(c.values()) / n * 1e3 for name, c in cpu.items()}
    print(f"| all | {total['runsync']:.2f} | {total['echo']:.2f} | {sum(rest.values()) / idle_s * 1e3:.1f} |")
    return session.finish()


if __name__ == "__main__":
    sys.exit(main())
