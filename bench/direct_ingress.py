"""HTTP runsync, the plain Serve echo route and a plain Serve route handing the no-op to a worker deployment
(``bench.peers.handoff_app``), each through Serve's HTTP proxy and through Serve's direct ingress, on one
Ripple instance, in blocks taken in turn.

The instance runs with `RIPPLE_DIRECT_INGRESS_PORT` set: `ripple up` starts its Ray head with Ray Serve's
direct ingress on (experimental in Ray 2.60), so every replica of an ingress deployment (Ripple's API, and
the echo deployed beside it) also serves HTTP on a port of its own, without the proxy's hop; the proxy still
serves the instance's port. Runsync goes to the URL `ripple up` reports; each route's own port is found
from its ingress replica's process.

    python bench/direct_ingress.py [--samples 400]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)

from bench import incluster, peers, ripple_http  # noqa: E402
from bench.common import (  # noqa: E402
    Latency,
    bench_session,
    http_client,
    load_average,
    time_in_turns,
)
from bench.ripple_instance import RippleInstance  # noqa: E402
from orchestrator.ops.local import DIRECT_INGRESS_PORTS  # noqa: E402

FIRST_PORT = 30000
"""Serve's own first direct-ingress port: above Ray's worker ports, below the kernel's ephemeral range."""


def direct_instance(workdir: Path) -> RippleInstance:
    """A Ripple instance (not started) whose `ripple up` turns direct ingress on from :data:`FIRST_PORT`."""
    env = {"RIPPLE_DIRECT_INGRESS_PORT": str(FIRST_PORT)}
    return RippleInstance(workdir, num_gpus=2, env=env, name="ripple-direct")


def direct_port(instance: RippleInstance, title_prefix: str) -> int:
    """The direct-ingress HTTP port of the first replica whose process title starts with ``title_prefix``
    (``ray::ServeReplica:<app>:``) under the instance's Ray head. Raises RuntimeError when none listens."""
    head = psutil.Process(int(instance.state["ray_head_pid"]))
    for proc in head.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.name().startswith(title_prefix):
                for conn in proc.net_connections(kind="tcp"):
                    port = int(conn.laddr.port)
                    if conn.status == psutil.CONN_LISTEN and 0 <= port - FIRST_PORT < DIRECT_INGRESS_PORTS:
                        return port
    raise RuntimeError(f"no {title_prefix} replica listens on a direct-ingress port")


def post_call(client: httpx.Client, path: str) -> Callable[[], None]:
    """One POST of the bench body to ``path``; raises on an error status."""

    def call() -> None:
        client.post(path, json=ripple_http.BODY).raise_for_status()

    return call


@contextlib.contextmanager
def direct_calls(
    instance: RippleInstance, http: httpx.Client, routes: Sequence[tuple[str, str]]
) -> Iterator[list[Callable[[], None]]]:
    """Runsync on the warm no-op endpoint to the URL `ripple up` reported, then one POST per ``(app name,
    path)`` of ``routes`` (Serve applications deployed beside Ripple) to its ingress replica's own port: the
    calls, in that order, with clients open until the block ends."""
    with contextlib.ExitStack() as clients:
        api_direct = clients.enter_context(http_client(str(instance.state["direct_url"])))
        api_direct.headers.update(http.headers)
        calls = [ripple_http.runsync_call(api_direct, incluster.ENDPOINT)]
        for app_name, path in routes:
            port = direct_port(instance, f"ray::ServeReplica:{app_name}:")
            calls.append(post_call(clients.enter_context(http_client(f"http://127.0.0.1:{port}")), path))
        yield calls


@contextlib.contextmanager
def peer_routes(
    instance: RippleInstance, http: httpx.Client
) -> Iterator[tuple[str, str, list[Callable[[], None]]]]:
    """The echo and the handoff routes deployed beside the instance's API (this driver connected to its
    Ray): their paths through the proxy, and the calls by direct ingress (:func:`direct_calls`: runsync,
    the echo, the handoff). The routes are deleted when the block ends."""
    with (
        peers.echo_beside() as echo_path,
        peers.handoff_beside() as handoff_path,
        direct_calls(
            instance, http, [(peers.ECHO_APP, echo_path), (peers.HANDOFF_APP, handoff_path)]
        ) as by_direct_ingress,
    ):
        yield echo_path, handoff_path, by_direct_ingress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=400, help="calls of each of the four (default 400)")
    args = parser.parse_args(argv)
    lat: list[Latency] = []
    with bench_session("direct-ingress") as session:
        instance = direct_instance(session.workdir)
        with incluster.warm_noop(session, instance) as (_, http):
            instance.connect_ray()  # the echo and handoff routes are deployed by this driver
            with peer_routes(instance, http) as (echo_path, handoff_path, by_direct_ingress):
                before = load_average()
                through_proxy = [
                    ripple_http.runsync_call(http, incluster.ENDPOINT),
                    post_call(http, echo_path),
                    post_call(http, handoff_path),
                ]
                lat = time_in_turns([*through_proxy, *by_direct_ingress], args.samples)
    if not lat:
        print(f"failed: {session.error or 'interrupted'}", file=sys.stderr)
        return 1
    print(f"{args.samples} calls of each, in turns; {before} before, {load_average()} after")
    print(
        "| path | runsync p50 | echo p50 | handoff p50 | runsync / echo | runsync / handoff "
        "| runsync p99 | echo p99 | handoff p99 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (r, e, h) in (("through Serve's proxy", lat[:3]), ("direct ingress (no proxy)", lat[3:])):
        print(
            f"| {name} | {r.p50_ms:.2f} ms | {e.p50_ms:.2f} ms | {h.p50_ms:.2f} ms "
            f"| {r.p50_ms / e.p50_ms:.2f}x | {r.p50_ms / h.p50_ms:.2f}x "
            f"| {r.p99_ms:.2f} ms | {e.p99_ms:.2f} ms | {h.p99_ms:.2f} ms |"
        )
    direct_ms, echo_proxy_ms, runsync_proxy_ms = lat[3].p50_ms, lat[1].p50_ms, lat[0].p50_ms
    print(f"runsync by direct ingress / the echo through the proxy: {direct_ms / echo_proxy_ms:.2f}x")
    print(f"runsync by direct ingress / runsync through the proxy: {direct_ms / runsync_proxy_ms:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
