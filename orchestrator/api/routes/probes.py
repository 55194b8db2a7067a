"""Probes and metrics (no auth): liveness, readiness, start-up, a summary, Prometheus text."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from orchestrator.api import schemas as s
from orchestrator.api.deps import Queue
from orchestrator.api.errors import unwrap
from orchestrator.core.errors import NotReady, RippleError

router = APIRouter(tags=["probes"])

READY_TIMEOUT_S = 5.0
METRICS_TIMEOUT_S = 10.0


@router.get("/health/live", response_model=s.Live)
async def live() -> s.Live:
    """The HTTP replica is alive."""
    return s.Live(status="ok")


async def _queue_ready(queue: Queue) -> s.Ready:
    """The queue's readiness; any failure (the store down, the actor gone, a timeout) is a 503."""
    try:
        state = await asyncio.wait_for(queue.ready(), READY_TIMEOUT_S)
    except Exception as exc:
        err = unwrap(exc)
        if isinstance(err, RippleError):
            raise err from None
        raise NotReady(f"not ready: {type(err).__name__}: {str(err)[:200]}") from None
    return s.Ready.model_validate({"status": "ok", **state.model_dump()})


@router.get("/health/ready", response_model=s.Ready)
async def ready(queue: Queue) -> s.Ready:
    """The store and the job queue answer (503 otherwise)."""
    return await _queue_ready(queue)


@router.get("/health/startup", response_model=s.Ready)
async def startup(queue: Queue) -> s.Ready:
    """Start-up is done: the queue has recovered every job from the store."""
    return await _queue_ready(queue)


@router.get("/health", response_model=s.HealthSummary)
async def health_summary(queue: Queue) -> s.HealthSummary:
    """Liveness summary: this replica, and whether the queue and store answer."""
    try:
        state = await asyncio.wait_for(queue.ready(), READY_TIMEOUT_S)
        return s.HealthSummary(status="ok", queue=state.model_dump())
    except Exception as exc:  # the summary reports, it does not fail
        return s.HealthSummary(status="degraded", queue={"error": type(unwrap(exc)).__name__})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def metrics(queue: Queue) -> Response:
    """Prometheus text format."""
    body = await asyncio.wait_for(queue.metrics_text(), METRICS_TIMEOUT_S)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
