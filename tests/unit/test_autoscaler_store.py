"""The autoscaler's store interface on the in-memory fake; tests/integration/test_store_redis.py runs the
same tests on the Redis store (the ``autoscaler_store`` fixture is all that differs)."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.core.autoscale import Override
from orchestrator.store.autoscaler import HISTORY_LIMIT, AutoscalerStore, MemoryAutoscalerStore

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def autoscaler_store() -> AutoscalerStore:
    return MemoryAutoscalerStore()


async def test_lease_is_held_by_one_holder_and_renewed_only_by_it(autoscaler_store: AutoscalerStore) -> None:
    store = autoscaler_store
    assert await store.hold_lease("a", 400)
    assert not await store.hold_lease("b", 400), "a lease held by another is not taken"
    for _ in range(3):  # renewals keep it past its first TTL
        await asyncio.sleep(0.2)
        assert await store.hold_lease("a", 400)
        assert not await store.hold_lease("b", 400)
    await asyncio.sleep(0.6)  # a stops renewing: the lease expires
    assert await store.hold_lease("b", 400), "an expired lease is taken"
    assert not await store.hold_lease("a", 400), "the old holder cannot renew a lease it lost"
    assert await store.hold_lease("b", 400)


async def test_switch_state_overrides_and_history(autoscaler_store: AutoscalerStore) -> None:
    store = autoscaler_store
    assert await store.switch() is None, "never set: the setting decides"
    await store.set_switch(False)
    assert await store.switch() is False
    await store.set_switch(True)
    assert await store.switch() is True

    assert await store.load_state() is None
    await store.save_state({"version": 1, "endpoints": {"a": {"busy_peak_replicas": 2}}})
    assert await store.load_state() == {"version": 1, "endpoints": {"a": {"busy_peak_replicas": 2}}}

    assert await store.overrides() == {}
    await store.set_override("a", {"desiredReplicas": 3, "disabled": False})
    await store.set_override("b", {"desiredReplicas": None, "disabled": True})
    assert await store.overrides() == {
        "a": Override(desired_replicas=3, disabled=False),
        "b": Override(desired_replicas=None, disabled=True),
    }
    await store.set_override("a", None)
    assert await store.overrides() == {"b": Override(desired_replicas=None, disabled=True)}

    await store.record([("a", {"at": 1, "kind": "scale_up"}), ("b", {"at": 1, "kind": "blocked"})])
    await store.record([("a", {"at": 2, "kind": "drain"})])
    await store.record([])
    assert await store.history("a", 10) == [{"at": 2, "kind": "drain"}, {"at": 1, "kind": "scale_up"}]
    assert await store.history("a", 1) == [{"at": 2, "kind": "drain"}]
    assert await store.history("b", 10) == [{"at": 1, "kind": "blocked"}]
    assert await store.history("nobody", 10) == []


async def test_history_keeps_the_newest(autoscaler_store: AutoscalerStore) -> None:
    await autoscaler_store.record([("a", {"at": i}) for i in range(HISTORY_LIMIT + 20)])
    rows = await autoscaler_store.history("a", HISTORY_LIMIT + 100)
    assert len(rows) == HISTORY_LIMIT
    assert rows[0] == {"at": HISTORY_LIMIT + 19} and rows[-1] == {"at": 20}
