"""The dispatcher's behaviour suite (``tests/dispatch_behaviour.py``) on the in-memory store: no Ray, no
Redis. The same suite runs on the real Redis store in ``tests/integration/test_dispatch_redis.py``."""

from __future__ import annotations

import pytest
from dispatch_behaviour import *  # noqa: F403 (the suite's tests run here)

from orchestrator.store.memory import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()
