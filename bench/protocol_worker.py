"""A fast outside worker speaking the RunPod worker protocol over HTTP, for throughput benchmarks.

Each worker loops: `GET {base}/{ep}/job-take-batch/{wid}?batch_size=N&job_in_progress=0` (a long-poll; 204
or 400 mean no job, 429 means back off), runs a no-op handler on every job taken, and posts all results at
once, concurrently, with `POST {base}/{ep}/job-done/{wid}/{job_id}?isStream=false` and `{"output": ...}`.
A separate loop pings `GET {base}/{ep}/ping/{wid}?job_id=a,b` with the jobs each worker holds. Many workers
share one HTTP client in one process: aiohttp by default, or httpx (`--client httpx`). On a 2-core machine an
`httpx.AsyncClient` spends 1 to 3 ms of CPU per request (aiohttp about 0.1 ms), which caps a worker process
at a few hundred jobs per second: the benchmark would measure the client rather than the server.

Run as a program, it serves until SIGINT/SIGTERM (or --max-jobs / --duration-s) and prints its counters as
one JSON line on stdout:

    python bench/protocol_worker.py --base-url http://127.0.0.1:8000/v2 --endpoint bench --workers 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import httpx

Job = dict[str, Any]


@dataclass(frozen=True)
class WorkerConfig:
    """Where and how the workers work. base_url ends with /v2; worker_key is sent raw, as the SDK does."""

    base_url: str
    endpoint: str
    batch_size: int = 16
    worker_key: str | None = None
    ping_interval_s: float = 5.0
    take_timeout_s: float = 120.0
    backoff_s: float = 0.5
    done_batch: bool = True
    """Post a take's results in one job-done-batch request (Ripple's extension) instead of one each."""


@dataclass
class WorkerStats:
    """Counters shared by all workers of a process (single-threaded asyncio: no locks needed)."""

    taken: int = 0
    done: int = 0
    empty_polls: int = 0
    throttled: int = 0
    errors: int = 0
    held: dict[str, set[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """The counters, without the held-job sets."""
        out = asdict(self)
        out.pop("held")
        return out


@dataclass(frozen=True)
class TakeReply:
    """What a take reply means: the jobs handed out, and how long to wait before the next take."""

    jobs: list[Job]
    backoff_s: float = 0.0


def take_path(endpoint: str, worker_id: str, batch_size: int) -> str:
    """Path (relative to the /v2 base) of a batch take."""
    return f"/{quote(endpoint)}/job-take-batch/{quote(worker_id)}?batch_size={batch_size}&job_in_progress=0"


def done_path(endpoint: str, worker_id: str, job_id: str) -> str:
    """Path (relative to the /v2 base) where the result of one job is posted."""
    return f"/{quote(endpoint)}/job-done/{quote(worker_id)}/{quote(job_id)}?isStream=false"


def ping_path(endpoint: str, worker_id: str, job_ids: Sequence[str]) -> str:
    """Path (relative to the /v2 base) of a heartbeat naming the jobs the worker holds."""
    ids = quote(",".join(job_ids), safe=",")
    return f"/{quote(endpoint)}/ping/{quote(worker_id)}?job_id={ids}"


def parse_take(status_code: int, body: bytes, backoff_s: float) -> TakeReply:
    """Interpret a take reply as the SDK does: 204/400 none, 429 back off, 200 one job or a list of jobs.

    Raises ValueError for any other status, or a 200 whose body is not a job or a list of jobs.
    """
    if status_code in (204, 400):
        return TakeReply([])
    if status_code == 429:
        return TakeReply([], backoff_s=backoff_s)
    if status_code != 200:
        raise ValueError(f"take answered {status_code}: {body[:200]!r}")
    if not body.strip():
        return TakeReply([])
    parsed = json.loads(body)
    jobs = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(job, dict) and "id" in job for job in jobs):
        raise ValueError(f"take answered 200 with something that is not a job: {body[:200]!r}")
    return TakeReply(jobs)


def handle(job: Job) -> dict[str, Any]:
    """The no-op handler: the result body echoes the job's input."""
    return {"output": job.get("input")}


def headers_for(worker_key: str | None) -> dict[str, str]:
    """Worker-protocol headers: the key raw in Authorization, as the RunPod worker SDK sends it."""
    return {"Authorization": worker_key} if worker_key else {}


class Transport(Protocol):
    """The two HTTP calls a worker makes, relative to the /v2 base URL."""

    async def get(self, path: str, timeout_s: float) -> tuple[int, bytes]:
        """GET path; return (status code, body)."""
        ...

    async def post_json(self, path: str, body: dict[str, Any]) -> int:
        """POST body as JSON to path; return the status code."""
        ...


class HttpxTransport:
    """Transport over one shared httpx.AsyncClient."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def get(self, path: str, timeout_s: float) -> tuple[int, bytes]:
        reply = await self.client.get(path, timeout=timeout_s)
        return reply.status_code, reply.content

    async def post_json(self, path: str, body: dict[str, Any]) -> int:
        return (await self.client.post(path, json=body)).status_code


class AiohttpTransport:
    """Transport over one shared aiohttp.ClientSession."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def get(self, path: str, timeout_s: float) -> tuple[int, bytes]:
        async with self.session.get(
            path.lstrip("/"), timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as reply:
            return reply.status, await reply.read()

    async def post_json(self, path: str, body: dict[str, Any]) -> int:
        async with self.session.post(path.lstrip("/"), json=body) as reply:
            await reply.read()
            return reply.status


TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


async def _post_done(
    transport: Transport, cfg: WorkerConfig, worker_id: str, job: Job, stats: WorkerStats
) -> None:
    job_id = str(job["id"])
    try:
        status = await transport.post_json(done_path(cfg.endpoint, worker_id, job_id), handle(job))
        if status < 300:
            stats.done += 1
        else:
            stats.errors += 1
    except TRANSPORT_ERRORS:
        stats.errors += 1
    finally:
        stats.held[worker_id].discard(job_id)


async def _post_done_batch(
    transport: Transport, cfg: WorkerConfig, worker_id: str, jobs: Sequence[Job], stats: WorkerStats
) -> None:
    """All results of a take in one request (Ripple's job-done-batch extension)."""
    body = [{"id": str(job["id"]), **handle(job)} for job in jobs]
    path = f"/{quote(cfg.endpoint)}/job-done-batch/{quote(worker_id)}"
    try:
        status = await transport.post_json(path, body)  # type: ignore[arg-type]
        if status < 300:
            stats.done += len(jobs)
        else:
            stats.errors += len(jobs)
    except TRANSPORT_ERRORS:
        stats.errors += len(jobs)
    finally:
        for job in jobs:
            stats.held[worker_id].discard(str(job["id"]))


async def run_worker(transport: Transport, cfg: WorkerConfig, worker_id: str, stats: WorkerStats) -> None:
    """Take, handle and complete jobs until cancelled."""
    held = stats.held.setdefault(worker_id, set())
    while True:
        try:
            status, body = await transport.get(
                take_path(cfg.endpoint, worker_id, cfg.batch_size), cfg.take_timeout_s
            )
            take = parse_take(status, body, cfg.backoff_s)
        except (*TRANSPORT_ERRORS, ValueError):
            stats.errors += 1
            await asyncio.sleep(cfg.backoff_s)
            continue
        if take.backoff_s:
            stats.throttled += 1
            await asyncio.sleep(take.backoff_s)
        if not take.jobs:
            stats.empty_polls += 1
            continue
        stats.taken += len(take.jobs)
        held.update(str(job["id"]) for job in take.jobs)
        if cfg.done_batch:
            await _post_done_batch(transport, cfg, worker_id, take.jobs, stats)
        else:
            await asyncio.gather(*(_post_done(transport, cfg, worker_id, job, stats) for job in take.jobs))


async def ping_loop(
    transport: Transport, cfg: WorkerConfig, worker_ids: Sequence[str], stats: WorkerStats
) -> None:
    """Heartbeat every worker every ping_interval_s with the jobs it holds, until cancelled."""
    while True:
        for worker_id in worker_ids:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await transport.get(
                    ping_path(cfg.endpoint, worker_id, sorted(stats.held.get(worker_id, ()))), 30.0
                )
        await asyncio.sleep(cfg.ping_interval_s)


@contextlib.asynccontextmanager
async def open_transport(cfg: WorkerConfig, kind: str, connections: int) -> AsyncIterator[Transport]:
    """A shared HTTP client of the given kind ("aiohttp" or "httpx") for cfg.base_url."""
    headers = headers_for(cfg.worker_key)
    if kind == "httpx":
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(
            base_url=cfg.base_url, headers=headers, limits=limits, timeout=30.0
        ) as client:
            yield HttpxTransport(client)
        return
    async with aiohttp.ClientSession(
        base_url=cfg.base_url + "/",
        headers=headers,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=30.0),
    ) as session:
        yield AiohttpTransport(session)


async def run_workers(
    cfg: WorkerConfig,
    worker_ids: Sequence[str],
    stop: asyncio.Event,
    stats: WorkerStats,
    max_jobs: int | None = None,
    client_kind: str = "aiohttp",
) -> None:
    """Run one worker per id (plus the pinger) until stop is set or max_jobs are done; then cancel them."""
    connections = 4 * len(worker_ids) + 8
    async with open_transport(cfg, client_kind, connections) as transport:
        tasks = [asyncio.create_task(run_worker(transport, cfg, wid, stats)) for wid in worker_ids]
        tasks.append(asyncio.create_task(ping_loop(transport, cfg, worker_ids, stats)))
        try:
            while not stop.is_set():
                if max_jobs is not None and stats.done >= max_jobs:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", required=True, help="Ripple's worker base URL, ending with /v2")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--workers", type=int, default=8, help="workers in this process")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--worker-key", default=None)
    parser.add_argument("--id-prefix", default="bench-w")
    parser.add_argument("--ping-interval-s", type=float, default=5.0)
    parser.add_argument("--max-jobs", type=int, default=None, help="stop once this many jobs are done")
    parser.add_argument("--duration-s", type=float, default=None, help="stop after this long")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    parser.add_argument(
        "--per-job-done", action="store_true", help="one job-done request per job (stock SDK)"
    )
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> WorkerStats:
    cfg = WorkerConfig(
        base_url=args.base_url.rstrip("/"),
        endpoint=args.endpoint,
        batch_size=args.batch_size,
        worker_key=args.worker_key,
        ping_interval_s=args.ping_interval_s,
        done_batch=not args.per_job_done,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.duration_s is not None:
        loop.call_later(args.duration_s, stop.set)
    stats = WorkerStats()
    worker_ids = [f"{args.id_prefix}{i}" for i in range(args.workers)]
    await run_workers(cfg, worker_ids, stop, stats, max_jobs=args.max_jobs, client_kind=args.client)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    """Program entry: run the workers, then print their counters and elapsed time as one JSON line."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    start_s = time.perf_counter()
    stats = asyncio.run(_main(args))
    print(json.dumps({**stats.as_dict(), "elapsed_s": time.perf_counter() - start_s}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
