"""A RunPod worker file, exactly as RunPod's template writes it, that also runs unchanged in Ripple.

On RunPod (or as an outside worker):  python examples/runpod_worker.py
In Ripple (in-cluster replicas):      ripple endpoint create words --handler examples.runpod_worker --gpus 0

It loads its "model" at import, streams words as an async generator with an aggregate final output, lets
more jobs run at once as the SDK's ``concurrency_modifier`` allows, reports progress, and fails a job (not
the worker) on bad input.
"""

import asyncio
import time

import runpod

VOCABULARY = ["ripple", "runs", "runpod", "workers", "unchanged"]  # the "model", loaded once per worker
MAX_CONCURRENCY = 4


async def handler(job):
    job_input = job["input"]
    count = job_input.get("words")
    if not isinstance(count, int) or count < 0:
        yield {"error": f"'words' must be a non-negative integer, got {count!r}"}
        return
    runpod.serverless.progress_update(job, {"started": time.time()})
    for i in range(count):
        await asyncio.sleep(float(job_input.get("sleep_s", 0.05)))
        yield VOCABULARY[i % len(VOCABULARY)]


runpod.serverless.start(
    {
        "handler": handler,
        "concurrency_modifier": lambda current: min(current + 1, MAX_CONCURRENCY),
        "return_aggregate_stream": True,
    }
)
