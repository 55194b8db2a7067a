"""User handlers: finding them in a module, and running one job the way RunPod's worker SDK does.

An endpoint's ``handler`` is ``"module:function"`` or just ``"module"`` (``"handler"``, ``"src.handler"``).
Importing the module is the replica's cold start (module-level model loads run). The handler is found by
this rule (see docs/runpod.md):

1. ``module:function``: that function. When the module called ``runpod.serverless.start(config)`` on import
   with that same function as its ``handler``, the config's options apply too.
2. ``module`` whose import called ``runpod.serverless.start(config)`` (RunPod's template, unguarded): the
   config's ``handler`` and options. Ripple captured the call; the SDK's own loop never ran.
3. ``module`` with ``start`` under ``if __name__ == "__main__":``: the argument of that ``start(...)`` call,
   evaluated in the module's namespace; when that is not possible, the module's ``handler`` function with
   the SDK's default options.

A handler receives the job dict as the SDK passes it (``{"id", "input", ...}``) and is a plain function, an
``async def``, a generator or an async generator (streaming). Sync code runs in a thread of the replica's
executor so the event loop keeps heartbeating; streams hand each chunk to ``on_chunk`` as it is produced.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.core import runpod_worker as rw
from orchestrator.core.errors import InvalidInput
from orchestrator.core.jobs import encode_output

_END = object()


@dataclass(frozen=True)
class Handler:
    """A loaded handler, how to call it, and the worker SDK options it was started with."""

    ref: str
    fn: Callable[..., Any]
    kind: str  # "sync" | "async" | "gen" | "agen"
    options: rw.WorkerOptions = field(default_factory=rw.WorkerOptions)
    source: str = "function"  # "function" | "start" | "main-block" | "handler-attribute"

    @property
    def streams(self) -> bool:
        return self.kind in ("gen", "agen")


def _kind(fn: Callable[..., Any]) -> str:
    if inspect.isasyncgenfunction(fn):
        return "agen"
    if inspect.isgeneratorfunction(fn):
        return "gen"
    if inspect.iscoroutinefunction(fn):
        return "async"
    return "sync"


def _callable_attr(module: Any, name: str) -> Callable[..., Any] | None:
    value: Any = getattr(module, name, None)
    return value if callable(value) else None


def load_handler(ref: str) -> Handler:
    """Import the module of ``ref`` and find its handler (the rule in the module docstring).

    Raises:
        InvalidInput: the reference is malformed, names no callable, or the module offers no handler.
        Exception: whatever the module raises on import (reported with its traceback).
    """
    module_name, sep, attr = ref.partition(":")
    if not module_name or (sep and not attr):
        raise InvalidInput(f"handler {ref!r} is not of the form 'module' or 'module:function'")
    rw.install()
    with rw.capture_starts() as started:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # the same error, saying where to put what is missing
            hint = missing_module_hint(module_name, exc.name)
            raise ModuleNotFoundError(f"{exc.msg}: {hint}", name=exc.name, path=exc.path) from exc
    config = rw.started_config(module_name)
    if config is None and started:  # start() called by a module the handler's module imports
        config = started[0]
    if attr:
        fn = _callable_attr(module, attr)
        if fn is None:
            raise InvalidInput(f"handler {ref!r}: {attr!r} is not a callable in module {module_name!r}")
        options = rw.WorkerOptions()
        if isinstance(config, dict) and config.get("handler") == fn:  # the same function
            options = rw.parse_start_config(config, module_name).options
        return Handler(ref, fn, _kind(fn), options, "function")
    if config is not None:
        sc = rw.parse_start_config(config, module_name)
        return Handler(ref, sc.handler, _kind(sc.handler), sc.options, "start")
    config = rw.main_block_config(module)
    if config is not None:
        sc = rw.parse_start_config(config, module_name)
        return Handler(ref, sc.handler, _kind(sc.handler), sc.options, "main-block")
    default = _callable_attr(module, "handler")
    if default is not None:
        return Handler(ref, default, _kind(default), rw.WorkerOptions(), "handler-attribute")
    raise InvalidInput(
        f"handler {ref!r}: module {module_name!r} neither calls runpod.serverless.start() nor defines a "
        f"function named 'handler'; name the function as '{module_name}:FUNCTION'"
    )


def missing_module_hint(handler_module: str, missing: str | None) -> str:
    """What to do when importing ``handler_module`` found no module ``missing``: the handler's own code
    is not on the worker's path (deploy its folder, or start Ripple where it lives), or one of its
    dependencies is not installed there (``requirements.txt``, or the endpoint's ``runtimeEnv.pip``)."""
    if missing is None or handler_module == missing or handler_module.startswith(f"{missing}."):
        return (
            "the handler's own code is not on this worker's path: deploy its folder with `ripple deploy "
            "PATH --endpoint NAME`, or start Ripple in the directory that holds it"
        )
    return (
        f"a module the handler imports is not installed on this worker: add the package that provides "
        f"{missing.split('.')[0]!r} to the folder's requirements.txt (`ripple deploy` installs it) or to "
        "runtimeEnv.pip"
    )


class StreamError(Exception):
    """A stream yielded an error chunk: the job fails with ``error``; ``chunks`` were streamed before."""

    def __init__(self, error: str, chunks: list[Any]) -> None:
        super().__init__(error)
        self.error = error
        self.chunks = chunks


class ChunkNotKept(Exception):
    """Raised by a stream's ``on_chunk`` when the job store could not keep the chunk (full, or not
    answering): the job fails with this message, as Ripple's failure, not the handler's."""


async def invoke(
    handler: Handler, job: dict[str, Any], executor: Executor, on_chunk: Callable[[Any], Awaitable[None]]
) -> Any:
    """Run the handler on one job; returns its output (for streams, the list of chunks).

    Raises whatever the handler raises; ``asyncio.CancelledError`` when the job is stopped (sync code
    already running in a thread cannot be interrupted and is abandoned). A stream stops early at a chunk
    that is an error (:func:`runpod_worker.chunk_error`), which is neither handed on nor returned.
    """
    loop = asyncio.get_running_loop()
    if handler.kind == "async":
        return await handler.fn(job)
    if handler.kind == "sync":
        return await loop.run_in_executor(executor, handler.fn, job)
    chunks: list[Any] = []
    if handler.kind == "agen":
        async for chunk in handler.fn(job):
            _check_chunk(chunk, chunks)
            chunks.append(chunk)
            await on_chunk(chunk)
        return chunks
    gen = await loop.run_in_executor(executor, handler.fn, job)
    while True:
        chunk = await loop.run_in_executor(executor, next, gen, _END)
        if chunk is _END:
            return chunks
        _check_chunk(chunk, chunks)
        chunks.append(chunk)
        await on_chunk(chunk)


def _check_chunk(chunk: Any, before: list[Any]) -> None:
    """Raise StreamError for a chunk that ends the stream: an error chunk, or one that is not JSON."""
    if (error := rw.chunk_error(chunk)) is not None:
        raise StreamError(error, before)
    if (problem := rw.json_problem(chunk)) is not None:
        raise StreamError(f"stream chunk {len(before)} is not JSON: {problem}", before)


async def run_job(
    handler: Handler,
    job: dict[str, Any],
    executor: Executor,
    on_chunk: Callable[[Any], Awaitable[None]],
    worker_id: str,
) -> rw.JobOutcome:
    """Run one job and interpret the result as the worker SDK does (``runpod_worker.outcome_of_*``).

    Never raises for what the handler does: an exception, ``sys.exit()`` included, is a FAILED outcome
    with its message and traceback; an output (or an error, or a stream chunk) that is not JSON is a FAILED
    outcome saying why; a chunk ``on_chunk`` could not keep (:class:`ChunkNotKept`) is a FAILED outcome
    with its message, marked as Ripple's fault. The outcome's body is JSON-serialisable, and a returned
    output comes encoded as the store keeps it (``output_json``). ``asyncio.CancelledError`` propagates
    when the job is stopped.
    """
    try:
        output = await invoke(handler, job, executor, on_chunk)
    except StreamError as exc:
        return rw.outcome_of_stream(exc.chunks, exc.error, handler.options)
    except ChunkNotKept as exc:  # the stream cannot go on where its reader finds it: not the handler's fault
        return replace(rw.failed_outcome(str(exc), handler.options), ripples_fault=True)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the job's failure, not the replica's
        return rw.outcome_of_exception(exc, worker_id, handler.options)
    if handler.streams:
        return rw.outcome_of_stream(output, None, handler.options)
    try:
        outcome = rw.outcome_of_return(output, handler.options)
        # Encoded once, here: the check that it is JSON is the encoding the store keeps.
        output_json = encode_output(outcome.body.get("output"))
    except (TypeError, ValueError, RecursionError) as exc:  # an ``error`` or an output JSON cannot carry
        return rw.not_json_outcome(str(exc), handler.options)
    return replace(outcome, output_json=output_json)
