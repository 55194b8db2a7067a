"""A generator handler with ``return_aggregate_stream``: chunks stream to /stream, the output is their list.

Input: ``n`` chunks ``sleep_s`` apart; ``fail_at`` yields an error chunk at that index instead.
"""

import time

import runpod


def handler(job):
    job_input = job["input"]
    for i in range(int(job_input.get("n", 3))):
        time.sleep(float(job_input.get("sleep_s", 0.1)))
        if job_input.get("fail_at") == i:
            yield {"error": f"chunk {i} failed"}
            return
        yield {"token": f"t{i}"}


runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
