"""Workers under ``/api/v1/workers`` (API key): the listing and draining one worker."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from orchestrator.api import schemas as s
from orchestrator.api.deps import Queue, WorkerId, require_api_key, utf8_body

router = APIRouter(
    prefix="/api/v1/workers", tags=["management"], dependencies=[Depends(require_api_key), Depends(utf8_body)]
)


@router.get("", response_model=s.WorkerList, response_model_exclude_unset=True)
async def list_workers(queue: Queue) -> s.WorkerList:
    """Every worker and its state."""
    return s.WorkerList(workers=await queue.list_workers())


@router.post("/{worker_id}/drain", response_model=s.WorkerView, response_model_exclude_unset=True)
async def drain_worker(worker_id: WorkerId, queue: Queue) -> s.WorkerView:
    """Stop handing jobs to a worker; it finishes what it holds (404 for an unknown worker)."""
    return await queue.drain_worker(worker_id)
