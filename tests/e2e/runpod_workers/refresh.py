"""A handler that asks for a fresh worker after some jobs (``"refresh_worker": True`` in its return)."""

import os

import runpod


def handler(job):
    out = {"pid": os.getpid(), "n": job["input"].get("n")}
    if job["input"].get("refresh"):
        out["refresh_worker"] = True
    return out


runpod.serverless.start({"handler": handler})
