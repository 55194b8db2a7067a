"""Endpoint management under ``/api/v1/endpoints`` (API key): create, list, show, update, delete, the
workers of one endpoint, its versions and rollback."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends

from orchestrator.api import schemas as s
from orchestrator.api.deps import Autoscaler, EndpointName, Queue, require_api_key, utf8_body
from orchestrator.core.models import EndpointPatch, EndpointSpec

router = APIRouter(
    prefix="/api/v1/endpoints",
    tags=["management"],
    dependencies=[Depends(require_api_key), Depends(utf8_body)],
)


log = logging.getLogger("ripple.api")

POOL_READY_TIMEOUT_S = 10.0
"""How long a create waits for the new endpoint's pool actor (then it answers anyway)."""


@router.post("", status_code=201, response_model=s.EndpointPublic, response_model_exclude_unset=True)
async def create_endpoint(body: EndpointSpec, queue: Queue, autoscaler: Autoscaler) -> s.EndpointPublic:
    """Create an endpoint (409 when the name is taken). With a handler, answers once its pool actor is up
    (at most POOL_READY_TIMEOUT_S), so that a job sent at once waits only for its replica."""
    created = await queue.create_endpoint(body)
    if body.handler is not None:
        try:
            ready = autoscaler.pool_ready(body.name, POOL_READY_TIMEOUT_S)
            if not await asyncio.wait_for(ready, POOL_READY_TIMEOUT_S + 5):
                log.info("endpoint %s created; its pool is not up yet", body.name)
        except Exception:  # the endpoint exists: its pool comes with the autoscaler's next tick
            log.warning("endpoint %s created; waiting for its pool failed", body.name, exc_info=True)
    return created


@router.get("", response_model=s.EndpointList, response_model_exclude_unset=True)
async def list_endpoints(queue: Queue) -> s.EndpointList:
    """Every endpoint, by name."""
    return s.EndpointList(endpoints=await queue.list_endpoints())


@router.get("/{name}", response_model=s.EndpointPublic, response_model_exclude_unset=True)
async def get_endpoint(name: EndpointName, queue: Queue) -> s.EndpointPublic:
    """The endpoint, with ``problem`` (null when its pool can serve) and ``version`` (its latest)."""
    return await queue.get_endpoint(name)


@router.patch("/{name}", response_model=s.EndpointPublic, response_model_exclude_unset=True)
async def update_endpoint(name: EndpointName, body: EndpointPatch, queue: Queue) -> s.EndpointPublic:
    """Change the fields given (unknown fields and ``name`` are refused); the result is validated whole."""
    return await queue.update_endpoint(name, body)


@router.delete("/{name}", response_model=s.EndpointDeleted, response_model_exclude_unset=True)
async def delete_endpoint(name: EndpointName, queue: Queue) -> s.EndpointDeleted:
    """Delete an endpoint with no job in progress (409 otherwise); its queued jobs are cancelled."""
    return await queue.delete_endpoint(name)


@router.get("/{name}/workers", response_model=s.WorkerList, response_model_exclude_unset=True)
async def endpoint_workers(name: EndpointName, queue: Queue) -> s.WorkerList:
    """The endpoint's workers and their states."""
    return s.WorkerList(workers=await queue.list_workers(name))


@router.get("/{name}/versions", response_model=s.VersionList, response_model_exclude_unset=True)
async def endpoint_versions(name: EndpointName, queue: Queue) -> s.VersionList:
    """The endpoint's versions, newest first: number, creation time, handler, code digest, what changed
    and state (rolling_out, active, failed with its error, retired)."""
    return await queue.list_versions(name)


@router.post("/{name}/rollback", response_model=s.RollbackReply, response_model_exclude_unset=True)
async def rollback(name: EndpointName, queue: Queue, body: s.RollbackBody | None = None) -> s.RollbackReply:
    """Create a new version whose code and settings are version ``to``'s (default: the previous good one)
    and roll out to it. 409 when there is no earlier version or the endpoint already runs it."""
    return await queue.rollback(name, body.to if body else None)
