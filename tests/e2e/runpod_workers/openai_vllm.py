"""Shaped like RunPod's vLLM worker (``runpod-workers/worker-vllm``, ``src/handler.py`` and ``src/engine.py``)
for its OpenAI-compatible routes, over a fake engine (no model download).

The job input is ``{"openai_route": "/v1/...", "openai_input": <the OpenAI request>}``. As the real worker
does with ``RAW_OPENAI_OUTPUT`` (its default): for ``"stream": true`` it yields server-sent-event text, a
batch of ``BATCH`` events per chunk, the last one ending with ``data: [DONE]``; otherwise one OpenAI
response object; ``/v1/models`` yields the model list; an unknown model yields vLLM's ``ErrorResponse``.
The async generator handler is started with ``concurrency_modifier`` and ``return_aggregate_stream``.
Every job prints a line (``openai-vllm: ...``) for the log tests.
"""

import asyncio
import json
import time

import runpod

MODEL = "fake/tiny-llm"
BATCH = 2


class FakeEngine:
    """Stands in for vLLM: yields the words of a fixed answer ``sleep_s`` apart."""

    async def generate(self, prompt, max_tokens, sleep_s):
        words = f"echo: {prompt}".split()
        for word in words[:max_tokens]:
            await asyncio.sleep(sleep_s)
            yield word


engine = FakeEngine()


def _error(message, type_, code):
    return {"object": "error", "message": message, "type": type_, "param": None, "code": code}


def _prompt(route, body):
    if route == "/v1/chat/completions":
        return " ".join(
            str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user"
        )
    return str(body.get("prompt", ""))


def _chunk(route, request_id, created, word, finish):
    if route == "/v1/chat/completions":
        delta = {"role": "assistant", "content": word} if word is not None else {}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": word or "", "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {"id": request_id, "object": obj, "created": created, "model": MODEL, "choices": [choice]}


def _response(route, request_id, created, text, n_prompt, n_completion):
    usage = {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_completion,
        "total_tokens": n_prompt + n_completion,
    }
    if route == "/v1/chat/completions":
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
        obj = "text_completion"
    return {
        "id": request_id,
        "object": obj,
        "created": created,
        "model": MODEL,
        "choices": [choice],
        "usage": usage,
    }


async def handler(job):
    job_input = job["input"]
    route = job_input.get("openai_route")
    body = job_input.get("openai_input") or {}
    print(f"openai-vllm: job {job['id']} route {route}", flush=True)
    if route == "/v1/models":
        yield {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "ripple"}],
        }
        return
    if route not in ("/v1/chat/completions", "/v1/completions"):
        yield _error(f"route {route} is not supported", "BadRequestError", 400)
        return
    if body.get("raise"):
        raise RuntimeError(str(body["raise"]))
    if body.get("model") != MODEL:
        yield _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404)
        return
    request_id = f"cmpl-{job['id']}"
    created = int(time.time())
    prompt = _prompt(route, body)
    words = engine.generate(prompt, int(body.get("max_tokens") or 16), float(body.get("sleep_s", 0.0)))
    if not body.get("stream"):
        text = " ".join([w async for w in words])
        yield _response(route, request_id, created, text, len(prompt.split()), len(text.split()))
        return
    batch = ""
    count = 0
    first = True
    async for word in words:
        batch += (
            "data: "
            + json.dumps(_chunk(route, request_id, created, word if first else " " + word, None))
            + "\n\n"
        )
        first = False
        count += 1
        if count >= BATCH:
            yield batch
            batch, count = "", 0
    batch += "data: " + json.dumps(_chunk(route, request_id, created, None, "stop")) + "\n\n"
    yield batch + "data: [DONE]\n\n"


runpod.serverless.start(
    {
        "handler": handler,
        "concurrency_modifier": lambda current: 4,
        "return_aggregate_stream": True,
    }
)
