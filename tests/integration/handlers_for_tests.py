"""Handlers the integration tests run inside real WorkerReplica actors.

Refer to them as ``tests.integration.handlers_for_tests:NAME``.

Every handler reports where and when it ran (pid, ``CUDA_VISIBLE_DEVICES``, start and end times), and, when
the input names a ``log`` file, appends one JSON line per start and end to it: the tests' proof of how often
a job really ran.

The module itself is the replica's cold start. Two environment variables, set per endpoint through its
``runtimeEnv``, change what importing it does:

- ``RIPPLE_TEST_INIT_S``: sleep this long at import (a slow model load);
- ``RIPPLE_TEST_FAIL_IMPORT``: raise at import (a handler that cannot load).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from typing import Any

if os.environ.get("RIPPLE_TEST_FAIL_IMPORT"):
    raise RuntimeError("handlers_for_tests: import failed on purpose (RIPPLE_TEST_FAIL_IMPORT)")

INIT_S = float(os.environ.get("RIPPLE_TEST_INIT_S", "0") or 0)
if INIT_S > 0:
    time.sleep(INIT_S)


def _input(job: dict[str, Any]) -> dict[str, Any]:
    data = job.get("input")
    return data if isinstance(data, dict) else {}


def _record(job: dict[str, Any], event: str) -> None:
    path = _input(job).get("log")
    if path:
        line = json.dumps({"job": job["id"], "event": event, "pid": os.getpid(), "at": time.time()})
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _where(started_s: float) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "start": started_s,
        "end": time.time(),
    }


def work_sync(job: dict[str, Any]) -> dict[str, Any]:
    """Blocking handler: prints ``say`` (stdout), sleeps ``sleep_s`` in its thread; raises when ``fail`` is
    set."""
    started = time.time()
    _record(job, "start")
    data = _input(job)
    if data.get("say"):
        print(data["say"])
    time.sleep(float(data.get("sleep_s", 0)))
    if data.get("fail"):
        raise RuntimeError(str(data["fail"]))
    _record(job, "end")
    return {"echo": data.get("value"), **_where(started)}


async def work_async(job: dict[str, Any]) -> dict[str, Any]:
    """Async handler: awaits ``sleep_s``; raises when ``fail`` is set."""
    started = time.time()
    _record(job, "start")
    data = _input(job)
    await asyncio.sleep(float(data.get("sleep_s", 0)))
    if data.get("fail"):
        raise RuntimeError(str(data["fail"]))
    _record(job, "end")
    return {"echo": data.get("value"), **_where(started)}


def chunks(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Sync generator: ``n`` chunks, ``sleep_s`` apart; each carries its index and when it was made."""
    started = time.time()
    _record(job, "start")
    data = _input(job)
    n = int(data.get("n", 3))
    pause_s = float(data.get("sleep_s", 0.05))
    for k in range(n):
        time.sleep(pause_s)
        yield {"i": k, "at": time.time(), "start": started, "pid": os.getpid()}
    _record(job, "end")


def hang(job: dict[str, Any]) -> None:
    """Never returns: blocks its thread forever (sync code cannot be interrupted)."""
    _record(job, "start")
    while True:
        time.sleep(1.0)


async def blocks_loop(job: dict[str, Any]) -> dict[str, Any]:
    """An async handler that never awaits: blocks the replica's event loop for ``block_s`` seconds (as
    a RunPod worker file's ``async def handler`` calling a model synchronously does)."""
    started = time.time()
    _record(job, "start")
    time.sleep(float(_input(job).get("block_s", 3600)))
    _record(job, "end")
    return {"blocked_s": float(_input(job).get("block_s", 3600)), **_where(started)}


async def work_v2(job: dict[str, Any]) -> dict[str, Any]:
    """``work_async``'s next version (a handler change a rollout carries): its output says ``v2``."""
    out = await work_async(job)
    return {**out, "handler": "v2"}
