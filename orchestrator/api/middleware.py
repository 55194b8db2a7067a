"""``X-Request-ID`` on every HTTP request: accepted when well-formed, generated otherwise, echoed in the
response, and bound to the log context so every line logged while handling the request carries it (and the
queue actor's lines too, where the route passes it on)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import logs

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
