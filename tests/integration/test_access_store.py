"""Named API keys and the audit log on a real (embedded) Redis: the same behaviour as the in-memory store,
only digests at rest, the version counter the replicas poll, and the cap on the audit log."""

from __future__ import annotations

import json

import pytest
import redis

from orchestrator.auth import KeyCache, digest, named_key_record
from orchestrator.core.errors import Conflict, NotFound
from orchestrator.core.scopes import AuditEntry, Principal, Scope
from orchestrator.store.access import RedisAccessStore
from orchestrator.store.redis import RedisStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def access(redis_store: RedisStore) -> RedisAccessStore:
    return RedisAccessStore(redis_store.r, redis_store.k)


def everything_under(url: str, prefix: str) -> str:
    """Every key and value under ``prefix``, as one text (hashes, lists and strings)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    parts: list[str] = []
    for key in client.scan_iter(match=prefix + "*"):
        kind = client.type(key)
        if kind == "hash":
            value: object = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        else:
            value = client.get(key)
        parts.append(f"{key}={json.dumps(value)}")
    return "\n".join(parts)


async def test_keys_at_rest_are_digests_only(access: RedisAccessStore, redis_url: str) -> None:
    key, record = named_key_record("ci", Scope.CLIENT, ("echo",), 1_700_000_000_000)
    await access.create_key(record)
    await access.record_audit(AuditEntry(1, "RIPPLE_API_KEY", "key.create", "ci", "req-1"))
    await access.sync(-1, {"ci": 1_700_000_000_500})
    stored = everything_under(redis_url, access.k.prefix)
    assert digest(key) in stored and key not in stored
    assert key[4:20] not in stored, "not even a part of the key"


async def test_create_sync_list_revoke(access: RedisAccessStore) -> None:
    _, record = named_key_record("ci", Scope.WORKER, (), 5)
    await access.create_key(record)
    with pytest.raises(Conflict):
        await access.create_key(record)
    version, records = await access.sync(-1, {})
    assert records == [record]
    assert await access.sync(version, {"ci": 9}) == (version, None), "unchanged: the counter only"
    assert await access.list_keys() == ([record], {"ci": 9})
    assert await access.revoke_key("ci") == record
    with pytest.raises(NotFound):
        await access.revoke_key("ci")
    moved, records = await access.sync(version, {})
    assert moved > version and records == []
    assert await access.list_keys() == ([], {})


async def test_a_replica_cache_on_redis_sees_a_revocation(access: RedisAccessStore) -> None:
    key, record = named_key_record("gone", Scope.READ, (), 5)
    await access.create_key(record)
    cache = KeyCache(max_age_s=0.0)
    assert await cache.principal(key, access.sync, 1) == Principal("gone", Scope.READ)
    await access.revoke_key("gone")
    assert await cache.principal(key, access.sync, 2) is None


async def test_audit_is_newest_first_and_capped(
    access: RedisAccessStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestrator.store.access as module

    monkeypatch.setattr(module, "AUDIT_LIMIT", 5)
    for n in range(8):
        await access.record_audit(AuditEntry(n, "k", "endpoint.update", f"e{n}", f"r{n}"))
    rows = await access.audit(100)
    assert [r.target for r in rows] == ["e7", "e6", "e5", "e4", "e3"]
    assert rows[0] == AuditEntry(7, "k", "endpoint.update", "e7", "r7")
    assert await access.audit(0) == []
