"""The JobQueue actor: dispatch for every endpoint, with Redis as the only source of truth.

Named, detached and restarted by Ray; an async actor, so long-polls (takers, stop channels, ``runsync``) cost
no thread. A thin shell: the logic is :class:`orchestrator.core.dispatch.Dispatcher`; this actor builds it on
a :class:`orchestrator.store.redis.RedisStore`, the webhook sender and :mod:`actors.queue_adapters` (clock,
metrics, autoscaler wake-up), runs the background loops (sweeps, webhook delivery) once the dispatcher has
recovered from the store, and delegates every call. Bodies arrive validated (RunRequest, EndpointSpec,
EndpointPatch): the HTTP edge and the in-cluster client validate them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.packages import GcsPackageShelf
from actors.queue_access import AccessMethods
from actors.queue_adapters import AutoscalerByName, QueueMetricsSink, SystemClock
from orchestrator import logs
from orchestrator.config import QueueConfig
from orchestrator.core.dispatch import Dispatcher
from orchestrator.core.jobs import JobView
from orchestrator.core.models import EndpointPatch, EndpointSpec, RunRequest
from orchestrator.core.net_policy import check_literal_webhooks
from orchestrator.core.versions import EndpointVersion
from orchestrator.metrics import QueueMetrics
from orchestrator.ray_metrics import RaySink
from orchestrator.store.access import RedisAccessStore
from orchestrator.store.protocol import FinishOutcome
from orchestrator.store.redis import RedisStore
from orchestrator.webhooks import WebhookSender

log = logging.getLogger("ripple.queue")


class JobQueue(AccessMethods):
    """The actor; every method is :class:`~orchestrator.core.dispatch.Dispatcher`'s of the same name (the
    named-key and audit methods, from :class:`~actors.queue_access.AccessMethods`, go to the store)."""

    def __init__(self, config: QueueConfig, namespace: str = "ripple") -> None:
        self.cfg = config
        self.namespace = namespace
        self.store = RedisStore.connect(config.redis_url, config.key_prefix, config.store_retry_s)
        self.access = RedisAccessStore(self.store.r, self.store.k)  # named API keys, audit log
        logs.configure("INFO")  # JSON lines in the actor's log file
        self.ray_metrics = RaySink()
        self.metrics = QueueMetrics(self.ray_metrics)
        self.webhooks = WebhookSender(self.store, self.metrics, config)
        self.sink = QueueMetricsSink(self.metrics, self.ray_metrics)
        self.d = Dispatcher(
            self.store,
            config,
            SystemClock(),
            metrics=self.sink,
            autoscaler=AutoscalerByName(namespace),
            webhooks=self.webhooks,
            on_recovered=self._start_loops,
            packages=GcsPackageShelf(Path(config.packages_dir) if config.packages_dir else None),
        )
        self._tasks: list[asyncio.Task[None]] = []

    # Background ---------------------------------------------------------------------------------

    def _start_loops(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sweep_forever()), loop.create_task(self.webhooks.run())]

    async def _sweep_forever(self) -> None:
        failures = logs.RepeatedFailure(log, "queue sweep", time.monotonic)
        while True:
            try:
                await self.d.sweep_once()
                failures.succeeded()
            except Exception as exc:  # a tick never kills the loop: log, continue
                failures.failed(exc)
            await asyncio.sleep(self.cfg.sweep_interval_s)

    # Endpoints ----------------------------------------------------------------------------------

    async def create_endpoint(self, spec: EndpointSpec) -> dict[str, Any]:
        return await self.d.create_endpoint(spec)

    async def package_arriving(self, uri: str) -> None:
        await self.d.package_arriving(uri)

    async def update_endpoint(self, name: str, patch: EndpointPatch) -> dict[str, Any]:
        return await self.d.update_endpoint(name, patch)

    async def delete_endpoint(self, name: str) -> dict[str, Any]:
        return await self.d.delete_endpoint(name)

    async def list_versions(self, name: str) -> dict[str, Any]:
        return await self.d.list_versions(name)

    async def endpoint_versions(self, name: str) -> list[EndpointVersion]:
        return await self.d.endpoint_versions(name)

    async def report_version_state(
        self, endpoint: str, version: int, state: str, error: str | None = None
    ) -> dict[str, Any]:
        return await self.d.report_version_state(endpoint, version, state, error)

    async def report_pool_problem(self, endpoint: str, message: str | None) -> None:
        await self.d.report_pool_problem(endpoint, message)

    async def rollback(self, name: str, to: int | None = None) -> dict[str, Any]:
        return await self.d.rollback(name, to)

    async def get_endpoint(self, name: str) -> dict[str, Any]:
        return await self.d.get_endpoint(name)

    async def list_endpoints(self) -> list[dict[str, Any]]:
        return await self.d.list_endpoints()

    async def endpoint_specs(self) -> dict[str, EndpointSpec]:
        return await self.d.endpoint_specs()

    # Client API ---------------------------------------------------------------------------------

    async def submit(
        self, endpoint: str, requests: Sequence[RunRequest], request_id: str | None = None
    ) -> list[str]:
        check_literal_webhooks([r.webhook for r in requests], self.webhooks.policy)  # in-cluster callers too
        return await self.d.submit(endpoint, requests, request_id)

    async def runsync(
        self, endpoint: str, request: RunRequest, wait_s: float | None, request_id: str | None = None
    ) -> dict[str, Any]:
        check_literal_webhooks([request.webhook], self.webhooks.policy)
        return await self.d.runsync(endpoint, request, wait_s, request_id)

    async def submitted(self, endpoint: str, job_ids: Sequence[str], request_id: str | None = None) -> None:
        """Jobs the HTTP app wrote to the store itself (``runsync``); sent, not awaited."""
        await self.d.submitted(endpoint, job_ids, request_id)

    async def wait_final(self, endpoint: str, job_id: str, wait_s: float | None) -> dict[str, Any]:
        return await self.d.wait_final(endpoint, job_id, wait_s)

    async def status(self, endpoint: str, job_id: str, read: JobView | None = None) -> dict[str, Any]:
        return await self.d.status(endpoint, job_id, read)

    async def statuses(self, job_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        return await self.d.statuses(job_ids)

    async def stream(self, endpoint: str, job_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        return await self.d.stream(endpoint, job_id, wait_s)

    async def cancel(self, endpoint: str, job_id: str, request_id: str | None = None) -> dict[str, Any]:
        return await self.d.cancel(endpoint, job_id, request_id)

    async def retry(self, endpoint: str, job_id: str, request_id: str | None = None) -> dict[str, Any]:
        return await self.d.retry(endpoint, job_id, request_id)

    async def purge(self, endpoint: str, request_id: str | None = None) -> dict[str, Any]:
        return await self.d.purge(endpoint, request_id)

    async def health(self, endpoint: str) -> dict[str, Any]:
        return await self.d.health(endpoint)

    # Worker protocol ----------------------------------------------------------------------------

    async def take(
        self,
        endpoint: str,
        worker_id: str,
        max_jobs: int = 1,
        wait_s: float | None = None,
        kind: str = "external",
        request_id: str | None = None,
        version: int | None = None,
        call_id: str | None = None,
    ) -> list[dict[str, Any]]:
        return await self.d.take(endpoint, worker_id, max_jobs, wait_s, kind, request_id, version, call_id)

    async def done(
        self,
        endpoint: str,
        worker_id: str,
        job_id: str,
        body: Any,
        is_stream: bool = False,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        return await self.d.done(endpoint, worker_id, job_id, body, is_stream, request_id)

    async def done_many(
        self, endpoint: str, worker_id: str, results: Sequence[tuple[str, Any]], is_stream: bool = False
    ) -> list[dict[str, Any]]:
        return await self.d.done_many(endpoint, worker_id, results, is_stream)

    async def took(self, endpoint: str, worker_id: str, job_ids: list[str]) -> None:
        """Jobs a replica took from the store itself (:mod:`actors.queue_direct`); sent, not awaited."""
        self.d.took(endpoint, worker_id, job_ids)

    async def redeliver(self, endpoint: str, worker_id: str) -> dict[str, Any]:
        """The running jobs leased to a replica whose own take from the store failed, and its new fence
        (:mod:`actors.queue_direct`)."""
        return await self.d.redeliver(endpoint, worker_id)

    async def finished(self, endpoint: str, worker_id: str, outcomes: Sequence[FinishOutcome]) -> None:
        """Results a replica finished in the store itself (:mod:`actors.queue_direct`); sent, not awaited."""
        await self.d.finished(endpoint, worker_id, outcomes)

    def store_address(self) -> dict[str, str | float]:
        """Where the store is (``redisUrl``, ``keyPrefix``) and how long its commands are retried
        (``retryS``), for code inside the cluster that uses it (replicas, the in-cluster client) instead of
        this actor."""
        return {
            "redisUrl": self.cfg.redis_url,
            "keyPrefix": self.cfg.key_prefix,
            "retryS": self.cfg.store_retry_s,
        }

    async def stream_push(
        self, endpoint: str, worker_id: str, job_id: str, outputs: Sequence[Any], first: int | None = None
    ) -> dict[str, Any]:
        return await self.d.stream_push(endpoint, worker_id, job_id, outputs, first)

    async def ping(
        self,
        endpoint: str,
        worker_id: str,
        job_ids: Sequence[str],
        kind: str = "external",
        state: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> list[str]:
        return await self.d.ping(endpoint, worker_id, job_ids, kind, state, request_id)

    async def heartbeat(
        self, endpoint: str, worker_id: str, job_ids: Sequence[str], state: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.d.heartbeat(endpoint, worker_id, job_ids, state)

    async def report_workers(self, endpoint: str, records: Sequence[dict[str, Any]]) -> None:
        await self.d.report_workers(endpoint, records)

    async def stop_poll(self, endpoint: str, worker_id: str, wait_s: float | None = None) -> list[str]:
        return await self.d.stop_poll(endpoint, worker_id, wait_s)

    async def drain_worker(self, worker_id: str) -> dict[str, Any]:
        return await self.d.drain_worker(worker_id)

    async def worker_gone(self, worker_id: str, reason: str) -> int:
        return await self.d.worker_gone(worker_id, reason)

    # Management ---------------------------------------------------------------------------------

    async def list_jobs(
        self, endpoint: str | None, status: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        return await self.d.list_jobs(endpoint, status, limit, cursor)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return await self.d.get_job(job_id)

    async def list_workers(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return await self.d.list_workers(endpoint)

    async def stats(self) -> dict[str, Any]:
        return await self.d.stats()

    async def metrics_text(self) -> bytes:
        """Prometheus exposition of the queue's metrics, state gauges refreshed now."""
        return self.sink.exposition(await self.d.stats(), self.d.registry.views())

    async def publish_metrics(self, payload: dict[str, Any]) -> int:
        """Samples measured elsewhere (the autoscaler, once per tick), kept in this registry so
        ``/metrics`` stays one actor call, and its ``waitFacts`` for queued jobs' ``waitReason``. Returns
        samples applied."""
        if isinstance(payload.get("waitFacts"), dict):
            self.d.absorb_wait_facts(payload["waitFacts"])
        return self.metrics.apply_published(payload)

    async def ready(self) -> dict[str, Any]:
        """Readiness: the store answers and recovery is done."""
        return await self.d.ready()
