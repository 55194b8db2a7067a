"""The job lifecycle state machine against the real RedisStore (Lua scripts) on the embedded Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from store_support import LifecycleMachine, delete_prefix, unique_prefix

from orchestrator.store.redis import RedisStore

pytestmark = pytest.mark.timeout(120)


def test_lifecycle_on_redis(redis_url: str) -> None:
    class RedisLifecycle(LifecycleMachine):
        def make_store(self) -> tuple[Any, Callable[[], Awaitable[None]]]:
            prefix = unique_prefix()
            store = RedisStore.connect(redis_url, prefix)

            async def cleanup() -> None:
                await store.close()
                delete_prefix(redis_url, prefix)

            return store, cleanup

    run_state_machine_as_test(
        RedisLifecycle,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
