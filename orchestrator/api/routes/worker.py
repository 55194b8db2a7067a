"""The RunPod worker protocol under ``/v2/{endpoint}`` (worker key).

Result and chunk bodies are JSON whatever their declared content type, and their shape is the queue's to
interpret (a result, an error, progress), so they are read as raw JSON here. A result or chunk over
``RIPPLE_MAX_BODY_BYTES`` fails its job with that reason (and gets a 413): the handler's output cannot be
delivered, and a retry would produce it again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from orchestrator.api import schemas as s
from orchestrator.api.deps import (
    Boot,
    EndpointName,
    JobId,
    JsonBody,
    Oversized,
    Queue,
    WorkerId,
    require_worker_key,
    utf8_body,
)
from orchestrator.api.middleware import OversizedBody, current_request_id
from orchestrator.core.errors import InvalidInput, PayloadTooLarge
from orchestrator.core.jobs import oversized_result_error

router = APIRouter(
    prefix="/v2/{endpoint}", tags=["worker"], dependencies=[Depends(require_worker_key), Depends(utf8_body)]
)

NO_CONTENT: dict[int | str, dict[str, Any]] = {204: {"description": "Nothing arrived within the hold."}}
MAX_BATCH_RESULTS = 1000


@router.get(
    "/job-take/{worker_id}",
    response_model=None,
    responses={200: {"model": s.TakenJob, "description": "One leased job."}, **NO_CONTENT},
)
async def job_take(
    endpoint: EndpointName,
    worker_id: WorkerId,
    queue: Queue,
    boot: Boot,
    job_in_progress: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response | s.TakenJob:
    """Long-poll for one job: 204 when none arrives within the hold."""
    jobs = await queue.take(endpoint, worker_id, 1, boot.take_wait_s, request_id=current_request_id())
    return jobs[0] if jobs else Response(status_code=204)


@router.get(
    "/job-take-batch/{worker_id}",
    response_model=None,
    responses={200: {"model": list[s.TakenJob], "description": "Leased jobs."}, **NO_CONTENT},
)
async def job_take_batch(
    endpoint: EndpointName,
    worker_id: WorkerId,
    queue: Queue,
    boot: Boot,
    batch_size: Annotated[int, Query(ge=1, le=1000)] = 1,
    job_in_progress: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response | list[s.TakenJob]:
    """Long-poll for up to ``batch_size`` jobs: a JSON list, or 204."""
    jobs = await queue.take(
        endpoint, worker_id, batch_size, boot.take_wait_s, request_id=current_request_id()
    )
    return jobs if jobs else Response(status_code=204)


@router.post("/job-done/{worker_id}/{job_id}", response_model=s.DoneReply, response_model_exclude_unset=True)
async def job_done(
    endpoint: EndpointName,
    worker_id: WorkerId,
    job_id: JobId,
    body: JsonBody,
    queue: Queue,
    oversized: Oversized,
    isStream: Annotated[str, Query()] = "false",
) -> s.DoneReply:
    """A result (``{"output"}`` / ``{"error"}``) or progress update; idempotent. Over the body limit: 413,
    the job failed with the reason."""
    if oversized is not None:
        raise await _fail_oversized(queue, endpoint, worker_id, job_id, oversized, "result")
    is_stream = isStream.lower() == "true"
    return await queue.done(endpoint, worker_id, job_id, body, is_stream, request_id=current_request_id())


@router.post(
    "/job-done-batch/{worker_id}", response_model=s.DoneBatchReply, response_model_exclude_unset=True
)
async def job_done_batch(
    endpoint: EndpointName, worker_id: WorkerId, body: JsonBody, queue: Queue
) -> s.DoneBatchReply:
    """Extension: results of many jobs in one request, ``[{"id": ..., "output": ...} | {"id", "error"}]``
    (at most 1,000), each applied as ``job-done`` would; one store round trip for all."""
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_BATCH_RESULTS:
        raise InvalidInput(f"body must be a JSON list of 1 to {MAX_BATCH_RESULTS} results", {"loc": ["body"]})
    results: list[tuple[str, Any]] = []
    for n, item in enumerate(body):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise InvalidInput("each result needs a string id", {"loc": ["body", n, "id"]})
        results.append((item["id"], {k: v for k, v in item.items() if k != "id"}))
    return s.DoneBatchReply(results=await queue.done_many(endpoint, worker_id, results, False))


@router.post(
    "/job-stream/{worker_id}/{job_id}", response_model=s.StreamPushReply, response_model_exclude_unset=True
)
async def job_stream(
    endpoint: EndpointName,
    worker_id: WorkerId,
    job_id: JobId,
    body: JsonBody,
    queue: Queue,
    oversized: Oversized,
) -> s.StreamPushReply:
    """One stream chunk ``{"output": chunk}``; never finishes the job, but one over the body limit fails it
    (413)."""
    if oversized is not None:
        raise await _fail_oversized(queue, endpoint, worker_id, job_id, oversized, "stream chunk")
    chunk = body.get("output") if isinstance(body, dict) else body
    return await queue.stream_push(endpoint, worker_id, job_id, [chunk])


@router.get(
    "/job-stop/{worker_id}",
    response_model=None,
    responses={200: {"model": s.JobsToStop, "description": "Jobs the worker must stop."}, **NO_CONTENT},
)
async def job_stop(
    endpoint: EndpointName, worker_id: WorkerId, queue: Queue, boot: Boot
) -> Response | s.JobsToStop:
    """Long-poll for jobs to stop: ``{"jobsToStop": [...]}`` or 204."""
    ids = await queue.stop_poll(endpoint, worker_id, boot.stop_wait_s)
    return s.JobsToStop(jobsToStop=ids) if ids else Response(status_code=204)


@router.get("/ping/{worker_id}", response_model=s.PingReply)
async def ping(
    endpoint: EndpointName,
    worker_id: WorkerId,
    queue: Queue,
    job_id: Annotated[str | None, Query(max_length=100_000)] = None,
) -> s.PingReply:
    """Heartbeat with the comma-separated ids of the jobs the worker holds."""
    ids = [j for j in (job_id or "").split(",") if j]
    stop = await queue.ping(endpoint, worker_id, ids, request_id=current_request_id())
    return s.PingReply(status="ok", jobsToStop=stop)


async def _fail_oversized(
    queue: Queue, endpoint: str, worker_id: str, job_id: str, body: OversizedBody, what: str
) -> PayloadTooLarge:
    """Fail the job whose ``what`` (result, stream chunk) was over the body limit, with the reason; the 413
    for the worker. The job is left as it is when this worker does not hold it (already final, taken
    back)."""
    error = oversized_result_error(what, body.size_bytes, body.limit_bytes)
    reply = await queue.done(
        endpoint, worker_id, job_id, {"error": error}, False, request_id=current_request_id()
    )
    outcome = "the job failed with this error" if reply.accepted else f"the job is unchanged ({reply.reason})"
    return PayloadTooLarge(f"{error}; {outcome}", {"loc": ["body"], "id": job_id, "status": reply.status})
