"""Worker logs: what a replica's process printed, as Ray keeps it (one stdout and one stderr file per actor
process, on the actor's node), and the rules of who has logs.

A Ray replica's worker record carries its Ray actor id (``actorId``) and node (``nodeId``); reading goes
through :class:`ActorLogs`, which the HTTP layer is handed (Ray's state API in production, a fake in unit
tests). Outside workers (the RunPod worker SDK over HTTP) run where Ripple cannot see their output: asking
for their logs is a 409 that says so. Pure: no Ray, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from orchestrator.core.errors import Conflict, NotFound

LogStream = Literal["stdout", "stderr"]
STREAMS: tuple[LogStream, ...] = ("stdout", "stderr")

# Lines Ray writes into an actor's log files for its own log monitor (ray_constants.LOG_PREFIX_*): not
# something the process printed.
RAY_MARKERS = (":job_id:", ":actor_name:", ":task_name:", ":event_summary:", ":info_message:")


class ActorLogs(Protocol):
    """Reads a Ray actor's output, on whichever node of the cluster the actor ran (Ray's actor table says
    which; a dead actor's files are still read while its node lives). Both calls block (run them in a
    thread) and raise
    :class:`~orchestrator.core.errors.NotFound` when Ray has no such log, and
    :class:`~orchestrator.core.errors.NotReady` when Ray's log service cannot be reached."""

    def read(self, actor_id: str, tail: int, stream: LogStream) -> str:
        """The last ``tail`` lines (-1: all) of the actor's ``stream`` as text."""
        ...

    def follow(self, actor_id: str, tail: int, stream: LogStream) -> Iterator[str]:
        """The last ``tail`` lines, then new output as it is written (text pieces, not always whole lines),
        until the caller stops iterating."""
        ...


@dataclass(frozen=True)
class LogTarget:
    """Where a worker's logs are: its Ray actor and that actor's node (None: not known yet)."""

    worker_id: str
    endpoint: str
    actor_id: str
    node_id: str | None


def log_target(worker_id: str, view: Mapping[str, Any] | None) -> LogTarget:
    """The logs of worker ``worker_id`` whose registry record is ``view`` (None: unknown worker).

    Raises NotFound for an unknown worker, and Conflict (409) for an outside worker (no Ray process of ours)
    or a replica whose actor id is not recorded.
    """
    if view is None:
        raise NotFound(f"worker {worker_id!r} not found", {"workerId": worker_id})
    if view.get("kind") != "ray":
        raise Conflict(
            f"worker {worker_id!r} is an outside worker (the RunPod worker SDK over HTTP): Ripple does not "
            "run its process and has no logs of it; read them where that worker runs",
            {"workerId": worker_id, "kind": view.get("kind")},
        )
    actor_id = view.get("actorId")
    if not isinstance(actor_id, str) or not actor_id:
        raise Conflict(
            f"worker {worker_id!r} has no Ray actor id recorded yet; retry once it has started",
            {"workerId": worker_id, "state": view.get("state")},
        )
    node_id = view.get("nodeId")
    return LogTarget(
        worker_id=worker_id,
        endpoint=str(view.get("endpoint", "")),
        actor_id=actor_id,
        node_id=node_id if isinstance(node_id, str) and node_id else None,
    )


def is_marker(line: str) -> bool:
    """A line Ray wrote for its log monitor (``:actor_name:WorkerReplica``), not the process."""
    return line.startswith(RAY_MARKERS)


def clean_lines(text: str) -> list[str]:
    """The lines of ``text`` the process printed: Ray's marker lines dropped, line ends stripped."""
    return [line for line in text.splitlines() if not is_marker(line)]


def last_lines(lines: list[str], tail: int) -> list[str]:
    """The last ``tail`` lines (all when ``tail`` < 0)."""
    return lines if tail < 0 else lines[len(lines) - tail :] if tail else []


def prefixed(worker_id: str, line: str) -> str:
    """A line of an endpoint's merged logs: ``[WORKER_ID] line``."""
    return f"[{worker_id}] {line}"


class LineSplitter:
    """Cuts followed text pieces into whole lines (a piece may end mid-line)."""

    def __init__(self) -> None:
        self._rest = ""

    def feed(self, piece: str) -> list[str]:
        """The whole lines completed by ``piece`` (markers dropped); a partial last line is kept."""
        text = self._rest + piece
        *lines, self._rest = text.split("\n")
        return [line.rstrip("\r") for line in lines if not is_marker(line)]

    def flush(self) -> list[str]:
        """What is left once the input ended (a last line without a newline)."""
        rest, self._rest = self._rest, ""
        return [] if not rest or is_marker(rest) else [rest]
