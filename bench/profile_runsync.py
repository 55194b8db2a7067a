"""Where an HTTP runsync's time goes: sequential `POST /v2/{ep}/runsync` against a no-op endpoint on 2 warm
replicas, with py-spy (GIL samples) attached to the API's Serve replica, the Serve proxy, the JobQueue
actor and the replicas; prints each process's busy share and its top functions.

    python bench/profile_runsync.py [--samples 300] [--direct] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench import direct_ingress, incluster, profile_actor, ripple_http  # noqa: E402
from bench.common import bench_session, http_client, load_average  # noqa: E402
from bench.ripple_instance import RippleInstance  # noqa: E402


def _proxies(instance: RippleInstance) -> list[int]:
    """PIDs of Serve's HTTP proxy actors under the instance's Ray head."""
    import psutil

    out = []
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process(int(instance.state["ray_head_pid"])).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.name().startswith("ray::ProxyActor"):
                    out.append(proc.pid)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument(
        "--keep", action="store_true", help="keep py-spy's raw stacks (printed: the work dir)"
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="runsync by direct ingress (RIPPLE_DIRECT_INGRESS_PORT), not through Serve's proxy",
    )
    args = parser.parse_args(argv)
    with (
        bench_session("runsync-profile", keep=args.keep) as session,
        incluster.warm_noop(
            session, direct_ingress.direct_instance(session.workdir) if args.direct else None
        ) as (instance, proxied),
        contextlib.ExitStack() as clients,
    ):
        http = proxied
        if args.direct:
            http = clients.enter_context(http_client(str(instance.state["direct_url"])))
            http.headers.update(proxied.headers)
        ripple_http.bench_round_trip(http, incluster.ENDPOINT, 50)  # warm-up
        procs = instance.actor_processes()
        targets = [(f"Serve API replica pid {p.pid}", p.pid) for p in procs["ServeReplica"]]
        targets += [(f"Serve proxy pid {pid}", pid) for pid in _proxies(instance)]
        targets += [(f"JobQueue pid {p.pid}", p.pid) for p in procs["JobQueue"][:1]]
        targets += [(f"WorkerReplica pid {p.pid}", p.pid) for p in procs["WorkerReplica"]]
        with contextlib.ExitStack() as stack:
            recs = [
                (name, stack.enter_context(profile_actor.record(pid, session.workdir / f"p-{pid}.txt")))
                for name, pid in targets
            ]
            latency = ripple_http.bench_round_trip(http, incluster.ENDPOINT, args.samples)
    print(f"HTTP runsync under py-spy: p50 {latency.p50_ms:.1f} ms, p99 {latency.p99_ms:.1f} ms, "
          f"{args.samples} sequential; {session.load_before} before, {load_average()} after")  # fmt: skip
    for name, rec in recs:
        print(rec.summary.format(name, top=10) if rec.summary else f"{name}: {rec.error}")
    return session.finish()


if __name__ == "__main__":
    sys.exit(main())
