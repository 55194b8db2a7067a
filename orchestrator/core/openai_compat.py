"""The OpenAI-compatible routes as RunPod serves them for LLM workers: pure translation between an OpenAI
request or reply and a Ripple job.

RunPod's gateway turns ``POST /v2/{endpoint}/openai/v1/chat/completions`` (and ``/completions``,
``GET /models``) into a job whose input is ``{"openai_route": "/v1/chat/completions", "openai_input":
<request body>}``; RunPod's vLLM worker reads exactly those two keys. Without ``stream`` the handler's
output is the OpenAI response object (with ``return_aggregate_stream`` a one-element list of it); with
``"stream": true`` the handler yields server-sent-event text (``"data: {...}\\n\\n"``, possibly several events
per chunk) that the gateway relays as it comes, ending with ``data: [DONE]``.

This module shapes the job input, frames stream chunks as SSE bytes, unwraps the non-streaming output, and
turns a failed job (or an OpenAI error object the handler returned) into an OpenAI-shaped error body with an
HTTP status. No I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.core.errors import InvalidInput

CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MODELS = "/v1/models"
ROUTES = (CHAT_COMPLETIONS, COMPLETIONS, MODELS)

DONE_FRAME = b"data: [DONE]\n\n"


def job_input(route: str, body: Any) -> dict[str, Any]:
    """The job input of an OpenAI request: ``{"openai_route": route, "openai_input": body}``.

    ``body`` must be a JSON object for the POST routes (InvalidInput naming ``body`` otherwise);
    ``/v1/models`` carries an empty object.
    """
    if route not in ROUTES:
        raise InvalidInput(f"unknown OpenAI route {route!r}", {"loc": ["path"], "routes": list(ROUTES)})
    if route == MODELS:
        return {"openai_route": route, "openai_input": {}}
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object (an OpenAI request)", {"loc": ["body"]})
    return {"openai_route": route, "openai_input": body}


def wants_stream(body: Any) -> bool:
    """True when the request asks for server-sent events (``"stream": true``)."""
    return isinstance(body, dict) and body.get("stream") is True


# Errors -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenAIError:
    """An error as the OpenAI API returns it: ``status_code`` and the body ``{"error": {...}}``."""

    status_code: int
    message: str
    type: str
    code: str | int | None = None
    param: str | None = None

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``, the shape the ``openai`` client parses."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _status_of(code: Any, default: int) -> int:
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    if isinstance(code, str) and code.isdigit() and 400 <= int(code) <= 599:
        return int(code)
    return default


def error_object(value: Any) -> OpenAIError | None:
    """The OpenAI error a handler returned or yielded, or None when ``value`` is not one.

    Recognised: vLLM's ``ErrorResponse`` (``{"object": "error", "message", "type", "code"}``) and the API's
    ``{"error": {"message", ...}}``. The status is the object's numeric ``code`` when it is 4xx/5xx, else 400
    (vLLM reports bad requests this way).
    """
    if not isinstance(value, Mapping):
        return None
    inner = value.get("error")
    if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
        obj: Mapping[str, Any] = inner
    elif value.get("object") == "error" and isinstance(value.get("message"), str):
        obj = value
    else:
        return None
    code = obj.get("code")
    return OpenAIError(
        status_code=_status_of(code, 400),
        message=str(obj["message"]),
        type=str(obj.get("type") or "invalid_request_error"),
        code=code if isinstance(code, str | int) and not isinstance(code, bool) else None,
        param=obj.get("param") if isinstance(obj.get("param"), str) else None,
    )


def job_error(status: str, error: str | None, job_id: str) -> OpenAIError:
    """The OpenAI error of a job that ended without a usable output.

    FAILED: the handler's error (an OpenAI error object keeps its status; the worker SDK's exception JSON
    gives its ``error_message``) as 500 unless the error says otherwise; TIMED_OUT: 504; CANCELLED: 409;
    a job still queued or running when the wait ran out: 504.
    """
    if status == "FAILED":
        text = error or "the handler failed"
        parsed: Any = None
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if (found := error_object(parsed)) is not None:
            return found
        if isinstance(parsed, Mapping) and isinstance(parsed.get("error_message"), str):
            text = f"{parsed.get('error_type') or 'error'}: {parsed['error_message']}"
        return OpenAIError(500, f"job {job_id} failed: {text}", "handler_error", "job_failed")
    if status == "TIMED_OUT":
        return OpenAIError(504, f"job {job_id} timed out", "timeout", "job_timed_out")
    if status == "CANCELLED":
        return OpenAIError(409, f"job {job_id} was cancelled", "cancelled", "job_cancelled")
    return OpenAIError(
        504, f"job {job_id} is still {status} after the wait; it was cancelled", "timeout", "wait_exceeded"
    )


def error_of_exception(status_code: int, message: str) -> OpenAIError:
    """A Ripple error (unknown endpoint, bad input, full queue, not ready) in OpenAI's shape."""
    kind = {
        401: "authentication_error",
        404: "not_found_error",
        429: "rate_limit_error",
        503: "service_unavailable",
    }.get(status_code, "invalid_request_error" if status_code < 500 else "server_error")
    return OpenAIError(status_code, message, kind)


# Non-streaming replies --------------------------------------------------------------------------------


def _parse_sse_text(text: str) -> list[Any]:
    """The JSON payloads of the ``data:`` lines of SSE text (``[DONE]`` and non-JSON lines skipped)."""
    out: list[Any] = []
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if not data or data == "[DONE]":
            continue
        try:
            out.append(json.loads(data))
        except ValueError:
            continue
    return out


def response_of(output: Any, chunks: list[Any]) -> Any:
    """The non-streaming reply of a COMPLETED job: the OpenAI response object the handler produced.

    ``output`` is the job's output; ``chunks`` what it streamed (used when a generator handler without
    ``return_aggregate_stream`` left the output empty). A one-element list (an aggregated stream) is
    unwrapped; a string of SSE text is parsed to its single JSON payload.
    """
    value = output
    if value is None or value == []:
        value = chunks
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value.lstrip().startswith("data:"):
        payloads = _parse_sse_text(value)
        if len(payloads) == 1:
            return payloads[0]
        return payloads
    return value


# Streaming replies -------------------------------------------------------------------------------------


def sse_frames(chunk: Any) -> tuple[bytes, bool]:
    """One stream chunk as SSE bytes to relay, and whether it carried ``data: [DONE]``.

    A string that already is SSE text (starts with ``data:``, as vLLM's worker yields) is relayed as is
    (ending with a blank line); a dict is one event; a list is one event per element; any other value is
    one event of its JSON.
    """
    if isinstance(chunk, str) and chunk.lstrip().startswith(("data:", ":", "event:")):
        text = chunk if chunk.endswith("\n\n") else chunk.rstrip("\n") + "\n\n"
        done = any(line.strip() == "data: [DONE]" for line in text.splitlines())
        return text.encode("utf-8"), done
    items = chunk if isinstance(chunk, list) else [chunk]
    frames = b"".join(
        b"data: " + json.dumps(item, separators=(",", ":")).encode("utf-8") + b"\n\n" for item in items
    )
    return frames, False


def error_frame(err: OpenAIError) -> bytes:
    """An error in the middle of a stream: an event whose payload has ``error`` (the ``openai`` client
    raises ``APIError`` on it)."""
    return b"data: " + json.dumps(err.body(), separators=(",", ":")).encode("utf-8") + b"\n\n"
