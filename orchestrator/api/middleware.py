"""ASGI middleware of the HTTP app.

- ``RequestIdMiddleware``: ``X-Request-ID`` on every HTTP request, accepted when well-formed, generated
  otherwise, echoed in the response, and bound to the log context so every line logged while handling the
  request carries it (and the queue actor's lines too, where the route passes it on).
- ``BodyLimit``: 413 for request bodies over the configured limit (or, on a worker's result route, the
  route told of it: :class:`OversizedBody`); request bodies read as JSON whatever their declared content
  type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import logs
from orchestrator.api.errors import error_response
from orchestrator.core.errors import PayloadTooLarge

HEADER = b"x-request-id"
OVERSIZED = "oversized_body"  # key in the ASGI scope's state: the OversizedBody a told route was not given


@dataclass(frozen=True)
class OversizedBody:
    """A request body held back from its route for being over the limit; the route gets an empty body and
    this in ``scope["state"][OVERSIZED]``, so it can act on it (fail the job whose result it was)."""

    size_bytes: int
    limit_bytes: int


class RequestIdMiddleware:
    """Pure ASGI middleware (so the bound context reaches the route handler's task).

    ``echo`` says whether this middleware adds the response header: behind Ray Serve's proxy it must not,
    because the proxy already sets ``x-request-id`` on the request (the client's, or one it generates) and
    echoes it in the response; the id read here is then the same one the client gets back.
    """

    def __init__(self, app: ASGIApp, echo: Callable[[], bool] = lambda: True) -> None:
        self.app = app
        self.echo = echo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = None
        for name, value in scope.get("headers", ()):
            if name == HEADER:
                presented = value.decode("latin-1")
                break
        rid = logs.clean_request_id(presented) or logs.new_request_id()
        scope.setdefault("state", {})["request_id"] = rid

        echo = self.echo()

        async def send_with_id(message: Message) -> None:
            if echo and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                headers.append((HEADER, rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        with logs.log_context(request_id=rid):
            await self.app(scope, receive, send_with_id)


def current_request_id() -> str | None:
    """The request id of the request being handled (None outside one)."""
    return logs.current().get("request_id")


class BodyLimit:
    """Pure ASGI middleware: 413 for bodies over the limit, by Content-Length or by counting the stream.

    ``limit_bytes(path)`` is read per request (a route may allow more: code packages); None (the app is
    still starting) lets the request through. On a path where ``told(path)`` holds (a worker's result), an
    over-limit body is not refused here: the route runs with an empty body and an :class:`OversizedBody` in
    the scope's state, and decides the reply. Such a body is read whole before the route runs.
    POST, PATCH and PUT bodies are labelled ``application/json`` whatever their declared type: RunPod
    clients and workers (and curl) label JSON as a form.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit_bytes: Callable[[str], int | None],
        told: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.told = told

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        limit = self.limit_bytes(path) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("POST", "PATCH", "PUT"):
            scope = _as_json(scope)
        if self.told(path):
            await self._told(scope, receive, send, limit)
            return
        if _declared_length(scope) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        seen = 0
        over = False
        started = False

        async def limited() -> Message:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                over = True
                raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
            return message

        async def send_unless_over(message: Message) -> None:
            # FastAPI turns an error raised while it reads the body into its own 400: hold its reply back.
            nonlocal started
            if not over:
                started = True
                await send(message)

        try:
            await self.app(scope, limited, send_unless_over)
        except PayloadTooLarge:
            if not over:
                raise
        if over and not started:
            await _too_large(limit)(scope, receive, send)

    async def _told(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run a told route: with the body as sent when within the limit, else with none and the
        :class:`OversizedBody` in the scope's state."""
        declared = _declared_length(scope)
        if declared > limit:
            size, body = declared, None
        else:
            read = await _read_within(receive, limit)
            if read is None:  # a request cut off is not handled (as Starlette does: ClientDisconnect)
                return
            size, body = read
        if body is None:
            scope = {**scope, "state": {**scope.get("state", {}), OVERSIZED: OversizedBody(size, limit)}}
            body = b""
        await self.app(scope, _replay(body, receive), send)


def _too_large(limit: int) -> Response:
    """The 413 for a body over ``limit`` bytes (built only when sent: most requests never need it)."""
    return error_response(413, f"request body over the limit of {limit} bytes")


def _declared_length(scope: Scope) -> int:
    """The request's Content-Length, or -1 when it declares none."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return -1


async def _read_within(receive: Receive, limit: int) -> tuple[int, bytes | None] | None:
    """The whole body (its size and bytes), or its size and None when over ``limit`` (read to its end,
    not kept); None when the client went away before its end."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        else:
            chunks.clear()
        if not message.get("more_body", False):
            return size, (None if size > limit else b"".join(chunks))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` as the whole request body, then what ``receive`` gives after the body
    (a disconnect), any body still unread dropped."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message

    return replayed


def _as_json(scope: Scope) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    return {**scope, "headers": headers}
