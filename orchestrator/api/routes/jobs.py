"""Jobs under ``/api/v1`` (API key): the listing, one job in detail, and per-endpoint queue stats."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query

from orchestrator.api import schemas as s
from orchestrator.api.deps import JobId, Queue, require_api_key, utf8_body

router = APIRouter(
    prefix="/api/v1", tags=["management"], dependencies=[Depends(require_api_key), Depends(utf8_body)]
)

STATUS_PATTERN = "^(IN_QUEUE|IN_PROGRESS|COMPLETED|FAILED|CANCELLED|TIMED_OUT)$"


@router.get("/jobs", response_model=s.JobList, response_model_exclude_unset=True)
async def list_jobs(
    queue: Queue,
    endpoint: Annotated[str | None, Query(max_length=63)] = None,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,16}(:[0-9a-f-]{1,64})?$")] = None,
) -> s.JobList:
    """Jobs newest first, filtered; ``cursor`` (a previous page's ``nextCursor``) continues below it."""
    return await queue.list_jobs(endpoint, status, limit, cursor)


@router.get("/jobs/{job_id}", response_model=s.JobDetail, response_model_exclude_unset=True)
async def get_job(job_id: JobId, queue: Queue) -> s.JobDetail:
    """One job with its input, timings, policy and attempt history; ``workerLogs`` links the logs of the
    worker that ran it (its latest attempt)."""
    job = await queue.get_job(job_id)
    if job.workerId:
        job.workerLogs = f"/api/v1/workers/{quote(job.workerId, safe='')}/logs"
    return job


@router.get("/stats", response_model=s.QueueStats, response_model_exclude_unset=True)
async def queue_stats(queue: Queue) -> s.QueueStats:
    """Per endpoint: queued, running, the oldest queued job's age and waiting takers (one actor call)."""
    return s.QueueStats(endpoints=await queue.stats())
