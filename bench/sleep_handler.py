"""A handler that holds its replica for a while: ``"bench.sleep_handler:handle"`` sleeps the job's
``input["sleep_s"]`` seconds (0 when absent), then returns its input."""

from __future__ import annotations

import asyncio
from typing import Any


async def handle(job: dict[str, Any]) -> Any:
    """Sleep input["sleep_s"] seconds (async: other jobs of the replica are not blocked), return the input."""
    data = job.get("input") or {}
    await asyncio.sleep(float(data.get("sleep_s", 0)) if isinstance(data, dict) else 0.0)
    return data
