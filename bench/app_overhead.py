"""Ripple's HTTP app alone, per request: the ASGI app called in process (no server, no Serve, no Ray, no
Redis) for the client routes of the job path, against a plain FastAPI route that echoes the same body.

What each call costs in the API replica's own Python before any store or actor is reached: Ripple's
middleware (request id, body limit), the route's dependencies (key check, body checks, the clients), the
request's validation and the reply's serialization. The queue client answers at once with a fixed reply
(a subclass of Ripple's own ``QueueClient``); it is put in place of ``make_queue_client`` rather than through
``app.dependency_overrides``, because FastAPI rebuilds an overridden dependency on every request, which
would time FastAPI's override path instead of the app as deployed.

    python bench/app_overhead.py [--calls 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fastapi import FastAPI, Request  # noqa: E402

from orchestrator.api import deps  # noqa: E402
from orchestrator.api import schemas as s  # noqa: E402
from orchestrator.api.app import create_app  # noqa: E402
from orchestrator.api.deps import AppState, QueueClient  # noqa: E402
from orchestrator.core.jobs import JobView  # noqa: E402
from orchestrator.core.models import RunRequest  # noqa: E402
from tests.unit.api_fakes import API_KEY, boot  # noqa: E402

BODY = b'{"input": {"prompt": "a cat", "steps": 4}}'
DONE = {"id": "job-1", "status": "COMPLETED", "delayTime": 1, "executionTime": 1, "output": {"ok": True}}


class FixedReplies(QueueClient):
    """Ripple's queue client answering at once, as if every job were already done."""

    def __init__(self) -> None:
        super().__init__(self._no_actor)

    @staticmethod
    def _no_actor() -> Any:
        raise AssertionError("the bench never reaches an actor")

    async def runsync(
        self, endpoint: str, request: RunRequest, wait_s: float | None, request_id: str | None = None
    ) -> s.JobStatusObject:
        return s.JobStatusObject.model_validate(DONE)

    async def submit(
        self, endpoint: str, requests: Sequence[RunRequest], request_id: str | None = None
    ) -> list[str]:
        return ["job-1" for _ in requests]

    async def status(self, endpoint: str, job_id: str, read: JobView | None = None) -> s.JobStatusObject:
        return s.JobStatusObject.model_validate(DONE)


def ripple_app() -> FastAPI:
    """Ripple's app as deployed (middleware, routers, key check on), its queue client answering at once."""
    fixed = FixedReplies()
    deps.make_queue_client = lambda state: fixed
    return create_app(AppState(boot=boot(tempfile.mkdtemp(prefix="ripple-bench-"), max_body_bytes=1 << 20)))


def echo_app() -> FastAPI:
    """The plain route: FastAPI parsing the JSON body and replying it."""
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        return await request.json()

    return app


def scope(method: str, path: str, body: bytes, key: str | None) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(body)).encode()))
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: FastAPI, template: dict[str, Any], body: bytes) -> int:
    """One request through the ASGI app; its status code."""
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the route runs
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(template), receive, send)  # type: ignore[arg-type]
    return status


async def per_call_us(
    app: FastAPI, method: str, path: str, body: bytes, key: str | None, calls: int
) -> float:
    template = scope(method, path, body, key)
    code = await call(app, template, body)
    if code != 200:
        raise SystemExit(f"{method} {path} answered {code}, not 200")
    start = time.perf_counter()
    for _ in range(calls):
        await call(app, template, body)
    return (time.perf_counter() - start) / calls * 1e6


CASES = (
    ("runsync", "POST", "/v2/bench/runsync", BODY),
    ("run", "POST", "/v2/bench/run", BODY),
    ("status", "GET", "/v2/bench/status/job-1", b""),
)


async def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    ripple, echo = ripple_app(), echo_app()
    out: dict[str, list[float]] = {name: [] for name, *_ in CASES}
    out["plain echo"] = []
    for _ in range(rounds):  # in turns, so drift touches every row alike
        out["plain echo"].append(await per_call_us(echo, "POST", "/echo", BODY, None, calls))
        for name, method, path, body in CASES:
            out[name].append(await per_call_us(ripple, method, path, body, API_KEY, calls))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per row and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each row timed once in each")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.calls, args.rounds))
    echo_us = statistics.median(figures["plain echo"])
    print(f"{'route':<12} {'us/call (median of rounds)':>28} {'vs plain echo':>14}")
    for name, values in figures.items():
        us = statistics.median(values)
        print(f"{name:<12} {us:>28.0f} {us / echo_us:>13.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
