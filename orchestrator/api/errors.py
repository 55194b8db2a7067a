"""Error mapping: the one place where errors become HTTP status codes.

Every error reply is ``{"error": "...", "detail": ...}``. ``RippleError`` subclasses carry their own status
(422 bad input, 401, 404, 409, 413, 429, 503); FastAPI's validation errors are 422 naming the fields; an
unreachable control actor (dead, restarting, timing out) is 503, and so is a job store out of memory or not
answering (:func:`store_failure`, saying which); anything else is a logged 500 without a traceback in the
reply. Bad input is never a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.core.errors import NotReady, RippleError, Unauthorized, field_reasons
from orchestrator.store.failures import store_failure

log = logging.getLogger("ripple.http")

# Errors that mean "a control actor is not reachable right now": retrying shortly may succeed.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,
    ray.exceptions.ActorUnavailableError,
    ray.exceptions.GetTimeoutError,
    NotReady,
    asyncio.TimeoutError,
)


def error_response(status_code: int, message: str, detail: Any = None) -> JSONResponse:
    """The error body every failure shares: ``{"error": message, "detail": detail}``."""
    return JSONResponse({"error": message, "detail": detail}, status_code=status_code)


def unwrap(exc: BaseException) -> BaseException:
    """The error an actor raised, when Ray wrapped it in a ``RayTaskError`` (whose ``cause`` it is)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    """The message and the detail list of a request validation error. The message names every bad field
    and why, ``invalid request: FIELD: why; FIELD: why`` (FIELD is the dotted location without its leading
    ``body``/``query``/``path``); a body that is not JSON is ``body: not valid JSON (...)``, where its
    detail's ``loc`` ends with the character at which the decoder stopped."""
    detail = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    reasons = []
    for e, d in zip(exc.errors(), detail, strict=True):
        if d["type"] == "json_invalid":
            why = (e.get("ctx") or {}).get("error") or d["msg"]
            reasons.append(f"body: not valid JSON ({why} at character {d['loc'][-1]})")
        else:
            reasons.append(field_reasons([d]))
    return f"invalid request: {'; '.join(reasons)}", detail


def install_error_handlers(api: FastAPI, on_unavailable: Callable[[], None] = lambda: None) -> None:
    """Register the handlers on ``api``. ``on_unavailable()`` runs when a control actor could not be
    reached (the app forgets its cached actor handles, so the next request looks them up again)."""

    async def ripple_error(request: Request, exc: Exception) -> JSONResponse:
        err = unwrap(exc)
        if isinstance(err, RippleError):
            resp = error_response(err.status_code, err.message, err.detail)
            if isinstance(err, Unauthorized):
                resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return await unexpected(request, exc)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, detail = validation_detail(exc)
        return error_response(422, message, detail)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail))

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, UNAVAILABLE):
            on_unavailable()
            return error_response(503, "Ripple is not ready: a control actor is unavailable, retry shortly")
        store = store_failure(exc)
        if store is not None:
            log.warning("job store failure: %s", unwrap(exc))
            return error_response(503, store)
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error (logged on the server)")

    api.add_exception_handler(RippleError, ripple_error)
    api.add_exception_handler(RequestValidationError, invalid_request)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(Exception, unexpected)
