"""The job lifecycle as a Hypothesis state machine against the in-memory store (the fake's own contract)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from store_support import LifecycleMachine

from orchestrator.store.memory import MemoryStore

pytestmark = pytest.mark.timeout(120)


class MemoryLifecycle(LifecycleMachine):
    def make_store(self) -> tuple[Any, Callable[[], Awaitable[None]]]:
        store = MemoryStore()
        return store, store.close


MemoryLifecycle.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestMemoryLifecycle = MemoryLifecycle.TestCase
