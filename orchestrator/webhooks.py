"""Webhook delivery: POST a job's final status object to its webhook, retried with backoff.

Runs as a background task of the queue actor and never blocks dispatch. Pending deliveries live in Redis
(``webhooks`` / ``webhooks:inflight``), so a restart resumes them: delivery is at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from orchestrator.config import QueueConfig
    from orchestrator.metrics import QueueMetrics
    from orchestrator.store.redis import RedisStore

log = logging.getLogger("ripple.webhooks")


def backoff_s(attempt: int, base_s: float, cap_s: float = 60.0) -> float:
    """Delay before retry number ``attempt`` (1-based): base, 2 x base, 4 x base, … capped."""
    return float(min(cap_s, base_s * (2 ** (attempt - 1))))


class WebhookSender:
    """Claims pending deliveries and sends each in its own task."""

    def __init__(self, store: RedisStore, metrics: QueueMetrics, config: QueueConfig) -> None:
        self.store = store
        self.metrics = metrics
        self.cfg = config
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()

    def kick(self) -> None:
        """Something may be pending: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.cfg.webhook_timeout_s) as client:
            while True:
                try:
                    for job_id in await self.store.webhook_claim(100):
                        task = asyncio.get_running_loop().create_task(self._deliver(client, job_id))
                        self._inflight.add(task)
                        task.add_done_callback(self._inflight.discard)
                except Exception:
                    log.exception("webhook claim failed")
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _deliver(self, client: httpx.AsyncClient, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is None or not job.webhook:
            await self.store.webhook_done(job_id)
            return
        body = job.status_object(int(time.time() * 1000))
        for attempt in range(1, self.cfg.webhook_max_attempts + 1):
            try:
                reply = await client.post(job.webhook, json=body)
                if reply.status_code < 400:
                    self.metrics.webhooks.labels("delivered").inc()
                    break
                reason = f"HTTP {reply.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            self.metrics.webhooks.labels("retried").inc()
            log.warning("webhook for job %s failed (%s), attempt %d", job_id, reason, attempt)
            if attempt < self.cfg.webhook_max_attempts:
                await asyncio.sleep(backoff_s(attempt, self.cfg.webhook_backoff_s))
        else:
            self.metrics.webhooks.labels("failed").inc()
        await self.store.webhook_done(job_id)
