"""HTTP runsync of a large job (an image in, an image out), against plain Serve routes doing the same.

The no-op endpoint (``bench.noop_handler:noop``, 2 warm replicas) returns its input, so a runsync of an
input of N MB reads N MB of JSON, keeps it durable, hands it to a worker replica, and answers with N MB of
JSON: what a diffusion, upscaling or speech endpoint does with its image or audio. Its peers, deployed
beside Ripple's API on the same instance (``bench.peers``), read the same body and answer with it: the echo
route inside its HTTP replica, the handoff route through a second deployment (Serve's model composition).
All three go through Serve's HTTP proxy, in blocks taken in turn, for each size.

    python bench/large_payload.py [--mb 1,4] [--samples 60] [--cpu]
"""

from __future__ import annotations

import argparse
import os
import string
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench import incluster, peers  # noqa: E402
from bench.common import Latency, bench_session, load_average, time_in_turns  # noqa: E402
from bench.cpu_per_request import CpuMeter  # noqa: E402


def body_of(size_bytes: int) -> dict[str, object]:
    """A job body whose input carries ``size_bytes`` characters of base64 text (as an image would)."""
    alphabet = string.ascii_letters + string.digits + "+/"
    text = (alphabet * (size_bytes // len(alphabet) + 1))[:size_bytes]
    return {"input": {"image": text, "steps": 30}}


def runsync_call(client: httpx.Client, body: dict[str, object]) -> Callable[[], None]:
    """One runsync of ``body`` on the no-op endpoint; raises unless COMPLETED with the input as output."""
    size = len(str(body["input"]))

    def call() -> None:
        reply = client.post(f"/v2/{incluster.ENDPOINT}/runsync", params={"wait": 30000}, json=body)
        got = reply.json() if reply.status_code == 200 else {}
        if got.get("status") != "COMPLETED" or len(str(got.get("output"))) != size:
            raise RuntimeError(f"runsync answered {reply.status_code}: {reply.text[:300]}")

    return call


def route_call(client: httpx.Client, path: str, body: dict[str, object]) -> Callable[[], None]:
    """One POST of ``body`` to a peer route; raises unless it answers with the body."""
    size = len(str(body))

    def call() -> None:
        reply = client.post(path, json=body)
        reply.raise_for_status()
        if len(str(reply.json())) != size:
            raise RuntimeError(f"{path} answered another body")

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", default="1,4", help="input sizes in MB, comma-separated (default 1,4)")
    parser.add_argument("--samples", type=int, default=60, help="calls of each route per size (default 60)")
    parser.add_argument(
        "--cpu", action="store_true", help="also each process's CPU per runsync, by role (cpu_per_request.py)"
    )
    args = parser.parse_args(argv)
    sizes_mb = [float(mb) for mb in args.mb.split(",")]
    results: list[tuple[float, list[Latency]]] = []
    cpu: list[tuple[float, Counter[str]]] = []
    with bench_session("large-payload") as session, incluster.warm_noop(session) as (instance, http):
        http.timeout = httpx.Timeout(60.0)
        instance.connect_ray()  # the peer routes are deployed by this driver
        with peers.echo_beside() as echo_path, peers.handoff_beside() as handoff_path:
            before = load_average()
            for mb in sizes_mb:
                body = body_of(int(mb * 1_000_000))
                calls = [
                    runsync_call(http, body),
                    route_call(http, echo_path, body),
                    route_call(http, handoff_path, body),
                ]
                results.append((mb, time_in_turns(calls, args.samples, warmup=3)))
                if args.cpu:

                    def block(runsync: Callable[[], None] = calls[0]) -> None:
                        for _ in range(args.samples):
                            runsync()

                    cpu.append((mb, CpuMeter(instance).spent(block)))
    if not results:
        print(f"failed: {session.error or 'interrupted'}", file=sys.stderr)
        return 1
    after = load_average()
    print(f"{args.samples} calls of each, in turns, through Serve's proxy; {before} before, {after} after")
    print(
        "| input = output | runsync p50 | echo p50 | handoff p50 | runsync / echo | runsync / handoff "
        "| runsync p99 | echo p99 | handoff p99 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mb, (r, e, h) in results:
        print(
            f"| {mb:g} MB | {r.p50_ms:.1f} ms | {e.p50_ms:.1f} ms | {h.p50_ms:.1f} ms "
            f"| {r.p50_ms / e.p50_ms:.2f}x | {r.p50_ms / h.p50_ms:.2f}x "
            f"| {r.p99_ms:.1f} ms | {e.p99_ms:.1f} ms | {h.p99_ms:.1f} ms |"
        )
    for mb, spent in cpu:
        print(f"\nCPU per {mb:g} MB runsync ({args.samples} sequential calls), ms by role:")
        for role, cpu_s in spent.most_common(8):
            print(f"  {cpu_s / args.samples * 1e3:7.1f}  {role}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
