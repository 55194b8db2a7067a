"""The dispatcher's behaviour suite (``tests/dispatch_behaviour.py``) on the real RedisStore (Lua scripts,
embedded Redis, a key prefix per test). Same tests as ``tests/unit/test_dispatch.py``; no Ray."""

from __future__ import annotations

import pytest
from dispatch_behaviour import *  # noqa: F403 (the suite's tests run here)

from orchestrator.store.redis import RedisStore


@pytest.fixture
def store(redis_store: RedisStore) -> RedisStore:
    return redis_store
