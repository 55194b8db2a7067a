"""A store step whose reply is lost on the way back (real Redis, real redis-py): the step ran, its client
saw the connection fail and sent it again, as redis-py does. Each step Ripple sends again must leave what
one run leaves, and answer what it did:

- a submit does not queue its jobs twice; a stream push does not append its chunk twice;
- a stream read does not move its reader past chunks it never got;
- a result is answered as applied (its replica then tells the queue, and a caller waiting there);
- a cancel, a sweep or a purge is answered with what it did (its caller then tells the job's holder to stop,
  sends the webhook, counts); a claim of webhook deliveries answers those it moved in flight;
- a take (a replica's claim, with results or not; an outside worker's take through the queue) answers the
  jobs it took instead of taking more while those wait, leased to a worker that never got them, for their
  execution timeout.

A parked replica's pop of its inbox is not sent again at all (it would wait for a job already handed over):
it fails, and the replica asks for the jobs leased to it.

The reply is lost for real: the store talks to Redis through :class:`ReplyCutter`, a unix-socket relay that,
when armed, drops the next reply from Redis and closes the client's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis

from orchestrator.core.jobs import JobStatus
from orchestrator.store import scripts as lua
from orchestrator.store.protocol import Claim
from orchestrator.store.redis import RedisStore
from tests.integration.test_store_redis import NOW, done, jobs

S = JobStatus
pytestmark = pytest.mark.timeout(30)


class ReplyCutter:
    """A relay between clients and the Redis at ``redis_path``; :meth:`cut_next_reply` makes it drop the
    next reply Redis sends and close that client's connection (the command has run; its caller never
    hears), after running ``meanwhile`` (what others do before the client sends its command again)."""

    def __init__(self, redis_path: str, path: Path) -> None:
        self.redis_path = redis_path
        self.path = path
        self.cuts = 0  # replies dropped so far
        self._armed = False
        self._meanwhile: Callable[[], Awaitable[object]] | None = None
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def cut_next_reply(self, meanwhile: Callable[[], Awaitable[object]] | None = None) -> None:
        self._armed, self._meanwhile = True, meanwhile

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._relay, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_unix_connection(self.redis_path)

        async def up() -> None:
            while data := await client_r.read(65536):
                redis_w.write(data)
                await redis_w.drain()

        async def down() -> None:
            while data := await redis_r.read(65536):
                if self._armed:
                    self._armed = False
                    self.cuts += 1
                    if self._meanwhile is not None:
                        await self._meanwhile()
                    return
                client_w.write(data)
                await client_w.drain()

        legs = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
        for leg in legs:
            leg.cancel()
        for w in (client_w, redis_w):
            w.close()


@pytest.fixture
async def cutter(redis_url: str, tmp_path: Path) -> AsyncIterator[ReplyCutter]:
    relay = ReplyCutter(redis_url.removeprefix("unix://"), tmp_path / "relay.sock")
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


@pytest.fixture
async def cut_store(cutter: ReplyCutter, redis_store: RedisStore) -> AsyncIterator[RedisStore]:
    """A store on the same keys as ``redis_store``, through the relay, connected and with its scripts
    loaded (else the reply cut could be a NOSCRIPT error: the step not run yet)."""
    store = RedisStore.connect(cutter.url, redis_store.k.prefix, retry_s=5.0)
    steps = (lua.SUBMIT, lua.STREAM_PUSH, lua.STREAM_READ, lua.TAKE, lua.CLAIM, lua.FINISH, lua.FINISH_CLAIM)
    for script in (*steps, lua.MOVE, lua.SWEEP, lua.PURGE, lua.WEBHOOK_CLAIM):
        await store.r.script_load(script)
    assert await store.wait_for_job("none", "nobody", 0.01) is None  # its own client, connected
    try:
        yield store
    finally:
        await store.close()


async def running_on_w1(store: RedisStore, **fields: object) -> None:
    """Job j0 (``fields`` as :func:`jobs` takes them), leased to worker w1."""
    await store.submit("ep", jobs(1, **fields), None, NOW)
    await store.take("ep", "w1", 1, NOW)


async def test_a_submit_whose_reply_was_lost_queues_its_jobs_once(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    """Sent again after a replica took one of its jobs and finished it: still one run of each job."""

    async def a_replica_runs_one() -> None:
        (job,) = await redis_store.take("ep", "w1", 1, NOW + 1)
        assert (await redis_store.finish([done(job.id, "w1")], NOW + 2))[0].applied

    cutter.cut_next_reply(a_replica_runs_one)
    assert await cut_store.submit("ep", jobs(3), None, NOW) == 2, "accepted, as the first run was"
    assert cutter.cuts == 1
    assert await redis_store.depth("ep") == 2
    assert [t.id for t in await redis_store.take("ep", "w1", 5, NOW + 3)] == ["j1", "j2"]
    j0 = await redis_store.get("j0")
    assert j0 is not None and j0.status is S.COMPLETED


async def test_a_stream_push_whose_reply_was_lost_keeps_its_chunk_once(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    await running_on_w1(redis_store)
    cutter.cut_next_reply()
    assert await cut_store.push_chunks("j0", "w1", ['"a"'], 0)
    assert await cut_store.push_chunks("j0", "w1", ['"b"'], 1)
    assert cutter.cuts == 1
    assert await redis_store.read_stream("j0") == (S.IN_PROGRESS, ["a", "b"])


async def test_a_stream_read_whose_reply_was_lost_answers_its_chunks_again(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    """The first read moved the reader's cursor past the chunks its lost reply carried; the read sent again
    answers them (and one pushed meanwhile), and the next read goes on from there."""
    await running_on_w1(redis_store)
    await redis_store.push_chunks("j0", "w1", ['"a"', '"b"'], 0)
    cutter.cut_next_reply(lambda: redis_store.push_chunks("j0", "w1", ['"c"'], 2))
    assert await cut_store.read_stream("j0") == (S.IN_PROGRESS, ["a", "b", "c"])
    assert cutter.cuts == 1
    assert await cut_store.read_stream("j0") == (S.IN_PROGRESS, [])
    await redis_store.push_chunks("j0", "w1", ['"d"'], 3)
    assert await redis_store.read_stream("j0") == (S.IN_PROGRESS, ["d"])


async def test_a_take_whose_reply_was_lost_answers_the_jobs_it_took_and_takes_no_more(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    await redis_store.submit("ep", jobs(4), None, NOW)
    cutter.cut_next_reply()
    assert [t.id for t in await cut_store.take("ep", "w1", 2, NOW)] == ["j0", "j1"]
    assert cutter.cuts == 1
    assert await redis_store.depth("ep") == 2
    assert [t.id for t in await cut_store.take("ep", "w1", 2, NOW)] == ["j2", "j3"], "a new take takes"


async def test_a_claim_whose_reply_was_lost_answers_what_it_was_handed(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    """A parked replica's claim: the job handed to its inbox and the one it takes from the queue; sent again
    after one of them was cancelled meanwhile, the other (with its input and attempt), and nothing more."""
    await cut_store.claim(Claim("ep", "w1", 2, NOW, park=True))
    await redis_store.submit("ep", jobs(4), None, NOW)  # j0 handed to the parked replica's inbox

    async def j0_cancelled() -> None:
        await redis_store.move("j0", S.CANCELLED.value, NOW + 2, "cancelled")

    cutter.cut_next_reply(j0_cancelled)
    (again,) = await cut_store.claim(Claim("ep", "w1", 2, NOW + 1))
    assert (again.id, again.attempt, again.input) == ("j1", 1, {"i": 1})
    assert cutter.cuts == 1
    assert await redis_store.depth("ep") == 2


async def test_results_and_a_claim_whose_reply_was_lost_take_no_more(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    await redis_store.submit("ep", jobs(3), None, NOW)
    (first,) = await redis_store.take("ep", "w1", 1, NOW)
    cutter.cut_next_reply()
    (outcome,), taken = await cut_store.finish_and_claim(
        [done(first.id, "w1")], Claim("ep", "w1", 1, NOW + 1)
    )
    assert outcome.applied, "answered as the first run did: the replica tells the queue"
    assert [t.id for t in taken or []] == ["j1"]
    assert cutter.cuts == 1
    assert await redis_store.depth("ep") == 1
    j0 = await redis_store.get("j0")
    assert j0 is not None and j0.status is S.COMPLETED


async def test_a_parked_replicas_wait_whose_reply_was_lost_fails_and_its_job_is_delivered_again(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    """The pop took the job handed to the replica's inbox: sent again, it would wait on an empty inbox while
    the job waits for its execution timeout. It fails instead, and the job is among those leased to the
    replica, which the queue delivers again after a failed take."""
    assert await cut_store.claim(Claim("ep", "w1", 1, NOW, park=True)) == []
    await redis_store.submit("ep", jobs(1), None, NOW)  # handed to the parked replica's inbox
    cutter.cut_next_reply()
    with pytest.raises(redis.exceptions.ConnectionError):
        await cut_store.wait_for_job("ep", "w1", 1.0)
    assert cutter.cuts == 1
    assert [j.id for j in (await redis_store.leased_to("w1")).jobs] == ["j0"]


async def test_a_result_whose_reply_was_lost_is_answered_as_applied(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    """Its replica tells the queue only of results applied, at once when a caller waits there: answered as
    refused, the queue would miss the job's end and its waiting caller wait on."""
    await redis_store.submit("ep", jobs(2), None, NOW)
    await redis_store.take("ep", "w1", 2, NOW)
    await redis_store.watch_final("j0", at_queue=True)
    cutter.cut_next_reply()
    finished = await cut_store.finish([done("j0", "w1", output_json="1"), done("j1", "w2")], NOW + 1)
    assert cutter.cuts == 1
    assert [(o.applied, o.awaited, o.status) for o in finished] == [
        (True, True, S.COMPLETED),
        (False, False, S.IN_PROGRESS),
    ], "j1 is w1's: refused to w2, as in the first run"
    (again,) = await cut_store.finish([done("j0", "w1", output_json="2")], NOW + 2)
    assert not again.applied, "another call: the first result won"
    j0 = await redis_store.get("j0")
    assert j0 is not None and j0.output == 1


async def test_a_cancel_whose_reply_was_lost_is_answered_with_what_it_did(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    """Answered "not moved", the queue would not tell the running job's holder to stop."""
    await running_on_w1(redis_store)
    cutter.cut_next_reply()
    moved = await cut_store.move(
        "j0", S.CANCELLED.value, NOW + 1, "cancelled", expect_from=(S.IN_QUEUE, S.IN_PROGRESS)
    )
    assert cutter.cuts == 1
    assert (moved.moved, moved.before, moved.worker) == (True, S.IN_PROGRESS, "w1")
    again = await cut_store.move("j0", S.CANCELLED.value, NOW + 2, "cancelled", expect_from=(S.IN_QUEUE,))
    assert not again.moved, "another call: refused"


async def test_a_sweep_and_a_purge_whose_replies_were_lost_are_answered_with_what_they_did(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    await running_on_w1(redis_store, execution_timeout_ms=1_000)
    cutter.cut_next_reply()
    (timed_out,) = await cut_store.sweep("leases", NOW + 1_000, 10)
    assert (timed_out.job_id, timed_out.worker) == ("j0", "w1"), "its holder is told to stop"
    await redis_store.submit("ep", jobs(3, start=1), None, NOW)
    cutter.cut_next_reply()
    assert await cut_store.purge("ep", NOW + 2) == 3
    assert cutter.cuts == 2


async def test_a_webhook_claim_whose_reply_was_lost_answers_the_deliveries_it_moved(
    cutter: ReplyCutter, cut_store: RedisStore, redis_store: RedisStore
) -> None:
    """Else they would wait in flight, unsent, until the queue restarts."""
    await redis_store.r.rpush(redis_store.k.webhooks, "j0", "j1", "j2")
    cutter.cut_next_reply()
    assert await cut_store.webhook_claim(2) == ["j0", "j1"]
    assert cutter.cuts == 1
    assert await cut_store.webhook_claim(5) == ["j2"]
    assert await cut_store.webhook_claim(5) == []
