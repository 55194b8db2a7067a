"""Log lines a test reads from one logger, whatever other tests did to logging before it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class _Lines(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def log_lines(name: str, level: int = logging.INFO) -> Iterator[list[str]]:
    """The messages logged to logger ``name`` at ``level`` or above while inside, listened to on the
    logger itself and with it enabled: another test's logging set-up may have stopped the ``ripple``
    loggers propagating (so ``caplog`` sees nothing) or disabled them (a ``dictConfig``)."""
    logger, handler = logging.getLogger(name), _Lines(level)
    was = (logger.disabled, logger.level)
    logger.addHandler(handler)
    logger.disabled, logger.level = False, level
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.disabled, logger.level = was
