"""A replica's calls to the queue outlive a queue restart (``actors.replica.through_queue_restarts``): the
soak found a streaming job FAILED because the queue restarted while a chunk was being pushed. No Ray runs
here: the calls are plain coroutines raising Ray's exception classes."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorUnavailableError, RayActorError

from actors.replica import through_queue_restarts


async def test_retries_while_the_queue_is_restarting_then_returns_the_answer() -> None:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ActorUnavailableError("The actor is restarting", None)
        return "accepted"

    assert await through_queue_restarts(call, wait_s=5.0) == "accepted"
    assert calls == 3


async def test_gives_up_after_the_wait_with_the_queue_error() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise RayActorError()

    with pytest.raises(RayActorError):
        await through_queue_restarts(call, wait_s=0.25)
    assert 2 <= calls <= 4  # 0.1 s, then 0.2 s would pass the deadline


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("the queue refused the call")

    with pytest.raises(ValueError, match="refused"):
        await through_queue_restarts(call, wait_s=5.0)
    assert calls == 1
