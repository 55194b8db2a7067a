"""Example handlers that run unchanged inside Ripple (``"handler": "examples.handlers:echo"``) and under the
RunPod worker SDK (``python examples/handlers.py echo``).

- ``echo``: returns its input; ``{"sleep_s": x}`` waits first, ``{"fail": "msg"}`` raises, ``{"progress": n}``
  posts n progress updates (under the SDK) before answering, ``{"pad_bytes": n}`` adds n bytes to the output
  (a large output).
- ``stream``: a generator yielding ``{"i": k}`` for k < ``n`` (default 3), ``sleep_s`` apart.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any


async def echo(job: dict[str, Any]) -> Any:
    """Return the input; sleep, fail or report progress on request."""
    data = job.get("input") or {}
    if isinstance(data, dict):
        if data.get("progress"):
            try:
                import runpod

                for k in range(int(data["progress"])):
                    runpod.serverless.progress_update(job, {"step": k})
            except ImportError:
                pass
        if data.get("sleep_s"):
            await asyncio.sleep(float(data["sleep_s"]))
        if data.get("fail"):
            raise RuntimeError(str(data["fail"]))
        if data.get("pad_bytes"):
            return {"echo": data, "pad": "x" * int(data["pad_bytes"])}
    return {"echo": data}


def stream(job: dict[str, Any]) -> Iterator[dict[str, int]]:
    """Yield ``n`` chunks."""
    data = job.get("input") or {}
    n = int(data.get("n", 3)) if isinstance(data, dict) else 3
    pause_s = float(data.get("sleep_s", 0.05)) if isinstance(data, dict) else 0.05
    for k in range(n):
        time.sleep(pause_s)
        yield {"i": k}


if __name__ == "__main__":
    import runpod

    name = sys.argv[1] if len(sys.argv) > 1 else "echo"
    fn = {"echo": echo, "stream": stream}[name]
    runpod.serverless.start({"handler": fn, "return_aggregate_stream": name == "stream"})
