"""The RunPod-compatible client API under ``/v2/{endpoint}`` (API key)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from orchestrator.api import schemas as s
from orchestrator.api.deps import (
    Boot,
    EndpointName,
    JobId,
    Queue,
    record_change,
    require_client_key,
    utf8_body,
)
from orchestrator.api.job_replies import status_reply
from orchestrator.api.middleware import current_request_id
from orchestrator.core.jobs import JobView
from orchestrator.core.models import BatchRunRequest, RunRequest
from orchestrator.core.net_policy import policy_of
from orchestrator.webhooks import check_webhook_target, check_webhook_targets

router = APIRouter(
    prefix="/v2/{endpoint}", tags=["client"], dependencies=[Depends(require_client_key), Depends(utf8_body)]
)


@router.post("/run", response_model=s.RunAccepted)
async def run(endpoint: EndpointName, body: RunRequest, queue: Queue, boot: Boot) -> s.RunAccepted:
    """Queue one job; durable before the reply. A webhook resolving to a refused address: 422."""
    await check_webhook_target(body.webhook, policy_of(boot.queue.webhook_allow))
    (job_id,) = await queue.submit(endpoint, [body], request_id=current_request_id())
    return s.RunAccepted(id=job_id, status="IN_QUEUE")


@router.post("/runsync", response_model=s.JobStatusObject, response_model_exclude_unset=True)
async def runsync(
    endpoint: EndpointName,
    body: RunRequest,
    queue: Queue,
    boot: Boot,
    wait: Annotated[int | None, Query(ge=0, le=300_000, description="Hold, ms.")] = None,
) -> s.JobStatusObject | Response:
    """Queue one job and hold until it is final or ``wait`` ms (default 90 s) pass; the status object."""
    await check_webhook_target(body.webhook, policy_of(boot.queue.webhook_allow))
    wait_s = None if wait is None else wait / 1000
    return reply_of(await queue.runsync(endpoint, body, wait_s, request_id=current_request_id()))


@router.post("/run-batch", response_model=s.BatchAccepted)
async def run_batch(
    endpoint: EndpointName, body: BatchRunRequest, queue: Queue, boot: Boot
) -> s.BatchAccepted:
    """Queue many jobs, all or nothing."""
    await check_webhook_targets([j.webhook for j in body.jobs], policy_of(boot.queue.webhook_allow))
    ids = await queue.submit(endpoint, body.jobs, request_id=current_request_id())
    return s.BatchAccepted(ids=ids, status="IN_QUEUE")


@router.get("/status/{job_id}", response_model=s.JobStatusObject, response_model_exclude_unset=True)
@router.post("/status/{job_id}", response_model=s.JobStatusObject, response_model_exclude_unset=True)
async def status(endpoint: EndpointName, job_id: JobId, queue: Queue) -> s.JobStatusObject | Response:
    """The job's status object."""
    return reply_of(await queue.final_or_status(endpoint, job_id))


def reply_of(job: JobView | s.JobStatusObject) -> s.JobStatusObject | Response:
    """A job read from the store as its status reply, its output as stored; a status object as it is."""
    return status_reply(job, int(time.time() * 1000)) if isinstance(job, JobView) else job


@router.get("/stream/{job_id}", response_model=s.StreamReply, response_model_exclude_unset=True)
@router.post("/stream/{job_id}", response_model=s.StreamReply, response_model_exclude_unset=True)
async def stream(endpoint: EndpointName, job_id: JobId, queue: Queue) -> s.StreamReply:
    """Stream chunks not yet returned; always has a ``stream`` list."""
    return await queue.stream(endpoint, job_id)


@router.post("/cancel/{job_id}", response_model=s.JobStateReply, response_model_exclude_unset=True)
async def cancel(endpoint: EndpointName, job_id: JobId, queue: Queue) -> s.JobStateReply:
    """Cancel a queued or running job (409 when it is already final otherwise)."""
    return await queue.cancel(endpoint, job_id, request_id=current_request_id())


@router.post("/retry/{job_id}", response_model=s.JobStateReply, response_model_exclude_unset=True)
async def retry(endpoint: EndpointName, job_id: JobId, queue: Queue) -> s.JobStateReply:
    """Re-queue a FAILED, TIMED_OUT or CANCELLED job (409 otherwise)."""
    return await queue.retry(endpoint, job_id, request_id=current_request_id())


@router.post(
    "/purge-queue",
    response_model=s.PurgeReply,
    response_model_exclude_unset=True,
    dependencies=[Depends(record_change)],
)
async def purge_queue(endpoint: EndpointName, queue: Queue) -> s.PurgeReply:
    """Cancel every queued job of the endpoint."""
    return await queue.purge(endpoint, request_id=current_request_id())


@router.get("/health", response_model=s.EndpointHealth, response_model_exclude_unset=True)
async def endpoint_health(endpoint: EndpointName, queue: Queue) -> s.EndpointHealth:
    """RunPod's health object: job counts and workers by state."""
    return await queue.health(endpoint)
