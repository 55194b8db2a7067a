"""OpenAI-compatible routes under ``/v2/{endpoint}/openai/v1`` (client API key), as RunPod serves them for
LLM workers: ``POST /chat/completions``, ``POST /completions``, ``GET /models``.

Each request becomes one job whose input is ``{"openai_route": "/v1/...", "openai_input": <body>}``
(:mod:`orchestrator.core.openai_compat`). Without ``stream`` the reply is the OpenAI response object the
handler produced. With ``"stream": true`` it is server-sent events: each chunk the handler yields is relayed
as soon as the queue has it (the route holds on the queue's stream read, which wakes on the next chunk or the
job's end; no polling), then ``data: [DONE]``. A job that fails before its first chunk is an HTTP error in
OpenAI's shape; one that fails mid-stream ends the stream with an error event. A client that goes away
cancels its job. The official ``openai`` client works with ``base_url=".../v2/ENDPOINT/openai/v1"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from orchestrator.api import schemas as s
from orchestrator.api.deps import EndpointName, Queue, QueueClient, require_client_key, utf8_body
from orchestrator.api.middleware import current_request_id
from orchestrator.core import openai_compat as oa
from orchestrator.core.errors import RippleError
from orchestrator.core.models import RunRequest

log = logging.getLogger("ripple.http")

router = APIRouter(
    prefix="/v2/{endpoint}/openai/v1",
    tags=["openai"],
    dependencies=[Depends(require_client_key), Depends(utf8_body)],
)

FINAL = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"})
MAX_WAIT_S = 600.0  # the openai client's own default timeout: a job not final by then is cancelled
READ_WAIT_S = 15.0  # one held stream read; the loop re-reads until the job ends
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _error(err: oa.OpenAIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status_code)


@router.post("/chat/completions", response_model=None)
async def chat_completions(endpoint: EndpointName, request: Request, queue: Queue) -> Response:
    """An OpenAI chat completion (SSE with ``"stream": true``)."""
    return await _serve(endpoint, oa.CHAT_COMPLETIONS, request, queue)


@router.post("/completions", response_model=None)
async def completions(endpoint: EndpointName, request: Request, queue: Queue) -> Response:
    """An OpenAI text completion (SSE with ``"stream": true``)."""
    return await _serve(endpoint, oa.COMPLETIONS, request, queue)


@router.get("/models", response_model=None)
async def models(endpoint: EndpointName, request: Request, queue: Queue) -> Response:
    """The models the worker serves: a job with ``openai_route: "/v1/models"``."""
    return await _serve(endpoint, oa.MODELS, request, queue)


async def _serve(endpoint: str, route: str, request: Request, queue: QueueClient) -> Response:
    body: Any = None
    if route != oa.MODELS:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _error(oa.OpenAIError(400, "body is not valid JSON", "invalid_request_error"))
    try:
        job_input = oa.job_input(route, body)
        (job_id,) = await queue.submit(
            endpoint, [RunRequest(input=job_input)], request_id=current_request_id()
        )
    except RippleError as exc:
        return _error(oa.error_of_exception(exc.status_code, exc.message))
    if oa.wants_stream(body):
        return await _stream(endpoint, job_id, queue)
    return await _reply(endpoint, job_id, queue)


async def _cancel(queue: QueueClient, endpoint: str, job_id: str) -> None:
    """Best effort: nobody waits for this job any more."""
    with contextlib.suppress(Exception):
        await queue.cancel(endpoint, job_id, request_id=current_request_id())


async def _reply(endpoint: str, job_id: str, queue: QueueClient) -> Response:
    """Hold until the job is final; its output as the OpenAI response object."""
    deadline = time.monotonic() + MAX_WAIT_S
    final = False
    try:
        while True:
            status = await queue.wait_final(endpoint, job_id, min(300.0, deadline - time.monotonic()))
            final = status.status in FINAL
            if final or time.monotonic() >= deadline:
                break
    finally:
        if not final:  # the wait ran out or the client went away
            await _cancel(queue, endpoint, job_id)
    if status.status != "COMPLETED":
        return _error(oa.job_error(status.status, status.error, job_id))
    chunks: list[Any] = []
    if status.output is None or status.output == []:
        chunks = [c.output for c in (await queue.stream(endpoint, job_id)).stream]
    response = oa.response_of(status.output, chunks)
    if (err := oa.error_object(response)) is not None:
        return _error(err)
    return JSONResponse(response)


async def _read(queue: QueueClient, endpoint: str, job_id: str, deadline: float) -> s.StreamReply:
    """The next chunks (held until one arrives or the job ends, at most until ``deadline``)."""
    while True:
        reply = await queue.stream(endpoint, job_id, min(READ_WAIT_S, max(0.0, deadline - time.monotonic())))
        if reply.stream or reply.status in FINAL or time.monotonic() >= deadline:
            return reply


async def _stream(endpoint: str, job_id: str, queue: QueueClient) -> Response:
    """Server-sent events relaying the job's stream; errors before the first chunk are HTTP errors."""
    deadline = time.monotonic() + MAX_WAIT_S
    try:
        first = await _read(queue, endpoint, job_id, deadline)
    except BaseException:
        await _cancel(queue, endpoint, job_id)
        raise
    if not first.stream:
        status = await queue.status(endpoint, job_id)
        if status.status != "COMPLETED":
            if status.status not in FINAL:
                await _cancel(queue, endpoint, job_id)
            return _error(oa.job_error(status.status, status.error, job_id))
        # A handler that returned instead of yielding: its output is the one event.
        response = oa.response_of(status.output, [])
        if (err := oa.error_object(response)) is not None:
            return _error(err)
        first = first.model_copy(update={"stream": [s.StreamChunk(output=response)]})
    elif (err := oa.error_object(first.stream[0].output)) is not None:
        return _error(err)
    return StreamingResponse(
        _events(endpoint, job_id, queue, first, deadline), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def _events(
    endpoint: str, job_id: str, queue: QueueClient, reply: s.StreamReply, deadline: float
) -> AsyncIterator[bytes]:
    done_sent = False
    final = False
    try:
        while True:
            for chunk in reply.stream:
                if (err := oa.error_object(chunk.output)) is not None:
                    yield oa.error_frame(err)
                    continue
                frames, done = oa.sse_frames(chunk.output)
                done_sent = done_sent or done
                yield frames
            if reply.status in FINAL and not reply.stream:
                final = True
                if reply.status != "COMPLETED":
                    status = await queue.status(endpoint, job_id)
                    yield oa.error_frame(oa.job_error(status.status, status.error, job_id))
                break
            if time.monotonic() >= deadline:
                yield oa.error_frame(oa.job_error(reply.status, None, job_id))
                break
            reply = await _read(queue, endpoint, job_id, deadline)
        if not done_sent:
            yield oa.DONE_FRAME
    finally:
        if not final:  # the client went away, or the wait ran out
            await asyncio.shield(_cancel(queue, endpoint, job_id))
