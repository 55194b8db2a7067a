"""Worker logs under ``/api/v1/workers/{id}/logs`` (API key): what a Ray replica's process printed.

The worker record carries the replica's Ray actor id; Ray keeps that actor's stdout and stderr on its node
and reads them back from any node (:class:`orchestrator.core.worker_logs.ActorLogs`, Ray's state API in the
deployment). ``follow=true`` streams ``text/plain`` lines as the replica writes them. Outside workers (the
RunPod worker SDK over HTTP) have no logs here: 409 saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from orchestrator.api import schemas as s
from orchestrator.api.deps import Queue, State, WorkerId, require_api_key
from orchestrator.core.errors import NotReady
from orchestrator.core.worker_logs import (
    ActorLogs,
    LineSplitter,
    LogStream,
    LogTarget,
    clean_lines,
    last_lines,
    log_target,
)

log = logging.getLogger("ripple.http")

router = APIRouter(prefix="/api/v1/workers", tags=["management"], dependencies=[Depends(require_api_key)])

MAX_TAIL = 10_000


async def _target(queue: Queue, worker_id: str) -> LogTarget:
    views = {w.workerId: w.model_dump() for w in await queue.list_workers()}
    return log_target(worker_id, views.get(worker_id))


FIRST_PIECE_WAIT_S = 5.0
MAX_FOLLOWS = 32  # open follow streams per API replica, each holding one thread


class _Follower:
    """Reads a followed log in a thread of its own, handing pieces to the event loop.

    Ray's follow stream blocks until the replica writes again, so a reader whose client has gone is only
    released by the next piece (then it stops and closes Ray's stream) or the replica's end. Own threads,
    at most :data:`MAX_FOLLOWS` per process, keep those waits out of the shared thread pool.
    """

    open = 0
    _lock = threading.Lock()

    def __init__(self, pieces: Iterator[str]) -> None:
        with _Follower._lock:
            if _Follower.open >= MAX_FOLLOWS:
                raise NotReady(f"{MAX_FOLLOWS} log streams are open on this API replica; retry later")
            _Follower.open += 1
        self.pieces = pieces
        self.items: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self.stop = threading.Event()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._run, daemon=True, name="log-follow").start()

    def _put(self, item: str | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
            self._loop.call_soon_threadsafe(self.items.put_nowait, item)

    def _run(self) -> None:
        try:
            for piece in self.pieces:
                if self.stop.is_set():
                    return
                self._put(piece)
            self._put(None)
        except BaseException as exc:
            self._put(exc)
        finally:
            with contextlib.suppress(Exception):
                close = getattr(self.pieces, "close", None)
                if close is not None:
                    close()
            with _Follower._lock:
                _Follower.open -= 1


_NOTHING_YET = object()


async def _followed(follower: _Follower, first: object) -> AsyncIterator[bytes]:
    """Whole lines of the followed output, each ending with a newline, until Ray's stream ends or the
    client goes away; ``first`` is the item already read (``_NOTHING_YET``: none)."""
    lines = LineSplitter()
    try:
        item = await follower.items.get() if first is _NOTHING_YET else first
        while isinstance(item, str):
            for line in lines.feed(item):
                yield (line + "\n").encode()
            item = await follower.items.get()
        if isinstance(item, BaseException):
            log.warning("log stream ended: %s", item)
        for line in lines.flush():
            yield (line + "\n").encode()
    finally:
        follower.stop.set()


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
        follower = _Follower(reader.follow(target.actor_id, tail, stream))
        # Ray answers a missing log at once: wait briefly for the first piece so that it is a 404, not a cut
        # stream (a replica that has printed nothing yet keeps the wait short).
        first: object = _NOTHING_YET
        with contextlib.suppress(asyncio.TimeoutError):
            first = await asyncio.wait_for(follower.items.get(), FIRST_PIECE_WAIT_S)
        if isinstance(first, BaseException):
            follower.stop.set()
            raise first
        return StreamingResponse(_followed(follower, first), media_type="text/plain; charset=utf-8")
    text = await asyncio.to_thread(reader.read, target.actor_id, tail, stream)
    return s.WorkerLogs(
        workerId=target.worker_id,
        endpoint=target.endpoint,
        actorId=target.actor_id,
        nodeId=target.node_id,
        stream=stream,
        lines=last_lines(clean_lines(text), tail),
    )
