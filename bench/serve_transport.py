"""HTTP runsync and the plain Serve echo route beside it, through Serve's proxy, with the proxy reaching
replicas over gRPC (what `ripple up` sets: `orchestrator.ops.local.serve_transport_env`) and over Ray actor
calls (Serve's default, `RAY_SERVE_PROXY_USE_GRPC=0`): one Ripple instance for each, started in turns.

    python bench/serve_transport.py [--samples 600] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench import incluster, peers, ripple_http  # noqa: E402
from bench.common import Latency, bench_session, load_average, time_in_turns  # noqa: E402
from bench.direct_ingress import post_call  # noqa: E402
from bench.ripple_instance import RippleInstance  # noqa: E402

TRANSPORTS = {"gRPC": "1", "actor calls": "0"}


def measure(transport: str, samples: int) -> tuple[Latency, Latency] | None:
    """Runsync and the echo beside it, in turns, on a fresh instance with the proxy's ``transport``."""
    flag = TRANSPORTS[transport]
    with bench_session(f"serve-transport-{flag}") as session:
        env = {"RAY_SERVE_PROXY_USE_GRPC": flag}
        instance = RippleInstance(session.workdir, num_gpus=2, env=env, name=f"ripple-grpc-{flag}")
        with incluster.warm_noop(session, instance) as (_, http):
            instance.connect_ray()  # the echo route is deployed by this driver
            with peers.echo_beside() as echo_path:
                runsync, echo = time_in_turns(
                    [ripple_http.runsync_call(http, incluster.ENDPOINT), post_call(http, echo_path)], samples
                )
                return runsync, echo
    print(f"{transport}: failed: {session.error or 'interrupted'}", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=600, help="calls of each route per instance")
    parser.add_argument("--rounds", type=int, default=2, help="instances of each transport, in turns")
    args = parser.parse_args(argv)
    before = load_average()
    got: dict[str, list[tuple[Latency, Latency]]] = {t: [] for t in TRANSPORTS}
    for _ in range(args.rounds):
        for transport in TRANSPORTS:
            one = measure(transport, args.samples)
            if one is None:
                return 1
            got[transport].append(one)
    print(
        f"{args.samples} calls of each per instance, {args.rounds} instances each; {before} before, "
        f"{load_average()} after"
    )
    print("| proxy to replica | runsync p50 (each instance) | echo beside p50 | runsync / echo |")
    print("| --- | --- | --- | --- |")
    medians: dict[str, tuple[float, float]] = {}
    for transport, runs in got.items():
        r = [x.p50_ms for x, _ in runs]
        e = [y.p50_ms for _, y in runs]
        medians[transport] = (statistics.median(r), statistics.median(e))
        each = ", ".join(f"{v:.2f}" for v in r)
        echo = ", ".join(f"{v:.2f}" for v in e)
        print(
            f"| {transport} | {each} ms | {echo} ms | {medians[transport][0] / medians[transport][1]:.2f}x |"
        )
    (g_r, g_e), (a_r, a_e) = medians["gRPC"], medians["actor calls"]
    print(f"gRPC / actor calls, median p50: runsync {g_r / a_r:.2f}x, echo {g_e / a_e:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
