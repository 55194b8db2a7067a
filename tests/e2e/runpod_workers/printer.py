"""A RunPod worker file that prints: known lines on import and per job (stdout), one per job on stderr.
Read back by ``tests/e2e/test_own_head.py`` through ``GET /api/v1/workers/{id}/logs`` and
``ripple logs``."""

import sys

import runpod

print("printer: loaded")


def handler(job):
    tag = job["input"]["tag"]
    for i in range(int(job["input"].get("lines", 3))):
        print(f"printer: {tag} line {i}")
    print(f"printer: {tag} on stderr", file=sys.stderr)
    return {"tag": tag}


runpod.serverless.start({"handler": handler})
