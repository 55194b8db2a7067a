"""``ripple logs ENDPOINT|WORKER [--tail N] [--follow] [--stderr]``: what replicas printed.

A worker id shows that replica's output as is; an endpoint name shows each of its Ray replicas, every line
prefixed with ``[WORKER_ID]``. ``--follow`` keeps printing new lines (one stream per replica) until
interrupted. Reads ``GET /api/v1/workers/{id}/logs``; outside workers (the RunPod SDK over HTTP) have no
logs in Ripple and are named as such.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from orchestrator.core.errors import NotFound, RippleError
from orchestrator.core.worker_logs import prefixed


class LogsClient(Protocol):
    """What ``ripple logs`` needs of :class:`orchestrator.client.Client`."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def lines(self, path: str, **kwargs: Any) -> Iterator[str]: ...


@dataclass(frozen=True)
class Selection:
    """The replicas whose logs to show; ``prefix``: lines carry their worker id (an endpoint's logs)."""

    worker_ids: list[str]
    prefix: bool
    skipped: list[str]  # workers of the endpoint without logs here (outside workers)


def select(
    name: str, workers: Sequence[Mapping[str, Any]], endpoint_exists: Callable[[str], bool]
) -> Selection:
    """The workers ``name`` means: a worker id, else an endpoint's Ray replicas (sorted by id).

    Raises NotFound when ``name`` is neither, or the endpoint has no Ray replica now.
    """
    for w in workers:
        if w.get("workerId") == name:
            return Selection([name], prefix=False, skipped=[])
    mine = [w for w in workers if w.get("endpoint") == name]
    replicas = sorted(str(w["workerId"]) for w in mine if w.get("kind") == "ray" and w.get("actorId"))
    outside = sorted(str(w["workerId"]) for w in mine if w.get("kind") != "ray")
    if replicas:
        return Selection(replicas, prefix=True, skipped=outside)
    if not mine and not endpoint_exists(name):
        raise NotFound(f"no worker or endpoint named {name!r}", {"name": name})
    why = (
        f"its workers ({', '.join(outside)}) are outside workers (RunPod SDK over HTTP), whose logs are "
        "where they run"
        if outside
        else "it has no Ray replica now (scaled to zero, or still starting)"
    )
    raise NotFound(f"endpoint {name!r} has no replica logs: {why}", {"endpoint": name})


def logs_path(worker_id: str, tail: int, stream: str, follow: bool) -> str:
    path = f"/api/v1/workers/{quote(worker_id, safe='')}/logs?tail={tail}&stream={stream}"
    return path + "&follow=true" if follow else path


def show(
    client: LogsClient,
    sel: Selection,
    tail: int,
    stream: str,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> int:
    """Print each selected worker's last ``tail`` lines; 0, or 1 when some worker's logs failed. A worker
    that printed nothing to ``stream`` is said on ``err`` (where to look instead: Python's ``logging``
    writes to stderr)."""
    failed = 0
    for wid in sel.worker_ids:
        try:
            reply = client.request("GET", logs_path(wid, tail, stream, False))
        except RippleError as exc:
            err(f"ripple logs: worker {wid}: {exc}")
            failed += 1
            continue
        if not reply["lines"]:
            other = "; Python's logging writes to stderr: --stderr shows it" if stream == "stdout" else ""
            err(f"ripple logs: worker {wid} printed nothing to {stream}{other}")
        for line in reply["lines"]:
            out(prefixed(wid, line) if sel.prefix else line)
    return 1 if failed else 0


def follow(
    client: LogsClient,
    sel: Selection,
    tail: int,
    stream: str,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> int:
    """Stream each selected worker's output until every stream ends (or the user interrupts); one thread
    per worker, lines printed whole."""
    lock = threading.Lock()
    failures: list[str] = []

    def run(wid: str) -> None:
        try:
            for line in client.lines(logs_path(wid, tail, stream, True)):
                with lock:
                    out(prefixed(wid, line) if sel.prefix else line)
        except Exception as exc:  # one replica's stream failing leaves the others running
            with lock:
                err(f"ripple logs: worker {wid}: {exc}")
                failures.append(wid)

    threads = [threading.Thread(target=run, args=(w,), daemon=True, name=f"logs-{w}") for w in sel.worker_ids]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    return 1 if failures else 0


def _print(line: str) -> None:
    print(line, flush=True)


def _eprint(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_logs(args: argparse.Namespace, client: LogsClient) -> int:
    """``ripple logs``: see the module docstring."""

    def endpoint_exists(name: str) -> bool:
        try:
            client.request("GET", f"/api/v1/endpoints/{quote(name, safe='')}")
        except NotFound:
            return False
        return True

    workers = client.request("GET", "/api/v1/workers")["workers"]
    sel = select(args.target, workers, endpoint_exists)
    for wid in sel.skipped:
        _eprint(f"ripple logs: {wid} is an outside worker; its logs are where it runs")
    stream = "stderr" if args.stderr else "stdout"
    if args.follow:
        return follow(client, sel, args.tail, stream, _print, _eprint)
    return show(client, sel, args.tail, stream, _print, _eprint)


def add_parser(sub: Any, client: Callable[[argparse.Namespace], LogsClient]) -> None:
    """Register ``ripple logs`` on the CLI's subparsers; ``client(args)`` builds the HTTP client."""
    lg = sub.add_parser("logs", help="What an endpoint's replicas (or one worker) printed.")
    lg.add_argument("target", metavar="ENDPOINT|WORKER")
    lg.add_argument("--tail", type=int, default=100, help="Last N lines of each replica (-1: all).")
    lg.add_argument("--follow", "-f", action="store_true", help="Keep printing new lines.")
    lg.add_argument("--stderr", action="store_true", help="Show stderr instead of stdout.")
    lg.set_defaults(fn=lambda args: cmd_logs(args, client(args)))
