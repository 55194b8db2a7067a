"""Named API keys and the audit log in the store.

:class:`AccessStore` is the interface the queue actor serves them through; :class:`RedisAccessStore`
implements it on Redis (the ``apikeys*`` and ``audit`` keys of :class:`orchestrator.store.keys.Keys`) and
:class:`MemoryAccessStore` in memory for tests. A key is stored only as its SHA-256 digest, inside its
record; the key itself never reaches the store.

Replicas of the HTTP app keep a copy of the key table and poll :meth:`AccessStore.sync` (a counter read,
the table only when the counter moved), so a revocation reaches every replica within its poll interval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Protocol

import redis.asyncio as aioredis

from orchestrator.core.errors import Conflict, NotFound
from orchestrator.core.scopes import AUDIT_LIMIT, AuditEntry, KeyRecord
from orchestrator.store.keys import Keys


class AccessStore(Protocol):
    """Key records, their version counter, last-use times and the audit log. Each method is atomic."""

    async def create_key(self, record: KeyRecord) -> None:
        """Store a new key record and bump the version. Raises Conflict when the name is taken."""
        ...

    async def revoke_key(self, name: str) -> KeyRecord:
        """Delete a key record and bump the version; the record deleted. Raises NotFound."""
        ...

    async def list_keys(self) -> tuple[list[KeyRecord], dict[str, int]]:
        """Every key record (by name) and, for keys used since, when they were last used (ms)."""
        ...

    async def sync(
        self, known_version: int, used_ms: Mapping[str, int]
    ) -> tuple[int, list[KeyRecord] | None]:
        """Record last-use times, then the table's version and, when it differs from ``known_version``,
        every key record (None otherwise)."""
        ...

    async def record_audit(self, entry: AuditEntry) -> None:
        """Prepend an entry; the newest :data:`~orchestrator.core.scopes.AUDIT_LIMIT` are kept."""
        ...

    async def audit(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        ...


class RedisAccessStore:
    """:class:`AccessStore` on Redis (decoded responses), sharing the client of the job store."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r = client
        self.k = keys

    async def create_key(self, record: KeyRecord) -> None:
        async with self._r.pipeline(transaction=True) as p:
            p.hsetnx(self.k.api_keys, record.name, json.dumps(record.doc()))
            p.incr(self.k.api_keys_version)
            added, _ = await p.execute()
        if not added:
            raise Conflict(f"key '{record.name}' exists", {"loc": ["body", "name"]})

    async def revoke_key(self, name: str) -> KeyRecord:
        async with self._r.pipeline(transaction=True) as p:
            p.hget(self.k.api_keys, name)
            p.hdel(self.k.api_keys, name)
            p.hdel(self.k.api_keys_used, name)
            p.incr(self.k.api_keys_version)
            raw, _, _, _ = await p.execute()
        if raw is None:
            raise NotFound(f"no key named '{name}'")
        return KeyRecord.from_doc(json.loads(raw))

    async def list_keys(self) -> tuple[list[KeyRecord], dict[str, int]]:
        async with self._r.pipeline(transaction=True) as p:
            p.hgetall(self.k.api_keys)
            p.hgetall(self.k.api_keys_used)
            table, used = await p.execute()
        records = sorted((KeyRecord.from_doc(json.loads(v)) for v in table.values()), key=lambda r: r.name)
        return records, {name: int(ms) for name, ms in used.items() if name in table}

    async def sync(
        self, known_version: int, used_ms: Mapping[str, int]
    ) -> tuple[int, list[KeyRecord] | None]:
        async with self._r.pipeline(transaction=False) as p:
            if used_ms:
                p.hset(self.k.api_keys_used, mapping={n: str(ms) for n, ms in used_ms.items()})
            p.get(self.k.api_keys_version)
            *_, raw_version = await p.execute()
        if int(raw_version or 0) == known_version:
            return known_version, None  # the usual answer: one counter read
        async with self._r.pipeline(transaction=True) as p:
            p.get(self.k.api_keys_version)
            p.hgetall(self.k.api_keys)
            raw_version, table = await p.execute()
        return int(raw_version or 0), [KeyRecord.from_doc(json.loads(v)) for v in table.values()]

    async def record_audit(self, entry: AuditEntry) -> None:
        async with self._r.pipeline(transaction=True) as p:
            p.lpush(self.k.audit, json.dumps(entry.doc()))
            p.ltrim(self.k.audit, 0, AUDIT_LIMIT - 1)
            await p.execute()

    async def audit(self, limit: int) -> list[AuditEntry]:
        if limit <= 0:
            return []
        rows = await self._r.lrange(self.k.audit, 0, limit - 1)
        return [AuditEntry.from_doc(json.loads(r)) for r in rows]


class MemoryAccessStore:
    """:class:`AccessStore` in memory (unit tests); stores the same JSON documents as Redis."""

    def __init__(self) -> None:
        self.table: dict[str, str] = {}
        self.used: dict[str, int] = {}
        self.version = 0
        self.entries: list[str] = []

    async def create_key(self, record: KeyRecord) -> None:
        self.version += 1
        if record.name in self.table:
            raise Conflict(f"key '{record.name}' exists", {"loc": ["body", "name"]})
        self.table[record.name] = json.dumps(record.doc())

    async def revoke_key(self, name: str) -> KeyRecord:
        self.version += 1
        raw = self.table.pop(name, None)
        self.used.pop(name, None)
        if raw is None:
            raise NotFound(f"no key named '{name}'")
        return KeyRecord.from_doc(json.loads(raw))

    async def list_keys(self) -> tuple[list[KeyRecord], dict[str, int]]:
        records = sorted(
            (KeyRecord.from_doc(json.loads(v)) for v in self.table.values()), key=lambda r: r.name
        )
        return records, {n: ms for n, ms in self.used.items() if n in self.table}

    async def sync(
        self, known_version: int, used_ms: Mapping[str, int]
    ) -> tuple[int, list[KeyRecord] | None]:
        self.used.update(used_ms)
        if self.version == known_version:
            return self.version, None
        return self.version, [KeyRecord.from_doc(json.loads(v)) for v in self.table.values()]

    async def record_audit(self, entry: AuditEntry) -> None:
        self.entries.insert(0, json.dumps(entry.doc()))
        del self.entries[AUDIT_LIMIT:]

    async def audit(self, limit: int) -> list[AuditEntry]:
        return [AuditEntry.from_doc(json.loads(r)) for r in self.entries[: max(0, limit)]]
