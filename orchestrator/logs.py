"""Structured logs: JSON lines when stderr is not a terminal, with the request, job, worker and endpoint.

The fields come from a context variable (:func:`log_context`), so a request id accepted at the HTTP edge
(``X-Request-ID``) follows the call into the queue actor and every line logged while handling it carries
it; ``extra={"job_id": ...}`` on one call works too. Each asyncio task (each actor call) has its own copy
of the context, so fields never leak between concurrent calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime, timezone
from types import MappingProxyType
from typing import IO, Any

FIELDS = ("request_id", "endpoint", "job_id", "worker_id")
_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("ripple_log_context", default=MappingProxyType({}))
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_HANDLER_MARK = "_ripple_handler"


def new_request_id() -> str:
    """A fresh request id (32 hex characters)."""
    return uuid.uuid4().hex


def clean_request_id(value: str | None) -> str | None:
    """``value`` when it is a plausible request id (1-128 visible, header-safe characters), else None."""
    if value is None:
        return None
    value = value.strip()
    return value if _REQUEST_ID_OK.match(value) else None


def current() -> Mapping[str, str]:
    """The log fields of the running context."""
    return _CONTEXT.get()


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add fields (None values are skipped) to every record logged inside the block."""
    merged = {**_CONTEXT.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(**fields: str | None) -> None:
    """Add fields to the rest of the current context (an actor call's task, a request handler)."""
    _CONTEXT.set({**_CONTEXT.get(), **{k: str(v) for k, v in fields.items() if v is not None}})


class ContextFilter(logging.Filter):
    """Copies the context's fields onto each record (``extra=`` values win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC ISO 8601), ``level``, ``logger``, ``msg``, the context fields
    that are set, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Human lines for a terminal, with the context fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) is not None)
        return f"{text} [{extra}]" if extra else text


def configure(
    level: str | int = "INFO",
    *,
    logger: str = "ripple",
    stream: IO[str] | None = None,
    json_lines: bool | None = None,
) -> logging.Handler:
    """Install one handler on ``logger`` (idempotent: a previous Ripple handler is replaced).

    ``json_lines`` None means JSON exactly when ``stream`` (stderr by default) is not a TTY. The logger
    stops propagating, so lines are not written twice by a root handler.
    """
    stream = stream if stream is not None else sys.stderr
    if json_lines is None:
        json_lines = not (hasattr(stream, "isatty") and stream.isatty())
    target = logging.getLogger(logger)
    for h in list(target.handlers):
        if getattr(h, _HANDLER_MARK, False):
            target.removeHandler(h)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(ContextFilter())
    setattr(handler, _HANDLER_MARK, True)
    target.addHandler(handler)
    target.setLevel(level)
    target.propagate = False
    return handler


class RepeatedFailure:
    """The failures of one background step that runs again and again (a loop's tick), logged without
    flooding: the first with its traceback, then one line every ``every_s`` while they go on (how many,
    and the last error), and one line when the step succeeds again. A store that does not answer for a
    minute is then a handful of lines, not a traceback per tick. ``clock``: seconds (``time.monotonic``)."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        clock: Callable[[], float],
        every_s: float = 60.0,
        level: int = logging.ERROR,
    ) -> None:
        self.log, self.what, self.every_s, self.level, self.clock = log, what, every_s, level, clock
        self.failures = 0
        self._since_s = self._said_s = 0.0

    def failed(self, exc: BaseException, **extra: Any) -> None:
        """The step failed with ``exc`` (call from its ``except``)."""
        now_s = self.clock()
        self.failures += 1
        if self.failures == 1:
            self._since_s = self._said_s = now_s
            self.log.log(self.level, "%s failed", self.what, exc_info=exc, extra=extra)
        elif now_s - self._said_s >= self.every_s:
            self._said_s = now_s
            self.log.log(
                self.level,
                "%s still failing: %d times in %.0f s; last: %s",
                self.what,
                self.failures,
                now_s - self._since_s,
                _last_line(exc),
                extra=extra,
            )

    def succeeded(self, **extra: Any) -> None:
        """The step succeeded: says so once after failures."""
        if self.failures:
            self.log.warning(
                "%s works again after %d failure%s in %.0f s",
                self.what,
                self.failures,
                "" if self.failures == 1 else "s",
                self.clock() - self._since_s,
                extra=extra,
            )
            self.failures = 0


def _last_line(exc: BaseException) -> str:
    """An error in one line: the last of its text (a Ray task error's text ends with its cause's)."""
    lines = str(exc).strip().splitlines()
    return (lines[-1].strip() if lines else type(exc).__name__)[:300]
