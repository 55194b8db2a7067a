"""Shaped like RunPod's vLLM worker: an async generator, a ``concurrency_modifier`` and
``return_aggregate_stream``, started under ``if __name__ == "__main__":``.

The modifier ramps by one per call up to ``MAX_CONCURRENCY``, so it only reaches that value when it is
called again with what it returned before, as the SDK's job scaler does before each take.
"""

import asyncio
import time

import runpod

MAX_CONCURRENCY = 3


class FakeEngine:
    """Stands in for the vLLM engine: yields ``n`` tokens ``sleep_s`` apart."""

    async def generate(self, prompt, n, sleep_s):
        for i in range(n):
            await asyncio.sleep(sleep_s)
            yield f"{prompt}-{i}"


engine = FakeEngine()


def adjust_concurrency(current_concurrency):
    return min(current_concurrency + 1, MAX_CONCURRENCY)


async def handler(job):
    job_input = job["input"]
    started = time.time()
    async for token in engine.generate(
        job_input.get("prompt", "p"), int(job_input.get("n", 3)), float(job_input.get("sleep_s", 0.1))
    ):
        yield {"token": token, "start": started, "at": time.time()}


if __name__ == "__main__":
    runpod.serverless.start(
        {
            "handler": handler,
            "concurrency_modifier": lambda current: adjust_concurrency(current),
            "return_aggregate_stream": True,
        }
    )
