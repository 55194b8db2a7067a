"""Ripple's own store calls with redis-py's two reply parsers: hiredis (the C parser that `redis[hiredis]`
installs, and that redis-py uses whenever it is importable) against its pure-Python parser (what redis-py
falls back to without it), on the same embedded Redis, in blocks taken in turn.

Two paths, each timed per job with the `RedisStore` methods the replicas and the API call:
- a burst's batch: one SUBMIT of 64 jobs, one CLAIM of all 64 (a replica's 64 slots), one FINISH of all 64;
- one job alone: SUBMIT of 1, CLAIM of 1, and FINISH of it with the next CLAIM in the same step
  (`finish_and_claim`), as a runsync's job goes.

    python bench/redis_parser.py [--rounds 8] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import redis.asyncio as aioredis  # noqa: E402
from redis._parsers import _AsyncHiredisParser, _AsyncRESP3Parser  # noqa: E402
from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

from bench.common import load_average  # noqa: E402
from orchestrator.core.jobs import JobStatus  # noqa: E402
from orchestrator.core.models import NewJob  # noqa: E402
from orchestrator.ops import embedded_redis  # noqa: E402
from orchestrator.store.keys import Keys  # noqa: E402
from orchestrator.store.protocol import Claim, FinishItem  # noqa: E402
from orchestrator.store.redis import RedisStore  # noqa: E402

PARSERS: dict[str, type[Any]] = {"hiredis": _AsyncHiredisParser, "pure Python": _AsyncRESP3Parser}
BATCH = 64
ENDPOINT = "bench"
NOW_MS = 1_700_000_000_000


def _jobs(n: int, first: int) -> list[NewJob]:
    return [
        NewJob(
            id=f"j{first + i}",
            endpoint=ENDPOINT,
            input_json=json.dumps({"input": {"prompt": "a cat", "seed": first + i}}),
            execution_timeout_ms=60_000,
            ttl_ms=600_000,
            max_retries=1,
        )
        for i in range(n)
    ]


def _done(job_id: str, worker: str) -> FinishItem:
    return FinishItem(job_id, worker, JobStatus.COMPLETED, output_json=json.dumps({"ok": job_id}))


async def batch_path(store: RedisStore, jobs: int, first: int) -> None:
    """``jobs`` jobs in batches of :data:`BATCH`: SUBMIT, CLAIM and FINISH of each batch."""
    for start in range(first, first + jobs, BATCH):
        await store.submit(ENDPOINT, _jobs(BATCH, start), None, NOW_MS)
        taken = await store.claim(Claim(ENDPOINT, "w-batch", BATCH, NOW_MS))
        assert taken is not None and len(taken) == BATCH, taken
        await store.finish([_done(t.id, "w-batch") for t in taken], NOW_MS)


async def single_path(store: RedisStore, jobs: int, first: int) -> None:
    """``jobs`` jobs one at a time: SUBMIT, CLAIM, then FINISH with the next CLAIM in one step."""
    for i in range(first, first + jobs):
        await store.submit(ENDPOINT, _jobs(1, i), None, NOW_MS)
        got = await store.claim(Claim(ENDPOINT, "w-one", 1, NOW_MS))
        assert got is not None and len(got) == 1, got
        (taken,) = got
        await store.finish_and_claim([_done(taken.id, "w-one")], Claim(ENDPOINT, "w-one", 1, NOW_MS))


PATHS: dict[str, Callable[[RedisStore, int, int], Awaitable[None]]] = {
    f"a batch of {BATCH}: SUBMIT, CLAIM, FINISH": batch_path,
    "one job: SUBMIT, CLAIM, FINISH with the next CLAIM": single_path,
}


def store_with(url: str, parser: type[Any], prefix: str) -> RedisStore:
    """A RedisStore on ``url`` with the reply parser named (decoded replies, as :meth:`RedisStore.connect`;
    without its retries, which a benchmark on a Redis that stays up never takes)."""
    client = aioredis.from_url(url, decode_responses=True, parser_class=parser)
    return RedisStore(client, Keys(prefix))


async def measure(url: str, rounds: int, jobs: int) -> dict[str, dict[str, list[float]]]:
    """Microseconds per job of each path with each parser, one block of ``jobs`` each per round."""
    stores = {name: store_with(url, cls, f"bench-{i}:") for i, (name, cls) in enumerate(PARSERS.items())}
    out: dict[str, dict[str, list[float]]] = {p: {name: [] for name in PARSERS} for p in PATHS}
    first = 0
    try:
        for round_no in range(rounds + 1):  # the first round warms up and is not kept
            for path, run in PATHS.items():
                for name, store in stores.items():
                    start_s = time.perf_counter()
                    await run(store, jobs, first)
                    first += jobs
                    if round_no:
                        out[path][name].append((time.perf_counter() - start_s) / jobs * 1e6)
    finally:
        for store in stores.values():
            await store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8, help="blocks of each parser, in turns")
    parser.add_argument("--jobs", type=int, default=2048, help="jobs per block (a multiple of 64)")
    args = parser.parse_args(argv)
    if not HIREDIS_AVAILABLE:
        print("hiredis is not installed: pip install -e '.[bench]' (redis[hiredis] is a dependency)")
        return 1
    before = load_average()
    with tempfile.TemporaryDirectory(prefix="ripple-parser-") as tmp:
        server = embedded_redis.start(Path(tmp), detach=False)
        try:
            got = asyncio.run(measure(server.url, args.rounds, args.jobs))
        finally:
            embedded_redis.stop(Path(tmp))
    print(f"{args.rounds} blocks of {args.jobs} jobs per path and parser, in turns; {before} before, "
          f"{load_average()} after")  # fmt: skip
    print("| path | hiredis, us a job | pure Python, us a job | ratio |")
    print("| --- | --- | --- | --- |")
    for path, by_parser in got.items():
        fast, slow = (statistics.median(by_parser[name]) for name in PARSERS)
        print(f"| {path} | {fast:.1f} | {slow:.1f} | {fast / slow:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
