"""The body limit on a worker's result route (``orchestrator.api.middleware.BodyLimit`` with ``told``), as
plain ASGI: the route runs with the body as sent, or with none and the over-limit size; a request cut off
before its body ends never reaches the route."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from orchestrator.api.middleware import OVERSIZED, BodyLimit, OversizedBody

pytestmark = pytest.mark.timeout(10)


class Route:
    """An ASGI app that records the body and the OversizedBody it was given, and answers 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.calls.append((body, scope.get("state", {}).get(OVERSIZED)))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _run(
    messages: list[Message], headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[Route, list[int]]:
    route = Route()
    limited = BodyLimit(route, limit_bytes=lambda _: 10, told=lambda path: path.startswith("/result"))
    feed: Iterator[Message] = iter(messages)
    statuses: list[int] = []

    async def receive() -> Message:
        return next(feed, {"type": "http.disconnect"})

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": "POST", "path": "/result/j1", "headers": headers or []}
    asyncio.run(limited(scope, receive, send))
    return route, statuses


def _chunk(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def test_a_body_within_the_limit_reaches_the_route_whole() -> None:
    route, statuses = _run([_chunk(b'{"a":', True), _chunk(b"1}", False)])
    assert route.calls == [(b'{"a":1}', None)] and statuses == [200]


def test_an_oversized_body_reaches_the_route_as_its_size_only() -> None:
    route, _ = _run([_chunk(b"x" * 8, True), _chunk(b"x" * 8, False)])
    assert route.calls == [(b"", OversizedBody(size_bytes=16, limit_bytes=10))]
    route, _ = _run([_chunk(b"x" * 40, False)], headers=[(b"content-length", b"40")])
    assert route.calls == [(b"", OversizedBody(size_bytes=40, limit_bytes=10))]  # by its declared length


def test_a_request_cut_off_never_reaches_the_route() -> None:
    for sent in ([_chunk(b"x" * 8, True)], [_chunk(b"x" * 8, True), _chunk(b"x" * 8, True)]):
        route, statuses = _run(sent)  # then the client went away: under and over the limit
        assert route.calls == [] and statuses == []
