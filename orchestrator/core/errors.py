"""The one error root of Ripple.

Pure code and actors raise these; only the HTTP layer (``orchestrator.api.errors``) maps them to status
codes. Every error pickles cleanly (it crosses Ray actor boundaries): its constructor arguments are its
``args``.
"""

from __future__ import annotations

from typing import Any


class RippleError(Exception):
    """Base of every error Ripple raises on purpose.

    Args:
        message: one sentence a user can act on.
        detail: optional JSON-serialisable detail (a field name, the bad value, a list of problems).
    """

    status_code = 500

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message, detail)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class InvalidInput(RippleError):
    """The request or setting is malformed or violates a rule; nothing was changed."""

    status_code = 422


class Unauthorized(RippleError):
    """A key is missing or wrong."""

    status_code = 401


class Forbidden(RippleError):
    """A valid key whose scope or endpoints do not cover the route (403)."""

    status_code = 403


class NotFound(RippleError):
    """An endpoint, job or worker does not exist."""

    status_code = 404


class Conflict(RippleError):
    """The object exists but is in a state that forbids the operation."""

    status_code = 409


class PayloadTooLarge(RippleError):
    """A request body is over the configured limit."""

    status_code = 413


class QueueFull(RippleError):
    """An endpoint's queue is at its ``maxQueueSize``; the job was not accepted."""

    status_code = 429


class NotReady(RippleError):
    """A component Ripple needs (the store, an actor) is not reachable yet."""

    status_code = 503


class ConfigError(RippleError):
    """A setting is invalid; start-up stops with this message."""


def field_reasons(errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors (``loc``, ``msg``) as ``FIELD: why; FIELD: why``: FIELD the dotted location
    without a leading ``body``/``query``/``path``/``header``/``cookie``; pydantic's ``Value error, ``
    prefix dropped (the why is ours)."""
    reasons = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        if len(loc) > 1 and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        why = str(e.get("msg", "")).removeprefix("Value error, ")
        reasons.append(f"{'.'.join(loc)}: {why}" if loc else why)
    return "; ".join(reasons)


def invalid(what: str, errors: list[dict[str, Any]]) -> InvalidInput:
    """InvalidInput whose message says ``what`` is invalid and, for each field, why (``invalid endpoint
    update: maxReplicas: Input should be greater than or equal to 0``); ``errors`` is its detail."""
    return InvalidInput(f"{what}: {field_reasons(errors)}", errors)
