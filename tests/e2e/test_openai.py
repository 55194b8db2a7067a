"""The OpenAI-compatible routes (``/v2/{endpoint}/openai/v1``) driven by the official ``openai`` client, sync
and streaming, against a worker file shaped like RunPod's vLLM worker (``runpod_workers/openai_vllm.py``: an
async generator over a fake engine, ``concurrency_modifier``, ``return_aggregate_stream``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import Instance

pytestmark = pytest.mark.timeout(240)

MODEL = "fake/tiny-llm"


@pytest.fixture(scope="module")
def endpoint(ripple_app: Instance) -> Iterator[str]:
    """An endpoint running the vLLM-shaped worker file on one CPU replica."""
    name = ripple_app.create_endpoint(
        "openai",
        handler="tests.e2e.runpod_workers.openai_vllm",
        gpus=0,
        minReplicas=1,
        maxReplicas=1,
        maxRetries=0,
    )
    yield name
    with ripple_app.client() as c:
        c.delete(f"/api/v1/endpoints/{name}")


def _client(inst: Instance, endpoint: str, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=key or inst.api_key,
        base_url=f"{inst.url}/v2/{endpoint}/openai/v1",
        max_retries=0,
        timeout=120,
    )


def _job_inputs(inst: Instance, endpoint: str) -> list[Any]:
    with inst.client() as c:
        r = c.get("/api/v1/jobs", params={"endpoint": endpoint, "limit": 100})
    assert r.status_code == 200, r.text
    return [j.get("input") for j in r.json()["jobs"]]


def test_models_and_completions_without_stream(ripple_app: Instance, endpoint: str) -> None:
    client = _client(ripple_app, endpoint)
    models = client.models.list()  # the first call waits for the replica's cold start
    assert [m.id for m in models.data] == [MODEL]

    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}],
    )
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.content == "echo: hello world"
    assert chat.usage is not None and chat.usage.completion_tokens == 3

    text = client.completions.create(model=MODEL, prompt="one two", max_tokens=2)
    assert text.object == "text_completion" and text.choices[0].text == "echo: one"

    # Each request was one job whose input is exactly what RunPod's gateway hands a vLLM worker.
    inputs = _job_inputs(ripple_app, endpoint)
    assert {"openai_route": "/v1/models", "openai_input": {}} in inputs
    assert {
        "openai_route": "/v1/completions",
        "openai_input": {"model": MODEL, "prompt": "one two", "max_tokens": 2},
    } in inputs
    chat_inputs = [i for i in inputs if i["openai_route"] == "/v1/chat/completions"]
    assert chat_inputs and chat_inputs[0]["openai_input"]["messages"][1] == {
        "role": "user",
        "content": "hello world",
    }


def test_chat_stream_relays_each_chunk_as_the_handler_yields_it(ripple_app: Instance, endpoint: str) -> None:
    client = _client(ripple_app, endpoint)
    client.models.list()  # warm: the replica is up
    words = "a b c d e f g"  # "echo:" + 7 words: 4 chunks of 2 events, 0.5 s apart
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": words}],
        stream=True,
        extra_body={"sleep_s": 0.5},
    )
    arrivals: list[float] = []
    pieces: list[str] = []
    finish: list[str | None] = []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        choice = chunk.choices[0]
        if choice.delta.content:
            pieces.append(choice.delta.content)
            arrivals.append(time.monotonic() - started)
        finish.append(choice.finish_reason)
    assert "".join(pieces) == "echo: " + words
    assert finish[-1] == "stop"
    # Relayed as produced (4 s of generation): the first words arrive long before the last.
    assert arrivals[-1] - arrivals[0] >= 2.0, arrivals


def test_completion_stream(ripple_app: Instance, endpoint: str) -> None:
    client = _client(ripple_app, endpoint)
    stream = client.completions.create(model=MODEL, prompt="x y z", stream=True)
    text = "".join(c.choices[0].text for c in stream)
    assert text == "echo: x y z"


def test_errors_are_openai_shaped(ripple_app: Instance, endpoint: str) -> None:
    client = _client(ripple_app, endpoint)
    # vLLM's ErrorResponse (unknown model) keeps its status, with and without stream.
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        list(
            client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    # A handler that raises: the job FAILED, a 500 naming the error.
    with pytest.raises(openai.InternalServerError, match="boom-42"):
        client.completions.create(model=MODEL, prompt="x", extra_body={"raise": "boom-42"})
    # The client API key is required, as on the other /v2 routes.
    with pytest.raises(openai.AuthenticationError):
        _client(ripple_app, endpoint, key="wrong-" + uuid.uuid4().hex).models.list()
    # An unknown endpoint is a 404 in OpenAI's shape.
    with pytest.raises(openai.NotFoundError, match="not found"):
        _client(ripple_app, "no-such-endpoint").models.list()
