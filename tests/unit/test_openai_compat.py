"""The pure translation of the OpenAI-compatible routes: job input, SSE framing, reply unwrapping, errors."""

from __future__ import annotations

import json

import pytest

from orchestrator.core import openai_compat as oa
from orchestrator.core.errors import InvalidInput

pytestmark = pytest.mark.timeout(10)

VLLM_ERROR = {
    "object": "error",
    "message": "The model `x` does not exist.",
    "type": "NotFoundError",
    "param": None,
    "code": 404,
}


def test_job_input_is_what_runpods_gateway_hands_a_vllm_worker() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert oa.job_input(oa.CHAT_COMPLETIONS, body) == {
        "openai_route": "/v1/chat/completions",
        "openai_input": body,
    }
    assert oa.job_input(oa.COMPLETIONS, {"prompt": "p"})["openai_route"] == "/v1/completions"
    assert oa.job_input(oa.MODELS, None) == {"openai_route": "/v1/models", "openai_input": {}}


@pytest.mark.parametrize("body", [None, [], "text", 3])
def test_a_body_that_is_not_an_object_is_refused_naming_the_body(body: object) -> None:
    with pytest.raises(InvalidInput) as err:
        oa.job_input(oa.CHAT_COMPLETIONS, body)
    assert err.value.detail == {"loc": ["body"]}


def test_unknown_route_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown OpenAI route"):
        oa.job_input("/v1/embeddings", {})


def test_wants_stream_only_for_true() -> None:
    assert oa.wants_stream({"stream": True})
    assert not oa.wants_stream({"stream": "yes"}) and not oa.wants_stream({}) and not oa.wants_stream(None)


def test_error_objects_keep_their_status_and_message() -> None:
    err = oa.error_object(VLLM_ERROR)
    assert err is not None and err.status_code == 404 and err.type == "NotFoundError"
    assert err.body() == {
        "error": {"message": VLLM_ERROR["message"], "type": "NotFoundError", "param": None, "code": 404}
    }
    wrapped = oa.error_object(
        {"error": {"message": "bad", "type": "invalid_request_error", "code": "bad_param"}}
    )
    assert wrapped is not None and wrapped.status_code == 400 and wrapped.code == "bad_param"
    assert oa.error_object({"object": "error", "message": "m", "code": 200}).status_code == 400
    assert oa.error_object({"error": "a string"}) is None
    assert oa.error_object({"object": "chat.completion"}) is None and oa.error_object("data: x") is None


def test_a_failed_job_is_a_500_with_the_handlers_message() -> None:
    sdk = json.dumps(
        {"error_type": "<class 'RuntimeError'>", "error_message": "boom", "error_traceback": "..."}
    )
    err = oa.job_error("FAILED", sdk, "j1")
    assert (
        err.status_code == 500
        and "boom" in err.message
        and "RuntimeError" in err.message
        and "j1" in err.message
    )
    assert oa.job_error("FAILED", "plain words", "j1").message == "job j1 failed: plain words"
    assert oa.job_error("FAILED", json.dumps(VLLM_ERROR), "j1").status_code == 404
    assert oa.job_error("FAILED", None, "j1").status_code == 500


@pytest.mark.parametrize(
    ("status", "code"), [("TIMED_OUT", 504), ("CANCELLED", 409), ("IN_QUEUE", 504), ("IN_PROGRESS", 504)]
)
def test_other_endings_have_their_status(status: str, code: int) -> None:
    err = oa.job_error(status, None, "j9")
    assert err.status_code == code and "j9" in err.message


def test_errors_of_ripple_map_to_openai_types() -> None:
    assert oa.error_of_exception(404, "endpoint 'x' not found").type == "not_found_error"
    assert oa.error_of_exception(429, "full").type == "rate_limit_error"
    assert oa.error_of_exception(422, "bad").type == "invalid_request_error"
    assert oa.error_of_exception(503, "later").type == "service_unavailable"


def test_response_of_unwraps_an_aggregated_stream_and_sse_text() -> None:
    obj = {"object": "chat.completion", "choices": []}
    assert oa.response_of(obj, []) == obj
    assert oa.response_of([obj], []) == obj  # return_aggregate_stream
    assert oa.response_of([], [obj]) == obj  # a generator without aggregation: what it streamed
    assert oa.response_of(None, [obj]) == obj
    assert oa.response_of("data: " + json.dumps(obj) + "\n\ndata: [DONE]\n\n", []) == obj
    assert oa.response_of([1, 2], []) == [1, 2]


def test_sse_frames_relay_sse_text_as_is_and_frame_objects() -> None:
    text = 'data: {"a":1}\n\ndata: {"a":2}\n\n'
    assert oa.sse_frames(text) == (text.encode(), False)
    assert oa.sse_frames('data: {"a":1}\n\ndata: [DONE]\n\n') == (b'data: {"a":1}\n\ndata: [DONE]\n\n', True)
    assert oa.sse_frames('data: {"a":1}') == (b'data: {"a":1}\n\n', False)  # the blank line is added
    assert oa.sse_frames({"a": 1}) == (b'data: {"a":1}\n\n', False)
    assert oa.sse_frames([{"a": 1}, {"b": 2}]) == (b'data: {"a":1}\n\ndata: {"b":2}\n\n', False)
    assert oa.sse_frames("plain") == (b'data: "plain"\n\n', False)
    assert (
        oa.error_frame(oa.OpenAIError(500, "m", "t"))
        == b'data: {"error":{"message":"m","type":"t","param":null,"code":null}}\n\n'
    )
