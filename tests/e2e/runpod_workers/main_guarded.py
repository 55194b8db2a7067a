"""A worker file whose ``start`` call is guarded: importing it never calls ``start``."""

import asyncio
import os

import runpod


async def handler(job):
    await asyncio.sleep(0.05)
    return {"guarded": job["input"], "pid": os.getpid(), "attempt_keys": sorted(job)}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
