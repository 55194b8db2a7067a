"""Endpoint management under ``/api/v1/endpoints`` (API key): create, list, show, update, delete, and the
workers of one endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from orchestrator.api import schemas as s
from orchestrator.api.deps import EndpointName, Queue, require_api_key, utf8_body
from orchestrator.core.models import EndpointPatch, EndpointSpec

router = APIRouter(
    prefix="/api/v1/endpoints",
    tags=["management"],
    dependencies=[Depends(require_api_key), Depends(utf8_body)],
)


@router.post("", status_code=201, response_model=s.EndpointPublic)
async def create_endpoint(body: EndpointSpec, queue: Queue) -> s.EndpointPublic:
    """Create an endpoint (409 when the name is taken)."""
    return await queue.create_endpoint(body)


@router.get("", response_model=s.EndpointList)
async def list_endpoints(queue: Queue) -> s.EndpointList:
    """Every endpoint, by name."""
    return s.EndpointList(endpoints=await queue.list_endpoints())


@router.get("/{name}", response_model=s.EndpointPublic)
async def get_endpoint(name: EndpointName, queue: Queue) -> s.EndpointPublic:
    return await queue.get_endpoint(name)


@router.patch("/{name}", response_model=s.EndpointPublic)
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
