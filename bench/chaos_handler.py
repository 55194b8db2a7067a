"""Handlers of the chaos soak (``bench/chaos.py``). Each run of a job appends one line to the file named by
``input["log"]`` *before* it returns: ``<job id> <attempt> <pid>``, so the soak can count how many times each
job really ran (a side channel independent of the queue). Written with one ``O_APPEND`` write, so lines of
concurrent runs never interleave.

``input["kind"]``: ``short`` (returns at once), ``long`` (sleeps ``input["sleep_s"]``), ``fail`` (raises),
``stream`` (the ``stream`` handler yields ``input["chunks"]`` chunks, ``input["sleep_s"]`` apart).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any


def _record(job: dict[str, Any]) -> None:
    data = job.get("input") or {}
    path = data.get("log") if isinstance(data, dict) else None
    if not path:
        return
    line = f"{job.get('id')} {job.get('attempt', 0)} {os.getpid()}\n".encode()
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def handle(job: dict[str, Any]) -> Any:
    """``short``/``long``/``fail`` jobs: sleep ``sleep_s`` (0 by default), record the run, then return
    ``{"ok": kind, "n": input["n"]}`` or raise for ``fail``."""
    data = job.get("input") or {}
    await asyncio.sleep(float(data.get("sleep_s", 0)))
    _record(job)
    if data.get("kind") == "fail":
        raise RuntimeError(f"chaos: job {data.get('n')} fails on purpose")
    return {"ok": data.get("kind"), "n": data.get("n")}


async def stream(job: dict[str, Any]) -> AsyncIterator[Any]:
    """Yield ``chunks`` chunks ``sleep_s`` apart, then record the run (the last step before the result)."""
    data = job.get("input") or {}
    for i in range(int(data.get("chunks", 3))):
        await asyncio.sleep(float(data.get("sleep_s", 0)))
        yield {"chunk": i, "n": data.get("n")}
    _record(job)
