"""RunPod's template: load the model at import, then call ``runpod.serverless.start`` at module level.

Input keys: ``raise`` (raise with that message), ``error`` (return ``{"error": ...}``), ``exit`` (call
``sys.exit`` with it), ``bytes`` (return it encoded: not JSON), ``progress`` (that many ``progress_update``
calls, ``sleep_s`` apart), ``exit_once`` (a marker file path: the first run
creates it and kills its own process mid-job with ``os._exit``; later runs answer normally).
"""

import os
import sys
import time

import runpod

MODEL = {"loaded_at": time.time(), "pid": os.getpid()}  # the "model load": runs once per process


def handler(job):
    job_input = job["input"]
    if job_input.get("raise"):
        raise ValueError(job_input["raise"])
    if job_input.get("error"):
        return {"error": job_input["error"], "partial": True}
    if "exit" in job_input:
        sys.exit(job_input["exit"])
    if job_input.get("bytes"):
        return {"image": job_input["bytes"].encode()}
    marker = job_input.get("exit_once")
    if marker and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(0.5)
        os._exit(1)  # the process dies mid-job (as a segfault or an OOM kill would)
    for step in range(int(job_input.get("progress", 0))):
        runpod.serverless.progress_update(job, {"step": step})
        time.sleep(float(job_input.get("sleep_s", 0.5)))
    return {"id": job["id"], "input": job_input, "pid": MODEL["pid"]}


runpod.serverless.start({"handler": handler})
