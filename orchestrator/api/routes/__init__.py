"""One router per resource; ``orchestrator.api.app.create_app`` includes them in this order."""

from __future__ import annotations

from fastapi import APIRouter

from orchestrator.api.routes import (
    autoscaler,
    client,
    cluster,
    endpoints,
    jobs,
    keys,
    logs,
    openai,
    packages,
    probes,
    worker,
    workers,
)

ROUTERS: tuple[APIRouter, ...] = (
    probes.router,
    client.router,
    openai.router,
    worker.router,
    endpoints.router,
    packages.router,
    jobs.router,
    workers.router,
    logs.router,
    autoscaler.router,
    cluster.router,
    keys.router,
    keys.audit_router,
)
