"""Worker logs under ``/api/v1/workers/{id}/logs`` (API key): what a Ray replica's process printed.

The worker record carries the replica's Ray actor id; Ray keeps that actor's stdout and stderr on its node
and reads them back from any node (:class:`orchestrator.core.worker_logs.ActorLogs`, Ray's state API in the
deployment). ``follow=true`` streams ``text/plain`` lines as the replica writes them. Outside workers (the
RunPod worker SDK over HTTP) have no logs here: 409 saying so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from orchestrator.api import schemas as s
from orchestrator.api.deps import Queue, State, WorkerId, require_api_key
from orchestrator.core.worker_logs import (
    ActorLogs,
    LineSplitter,
    LogStream,
    LogTarget,
    clean_lines,
    last_lines,
    log_target,
)

router = APIRouter(prefix="/api/v1/workers", tags=["management"], dependencies=[Depends(require_api_key)])

MAX_TAIL = 10_000


async def _target(queue: Queue, worker_id: str) -> LogTarget:
    views = {w.workerId: w.model_dump() for w in await queue.list_workers()}
    return log_target(worker_id, views.get(worker_id))


FIRST_PIECE_WAIT_S = 5.0


async def _followed(pieces: Iterator[str], pending: asyncio.Future[str | None]) -> AsyncIterator[bytes]:
    """Whole lines of the followed output, each ending with a newline; each blocking read of Ray's stream
    runs in a thread, ``pending`` being the first."""
    lines = LineSplitter()
    try:
        while (piece := await pending) is not None:
            for line in lines.feed(piece):
                yield (line + "\n").encode()
            pending = asyncio.ensure_future(asyncio.to_thread(next, pieces, None))
        for line in lines.flush():
            yield (line + "\n").encode()
    finally:
        close = getattr(pieces, "close", None)
        if close is not None and pending.done():
            close()


@router.get(
    "/{worker_id}/logs", response_model=s.WorkerLogs, responses={200: {"content": {"text/plain": {}}}}
)
async def worker_logs(
    worker_id: WorkerId,
    queue: Queue,
    state: State,
    tail: Annotated[int, Query(ge=-1, le=MAX_TAIL, description="Last N lines; -1 for all.")] = 100,
    stream: Annotated[LogStream, Query(description="stdout (what it printed) or stderr.")] = "stdout",
    follow: Annotated[bool, Query(description="Keep streaming new lines (text/plain).")] = False,
) -> s.WorkerLogs | StreamingResponse:
    """The replica's last ``tail`` lines of ``stream`` (404 unknown worker or no log in Ray, 409 outside
    worker, 503 when Ray's log service is unreachable)."""
    target = await _target(queue, worker_id)
    reader: ActorLogs = state.require_actor_logs()
    if follow:
        pieces = reader.follow(target.actor_id, tail, stream)
        pending = asyncio.ensure_future(asyncio.to_thread(next, pieces, None))
        # Ray answers a missing log at once: wait briefly for the first piece so that it is a 404, not a cut
        # stream (a replica that has printed nothing yet keeps the wait short).
        await asyncio.wait({pending}, timeout=FIRST_PIECE_WAIT_S)
        if pending.done() and (exc := pending.exception()) is not None:
            raise exc
        return StreamingResponse(_followed(pieces, pending), media_type="text/plain; charset=utf-8")
    text = await asyncio.to_thread(reader.read, target.actor_id, tail, stream)
    return s.WorkerLogs(
        workerId=target.worker_id,
        endpoint=target.endpoint,
        actorId=target.actor_id,
        nodeId=target.node_id,
        stream=stream,
        lines=last_lines(clean_lines(text), tail),
    )
