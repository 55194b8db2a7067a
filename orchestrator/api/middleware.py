"""ASGI middleware of the HTTP app.

- ``RequestIdMiddleware``: ``X-Request-ID`` on every HTTP request, accepted when well-formed, generated
  otherwise, echoed in the response, and bound to the log context so every line logged while handling the
  request carries it (and the queue actor's lines too, where the route passes it on).
- ``BodyLimit``: 413 for request bodies over the configured limit; request bodies read as JSON whatever
  their declared content type.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import logs
from orchestrator.api.errors import error_response
from orchestrator.core.errors import PayloadTooLarge

HEADER = b"x-request-id"


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
    still starting) lets the request through.
    POST, PATCH and PUT bodies are labelled ``application/json`` whatever their declared type: RunPod
    clients and workers (and curl) label JSON as a form.
    """

    def __init__(self, app: ASGIApp, limit_bytes: Callable[[str], int | None]) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_bytes(str(scope.get("path", ""))) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("POST", "PATCH", "PUT"):
            scope = _as_json(scope)
        too_large = error_response(413, f"request body over the limit of {limit} bytes")
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await too_large(scope, receive, send)
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
            await too_large(scope, receive, send)


def _as_json(scope: Scope) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    return {**scope, "headers": headers}
