"""Scopes (core), the replica's key cache (auth) and the in-memory access store: pure, no HTTP."""

from __future__ import annotations

import json

import pytest

from orchestrator.auth import KeyCache, digest, named_key_record, new_key
from orchestrator.core.errors import Conflict, InvalidInput, NotFound
from orchestrator.core.scopes import (
    AUDIT_LIMIT,
    AuditEntry,
    Family,
    KeyRecord,
    Principal,
    Scope,
    audit_action,
    check_new_key,
    refusal,
)
from orchestrator.store.access import MemoryAccessStore

ALLOWED = {
    Scope.ADMIN: set(Family),
    Scope.READ: {Family.READ, Family.AUDIT, Family.UI},
    Scope.CLIENT: {Family.CLIENT},
    Scope.WORKER: {Family.WORKER},
}


@pytest.mark.parametrize("scope", list(Scope))
@pytest.mark.parametrize("family", list(Family))
def test_each_scope_allows_exactly_its_families(scope: Scope, family: Family) -> None:
    why = refusal(Principal("k", scope), family, "echo")
    if family in ALLOWED[scope]:
        assert why is None
    else:
        assert why is not None and why.startswith(f"key 'k' (scope {scope.value}) may not")


@pytest.mark.parametrize("scope", [Scope.CLIENT, Scope.WORKER])
def test_endpoint_limited_keys(scope: Scope) -> None:
    family = Family.CLIENT if scope is Scope.CLIENT else Family.WORKER
    who = Principal("k", scope, ("echo", "e2"))
    assert refusal(who, family, "echo") is None and refusal(who, family, "e2") is None
    why = refusal(who, family, "other")
    assert why == f"key 'k' (scope {scope.value}) may not use endpoint 'other' (only echo, e2)"
    assert refusal(Principal("k", scope), family, "anything") is None  # no list: every endpoint


def test_read_keys_may_read_an_endpoints_health_only() -> None:
    who = Principal("r", Scope.READ)
    assert refusal(who, Family.CLIENT, "echo", readable=True) is None
    assert refusal(who, Family.CLIENT, "echo") is not None
    assert refusal(who, Family.WORKER, "echo", readable=True) is not None


def test_new_key_validation_names_the_field() -> None:
    assert check_new_key("ci-bot.1", Scope.CLIENT, ["a", "b", "a"]) == ("a", "b")
    for bad in ("", "Upper", "RIPPLE_API_KEY", "-x", "a" * 64, "sp ace"):
        with pytest.raises(InvalidInput) as err:
            check_new_key(bad, Scope.READ, [])
        assert err.value.detail["loc"] == ["body", "name"]
    for scope in (Scope.ADMIN, Scope.READ):
        with pytest.raises(InvalidInput) as err:
            check_new_key("k", scope, ["echo"])
        assert err.value.detail["loc"] == ["body", "endpoints"]


def test_new_keys_are_random_and_recorded_by_digest_only() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) >= 40 for k in keys)
    key, record = named_key_record("k", Scope.CLIENT, ("echo",), 123)
    assert record.digest == digest(key) and key not in json.dumps(record.doc())
    assert KeyRecord.from_doc(record.doc()) == record


def test_audit_actions() -> None:
    assert audit_action("POST", "/api/v1/endpoints", Family.CHANGE) == "endpoint.create"
    assert audit_action("DELETE", "/api/v1/keys/{name}", Family.KEYS) == "key.revoke"
    assert audit_action("POST", "/v2/{endpoint}/purge-queue", Family.CLIENT) == "queue.purge"
    # A change route not listed is still recorded, by method and path.
    assert audit_action("POST", "/api/v1/endpoints/{name}/retire", Family.CHANGE) == (
        "POST /api/v1/endpoints/{name}/retire"
    )
    assert audit_action("GET", "/api/v1/endpoints", Family.READ) is None
    assert audit_action("GET", "/api/v1/keys", Family.KEYS) is None
    assert audit_action("POST", "/v2/{endpoint}/run", Family.CLIENT) is None


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


async def test_key_cache_polls_at_most_every_max_age_and_sees_revocations() -> None:
    store = MemoryAccessStore()
    clock = Clock()
    cache = KeyCache(max_age_s=0.5, clock_s=clock)
    syncs: list[dict[str, int]] = []

    async def sync(version: int, used: dict[str, int]) -> tuple[int, list[KeyRecord] | None]:
        syncs.append(dict(used))
        return await store.sync(version, used)

    key, record = named_key_record("c", Scope.CLIENT, (), 1)
    await store.create_key(record)
    assert await cache.principal(key, sync, now_ms=5) == Principal("c", Scope.CLIENT)
    assert await cache.principal("rpk_wrong", sync, now_ms=6) is None
    assert len(syncs) == 1, "within max_age no second call"
    await store.revoke_key("c")
    clock.now_s += 0.4
    assert await cache.principal(key, sync, now_ms=7) is not None, "still cached"
    clock.now_s += 0.2
    assert await cache.principal(key, sync, now_ms=8) is None, "refreshed: revoked"
    assert syncs[1] == {"c": 7}, "last uses are reported with the next sync"
    assert await cache.principal_named("c", sync) is None


async def test_key_cache_fails_closed_and_keeps_unreported_uses() -> None:
    store = MemoryAccessStore()
    clock = Clock()
    cache = KeyCache(max_age_s=0.5, clock_s=clock)
    key, record = named_key_record("c", Scope.CLIENT, (), 1)
    await store.create_key(record)
    await cache.principal(key, store.sync, now_ms=9)

    async def down(version: int, used: dict[str, int]) -> tuple[int, list[KeyRecord] | None]:
        raise TimeoutError("actor unreachable")

    clock.now_s += 1
    with pytest.raises(TimeoutError):
        await cache.principal(key, down, now_ms=10)
    assert store.used == {}
    await cache.principal(key, store.sync, now_ms=11)
    assert store.used == {"c": 9}, "the use the failed sync carried is reported by the next one"


async def test_memory_access_store() -> None:
    store = MemoryAccessStore()
    _, record = named_key_record("a", Scope.READ, (), 1)
    await store.create_key(record)
    with pytest.raises(Conflict):
        await store.create_key(record)
    version, records = await store.sync(-1, {"a": 5})
    assert records == [record]
    assert await store.sync(version, {}) == (version, None)
    assert await store.list_keys() == ([record], {"a": 5})
    assert await store.revoke_key("a") == record
    with pytest.raises(NotFound):
        await store.revoke_key("a")
    assert (await store.sync(version, {}))[1] == []
    for n in range(AUDIT_LIMIT + 5):
        await store.record_audit(AuditEntry(n, "k", "endpoint.update", f"e{n}"))
    newest = await store.audit(2)
    assert [e.target for e in newest] == [f"e{AUDIT_LIMIT + 4}", f"e{AUDIT_LIMIT + 3}"]
    assert len(await store.audit(AUDIT_LIMIT + 100)) == AUDIT_LIMIT
