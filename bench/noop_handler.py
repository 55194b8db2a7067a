"""A no-op handler for benchmarks: ``"handler": "bench.noop_handler:noop"`` returns its input at once."""

from __future__ import annotations

from typing import Any


async def noop(job: dict[str, Any]) -> Any:
    """Return the job's input unchanged (async: runs on the replica's event loop, no thread hop)."""
    return job.get("input")
