"""User handlers: loading ``"module:function"`` and calling it the way RunPod handlers are called.

A handler receives the job dict (``{"id", "input"}``) and is a plain function, an ``async def``, a
generator or an async generator (streaming). Sync code runs in a thread of the replica's executor so the
event loop keeps heartbeating; streams hand each chunk to ``on_chunk`` as it is produced.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from orchestrator.core.errors import InvalidInput

_END = object()


@dataclass(frozen=True)
class Handler:
    """A loaded handler and how to call it."""

    ref: str
    fn: Callable[..., Any]
    kind: str  # "sync" | "async" | "gen" | "agen"

    @property
    def streams(self) -> bool:
        return self.kind in ("gen", "agen")


def load_handler(ref: str) -> Handler:
    """Import ``module:function`` (this import is the replica's cold start: module-level model loads run).

    Raises:
        InvalidInput: the reference is malformed or does not name a callable.
        Exception: whatever the module raises on import (reported with its traceback).
    """
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise InvalidInput(f"handler {ref!r} is not of the form 'module:function'")
    fn = getattr(importlib.import_module(module_name), attr, None)
    if not callable(fn):
        raise InvalidInput(f"handler {ref!r}: {attr!r} is not a callable in module {module_name!r}")
    if inspect.isasyncgenfunction(fn):
        kind = "agen"
    elif inspect.isgeneratorfunction(fn):
        kind = "gen"
    elif inspect.iscoroutinefunction(fn):
        kind = "async"
    else:
        kind = "sync"
    return Handler(ref, fn, kind)


async def invoke(
    handler: Handler, job: dict[str, Any], executor: Executor, on_chunk: Callable[[Any], Awaitable[None]]
) -> Any:
    """Run the handler on one job; returns its output (for streams, the list of chunks).

    Raises whatever the handler raises; ``asyncio.CancelledError`` when the job is stopped (sync code
    already running in a thread cannot be interrupted and is abandoned).
    """
    loop = asyncio.get_running_loop()
    if handler.kind == "async":
        return await handler.fn(job)
    if handler.kind == "sync":
        return await loop.run_in_executor(executor, handler.fn, job)
    chunks: list[Any] = []
    if handler.kind == "agen":
        async for chunk in handler.fn(job):
            chunks.append(chunk)
            await on_chunk(chunk)
        return chunks
    gen = await loop.run_in_executor(executor, handler.fn, job)
    while True:
        chunk = await loop.run_in_executor(executor, next, gen, _END)
        if chunk is _END:
            return chunks
        chunks.append(chunk)
        await on_chunk(chunk)


def error_body(exc: BaseException, worker_id: str) -> dict[str, Any]:
    """The job-done body for a handler exception, in the RunPod SDK's shape (error as a JSON string)."""
    return {
        "error": json.dumps(
            {
                "error_type": str(type(exc)),
                "error_message": str(exc),
                "error_traceback": "".join(traceback.format_exception(exc)),
                "worker_id": worker_id,
            }
        )
    }


def result_body(output: Any) -> dict[str, Any]:
    """The job-done body for a handler's return value (a dict with ``error`` fails the job, as in RunPod)."""
    if isinstance(output, dict) and output.get("error"):
        rest = {k: v for k, v in output.items() if k != "error"}
        return {"output": rest or None, "error": output["error"]}
    return {"output": output}
