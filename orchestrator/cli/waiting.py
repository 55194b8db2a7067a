"""What ``ripple submit --wait`` shows while a job waits, and ``ripple endpoint create``'s fit warning.

:class:`WaitDisplay` prints a job's ``waitReason`` each time it changes: on a terminal one live line,
rewritten in place and cleared once the job leaves the queue; elsewhere (a pipe, a log) one plain line per
change. It writes to the stream it is given (stderr), so the results on stdout stay JSON lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

from orchestrator.core.wait_reason import waiting_line


class WaitDisplay:
    """Shows a waiting job's reason as it changes (see the module docstring)."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream = stream
        self.live = live
        self.shown: str | None = None
        self._width = 0

    def update(self, status: Mapping[str, Any]) -> None:
        """Take in the job's latest status object; print when its wait reason changed."""
        line = waiting_line(status)
        if line is None:
            self.clear()
            return
        if line == self.shown:
            return
        self.shown = line
        if self.live:
            pad = " " * max(0, self._width - len(line))
            self.stream.write("\r" + line + pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """The job left the queue: end the live line (a plain stream keeps its lines)."""
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        self._width = 0
        self.shown = None
